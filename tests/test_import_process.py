"""The import process's fixed cost: what ``traceproof ingest`` loads that it never uses."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.trajectories.claude_files import basic_session


def test_ingest_does_not_import_pandas_although_it_is_installed(tmp_path: Path) -> None:
    # DuckDB imports pandas before it binds a parameter (duckdb PR #18658), pyarrow when it
    # builds an array: ~45 MB of RSS for the import.
    pytest.importorskip("pandas")
    transcript = basic_session().write(tmp_path / "session.jsonl")
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "traceproof", "ingest", str(transcript),
         "--db", str(tmp_path / "s.duckdb"), "--json"],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert '"spans_added": 0' not in result.stdout  # spans were built and written
    # -X importtime logs every module loaded: pandas would load dozens of its own.
    loaded = [line for line in result.stderr.splitlines() if re.search(r"\| +pandas\.", line)]
    assert not loaded, loaded[:5]
    # Nor pyarrow.dataset, which DuckDB's scan of an Arrow table imports (~20 MB): the
    # attempts are logged, never its own extension modules.
    datasets = [
        line
        for line in result.stderr.splitlines()
        if re.search(r"\| +pyarrow\._(dataset|acero)", line)
    ]
    assert not datasets, datasets[:5]
    # Nor numpy, which pyarrow imports when it is installed (~12 MB): blocked by the entry
    # point before pyarrow loads, only the blocked attempt is logged, none of its modules.
    pytest.importorskip("numpy")
    numpy = [line for line in result.stderr.splitlines() if re.search(r"\| +numpy\.", line)]
    assert not numpy, numpy[:5]
    # Nor the other commands' modules (the read tools, experiments, judgment: ~11 MB).
    others = [
        line for line in result.stderr.splitlines() if re.search(r"\| +traceproof\.cli_", line)
    ]
    assert not others, others[:5]


_PROBE = """
import atexit, json, sys
import pyarrow as pa
import traceproof.storage.store as store_module
seen = {}
opened = store_module.open_connection
def open_connection(path, settings):
    conn = opened(path, settings)
    threads, limit = conn.execute(
        "SELECT current_setting('threads'), current_setting('memory_limit')"
    ).fetchone()
    seen.update(threads=threads, memory_limit=limit)
    return conn
store_module.open_connection = open_connection
import traceproof.memory as memory_module
purged = memory_module.purge_duckdb
def purge_duckdb():
    seen["purges"] = seen.get("purges", 0) + purged()
    return True
memory_module.purge_duckdb = purge_duckdb
started = store_module.Store.__init__
def init(self, *args, **kwargs):
    started(self, *args, **kwargs)
    seen["trim_every"] = self._trimmer.every_bytes
store_module.Store.__init__ = init
atexit.register(lambda: print("PROBE " + json.dumps(
    seen | {"arrow_pool": pa.default_memory_pool().backend_name}), file=sys.stderr))
sys.argv = ["traceproof", *sys.argv[1:]]
from traceproof.cli import main
main()
"""


def test_ingest_runs_duckdb_and_the_heap_with_the_import_settings(tmp_path: Path) -> None:
    # The import's memory: one DuckDB thread, import_memory_limit, the server's heap settings
    # (pyarrow on the system allocator, applied before any thread starts), and DuckDB's
    # jemalloc purged with glibc's heap when the writer trims.
    transcript = basic_session().write(tmp_path / "session.jsonl")
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, "ingest", str(transcript),
         "--db", str(tmp_path / "s.duckdb"), "--json"],
        capture_output=True, text=True, check=False, timeout=120,
        env={**os.environ, "TRACEPROOF_IMPORT_MEMORY_LIMIT": "80MB",
             "TRACEPROOF_MALLOC_TRIM_BYTES": "1024"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    probe = next(line for line in result.stderr.splitlines() if line.startswith("PROBE "))
    seen = json.loads(probe.removeprefix("PROBE "))
    assert seen["threads"] == 1, seen
    assert seen["memory_limit"] == "76.0 MiB", seen  # 80 MB, in the MiB DuckDB was given
    assert seen["arrow_pool"] == "system"
    assert seen["trim_every"] == 1024, seen
    assert seen["purges"] >= 1, seen  # a real purge of DuckDB's allocator (Linux builds)


def test_ingest_reads_parquet_eval_files_without_pyarrow_dataset(tmp_path: Path) -> None:
    # pyarrow.dataset is blocked in the import process; Parquet eval results still read.
    import pyarrow as pa
    import pyarrow.parquet as pq

    results = tmp_path / "results.parquet"
    pq.write_table(pa.table({"span_id": ["ab" * 8], "label": ["good"], "score": [1.0]}), results)
    result = subprocess.run(
        [sys.executable, "-m", "traceproof", "ingest", str(results),
         "--db", str(tmp_path / "s.duckdb"), "--json"],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    found = json.loads(result.stdout)
    assert found["annotations_read"] == 1, result.stdout + result.stderr[-2000:]


def test_every_import_format_reads_in_the_import_process(tmp_path: Path) -> None:
    # The import process blocks modules it never uses (entry.UNUSED_MODULES: pandas,
    # pyarrow.dataset, numpy); every format it reads still reads there, and none loads.
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from tests.conftest import encoded
    from tests.test_import import agent_spans, otlp_dict
    from tests.trajectories.inspect_logs import write_log

    spans = agent_spans()
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "trace.json").write_text(json.dumps(otlp_dict(spans)))
    (tmp_path / "in" / "trace.pb").write_bytes(encoded(spans))
    basic_session().write(tmp_path / "in" / "session.jsonl")
    write_log(tmp_path / "logs", "eval")
    span_id = spans[0].context.span_id.to_bytes(8, "big").hex()
    results = pa.table({"span_id": [span_id], "label": ["good"], "score": [1.0]})
    pq.write_table(results, tmp_path / "results.parquet")
    pacsv.write_csv(results, tmp_path / "results.csv")
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "traceproof", "ingest",
         str(tmp_path / "in"), str(tmp_path / "logs"), "--db", str(tmp_path / "s.duckdb"),
         "--json"],
        capture_output=True, text=True, check=False, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout)
    assert set(found["formats"]) >= {"otlp_json", "otlp_protobuf", "claude_code", "inspect"}
    assert found["spans_added"] > 0 and not found["rejected"]
    for results_file in ("results.parquet", "results.csv"):
        evals = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "traceproof", "ingest",
             str(tmp_path / results_file), "--db", str(tmp_path / "s.duckdb"), "--json"],
            capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
        assert evals.returncode == 0, evals.stdout + evals.stderr[-3000:]
        assert json.loads(evals.stdout)["annotations_read"] == 1
    for log in (result.stderr, evals.stderr):
        loaded = [
            line
            for line in log.splitlines()
            if re.search(r"\| +(pandas\.|pyarrow\._dataset|pyarrow\._acero|numpy\.)", line)
        ]
        assert not loaded, loaded[:5]


_BLOCK = """
import sys
from traceproof.entry import block_unused
print(block_unused(sys.argv[1:]))
try:
    import numpy  # noqa: F401
