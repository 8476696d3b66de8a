"""The read commands: the agents' tools for people and scripts.

Each command calls one registered tool (traceproof/tools/registry.py) with the options it was
given, on the store itself or, when a running ``traceproof serve`` holds it, through that
server's API: the same validation, the same result. ``--json`` prints the result model as JSON;
by default it is drawn for a person by :mod:`traceproof.cli_render` (tables that fit the terminal,
records when they would not).

The commands register themselves on the ``traceproof`` group when :mod:`traceproof.cli` imports
this module.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console

from traceproof.cli import _fail, _settings, _store_or_remote, cli, config_option, db_option
from traceproof.cli_render import render
from traceproof.errors import ErrorCode, TraceproofError
from traceproof.remote import RemoteStore
from traceproof.storage import Store

Command = Callable[..., Any]


def call(
    db: Path | None, name: str, arguments: dict[str, Any], *, config: Path | None = None
) -> dict[str, Any]:
    """Run tool ``name`` on the store at ``db`` (or the server holding it); its result as JSON.
    Options left unset are not sent, so the tool's own defaults apply. ``config`` (a write's
    ``--config``): the project's annotation configs are stored first (see
    :mod:`traceproof.projectconfig`)."""
    from traceproof.tools.invoke import run_tool  # the tools load only for the commands using them

    given = {k: v for k, v in arguments.items() if v is not None and v != () and v is not False}
    given = {k: list(v) if isinstance(v, tuple) else v for k, v in given.items()}
    settings = _settings(db, config=config)
    try:
        with _store_or_remote(settings) as store:
            if name in WRITES:
                from traceproof.projectconfig import apply_annotation_configs, project_config

                apply_annotation_configs(store, project_config(settings))
            if isinstance(store, RemoteStore):
                return notes_for_people(store.call_tool(name, given))
            return notes_for_people(run_tool(store, name, given).model_dump(mode="json"))
    except TraceproofError as exc:
        _exit(exc)


#: A tool's parameter as a note names it -> the CLI's option.
CLI_OPTIONS = {"confirm=true": "--confirm"}


def notes_for_people(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` with the notes it holds (at any depth: ``saved.note`` of categorize_errors)
    naming the CLI's options, not the tool's parameters ("Call again with --confirm")."""
    out: dict[str, Any] = {}
    for key, value in result.items():
        said = value
        if isinstance(value, dict):
            said = notes_for_people(value)
        elif key == "note" and isinstance(value, str):
            for tool_words, option in CLI_OPTIONS.items():
                said = said.replace(tool_words, option)
        out[key] = said
    return out


#: Tools that write annotations: the CLI stores the project's annotation configs before them.
WRITES = frozenset({"annotate"})


def _exit(exc: TraceproofError) -> NoReturn:
    _fail(error_for_people(exc))
    raise SystemExit(1)  # _fail exits; this tells the type checker so


#: What to do next, as a person at a terminal does it, for a tool error whose own advice is an
#: agent's (tool parameters, views to query): (code, how its message starts) -> the advice.
CLI_ADVICE = {
    (ErrorCode.UNKNOWN_SESSION, "No session "): (
        'Run `traceproof sql "select session_id, trace_count, error_count, start_time from '
        'sessions order by start_time desc"` to list the sessions, newest first, or '
        "`traceproof traces` to see recent traces with their session."
    ),
}


def error_for_people(exc: TraceproofError) -> str:
    """A tool error as the CLI prints it: its first sentence (what failed) with the advice of
    :data:`CLI_ADVICE` where the tool's advice speaks to agents, else :func:`for_people`."""
    for (code, start), advice in CLI_ADVICE.items():
        if exc.code == code and exc.message.startswith(start):
            failed = exc.message.partition(". Call ")[0].rstrip(".")
            return f"[{exc.code}] {failed}. {advice}"
    return for_people(str(exc))


#: The command that runs each tool: tool errors name tools ("Call search_traces to…"), which a
#: person types as commands. The one mapping from tool names to the CLI.
TOOL_COMMANDS = {
    "list_projects": "projects",
    "search_traces": "traces",
    "get_trace_preview": "trace",
    "get_span_data": "span",
    "find_in_trace": "find",
    "search_spans": "spans",
    "jq": "jq",
    "aggregate": "agg",
    "sql": "sql",
    "describe_schema": "schema",
    "get_session": "session",
    "annotate": "annotate",
    "get_annotations": "annotations",
    "categorize_errors": "errors",
    "evaluate": "eval run",
    "calibrate_judge": "judge calibrate",
    "create_dataset": "dataset create",
    "add_examples": "dataset add",
    "list_datasets": "dataset list",
    "get_dataset": "dataset show",
    "run_experiment": "experiment run",
    "get_experiment": "experiment show",
    "cancel_experiment": "experiment cancel",
}

