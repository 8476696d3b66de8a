"""A running traceproof server, used in place of a store it holds.

DuckDB lets one process own a store file. When ``traceproof serve`` holds it, the CLI talks to
that server's JSON API instead: the same operations, the same results.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from traceproof.errors import ErrorCode, TraceproofError
from traceproof.storage import SPAN_SCHEMA, WriteResult
from traceproof.tools.stats import StoreStats

if TYPE_CHECKING:
    from traceproof.evals.annotations import AnnotationConfig, AnnotationInput
    from traceproof.storage.annotations import AnnotationWrite, ConfigChanges

ARROW_STREAM = "application/vnd.apache.arrow.stream"
#: Annotations per request, and the body size a request stays under when it can (a single
#: annotation's text is bounded by the server's annotation_text_max_chars).
ANNOTATIONS_PER_REQUEST = 1000
ANNOTATION_REQUEST_BYTES = 2 * 1024 * 1024


class RemoteError(TraceproofError):
    code = ErrorCode.STORE_ERROR


class RemoteStore:
    """The API of the server at ``url`` (``http://host:port``)."""

    def __init__(
        self,
        url: str,
        timeout: float = 300.0,
        token: str | None = None,
        *,
        for_agent: bool = False,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.token = token  # the server's bearer token (--token / TRACEPROOF_TOKEN), if any
        # Whose errors these are: an agent's (``traceproof mcp`` over stdio) or a person's
        # (the CLI). It changes what a refused token tells them to do.
        self.for_agent = for_agent

    def _unauthorized(self) -> TraceproofError:
        """The 401 of a server that wants a token, with the fix for whoever called: an agent
        cannot send headers, its MCP server's environment carries the token."""
        given = "sent a token it does not accept" if self.token else "has no token to send"
        if self.for_agent:
            message = (
                f"The traceproof server at {self.url} that holds the store requires a token, "
                f"and this MCP server {given}. Set TRACEPROOF_TOKEN to the server's token in "
                "the env of this MCP server (the traceproof mcp entry of the MCP client's "
                "configuration), then restart it"
            )
        else:
            message = (
                f"The traceproof server at {self.url} requires a token, and this command "
                f"{given}. Pass --token, or set TRACEPROOF_TOKEN, to the token the server was "
                "started with"
            )
        return TraceproofError(message + ".", code=ErrorCode.UNAUTHORIZED)

    def _request(self, path: str, body: bytes | None, method: str) -> urllib.request.Request:
        request = urllib.request.Request(self.url + path, data=body, method=method)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        return request

    def stats(self) -> StoreStats:
        return StoreStats.model_validate(self._call("GET", "/api/v1/stats"))

    def call_tool(self, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """Run tool ``name`` on the server; its result as JSON. A tool's error is raised with the
        server's code and message, as if the tool had run here."""
        body = json.dumps(arguments, default=str).encode()
        path = "/api/v1/tools/" + urllib.parse.quote(name, safe="")
        request = self._request(path, body, "POST")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                result: dict[str, Any] = json.loads(response.read())
                return result
        except urllib.error.HTTPError as exc:
            if exc.code == 401:
                raise self._unauthorized() from None
            raise _tool_error(self.url, exc) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            # HTTPException: the connection dropped mid-answer (the server died).
            raise self._unreachable(exc) from None

    def report_html(self, candidate: str, baseline: str | None, gate: str | None) -> str:
        """The HTML report of ``candidate`` against ``baseline`` under ``gate``, made by the
        server (it reads the runs' traces from the store it holds): ``POST /api/v1/report``."""
        body = json.dumps({"candidate": candidate, "baseline": baseline, "gate": gate}).encode()
        page: str = self._call("POST", "/api/v1/report", body, "application/json", raw=True)
        return page

    def submit(self, table: pa.Table, *, wait: float | None = 0.0) -> Future[WriteResult]:
        """Send spans to the server (an Arrow IPC stream, ``application/vnd.apache.arrow.
        stream``); waits out a busy server for up to ``wait`` seconds. A batch over the server's
        body limit (413) is sent again in halves."""
        deadline = None if wait is None else time.monotonic() + wait
        result = self._send(table.cast(SPAN_SCHEMA), deadline)
        future: Future[WriteResult] = Future()
        future.set_result(result)
        return future

    def _send(self, table: pa.Table, deadline: float | None) -> WriteResult:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, SPAN_SCHEMA) as writer:
            writer.write_table(table)
        body = sink.getvalue().to_pybytes()
        while True:
            try:
                found = self._call("POST", "/api/v1/spans", body, ARROW_STREAM)
                return WriteResult(received=found["received"], added=found["added"])
            except _TooLarge:
                if table.num_rows < 2:
                    raise RemoteError(
                        f"The server at {self.url} refuses a span of {len(body)} bytes as too "
                        "large. Raise its TRACEPROOF_MAX_SPANS_REQUEST_BYTES, or stop it to "
                        "import into the store directly.",
                        code=ErrorCode.INVALID_INPUT,
                    ) from None
                half = table.num_rows // 2
                first = self._send(table.slice(0, half), deadline)
                second = self._send(table.slice(half), deadline)
                return WriteResult(
                    received=first.received + second.received, added=first.added + second.added
                )
            except _Retry as retry:
                if deadline is not None and time.monotonic() + retry.after > deadline:
                    raise RemoteError(
                        f"The server at {self.url} is busy. Retry later.",
                        code=ErrorCode.STORE_BUSY,
                    ) from None
                time.sleep(retry.after)

    # -- annotations ---------------------------------------------------------------------------

    def annotation_configs(self) -> dict[str, AnnotationConfig]:
        """The server's stored annotation configs, by name."""
        from traceproof.evals.annotations import config_from_dict

        found = self._call("GET", "/api/v1/annotation-configs")
        configs = [config_from_dict(item) for item in found["configs"]]
        return {c.name: c for c in configs}

    def set_annotation_configs(
        self, configs: Sequence[AnnotationConfig], *, remove: Sequence[str] = ()
    ) -> ConfigChanges:
        """:func:`traceproof.storage.annotations.set_configs` on the server."""
        from traceproof.storage.annotations import ConfigChanges

        body = json.dumps({"set": [c.as_dict() for c in configs], "remove": list(remove)})
        found = self._busy_retry(
            "POST", "/api/v1/annotation-configs", body.encode(), "application/json"
        )
        return ConfigChanges(
            tuple(found["changed"]), tuple(found["unchanged"]), tuple(found["removed"])
        )

    def write_annotations(self, items: Sequence[AnnotationInput]) -> AnnotationWrite:
        """``write_annotations(store, items, partial=True)`` on the server, through its Phoenix
        routes with ``?partial=true``: one request per target kind and chunk (at most
        :data:`ANNOTATIONS_PER_REQUEST` annotations, about :data:`ANNOTATION_REQUEST_BYTES`),
        each committed before it answers. Rejections carry the index in ``items``."""
        from traceproof.storage.annotations import AnnotationWrite, Rejected

        result = AnnotationWrite(ids=[None] * len(items), status=["rejected"] * len(items))
        by_kind: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        for index, item in enumerate(items):
            by_kind.setdefault(str(item.target_kind), []).append((index, _phoenix_entry(item)))
        for kind, entries in by_kind.items():
            for chunk in _chunks(entries):
                body = json.dumps({"data": [e for _, e in chunk]}, default=str).encode()
                found = self._busy_retry(
                    "POST", f"/v1/{kind}_annotations?partial=true", body, "application/json"
                )
                ids = iter(found["data"])
                for (index, _), status in zip(chunk, found["status"], strict=True):
                    result.status[index] = status
                    if status != "rejected":
                        result.ids[index] = next(ids)["id"]
                for rejected in found["rejected"]:
                    at = chunk[rejected["index"]][0]
                    result.rejected.append(Rejected(at, rejected["code"], rejected["message"]))
        result.rejected.sort(key=lambda r: r.index)
        return result

    def _busy_retry(self, method: str, path: str, body: bytes, content_type: str) -> Any:
        """``_call`` that waits out a busy server (503 with Retry-After) for up to a minute."""
        deadline = time.monotonic() + 60
        while True:
            try:
                return self._call(method, path, body, content_type)
            except _Retry as retry:
                if time.monotonic() + retry.after > deadline:
                    raise RemoteError(
                        f"The server at {self.url} stayed busy for a minute. Retry later.",
                        code=ErrorCode.STORE_BUSY,
                    ) from None
                time.sleep(retry.after)

    def _call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        content_type: str | None = None,
        *,
        raw: bool = False,
    ) -> Any:
        """The JSON answer (``raw``: the text) of a request; an error answer raised."""
        request = self._request(path, body, method)
        if content_type:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                data = response.read()
                return data.decode("utf-8", errors="replace") if raw else json.loads(data)
        except urllib.error.HTTPError as exc:
            if exc.code == 503:
                raise _Retry(float(exc.headers.get("Retry-After") or 1)) from None
            if exc.code == 413 and path == "/api/v1/spans":
                raise _TooLarge() from None
            if exc.code == 401:
                raise self._unauthorized() from None
            detail = exc.read().decode(errors="replace")
            with contextlib.suppress(ValueError, KeyError, TypeError):
                found = json.loads(detail)
                # The API's shape ({"error", "code"}) or a Phoenix route's ({"detail"}).
                detail = found["error"] if "error" in found else found["detail"]
                if "code" in found:
                    raise TraceproofError(
                        str(detail).removeprefix(f"[{found['code']}] "),
                        code=ErrorCode(found["code"]),
                    ) from None
            raise RemoteError(f"The server at {self.url} answered {exc.code}: {detail}") from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            # HTTPException: the connection dropped mid-answer (the server died).
            raise self._unreachable(exc) from None

    def _unreachable(self, exc: Exception) -> RemoteError:
        return RemoteError(
            f"Could not reach the server at {self.url} ({exc or type(exc).__name__}). Check "
            "that it is running, or stop it to use the store directly."
        )


def _tool_error(url: str, exc: urllib.error.HTTPError) -> TraceproofError:
    """The error a server answered for a tool call, with its own code and message."""
    detail = exc.read().decode(errors="replace")
    with contextlib.suppress(ValueError, KeyError, TypeError):
        found = json.loads(detail)
        message, code = str(found["error"]), ErrorCode(found["code"])
        return TraceproofError(message.removeprefix(f"[{code}] "), code=code)
    # Not the API's error shape: an older server, or something else on that port.
    return RemoteError(f"The server at {url} answered {exc.code}: {detail[:500]}")


class _TooLarge(Exception):
    pass


class _Retry(Exception):
    def __init__(self, after: float) -> None:
        self.after = min(max(after, 0.05), 5.0)


def _phoenix_entry(item: AnnotationInput) -> dict[str, Any]:
    """``item`` as an entry of a Phoenix annotation route, with traceproof's extensions."""
    key = f"{item.target_kind}_id"
    entry: dict[str, Any] = {
        key: item.target_id,
        "name": item.name,
        "annotator_kind": str(item.annotator_kind).upper(),
        "result": {"label": item.label, "score": item.score, "explanation": item.explanation},
        "identifier": item.identifier,
        "annotator": item.author,
    }
    if item.metadata is not None:
        entry["metadata"] = item.metadata
    if item.trace_id is not None:
        entry["trace_id"] = item.trace_id
    if item.project is not None:
        entry["project"] = item.project
    return entry


def _chunks(
    entries: list[tuple[int, dict[str, Any]]],
) -> list[list[tuple[int, dict[str, Any]]]]:
    """``entries`` in runs of at most ANNOTATIONS_PER_REQUEST and, where a run can be cut,
    about ANNOTATION_REQUEST_BYTES of JSON."""
    chunks: list[list[tuple[int, dict[str, Any]]]] = []
    current: list[tuple[int, dict[str, Any]]] = []
    size = 0
    for pair in entries:
        n = len(json.dumps(pair[1], default=str))
        if current and (
            len(current) >= ANNOTATIONS_PER_REQUEST or size + n > ANNOTATION_REQUEST_BYTES
        ):
            chunks.append(current)
            current, size = [], 0
        current.append(pair)
        size += n
    if current:
        chunks.append(current)
    return chunks