except ModuleNotFoundError as exc:
    print("blocked:", exc)
else:
    print("imported")
"""


@pytest.mark.parametrize(
    ("command", "expected"),
    [("ingest", ["True", "blocked: No module named 'numpy' (blocked by traceproof)"]),
     ("watch", ["True", "blocked: No module named 'numpy' (blocked by traceproof)"]),
     ("serve", ["False", "imported"]),
     ("sql", ["False", "imported"])],
)  # fmt: skip
def test_only_the_lean_commands_block_the_unused_modules(command: str, expected: list[str]) -> None:
    # serve and the read tools run user code (jq workers, evaluators, tasks): nothing blocked.
    pytest.importorskip("numpy")
    result = subprocess.run(
        [sys.executable, "-c", _BLOCK, "traceproof", command],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines() == expected


_MODULES_AT_EXIT = """
import atexit, json, sys
atexit.register(lambda: print("MODULES " + json.dumps(sorted(sys.modules)), file=sys.stderr))
sys.argv = ["traceproof", *sys.argv[1:]]
from traceproof.entry import main
main()
"""


def test_watch_loads_only_its_own_command_module_and_no_numpy() -> None:
    # watch is a lean command too: its module is loaded alone (the others import numpy).
    pytest.importorskip("numpy")
    result = subprocess.run(
        [sys.executable, "-c", _MODULES_AT_EXIT, "watch", "--help"],
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Usage:" in result.stdout
    line = next(x for x in result.stderr.splitlines() if x.startswith("MODULES "))
    modules = json.loads(line.removeprefix("MODULES "))
    assert [m for m in modules if m.startswith("traceproof.cli_")] == ["traceproof.cli_watch"]
    assert "numpy" not in modules and "pandas" not in modules


_JEMALLOC_PROBE = """
import ctypes, json, sys
from traceproof import entry
entry.block_unused(["traceproof", *sys.argv[1:]])
entry.lean_allocator(["traceproof", *sys.argv[1:]])
import duckdb
from traceproof import memory
mallctl = memory._duckdb_mallctl()
def read(name, kind):
    value, size = kind(), ctypes.c_size_t(ctypes.sizeof(kind))
    assert mallctl(name.encode(), ctypes.byref(value), ctypes.byref(size), None, 0) == 0, name
    return value.value
print(json.dumps({"narenas": read("opt.narenas", ctypes.c_uint),
                  "tcache": read("opt.tcache", ctypes.c_bool),
                  "dirty": read("opt.dirty_decay_ms", ctypes.c_ssize_t),
                  "muzzy": read("opt.muzzy_decay_ms", ctypes.c_ssize_t)}))
"""


@pytest.mark.parametrize(
    ("command", "preset", "expected"),
    [
        ("ingest", None, {"narenas": 1, "tcache": False, "dirty": 100, "muzzy": 0}),
        ("watch", None, {"narenas": 1, "tcache": False, "dirty": 100, "muzzy": 0}),
        ("ingest", "muzzy_decay_ms:7", {"muzzy": 7, "tcache": True}),  # the user's setting wins
        ("serve", None, {"muzzy": 1000, "tcache": True}),  # DuckDB's own (1 s)
    ],
)
def test_the_lean_commands_run_duckdb_on_a_lean_jemalloc(
    command: str, preset: str | None, expected: dict[str, object]
) -> None:
    """ingest and watch set DUCKDB_JE_MALLOC_CONF (entry.lean_allocator) before DuckDB loads:
    jemalloc reads it once, at load, and then keeps freed pages of the import far shorter."""
    from traceproof.entry import LEAN_JEMALLOC

    assert "narenas:1" in LEAN_JEMALLOC
    env = {k: v for k, v in os.environ.items() if k != "DUCKDB_JE_MALLOC_CONF"}
    if preset is not None:
        env["DUCKDB_JE_MALLOC_CONF"] = preset
    result = subprocess.run(
        [sys.executable, "-c", _JEMALLOC_PROBE, command],
        capture_output=True, text=True, check=False, timeout=60, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert {k: seen[k] for k in expected} == expected, seen
