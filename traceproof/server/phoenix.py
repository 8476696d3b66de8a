"""Phoenix's REST routes for annotations, so tools that log to Phoenix work against traceproof.

``POST /v1/span_annotations``, ``/v1/trace_annotations`` and ``/v1/session_annotations`` take
``{"data": [{span_id|trace_id|session_id, name, annotator_kind, result: {label, score,
explanation}, metadata, identifier}]}`` and answer ``{"data": [{"id": ...}]}`` once the batch is
committed (Phoenix answers ids only with ``?sync=true``; traceproof always writes before it
answers, so it always sends them). ``GET /arize_phoenix_version`` tells Phoenix's client which
routes exist. The batch is all or nothing: an unknown target answers 404, a value or config
refusal 422, each with ``{"detail": "[code] ..."}`` as Phoenix's FastAPI does.

Phoenix has no annotator name; ``metadata.annotator`` is used when given, else the lower-cased
kind (``human``, ``llm``, ``code``). The routes sit under ``/v1/``: the request guard and the
bearer token apply as to ``/v1/traces``.

traceproof's extensions, which Phoenix's clients never send (so they see Phoenix's behaviour):
an entry may carry ``annotator`` (before ``metadata.annotator``), ``project`` and, for a span,
``trace_id`` (narrows an ambiguous id); and ``?partial=true`` writes the entries that can be
written and reports the others instead of refusing the batch. Its answer is still Phoenix's
``{"data": [{"id": ...}]}`` (the written entries, in order) with two more keys: ``status``, one
per entry (``created``, ``updated``, ``unchanged`` or ``rejected``), and ``rejected``,
``[{"index", "code", "message"}]``. ``traceproof ingest`` sends eval-result files this way when
a server holds the store.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from traceproof.errors import ErrorCode, TraceproofError
from traceproof.evals.annotations import AnnotationInput, AnnotatorKind, TargetKind
from traceproof.storage import Busy, Store
from traceproof.storage.annotations import write_annotations

#: The Phoenix server version announced to Phoenix's client (which gates routes by version).
PHOENIX_VERSION = "13.0.0"

_KEYS = {
    TargetKind.SPAN: "span_id",
    TargetKind.TRACE: "trace_id",
    TargetKind.SESSION: "session_id",
}


class _BadBody(TraceproofError):
    code = ErrorCode.INVALID_INPUT


def parse_annotations(kind: TargetKind, body: Any) -> list[AnnotationInput]:
    """Phoenix's request body as annotations to write; :class:`TraceproofError` when it is not
    that shape."""
    key = _KEYS[kind]
    if not isinstance(body, dict) or not isinstance(body.get("data"), list):
        raise _BadBody(f'The body must be {{"data": [{{"{key}": ..., "name": ...}}]}}. Send that.')
    items: list[AnnotationInput] = []
    for index, entry in enumerate(body["data"]):
        if not isinstance(entry, dict):
            raise _BadBody(f"data[{index}] is not an object. Send one object per annotation.")
        result = entry.get("result") or {}
        metadata = entry.get("metadata")
        if not isinstance(result, dict) or not isinstance(entry.get(key), str):
            raise _BadBody(f"data[{index}] needs a string {key} and an object result.")
        if not isinstance(entry.get("name"), str):
            raise _BadBody(f"data[{index}] needs a string name.")
        annotator = entry.get("annotator")
        if annotator is None and isinstance(metadata, dict):
            annotator = metadata.get("annotator")
        narrow = {k: entry.get(k) for k in ("trace_id", "project")}
        if kind is not TargetKind.SPAN:
            narrow["trace_id"] = None
        if not all(v is None or isinstance(v, str) for v in narrow.values()):
            raise _BadBody(f"data[{index}]: trace_id and project, when given, are strings.")
        kind_text = str(entry.get("annotator_kind") or "HUMAN").upper()
        if kind_text not in AnnotatorKind.__members__:
            raise _BadBody(
                f"data[{index}].annotator_kind is {kind_text!r}. Use HUMAN, LLM or CODE."
            )
        items.append(
            AnnotationInput(
                target_kind=kind,
                target_id=entry[key],
                name=entry["name"],
                label=result.get("label"),
                score=result.get("score"),
                explanation=result.get("explanation"),
                metadata=metadata if isinstance(metadata, dict) else None,
                annotator_kind=AnnotatorKind(kind_text),
                annotator=annotator if isinstance(annotator, str) else None,
                identifier=str(entry.get("identifier") or ""),
                trace_id=narrow["trace_id"],
                project=narrow["project"],
            )
        )
    return items


def phoenix_routes(store: Store) -> list[Route]:
    """The annotation routes over ``store``."""

    def route(kind: TargetKind) -> Route:
        async def endpoint(request: Request) -> Response:
            try:
                body = json.loads(await request.body() or b"null")
                items = parse_annotations(kind, body)
                cap = store.settings.annotate_max_targets
                if len(items) > cap:
                    raise _BadBody(
                        f"{len(items)} annotations in one request; at most {cap} (setting "
                        "annotate_max_targets). Send them in smaller batches."
                    )
                partial = request.query_params.get("partial", "").lower() in ("true", "1")
                written = await asyncio.to_thread(write_annotations, store, items, partial=partial)
            except ValueError:
                return _detail(400, "[invalid_input] The body is not JSON. Send JSON.")
            except Busy as exc:
                return _detail(503, str(exc), retry_after=exc.retry_after)
            except TraceproofError as exc:
                return _detail(_status(exc.code), str(exc))
            if not partial:
                return JSONResponse({"data": [{"id": i} for i in written.ids]})
            return JSONResponse(
                {
                    "data": [{"id": i} for i in written.ids if i is not None],
                    "status": written.status,
                    "rejected": [
                        {"index": r.index, "code": r.code, "message": r.message}
                        for r in written.rejected
                    ],
                }
            )

        return Route(f"/v1/{kind}_annotations", endpoint, methods=["POST"])

    async def version(request: Request) -> Response:
        return PlainTextResponse(PHOENIX_VERSION)

    return [
        *(route(kind) for kind in (TargetKind.SPAN, TargetKind.TRACE, TargetKind.SESSION)),
        Route("/arize_phoenix_version", version, methods=["GET"]),
    ]


def _status(code: ErrorCode) -> int:
    if str(code).startswith("unknown_") or code is ErrorCode.NOT_FOUND:
        return 404
    if code in (ErrorCode.INVALID_ANNOTATION, ErrorCode.INVALID_ARGUMENT):
        return 422
    if code is ErrorCode.INVALID_INPUT:
        return 400
    return 500


def _detail(status: int, message: str, *, retry_after: float | None = None) -> Response:
    headers = {"Retry-After": str(max(1, round(retry_after)))} if retry_after else None
    return JSONResponse({"detail": message}, status_code=status, headers=headers)
