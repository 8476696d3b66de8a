"""The proof family's dataset tools: ``create_dataset``, ``add_examples``, ``list_datasets``,
``get_dataset``.

Thin functions over :mod:`traceproof.experiments.datasets` (examples, sources, splits) and
:mod:`traceproof.storage.datasets` (versions, one transaction per change). Spans are chosen by
id or by the shared ``where`` filter, newest first, at most :data:`SPANS_PER_CALL`;
each span's input, expected output and metadata come from the sources given (a path, ``jq:`` or
``annotation:``). Literal ``examples`` can be given beside them.
"""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from pydantic import BaseModel, Field, WithJsonSchema

from traceproof.errors import ErrorCode, TraceproofError
from traceproof.experiments import datasets as domain
from traceproof.experiments.datasets import DatasetError, Example, Source, SplitRule
from traceproof.storage import SPAN_COLUMNS, Store
from traceproof.storage import datasets as storage
from traceproof.storage.datasets import DatasetWrite
from traceproof.tools.common import (
    Cursor,
    JsonValue,
    MaxChars,
    ToolFailure,
    UtcTime,
    budget,
    decode_cursor,
    encode_cursor,
    size,
)
from traceproof.tools.filters import SPANS_WITH_TRACE, FilterRef, SpanFilter, where_errors
from traceproof.tools.jqtool import span_document
from traceproof.tools.paging import largest_fit, next_call
from traceproof.tools.spandoc import SELECT_COLUMNS

#: Example ids listed in a change's answer.
IDS_SHOWN = 10
#: Rows fetched for one page of get_dataset or list_datasets (then fitted to the budget).
PAGE_ROWS = 200
#: Most spans one call turns into examples (newest first; a note says when more match).
SPANS_PER_CALL = 1000
#: Fewest characters of one value (input, expected, metadata) in a get_dataset row; a value
#: may use an eighth of the budget (2,500 of the default 20,000).
VALUE_CHARS_MIN = 200

DatasetParam = Annotated[str, Field(description="Name or id")]
IdsParam = Annotated[list[str] | None, Field(description="Span ids")]
SourcesParam = Annotated[
    dict[str, str] | None,
    Field(description="input=input.value, expected, metadata keys: path|jq:P|annotation:N.field"),
]
ExamplesParam = Annotated[
    list[dict[str, Any]] | None,
    WithJsonSchema({"type": "array"}),
    Field(description="{input, expected?, metadata?, split?}"),
]
#: What add_examples says of the parameters create_dataset describes.
AS_CREATE = "As create_dataset"
SplitParam = Annotated[str | None, Field(description="Name or hash:train=0.8,test=0.2")]


class DatasetChange(BaseModel):
    dataset: str
    id: str
    version: int = Field(description="The version this change made (or the newest, unchanged).")
    examples: int = Field(description="Examples in that version.")
    added: int
    duplicates: int = Field(description="Same content as an example present: not added.")
    removed: int = 0
    skipped: int = Field(default=0, description="Spans whose input source gave no value.")
    example_ids: list[str] = Field(default_factory=list, description="A few added ids.")
    note: str | None = None


def create_dataset(
    store: Store,
    *,
    name: Annotated[str, Field(min_length=1)],
    ids: IdsParam = None,
    where: FilterRef = None,
    sources: SourcesParam = None,
    examples: ExamplesParam = None,
    split: SplitParam = None,
    max_chars: MaxChars = None,
) -> DatasetChange:
    """Make a dataset from spans (ids, or where as in search_spans) and/or literal examples."""
    chosen, skipped, note = _examples(store, ids, where, sources, examples, split)
    projects = {e.source_project for e in chosen if e.source_project}
    written = _write(
        lambda: storage.create_dataset(
            store,
            name,
            [c.example for c in chosen],
            project=projects.pop() if len(projects) == 1 else None,
        )
    )
    return _answer(written, skipped, note, budget(max_chars, store.settings))


def add_examples(
    store: Store,
    *,
    dataset: DatasetParam,
    ids: IdsParam = None,
    where: FilterRef = None,
    sources: Annotated[dict[str, str] | None, Field(description=AS_CREATE)] = None,
    examples: Annotated[
        list[dict[str, Any]] | None, WithJsonSchema({"type": "array"}), Field(description=AS_CREATE)
    ] = None,
    split: Annotated[str | None, Field(description=AS_CREATE)] = None,
    remove: Annotated[list[str] | None, Field(description="Example ids")] = None,
    max_chars: MaxChars = None,
) -> DatasetChange:
    """Add (as create_dataset; where as in search_spans) or remove examples"""
    with store.reader() as reader:
        found = _resolve(reader, dataset)
    chosen, skipped, note = _examples(store, ids, where, sources, examples, split)
    if not chosen and not remove and not skipped:
        raise ToolFailure(
            f"Nothing to add or remove{': ' + note.rstrip('.') if note else ''}. Pass "
            "examples, span ids or a where that matches spans to add, or remove example ids "
            "(get_dataset lists them).",
            code=ErrorCode.INVALID_ARGUMENT,
        )
    written = _write(
        lambda: storage.add_examples(
            store, found["id"], [c.example for c in chosen], remove=remove or ()
        )
    )
    return _answer(written, skipped, note, budget(max_chars, store.settings))


