"""Hyperparameter sweeps: search spaces (``tune_spaces/*.yaml``), the trial, results."""
