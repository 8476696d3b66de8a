"""Datasets: create, add and remove examples, read any version (migration 3's tables).

Versions are append-only. Every change (an add, a removal, or both at once) makes the next
version; a version ``v`` holds the example rows with ``added_version <= v`` and
``removed_version`` NULL or above ``v``, so an old version reads as it was. An example is
present in the newest version while its row's ``removed_version`` is NULL; adding an example
whose id (its content hash) is present is a duplicate, counted and not stored again; adding one
that was removed stores a new row. A change that changes nothing makes no version.

Every write runs on the store's single writer (:meth:`Store.run_write`): one transaction, all or
nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import duckdb
import orjson
import pyarrow as pa

from traceproof.errors import ErrorCode, TraceproofError
from traceproof.experiments.datasets import Example
from traceproof.storage.exceptions import NotFound
from traceproof.storage.reader import Reader

if TYPE_CHECKING:
    from traceproof.storage.store import Store

#: Ids go in as one text joined by the unit separator.
_IDS = "(SELECT unnest(string_split(?, chr(31))))"
#: Names listed in a ``[not_found]`` message.
_NAMES_SHOWN = 10


class DatasetExists(TraceproofError):
    code = ErrorCode.INVALID_ARGUMENT


@dataclass
class DatasetWrite:
    """What one change did, once committed."""

    id: str
    name: str
    version: int
    examples: int  # in ``version``
    added: int = 0
    duplicates: int = 0
    removed: int = 0
    changed: bool = True  # False: nothing new, no version was made
    added_ids: list[str] = field(default_factory=list)


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def create_dataset(
    store: Store,
    name: str,
    examples: Sequence[Example] = (),
    *,
    project: str | None = None,
    description: str | None = None,
    note: str | None = None,
) -> DatasetWrite:
    """A new dataset ``name`` whose version 1 holds ``examples`` (duplicates dropped). A name
    that exists raises :class:`DatasetExists`."""
    if not name.strip() or len(name) > 200:
        raise TraceproofError(
            "A dataset name is 1-200 characters. Choose another name.",
            code=ErrorCode.INVALID_ARGUMENT,
        )

    def run(cursor: duckdb.DuckDBPyConnection) -> DatasetWrite:
        found = cursor.execute("SELECT id FROM datasets WHERE name = ?", [name]).fetchone()
        if found is not None:
            raise DatasetExists(
                f"A dataset named {name[:200]!r} exists ({found[0]}). Add to it with "
                "add_examples, or choose another name."
            )
        dataset_id = "ds_" + uuid.uuid4().hex[:12]
        now = _now()
        cursor.execute(
            "INSERT INTO datasets VALUES (?, ?, ?, ?, ?, ?)",
            [dataset_id, name, project, description, now, now],
        )
        return _change(cursor, dataset_id, name, 0, 0, examples, (), note, now, first=True)

    return store.run_write(run)


def add_examples(
    store: Store,
    dataset_id: str,
    examples: Sequence[Example] = (),
    *,
    remove: Sequence[str] = (),
    note: str | None = None,
) -> DatasetWrite:
    """Add ``examples`` and remove the examples ``remove`` names from the newest version: the
    next version. An id in ``remove`` that is not in the newest version raises ``not_found``
    (nothing changes)."""

    def run(cursor: duckdb.DuckDBPyConnection) -> DatasetWrite:
        found = cursor.execute(
            "SELECT d.name, v.version, v.examples FROM datasets d JOIN dataset_versions v "
            "ON v.dataset_id = d.id WHERE d.id = ? ORDER BY v.version DESC LIMIT 1",
            [dataset_id],
        ).fetchone()
        if found is None:
            raise NotFound(f"No dataset {dataset_id!r}. Call list_datasets for their names.")
        name, version, count = found
        return _change(cursor, dataset_id, name, version, count, examples, remove, note, _now())

    return store.run_write(run)


def _present(cursor: duckdb.DuckDBPyConnection, dataset_id: str, ids: Iterable[str]) -> set[str]:
    """Which of ``ids`` are in the dataset's newest version."""
    return {
        row[0]
        for row in cursor.execute(
            "SELECT example_id FROM dataset_examples WHERE dataset_id = ? AND "
            f"removed_version IS NULL AND example_id IN {_IDS}",
            [dataset_id, "\x1f".join(ids)],
        ).fetchall()
    }


