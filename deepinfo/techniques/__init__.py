"""The techniques whose effect on information discarding the paper explains: magnitude
pruning with retraining, minimal perturbations to the decision boundary, knowledge distillation,
PGD adversarial training, a damaged layer, U-Net segmentation.
"""
