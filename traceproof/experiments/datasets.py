"""Datasets: examples, their content hash, splits, extraction from spans.

An example is an input (any JSON value but null), an expected output (JSON or none), metadata
(a JSON object or none), a split and the span and trace it came from. Its id is the first 16 hex
digits of the SHA-256 of the canonical JSON of ``{"input": ..., "expected": ...}`` (keys sorted,
no spaces): the same content always has the same id, so duplicates are found by id, and a
metadata, split or source change does not make a new example.

Splits (:class:`SplitRule`): a name (``train``: every example without its own split gets it) or
a hash rule ``hash:train=0.8,test=0.2``: an example falls in a bucket by its id (the id's first
13 hex digits as a fraction of 16**13, against the weights' running sums in the order given;
the weights sum to 1, within 1e-9). Deterministic: the same example lands in the same split in every
dataset and every run. An example's own split (a literal example's ``split``) wins.

Sources (:class:`Source`) say where a span's input, expected output or metadata value comes from:

- a path over the span as a document (the document ``jq`` sees): a column (``input_value``,
  ``model``…), ``input.value`` / ``output.value`` (the same columns), ``attributes.<path>`` or a
  bare OpenInference path (``llm.input_messages``, read in the attributes), ``resource.<path>``,
  ``events.<i>.…``. ``input.value`` and ``output.value`` are parsed when their text is a JSON
  object or array (``input.value.messages`` reads into it); digits index arrays.
- ``jq:<program>`` run over the span document in the jq tool's sandboxed worker; its one output
  is the value (several outputs: an array of them; none: no value).
- ``annotation:<name>[.<field>]``: the span's annotation ``name`` (a person's, HUMAN, newest
  first; else the newest of any annotator; else the same annotation on the span's trace); the
  field is ``label`` (default), ``score``, ``explanation``, ``metadata`` or ``metadata.<key>…``.
  This is how a person's corrected answer becomes the expected output.

Files and the chat export are in :mod:`traceproof.experiments.dataset_files`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from traceproof.errors import ErrorCode, TraceproofError

#: Keys of an example in a file (and of a literal example in a tool call).
EXAMPLE_KEYS = ("id", "input", "expected", "metadata", "split", "source_trace_id", "source_span_id")
#: Characters of a split name.
SPLIT_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
#: How far a hash split's weights may sum from 1 (float sums: 0.7 + 0.2 + 0.1).
WEIGHT_TOLERANCE = 1e-9
#: Most characters of a jq program's outputs kept for a whole batch of spans.
JQ_KEEP_CHARS = 256 * 1024 * 1024


class DatasetError(TraceproofError):
    """An example, source, split rule or file that cannot be used; the message says how."""

    code = ErrorCode.INVALID_ARGUMENT


class FileError(DatasetError):
    """A dataset file that does not parse, at ``line``."""

    code = ErrorCode.INVALID_INPUT

    def __init__(self, path: str, line: int, what: str) -> None:
        self.line = line
        super().__init__(
            f"{path} line {line}: {what.rstrip('.')}. Fix that line; nothing was imported."
        )


# -- examples -----------------------------------------------------------------------------------


def canonical(value: Any) -> bytes:
    """Canonical JSON: keys sorted, compact, UTF-8."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:
        raise DatasetError(f"A value is not JSON ({exc}). Pass JSON values only.") from None


def example_id(input: Any, expected: Any) -> str:
    """The content hash of an example: 16 hex digits."""
    return hashlib.sha256(canonical({"input": input, "expected": expected})).hexdigest()[:16]


@dataclass
class Example:
    input: Any
    expected: Any = None
    metadata: dict[str, Any] | None = None
    split: str | None = None
    source_trace_id: str | None = None
    source_span_id: str | None = None
    id: str = field(default="")

    def __post_init__(self) -> None:
        if self.input is None:
            raise DatasetError("An example needs an input (any JSON value but null).")
        if self.metadata is not None and not isinstance(self.metadata, dict):
            raise DatasetError("An example's metadata must be a JSON object.")
        if self.split is not None:
            check_split_name(self.split)
        # Round trip through JSON: what is hashed is what the store keeps (floats, key types).
        self.input = orjson.loads(canonical(self.input))
        self.expected = orjson.loads(canonical(self.expected))
        self.id = example_id(self.input, self.expected)

    def as_dict(self) -> dict[str, Any]:
        """The example as a file row: its id first, empty fields left out."""
        row = {key: getattr(self, key) for key in EXAMPLE_KEYS}
        return {k: v for k, v in row.items() if v is not None}


