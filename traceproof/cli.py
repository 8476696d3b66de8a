"""The ``traceproof`` command line.

The library raises small named exceptions; this module turns them into sentences a person can
act on, with exit status 1 (2 when an import finished but rejected some input).
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from traceproof import __version__
from traceproof.errors import ErrorCode, TraceproofError
from traceproof.ingest.files import Annotate, ImportSummary, Sink, import_files
from traceproof.ingest.incremental import Book
from traceproof.remote import RemoteStore
from traceproof.settings import Settings
from traceproof.storage import Store, StoreLocked
from traceproof.tools.common import iso_time
from traceproof.tools.stats import StoreStats, get_stats
from traceproof.trajectories.actions import ActionRules

err = Console(stderr=True)
out = Console()

db_option = click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Store file (default .traceproof/traceproof.duckdb, or TRACEPROOF_DB).",
)

config_option = click.option(
    "--config",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Project config file (default ./traceproof.toml, or TRACEPROOF_CONFIG).",
)

token_option = click.option(
    "--token",
    default=None,
    help="Require 'Authorization: Bearer TOKEN' on /mcp, /v1/traces and /api "
    "(or set TRACEPROOF_TOKEN).",
)


def _say(message: str) -> None:
    """A line on stderr, as is (no markup: paths and codes contain brackets)."""
    err.print(message, markup=False, highlight=False, soft_wrap=True)


def _settings(db: Path | None, **overrides: Any) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    if db is not None:
        values["db"] = db
    return Settings(**values)


def _fail(exc: TraceproofError | str) -> None:
    # escape: the message starts with its [code], which rich would take for markup.
    err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
    sys.exit(1)


def _check_toolsets(settings: Settings, source: str) -> None:
    """Exit with a usage error when ``source`` names a tool family that does not exist."""
    from traceproof.server.mcp import toolset_names
    from traceproof.tools.registry import select

    try:
        select(toolset_names(settings.toolsets))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=source) from None


class _Process:
    """Whether this process is the CLI's own (``own``, set by :func:`main`): only then do
    commands change process-wide state (the heap settings); an in-process caller of `cli` is
    left alone."""

    own = False


def configure_process(settings: Settings) -> None:
    """The server's heap settings (:mod:`traceproof.memory`) for a long or large command, when
    this process is the CLI's own; call before the store starts its threads."""
    if _Process.own:
        from traceproof.memory import configure_server

        configure_server(settings)


#: What a read command says when there is no store where it looked.
NO_STORE = (
    "No store at {path}. A new project gets its store from `traceproof serve` (then send the "
    "application's traces to it), `traceproof ingest FILE` or `traceproof dataset import NAME "
    "FILE`; `traceproof serve --demo` tries traceproof on demo data. To read another store pass "
    "--db PATH or set TRACEPROOF_DB, or run the command in the project's directory (its store "
    "is .traceproof/traceproof.duckdb)."
)


@contextmanager
def _store_or_remote(settings: Settings, *, create: bool = False) -> Iterator[Store | RemoteStore]:
    """The store itself, or the running server that holds it. Without ``create`` a store that
    does not exist is an error (``not_found``): reading never leaves an empty store behind.
    (A server holding a store has created its file, so the file tells.)"""
    if not create and not settings.db.exists():
        path = settings.db.resolve()
        raise TraceproofError(NO_STORE.format(path=path), code=ErrorCode.NOT_FOUND)
    try:
        store = Store.open(settings.db, settings)
    except StoreLocked as exc:
        if exc.url is None:
            raise
        yield RemoteStore(exc.url, token=settings.token)
        return
    try:
        yield store
    finally:
        store.close()


