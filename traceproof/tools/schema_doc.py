"""The schema as a model should read it: ``describe_schema``'s content.

Column names and types come from the live store (``information_schema``), so the description
never drifts from the schema; the meanings, examples and pitfalls are written here. A column
without a written meaning is still listed (with its type). Every example query is tested to run
on the demo store and return rows.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from traceproof.storage import Store
from traceproof.tools.common import size

#: The public tables and views, in the order they are described.
TABLES: dict[str, str] = {
    "spans": "Table, one row per span (primary key trace_id + span_id). Promoted columns for "
    "what is filtered and grouped often; everything else in the JSON column attributes.",
    "traces": "View, one row per trace: root span's name/input/output, totals over its spans.",
    "sessions": "View, one row per (project, session_id): totals over the session's traces.",
    "projects": "Table, one row per project.",
    "annotations": "Table, the current annotation (label/score/explanation) per target, name, "
    "annotator and identifier. A span's: target_kind 'span', join on trace_id + span_id.",
    "annotation_versions": "View: annotations plus their earlier versions (is_current false).",
    "annotation_configs": "Table: what annotations of a name may say.",
    "datasets": "Table, one row per dataset.",
    "dataset_versions": "Table, one row per version of a dataset (append-only).",
    "dataset_examples": "Table, one row per example and version that added it. In version v: "
    "added_version <= v AND (removed_version IS NULL OR removed_version > v).",
    "experiments": "Table, one row per experiment (a task run on a dataset version).",
    "experiment_runs": "Table, one row per run (example × repetition). Its scores are "
    "annotations: target_kind 'experiment_run', target_id = id.",
    "experiment_baselines": "Table: the baseline experiment per (task, dataset).",
}

_SPAN_MEANINGS: dict[str, str] = {
    "project": "Project (resource openinference.project.name, else service.name).",
    "trace_id": "Trace id (32 hex chars).",
    "span_id": "Span id (16 hex chars); unique within its trace only.",
    "parent_span_id": "Parent span id; NULL for the root span.",
    "name": "Span name (operation, tool or agent step).",
    "span_kind": "OpenInference kind: LLM, CHAIN, TOOL, AGENT, RETRIEVER, EMBEDDING, RERANKER, "
    "GUARDRAIL, EVALUATOR, PROMPT or UNKNOWN.",
    "otel_kind": "OpenTelemetry span kind (INTERNAL, SERVER, CLIENT…).",
    "status": "OK, ERROR or UNSET.",
    "status_message": "Status description, usually set on errors.",
    "start_time": "Start, UTC (TIMESTAMP without zone).",
    "end_time": "End, UTC.",
    "latency_ms": "Duration in milliseconds.",
    "session_id": "The span's own session.id, often set on the root only (see pitfalls).",
    "user_id": "The span's own user.id, often set on the root only (see pitfalls).",
    "model": "Model name of LLM/embedding spans (llm.model_name or gen_ai.*.model).",
    "tool_name": "Tool name of TOOL spans (tool.name).",
    "prompt_tokens": "Prompt/input tokens (llm.token_count.prompt); NULL when not reported.",
    "completion_tokens": "Completion/output tokens (llm.token_count.completion).",
    "total_tokens": "Total tokens (llm.token_count.total, or prompt + completion).",
    "input_value": "Input text (input.value); can be very large: select left(input_value, 200).",
    "input_mime_type": "text/plain or application/json.",
    "output_value": "Output text (output.value); can be very large: use left().",
    "output_mime_type": "text/plain or application/json.",
    "error_type": "Exception type (from the exception event) of a failed span.",
    "error_message": "Exception message, else the status message of an ERROR span.",
    "attributes": "JSON: every other attribute, nested by dotted path "
    "({'llm': {'token_count': {'prompt': 87}}}); lists of messages are JSON arrays.",
    "events": "JSON array of {name, timestamp, attributes} (exceptions: name 'exception', "
    "attributes.exception.type/message/stacktrace).",
    "links": "JSON array of links to other spans.",
    "resource": "JSON: resource attributes, nested (service.name → {'service': {'name': …}}).",
    "scope_name": "Instrumentation scope (library) name.",
}

_TRACE_MEANINGS: dict[str, str] = {
    "project": "Project.",
    "trace_id": "Trace id.",
    "name": "Root span's name (the earliest span's while the root is missing).",
    "root_span_id": "Root span id (NULL until the root arrives).",
    "has_root": "Whether the root span was received.",
    "span_kind": "Root span's kind.",
    "status": "ERROR when any span failed, else OK.",
    "start_time": "Earliest span start, UTC.",
    "end_time": "Latest span end, UTC.",
    "latency_ms": "end_time - start_time in ms.",
    "span_count": "Spans in the trace.",
    "error_count": "Spans with status ERROR.",
    "llm_span_count": "LLM spans.",
    "prompt_tokens": "Sum of prompt tokens over LLM spans only.",
    "completion_tokens": "Sum of completion tokens over LLM spans only.",
    "total_tokens": "Sum of total tokens over LLM spans only.",
    "session_id": "Session id (smallest seen in the trace).",
    "user_id": "User id (smallest seen in the trace).",
    "input_preview": "Root span's input, first 1000 chars.",
    "output_preview": "Root span's output, first 1000 chars.",
}

_SESSION_MEANINGS: dict[str, str] = {
    "project": "Project.",
    "session_id": "Session id.",
    "trace_count": "Traces (turns) in the session.",
    "span_count": "Spans over its traces.",
    "error_count": "ERROR spans over its traces.",
    "total_tokens": "LLM tokens over its traces.",
    "start_time": "First trace start, UTC.",
    "end_time": "Last trace end, UTC.",
    "user_id": "User id.",
}

_PROJECT_MEANINGS: dict[str, str] = {
    "name": "Project name (spans.project).",
    "created_at": "When its first span was stored, UTC.",
}

_ANNOTATION_MEANINGS: dict[str, str] = {
    "id": "Annotation id (kept across versions).",
    "project": "Project of its target.",
    "target_kind": "span, trace or session.",
    "target_id": "The span, trace or session id.",
    "trace_id": "The target's trace (span and trace targets).",
    "span_id": "The span (span targets only).",
    "session_id": "The target's session, if any.",
    "name": "What is judged (correctness, error_category…).",
    "label": "Verdict label (pass, fail…), NULL if scored only.",
    "score": "Numeric score, NULL if labelled only.",
    "explanation": "Why.",
    "metadata": "JSON: anything else the annotator recorded.",
    "annotator_kind": "HUMAN, LLM or CODE.",
    "annotator": "Who, or which evaluator/judge and version.",
    "identifier": "Distinguishes several annotations of one annotator ('' by default).",
    "version": "1 when written, +1 per rewrite.",
    "created_at": "First written, UTC.",
    "updated_at": "This version written, UTC.",
}

_VERSION_MEANINGS: dict[str, str] = {
    **dict.fromkeys(_ANNOTATION_MEANINGS, "As in annotations."),
    "is_current": "True for the current version.",
    "replaced_at": "When a later version replaced it (NULL if current).",
}

_CONFIG_MEANINGS: dict[str, str] = {
    "name": "Annotation name it applies to.",
    "kind": "CATEGORICAL, CONTINUOUS or FREEFORM.",
    "labels": "JSON [{label, score}] allowed (CATEGORICAL).",
    "lower_bound": "Lowest score allowed (CONTINUOUS).",
    "upper_bound": "Highest score allowed (CONTINUOUS).",
    "direction": "MAXIMIZE, MINIMIZE or NONE: which scores are better.",
    "description": "What the annotation means.",
    "created_at": "Created, UTC.",
    "updated_at": "Last changed, UTC.",
}

_DATASET_MEANINGS: dict[str, str] = {
    "id": "Dataset id.",
    "name": "Unique name.",
    "project": "Project its spans came from.",
    "description": "Free text.",
    "created_at": "UTC.",
    "updated_at": "UTC.",
}

_DATASET_VERSION_MEANINGS: dict[str, str] = {
    "dataset_id": "datasets.id.",
    "version": "1, 2, …",
    "examples": "Examples in it.",
    "added": "Added by it.",
    "removed": "Removed by it.",
    "note": "What made it.",
    "created_at": "UTC.",
}

_EXAMPLE_MEANINGS: dict[str, str] = {
    "dataset_id": "datasets.id.",
    "example_id": "Hash of input + expected.",
    "added_version": "Version that added it.",
    "removed_version": "Version that removed it; NULL if current.",
    "input": "JSON input.",
    "expected": "JSON expected output.",
    "metadata": "JSON.",
    "split": "Split name (train, test…).",
    "source_trace_id": "Trace it came from.",
    "source_span_id": "Span it came from.",
}

_EXPERIMENT_MEANINGS: dict[str, str] = {
    "id": "Experiment id.",
    "name": "Name (not unique).",
    "project": "Project of the runs' spans.",
    "task": "[tasks.NAME] in traceproof.toml.",
    "task_hash": "Hash of the task definition.",
    "dataset_id": "datasets.id.",
    "dataset_version": "Version it ran on.",
    "split": "Split it ran on, NULL: all.",
    "evaluators": "JSON [{name, kind, hash, calibrated}].",
    "repetitions": "Runs per example.",
    "concurrency": "Runs at once.",
    "timeout_s": "Per-run timeout, s.",
    "status": "running, done, failed, cancelled or interrupted.",
    "provenance": "JSON: git commit, dirty, diff hash, versions.",
    "summary": "JSON: counts and scores when finished.",
    "created_at": "UTC.",
    "finished_at": "UTC.",
}

_RUN_MEANINGS: dict[str, str] = {
    "id": "Run id.",
    "experiment_id": "experiments.id.",
    "example_id": "dataset_examples.example_id.",
    "repetition": "0, 1, …",
    "status": "ok, error, timeout, crash or bad_output.",
    "error": "Why it failed.",
    "output": "JSON output of the task.",
    "trace_ids": "The run's traces, a list: trace_ids[1], unnest(trace_ids).",
    "latency_ms": "Run time, ms.",
    "tokens": "LLM tokens over its traces.",
    "cost_usd": "Cost, USD.",
    "tool_calls": "TOOL spans over its traces.",
    "started_at": "UTC.",
    "finished_at": "UTC.",
}

_BASELINE_MEANINGS: dict[str, str] = {
    "task": "Task name.",
    "dataset_id": "datasets.id.",
    "experiment_id": "The baseline, experiments.id.",
    "set_at": "UTC.",
}

MEANINGS: dict[str, dict[str, str]] = {
    "spans": _SPAN_MEANINGS,
    "traces": _TRACE_MEANINGS,
    "sessions": _SESSION_MEANINGS,
    "projects": _PROJECT_MEANINGS,
    "annotations": _ANNOTATION_MEANINGS,
    "annotation_versions": _VERSION_MEANINGS,
    "annotation_configs": _CONFIG_MEANINGS,
    "datasets": _DATASET_MEANINGS,
    "dataset_versions": _DATASET_VERSION_MEANINGS,
    "dataset_examples": _EXAMPLE_MEANINGS,
    "experiments": _EXPERIMENT_MEANINGS,
    "experiment_runs": _RUN_MEANINGS,
    "experiment_baselines": _BASELINE_MEANINGS,
}

ATTRIBUTES = (
    "Attributes are one JSON object per span, nested by the dotted OpenInference path: "
    "llm.token_count.prompt is attributes.llm.token_count.prompt; list items are arrays "
    "(llm.input_messages.0.message.content is $.llm.input_messages[0].message.content). Read a "
    "value as text with json_extract_string(attributes, '$.llm.token_count.prompt') or "
    "attributes->>'$.llm.model_name'; as a number with "
    "TRY_CAST(attributes->>'$.llm.token_count.prompt' AS DOUBLE); a sub-object as JSON with "
    "attributes->'$.tool.parameters'; all message contents with "
    "attributes->'$.llm.input_messages[*].message.content'. input.value and output.value are "
    "not in attributes: they are the input_value/output_value columns. events and resource are "
    "JSON the same way (events->>'$[0].attributes.exception.message')."
)


class Example(BaseModel):
    question: str = Field(description="What the query answers.")
    sql: str = Field(description="A query that runs as is.")


EXAMPLES: tuple[Example, ...] = (
    Example(
        question="Slowest traces in the last hour of data",
        sql="SELECT trace_id, name, latency_ms, span_count, error_count FROM traces "
        "WHERE start_time >= (SELECT max(start_time) FROM traces) - INTERVAL 1 HOUR "
        "ORDER BY latency_ms DESC LIMIT 10",
    ),
    Example(
        question="Average and p95 latency and tokens by model",
        sql="SELECT model, count(*) AS spans, avg(latency_ms) AS avg_ms, "
        "quantile_cont(latency_ms, 0.95) AS p95_ms, sum(total_tokens) AS tokens "
        "FROM spans WHERE span_kind = 'LLM' GROUP BY model ORDER BY spans DESC",
    ),
    Example(
        question="Failing tool calls with their arguments and error",
        sql="SELECT trace_id, span_id, tool_name, left(input_value, 200) AS arguments, "
        "error_type, error_message FROM spans "
        "WHERE span_kind = 'TOOL' AND status = 'ERROR' ORDER BY start_time DESC LIMIT 20",
    ),
    Example(
        question="Sessions that had failing tool calls",
        sql="SELECT coalesce(s.session_id, t.session_id) AS session, "
        "count(*) AS failed_tool_calls, list(DISTINCT s.tool_name) AS tools "
        "FROM spans s JOIN traces t USING (project, trace_id) "
        "WHERE s.span_kind = 'TOOL' AND s.status = 'ERROR' AND session IS NOT NULL "
        "GROUP BY session ORDER BY failed_tool_calls DESC",
    ),
    Example(
        question="Messages sent to an LLM (first 200 chars of each)",
        sql="SELECT span_id, m.value->>'$.message.role' AS role, "
        "left(m.value->>'$.message.content', 200) AS content FROM spans, "
        "json_each(attributes->'$.llm.input_messages') AS m "
        "WHERE span_kind = 'LLM' LIMIT 20",
    ),
    Example(
        question="Which span dominates a trace's latency",
        sql="SELECT s.trace_id, s.name, s.span_kind, s.latency_ms, "
        "round(100 * s.latency_ms / t.latency_ms, 1) AS pct_of_trace FROM spans s "
        "JOIN traces t USING (project, trace_id) WHERE s.parent_span_id IS NOT NULL "
        "ORDER BY t.latency_ms DESC, s.latency_ms DESC LIMIT 10",
    ),
    Example(
        question="Exceptions recorded as span events",
        sql="SELECT span_id, e.value->>'$.attributes.exception.type' AS type, "
        "e.value->>'$.attributes.exception.message' AS message FROM spans, "
        "json_each(events) AS e WHERE e.value->>'$.name' = 'exception' LIMIT 20",
    ),
    Example(
        question="Errors per hour",
        sql="SELECT date_trunc('hour', start_time) AS hour, count(*) FILTER "
        "(WHERE status = 'ERROR') AS errors, count(*) AS spans FROM spans GROUP BY hour "
        "ORDER BY hour",
    ),
    Example(
        question="Failed traces by people's verdict (target_kind span/trace/session; in where, "
        "annotation.resolved reads a span's own, else its trace's, else its session's, a "
        "HUMAN's latest first)",
        sql="SELECT a.trace_id, a.label, a.explanation FROM annotations a WHERE "
        "a.target_kind = 'trace' AND a.name = 'resolved' AND a.annotator_kind = 'HUMAN' "
        "AND a.label = 'fail' LIMIT 20",
    ),
    Example(
        question="LLM spans with their correctness verdicts (NULL: not judged yet)",
        sql="SELECT s.trace_id, s.span_id, s.name, a.label, a.annotator_kind, a.annotator "
        "FROM spans s LEFT JOIN annotations a ON a.target_kind = 'span' "
        "AND a.trace_id = s.trace_id AND a.span_id = s.span_id AND a.name = 'correctness' "
        "WHERE s.span_kind = 'LLM' ORDER BY s.start_time DESC LIMIT 20",
    ),
)

PITFALLS: tuple[str, ...] = (
    "Timestamps are UTC TIMESTAMPs without a zone; compare with now()::TIMESTAMP or UTC literals.",
    "Token totals on traces/sessions count LLM spans only (parent chains often repeat them); "
    "sum spans.total_tokens WHERE span_kind = 'LLM' to match.",
    "input_value/output_value (and attributes) can be hundreds of KB: select "
    "left(input_value, 200) and filter before reading; get_span_data reads one value in pieces.",
    "span_id is unique per trace, not globally: join spans on (trace_id, span_id).",
    "spans.session_id/user_id are the span's own, often only the root's. A span's session is its "
    "trace's (as in aggregate, search_spans, get_session): FROM spans s JOIN traces t USING "
    "(project, trace_id) and use coalesce(s.session_id, t.session_id).",
    "Attribute values come back as text (->> / json_extract_string): TRY_CAST(… AS DOUBLE) "
    "before comparing numbers, or numbers compare as strings.",
    "One SELECT per call, no files or network (read_csv etc. fail), 200 rows by default "
    "(limit up to 5000), 10 s time limit: aggregate in SQL rather than fetching rows.",
)


class ColumnDoc(BaseModel):
    name: str = Field(description="Column name.")
    type: str = Field(description="DuckDB type.")
    meaning: str | None = Field(default=None, description="What it holds.")


class TableDoc(BaseModel):
    name: str = Field(description="Table or view name.")
    description: str = Field(description="What one row is.")
    columns: list[ColumnDoc] = Field(description="Columns in order.")


class SchemaDescription(BaseModel):
    tables: list[TableDoc] = Field(description="Tables and views with their columns.")
    attributes: str = Field(description="How attributes are stored and queried.")
    examples: list[Example] = Field(description="Queries that run as is.")
    pitfalls: list[str] = Field(description="Mistakes to avoid.")
    truncated: bool = Field(
        default=False, description="True when parts were left out to fit the budget."
    )
    note: str | None = Field(default=None, description="What was left out and how to get it.")


def live_columns(store: Store) -> dict[str, list[tuple[str, str]]]:
    """Each public table's ``(column, type)`` pairs, read from the store itself."""
    names = list(TABLES)
    marks = ", ".join("?" for _ in names)
    with store.reader() as reader:
        rows = reader.rows(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            f"WHERE table_catalog = current_database() AND table_schema = current_schema() "
            f"AND table_name IN ({marks}) ORDER BY table_name, ordinal_position",
            names,
        )
    found: dict[str, list[tuple[str, str]]] = {name: [] for name in names}
    for table, column, data_type in rows:
        found[table].append((column, data_type))
    return found