def example_from(item: Mapping[str, Any]) -> Example:
    """An example from a mapping of :data:`EXAMPLE_KEYS` (``id`` is ignored: it is recomputed
    from the content)."""
    unknown = sorted(set(item) - set(EXAMPLE_KEYS))
    if unknown:
        raise DatasetError(
            f"Unknown example keys {', '.join(map(repr, unknown))}. An example has input and "
            "optionally expected, metadata, split, source_trace_id, source_span_id."
        )
    if "input" not in item:
        raise DatasetError("An example needs an input (any JSON value but null).")
    for key in ("source_trace_id", "source_span_id"):
        if item.get(key) is not None and not isinstance(item[key], str):
            raise DatasetError(f"An example's {key} must be a string.")
    split = item.get("split")
    if split is not None and not isinstance(split, str):
        raise DatasetError("An example's split must be a string.")
    return Example(
        input=item["input"],
        expected=item.get("expected"),
        metadata=item.get("metadata"),
        split=split,
        source_trace_id=item.get("source_trace_id"),
        source_span_id=item.get("source_span_id"),
    )


def check_split_name(name: str) -> str:
    if not SPLIT_NAME.match(name):
        raise DatasetError(
            f"Split {name[:80]!r} is not a split name: use 1-64 letters, digits, '_', '.', '-'."
        )
    return name


# -- splits -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SplitRule:
    """A split for examples without one: a fixed name, or buckets by hash of the example id."""

    name: str | None = None
    buckets: tuple[tuple[str, float], ...] = ()

    @classmethod
    def parse(cls, text: str) -> SplitRule:
        text = text.strip()
        if not text.startswith("hash:"):
            return cls(name=check_split_name(text))
        buckets: list[tuple[str, float]] = []
        for part in text[5:].split(","):
            name, sep, weight = part.partition("=")
            try:
                value = float(weight) if sep else float("nan")
            except ValueError:
                value = float("nan")
            if not (value >= 0) or value == float("inf"):
                raise DatasetError(
                    f"Split rule {text[:100]!r}: {part.strip()!r} is not name=weight. Write "
                    "e.g. hash:train=0.8,test=0.2."
                )
            buckets.append((check_split_name(name.strip()), value))
        total = sum(w for _, w in buckets)
        if len({n for n, _ in buckets}) < len(buckets):
            raise DatasetError(
                f"Split rule {text[:100]!r} names a split twice. Give each name once, e.g. "
                "hash:train=0.8,test=0.2."
            )
        if abs(total - 1) > WEIGHT_TOLERANCE:
            raise DatasetError(
                f"Split rule {text[:100]!r}: its weights sum to {total:g}, not 1. Give each "
                "split its share, e.g. hash:train=0.8,test=0.2."
            )
        return cls(buckets=tuple(buckets))

    def split_of(self, example_id: str) -> str:
        if self.name is not None:
            return self.name
        point = int(example_id[:13], 16) / 16**13
        running = 0.0
        for name, weight in self.buckets:
            running += weight
            if point < running:
                return name
        return self.buckets[-1][0]

    def apply(self, examples: Iterable[Example]) -> None:
        """Give every example without its own split this rule's split."""
        for example in examples:
            if example.split is None:
                example.split = self.split_of(example.id)


# -- sources ------------------------------------------------------------------------------------

#: Names of the text columns for the OpenInference attributes ingest moves into them.
_ALIASES = {"input.value": "input_value", "output.value": "output_value"}
_JSON_ROOTS = ("attributes", "resource", "events", "links")
_ANNOTATION_FIELDS = ("label", "score", "explanation", "metadata")