# "Call NAME(args)" / "call NAME" / a bare tool name with an underscore (never a word of text).
_ALL = "|".join(TOOL_COMMANDS)
_UNDERSCORED = "|".join(name for name in TOOL_COMMANDS if "_" in name)
_TOOL_MENTION = re.compile(
    rf"\b(?:(?P<verb>[Cc]all) (?P<called>{_ALL})|(?P<bare>{_UNDERSCORED}))\b"
    r"(?:\((?P<args>[^)]*)\))?"
)
_ARGUMENT = re.compile(r"(\w+)=('[^']*'|\"[^\"]*\"|[^,\s]+)")


def for_people(message: str) -> str:
    """A tool's message as the CLI says it: "Call search_traces to list recent traces" becomes
    "Run `traceproof traces` to list recent traces", ``describe_schema(table='spans')`` becomes
    ``traceproof schema --table spans``. Applied to what the CLI prints, never to MCP answers."""

    def command(match: re.Match[str]) -> str:
        name = match["called"] or match["bare"]
        words = ["traceproof", TOOL_COMMANDS[name]]
        for key, value in _ARGUMENT.findall(match["args"] or ""):
            words += [f"--{key.replace('_', '-')}", value.strip("'\"")]
        text = f"`{' '.join(words)}`"
        if match["verb"]:
            return f"{'Run' if match['verb'] == 'Call' else 'run'} {text}"
        return text

    return _TOOL_MENTION.sub(command, message)


def emit(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))
    else:  # a console of its own: the terminal's width (or COLUMNS) at the time of the call
        render(result, Console())


# -- options shared by several commands ----------------------------------------------------------

json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
max_chars_option = click.option(
    "--max-chars",
    type=click.IntRange(1000, 200_000),
    default=None,
    help="Character budget of the result (default 20000, as for agents).",
)
limit_option = click.option("--limit", type=int, default=None, help="Most rows to return.")
cursor_option = click.option("--cursor", default=None, help="next_cursor of a previous call.")