def describe(store: Store, *, table: str | None, max_chars: int) -> SchemaDescription:
    """The description of every table (or of ``table``: ``KeyError`` listing the tables when
    it is not one), examples dropped from the end until it fits ``max_chars``."""
    if table is not None and table.strip().lower() not in TABLES:
        raise KeyError(", ".join(TABLES))
    columns = live_columns(store)
    wanted = [table.strip().lower()] if table is not None else list(TABLES)
    docs = [
        TableDoc(
            name=name,
            description=TABLES[name],
            columns=[
                ColumnDoc(name=c, type=t, meaning=MEANINGS[name].get(c)) for c, t in columns[name]
            ],
        )
        for name in wanted
    ]
    result = SchemaDescription(
        tables=docs, attributes=ATTRIBUTES, examples=list(EXAMPLES), pitfalls=list(PITFALLS)
    )
    return _fit(result, max_chars)


def _fit(result: SchemaDescription, max_chars: int) -> SchemaDescription:
    """Leave out, in this order, examples, pitfalls, meanings, then whole tables."""
    if size(result) <= max_chars:
        return result
    result.truncated = True
    result.note = (
        "Shortened to fit max_chars: call describe_schema(table='spans') for one table, or "
        "raise max_chars."
    )
    while size(result) > max_chars and result.examples:
        result.examples.pop()
    while size(result) > max_chars and result.pitfalls:
        result.pitfalls.pop()
    for doc in reversed(result.tables):
        for column in doc.columns:
            if size(result) <= max_chars:
                return result
            column.meaning = None
    while size(result) > max_chars and len(result.tables) > 1:
        result.tables.pop()
    if size(result) > max_chars:
        result.attributes = "See describe_schema with a larger max_chars."
    columns = result.tables[0].columns
    while size(result) > max_chars and len(columns) > 1:
        columns.pop()
    return result
