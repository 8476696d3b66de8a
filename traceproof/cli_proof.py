"""The proof command groups: ``traceproof dataset`` and ``traceproof experiment``.

The commands live in their own modules (``cli_datasets``, ``cli_experiments``, ``cli_compare``),
each adding to these groups when :mod:`traceproof.cli` imports it.
"""

from __future__ import annotations

import click

from traceproof.cli import cli

#: Exit status of a proof command that could not run (0, 1, 2 are verdicts).
NOT_RUN = 3


class NotRunCommand(click.Command):
    """A command whose usage errors exit with :data:`NOT_RUN`: click's own 2 means
    ``inconclusive`` here."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            exc.exit_code = NOT_RUN  # type: ignore[misc]  # click reads it from the instance
            raise


@cli.group()
def dataset() -> None:
    """Datasets of examples: create from spans, import, export, list, show."""


@cli.group()
def experiment() -> None:
    """Experiments: run a task on a dataset, follow it, compare it with a baseline."""