@dataclass(frozen=True)
class Source:
    """Where a value of an example comes from: a path, a jq program or an annotation."""

    kind: Literal["path", "jq", "annotation"]
    text: str
    segments: tuple[str, ...] = ()  # path: where to walk; annotation: the field (and keys)
    annotation: str | None = None

    @classmethod
    def parse(cls, text: str) -> Source:
        text = text.strip()
        if text.startswith("jq:"):
            program = text[3:].strip()
            if not program:
                raise DatasetError("Source 'jq:' needs a program, e.g. jq:.attributes.llm.")
            return cls("jq", program)
        if text.startswith("annotation:"):
            name, _, rest = text[len("annotation:") :].partition(".")
            parts = tuple(rest.split(".")) if rest else ("label",)
            if (
                not name
                or parts[0] not in _ANNOTATION_FIELDS
                or (len(parts) > 1 and parts[0] != "metadata")
            ):
                raise DatasetError(
                    f"Source {text[:100]!r} is not annotation:NAME[.FIELD]; FIELD is label, "
                    "score, explanation, metadata or metadata.KEY."
                )
            return cls("annotation", text, parts, name)
        if not text or any(not s for s in text.split(".")):
            raise DatasetError(
                f"Source {text[:100]!r} is not a path (input.value, output.value, "
                "attributes.llm.input_messages, model…), jq:PROGRAM or annotation:NAME."
            )
        for alias, column in _ALIASES.items():
            if text == alias or text.startswith(alias + "."):
                text_path = column + text[len(alias) :]
                break
        else:
            text_path = text
        segments = text_path.split(".")
        if (
            len(segments) > 1
            and segments[0] not in _JSON_ROOTS
            and segments[0]
            not in (
                "input_value",
                "output_value",
            )
        ):
            segments = ["attributes", *segments]
        return cls("path", text, tuple(segments))


def walk(document: Any, segments: Sequence[str]) -> Any:
    """The value at ``segments`` in ``document`` (None when absent). ``input_value`` and
    ``output_value`` are parsed on the way when they hold a JSON object or array."""
    value = document
    for index, segment in enumerate(segments):
        if isinstance(value, dict):
            value = value.get(segment)
            if index == 0 and segment in ("input_value", "output_value"):
                value = parse_json_text(value)
        elif isinstance(value, list) and segment.isdigit() and int(segment) < len(value):
            value = value[int(segment)]
        else:
            return None
        if value is None:
            return None
    return value


def parse_json_text(value: Any) -> Any:
    """Text holding a JSON object or array, parsed; anything else as it is."""
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


#: A jq run: (program, documents) -> one list of outputs per document.
JqRun = Callable[[str, list[dict[str, Any]]], list[list[Any]]]
#: The annotations of spans: (annotation name, trace id, span id) -> {label, score, explanation,
#: metadata} as the lookup :func:`extract` is given.
Annotations = Mapping[tuple[str, str, str], Mapping[str, Any]]


def jq_runner(workers: int, timeout: float) -> JqRun:
    """Programs over span documents in the jq tool's sandboxed workers
    (:mod:`traceproof.tools.jqworker`): one run per batch, under ``timeout`` seconds."""
    from traceproof.tools.jqworker import JqCrashed, JqError, JqTimeout, runner

    def run(program: str, documents: list[dict[str, Any]]) -> list[list[Any]]:
        wrapped = f"map([{program}\n])"
        try:
            reply = runner(workers).run(
                wrapped, orjson.dumps(documents), keep_chars=JQ_KEEP_CHARS, timeout=timeout
            )
        except JqError as exc:
            raise DatasetError(
                f"jq:{program[:100]} failed: {str(exc).rstrip('.')}. Fix the program (it runs "
                "over one span: .name, .input_value, .attributes.llm…).",
                code=ErrorCode.INVALID_JQ,
            ) from None
        except JqTimeout:
            raise DatasetError(
                f"jq:{program[:100]} did not finish within {timeout:g} s. Simplify it or choose "
                "fewer spans.",
                code=ErrorCode.QUERY_TIMEOUT,
            ) from None
        except JqCrashed:
            raise DatasetError(
                f"jq:{program[:100]} ran out of memory. Select less, or choose fewer spans.",
                code=ErrorCode.INVALID_JQ,
            ) from None
        if reply.get("clipped") is not None or reply.get("dropped"):
            raise DatasetError(
                f"jq:{program[:100]}: its outputs are too large. Select less, or choose fewer "
                "spans."
            )
        (outputs,) = orjson.loads(reply["results"])
        return list(outputs)

    return run