def _status(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    return value.upper() if value else None


_FILTERS: list[Command] = [
    click.option("--project", default=None, help="Project name."),
    click.option("--since", default=None, help="After this time: ISO 8601 or relative (2h, 7d)."),
    click.option("--until", default=None, help="Before this time: ISO 8601 or relative."),
    click.option(
        "--status",
        type=click.Choice(["OK", "ERROR", "UNSET"], case_sensitive=False),
        callback=_status,
        default=None,
        help="Span status.",
    ),
    click.option("--kind", "span_kind", default=None, help="Span kind: LLM, TOOL, CHAIN, AGENT…"),
    click.option("--name", default=None, help="Exact span name."),
    click.option("--session", "session_id", default=None, help="Session id."),
    click.option(
        "--where",
        default=None,
        help='SQL expression over span columns and attribute paths, e.g. "latency_ms > 2000".',
    ),
]


def filter_options(command: Command) -> Command:
    """The filters every searching command shares (the tools' shared filter parameters)."""
    for option in reversed(_FILTERS):
        command = option(command)
    return command


# -- the commands ---------------------------------------------------------------------------------


@cli.command()
@db_option
@json_option
def projects(db: Path | None, as_json: bool) -> None:
    """Projects with trace, span and error counts and their time range."""
    emit(call(db, "list_projects", {}), as_json)


@cli.command()
@db_option
@click.option("--project", default=None, help="Project name.")
@click.option("--since", default=None, help="After this time: ISO 8601 or relative (2h, 7d).")
@click.option("--until", default=None, help="Before this time: ISO 8601 or relative.")
@click.option(
    "--status",
    type=click.Choice(["OK", "ERROR"], case_sensitive=False),
    callback=_status,
    default=None,
    help="ERROR: traces with an ERROR span; OK: without one.",
)
@click.option("--min-latency", "min_latency_ms", type=float, default=None, help="At least (ms).")
@click.option("--name", default=None, help="Root span name.")
@click.option("--kind", "span_kind", default=None, help="Only traces with a span of this kind.")
@click.option("--session", "session_id", default=None, help="Session id.")
@click.option("--user", "user_id", default=None, help="User id.")
@click.option("--regex", default=None, help="Regular expression over the traces' text.")
@click.option("-i", "--ignore-case", is_flag=True, help="Match --regex case-insensitively.")
@click.option(
    "--where",
    default=None,
    help="SQL expression over span columns and attribute paths; a trace matches when a span does.",
)
@click.option(
    "--order",
    "order_by",
    type=click.Choice(["newest", "oldest", "latency", "tokens", "errors"]),
    default=None,
    help="Order of the rows (default newest).",
)
@limit_option
@cursor_option
@max_chars_option
@json_option
def traces(db: Path | None, as_json: bool, **options: Any) -> None:
    """Search traces, newest first: id, root name, start, latency, spans, errors, tokens."""
    emit(call(db, "search_traces", options), as_json)


@cli.command()
@click.argument("trace_id")
@db_option
@click.option("--span", "span_id", default=None, help="Show the subtree under this span.")
@click.option("--depth", "max_depth", type=int, default=None, help="Most levels to show.")
@click.option("--project", default=None, help="Project of the trace.")
@max_chars_option
@json_option
def trace(db: Path | None, as_json: bool, **options: Any) -> None:
    """A trace as a compact tree: one line per span, critical path marked."""
    emit(call(db, "get_trace_preview", options), as_json)


@cli.command()
@click.argument("span_id")
@db_option
@click.option("--trace", "trace_id", default=None, help="The span's trace id.")
@click.option(
    "--path",
    "paths",
    multiple=True,
    help="Only these fields: dotted paths with * (llm.input_messages.*.message.content).",
)
@click.option("--offset", type=int, default=None, help="Start long values at this character.")
@max_chars_option
@json_option
def span(db: Path | None, as_json: bool, **options: Any) -> None:
    """One span in full: columns, attributes, events, resource; long values clipped."""
    emit(call(db, "get_span_data", options), as_json)


@cli.command()
@click.argument("trace_id")
@click.argument("pattern", metavar="REGEX")
@db_option
@click.option("-i", "--ignore-case", is_flag=True, help="Match case-insensitively.")
@click.option(
    "--context", "context_chars", type=int, default=None, help="Characters around each match."
)
@click.option("--limit", "max_matches", type=int, default=None, help="Most matches per page.")
@cursor_option
@max_chars_option
@json_option
def find(db: Path | None, as_json: bool, **options: Any) -> None:
    """Find a regular expression in every field of every span of a trace (like Ctrl+F)."""
    emit(call(db, "find_in_trace", options), as_json)


@cli.command()
@db_option
@filter_options
@click.option("--trace", "trace_id", default=None, help="Only spans of this trace.")
@click.option("--regex", "pattern", default=None, help="Regular expression over the spans' text.")
@click.option("-i", "--ignore-case", is_flag=True, help="Match --regex case-insensitively.")
@click.option(
    "--order",
    "order_by",
    type=click.Choice(["newest", "oldest", "latency"]),
    default=None,
    help="Order of the rows (default newest).",
)
@limit_option
@cursor_option
@max_chars_option
@json_option
def spans(db: Path | None, as_json: bool, **options: Any) -> None:
    """Search spans across traces: id, trace, name, kind, status, latency, matched snippet."""
    emit(call(db, "search_spans", options), as_json)


@cli.command("jq")
@click.argument("program")
@db_option
@click.option("--trace", "trace_id", default=None, help="Run over this trace's spans (an array).")
@click.option("--span", "span_id", default=None, help="Run over this one span (an object).")
@filter_options
@click.option(
    "--max-spans", type=int, default=None, help="Most filtered spans to read (default 500)."
)
@max_chars_option
@json_option
def jq_command(db: Path | None, as_json: bool, **options: Any) -> None:
    """Run a jq program over one span, one trace, or the spans matching filters."""
    emit(call(db, "jq", options), as_json)


@cli.command()
@db_option
@click.option(
    "--group-by",
    "group_by",
    multiple=True,
    help="Column, attribute path or time bucket (hour(start_time)); repeatable.",
)
@click.option(
    "--metric",
    "metrics",
    multiple=True,
    help="count, count_distinct(x), sum/avg/min/max(x), p50/p90/p95/p99(x); repeatable.",
)
@click.option(
    "--over",
    type=click.Choice(["spans", "traces"]),
    default=None,
    help="Group spans (default) or traces.",
)
@filter_options
@click.option(
    "--order", "order_by", default=None, help="A metric or group key, + ' asc' (default desc)."
)
@limit_option
@max_chars_option
@json_option
def agg(db: Path | None, as_json: bool, **options: Any) -> None:
    """Aggregate spans or traces: GROUP BY columns or attributes with count, avg, p95…"""
    emit(call(db, "aggregate", options), as_json)


@cli.command("sql")
@click.argument("query")
@db_option
@limit_option
@max_chars_option
@json_option
def sql_command(db: Path | None, as_json: bool, **options: Any) -> None:
    """Run one read-only SQL statement over the store's tables and views."""
    emit(call(db, "sql", options), as_json)


@cli.command()
@db_option
@click.option("--table", default=None, help="Only this table: spans, traces, sessions, projects.")
@max_chars_option
@json_option
def schema(db: Path | None, as_json: bool, **options: Any) -> None:
    """The store's tables, columns and example queries, as agents see them."""
    emit(call(db, "describe_schema", options), as_json)


@cli.command()
@click.argument("session_id")
@db_option
@click.option("--project", default=None, help="Project of the session.")
@cursor_option
@max_chars_option
@json_option
def session(db: Path | None, as_json: bool, **options: Any) -> None:
    """A multi-turn session: its traces in order with inputs, outputs, latency and errors."""
    emit(call(db, "get_session", options), as_json)


# -- judgment ------------------------------------------------------------------------------------


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