# -- list and read ------------------------------------------------------------------------------


class DatasetRow(BaseModel):
    name: str
    id: str
    version: int = Field(description="Newest.")
    versions: int
    examples: int = Field(description="In the newest version.")
    project: str | None = None
    description: str | None = None
    updated_at: UtcTime


class DatasetList(BaseModel):
    datasets: list[DatasetRow]
    total: int
    truncated: bool
    next_cursor: str | None = None
    next_call: str | None = None


def list_datasets(
    store: Store, *, cursor: Cursor = None, max_chars: MaxChars = None
) -> DatasetList:
    """Datasets, most recently changed first: versions and examples of each."""
    room = budget(max_chars, store.settings)
    offset = _offset(cursor, "list_datasets", "") if cursor else 0
    with store.reader() as reader:
        total = storage.count_datasets(reader)
        rows = storage.list_datasets(reader, offset=offset, limit=PAGE_ROWS)
    items = [
        DatasetRow(
            name=r["name"],
            id=r["id"],
            version=r["version"],
            versions=r["versions"],
            examples=r["examples"],
            project=r["project"],
            description=(r["description"] or "")[:200] or None,
            updated_at=r["updated_at"],
        )
        for r in rows
    ]

    def build(n: int) -> DatasetList:
        more = offset + n < total
        return DatasetList(
            datasets=items[:n],
            total=total,
            truncated=more,
            next_cursor=encode_cursor("list_datasets", "", [offset + n]) if more else None,
            next_call=next_call("list_datasets") if more else None,
        )

    return build(largest_fit(build, len(items), room))


class ExampleRow(BaseModel):
    id: str
    input: JsonValue
    expected: JsonValue = None
    metadata: JsonValue = None
    split: str | None = None
    source_trace_id: str | None = None
    source_span_id: str | None = None


class DatasetPage(BaseModel):
    dataset: str
    id: str
    version: int = Field(description="The version shown.")
    newest: int = Field(description="Newest version.")
    examples: int = Field(description="In this version (and split).")
    splits: dict[str, int] = Field(default_factory=dict, description="Examples per split.")
    rows: list[ExampleRow]
    clipped: int = Field(default=0, description="Values cut short (marked '…[clipped').")
    truncated: bool
    next_cursor: str | None = None
    next_call: str | None = None


