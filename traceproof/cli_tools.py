"""The read commands: the agents' tools for people and scripts.

Each command calls one registered tool (traceproof/tools/registry.py) with the options it was
given, on the store itself or, when a running ``traceproof serve`` holds it, through that
server's API: the same validation, the same result. ``--json`` prints the result model as JSON;
by default it is drawn for a terminal: lists of rows as tables, text blocks (a trace's tree) as
they are, nested objects as path/value tables, and the paging fields last.

The commands register themselves on the ``traceproof`` group when :mod:`traceproof.cli` imports
this module.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from traceproof.cli import _fail, _settings, _store_or_remote, cli, db_option, out
from traceproof.errors import TraceproofError
from traceproof.remote import RemoteStore

Command = Callable[..., Any]

#: The widest a table cell is drawn; --json prints every value whole.
CELL_CHARS = 200

_ISO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?")


def call(db: Path | None, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """Run tool ``name`` on the store at ``db`` (or the server holding it); its result as JSON.
    Options left unset are not sent, so the tool's own defaults apply."""
    from traceproof.tools.invoke import run_tool  # the tools load only for the commands using them

    given = {k: v for k, v in arguments.items() if v is not None and v != () and v is not False}
    given = {k: list(v) if isinstance(v, tuple) else v for k, v in given.items()}
    try:
        with _store_or_remote(_settings(db)) as store:
            if isinstance(store, RemoteStore):
                return store.call_tool(name, given)
            return run_tool(store, name, given).model_dump(mode="json")
    except TraceproofError as exc:
        _exit(exc)


def _exit(exc: TraceproofError) -> NoReturn:
    _fail(exc)
    raise SystemExit(1)  # _fail exits; this tells the type checker so


def emit(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        render(result)


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


# -- drawing a result for a terminal ---------------------------------------------------------------


#: Scalar fields about the whole answer (paging, what was left out): printed after the rows.
_AFTER = frozenset(
    {"total", "row_count", "truncated", "clipped_cells", "note", "next_cursor", "next_call"}
)


def render(result: dict[str, Any]) -> None:
    """Draw any result model's JSON: its scalar fields as ``key: value`` lines, then lists of
    rows as tables, text blocks (a trace's tree) as they are, nested objects as path/value
    tables, and last what the answer left out and how to page on."""
    grid = isinstance(result.get("columns"), list) and isinstance(result.get("rows"), list)
    grid = grid and not _is_rows(result["rows"])
    scalars = [(k, v) for k, v in result.items() if _is_scalar(v) and _shown(v)]
    _print_fields([(k, v) for k, v in scalars if k not in _AFTER])
    for key, value in result.items():
        if grid and key == "rows":
            _print_table(_grid_table(result["columns"], value))
        elif _is_scalar(value) or (grid and key in ("columns", "types")) or value in ([], {}):
            continue  # printed as fields, the header of the rows grid, or empty
        elif isinstance(value, str):
            out.print(value, markup=False, highlight=False, soft_wrap=True)
        elif _is_rows(value):
            _print_table(_rows_table(value))
        elif isinstance(value, dict) and value:
            _print_table(_paths_table(key, value))
        elif isinstance(value, list) and key != "results" and _ids(value):
            _print_fields([(key, ", ".join(value))])
        elif isinstance(value, list):
            for item in value:
                text = item if isinstance(item, str) else _json(item, indent=2)
                out.print(text, markup=False, highlight=False, soft_wrap=True)
    _print_fields([(k, v) for k, v in scalars if k in _AFTER])


def _ids(values: list[Any]) -> bool:
    """Whether a list holds names or ids (shown on one line) rather than lines of text."""
    return all(isinstance(v, str) and v and not any(c.isspace() for c in v) for v in values)


def _shown(value: Any) -> bool:
    """Whether a field says something: unset, empty and false fields are left out; 0 is not."""
    return value is not None and value != "" and value is not False


def _is_scalar(value: Any) -> bool:
    if isinstance(value, str):
        return "\n" not in value
    return not isinstance(value, list | dict)


def _print_fields(fields: list[tuple[str, Any]]) -> None:
    paged = any(key == "next_cursor" for key, _ in fields)
    for key, value in fields:
        if key == "next_cursor":
            line = f"next page: --cursor {value}"
        elif key == "next_call" and paged:
            continue  # the agents' form of the same continuation
        else:
            line = f"{key}: {_cell(value, limit=100_000)}"
        out.print(line, markup=False, highlight=False, soft_wrap=True)


def _is_rows(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _rows_table(rows: list[dict[str, Any]]) -> Table:
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    return _grid_table(list(columns), [[row.get(c) for c in columns] for row in rows])


def _grid_table(columns: list[Any], rows: list[Any]) -> Table:
    names = [str(c.get("name", c)) if isinstance(c, dict) else str(c) for c in columns]
    table = Table(*names)
    for column in table.columns:
        column.overflow = "fold"
    grid = [row if isinstance(row, list) else [row] for row in rows]
    for index, column in enumerate(table.columns):
        values = [row[index] for row in grid if index < len(row) and row[index] is not None]
        if values and all(_is_number(v) for v in values):
            column.justify = "right"
    for row in grid:
        table.add_row(*[Text(_cell(value)) for value in row])
    return table


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _paths_table(title: str, value: dict[str, Any]) -> Table:
    table = Table(title, "value")
    table.columns[1].overflow = "fold"
    for path, leaf in _flatten(value):
        table.add_row(Text(path), Text(_cell(leaf, limit=4 * CELL_CHARS)))
    return table


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested objects as (dotted path, leaf) pairs: how agents name attributes."""
    if isinstance(value, dict) and value:
        pairs: list[tuple[str, Any]] = []
        for key, inner in value.items():
            pairs.extend(_flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return pairs
    if isinstance(value, list) and value and all(isinstance(v, dict | list) for v in value):
        return [pair for i, v in enumerate(value) for pair in _flatten(v, f"{prefix}.{i}")]
    return [(prefix, value)]


def _cell(value: Any, limit: int = CELL_CHARS) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}".rstrip("0").rstrip(".")
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    text = value if isinstance(value, str) else _json(value)
    if _ISO_TIME.fullmatch(text):  # 2026-11-01T14:37:45.017000 -> 2026-11-01 14:37:45.017
        return text[:23].replace("T", " ")
    text = " ".join(text.split()) if len(text) <= 4 * limit else " ".join(text[: 4 * limit].split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _json(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=False, default=str)


def _print_table(table: Table) -> None:
    if out.is_terminal:
        out.print(table)
    else:  # piped or captured: full width, so that no value is folded mid-word
        natural = Console(file=io.StringIO(), width=100_000).measure(table).maximum
        Console(file=out.file, width=min(max(natural, out.width), 400)).print(table)
