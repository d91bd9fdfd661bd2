"""Evaluation: the continual-learning protocol, result tables, plots."""
