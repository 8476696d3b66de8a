"""Normalised span rows: the one place where attributes become promoted columns.

Every decoder (OTLP protobuf, OTLP/JSON, span JSON lines) hands spans to :class:`SpanRows` with
flat, dotted attribute keys (``llm.input_messages.0.message.content``). ``SpanRows.add``:

- fills the promoted columns from OpenInference attributes, falling back to OTel GenAI ones
  (``gen_ai.*``), and the error columns from the ``exception`` event;
- moves ``input.value``/``output.value`` out of the attributes into their columns (they are the
  biggest values of a span, kept once);
- parses attributes that carry JSON text (``tool.parameters``, ``metadata``, ...) so they are
  queryable as JSON;
- stores attributes nested (``{"llm": {"input_messages": [{"message": ...}]}}``), so DuckDB JSON
  paths and dotted OpenInference paths address the same values.

Spans that cannot be kept raise :class:`SpanRejected` with the reason; the decoder counts them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson
import pyarrow as pa

from traceproof.storage.columns import SPAN_COLUMNS, SPAN_KINDS, SPAN_SCHEMA

#: Deepest nesting of an attribute value that is kept; deeper spans are rejected. Protobuf
#: refuses about 31 levels inside a request (its limit is 100 message levels), so both wires
#: share this limit.
MAX_VALUE_DEPTH = 30


def document_depth_limit(max_key_depth: int) -> int:
    """The deepest JSON document (``attributes``, ``events``, ``links``, ``resource``) the
    decoders can store: each dotted key segment is one level (keys have at most
    ``max_key_depth`` segments), the value below it at most :data:`MAX_VALUE_DEPTH`, and an
    event or link adds two (its list and its object)."""
    return max_key_depth + MAX_VALUE_DEPTH + 2


#: Defaults of the attribute key limits (settings ``max_attribute_key_depth`` and
#: ``max_attribute_key_chars``).
MAX_KEY_DEPTH = 64
MAX_KEY_CHARS = 1024

#: Attribute keys (last dotted segment) whose string values are JSON text worth parsing.
JSON_TEXT_KEYS = frozenset(
    {"parameters", "metadata", "invocation_parameters", "json_schema", "variables", "arguments"}
)

_STATUS_NAMES = {0: "UNSET", 1: "OK", 2: "ERROR"}
_OTEL_KINDS = {0: None, 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
_GENAI_OPERATION_KINDS = {
    "chat": "LLM",
    "text_completion": "LLM",
    "generate_content": "LLM",
    "embeddings": "EMBEDDING",
    "execute_tool": "TOOL",
    "invoke_agent": "AGENT",
    "create_agent": "AGENT",
}


class SpanRejected(ValueError):
    """A span that cannot be stored; the message says why."""


#: What rejects one span: :class:`SpanRejected`, and ``RecursionError`` from a value nested so
#: deep that a parser or encoder ran out of stack (never let it fail the whole request).
REJECTED = (SpanRejected, RecursionError)


def rejection_reason(exc: BaseException) -> str:
    """The reason to report for an exception in :data:`REJECTED`."""
    if isinstance(exc, RecursionError):
        return f"a value is nested deeper than {MAX_VALUE_DEPTH} levels"
    return str(exc)


def status_name(code: int | str | None) -> str:
    """OTLP status code (number or name, in any of the spellings seen) to OK/ERROR/UNSET."""
    if code is None or code == "":
        return "UNSET"
    if isinstance(code, int):
        return _STATUS_NAMES.get(code, "UNSET")
    text = str(code).upper().removeprefix("STATUS_CODE_")
    if text.isdigit():
        return _STATUS_NAMES.get(int(text), "UNSET")
    return text if text in ("OK", "ERROR", "UNSET") else "UNSET"


def otel_kind_name(kind: int | str | None) -> str | None:
    if kind is None or kind == "":
        return None
    if isinstance(kind, int):
        return _OTEL_KINDS.get(kind)
    text = str(kind).upper().removeprefix("SPAN_KIND_")
    if text.isdigit():
        return _OTEL_KINDS.get(int(text))
    return text if text in _OTEL_KINDS.values() else None


def clean_number(value: float) -> float | str:
    """JSON has no NaN or infinity: keep them as the strings OTLP/JSON uses."""
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def nesting(value: Any) -> int:
    """How many levels of lists and objects ``value`` has (a scalar has 0), counted without
    recursion: a value of any depth is measured safely."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, Mapping):
            children: Iterable[Any] = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        stack.extend((child, depth) for child in children)
    return deepest


