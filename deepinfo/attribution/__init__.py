"""The attribution baselines the paper compares CID with, and their evaluation
(descriptive accuracy, weakly supervised localization).
"""