def _change(
    cursor: duckdb.DuckDBPyConnection,
    dataset_id: str,
    name: str,
    version: int,
    count: int,
    examples: Sequence[Example],
    remove: Sequence[str],
    note: str | None,
    now: datetime,
    *,
    first: bool = False,
) -> DatasetWrite:
    new = version + 1
    unique: dict[str, Example] = {}
    for example in examples:
        unique.setdefault(example.id, example)
    present = _present(cursor, dataset_id, unique) if unique and not first else set()
    fresh = [e for e in unique.values() if e.id not in present]
    gone = list(dict.fromkeys(remove))
    if gone:
        stored = _present(cursor, dataset_id, gone)
        missing = [i for i in gone if i not in stored]
        if missing:
            shown = ", ".join(repr(i[:40]) for i in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise NotFound(
                f"No example {shown}{more} in the newest version ({version}) of dataset "
                f"{name!r}; nothing changed. Call get_dataset for its example ids."
            )
    result = DatasetWrite(
        id=dataset_id,
        name=name,
        version=version,
        examples=count,
        added=len(fresh),
        duplicates=len(examples) - len(fresh),
        removed=len(gone),
        added_ids=[e.id for e in fresh],
    )
    if not first and not fresh and not gone:
        result.changed = False
        return result
    if gone:
        cursor.execute(
            f"UPDATE dataset_examples SET removed_version = ? WHERE dataset_id = ? AND "
            f"removed_version IS NULL AND example_id IN {_IDS}",
            [new, dataset_id, "\x1f".join(gone)],
        )
    if fresh:
        table = pa.table(
            {
                "example_id": pa.array([e.id for e in fresh], pa.string()),
                "input": pa.array([_json(e.input) for e in fresh], pa.string()),
                "expected": pa.array([_json(e.expected) for e in fresh], pa.string()),
                "metadata": pa.array([_json(e.metadata) for e in fresh], pa.string()),
                "split": pa.array([e.split for e in fresh], pa.string()),
                "source_trace_id": pa.array([e.source_trace_id for e in fresh], pa.string()),
                "source_span_id": pa.array([e.source_span_id for e in fresh], pa.string()),
                "position": pa.array(range(len(fresh)), pa.int64()),
            }
        )
        cursor.register("new_examples", table)
        try:
            cursor.execute(
                "INSERT INTO dataset_examples SELECT ?, example_id, ?, NULL, input::JSON, "
                "expected::JSON, metadata::JSON, split, source_trace_id, source_span_id "
                "FROM new_examples ORDER BY position",
                [dataset_id, new],
            )
        finally:
            cursor.unregister("new_examples")
    result.version = new
    result.examples = count + len(fresh) - len(gone)
    cursor.execute(
        "INSERT INTO dataset_versions VALUES (?, ?, ?, ?, ?, ?, ?)",
        [dataset_id, new, result.examples, len(fresh), len(gone), note, now],
    )
    cursor.execute("UPDATE datasets SET updated_at = ? WHERE id = ?", [now, dataset_id])
    return result


# -- reads --------------------------------------------------------------------------------------

_DATASET = """
SELECT d.id, d.name, d.project, d.description, d.created_at, d.updated_at,
    v.version, v.examples, (SELECT count(*) FROM dataset_versions w WHERE w.dataset_id = d.id)
        AS versions
FROM datasets d
JOIN dataset_versions v ON v.dataset_id = d.id
    AND v.version = (SELECT max(version) FROM dataset_versions w WHERE w.dataset_id = d.id)
"""


def resolve_dataset(reader: Reader, name_or_id: str) -> dict[str, Any]:
    """The dataset named ``name_or_id`` (or with that id): id, name, project, description,
    created_at, updated_at, version (the newest), examples (in it), versions. Else
    ``[not_found]`` listing known names."""
    rows = reader.dicts(f"{_DATASET} WHERE d.name = ? OR d.id = ?", [name_or_id, name_or_id])
    if rows:
        return sorted(rows, key=lambda r: r["name"] != name_or_id)[0]
    names = [r[0] for r in reader.rows(f"SELECT name FROM datasets ORDER BY name LIMIT {11}")]
    known = ", ".join(repr(n[:60]) for n in names[:_NAMES_SHOWN]) or "none yet"
    if len(names) > _NAMES_SHOWN:
        known += " and more"
    raise NotFound(
        f"No dataset {name_or_id[:200]!r}. Known datasets: {known}. Call list_datasets, or "
        "create_dataset to make one."
    )


def list_datasets(reader: Reader, *, offset: int = 0, limit: int = 100) -> list[dict[str, Any]]:
    """Datasets as :func:`resolve_dataset` gives them, most recently updated first."""
    return reader.dicts(
        f"{_DATASET} ORDER BY d.updated_at DESC, d.name LIMIT ? OFFSET ?", [limit, offset]
    )


def count_datasets(reader: Reader) -> int:
    return int(reader.scalar("SELECT count(*) FROM datasets") or 0)


def _in_version(version: int) -> tuple[str, list[Any]]:
    return (
        "added_version <= ? AND (removed_version IS NULL OR removed_version > ?)",
        [version, version],
    )


def dataset_version(reader: Reader, dataset_id: str, version: int | None = None) -> int:
    """``version`` checked against the dataset's (None: its newest). ``[not_found]`` when the
    dataset or the version does not exist."""
    newest = reader.scalar(
        "SELECT max(version) FROM dataset_versions WHERE dataset_id = ?", [dataset_id]
    )
    if newest is None:
        raise NotFound(f"No dataset {dataset_id!r}. Call list_datasets for their names.")
    if version is None:
        return int(newest)
    if not 1 <= version <= newest:
        raise NotFound(
            f"Dataset {dataset_id!r} has versions 1 to {newest}, not {version}. Pass one of "
            "them, or omit version for the newest."
        )
    return version


def dataset_examples(
    reader: Reader,
    dataset_id: str,
    version: int | None = None,
    split: str | None = None,
    offset: int = 0,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """The examples of a version (None: the newest), of one split when given, in a stable
    order (the version that added them, then the id): dicts of ``id``, ``input``,
    ``expected``, ``metadata`` (parsed JSON), ``split``, ``source_trace_id``,
    ``source_span_id``, ``added_version``."""
    version = dataset_version(reader, dataset_id, version)
    cond, params = _in_version(version)
    if split is not None:
        cond, params = cond + " AND split = ?", [*params, split]
    page = "" if limit is None else f" LIMIT {int(limit)}"
    rows = reader.dicts(
        "SELECT example_id AS id, input::VARCHAR AS input, expected::VARCHAR AS expected, "
        "metadata::VARCHAR AS metadata, split, source_trace_id, source_span_id, added_version "
        f"FROM dataset_examples WHERE dataset_id = ? AND {cond} "
        f"ORDER BY added_version, example_id{page} OFFSET {int(offset)}",
        [dataset_id, *params],
    )
    for row in rows:
        for key in ("input", "expected", "metadata"):
            row[key] = None if row[key] is None else orjson.loads(row[key])
    return rows


def split_counts(reader: Reader, dataset_id: str, version: int | None = None) -> dict[str, int]:
    """Examples per split in a version (``""``: those without a split)."""
    version = dataset_version(reader, dataset_id, version)
    cond, params = _in_version(version)
    rows = reader.rows(
        f"SELECT coalesce(split, ''), count(*) FROM dataset_examples WHERE dataset_id = ? AND "
        f"{cond} GROUP BY ALL ORDER BY 1",
        [dataset_id, *params],
    )
    return {str(name): int(n) for name, n in rows}


def span_annotations(
    reader: Reader, names: Sequence[str], keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str, str], dict[str, Any]]:
    """For each annotation name and (trace id, span id): the span's current annotation (a
    person's newest first, else the newest of any annotator), else its trace's. Values:
    ``label``, ``score``, ``explanation``, ``metadata`` (parsed)."""
    if not names or not keys:
        return {}
    query = """
        SELECT k.trace_id, k.span_id, a.name,
            arg_max(struct_pack(label := a.label, score := a.score,
                explanation := a.explanation, metadata := a.metadata::VARCHAR),
                (a.target_kind = 'span', a.annotator_kind = 'HUMAN', a.updated_at)) AS value
        FROM (SELECT unnest(string_split(?, chr(31))) AS trace_id,
            unnest(string_split(?, chr(31))) AS span_id) k
        JOIN annotations a ON a.trace_id = k.trace_id
            AND a.name IN (SELECT unnest(string_split(?, chr(31))))
            AND ((a.target_kind = 'span' AND a.span_id = k.span_id) OR a.target_kind = 'trace')
        GROUP BY ALL
    """
    params = ["\x1f".join(k[0] for k in keys), "\x1f".join(k[1] for k in keys), "\x1f".join(names)]
    rows = reader.rows(query, params)
    found: dict[tuple[str, str, str], dict[str, Any]] = {}
    for trace_id, span_id, name, packed in rows:
        value = dict(packed)
        if value.get("metadata") is not None:
            value["metadata"] = orjson.loads(value["metadata"])
        found[(name, trace_id, span_id)] = value
    return found
