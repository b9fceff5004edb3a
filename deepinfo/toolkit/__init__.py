"""The experiment toolkit: one training loop, the checkpoint cache, run profiles.
"""
