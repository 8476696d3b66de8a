"""Proof: datasets, tasks, the experiment runner, comparisons, the gate and reports."""