def _one(outputs: list[Any]) -> Any:
    if not outputs:
        return None
    return outputs[0] if len(outputs) == 1 else outputs


@dataclass
class Extracted:
    examples: list[Example]
    skipped: int  # spans without an input value
    notes: list[str] = field(default_factory=list)  # sources that gave nothing for some spans


def extract(
    documents: list[dict[str, Any]],
    *,
    input: Source,
    expected: Source | None = None,
    metadata: Mapping[str, Source] | None = None,
    annotations: Annotations | None = None,
    jq: JqRun | None = None,
) -> Extracted:
    """Examples from span documents (``span_document`` rows, with ``trace_id`` and
    ``span_id``): each source's value per span. A span whose input is absent is skipped; a
    metadata value that is absent is left out. A source that gives no value for any span is a
    :class:`DatasetError` naming it (a wrong path, not data); one that gives none for some spans
    is counted in :attr:`Extracted.notes`."""
    columns: dict[str, list[Any]] = {}
    wanted: dict[str, Source] = {"input": input}
    if expected is not None:
        wanted["expected"] = expected
    for key, source in (metadata or {}).items():
        wanted["metadata." + key] = source
    notes: list[str] = []
    for key, source in wanted.items():
        columns[key] = _values(source, documents, annotations or {}, jq)
        empty = sum(1 for value in columns[key] if value is None)
        named = ("jq:" if source.kind == "jq" else "") + source.text
        if documents and empty == len(documents):
            raise DatasetError(
                f"The {key} source {named[:100]!r} gave no value for any of the "
                f"{len(documents)} spans chosen; nothing was stored. Check it on one of them "
                "(get_span_data shows a span's columns and attributes): a path such as "
                "input.value, output.value or llm.input_messages, jq:PROGRAM, or "
                "annotation:NAME."
            )
        if empty:
            what = ": they were skipped" if key == "input" else ""
            notes.append(
                f"The {key} source {named[:100]!r} gave no value for {empty} of the "
                f"{len(documents)} spans{what}."
            )
    examples: list[Example] = []
    skipped = 0
    for n, doc in enumerate(documents):
        value = columns["input"][n]
        if value is None:
            skipped += 1
            continue
        meta = {
            k.removeprefix("metadata."): v[n]
            for k, v in columns.items()
            if k.startswith("metadata.") and v[n] is not None
        }
        examples.append(
            Example(
                input=value,
                expected=columns["expected"][n] if "expected" in columns else None,
                metadata=meta or None,
                source_trace_id=doc.get("trace_id"),
                source_span_id=doc.get("span_id"),
            )
        )
    return Extracted(examples, skipped, notes)


def _values(
    source: Source, documents: list[dict[str, Any]], annotations: Annotations, jq: JqRun | None
) -> list[Any]:
    if source.kind == "path":
        return [walk(doc, source.segments) for doc in documents]
    if source.kind == "jq":
        if jq is None:  # pragma: no cover - the tools always pass one
            raise DatasetError("jq sources need a jq runner.")
        return [_one(outputs) for outputs in jq(source.text, documents)] if documents else []
    found = []
    for doc in documents:
        key = (str(source.annotation), str(doc.get("trace_id")), str(doc.get("span_id")))
        row = annotations.get(key)
        found.append(None if row is None else walk(dict(row), source.segments))
    return found


def annotation_names(sources: Iterable[Source | None]) -> list[str]:
    return sorted({s.annotation for s in sources if s is not None and s.annotation})
