"""Memory: recent writes and queries do not compete for one small pool.

Writes not yet checkpointed live in DuckDB's buffer pool and cannot be evicted; the writer
checkpoints once ingest goes idle. The memory limit is sized from the machine, and a query that
needs more than it spills to a private temp directory beside the store, which works although the
sandbox turns external access off and locks the configuration.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx2
import pyarrow as pa
import pytest

from tests.conftest import LiveServer, wait_until
from tests.test_store import T0
from traceproof.errors import ErrorCode
from traceproof.settings import Settings
from traceproof.storage import SPAN_SCHEMA, Store, StoreError
from traceproof.storage.connection import machine_memory_bytes, memory_limit_bytes, parse_size

MB = 1000 * 1000
MIB = 1024 * 1024

# A sort of ~300 MB of strings: far more than a 64 MB pool.
BIG_SORT = (
    "SELECT count(*), max(s) FROM (SELECT repeat('x', 100) || i::VARCHAR AS s "
    "FROM range(2000000) t(i) ORDER BY s DESC)"
)


def setting(store: Store, name: str) -> str:
    with store.reader() as reader:
        return str(reader.scalar(f"SELECT current_setting('{name}')"))


def wide_spans(n: int, chars: int) -> pa.Table:
    text = pa.array(["lorem ipsum " * (chars // 12)] * n)
    columns = {
        "project": pa.array(["mem"] * n),
        "trace_id": pa.array([f"t{i // 10}" for i in range(n)]),
        "span_id": pa.array([f"s{i}" for i in range(n)]),
        "name": pa.array(["step"] * n),
        "span_kind": pa.array(["CHAIN"] * n),
        "status": pa.array(["OK"] * n),
        "start_time": pa.array([T0] * n, pa.timestamp("us")),
        "end_time": pa.array([T0] * n, pa.timestamp("us")),
        "latency_ms": pa.array([0.0] * n),
        "input_value": text,
        "output_value": text,
    }
    return pa.table(
        [columns.get(f.name, pa.nulls(n, f.type)) for f in SPAN_SCHEMA], schema=SPAN_SCHEMA
    )


def test_sizes_parse_like_duckdb() -> None:
    assert parse_size("512MB") == 512 * MB
    assert parse_size("1GiB") == 1024 * MIB
    assert parse_size("64 MiB") == 64 * MIB
    assert parse_size("4096") == 4096
    with pytest.raises(ValueError):
        parse_size("lots")


def test_the_default_memory_limit_is_a_share_of_this_machine_between_floor_and_ceiling(
    settings: Settings,
) -> None:
    expected = max(512 * MB, min(700 * MB, int(machine_memory_bytes() * 0.2)))
    assert memory_limit_bytes(settings.duckdb_memory_limit, settings) == expected
    small = settings.model_copy(update={"duckdb_memory_max": "600MB", "duckdb_memory_min": "1MB"})
    assert memory_limit_bytes("auto", small) <= 600 * MB
    assert memory_limit_bytes("256MB", settings) == 256 * MB
    with Store.open(settings.db, settings) as store:
        # DuckDB reports the limit in MiB, rounded.
        reported = parse_size(setting(store, "memory_limit"))
        assert abs(reported - expected) < 2 * MIB


def test_a_query_needing_more_than_memory_limit_spills_to_the_store_temp_directory(
    tmp_path: Path,
) -> None:
    settings = Settings(db=tmp_path / "spill.duckdb", duckdb_memory_limit="64MB")
    with Store.open(settings.db, settings) as store:
        assert setting(store, "temp_directory") == str(tmp_path / "spill.duckdb.tmp")
        # The bound reaches DuckDB (4GB, as DuckDB prints it). DuckDB 1.5.5 applies it to the
        # buffer pool's own temp blocks; sorts and hash tables spilling their partitions were
        # seen to pass it (benchmarks/README.md), so it is a guard, not a hard cap.
        assert setting(store, "max_temp_directory_size") == "3.7 GiB"
        # External access is off and the configuration locked, as for every agent query.
        assert setting(store, "enable_external_access") == "False"
        assert setting(store, "lock_configuration") == "True"
        with store.reader(timeout=120) as reader:
            (count, _), *_ = reader.rows(BIG_SORT)
        assert count == 2_000_000


def test_without_a_temp_directory_the_same_query_runs_out_of_memory(tmp_path: Path) -> None:
    """The control: the query above really needs the spill."""
    settings = Settings(
        db=tmp_path / "nospill.duckdb", duckdb_memory_limit="64MB", duckdb_temp_directory=""
    )
    with (
        Store.open(settings.db, settings) as store,
        store.reader(timeout=120) as reader,
        pytest.raises(StoreError) as failed,
    ):
        reader.rows(BIG_SORT)
    assert failed.value.code == ErrorCode.QUERY_TOO_LARGE


@pytest.mark.parametrize(
    "query",
    [
        "select list(repeat('x', 1000)) from range(1000000)",
        "select string_agg(repeat('x', 1000000), '') from range(2000)",
    ],
)
def test_a_query_too_big_for_memory_is_the_callers_to_fix(tmp_path: Path, query: str) -> None:
    """Out of memory is the query's size, not a server fault: 400 query_too_large, saying what
    to do, and the store answers the next query."""
    settings = Settings(db=tmp_path / "small.duckdb", duckdb_memory_limit="64MB")
    with Store.open(settings.db, settings) as store, LiveServer(store, settings) as server:
        answer = httpx2.post(
            f"{server.url}/api/v1/tools/sql",
            content=json.dumps({"query": query}),
            headers={"content-type": "application/json"},
            timeout=120,
        )
        assert answer.status_code == 400, answer.text
        assert answer.json()["code"] == ErrorCode.QUERY_TOO_LARGE
        assert "LIMIT" in answer.json()["error"]
        with store.reader() as reader:
            assert reader.scalar("select 1") == 1


def test_when_ingest_goes_idle_the_writer_checkpoints_and_recent_writes_free_memory(
    tmp_path: Path,
) -> None:
    settings = Settings(db=tmp_path / "idle.duckdb", duckdb_idle_checkpoint_seconds=0.2)
    wal = settings.db.with_name(settings.db.name + ".wal")
    with Store.open(settings.db, settings) as store:
        for batch in range(4):
            store.write(wide_spans(1_000, 4_000).set_column(
                2, "span_id", pa.array([f"b{batch}-{i}" for i in range(1_000)])
            ))  # fmt: skip
        # Far below the checkpoint threshold: only the idle checkpoint empties the WAL.
        wait_until(lambda: not wal.exists() or wal.stat().st_size == 0, what="idle checkpoint")
        with store.reader() as reader:
            pinned = reader.scalar(
                "SELECT coalesce(sum(memory_usage_bytes), 0) FROM duckdb_memory() "
                "WHERE tag IN ('IN_MEMORY_TABLE', 'OVERFLOW_STRINGS')"
            )
            assert reader.scalar("SELECT count(*) FROM spans") == 4_000
        assert pinned == 0


def test_no_connection_of_the_store_draws_duckdbs_progress_bar(tmp_path: Path) -> None:
    """DuckDB draws its progress bar on stdout for any query past 2 s, piped or not: on a
    4M-span store it went into `traceproof ingest --json`'s output, and over stdio it would go
    into the JSON-RPC stream. The writer's connection (ingest, checkpoints, the repair check)
    and the readers' cursors of it have it off, and the locked configuration keeps it off.
    Checked in a child process, as the CLI runs: under pytest DuckDB's default differs."""
    script = """
import sys
from pathlib import Path
from traceproof.settings import Settings
from traceproof.storage import Store
db = Path(sys.argv[1])
setting = "SELECT current_setting('enable_progress_bar')"
with Store.open(db, Settings(db=db)) as store:
    writer = store._conn
    print(writer.execute(setting).fetchone()[0])
    with store.reader() as reader:
        print(reader.scalar(setting))
        try:
            reader.scalar("SET enable_progress_bar = true")
            print("changed")
        except Exception:
            print("refused")
"""
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "s.duckdb")],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert out.stdout.split() == ["False", "False", "refused"], out.stderr
