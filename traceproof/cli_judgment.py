"""The judgment commands: ``annotate``, ``annotations``, ``errors`` and ``eval run``, the
judgment tools (annotate, get_annotations, categorize_errors, evaluate) for people and scripts,
on the store itself or through the server that holds it (as :mod:`traceproof.cli_tools` calls
the read tools). ``eval run`` follows its job with a progress bar on a terminal.

The commands register themselves on the ``traceproof`` group when :mod:`traceproof.cli` imports
this module.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from traceproof.cli import _fail, _settings, _store_or_remote, cli, config_option, db_option
from traceproof.cli_tools import (
    _exit,
    call,
    cursor_option,
    emit,
    filter_options,
    json_option,
    limit_option,
    max_chars_option,
    notes_for_people,
)
from traceproof.errors import ErrorCode, TraceproofError
from traceproof.remote import RemoteStore
from traceproof.storage import Store


@cli.command("annotate")
@db_option
@click.option("--name", required=True, help="What is judged, e.g. correctness.")
@click.option("--label", default=None, help="The verdict, e.g. pass or fail.")
@click.option("--score", type=float, default=None, help="A numeric score.")
@click.option("--explanation", default=None, help="Why.")
@click.option(
    "--target",
    type=click.Choice(["span", "trace", "session"]),
    default=None,
    help="What the ids (or filters) choose (default span).",
)
@click.option("--id", "ids", multiple=True, help="A target id; repeatable.")
@click.option("--where", default=None, help="Annotate every target whose spans match this.")
@click.option(
    "--annotator-kind",
    type=click.Choice(["HUMAN", "LLM", "CODE"], case_sensitive=False),
    default="HUMAN",
    show_default=True,
    callback=lambda ctx, param, value: value.upper(),
    help="Who judges.",
)
@click.option("--annotator", default=None, help="Who you are (default: $USER).")
@click.option("--identifier", default=None, help="Keeps this annotation apart from others.")
@click.option("--metadata", default=None, help="A JSON object kept with the annotation.")
@click.option("--confirm", is_flag=True, help="Write to more targets than the confirm setting.")
@config_option
@json_option
def annotate_command(db: Path | None, as_json: bool, config: Path | None, **options: Any) -> None:
    """Label, score or explain spans, traces or sessions (by --id or by --where)."""
    import getpass

    score = options["score"]
    if score is not None and not math.isfinite(score):  # JSON (a server's API) has no NaN
        _fail(
            f"[invalid_argument] The score of {options['name']!r} is {score}. Give a finite number."
        )
    if options["annotator"] is None and options["annotator_kind"] == "HUMAN":
        options["annotator"] = getpass.getuser()
    identifier, metadata = options.pop("identifier"), options.pop("metadata")
    if identifier is None and metadata is None:
        emit(call(db, "annotate", options, config=config), as_json)
        return
    emit(_annotate_with_fields(db, config, options, identifier, metadata), as_json)


def _annotate_with_fields(
    db: Path | None,
    config: Path | None,
    options: dict[str, Any],
    identifier: str | None,
    metadata: str | None,
) -> dict[str, Any]:
    """``traceproof annotate`` with ``--identifier`` / ``--metadata``: fields the MCP tool does
    not take, written through :func:`~traceproof.tools.annotations.annotate_targets` on the
    store itself."""
    from traceproof.tools.annotations import annotate_targets
    from traceproof.tools.filters import SpanFilter

    fields: Any = None
    if metadata is not None:
        try:
            fields = json.loads(metadata)
        except ValueError:
            fields = None
        if not isinstance(fields, dict):
            _fail(
                "[invalid_argument] --metadata is not a JSON object. Give one, e.g. '{\"k\": 1}'."
            )
    settings = _settings(db, config=config)
    try:
        with _store_or_remote(settings) as store:
            if isinstance(store, RemoteStore):
                raise TraceproofError(
                    f"A server at {store.url} holds the store, and --identifier and --metadata "
                    "are written on the store itself. Stop the server, or annotate without them.",
                    code=ErrorCode.INVALID_ARGUMENT,
                )
            from traceproof.projectconfig import apply_annotation_configs, project_config

            apply_annotation_configs(store, project_config(settings))
            ids = options.get("ids") or None
            where = options.get("where")
            result = annotate_targets(
                store,
                name=options["name"],
                label=options.get("label"),
                score=options.get("score"),
                explanation=options.get("explanation"),
                target=options.get("target") or "span",
                ids=list(ids) if ids else None,
                flt=SpanFilter(where=where) if where is not None else None,
                annotator_kind=options["annotator_kind"],
                annotator=options.get("annotator"),
                identifier=identifier or "",
                metadata=fields,
                confirm=bool(options.get("confirm")),
            )
            return notes_for_people(result.model_dump(mode="json"))
    except TraceproofError as exc:
        _exit(exc)


@cli.command("annotations")
@db_option
@click.option("--id", "ids", multiple=True, help="A target id; repeatable.")
@click.option("--name", default=None, help="Annotation name.")
@click.option("--label", default=None, help="Only this label.")
@click.option("--history", is_flag=True, help="Earlier versions too.")
@click.option("--where", default=None, help="Annotations of the targets whose spans match this.")
@limit_option
@cursor_option
@json_option
def annotations_command(db: Path | None, as_json: bool, **options: Any) -> None:
    """Annotations: counts per name and label, then rows, newest first."""
    emit(call(db, "get_annotations", options), as_json)


@cli.command()
@db_option
@click.option("--project", default=None, help="Project name.")
@click.option("--since", default=None, help="After this time: ISO 8601 or relative (2h, 7d).")
@click.option("--until", default=None, help="Before this time: ISO 8601 or relative.")
@click.option("--kind", "span_kind", default=None, help="Span kind: LLM, TOOL, CHAIN, AGENT…")
@click.option("--name", default=None, help="Exact span name.")
@click.option("--session", "session_id", default=None, help="Session id.")
@click.option("--where", default=None, help="SQL expression over span columns and attributes.")
@click.option(
    "--annotation", default=None, help="Cluster this annotation's failing explanations instead."
)
@click.option(
    "--label",
    "labels",
    multiple=True,
    help="With --annotation: a label to cluster (default: the failing ones); repeatable.",
)
@click.option("--llm", is_flag=True, help="Have the LLM name a few categories (needs a key).")
@click.option("--save", is_flag=True, help="Write an error_category annotation on each error.")
@click.option("--confirm", is_flag=True, help="With --save: past the confirm setting.")
@limit_option
@max_chars_option
@json_option
def errors(db: Path | None, as_json: bool, labels: tuple[str, ...], **options: Any) -> None:
    """Errors in clusters: type, message template, top frames, count, traces, examples."""
    if labels:
        if options["annotation"] is None:
            _fail("[invalid_argument] --label chooses labels of --annotation. Give --annotation.")
        options["annotation"] = f"{options['annotation']}={'|'.join(labels)}"
    emit(call(db, "categorize_errors", options), as_json)


@cli.group("eval")
def eval_group() -> None:
    """Run the evaluators declared in traceproof.toml."""


@eval_group.command("run")
@click.argument("evaluator", required=False)
@db_option
@config_option
@click.option(
    "--target",
    type=click.Choice(["span", "trace", "session"]),
    default=None,
    help="What is judged (default span).",
)
@click.option("--id", "ids", multiple=True, help="A target id; repeatable.")
@filter_options
@limit_option
@click.option("--job", default=None, help="Follow a run started before (its job id).")
@json_option
def eval_run(
    db: Path | None,
    config: Path | None,
    as_json: bool,
    evaluator: str | None,
    job: str | None,
    **options: Any,
) -> None:
    """Run EVALUATOR on targets chosen by --id or the filters; writes annotations. A progress
    bar shows on a terminal; targets this evaluator version judged before are skipped."""
    arguments = _eval_arguments(evaluator, job, options)
    try:
        with _store_or_remote(_settings(db, config=config)) as store:
            if isinstance(store, RemoteStore) and config is not None:
                raise TraceproofError(
                    f"The server at {store.url} holds the store, and it runs the evaluators of "
                    "its own traceproof.toml (its --config or TRACEPROOF_CONFIG). Run without "
                    "--config, or stop the server.",
                    code=ErrorCode.INVALID_ARGUMENT,
                )
            try:
                result = _follow(
                    store, arguments, bar=not as_json and Console(stderr=True).is_terminal
                )
            except TraceproofError as exc:
                if isinstance(store, RemoteStore) and exc.code == ErrorCode.UNKNOWN_EVALUATOR:
                    raise _server_config(exc, store.url) from None
                raise
    except TraceproofError as exc:
        _exit(exc)
    emit(result, as_json)


def _server_config(exc: TraceproofError, url: str) -> TraceproofError:
    """``[unknown_evaluator]`` from a server: it read its own traceproof.toml (of the directory
    it started in, or its --config), not the one of this command's directory."""
    failed = exc.message.split(" (none in ")[0].split(". ")[0].rstrip(".")
    here = Path.cwd() / "traceproof.toml"
    return TraceproofError(
        f"{failed}: the server at {url} that holds the store reads its own traceproof.toml (of "
        f"the directory it started in, or its --config), not {here}. Restart the server in "
        f"this directory, or pass --config {here} to it.",
        code=exc.code,
    )


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _eval_arguments(
    evaluator: str | None, job: str | None, options: dict[str, Any]
) -> dict[str, Any]:
    """The evaluate tool's arguments from the command's options: the filters the tool leaves
    to ``where`` (until, status, kind, name, session) become part of it."""
    from traceproof.tools.common import iso_time, parse_time

    if job is not None:
        return {"job": job}
    if evaluator is None:
        raise click.UsageError("Name the evaluator to run (or pass --job ID).")
    conditions = []
    until = options.pop("until", None)
    if until is not None:
        conditions.append(f"start_time < {_quoted(iso_time(parse_time(until, name='until')))}")
    for option, column in (("status", "status"), ("span_kind", "span_kind")):
        value = options.pop(option, None)
        if value is not None:
            conditions.append(f"{column} = {_quoted(value.upper())}")
    for option, column in (("name", "name"), ("session_id", "session_id")):
        value = options.pop(option, None)
        if value is not None:
            conditions.append(f"{column} = {_quoted(value)}")
    where = options.pop("where", None)
    if where:
        conditions.append(f"({where})" if conditions else where)
    arguments = {"evaluator": evaluator, **options}
    if conditions:
        arguments["where"] = " and ".join(conditions)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in arguments.items() if v}


