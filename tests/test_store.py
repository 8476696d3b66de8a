"""The store: migrations, dedup, order-independent trace rows, persistence, readers, locking."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import traceproof.storage.connection as connection_module
from tests.conftest import wait_until
from traceproof.ingest.normalize import SpanRows
from traceproof.settings import Settings
from traceproof.storage import SPAN_SCHEMA, Busy, Store, StoreClosed, StoreError, StoreLocked
from traceproof.storage.schema import MIGRATIONS, Migration

T0 = datetime(2026, 3, 1, 12, 0, 0)


@dataclass(frozen=True)
class S:
    """One span, as the tests think of it: times in milliseconds after ``T0``."""

    span_id: str
    parent: str | None
    name: str
    start_ms: int
    end_ms: int
    kind: str = "CHAIN"
    status: str = "OK"
    session: str | None = None
    user: str | None = None
    prompt: int | None = None
    completion: int | None = None
    input: str | None = None
    output: str | None = None
    trace_id: str = "trace-0"
    project: str = "p"

    @property
    def start(self) -> datetime:
        return T0 + timedelta(milliseconds=self.start_ms)

    @property
    def end(self) -> datetime:
        return T0 + timedelta(milliseconds=self.end_ms)


def table(spans: list[S]) -> pa.Table:
    """The spans as the Arrow batch ingest hands to the store."""
    rows = SpanRows()
    epoch = datetime(1970, 1, 1)
    for s in spans:
        attributes: dict[str, Any] = {"openinference.span.kind": s.kind}
        optional = {
            "session.id": s.session,
            "user.id": s.user,
            "llm.token_count.prompt": s.prompt,
            "llm.token_count.completion": s.completion,
            "input.value": s.input,
            "output.value": s.output,
        }
        attributes |= {k: v for k, v in optional.items() if v is not None}
        rows.add(
            project=s.project,
            trace_id=s.trace_id,
            span_id=s.span_id,
            parent_span_id=s.parent,
            name=s.name,
            start_ns=(s.start - epoch) // timedelta(microseconds=1) * 1000,
            end_ns=(s.end - epoch) // timedelta(microseconds=1) * 1000,
            status=s.status,
            status_message="failed" if s.status == "ERROR" else None,
            attributes=attributes,
        )
    return rows.table()


# One agent trace. The clock of one child is skewed: it starts before its root. Two spans start
# at the same instant, so ties are broken by span id.
TRACE = [
    S("a0", None, "agent", 0, 5000, "AGENT", session="sess-9", user="user-3", input="hi",
      output="bye"),
    S("c1", "a0", "plan", 10, 900, session="sess-9"),
    S("l1", "c1", "ChatCompletion", 20, 800, "LLM", prompt=100, completion=20),
    S("t1", "a0", "lookup_order", 900, 1900, "TOOL", status="ERROR"),
    S("t2", "a0", "lookup_order", 900, 1500, "TOOL"),
    S("l2", "a0", "ChatCompletion", 2000, 4000, "LLM", prompt=300, completion=45),
    S("r1", "a0", "search_kb", 4100, 6200, "RETRIEVER", status="ERROR"),
    S("k1", "a0", "skewed_child", -30, 40, "CHAIN"),
]  # fmt: skip


def expected_trace_row(spans: list[S]) -> dict[str, Any]:
    """The ``traces`` row worked out by hand from the rules in the schema docs."""
    roots = sorted((s for s in spans if s.parent is None), key=lambda s: (s.start, s.span_id))
    first = min(spans, key=lambda s: (s.start, s.span_id))
    root = roots[0] if roots else None
    start = min(s.start for s in spans)
    end = max(s.end for s in spans)
    llm = [s for s in spans if s.kind == "LLM"]
    prompt = sum(s.prompt or 0 for s in llm)
    completion = sum(s.completion or 0 for s in llm)
    errors = sum(s.status == "ERROR" for s in spans)
    return {
        "name": root.name if root else first.name,
        "root_span_id": root.span_id if root else None,
        "has_root": root is not None,
        "span_kind": root.kind if root else "UNKNOWN",
        "status": "ERROR" if errors else "OK",
        "start_time": start,
        "end_time": end,
        "latency_ms": (end - start) / timedelta(milliseconds=1),
        "span_count": len(spans),
        "error_count": errors,
        "llm_span_count": len(llm),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "session_id": min((s.session for s in spans if s.session), default=None),
        "user_id": min((s.user for s in spans if s.user), default=None),
        "input_preview": root.input if root else None,
        "output_preview": root.output if root else None,
    }


TRACE_COLUMNS = ", ".join(expected_trace_row(TRACE))


def trace_row(store: Store, trace_id: str) -> dict[str, Any]:
    with store.reader() as reader:
        rows = reader.dicts(f"SELECT {TRACE_COLUMNS} FROM traces WHERE trace_id = ?", [trace_id])
    assert len(rows) == 1, rows
    return rows[0]


def test_migrations_are_numbered_and_recorded_once(settings: Settings) -> None:
    with Store.open(settings.db, settings) as store, store.reader() as reader:
        first = reader.rows("SELECT version, name, applied_at FROM schema_migrations")
        tables = {r[0] for r in reader.rows("SELECT table_name FROM information_schema.tables")}
    assert [(v, n) for v, n, _ in first] == [(m.version, m.name) for m in MIGRATIONS]
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert {"projects", "spans", "trace_index", "traces", "sessions"} <= tables

    with Store.open(settings.db, settings) as store, store.reader() as reader:
        again = reader.rows("SELECT version, name, applied_at FROM schema_migrations")
    assert again == first  # same rows, same applied_at: nothing re-applied


def test_reopening_an_older_store_applies_only_the_new_migration(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Store.open(settings.db, settings) as store:
        store.write(table(TRACE[:2]))
        with store.reader() as reader:
            before = reader.rows("SELECT version, applied_at FROM schema_migrations")
    newer = Migration(len(MIGRATIONS) + 1, "a test column", "ALTER TABLE spans ADD COLUMN x INT")
    monkeypatch.setattr(connection_module, "MIGRATIONS", (*MIGRATIONS, newer))
    with Store.open(settings.db, settings) as store, store.reader() as reader:
        after = reader.rows("SELECT version, applied_at FROM schema_migrations ORDER BY version")
        spans = reader.rows("SELECT span_id, x FROM spans ORDER BY span_id")
    assert after[:-1] == before
    assert after[-1][0] == newer.version
    assert spans == [("a0", None), ("c1", None)]


def test_a_resent_span_is_stored_once(store: Store) -> None:
    first = store.write(table(TRACE))
    again = store.write(table(TRACE))
    partly = store.write(table([*TRACE[:3], replace(TRACE[0], span_id="new")]))
    assert (first.received, first.added) == (len(TRACE), len(TRACE))
    assert (again.received, again.added, again.duplicates) == (len(TRACE), 0, len(TRACE))
    assert (partly.received, partly.added) == (4, 1)
    with store.reader() as reader:
        assert reader.scalar("SELECT count(*) FROM spans") == len(TRACE) + 1
    assert trace_row(store, "trace-0")["span_count"] == len(TRACE) + 1


def test_a_span_repeated_inside_one_batch_keeps_its_first_copy(store: Store) -> None:
    result = store.write(table([TRACE[0], replace(TRACE[0], name="second copy")]))
    assert (result.received, result.added) == (2, 1)
    with store.reader() as reader:
        assert reader.rows("SELECT name FROM spans") == [("agent",)]
    assert trace_row(store, "trace-0")["span_count"] == 1


def test_trace_row_matches_hand_computed_values(store: Store) -> None:
    store.write(table(TRACE))
    assert trace_row(store, "trace-0") == expected_trace_row(TRACE)
    # The values the rules above produce, spelled out once.
    row = trace_row(store, "trace-0")
    assert row["name"] == "agent"
    assert row["start_time"] == T0 - timedelta(milliseconds=30)
    assert row["latency_ms"] == 6230.0
    assert (row["span_count"], row["error_count"], row["llm_span_count"]) == (8, 2, 2)
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (400, 65, 465)
    assert (row["session_id"], row["user_id"]) == ("sess-9", "user-3")


def _splits(spans: list[S], rng: random.Random) -> list[list[S]]:
    shuffled = spans[:]
    rng.shuffle(shuffled)
    cuts = sorted(rng.sample(range(1, len(shuffled)), rng.randint(0, len(shuffled) - 1)))
    batches = [shuffled[i:j] for i, j in zip([0, *cuts], [*cuts, len(shuffled)], strict=True)]
    # Resend a few spans in a later batch, as an exporter retrying would.
    batches.append(rng.sample(spans, rng.randint(0, 3)))
    return [b for b in batches if b]


def _cases() -> list[tuple[str, list[list[S]], bool]]:
    """(name, batches, write one by one?) for many arrival orders of the same trace."""
    rng = random.Random(1234)
    cases = [
        ("one batch", [TRACE], True),
        ("one span per batch, children first", [[s] for s in reversed(TRACE)], True),
        ("root last, alone", [TRACE[1:], TRACE[:1]], True),
    ]
    for i in range(24):
        cases.append((f"random split {i}", _splits(TRACE, rng), i % 3 == 0))
    return cases


def test_trace_row_is_the_same_whatever_order_and_batching_spans_arrive_in(store: Store) -> None:
    reference = expected_trace_row(TRACE)
    cases = _cases()
    futures = []
    for n, (_, batches, one_by_one) in enumerate(cases):
        for batch in batches:
            spans = [replace(s, trace_id=f"trace-{n}") for s in batch]
            if one_by_one:
                store.write(table(spans))  # each batch its own transaction
            else:
                futures.append(store.submit(table(spans), wait=None))  # grouped by the writer
    for future in futures:
        future.result(timeout=30)
    for n, (name, _, _) in enumerate(cases):
        assert trace_row(store, f"trace-{n}") == reference, name


def test_trace_without_its_root_is_named_by_its_earliest_span(store: Store) -> None:
    # Without the root and the skewed child, the earliest spans are these two, which start at
    # the same instant: the smaller span id wins the tie.
    children = [s for s in TRACE if s.span_id not in ("a0", "k1")]
    tied = [
        replace(TRACE[1], span_id="zz", name="later id", start_ms=5),
        replace(TRACE[1], span_id="bb", name="earlier id", start_ms=5),
    ]
    spans = children + tied
    rng = random.Random(7)
    for attempt in range(5):
        ordered = [replace(s, trace_id=f"rootless-{attempt}") for s in spans]
        rng.shuffle(ordered)
        for i in range(0, len(ordered), 3):
            store.write(table(ordered[i : i + 3]))
        row = trace_row(store, f"rootless-{attempt}")
        assert row == expected_trace_row(spans)
        assert (row["name"], row["has_root"], row["root_span_id"]) == ("earlier id", False, None)
        assert (row["span_kind"], row["input_preview"]) == ("UNKNOWN", None)

    # When the root arrives after all, it names the trace.
    store.write(table([replace(TRACE[0], trace_id="rootless-0")]))
    row = trace_row(store, "rootless-0")
    assert row == expected_trace_row([TRACE[0], *spans])
    assert (row["name"], row["has_root"], row["input_preview"]) == ("agent", True, "hi")


def test_token_totals_count_llm_spans_only(store: Store) -> None:
    # An AGENT span that reports its children's usage must not count it twice.
    spans = [
        S("a", None, "agent", 0, 100, "AGENT", prompt=150, completion=30),
        S("l", "a", "llm", 10, 50, "LLM", prompt=150, completion=30),
    ]
    store.write(table(spans))
    row = trace_row(store, "trace-0")
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (150, 30, 180)


def test_trace_previews_keep_the_first_thousand_characters_of_the_root(store: Store) -> None:
    root = replace(TRACE[0], input="q" * 5000, output="a" * 999)
    child = replace(TRACE[1], input="child input")
    store.write(table([child, root]))
    row = trace_row(store, "trace-0")
    assert (row["input_preview"], row["output_preview"]) == ("q" * 1000, "a" * 999)
    with store.reader() as reader:
        assert reader.scalar("SELECT length(input_value) FROM spans WHERE span_id = 'a0'") == 5000


def test_a_file_that_is_not_a_store_raises_store_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.duckdb"
    path.write_text("these are notes, not a database\n" * 200)
    with pytest.raises(StoreError) as failed:
        Store.open(path)
    assert type(failed.value) is StoreError
    assert str(failed.value).startswith(f"[store_error] Could not open the store {path}")


def test_data_survives_close_and_reopen(settings: Settings) -> None:
    with Store.open(settings.db, settings) as store:
        store.write(table(TRACE))
        with store.reader() as reader:
            spans = reader.dicts("SELECT * FROM spans ORDER BY span_id")
        row = trace_row(store, "trace-0")
    with Store.open(settings.db, settings) as store:
        with store.reader() as reader:
            assert reader.dicts("SELECT * FROM spans ORDER BY span_id") == spans
            assert reader.rows("SELECT name FROM projects") == [("p",)]
        assert trace_row(store, "trace-0") == row
        assert store.write(table(TRACE)).added == 0


def test_close_writes_everything_already_queued(settings: Settings) -> None:
    store = Store.open(settings.db, settings)
    futures = [
        store.submit(table([replace(s, trace_id=f"t{i}") for s in TRACE])) for i in range(20)
    ]
    store.close()
    assert [f.result(timeout=0).added for f in futures] == [len(TRACE)] * 20
    with Store.open(settings.db, settings) as reopened, reopened.reader() as reader:
        assert reader.scalar("SELECT count(*) FROM spans") == 20 * len(TRACE)


def test_sessions_view_sums_the_traces_of_each_session(store: Store) -> None:
    def turn(trace: str, session: str | None, start: int, *, error: bool, user: str) -> list[S]:
        return [
            S("r", None, "agent", start, start + 100, "AGENT", session=session, user=user,
              trace_id=trace),
            S("l", "r", "llm", start + 10, start + 90, "LLM", prompt=10, completion=5,
              status="ERROR" if error else "OK", trace_id=trace),
        ]  # fmt: skip

    store.write(table(turn("t1", "s-a", 0, error=False, user="u-2")))
    store.write(table(turn("t2", "s-a", 1000, error=True, user="u-1")))
    store.write(table(turn("t3", "s-b", 500, error=False, user="u-9")))
    store.write(table(turn("t4", None, 700, error=True, user="u-9")))
    store.write(table([replace(s, project="other") for s in turn("t5", "s-a", 0, error=False,
                                                                  user="u-5")]))  # fmt: skip
    with store.reader() as reader:
        rows = reader.dicts("SELECT * FROM sessions ORDER BY project, session_id")
    assert rows == [
        {
            "project": "other",
            "session_id": "s-a",
            "trace_count": 1,
            "span_count": 2,
            "error_count": 0,
            "total_tokens": 15,
            "start_time": T0,
            "end_time": T0 + timedelta(milliseconds=100),
            "user_id": "u-5",
        },
        {
            "project": "p",
            "session_id": "s-a",
            "trace_count": 2,
            "span_count": 4,
            "error_count": 1,
            "total_tokens": 30,
            "start_time": T0,
            "end_time": T0 + timedelta(milliseconds=1100),
            "user_id": "u-1",
        },
        {
            "project": "p",
            "session_id": "s-b",
            "trace_count": 1,
            "span_count": 2,
            "error_count": 0,
            "total_tokens": 15,
            "start_time": T0 + timedelta(milliseconds=500),
            "end_time": T0 + timedelta(milliseconds=600),
            "user_id": "u-9",
        },
    ]


def stall_writer(store: Store) -> threading.Event:
    """Hold the writer thread between two transactions until the returned event is set.

    A future's done-callbacks run in the thread that resolves it, the writer: a callback that
    waits keeps the writer from taking the next batches, which stay queued.
    """
    release = threading.Event()
    for attempt in range(20):
        entered, too_late = threading.Event(), threading.Event()

        def hold(_: object, entered: threading.Event = entered, late: threading.Event = too_late):
            if threading.current_thread() is threading.main_thread():
                late.set()  # committed before the callback was added: try again
                return
            entered.set()
            release.wait(30)

        future = store.submit(table([S(f"stall-{attempt}", None, "stall", 0, 1, trace_id="st")]))
        future.add_done_callback(hold)
        wait_until(lambda e=entered, t=too_late: e.is_set() or t.is_set(), what="the writer")
        if entered.is_set():
            return release
    raise AssertionError("could not stall the writer")


@pytest.fixture
def stalled(store: Store) -> Iterator[threading.Event]:
    release = stall_writer(store)
    yield release
    release.set()  # never leave the writer stuck, whatever the test did


def _bulk(n: int, trace_prefix: str) -> pa.Table:
    """``n`` small spans in traces of ten, built column-wise (fast to make)."""
    columns = {f.name: pa.nulls(n, f.type) for f in SPAN_SCHEMA}
    columns |= {
        "project": pa.array(["bulk"] * n),
        "trace_id": pa.array([f"{trace_prefix}-{i // 10}" for i in range(n)]),
        "span_id": pa.array([f"s{i}" for i in range(n)]),
        "name": pa.array(["step"] * n),
        "span_kind": pa.array(["CHAIN"] * n),
        "status": pa.array(["OK"] * n),
        "start_time": pa.array([T0] * n, pa.timestamp("us")),
        "end_time": pa.array([T0] * n, pa.timestamp("us")),
        "latency_ms": pa.array([0.0] * n),
    }
    return pa.table([columns[f.name] for f in SPAN_SCHEMA], schema=SPAN_SCHEMA)


def test_reads_see_the_last_commit_while_a_write_is_in_flight(store: Store) -> None:
    store.write(table(TRACE))
    before = (len(TRACE), len(TRACE))
    after = (len(TRACE) + 20_000, len(TRACE) + 20_000)
    pending = store.submit(_bulk(20_000, "bulk"))
    seen: list[tuple[int, int]] = []
    with store.reader() as reader:
        while not pending.done():
            # Both counts in one statement: one snapshot of spans and of the trace index.
            (row,) = reader.rows(
                "SELECT (SELECT count(*) FROM spans), (SELECT sum(span_count) FROM traces)"
            )
            if not pending.done():
                seen.append(row)
    assert pending.result(timeout=30).added == 20_000
    with store.reader() as reader:
        (now,) = reader.rows(
            "SELECT (SELECT count(*) FROM spans), (SELECT sum(span_count) FROM traces)"
        )
    assert now == after  # acknowledged means committed and visible
    assert set(seen) <= {before, after}  # never half a transaction
    # Reads did not wait for the writer: many completed while the write was pending.
    assert seen.count(before) >= 5, seen[:10]


def test_a_full_queue_refuses_at_once_and_stores_nothing_of_that_batch(tmp_path: Path) -> None:
    settings = Settings(db=tmp_path / "small.duckdb", queue_max_batches=1, retry_after_seconds=3)
    with Store.open(settings.db, settings) as store:
        release = stall_writer(store)
        try:
            queued = store.submit(table([TRACE[0]]))  # fills the queue
            with pytest.raises(Busy) as busy:
                store.submit(table([TRACE[1]]))
            assert busy.value.retry_after == 3
            assert busy.value.code == "store_busy"
        finally:
            release.set()
        assert queued.result(timeout=30).added == 1
        with store.reader() as reader:
            assert reader.rows("SELECT span_id FROM spans WHERE trace_id = 'trace-0'") == [("a0",)]


def test_one_bad_batch_does_not_sink_the_batches_committed_with_it(
    store: Store, stalled: threading.Event
) -> None:
    # While the writer is held, three batches queue up; it then takes them as one group.
    good1 = store.submit(table([TRACE[0]]))
    column = SPAN_SCHEMA.get_field_index("attributes")
    bad = store.submit(table([TRACE[1]]).set_column(column, "attributes", pa.array(["{not json"])))
    good2 = store.submit(table([TRACE[2]]))
    stalled.set()
    assert good1.result(timeout=30).added == 1
    assert good2.result(timeout=30).added == 1
    with pytest.raises(StoreError) as failed:
        bad.result(timeout=30)
    assert failed.value.code == "store_error"
    with store.reader() as reader:
        ids = reader.rows("SELECT span_id FROM spans WHERE trace_id = 'trace-0' ORDER BY 1")
        assert ids == [("a0",), ("l1",)]
    assert trace_row(store, "trace-0")["span_count"] == 2


def test_a_bad_query_raises_a_store_error_not_a_duckdb_error(store: Store) -> None:
    with store.reader() as reader, pytest.raises(StoreError) as failed:
        reader.rows("SELECT no_such_column FROM spans")
    assert failed.value.code == "invalid_query"
    assert "no_such_column" in str(failed.value)


def test_a_closed_store_refuses_writes_and_reads(settings: Settings) -> None:
    store = Store.open(settings.db, settings)
    store.close()
    store.close()  # closing twice is harmless
    with pytest.raises(StoreClosed):
        store.submit(table(TRACE))
    with pytest.raises(StoreClosed), store.reader():
        pass


HOLD = """
import sys
from traceproof.storage import Store, owner
store = Store.open(sys.argv[1])
if len(sys.argv) > 2:
    owner.write(store.path, "traceproof serve", sys.argv[2])
