"""The proof command groups: ``traceproof dataset`` and ``traceproof experiment``.

The commands live in their own modules (``cli_datasets``, ``cli_experiments``, ``cli_compare``),
each adding to these groups when :mod:`traceproof.cli` imports it.
"""

from __future__ import annotations

from traceproof.cli import cli


@cli.group()
def dataset() -> None:
    """Datasets of examples: create from spans, import, export, list, show."""


@cli.group()
def experiment() -> None:
    """Experiments: run a task on a dataset, follow it, compare it with a baseline."""
