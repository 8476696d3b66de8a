"""Phoenix's REST route for creating spans, ``POST /v1/projects/{project_identifier}/spans``.

Hook-based tracers of coding agents that send to a Phoenix endpoint work unchanged when pointed
at traceproof. The body is ``{"data": [span, ...]}`` in Phoenix's span shape (``name``,
``context: {trace_id, span_id}``, ``span_kind``, ``parent_id``, ``start_time``, ``end_time``
(ISO 8601 with a time zone), ``status_code``, ``status_message``, ``attributes``, ``events``);
the answers are Phoenix's:

- 202 ``{"total_received": n, "total_queued": n}`` once the spans are committed (Phoenix
  queues them; traceproof writes before it answers);
- 400 ``{"detail": "<JSON text>"}`` when any span is already stored (by span id) or cannot be
  stored: nothing of the batch is kept, and the JSON text says which (``total_duplicates``,
  ``duplicate_spans: [{span_id, trace_id}]``, ``total_invalid``, ``invalid_spans: [{span_id,
  trace_id, error}]``), as Phoenix's client reads it;
- 422 ``{"detail": [{"type", "loc": ["body", "data", i, field], "msg", "input"}]}`` when the body
  is not that shape (a missing field, a time without a time zone), as FastAPI validates;
- 404 for a project identifier that is a Phoenix project id (``UHJvamVjdDox``, base64 of
  ``Project:1``): traceproof's projects have names only. Any other identifier is the project's
  name; its project is created with its first span.

``span_kind`` and ``status_code`` are upper-cased (unknown: ``UNKNOWN``, ``UNSET``), and
``span_kind`` is also the ``openinference.span.kind`` attribute, as Phoenix stores them. TOOL
spans of coding-agent tools (``tool.name`` one the action rules know) get the trajectory labels
imported transcripts have (:mod:`traceproof.trajectories.span_labels`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import Mapping
from contextlib import suppress
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from traceproof.ingest.normalize import REJECTED, SpanRows, flatten, rejection_reason
from traceproof.ingest.spanjson import _id as span_json_id
from traceproof.ingest.spanjson import add_span_object
from traceproof.server.redaction import ingest_redactor
from traceproof.settings import Settings
from traceproof.storage import Busy, Store, StoreError
from traceproof.storage.wire import stored_span_ids
from traceproof.trajectories.actions import ActionRules
from traceproof.trajectories.span_labels import PlainSpan, label_tool_spans

_KINDS = frozenset(
    {
        "TOOL",
        "CHAIN",
        "LLM",
        "RETRIEVER",
        "EMBEDDING",
        "AGENT",
        "RERANKER",
        "UNKNOWN",
        "GUARDRAIL",
        "EVALUATOR",
        "PROMPT",
    }
)
_STATUSES = frozenset({"OK", "ERROR", "UNSET"})
_OBJECT = "Input should be a valid dictionary or object to extract fields from"


def phoenix_span_routes(
    store: Store, settings: Settings, rules: ActionRules | None = None
) -> list[Route]:
    async def create_spans(request: Request) -> Response:
        identifier = request.path_params["project_identifier"]
        raw = await request.body()
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            return _invalid([_error("json_invalid", ["body", 0], "JSON decode error", {}, exc)])
        spans, errors = validate(body)
        if errors:
            return _invalid(errors)
        if _phoenix_project_id(identifier):
            return JSONResponse(
                {"detail": f"Project with ID {identifier} not found"}, status_code=404
            )
        try:
            table, refused = await asyncio.to_thread(
                _rows, store, settings, identifier, spans, rules
            )
            if refused is not None:
                return JSONResponse({"detail": json.dumps(refused)}, status_code=400)
            if table is not None:
                await asyncio.wrap_future(store.submit(table))
        except Busy as exc:
            headers = {"Retry-After": str(max(1, round(exc.retry_after)))}
            return JSONResponse({"detail": str(exc)}, status_code=503, headers=headers)
        except StoreError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=503)
        return JSONResponse(
            {"total_received": len(spans), "total_queued": len(spans)}, status_code=202
        )

    return [Route("/v1/projects/{project_identifier}/spans", create_spans, methods=["POST"])]


def validate(body: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The spans of a request body, or FastAPI-shaped validation errors."""
    if not isinstance(body, dict):
        return [], [_error("model_attributes_type", ["body"], _OBJECT, body)]
    data = body.get("data")
    if "data" not in body:
        return [], [_error("missing", ["body", "data"], "Field required", body)]
    if not isinstance(data, list):
        return [], [_error("list_type", ["body", "data"], "Input should be a valid list", data)]
    errors: list[dict[str, Any]] = []
    spans: list[dict[str, Any]] = []
    for index, span in enumerate(data):
        where = ["body", "data", index]
        if not isinstance(span, dict):
            errors.append(_error("model_attributes_type", where, _OBJECT, span))
            continue
        found = len(errors)
        for key in ("name", "span_kind", "status_code"):
            _string(span, key, where, errors)
        for key in ("parent_id", "status_message", "id"):
            if span.get(key) is not None or (key != "parent_id" and key in span):
                _string(span, key, where, errors)
        context = span.get("context")
        if not isinstance(context, dict):
            errors.append(
                _error("missing", [*where, "context"], "Field required", span)
                if "context" not in span
                else _error("model_attributes_type", [*where, "context"], _OBJECT, context)
            )
        else:
            for key in ("trace_id", "span_id"):
                _string(context, key, [*where, "context"], errors)
        times = {key: _time(span, key, where, errors) for key in ("start_time", "end_time")}
        if "attributes" in span and not isinstance(span["attributes"], dict):
            errors.append(
                _error(
                    "dict_type",
                    [*where, "attributes"],
                    "Input should be a valid dictionary",
                    span["attributes"],
                )
            )
        events = span.get("events", [])
        if not isinstance(events, list):
            errors.append(
                _error("list_type", [*where, "events"], "Input should be a valid list", events)
            )
        else:
            for e_index, event in enumerate(events):
                at = [*where, "events", e_index]
                if not isinstance(event, dict):
                    errors.append(_error("model_attributes_type", at, _OBJECT, event))
                    continue
                _string(event, "name", at, errors)
                _time(event, "timestamp", at, errors)
        if len(errors) == found:
            naive = [k for k, v in times.items() if v is not None and v.tzinfo is None]
            if naive:
                errors.append(
                    _error(
                        "value_error",
                        where,
                        f"Value error, {naive[0]}: "
                        "timezone-naive timestamp is not allowed; all timestamps "
                        "must be timezone-aware (e.g., use UTC).",
                        span,
                    )
                )
            else:
                spans.append(span)
    return spans, errors


