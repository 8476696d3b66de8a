"""OTLP/HTTP log receiver (``POST /v1/logs``): Claude Code's telemetry events as spans.

The same rules as ``/v1/traces`` (:mod:`traceproof.server.otlp`): protobuf and JSON, gzip and
deflate, the body limit, the token, 200 only after the spans are committed, 400/413/415/503 in
the OTLP shape. Log records that are Claude Code events become spans of their session's prompt
(:mod:`traceproof.trajectories.claude_telemetry`); other ``claude_code.*`` events are read and
not stored. A log record that is no Claude Code event is not stored either: traceproof keeps
traces, not logs. The answer's ``partial_success`` counts, as ``rejected_log_records``, the
records that could not be read or placed (no ``session.id``, say), and its message says how
many other log records were not stored (a warning: rejected count 0).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pyarrow as pa
from starlette.responses import Response

from traceproof.ingest.normalize import REJECTED, SpanRows, project_of, rejection_reason
from traceproof.ingest.otlp import MAX_REASONS, MalformedRequest
from traceproof.ingest.otlp_logs import (
    decode_logs_json,
    decode_logs_protobuf,
    logs_response_json,
    logs_response_protobuf,
)
from traceproof.server.otlp import OtlpReceiver
from traceproof.server.redaction import ingest_redactor
from traceproof.server.rpcstatus import PROTOBUF
from traceproof.settings import Settings
from traceproof.storage import Store, StoreError
from traceproof.storage.wire import latest_prompt_key
from traceproof.trajectories.actions import ActionRules
from traceproof.trajectories.claude_telemetry import (
    MAPPED,
    SOURCE,
    NotStored,
    TelemetryEvent,
    event_name,
    parse_event,
    telemetry_spans,
)
from traceproof.trajectories.emit import add_step

log = logging.getLogger(__name__)


@dataclass
class LogsOutcome:
    """What one logs request came to, for its answer."""

    rejected: int = 0
    reasons: list[str] = field(default_factory=list)
    #: Log records that are not Claude Code events (not stored).
    foreign: int = 0

    def reject(self, reason: str) -> None:
        self.rejected += 1
        if len(self.reasons) < MAX_REASONS:
            self.reasons.append(reason)

    def message(self) -> str:
        parts = []
        if self.rejected:
            more = self.rejected - len(self.reasons)
            parts.append(
                f"rejected {self.rejected} log record(s): "
                + "; ".join(self.reasons)
                + (f"; and {more} more" if more > 0 else "")
            )
        if self.foreign:
            parts.append(
                f"warnings: {self.foreign} log record(s) are not Claude Code events; "
                "traceproof stores only those (as spans)"
            )
        return " | ".join(parts)


class LogsReceiver(OtlpReceiver):
    """The ``/v1/logs`` endpoint over one store; ``rules`` label the steps."""

    def __init__(self, store: Store, settings: Settings, rules: ActionRules | None = None) -> None:
        super().__init__(store, settings)
        self.rules = rules

    def _decode(self, content_type: str, body: bytes) -> tuple[Any, pa.Table | None]:
        try:
            return self._spans(content_type, body)
        except (MalformedRequest, StoreError):
            raise  # 400; 503 (the prompt lookup could not read the store)
        except Exception as exc:
            log.warning("could not decode an OTLP logs request", exc_info=True)
            raise MalformedRequest(
                f"body could not be decoded as an OTLP logs request ({type(exc).__name__}: {exc})"
            ) from None

    def _spans(self, content_type: str, body: bytes) -> tuple[LogsOutcome, pa.Table | None]:
        decoded = (decode_logs_protobuf if content_type == PROTOBUF else decode_logs_json)(body)
        outcome = LogsOutcome(rejected=decoded.rejected, reasons=list(decoded.reasons))
        events: list[TelemetryEvent] = []
        for record in decoded.records:
            name = event_name(record.body, record.attributes, record.event_name)
            if name is None:
                outcome.foreign += 1
                continue
            if name not in MAPPED:
                continue  # another Claude Code event: read, nothing to store
            try:
                events.append(
                    parse_event(
                        name,
                        record.attributes,
                        record.resource,
                        record.time_ns,
                        record.observed_ns,
                    )
                )
            except NotStored as exc:
                outcome.reject(str(exc))
        spans = telemetry_spans(events, partial(_latest_prompt, self.store), self.rules)
        rows = SpanRows.for_settings(self.settings, redact=ingest_redactor(self.settings))
        for span in spans:
            project = project_of(span.resource, self.settings.default_project)
            try:
                add_step(rows, span, project=project, source=SOURCE)
            except REJECTED as exc:
                outcome.reject(f"{span.name} span {span.span_id}: {rejection_reason(exc)}")
        return outcome, rows.table() if len(rows) else None

    def _answer(self, content_type: str, decoded: Any) -> Response:
        if content_type == PROTOBUF:
            body = logs_response_protobuf(decoded.rejected, decoded.message())
        else:
            body = logs_response_json(decoded.rejected, decoded.message())
        return Response(body, media_type=content_type)


def _latest_prompt(store: Store, session: str, before_ns: int) -> str | None:
    with store.reader() as reader:
        return latest_prompt_key(reader, session, before_ns, SOURCE)