#: The modules whose commands register themselves on `cli` (traces, trace, span, find, jq, agg,
#: sql, datasets, experiments, judgment, trajectories, watch...): loaded only when a command this
#: module does not define is asked for, so `traceproof ingest` (here) does not pay for them.
COMMAND_MODULES = (
    "traceproof.cli_compare",
    "traceproof.cli_configs",
    "traceproof.cli_datasets",
    "traceproof.cli_experiments",
    "traceproof.cli_judge",
    "traceproof.cli_judgment",
    "traceproof.cli_proof",
    "traceproof.cli_tools",
    "traceproof.cli_trajectories",
    "traceproof.cli_watch",
)


#: The module of a command that must not load the others: `watch` is a lean command
#: (:data:`traceproof.entry.LEAN_COMMANDS`), and the others' modules import numpy and scipy.
COMMAND_HOMES = {"watch": "traceproof.cli_watch"}


def load_commands() -> None:
    """Register every command on `cli` (the modules of :data:`COMMAND_MODULES`)."""
    for name in COMMAND_MODULES:
        importlib.import_module(name)


class _Commands(click.Group):
    """`cli`'s group: the commands of other modules are loaded when first needed."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMAND_HOMES:
            importlib.import_module(COMMAND_HOMES[cmd_name])
        if cmd_name not in self.commands:
            load_commands()
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        load_commands()
        return super().list_commands(ctx)


@click.group(cls=_Commands)
@click.version_option(__version__, prog_name="traceproof")
def cli() -> None:
    """traceproof: traces, evals and experiments for coding agents."""


@cli.command()
@db_option
@click.option("--host", default=None, help="Address to bind (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port for OTLP/HTTP (default 4318).")
@click.option("--demo", is_flag=True, help="Load the demo project into the store first.")
@click.option("--log-level", default="info", show_default=True, help="Server log level.")
@token_option
@config_option
def serve(
    db: Path | None,
    host: str | None,
    port: int | None,
    demo: bool,
    log_level: str,
    token: str | None,
    config: Path | None,
) -> None:
    """Run the server: OTLP/HTTP at /v1/traces and MCP at /mcp on the store."""
    from traceproof.server.run import serve as run_server

    settings = _settings(db, host=host, port=port, token=token, config=config)
    _check_toolsets(settings, "TRACEPROOF_TOOLSETS")
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        run_server(settings, demo=demo, log_level=log_level, announce=err.print)
    except TraceproofError as exc:
        _fail(exc)


@cli.command()
@db_option
@click.option("--no-otlp", is_flag=True, help="Serve MCP only; do not receive OTLP on the port.")
@click.option("--host", default=None, help="Address of the OTLP receiver (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port of the OTLP receiver (default 4318).")
@click.option("--log-level", default="warning", show_default=True, help="Log level (stderr).")
@token_option
@click.option(
    "--toolsets",
    default=None,
    metavar="NAMES",
    help="Tool families to offer, comma-separated: inspect, judgment, proof, trajectories "
    "(default all, or TRACEPROOF_TOOLSETS).",
)
@config_option
def mcp(
    db: Path | None,
    no_otlp: bool,
    host: str | None,
    port: int | None,
    log_level: str,
    token: str | None,
    toolsets: str | None,
    config: Path | None,
) -> None:
    """MCP over stdio (for Claude Code, Cursor...), and OTLP/HTTP on the port unless --no-otlp."""
    from traceproof.server.stdio import serve_mcp

    settings = _settings(db, host=host, port=port, token=token, toolsets=toolsets, config=config)
    _check_toolsets(settings, "--toolsets")
    logging.basicConfig(level=log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        serve_mcp(settings, otlp=not no_otlp, log_level=log_level, announce=_say)
    except TraceproofError as exc:
        _fail(exc)


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@db_option
@click.option("--project", default=None, help="Put every span in this project.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option(
    "--no-redact",
    is_flag=True,
    help="Keep secrets in coding-agent transcripts (redacted by default).",
)
@config_option
def ingest(
    paths: tuple[Path, ...],
    db: Path | None,
    project: str | None,
    as_json: bool,
    no_redact: bool,
    config: Path | None,
) -> None:
    """Import traces from files or directories: coding-agent transcripts (Claude Code session
    JSONL, with subagents; Inspect AI eval logs, their scores as annotations), OTLP/JSON, OTLP
    protobuf or span JSON lines (gzip, zstd or plain); and eval results (JSONL, CSV, Parquet
    with span_id/trace_id/session_id and label/score/explanation) as annotations."""
    from traceproof.ingest.evalfiles import is_eval_file, store_writer
    from traceproof.ingest.files import expand_paths
    from traceproof.projectconfig import project_config

    settings = _settings(db, config=config)
    configure_process(settings)  # before the store starts its threads
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise click.BadParameter(f"{missing[0]} does not exist.", param_hint="PATHS")
    paths = tuple(expand_paths(paths))
    if not paths:
        raise click.BadParameter("the directories hold no file to import.", param_hint="PATHS")
    evals = [p for p in paths if is_eval_file(p)]
    traces = [p for p in paths if p not in evals]
    summary = ImportSummary()
    extra: dict[str, Any] = {}
    try:
        with _store_or_remote(settings.for_import(), create=True) as store:
            if traces:
                sink: Sink = lambda table: store.submit(table, wait=None)  # noqa: E731
                rules = project_config(settings).action_rules()
                summary = _run_import(
                    traces,
                    sink,
                    settings,
                    project,
                    redact=not no_redact,
                    rules=rules,
                    book=transcript_book(store, settings),
                    annotate=store_writer(store, settings),
                )
            if evals:
                extra = _import_evals(store, evals, settings)
    except TraceproofError as exc:
        _fail(exc)
        return
    if as_json:
        click.echo(json.dumps(summary.as_dict() | extra, indent=2))
    else:
        if traces:
            _print_summary(summary)
        if evals:
            _print_evals(extra)
    if summary.rejected or extra.get("annotations_rejected"):
        sys.exit(2)


def _import_evals(
    store: Store | RemoteStore, paths: list[Path], settings: Settings
) -> dict[str, Any]:
    """Eval-result files as annotations: into the store, or through the server holding it (its
    Phoenix routes, in chunks); the project's annotation configs applied first."""
    from traceproof.ingest.evalfiles import import_eval_files, store_writer

    return import_eval_files(paths, store_writer(store, settings)).as_dict()


