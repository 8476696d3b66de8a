"""The server's heap settings (traceproof.memory): glibc arenas, the mmap threshold, pyarrow's
pool, malloc_trim after checkpoints, and DuckDB's allocator settings.

glibc's malloc state is per process, so what configure() does is checked in child processes
(real glibc, read back through its own reports: malloc_info's XML and mallinfo2).
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from functools import partial
from pathlib import Path

import pyarrow as pa
import pytest

from tests.conftest import wait_until
from tests.test_store_memory import setting, wide_spans
from traceproof import memory
from traceproof.demo import demo_requests
from traceproof.ingest.normalize import SpanRows
from traceproof.ingest.otlp import decode_protobuf
from traceproof.server.otlp import _decode
from traceproof.settings import Settings
from traceproof.storage import Store

glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)

# A child process: configure() as told, then report what glibc says about its own heap.
CHILD = r"""
import ctypes, json, os, sys, tempfile, threading
from traceproof import memory
from traceproof.demo import demo_requests
from traceproof.ingest.otlp import decode_protobuf

libc = ctypes.CDLL("libc.so.6")
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]

def arenas():
    path = tempfile.mktemp()
    f = libc.fopen(path.encode(), b"w")
    libc.malloc_info(0, f)
    libc.fclose(f)
    xml = open(path).read()
    os.unlink(path)
    return xml.count("<heap nr=")

before = arenas()  # what imports made (pyarrow's and DuckDB's threads)
args = json.loads(sys.argv[1])
applied = memory.configure(**args) if args else None
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]

# Eight threads that each hold memory at once: glibc gives each its own arena unless capped.
barrier = threading.Barrier(8)
def work():
    blocks = [libc.malloc(1000) for _ in range(100)]
    barrier.wait()
    for b in blocks:
        libc.free(b)
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()

