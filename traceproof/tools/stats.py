"""Store statistics per project."""

from __future__ import annotations

from pydantic import BaseModel, Field

from traceproof.storage import Store
from traceproof.tools.common import UtcTime


class ProjectStats(BaseModel):
    project: str = Field(description="Project name.")
    traces: int = Field(description="Traces in the project.")
    spans: int = Field(description="Spans in the project.")
    errors: int = Field(description="Spans whose status is ERROR.")
    error_traces: int = Field(description="Traces with at least one ERROR span.")
    first_span: UtcTime | None = Field(description="Earliest span start (UTC).")
    last_span: UtcTime | None = Field(description="Latest span end (UTC).")


class StoreStats(BaseModel):
    projects: list[ProjectStats]


def get_stats(store: Store) -> StoreStats:
    """Per project: traces, spans, error spans, and the time range covered."""
    with store.reader() as reader:
        rows = reader.dicts(
            """
            SELECT p.name AS project,
                   count(t.trace_id) AS traces,
                   coalesce(sum(t.span_count), 0) AS spans,
                   coalesce(sum(t.error_count), 0) AS errors,
                   count(t.trace_id) FILTER (WHERE t.error_count > 0) AS error_traces,
                   min(t.start_time) AS first_span,
                   max(t.end_time) AS last_span
            FROM projects p LEFT JOIN trace_index t ON t.project = p.name
            GROUP BY p.name
            ORDER BY p.name
            """
        )
    return StoreStats(projects=[ProjectStats(**row) for row in rows])