def _too_deep(what: str) -> SpanRejected:
    return SpanRejected(f"{what} is nested deeper than {MAX_VALUE_DEPTH} levels")


def parse_json_text(key: str, text: str) -> Any:
    """The value of JSON text ``text`` held by attribute ``key``, or ``text`` itself when it is
    not JSON. Raises :class:`SpanRejected` when the value is nested deeper than
    :data:`MAX_VALUE_DEPTH`, the limit every wire's values share."""
    try:
        value = json.loads(text)
    except RecursionError:  # nested far past the limit: the parser ran out of stack
        raise _too_deep(f"attribute {key!r} holds JSON text that") from None
    except ValueError:
        return text
    if nesting(value) > MAX_VALUE_DEPTH:
        raise _too_deep(f"attribute {key!r} holds JSON text that")
    return value


def flatten(value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested attributes (as Phoenix exports them) to flat dotted keys.

    Lists of objects are indexed (``llm.input_messages.0.message.role``); lists of scalars stay
    values, as OpenInference defines them.
    """
    out: dict[str, Any] = {}
    stack: list[tuple[str, Any, int]] = [(prefix, value, 0)]
    while stack:
        path, node, depth = stack.pop()
        if depth > MAX_VALUE_DEPTH:
            raise _too_deep(f"attribute {path!r}")
        if isinstance(node, Mapping) and (node or not path):
            for key, child in node.items():
                stack.append((f"{path}.{key}" if path else str(key), child, depth + 1))
        elif isinstance(node, list) and node and all(isinstance(x, Mapping) for x in node):
            for i, child in enumerate(node):
                stack.append((f"{path}.{i}", child, depth + 1))
        else:
            # A list of scalars (or of lists) is kept whole, as one value: its own levels count.
            if isinstance(node, list) and depth + nesting(node) > MAX_VALUE_DEPTH:
                raise _too_deep(f"attribute {path!r}")
            out[path] = node
    return out


_split_cache: dict[str, tuple[tuple[str, ...], tuple[bool, ...]]] = {}


def _split(key: str) -> tuple[tuple[str, ...], tuple[bool, ...]]:
    """A dotted key's segments and which of them are list indexes (cached: keys repeat)."""
    found = _split_cache.get(key)
    if found is None:
        parts = tuple(key.split("."))
        found = parts, tuple(p.isdigit() for p in parts)
        if len(_split_cache) < 100_000:
            _split_cache[key] = found
    return found


class _Level(dict[str, Any]):
    """A level made of dotted keys, as opposed to a map that is itself an attribute value."""


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
    """Dotted keys to nested objects; a level whose keys are exactly 0..n-1 becomes a list.

    When a key is both a value and a prefix of other keys (``a`` and ``a.b``), nothing is
    lost: the later one is kept whole under its dotted key (``{"a": 1, "a.b": 2}``), or, when
    the value comes second, under ``""`` inside the level (``{"a": {"b": 2, "": 1}}``).
    """
    root = _Level()
    # (depth, parent, key) of levels that received an index key: list candidates.
    indexed: list[tuple[int, dict[str, Any], str]] = []
    seen: set[int] = set()
    for key, value in flat.items():
        parts, digits = _split(key)
        node: dict[str, Any] = root
        parent: dict[str, Any] | None = None
        last = len(parts) - 1
        for i in range(last):
            part = parts[i]
            child = node.get(part)
            if child is None:
                child = node[part] = _Level()
            elif type(child) is not _Level:
                node[".".join(parts[i:])] = value
                break
            if digits[i] and parent is not None and id(node) not in seen:
                seen.add(id(node))
                indexed.append((i, parent, parts[i - 1]))
            parent, node = node, child
        else:
            part = parts[last]
            existing = node.get(part)
            if type(existing) is _Level:
                existing[""] = value
            else:
                node[part] = value
                if digits[last] and parent is not None and id(node) not in seen:
                    seen.add(id(node))
                    indexed.append((last, parent, parts[last - 1]))
    for _, parent, key in sorted(indexed, key=lambda item: -item[0]):
        level = parent.get(key)
        if type(level) is _Level and "" not in level:
            count = len(level)
            if all(str(i) in level for i in range(count)):
                parent[key] = [level[str(i)] for i in range(count)]
    return root


def _dumps(value: Any) -> str:
    """JSON text of a span's value; raises :class:`SpanRejected` for text that is not valid
    Unicode (a lone surrogate such as ``\\ud800``, which OTLP/JSON can carry)."""
    try:
        return orjson.dumps(value, default=str).decode()
    except (TypeError, orjson.JSONEncodeError) as exc:
        if "surrogates" in str(exc):
            raise SpanRejected(_SURROGATE) from None
    # Integers beyond 64 bits, and other values orjson refuses.
    try:
        text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    except RecursionError:
        raise SpanRejected("a value is nested too deeply to be stored as JSON") from None
    _check_text(text)
    return text


_SURROGATE = (
    "text holds a lone UTF-16 surrogate (such as \\ud800), which is not valid Unicode; "
    "the span is rejected"
)


def _check_text(text: str | None) -> None:
    """Text must encode as UTF-8 (Arrow and DuckDB store UTF-8): no lone surrogates."""
    if text is None or text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise SpanRejected(_SURROGATE) from None


def _first(attrs: Mapping[str, Any], *keys: str) -> Any:
    for key in keys:
        value = attrs.get(key)
        if value is not None and value != "":
            return value
    return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return _dumps(value)


def _int(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        try:
            number = int(float(value))
        except (TypeError, ValueError, OverflowError):
            return None
    return number if -(2**63) <= number < 2**63 else None


def ns_to_iso(ns: int) -> str:
    seconds, rest = divmod(ns, 1_000_000_000)
    try:
        stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return str(ns)
    return f"{stamp}.{rest:09d}Z"


# Timestamps DuckDB's TIMESTAMP (microseconds) can hold, as nanoseconds.
_MIN_NS = 0
_MAX_NS = 2**63 - 1


class Event:
    """A span event with flat attributes."""

    __slots__ = ("attributes", "name", "time_ns")

    def __init__(self, name: str, time_ns: int, attributes: dict[str, Any]) -> None:
        self.name = name
        self.time_ns = time_ns
        self.attributes = attributes


#: Rows a :class:`SpanRows` holds as Python values before it converts them to an Arrow chunk.
CHUNK_ROWS = 512


class SpanRows:
    """Accumulates normalised spans column by column; :meth:`table` makes the Arrow batch."""

    def __init__(
        self,
        *,
        max_key_depth: int = MAX_KEY_DEPTH,
        max_key_chars: int = MAX_KEY_CHARS,
        redact: Callable[[Any], Any] | None = None,
    ) -> None:
        self._columns: dict[str, list[Any]] = {name: [] for name in SPAN_COLUMNS}
        #: Rows already converted to Arrow, :data:`CHUNK_ROWS` at a time (see :meth:`add`).
        self._chunks: list[pa.RecordBatch] = []
        self.nbytes = 0
        self.max_key_depth = max_key_depth
        self.max_key_chars = max_key_chars
        #: Applied to every attribute value (span's and events'), and to the status message,
        #: before anything else (a secret redactor's ``value``: it keeps a value's shape, and
        #: JSON text stays JSON).
        self.redact = redact

    @classmethod
    def for_settings(cls, settings: Any, *, redact: Callable[[Any], Any] | None = None) -> SpanRows:
        """Rows with the attribute key limits of ``settings`` (a :class:`Settings`)."""
        return cls(
            max_key_depth=settings.max_attribute_key_depth,
            max_key_chars=settings.max_attribute_key_chars,
            redact=redact,
        )

    def like(self) -> SpanRows:
        """An empty builder with these limits (and this redaction)."""
        return SpanRows(
            max_key_depth=self.max_key_depth, max_key_chars=self.max_key_chars, redact=self.redact
        )

    def check_keys(self, attributes: Mapping[str, Any]) -> None:
        """Reject attribute keys deeper or longer than the limits: stored nested, they would
        make JSON that jq and the filters cannot read back."""
        for key in attributes:
            if key.count(".") >= self.max_key_depth:
                raise SpanRejected(
                    f"attribute key {key[:60]!r}... has more than {self.max_key_depth} dotted "
                    "segments"
                )
            if len(key) > self.max_key_chars:
                raise SpanRejected(
                    f"attribute key {key[:60]!r}... is longer than {self.max_key_chars} characters"
                )

    def __len__(self) -> int:
        chunked: int = sum(c.num_rows for c in self._chunks)
        return chunked + len(self._columns["span_id"])

    def table(self) -> pa.Table:
        """The rows added so far as one Arrow table (chunked as they were converted)."""
        if self._columns["span_id"] or not self._chunks:
            self._convert()
        return pa.Table.from_batches(self._chunks, schema=SPAN_SCHEMA)

    def _convert(self) -> None:
        """Move the rows held as Python values into an Arrow chunk, and drop those values."""
        columns = self._columns
        arrays = [pa.array(columns[f.name], type=f.type) for f in SPAN_SCHEMA]
        self._chunks.append(pa.record_batch(arrays, schema=SPAN_SCHEMA))
        for values in columns.values():
            values.clear()

    def add(
        self,
        *,
        project: str,
        trace_id: str,
        span_id: str,
        parent_span_id: str | None,
        name: str,
        start_ns: int,
        end_ns: int,
        status: str,
        status_message: str | None,
        attributes: dict[str, Any],
        events: Iterable[Event] = (),
        links: list[dict[str, Any]] | None = None,
        resource_json: str | None = None,
        scope_name: str | None = None,
        otel_kind: str | None = None,
    ) -> list[str]:
        """Add one span. Returns warnings (kept, but worth telling the sender)."""
        warnings: list[str] = []
        if not trace_id:
            raise SpanRejected("span has no trace id")
        if not span_id:
            raise SpanRejected("span has no span id")
        if not _MIN_NS <= start_ns <= _MAX_NS:
            raise SpanRejected(f"start time {start_ns} ns is out of range")
        if not _MIN_NS <= end_ns <= _MAX_NS:
            raise SpanRejected(f"end time {end_ns} ns is out of range")
        if end_ns < start_ns:
            warnings.append(
                f"span {span_id}: end time before start time; stored with zero duration"
            )
            end_ns = start_ns

        if self.redact is not None:
            redact = self.redact
            attributes = {key: redact(value) for key, value in attributes.items()}
            events = [
                Event(e.name, e.time_ns, {k: redact(v) for k, v in e.attributes.items()})
                for e in events
            ]
            status_message = redact(status_message) if status_message else status_message
        self.check_keys(attributes)
        events = list(events)
        for event in events:
            self.check_keys(event.attributes)
        attrs = dict(attributes)
        input_value = attrs.pop("input.value", None)
        output_value = attrs.pop("output.value", None)
        for key, value in attrs.items():
            if (
                isinstance(value, str)
                and value[:1] in ("{", "[")
                and (_split(key)[0][-1] in JSON_TEXT_KEYS)
            ):
                attrs[key] = parse_json_text(key, value)

        kind = str(attrs.get("openinference.span.kind") or "").upper()
        if kind not in SPAN_KINDS:
            kind = _GENAI_OPERATION_KINDS.get(str(attrs.get("gen_ai.operation.name")), "")
        if not kind:
            kind = "LLM" if "llm.model_name" in attrs else "UNKNOWN"

        if input_value is None:
            input_value = _first(attrs, "gen_ai.input.messages", "gen_ai.prompt")
        if output_value is None:
            output_value = _first(attrs, "gen_ai.output.messages", "gen_ai.completion")

        prompt_tokens = _int(
            _first(
                attrs,
                "llm.token_count.prompt",
                "gen_ai.usage.input_tokens",
                "gen_ai.usage.prompt_tokens",
            )
        )
        completion_tokens = _int(
            _first(
                attrs,
                "llm.token_count.completion",
                "gen_ai.usage.output_tokens",
                "gen_ai.usage.completion_tokens",
            )
        )
        total_tokens = _int(_first(attrs, "llm.token_count.total", "gen_ai.usage.total_tokens"))
        if total_tokens is None and (prompt_tokens is not None or completion_tokens is not None):
            total_tokens = (prompt_tokens or 0) + (completion_tokens or 0)

        error_type = error_message = None
        event_rows = []
        for event in events:
            if event.name == "exception" and error_type is None and error_message is None:
                error_type = _text(event.attributes.get("exception.type"))
                error_message = _text(event.attributes.get("exception.message"))
            event_rows.append(
                {
                    "name": event.name,
                    "timestamp": ns_to_iso(event.time_ns),
                    "attributes": unflatten(event.attributes),
                }
            )
        if error_type is None:
            error_type = _text(attrs.get("error.type"))
        if error_message is None and status == "ERROR":
            error_message = status_message or None

        # Every value that can be refused is made before the first column is appended: a
        # rejected span must leave no partial row behind.
        attributes_json = _dumps(unflatten(attrs))
        events_json = _dumps(event_rows)
        links_json = _dumps(links or [])
        input_text = _text(input_value)
        output_text = _text(output_value)
        for text in (project, trace_id, span_id, parent_span_id, name, status_message,
                     input_text, output_text, resource_json, scope_name):  # fmt: skip
            _check_text(text)
        row = self._columns
        row["project"].append(project)
        row["trace_id"].append(trace_id)
        row["span_id"].append(span_id)
        row["parent_span_id"].append(parent_span_id or None)
        row["name"].append(name)
        row["span_kind"].append(kind)
        row["otel_kind"].append(otel_kind)
        row["status"].append(status)
        row["status_message"].append(status_message or None)
        row["start_time"].append(start_ns // 1000)
        row["end_time"].append(end_ns // 1000)
        row["latency_ms"].append((end_ns - start_ns) / 1e6)
        row["session_id"].append(_text(_first(attrs, "session.id", "gen_ai.conversation.id")))
        row["user_id"].append(_text(attrs.get("user.id")))
        row["model"].append(
            _text(
                _first(
                    attrs,
                    "llm.model_name",
                    "gen_ai.response.model",
                    "gen_ai.request.model",
                    "embedding.model_name",
                )
            )
        )
        row["tool_name"].append(_text(_first(attrs, "tool.name", "gen_ai.tool.name")))
        row["prompt_tokens"].append(prompt_tokens)
        row["completion_tokens"].append(completion_tokens)
        row["total_tokens"].append(total_tokens)
        row["input_value"].append(input_text)
        row["input_mime_type"].append(_text(attrs.get("input.mime_type")))
        row["output_value"].append(output_text)
        row["output_mime_type"].append(_text(attrs.get("output.mime_type")))
        row["error_type"].append(error_type)
        row["error_message"].append(error_message)
        row["attributes"].append(attributes_json)
        row["events"].append(events_json)
        row["links"].append(links_json)
        row["resource"].append(resource_json or "{}")
        row["scope_name"].append(scope_name or None)
        self.nbytes += len(attributes_json) + len(input_text or "") + len(output_text or "") + 512
        if len(row["span_id"]) >= CHUNK_ROWS:
            # A batch of thousands of multi-kilobyte spans would otherwise be held twice when
            # it is sent: as Python strings and as the Arrow copy being built from them.
            self._convert()
        return warnings


def resource_json(attributes: Mapping[str, Any]) -> str:
    return _dumps(unflatten(attributes))


def project_of(resource: Mapping[str, Any], default: str) -> str:
    """OpenInference project name, else service name, else the default."""
    name = _first(resource, "openinference.project.name", "service.name")
    return str(name) if name is not None else default
