"""Proof: datasets, tasks, the experiment runner, comparison, the gate and reports."""
