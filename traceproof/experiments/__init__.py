"""Proof: datasets, tasks, experiments, comparisons and their reports."""