def get_dataset(
    store: Store,
    *,
    dataset: DatasetParam,
    version: Annotated[int | None, Field(ge=1, description="Default newest.")] = None,
    split: Annotated[str | None, Field(description="Only this split.")] = None,
    cursor: Cursor = None,
    max_chars: MaxChars = None,
) -> DatasetPage:
    """A dataset version's examples, paged: ids, inputs, expected outputs, splits."""
    room = budget(max_chars, store.settings)
    with store.reader() as reader:
        found = _resolve(reader, dataset)
        fingerprint = f"{found['id']}\x1f{split or ''}\x1f{version or ''}"
        offset = 0
        if cursor:
            at, offset = _key(cursor, fingerprint)
            version = at
        try:
            splits = storage.split_counts(reader, found["id"], version)
            rows = storage.dataset_examples(
                reader, found["id"], version, split, offset=offset, limit=PAGE_ROWS
            )
        except TraceproofError as exc:
            raise ToolFailure(exc.message, code=exc.code) from None
    shown_version = version or found["version"]
    count = splits.get(split, 0) if split is not None else sum(splits.values())
    cap = max(VALUE_CHARS_MIN, room // 8)
    cuts: list[int] = []
    items: list[ExampleRow] = []
    for row in rows:
        values: dict[str, Any] = {}
        cut = 0
        for key in ("input", "expected", "metadata"):
            values[key], one = _clip(row[key], cap, key, found["id"], row["id"])
            cut += one
        cuts.append(cut)
        items.append(
            ExampleRow(
                id=row["id"],
                split=row["split"],
                source_trace_id=row["source_trace_id"],
                source_span_id=row["source_span_id"],
                **values,
            )
        )
    shown_splits = {k or "(none)": v for k, v in list(splits.items())[:50]}

    def build(n: int) -> DatasetPage:
        more = offset + n < count
        return DatasetPage(
            dataset=found["name"],
            id=found["id"],
            version=shown_version,
            newest=found["version"],
            examples=count,
            splits=shown_splits if len(shown_splits) > 1 or split is None else {},
            rows=items[:n],
            clipped=sum(cuts[:n]),
            truncated=more,
            next_cursor=(
                encode_cursor("get_dataset", fingerprint, [shown_version, offset + n])
                if more
                else None
            ),
            next_call=next_call("get_dataset") if more else None,
        )

    return build(largest_fit(build, len(items), room))


# -- helpers ------------------------------------------------------------------------------------


class _Chosen:
    __slots__ = ("example", "source_project")

    def __init__(self, example: Example, source_project: str | None) -> None:
        self.example = example
        self.source_project = source_project


def _failure(exc: TraceproofError) -> ToolFailure:
    return ToolFailure(exc.message, code=exc.code)


def _resolve(reader: Any, dataset: str) -> dict[str, Any]:
    try:
        return storage.resolve_dataset(reader, dataset)
    except TraceproofError as exc:
        raise _failure(exc) from None


def _write(run: Any) -> DatasetWrite:
    try:
        written: DatasetWrite = run()
    except (storage.DatasetExists, DatasetError) as exc:
        raise _failure(exc) from None
    except TraceproofError as exc:
        if exc.code is ErrorCode.NOT_FOUND:
            raise _failure(exc) from None
        raise
    return written


def _answer(written: DatasetWrite, skipped: int, note: str | None, room: int) -> DatasetChange:
    notes = [note] if note else []
    if not written.changed:
        notes.append(f"Nothing new: still version {written.version}.")
    answer = DatasetChange(
        dataset=written.name,
        id=written.id,
        version=written.version,
        examples=written.examples,
        added=written.added,
        duplicates=written.duplicates,
        removed=written.removed,
        skipped=skipped,
        example_ids=written.added_ids[:IDS_SHOWN],
        note=" ".join(notes) or None,
    )
    while size(answer) > room and answer.example_ids:
        answer.example_ids.pop()
    return answer


def parse_source(text: str, what: str) -> Source:
    try:
        source = Source.parse(text)
    except DatasetError as exc:
        raise _failure(exc) from None
    if (
        source.kind == "path"
        and len(source.segments) == 1
        and source.segments[0] not in (SPAN_COLUMNS)
    ):
        raise ToolFailure(
            f"{what}={text[:100]!r} is not a span column or a dotted path. Use input.value, "
            "output.value, a column (model, name…), attributes.<path>, jq:PROGRAM or "
            "annotation:NAME.",
            code=ErrorCode.INVALID_ARGUMENT,
        )
    return source


def _examples(
    store: Store,
    ids: list[str] | None,
    where: str | None,
    sources: dict[str, str] | None,
    examples: list[dict[str, Any]] | None,
    split: str | None,
) -> tuple[list[_Chosen], int, str | None]:
    """The examples a call gives (from spans, then literal ones), their split set; the spans
    skipped (no input) and a note."""
    given = dict(sources or {})
    input = given.pop("input", "input.value")
    expected = given.pop("expected", None)
    metadata = given
    try:
        rule = SplitRule.parse(split) if split else None
        literal = [domain.example_from(item) for item in examples or []]
    except DatasetError as exc:
        raise _failure(exc) from None
    chosen: list[_Chosen] = []
    skipped = 0
    note = None
    flt = SpanFilter(where=where)
    if ids is not None or where is not None:
        parsed: dict[str, Source | None] = {
            "input": parse_source(input, "input"),
            "expected": parse_source(expected, "expected") if expected else None,
        }
        meta = {k: parse_source(v, f"metadata.{k}") for k, v in (metadata or {}).items()}
        rows, matched = choose_spans(store, ids, flt, SPANS_PER_CALL)
        if not rows:
            note = "No span matches where. Check it with search_spans."
        elif matched > len(rows):
            note = (
                f"{matched} spans match; the newest {len(rows)} were used. For the rest, call "
                f"add_examples with where narrowed to earlier ones (start_time < "
                f"'{rows[-1]['start_time'].isoformat()}')."
            )
        documents = [span_document(row) for row in rows]
        names = domain.annotation_names([*parsed.values(), *meta.values()])
        annotations = {}
        if names:
            with store.reader() as reader:
                keys = [(d["trace_id"], d["span_id"]) for d in documents]
                annotations = storage.span_annotations(reader, names, keys)
        settings = store.settings
        try:
            got = domain.extract(
                documents,
                input=parse_source(input, "input"),
                expected=parsed["expected"],
                metadata=meta,
                annotations=annotations,
                jq=domain.jq_runner(settings.jq_workers, settings.sql_timeout_seconds),
            )
        except DatasetError as exc:
            raise _failure(exc) from None
        by_span = {(d["trace_id"], d["span_id"]): d["project"] for d in documents}
        for example in got.examples:
            key = (example.source_trace_id, example.source_span_id)
            chosen.append(_Chosen(example, by_span.get(key)))
        skipped = got.skipped
        note = " ".join([*([note] if note else []), *got.notes]) or None
    elif sources:
        raise ToolFailure(
            "sources read spans: choose them with ids or where (e.g. \"project = 'demo' and "
            "span_kind = 'LLM'\"), or give literal examples without sources.",
            code=ErrorCode.INVALID_ARGUMENT,
        )
    chosen.extend(_Chosen(e, None) for e in literal)
    if rule is not None:
        rule.apply(c.example for c in chosen)
    return chosen, skipped, note


def choose_spans(
    store: Store, ids: list[str] | None, flt: SpanFilter, limit: int
) -> tuple[list[dict[str, Any]], int]:
    with store.reader() as reader:
        if ids is not None:
            wanted = list(dict.fromkeys(ids))
            if len(wanted) > limit:
                raise ToolFailure(
                    f"{len(wanted)} span ids is more than the {limit} one call reads. Split them "
                    "over several calls (add_examples).",
                    code=ErrorCode.INVALID_ARGUMENT,
                )
            cond = "spans.span_id IN (SELECT unnest(string_split(?, chr(31))))"
            params: list[Any] = ["\x1f".join(wanted)]
            if flt.project is not None:
                cond, params = cond + " AND spans.project = ?", [*params, flt.project]
            rows = reader.dicts(
                f"SELECT {SELECT_COLUMNS} FROM {SPANS_WITH_TRACE} WHERE {cond}", params
            )
            have = {r["span_id"] for r in rows}
            missing = [i for i in wanted if i not in have]
            if missing:
                shown = ", ".join(repr(m[:80]) for m in missing[:5])
                raise ToolFailure(
                    f"No span {shown}{' and more' if len(missing) > 5 else ''} in the store; "
                    "nothing was written. Pass stored span ids (search_spans lists them), or "
                    "choose spans with filters.",
                    code=ErrorCode.UNKNOWN_SPAN,
                )
            order = {span_id: n for n, span_id in enumerate(wanted)}
            rows.sort(key=lambda r: order[r["span_id"]])
            return rows, len(rows)
        cond, params = flt.sql("spans.")
        with where_errors(flt.where):
            matched = reader.rows(
                f"SELECT count(*) FROM {SPANS_WITH_TRACE} WHERE {cond}",
                params,
                untrusted=flt.untrusted,
            )[0][0]
            rows = reader.dicts(
                f"SELECT {SELECT_COLUMNS} FROM {SPANS_WITH_TRACE} WHERE {cond} "
                f"ORDER BY start_time DESC, span_id LIMIT {int(limit)}",
                params,
                untrusted=flt.untrusted,
            )
    return rows, int(matched or 0)


def _offset(cursor: str, tool: str, fingerprint: str) -> int:
    key = decode_cursor(cursor, tool, fingerprint)
    if len(key) != 1 or not isinstance(key[0], int) or key[0] < 0:
        raise ToolFailure(
            "The cursor is not a next_cursor of this call. Omit cursor to start again.",
            code=ErrorCode.INVALID_CURSOR,
        )
    return key[0]


def _key(cursor: str, fingerprint: str) -> tuple[int, int]:
    key = decode_cursor(cursor, "get_dataset", fingerprint)
    if len(key) != 2 or not all(isinstance(k, int) and k >= 0 for k in key):
        raise ToolFailure(
            "The cursor is not a next_cursor of this call. Omit cursor to start again.",
            code=ErrorCode.INVALID_CURSOR,
        )
    return int(key[0] or 0), int(key[1] or 0)


def _clip(value: Any, cap: int, column: str, dataset_id: str, example: str) -> tuple[Any, int]:
    """A value whose compact JSON passes ``cap`` characters, as the start of that JSON text
    with the marker giving the sql that reads on."""
    if value is None:
        return None, 0
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    if size(value) <= cap:
        return value, 0
    kept = text[:cap]
    # The stored JSON text: a string's own characters (->>'$'), else the JSON as written.
    stored = f"{column}->>'$'" if isinstance(value, str) else f"{column}::VARCHAR"
    marker = (
        f"…[clipped: {len(text) - cap:,} of {len(text):,} chars. Read on with sql: SELECT "
        f"substr({stored}, {cap + 1}, 10000) FROM dataset_examples WHERE dataset_id = "
        f"'{dataset_id}' AND example_id = '{example}']"
    )
    return kept + marker, 1
