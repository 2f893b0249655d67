"""Centralized DP-SGD training: data, models, the private training loop and the trainer role.

Importing this package is cheap; torch, opacus and scikit-learn are imported inside the
functions that need them.
"""