def _print_evals(found: dict[str, Any]) -> None:
    out.print(
        f"Imported {found['annotations_created']:,} new annotations "
        f"({found['annotations_read']:,} read, {found['annotations_updated']:,} updated, "
        f"{found['annotations_unchanged']:,} unchanged) from {found['eval_files']} eval file(s).",
        markup=False,
        soft_wrap=True,
    )
    if found["annotations_rejected"]:
        out.print(f"[yellow]Rejected {found['annotations_rejected']:,}:[/yellow]", highlight=False)
        for r in found["annotation_rejections"][:50]:
            where = f"{r['path']}:{r['line']}" if r["line"] is not None else r["path"]
            out.print(f"  {where}: {r['reason']}", highlight=False, markup=False, soft_wrap=True)


def _run_import(
    paths: list[Path],
    sink: Sink,
    settings: Settings,
    project: str | None,
    *,
    redact: bool,
    rules: ActionRules | None = None,
    book: Book | None = None,
    annotate: Annotate | None = None,
) -> ImportSummary:
    if not err.is_terminal:
        return import_files(
            paths,
            sink,
            settings=settings,
            project=project,
            redact=redact,
            rules=rules,
            book=book,
            annotate=annotate,
        )
    total = sum(p.stat().st_size for p in paths if p.is_file())
    columns = (
        TextColumn("importing"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task("import", total=total)
        advance: Callable[[int], None] = lambda n: progress.advance(task, n)  # noqa: E731
        return import_files(
            paths,
            sink,
            settings=settings,
            project=project,
            on_progress=advance,
            redact=redact,
            rules=rules,
            book=book,
            annotate=annotate,
        )


def transcript_book(store: Store | RemoteStore, settings: Settings) -> Book:
    """Where transcript import states live: the store's ``transcript_files`` table, or, through a
    running server (its API has no route for them yet), a JSON file next to the store."""
    from traceproof.ingest.incremental import Book, FileBook, StoreBook, state_file_for

    if isinstance(store, RemoteStore):
        return Book(FileBook(state_file_for(settings.db)))
    return Book(StoreBook(store))


def _print_summary(summary: ImportSummary) -> None:
    projects = f", projects: {', '.join(sorted(summary.projects))}" if summary.projects else ""
    out.print(
        f"Imported {summary.spans_added:,} new spans "
        f"({summary.spans_read:,} read, {summary.duplicates:,} already stored) "
        f"in {summary.traces:,} traces{projects}.",
        markup=False,
        soft_wrap=True,
    )
    transcripts = {k: v for k, v in summary.formats.items() if not k.startswith("otlp")}
    if summary.transcripts:
        files = ", ".join(f"{name} {count:,}" for name, count in sorted(transcripts.items()))
        out.print(
            f"Transcripts: {files} file(s); {summary.records_skipped:,} records skipped, "
            f"{summary.redactions:,} secrets redacted.",
            markup=False,
            soft_wrap=True,
        )
    if summary.unchanged or summary.incremental:
        out.print(
            f"Transcripts read from where the last import stopped: {summary.incremental:,}; "
            f"skipped as unchanged: {summary.unchanged:,}.",
            markup=False,
            soft_wrap=True,
        )
    if summary.annotations_read:
        out.print(
            f"Annotations from scores: {summary.annotations_created:,} new "
            f"({summary.annotations_read:,} read, {summary.annotations_updated:,} updated, "
            f"{summary.annotations_unchanged:,} unchanged).",
            markup=False,
            soft_wrap=True,
        )
    if summary.rejected:
        out.print(f"[yellow]Rejected {summary.rejected:,}:[/yellow]", highlight=False)
        shown = summary.rejections[:50]
        for rejection in shown:
            # soft_wrap: a path:line is never broken across lines.
            out.print(f"  {rejection}", highlight=False, markup=False, soft_wrap=True)
        hidden = summary.rejected - len(shown)
        if hidden:
            out.print(f"  ... and {hidden:,} more (--json lists up to 10,000).")


@cli.command()
@db_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def stats(db: Path | None, as_json: bool) -> None:
    """Per project: traces, spans, errors, first and last span time."""
    settings = _settings(db)
    try:
        with _store_or_remote(settings) as store:
            result = store.stats() if isinstance(store, RemoteStore) else get_stats(store)
    except TraceproofError as exc:
        _fail(exc)
        return
    if as_json:
        click.echo(result.model_dump_json(indent=2))
        return
    _print_stats(result)


def _iso(time: datetime | None) -> str | None:
    return iso_time(time) if time is not None else None


def _print_stats(result: StoreStats) -> None:
    from traceproof.cli_render import render_table

    if not result.projects:
        out.print("The store is empty. Send traces to /v1/traces or run traceproof ingest.")
        return
    rows = [
        [p.project, p.traces, p.spans, p.errors, _iso(p.first_span), _iso(p.last_span)]
        for p in result.projects
    ]
    names = ["project", "traces", "spans", "errors", "first span", "last span"]
    render_table(names, rows, out, fold=frozenset({0}))  # a name folds; it is never cut


def main() -> None:
    """The CLI as this process's own (the heap settings apply). The console script enters
    through :func:`traceproof.entry.main`, which first blocks the modules an import never
    uses; an in-process caller of `cli` (tests, a notebook) is left alone."""
    _Process.own = True
    cli(prog_name="traceproof")


if __name__ == "__main__":
    from traceproof.entry import main as entry_main

    entry_main()