def _rows(
    store: Store,
    settings: Settings,
    project: str,
    spans: list[dict[str, Any]],
    rules: ActionRules | None,
) -> tuple[Any, dict[str, Any] | None]:
    """The batch to write, or Phoenix's 400 detail when a span is stored already or invalid."""
    with store.reader() as reader:
        stored = stored_span_ids(reader, [_stored_id(s) for s in spans])
    duplicates = [
        {"span_id": s["context"]["span_id"], "trace_id": s["context"]["trace_id"]}
        for s in spans
        if _stored_id(s) in stored
    ]
    rows = SpanRows.for_settings(settings, redact=ingest_redactor(settings))
    invalid: list[dict[str, str]] = []
    prepared = [_prepared(s) for s in spans if _stored_id(s) not in stored]
    with suppress(*REJECTED):  # labels are a nicety: a span they cannot read is still stored
        label_tool_spans((plain for _, plain in prepared if plain is not None), rules)
    for span, _ in prepared:
        try:
            add_span_object(rows, span, project=project)
        except REJECTED as exc:
            context = span["context"]
            invalid.append(
                {
                    "span_id": context["span_id"],
                    "trace_id": context["trace_id"],
                    "error": rejection_reason(exc),
                }
            )
    if duplicates or invalid:
        return None, {
            "error": "Request contains invalid or duplicate spans",
            "total_received": len(spans),
            "total_queued": 0,
            "total_duplicates": len(duplicates),
            "total_invalid": len(invalid),
            "duplicate_spans": duplicates,
            "invalid_spans": invalid,
        }
    return (rows.table() if len(rows) else None), None