def _follow(store: Store | RemoteStore, arguments: dict[str, Any], *, bar: bool) -> dict[str, Any]:
    """Run ``evaluate`` and follow its job until it ends: a progress bar on a terminal. On the
    store itself a call waits as long as the setting lets it (progress comes as it happens);
    through a server it polls the job every second or two."""
    from rich.markup import escape
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from traceproof.jobs import jobs_for, reporting_progress
    from traceproof.tools.invoke import run_tool

    wait = 2 if isinstance(store, RemoteStore) else int(store.settings.eval_wait_max_seconds)
    progress = Progress(
        TextColumn(escape(str(arguments.get("evaluator") or arguments.get("job")))),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=not bar,
    )
    task = progress.add_task("evaluate", total=None)

    def show(done: float, total: float | None, message: str | None = None) -> None:
        progress.update(task, completed=done, total=total)

    def once(given: dict[str, Any]) -> dict[str, Any]:
        if isinstance(store, RemoteStore):
            return store.call_tool("evaluate", given)
        with reporting_progress(show):
            return run_tool(store, "evaluate", given).model_dump(mode="json")

    result: dict[str, Any] = {}
    try:
        with progress:
            result = once({**arguments, "wait": wait})
            while result.get("status") == "running":
                show(result.get("done", 0), result.get("total"))
                result = once({"job": result["job"], "wait": wait})
    except KeyboardInterrupt:
        if isinstance(store, RemoteStore):
            job = result.get("job") or arguments.get("job")
            follow = f" `traceproof eval run --job {job}` follows it." if job else ""
            _fail(f"Stopped following; the run goes on in the server.{follow}")
        for running in jobs_for(store).jobs():
            running.cancel()
            running.wait(30)
        _fail(
            "Cancelled. What the run wrote stays: run the same command again to resume "
            "(targets this evaluator version judged are skipped)."
        )
    return result
