"""The book's plumbing: the profile turned into data and cached networks (experiments), the claims
and how they are decided (verdicts, report), the layer curves, and the notebook runner.
"""
