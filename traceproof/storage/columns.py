"""The span row contract between ingest and the store, as an Arrow schema.

Ingest decoders produce Arrow tables with exactly these columns; the writer inserts them into
the ``spans`` table, whose columns carry the same names. This module imports no DuckDB so that
decoders can use it.
"""

from __future__ import annotations

import pyarrow as pa

#: Public span columns, in table order. Names are part of the public interface (SQL, tools, CLI).
SPAN_SCHEMA = pa.schema(
    [
        pa.field("project", pa.string(), nullable=False),
        pa.field("trace_id", pa.string(), nullable=False),
        pa.field("span_id", pa.string(), nullable=False),
        pa.field("parent_span_id", pa.string()),
        pa.field("name", pa.string(), nullable=False),
        pa.field("span_kind", pa.string(), nullable=False),
        pa.field("otel_kind", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("status_message", pa.string()),
        pa.field("start_time", pa.timestamp("us"), nullable=False),
        pa.field("end_time", pa.timestamp("us"), nullable=False),
        pa.field("latency_ms", pa.float64(), nullable=False),
        pa.field("session_id", pa.string()),
        pa.field("user_id", pa.string()),
        pa.field("model", pa.string()),
        pa.field("tool_name", pa.string()),
        pa.field("prompt_tokens", pa.int64()),
        pa.field("completion_tokens", pa.int64()),
        pa.field("total_tokens", pa.int64()),
        pa.field("input_value", pa.string()),
        pa.field("input_mime_type", pa.string()),
        pa.field("output_value", pa.string()),
        pa.field("output_mime_type", pa.string()),
        pa.field("error_type", pa.string()),
        pa.field("error_message", pa.string()),
        pa.field("attributes", pa.string()),  # JSON text
        pa.field("events", pa.string()),  # JSON text
        pa.field("links", pa.string()),  # JSON text
        pa.field("resource", pa.string()),  # JSON text
        pa.field("scope_name", pa.string()),
    ]
)

SPAN_COLUMNS: tuple[str, ...] = tuple(SPAN_SCHEMA.names)

#: The numeric span columns (latency and token counts): what sums and percentiles apply to.
SPAN_NUMERIC_COLUMNS: tuple[str, ...] = tuple(
    f.name for f in SPAN_SCHEMA if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)
)

#: OpenInference span kinds; anything else is stored as UNKNOWN.
SPAN_KINDS = frozenset(
    {
        "LLM",
        "CHAIN",
        "TOOL",
        "AGENT",
        "RETRIEVER",
        "EMBEDDING",
        "RERANKER",
        "GUARDRAIL",
        "EVALUATOR",
        "PROMPT",
        "UNKNOWN",
    }
)