# Free a 4 MB mapped block: glibc's dynamic threshold would rise to 4 MB, and a 3 MB block
# would then come from the heap; a fixed threshold of 256 kB keeps it mapped.
class MI(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = MI
libc.free(libc.malloc(4 << 20))
mapped_before = libc.mallinfo2().hblks
big = libc.malloc(3 << 20)
mapped = libc.mallinfo2().hblks - mapped_before
libc.free(big)

import pyarrow as pa
print(json.dumps({
    "before": before,
    "arenas": arenas(),
    "mapped_blocks": mapped,
    "arrow_pool": pa.default_memory_pool().backend_name,
    "applied": applied and applied.__dict__,
}))
"""


def run_child(**kwargs: object) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(kwargs)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


@glibc
def test_the_arena_cap_and_the_fixed_mmap_threshold_are_applied_when_the_settings_say_so() -> None:
    untouched = run_child()
    capped = run_child(arena_max=2, mmap_threshold=256 * 1024, arrow_pool="default")
    # Eight threads holding memory at once: glibc's default gives them arenas of their own.
    assert isinstance(untouched["arenas"], int) and untouched["arenas"] > 2
    # At most 2, or the arenas imports had already made before configure() ran.
    assert isinstance(capped["before"], int) and capped["before"] < untouched["arenas"]
    assert capped["arenas"] == max(2, capped["before"])
    # After a 4 MB block is freed, a 3 MB block comes from the heap under glibc's dynamic
    # threshold, and is mapped of its own (returned to the system when freed) under a fixed one.
    assert untouched["mapped_blocks"] == 0
    assert capped["mapped_blocks"] == 1
    assert capped["applied"] == {
        "arena_max": 2,
        "mmap_threshold": 256 * 1024,
        "arrow_pool": None,
    }


@glibc
def test_zero_leaves_glibc_alone() -> None:
    left = run_child(arena_max=0, mmap_threshold=0, arrow_pool="default")
    assert isinstance(left["arenas"], int) and left["arenas"] > 2
    assert left["mapped_blocks"] == 0
    assert left["applied"] == {"arena_max": None, "mmap_threshold": None, "arrow_pool": None}


def test_the_server_puts_pyarrow_on_the_system_allocator_by_default() -> None:
    defaults = Settings()
    chosen = run_child(arena_max=0, mmap_threshold=0, arrow_pool=defaults.arrow_memory_pool)
    assert chosen["arrow_pool"] == "system"
    kept = run_child(arena_max=0, mmap_threshold=0, arrow_pool="default")
    assert kept["arrow_pool"] == pa.default_memory_pool().backend_name


def test_an_unknown_arrow_pool_is_refused() -> None:
    with pytest.raises(ValueError, match="arrow_memory_pool"):
        memory.configure(arena_max=0, mmap_threshold=0, arrow_pool="tcmalloc")
    with pytest.raises(ValueError):
        Settings(arrow_memory_pool="tcmalloc")


@glibc
def test_release_returns_free_heap_pages_through_malloc_trim() -> None:
    blocks = [bytes(2_000) for _ in range(20_000)]  # 40 MB of heap blocks (below mmap size)
    kept = blocks[::10]
    del blocks  # 90% freed between live blocks: whole free pages that only a trim gives back
    assert memory.release() is True
    assert len(kept) == 2_000


_PURGE_CHILD = r"""
import json, duckdb
from traceproof import memory
conn = duckdb.connect(config={"allocator_background_threads": False})
conn.execute("SET enable_progress_bar = false")  # under load the query may pass 2 s
# A hash aggregate of ~100 MB, freed when the query ends: jemalloc keeps its pages dirty
# for DuckDB's 5 s decay.
conn.execute("SELECT count(DISTINCT i::VARCHAR) FROM range(3000000) t(i)").fetchall()
before = memory.duckdb_allocator_stats()
memory.release()
after = memory.duckdb_allocator_stats()
print(json.dumps({"before": before, "after": after}))
"""


@glibc
def test_release_purges_the_pages_duckdb_freed() -> None:
    # In a child: DuckDB's allocator state is per process, and the test process's DuckDB may
    # have a background purge thread of its own.
    if memory.duckdb_allocator_stats() is None:
        pytest.skip("this DuckDB build has no jemalloc")
    result = subprocess.run(
        [sys.executable, "-c", _PURGE_CHILD],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.splitlines()[-1])
    before, after = found["before"], found["after"]
    assert before["dirty"] > 20 * 2**20, found  # the query's freed pages, still resident
    assert after["dirty"] < 2**20, found
    assert after["resident"] < before["resident"] - 20 * 2**20, found


def test_the_writer_trims_after_an_idle_checkpoint(tmp_path: Path) -> None:
    settings = Settings(db=tmp_path / "trim.duckdb", duckdb_idle_checkpoint_seconds=0.2)
    with Store.open(settings.db, settings) as store:
        store.write(wide_spans(1_000, 4_000))
        assert store._trimmer.releases == 0  # 8 MB committed: below malloc_trim_bytes
        wait_until(lambda: store._trimmer.releases >= 1, what="a trim after the idle checkpoint")


def test_the_writer_trims_every_malloc_trim_bytes_of_committed_spans(tmp_path: Path) -> None:
    settings = Settings(
        db=tmp_path / "every.duckdb",
        malloc_trim_bytes=4 * 1024 * 1024,
        duckdb_idle_checkpoint_seconds=3600,
    )
    with Store.open(settings.db, settings) as store:
        for batch in range(3):
            spans = wide_spans(300, 4_000)  # ~2.4 MB each
            ids = pa.array([f"b{batch}-{i}" for i in range(300)])
            store.write(spans.set_column(2, "span_id", ids))
        assert store._trimmer.releases == 1  # after 7.2 MB: once past 4 MB, not yet again


def test_no_trim_when_malloc_trim_bytes_is_zero(tmp_path: Path) -> None:
    settings = Settings(
        db=tmp_path / "never.duckdb", malloc_trim_bytes=0, duckdb_idle_checkpoint_seconds=0.1
    )
    with Store.open(settings.db, settings) as store:
        store.write(wide_spans(1_000, 4_000))
        wal = settings.db.with_name(settings.db.name + ".wal")
        wait_until(lambda: not wal.exists() or wal.stat().st_size == 0, what="idle checkpoint")
        assert store._trimmer.releases == 0


def test_duckdb_gets_the_allocator_and_vacuum_settings(tmp_path: Path) -> None:
    defaults = Settings(db=tmp_path / "alloc.duckdb")
    with Store.open(defaults.db, defaults) as store:
        assert setting(store, "max_vacuum_tasks") == "0"
        assert setting(store, "allocator_background_threads") == "True"
        assert setting(store, "allocator_flush_threshold") == "30.5 MiB"  # 32 MB
    chosen = Settings(
        db=tmp_path / "alloc2.duckdb",
        duckdb_max_vacuum_tasks=100,
        duckdb_allocator_background_threads=False,
        duckdb_allocator_flush_threshold="128MiB",
    )
    with Store.open(chosen.db, chosen) as store:
        assert setting(store, "max_vacuum_tasks") == "100"
        assert setting(store, "allocator_background_threads") == "False"
        assert setting(store, "allocator_flush_threshold") == "128.0 MiB"


def test_an_otlp_request_keeps_only_its_arrow_batch_while_it_waits_for_the_writer() -> None:
    body = next(iter(demo_requests()))  # a real OTLP protobuf request
    decode = partial(decode_protobuf, rows=SpanRows())
    decoded, table = _decode(decode, body, "default")
    assert table is not None and table.num_rows > 0
    assert len(decoded.rows) == 0  # the decoded Python values are gone; the batch holds them
    assert decoded.rejected == 0