def _prepared(span: dict[str, Any]) -> tuple[dict[str, Any], PlainSpan | None]:
    """The span as :func:`add_span_object` takes it (flat attributes with the kind), and what
    labelling reads of it (None when its attributes cannot be flattened)."""
    kind = str(span["span_kind"]).upper()
    kind = kind if kind in _KINDS else "UNKNOWN"
    status = str(span["status_code"]).upper()
    try:
        attributes = flatten(span.get("attributes") or {})
    except REJECTED:
        return span, None  # add_span_object rejects it with the reason
    attributes["openinference.span.kind"] = kind
    events = [
        {**e, "timestamp": _ns(e["timestamp"])} for e in span.get("events") or []
    ]  # validated: objects with a time
    out = {
        **span,
        "span_kind": kind,
        "status_code": status if status in _STATUSES else "UNSET",
        "attributes": attributes,
        "start_time": _ns(span["start_time"]),
        "end_time": _ns(span["end_time"]),
        "events": events,
    }
    plain = PlainSpan(
        trace_id=str(span["context"]["trace_id"]),
        span_id=str(span["context"]["span_id"]),
        kind=kind,
        start_ns=out["start_time"],
        end_ns=out["end_time"],
        status=out["status_code"],
        status_message=span.get("status_message") or None,
        attributes=attributes,
    )
    return out, plain


def _stored_id(span: dict[str, Any]) -> str:
    """The span id as the store holds it (hex lower-cased, as span JSON import does)."""
    try:
        return span_json_id(span["context"]["span_id"], "span id")
    except REJECTED:
        return str(span["context"]["span_id"])


def _phoenix_project_id(identifier: str) -> bool:
    """Whether ``identifier`` is a Phoenix GlobalID of a project (base64 of ``Project:<n>``)."""
    try:
        text = base64.b64decode(identifier, validate=True).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return False
    kind, _, number = text.partition(":")
    return kind == "Project" and number.isdigit()


def _string(obj: Mapping[str, Any], key: str, where: list[Any], errors: list[Any]) -> None:
    if key not in obj:
        errors.append(_error("missing", [*where, key], "Field required", dict(obj)))
    elif not isinstance(obj[key], str):
        errors.append(
            _error("string_type", [*where, key], "Input should be a valid string", obj[key])
        )


def _time(obj: Mapping[str, Any], key: str, where: list[Any], errors: list[Any]) -> datetime | None:
    """``obj[key]`` as pydantic reads a datetime: ISO 8601 text, or a number of seconds
    (milliseconds past 2e10) since the epoch, in UTC."""
    if key not in obj:
        errors.append(_error("missing", [*where, key], "Field required", dict(obj)))
        return None
    value = obj[key]
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = value / 1000 if abs(value) > 2e10 else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            pass
    elif isinstance(value, str):
        try:
            return datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            pass
    errors.append(
        _error(
            "datetime_from_date_parsing",
            [*where, key],
            "Input should be a valid datetime or date",
            value,
        )
    )
    return None


def _ns(value: Any) -> int:
    if isinstance(value, int | float):
        seconds = value / 1000 if abs(value) > 2e10 else value
        return int(seconds * 1e9)
    stamp = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
    return int(stamp.timestamp()) * 1_000_000_000 + stamp.microsecond * 1000


def _error(
    kind: str, loc: list[Any], msg: str, value: Any, exc: BaseException | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"type": kind, "loc": loc, "msg": msg, "input": value}
    if exc is not None:
        error["ctx"] = {"error": str(exc)}
    return error


def _invalid(errors: list[dict[str, Any]]) -> Response:
    return JSONResponse({"detail": errors}, status_code=422)