print("holding", flush=True)
sys.stdin.read()
store.close()
"""


@pytest.fixture
def holder(settings: Settings) -> Iterator[Any]:
    """Runs a process that holds the store: ``holder()`` or ``holder(url)``."""
    procs: list[subprocess.Popen[str]] = []

    def start(*url: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", HOLD, str(settings.db), *url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline() == "holding\n"
        return proc

    yield start
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(timeout=30)


def test_a_store_held_by_another_process_raises_store_locked_naming_it(
    settings: Settings, holder: Any
) -> None:
    proc = holder()
    with pytest.raises(StoreLocked) as locked:
        Store.open(settings.db, settings)
    error = locked.value
    assert (error.pid, error.url, error.code) == (proc.pid, None, "store_locked")
    assert f"process {proc.pid}" in str(error)
    assert str(error).startswith("[store_locked] ")
    assert "Conflicting lock" not in str(error)


def test_store_locked_names_the_server_and_its_url_when_a_server_holds_it(
    settings: Settings, holder: Any
) -> None:
    proc = holder("http://127.0.0.1:9999")
    with pytest.raises(StoreLocked) as locked:
        Store.open(settings.db, settings)
    error = locked.value
    assert (error.pid, error.url) == (proc.pid, "http://127.0.0.1:9999")
    assert f"traceproof serve (process {proc.pid})" in str(error)
    assert "http://127.0.0.1:9999/v1/traces" in str(error)


def test_the_store_opens_again_once_the_other_process_exits(
    settings: Settings, holder: Any
) -> None:
    proc = holder()
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=30)
    with Store.open(settings.db, settings) as store:
        assert store.write(table(TRACE)).added == len(TRACE)
