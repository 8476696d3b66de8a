"""The filters shared by the search and aggregate tools, and attribute paths in SQL.

Agents name span data the same way everywhere: a public column (``model``, ``latency_ms``…) or
an attribute by its dotted OpenInference path (``llm.token_count.prompt``,
``llm.input_messages.0.message.content``). :func:`field_sql` turns either into a SQL expression
over the ``spans`` table; :func:`where_sql` rewrites an agent's ``where`` expression the same
way. The rewritten text is still the agent's, so it runs as an untrusted statement (one SELECT,
on the locked-down store): it can filter, never escape.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field

from traceproof.errors import ErrorCode
from traceproof.storage import (
    SPAN_COLUMNS,
    SPAN_KINDS,
    SPAN_NUMERIC_COLUMNS,
    InvalidQuery,
    Reader,
    check_expression,
    check_select,
)
from traceproof.tools.common import ToolFailure, parse_time

# -- the shared parameters (every tool that filters spans declares these) -----------------------

ProjectParam = Annotated[str | None, Field()]
SinceParam = Annotated[str | None, Field(description="ISO, or ago: 30m, 2h, 7d.")]
UntilParam = Annotated[str | None, Field(description="ISO or ago.")]
StatusParam = Annotated[Literal["OK", "ERROR", "UNSET"] | None, Field()]
SpanKindParam = Annotated[str | None, Field(description="LLM, TOOL, AGENT, RETRIEVER…")]
NameParam = Annotated[str | None, Field(description="Exact span name.")]
SessionParam = Annotated[str | None, Field()]
WhereParam = Annotated[
    str | None,
    Field(description='SQL, e.g. "latency_ms > 2000 and llm.token_count.prompt > 1000".'),
]

#: The spans as every span-level tool reads them (search_spans, aggregate, jq's filters, the
#: ``where`` of search_traces): a span's session and user are its own, else its trace's. Many
#: instrumentations put ``session.id`` and ``user.id`` on the root span only, and spans arrive
#: in any order; the trace index merges them as they come. Aliased ``spans``, so conditions and
#: columns read the same as over the table.
SPANS_WITH_TRACE = (
    "(SELECT spans.* REPLACE (coalesce(spans.session_id, trace_index.session_id) AS session_id, "
    "coalesce(spans.user_id, trace_index.user_id) AS user_id) FROM spans LEFT JOIN trace_index "
    "ON trace_index.project = spans.project AND trace_index.trace_id = spans.trace_id) AS spans"
)
_TRACE_OWNED = re.compile(r"\b(session_id|user_id)\b", re.IGNORECASE)


def span_source(*sql: str) -> str:
    """What to read spans FROM for a query whose conditions, groups or columns are ``sql``:
    :data:`SPANS_WITH_TRACE` when they name a session or user (the join is only paid then),
    else the ``spans`` table itself; with the annotation columns they name
    (:func:`annotation_sql`) joined in once, when they name any."""
    trace = any(_TRACE_OWNED.search(text) for text in sql)
    wanted = annotation_refs(*sql)
    if not wanted:
        return SPANS_WITH_TRACE if trace else "spans"
    base = "spans"
    columns = "spans.*"
    if trace:
        base += (
            " LEFT JOIN trace_index ON trace_index.project = spans.project "
            "AND trace_index.trace_id = spans.trace_id"
        )
        columns = (
            "spans.* REPLACE (coalesce(spans.session_id, trace_index.session_id) AS session_id, "
            "coalesce(spans.user_id, trace_index.user_id) AS user_id)"
        )
    picked = ", ".join(f"coalesce(sv.{c}, tv.{c}) AS {c}" for c in _annotation_columns(wanted))
    return (
        f"(SELECT {columns}, {picked} FROM {base} "
        f"LEFT JOIN ({_verdicts(wanted, 'span')}) sv ON sv.project = spans.project "
        "AND sv.trace_id = spans.trace_id AND sv.span_id = spans.span_id "
        f"LEFT JOIN ({_trace_verdicts(wanted)}) tv ON tv.project = spans.project "
        "AND tv.trace_id = spans.trace_id) AS spans"
    )


def trace_source(*sql: str) -> str:
    """What to read the ``traces`` view FROM for groups or columns ``sql``: the view itself,
    or with the annotation columns they name joined in once (a trace's own verdict, else its
    session's)."""
    wanted = annotation_refs(*sql)
    if not wanted:
        return "traces"
    picked = ", ".join(f"tv.{c}" for c in _annotation_columns(wanted))
    return (
        f"(SELECT traces.*, {picked} FROM traces LEFT JOIN ({_trace_verdicts(wanted)}) tv "
        "ON tv.project = traces.project AND tv.trace_id = traces.trace_id) AS traces"
    )


#: since, until, span_kind, name or where in a tool whose own description says "filters as in
#: search_spans": ``tools/list`` (paid on every agent turn) describes the shared filters once
#: there, not again in every tool that takes them.
FilterRef = Annotated[str | None, Field()]

#: What such a tool's description says.
FILTERS_AS_IN_SEARCH_SPANS = "Filters as in search_spans."

#: Columns of the ``spans`` table agents may name (the public ones).
SPAN_FIELDS = frozenset(SPAN_COLUMNS)

#: JSON columns addressed by a path prefix (``resource.service.name``, ``attributes.x``).
_JSON_ROOTS = ("attributes", "resource", "events", "links")

_PATH_SEGMENT = re.compile(r"^[A-Za-z_][\w\-]*$|^\d+$")


@dataclass(frozen=True)
class SpanFilter:
    """The shared filters, as given by a tool's parameters."""

    project: str | None = None
    since: str | None = None
    until: str | None = None
    status: str | None = None
    span_kind: str | None = None
    name: str | None = None
    session_id: str | None = None
    where: str | None = None

    def sql(self, alias: str = "") -> tuple[str, list[Any]]:
        """A SQL condition (``TRUE`` when empty) over ``spans`` and its parameters. ``alias``
        prefixes column names (``"s."``)."""
        conditions: list[str] = []
        params: list[Any] = []
        if self.project is not None:
            conditions.append(f"{alias}project = ?")
            params.append(self.project)
        if self.since is not None:
            conditions.append(f"{alias}start_time >= ?")
            params.append(parse_time(self.since, name="since"))
        if self.until is not None:
            conditions.append(f"{alias}start_time < ?")
            params.append(parse_time(self.until, name="until"))
        if self.status is not None:
            conditions.append(f"{alias}status = ?")
            params.append(self.status.upper())
        if self.span_kind is not None:
            kind = self.span_kind.upper()
            if kind not in SPAN_KINDS:
                raise ToolFailure(
                    f"span_kind={self.span_kind!r} is not an OpenInference span kind. Use one "
                    f"of {', '.join(sorted(SPAN_KINDS))}.",
                    code=ErrorCode.INVALID_ARGUMENT,
                )
            conditions.append(f"{alias}span_kind = ?")
            params.append(kind)
        if self.name is not None:
            conditions.append(f"{alias}name = ?")
            params.append(self.name)
        if self.session_id is not None:
            conditions.append(f"{alias}session_id = ?")
            params.append(self.session_id)
        if self.where:
            conditions.append(f"({where_sql(self.where, alias)})")
        return (" AND ".join(conditions) or "TRUE"), params

    @property
    def untrusted(self) -> bool:
        """Whether the condition carries an agent's own expression."""
        return bool(self.where)


def json_path(segments: list[str]) -> str:
    """A DuckDB JSON path for dotted-path segments: digits index arrays."""
    parts = ["$"]
    for segment in segments:
        if segment == "*":
            parts.append("[*]")
        elif segment.isdigit():
            parts.append(f"[{segment}]")
        elif re.fullmatch(r"[A-Za-z_]\w*", segment):
            parts.append(f".{segment}")
        else:
            parts.append('."' + segment.replace('"', "") + '"')
    return "".join(parts)


def field_sql(name: str, *, numeric: bool = False, alias: str = "") -> str:
    """SQL for a public span column or a dotted attribute path (text; ``numeric``: DOUBLE, NULL
    where the value is not a number)."""
    name = name.strip()
    if name in SPAN_FIELDS:
        column = f"{alias}{name}"
        return (
            f"TRY_CAST({column} AS DOUBLE)"
            if numeric and name not in SPAN_NUMERIC_COLUMNS
            else column
        )
    segments = name.split(".")
    if not all(_PATH_SEGMENT.match(s) or s == "*" for s in segments) or len(segments) < 2:
        raise ToolFailure(
            f"{name!r} is neither a span column nor a dotted attribute path. Use a column "
            "(model, latency_ms, tool_name, status…; describe_schema lists them) or a path "
            "such as llm.token_count.prompt.",
            code=ErrorCode.INVALID_FILTER,
        )
    if segments[0] == ANNOTATION_ROOT:
        return annotation_sql(segments[1:], name, alias=alias)
    root = "attributes"
    if segments[0] in _JSON_ROOTS:
        root, segments = segments[0], segments[1:]
    text = f"json_extract_string({alias}{root}, '{json_path(segments)}')"
    return f"TRY_CAST({text} AS DOUBLE)" if numeric else text


#: ``annotation.<name>`` (its label) and ``annotation.<name>.score`` read annotations.
ANNOTATION_ROOT = "annotation"

#: The column an annotation field compiles to: ``__annotation_label_<hex of the name>`` (or
#: ``_score_``); hex keeps any name a plain identifier, and names differing in case apart.
_ANNOTATION_COLUMN = re.compile(r"\b__annotation_(label|score)_([0-9a-f]+)\b")

#: Which verdict counts when several annotators gave one for the same target: a person's
#: (HUMAN) latest, else the latest of any.
_PRECEDENCE = "(annotator_kind = 'HUMAN', updated_at)"


def annotation_sql(segments: list[str], text: str, *, alias: str = "") -> str:
    """The current verdict for annotation ``segments[0]``: its label, or its score with
    ``.score``. Over spans: the span's own, else its trace's, else its session's (the nearest
    target that gives one); over traces: the trace's own, else its session's. Per target a
    person's (HUMAN) latest verdict wins, else the latest of any; none reads NULL.

    It compiles to a column that :func:`span_source` / :func:`trace_source` join in, once per
    query (not a lookup per row)."""
    if len(segments) not in (1, 2) or (len(segments) == 2 and segments[1] != "score"):
        raise ToolFailure(
            f"{text!r} is not an annotation field. Use annotation.<name> (its label) or "
            "annotation.<name>.score, e.g. annotation.correctness = 'fail'.",
            code=ErrorCode.INVALID_FILTER,
        )
    column = "score" if len(segments) == 2 else "label"
    return f"{alias}__annotation_{column}_{segments[0].encode().hex()}"


def annotation_refs(*sql: str) -> list[str]:
    """The annotation names the SQL texts read (through :func:`annotation_sql`), sorted."""
    names = {
        bytes.fromhex(m.group(2)).decode(errors="replace")
        for text in sql
        for m in _ANNOTATION_COLUMN.finditer(text)
        if len(m.group(2)) % 2 == 0
    }
    return sorted(names)


def annotation_names(expression: str | None) -> list[str]:
    """The annotation names an agent's ``where`` expression reads (for notes)."""
    if not expression:
        return []
    return annotation_refs(where_sql(expression))


def _annotation_columns(names: list[str]) -> list[str]:
    return [f"__annotation_{c}_{n.encode().hex()}" for n in names for c in ("label", "score")]


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _verdicts(names: list[str], kind: str) -> str:
    """Per target of ``kind`` (span, trace, session) the verdict columns of ``names``: one
    grouped pass over the annotations of those names."""
    keys = {"span": "project, trace_id, span_id", "trace": "project, trace_id"}.get(
        kind, "project, session_id"
    )
    aggregates = ", ".join(
        f"arg_max({c}, {_PRECEDENCE}) FILTER (WHERE name = {_quote(n)} AND {c} IS NOT NULL) "
        f"AS __annotation_{c}_{n.encode().hex()}"
        for n in names
        for c in ("label", "score")
    )
    listed = ", ".join(_quote(n) for n in names)
    return (
        f"SELECT {keys}, {aggregates} FROM annotations WHERE target_kind = '{kind}' "
        f"AND name IN ({listed}) GROUP BY {keys}"
    )


def _trace_verdicts(names: list[str]) -> str:
    """Per trace with one, the trace's own verdict columns of ``names``, else its session's."""
    picked = ", ".join(f"coalesce(ov.{c}, nv.{c}) AS {c}" for c in _annotation_columns(names))
    return (
        f"SELECT ti.project, ti.trace_id, {picked} FROM trace_index ti "
        f"LEFT JOIN ({_verdicts(names, 'trace')}) ov ON ov.project = ti.project "
        "AND ov.trace_id = ti.trace_id "
        f"LEFT JOIN ({_verdicts(names, 'session')}) nv ON nv.project = ti.project "
        "AND nv.session_id = ti.session_id "
        "WHERE ov.project IS NOT NULL OR nv.project IS NOT NULL"
    )


# Tokens of a where expression: string literals, quoted identifiers, dotted paths, numbers.
_TOKEN = re.compile(
    r"""(?P<string>'(?:[^']|'')*')
      | (?P<quoted>"(?:[^"]|"")*")
      | (?P<path>[A-Za-z_][\w\-]*(?:\.(?:[A-Za-z_][\w\-]*|\d+|\*))+)
      | (?P<number>\d+(?:\.\d+)?)
      | (?P<op><=|>=|<>|!=|=|<|>)
    """,
    re.VERBOSE,
)


def where_sql(expression: str, alias: str = "") -> str:
    """An agent's ``where`` expression with dotted attribute paths turned into JSON lookups.

    A path compared with a number (``llm.token_count.prompt > 1000``) is read as a number.
    Comments and statement separators are refused so the expression cannot end the query.
    """
    if (
        ";" in _strip_strings(expression)
        or "--" in _strip_strings(expression)
        or ("/*" in _strip_strings(expression))
    ):
        raise ToolFailure(
            "where must be one expression: no ';' or comments. Example: "
            "\"status = 'ERROR' and latency_ms > 1000\".",
            code=ErrorCode.INVALID_FILTER,
        )
    try:
        check_expression(expression)
    except InvalidQuery as exc:
        raise ToolFailure(exc.message, code=ErrorCode.INVALID_FILTER) from None
    tokens = list(_TOKEN.finditer(expression))
    out: list[str] = []
    last = 0
    for index, token in enumerate(tokens):
        if token.lastgroup != "path":
            continue
        out.append(expression[last : token.start()])
        numeric = _next_to_number(tokens, index)
        out.append(field_sql(token.group(), numeric=numeric, alias=alias))
        last = token.end()
    out.append(expression[last:])
    return "".join(out)


def _next_to_number(tokens: list[re.Match[str]], index: int) -> bool:
    after = tokens[index + 1 : index + 3]
    before = tokens[max(0, index - 2) : index]
    if [t.lastgroup for t in after] == ["op", "number"]:
        return True
    return [t.lastgroup for t in before] == ["number", "op"]


def _strip_strings(expression: str) -> str:
    return re.sub(r"'(?:[^']|'')*'", "''", expression)


def time_param(value: str | None, name: str) -> datetime | None:
    return None if value is None else parse_time(value, name=name)


@contextmanager
def where_errors(where: str | None) -> Iterator[None]:
    """Report a query that failed because of an agent's ``where`` expression as
    ``invalid_filter``, the same way in every tool."""
    try:
        yield
    except InvalidQuery as exc:
        if not where:
            raise
        raise ToolFailure(
            f"where {where[:200]!r} {_where_reason(where, exc.message)}. Use span columns "
            "(name, status, latency_ms, model, tool_name…) or dotted attribute paths; "
            "describe_schema lists them.",
            code=ErrorCode.INVALID_FILTER,
        ) from None


_NO_PARSE = "The query does not parse: "


def _where_reason(where: str, message: str) -> str:
    """Why a query with ``where`` failed, in terms of the agent's own text: a syntax error is
    looked for in the expression alone (the query around it wraps it in parentheses, so
    DuckDB would name a ``)`` the agent never wrote)."""
    if not message.startswith(_NO_PARSE):
        return "failed: " + message.removesuffix(" Call describe_schema for columns.").rstrip(".")
    try:
        check_select(f"SELECT 1 WHERE {where}")
    except InvalidQuery as alone:
        message = alone.message
    detail = message.removeprefix(_NO_PARSE).removesuffix(". Fix the SQL.")
    return "does not parse: " + detail.removeprefix("Parser Error: ").rstrip(".")


def check_regex(reader: Reader, pattern: str, name: str = "pattern") -> None:
    """Compile ``pattern`` once with DuckDB's own engine (RE2), so a bad one is reported as
    such rather than as a failed query."""
    try:
        reader.rows("SELECT regexp_matches('', ?)", [pattern])
    except InvalidQuery as exc:
        reason = exc.message.split(". ")[0].removeprefix("Invalid Input Error: ")
        raise ToolFailure(
            f"{name} {pattern[:100]!r} is not a valid RE2 regular expression ({reason}). Fix "
            r"it: escape special characters with \ (e.g. \( \. \$); RE2 has no lookaround "
            "or backreferences.",
            code=ErrorCode.INVALID_REGEX,
        ) from None
