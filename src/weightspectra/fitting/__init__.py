"""Fits of eigenvalue distributions: power law (xmin by KS distance) and friends."""
