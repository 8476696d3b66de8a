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
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console

from traceproof.cli import _fail, _settings, _store_or_remote, cli, db_option
from traceproof.cli_render import render
from traceproof.errors import ErrorCode, TraceproofError
from traceproof.remote import RemoteStore

Command = Callable[..., Any]


def call(
    db: Path | None,
    name: str,
    arguments: dict[str, Any],
    *,
    config: Path | None = None,
    create: bool = False,
) -> dict[str, Any]:
    """Run tool ``name`` on the store at ``db`` (or the server holding it); its result as JSON.
    Options left unset are not sent, so the tool's own defaults apply. ``config`` (a write's
    ``--config``): the project's annotation configs are stored first (see
    :mod:`traceproof.projectconfig`). ``create``: a store that does not exist is created (as
    ``ingest`` does), for commands that write data. An error exits, as a person reads it."""
    try:
        return tool_result(db, name, arguments, config=config, create=create)
    except TraceproofError as exc:
        _exit(exc)


def tool_result(
    db: Path | None,
    name: str,
    arguments: dict[str, Any],
    *,
    config: Path | None = None,
    create: bool = False,
) -> dict[str, Any]:
    """:func:`call`, raising the tool's :class:`TraceproofError` instead of exiting."""
    # The tools load only for the commands using them.
    from traceproof.tools.invoke import arguments_model, find_tool, run_tool

    fields = arguments_model(find_tool(name).fn).model_fields
    given = {
        k: v
        for k, v in arguments.items()
        if v is not None and v != () and (v is not False or _defaults_true(fields.get(k)))
    }
    given = {k: list(v) if isinstance(v, tuple) else v for k, v in given.items()}
    settings = _settings(db, config=config)
    with _store_or_remote(settings, create=create) as store:
        if name in WRITES:
            from traceproof.projectconfig import apply_annotation_configs, project_config

            apply_annotation_configs(store, project_config(settings))
        if isinstance(store, RemoteStore):
            return notes_for_people(store.call_tool(name, given))
        return notes_for_people(run_tool(store, name, given).model_dump(mode="json"))


def _defaults_true(field: Any) -> bool:
    """Whether a tool parameter defaults to true (so a false from the CLI must be sent)."""
    return field is not None and field.default is True


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
    "get_trajectory": "trajectory show",
    "trajectory_stats": "trajectory stats",
    "diff_trajectories": "trajectory diff",
    "find_first_wrong_step": "trajectory first-wrong-step",
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
