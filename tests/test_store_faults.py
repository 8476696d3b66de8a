"""A failed write never loses or half-writes acknowledged data, and never wedges the store.

DuckDB's fatal state cannot be caused on purpose, so the writer has a narrow seam
(``Store._fault``, called at "begin", "spans" (inside the transaction, before COMMIT), "commit"
(after it) and "reopen") where a test raises a real ``duckdb.FatalException``. Everything else is
real: the file is closed and opened again, migrated, repaired and locked down, and the batch is
written again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import pytest

from tests.conftest import wait_until
from tests.test_store import TRACE, S, table, trace_row
from traceproof.settings import Settings
from traceproof.storage import Store, StoreError, StoreUnavailable

FATAL = "FATAL Error: Failed to rollback transaction. Cannot continue operation"


def fail_once(point: str, *, then: Callable[[str], None] | None = None) -> Callable[[str], None]:
    """A fault hook raising a fatal DuckDB error the first time the writer reaches ``point``."""
    fired = threading.Event()

    def hook(at: str) -> None:
        if at == point and not fired.is_set():
            fired.set()
            raise duckdb.FatalException(FATAL)
        if then is not None:
            then(at)

    return hook


def consistency(store: Store) -> list[tuple[object, ...]]:
    """Traces whose trace row disagrees with the spans (empty when consistent)."""
    with store.reader() as reader:
        return reader.rows(
            "SELECT coalesce(s.trace_id, t.trace_id), s.n, t.span_count FROM "
            "(SELECT project, trace_id, count(*) n FROM spans GROUP BY ALL) s FULL OUTER JOIN "
            "trace_index t USING (project, trace_id) WHERE s.n IS DISTINCT FROM t.span_count"
        )


def span_ids(store: Store) -> list[str]:
    with store.reader() as reader:
        return [r[0] for r in reader.rows("SELECT span_id FROM spans ORDER BY span_id")]


@pytest.fixture
def fast(tmp_path: Path) -> Settings:
    return Settings(
        db=tmp_path / "faults.duckdb", store_reopen_attempts=2, store_reopen_backoff_seconds=0
    )


@pytest.fixture
def opened(fast: Settings) -> Iterator[Store]:
    with Store.open(fast.db, fast) as store:
        yield store


@pytest.mark.parametrize("point", ["begin", "spans", "commit"])
def test_a_fatal_error_during_a_write_reopens_the_store_and_writes_the_batch_once(
    opened: Store, point: str
) -> None:
    opened.write(table(TRACE[:2]))
    first = opened._conn
    opened._fault = fail_once(point)
    result = opened.write(table(TRACE[2:]))  # acknowledged only once durable
    assert opened._conn is not first  # the file was really closed and opened again
    assert opened.health().ok
    # Before the commit nothing of the batch was stored; after it, all of it was, and writing
    # it again skipped every span: either way each span is stored once, with its trace row.
    assert result.added == (0 if point == "commit" else len(TRACE) - 2)
    assert span_ids(opened) == sorted(s.span_id for s in TRACE)
    assert trace_row(opened, "trace-0")["span_count"] == len(TRACE)
    assert consistency(opened) == []


def test_acknowledged_spans_survive_a_fatal_error_and_a_reopen(fast: Settings) -> None:
    with Store.open(fast.db, fast) as store:
        acked = store.write(table(TRACE[:4]))
        store._fault = fail_once("spans")
        store.write(table(TRACE[4:]))
    with Store.open(fast.db, fast) as store:
        assert acked.added == 4
        assert span_ids(store) == sorted(s.span_id for s in TRACE)
        assert consistency(store) == []


def test_while_the_store_reopens_health_says_so_and_reads_and_writes_are_retryable(
    opened: Store,
) -> None:
    release, reopening = threading.Event(), threading.Event()

    def hold(at: str) -> None:
        if at == "reopen":
            reopening.set()
            assert release.wait(30)

    opened._fault = fail_once("spans", then=hold)
    pending = opened.submit(table(TRACE))
    try:
        wait_until(reopening.is_set, what="the writer to start reopening")
        health = opened.health()
        assert (health.ok, health.state) == (False, "reopening")
        assert "fatal" in health.detail.lower()
        assert str(opened.path) not in health.detail
        with pytest.raises(StoreUnavailable) as read, opened.reader():
            pass
        assert read.value.code == "store_busy"
        with pytest.raises(StoreUnavailable) as write:
            opened.submit(table([S("late", None, "late", 0, 1, trace_id="t-late")]))
        assert write.value.code == "store_busy"
        assert not pending.done()  # not answered while its outcome is unknown
    finally:
        release.set()
    assert pending.result(timeout=30).added == len(TRACE)
    assert opened.health().ok
    assert consistency(opened) == []


def test_when_reopening_keeps_failing_the_store_stays_failed_and_answers_errors(
    opened: Store,
) -> None:
    def broken(at: str) -> None:
        if at in {"spans", "reopen"}:
            raise duckdb.FatalException(FATAL)

    opened._fault = broken
    pending = opened.submit(table(TRACE))
    with pytest.raises(StoreError) as failed:
        pending.result(timeout=30)
    assert failed.value.code == "store_busy"  # never acknowledged
    assert opened.wait_failed(timeout=30)
    health = opened.health()
    assert (health.ok, health.state) == (False, "failed")
    assert "Restart traceproof" in health.detail
    with pytest.raises(StoreUnavailable):
        opened.submit(table(TRACE))
    with pytest.raises(StoreUnavailable), opened.reader():
        pass


def test_a_batch_that_keeps_failing_after_reopen_gets_an_error_and_the_store_recovers(
    opened: Store,
) -> None:
    def poison(at: str) -> None:
        if at == "spans":
            raise duckdb.FatalException(FATAL)

    opened._fault = poison
    with pytest.raises(StoreUnavailable):
        opened.write(table(TRACE))
    opened._fault = None
    assert opened.health().ok
    assert span_ids(opened) == []  # answered with an error, and nothing half-written
    assert consistency(opened) == []
    assert opened.write(table(TRACE)).added == len(TRACE)


def test_a_fatal_error_seen_by_a_reader_reopens_the_store(opened: Store) -> None:
    opened.write(table(TRACE))
    first = opened._conn
    with opened.reader() as reader:
        mapped = opened._reader_error(duckdb.FatalException("database has been invalidated"))
        assert isinstance(mapped, StoreUnavailable)
        del reader
    wait_until(lambda: opened.health().ok and opened._conn is not first, what="the reopen")
    assert span_ids(opened) == sorted(s.span_id for s in TRACE)


# -- the repair check at startup --------------------------------------------------------------


def _tamper(db: Path, *statements: str) -> None:
    conn = duckdb.connect(str(db))
    try:
        for statement in statements:
            conn.execute(statement)
    finally:
        conn.close()


def _three_traces(settings: Settings) -> dict[str, dict[str, object]]:
    with Store.open(settings.db, settings) as store:
        for trace_id in ("trace-a", "trace-b", "trace-c"):
            store.write(table([S(s.span_id, s.parent, s.name, s.start_ms, s.end_ms, s.kind,
                                 s.status, s.session, s.user, s.prompt, s.completion, s.input,
                                 s.output, trace_id=trace_id) for s in TRACE]))  # fmt: skip
        return {t: trace_row(store, t) for t in ("trace-a", "trace-b", "trace-c")}


def test_open_repairs_spans_without_trace_rows_and_trace_rows_without_spans(
    fast: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    good = _three_traces(fast)
    _tamper(
        fast.db,
        # 200 then missing: spans lost, their trace row kept.
        "DELETE FROM spans WHERE trace_id = 'trace-a'",
        # spans stored without their trace row.
        "DELETE FROM trace_index WHERE trace_id = 'trace-b'",
        # part of a trace's spans lost: the row counts spans that are not there.
        "DELETE FROM spans WHERE trace_id = 'trace-c' AND span_id IN ('t1', 'l2')",
    )
    with caplog.at_level(logging.WARNING, logger="traceproof.storage.connection"):
        store = Store.open(fast.db, fast)
    try:
        assert "repaired the trace index: 3 trace(s)" in caplog.text
        assert consistency(store) == []
        with store.reader() as reader:
            traces = [r[0] for r in reader.rows("SELECT trace_id FROM traces ORDER BY 1")]
        assert traces == ["trace-b", "trace-c"]
        assert trace_row(store, "trace-b") == good["trace-b"]  # rebuilt by the same aggregate
        kept = [s for s in TRACE if s.span_id not in ("t1", "l2")]
        row = trace_row(store, "trace-c")
        assert (row["span_count"], row["error_count"]) == (len(kept), 1)
        assert row["prompt_tokens"] == 100
    finally:
        store.close()


def test_open_changes_nothing_on_a_consistent_store(
    fast: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    good = _three_traces(fast)
    with caplog.at_level(logging.WARNING, logger="traceproof.storage.connection"):
        store = Store.open(fast.db, fast)
    try:
        assert "repaired" not in caplog.text
        assert {t: trace_row(store, t) for t in good} == good
    finally:
        store.close()
