"""The `traceproof` command's entry point: what runs before anything heavy is imported.

The import commands (:data:`LEAN_COMMANDS`) run no user code, so this process never needs some
modules that its libraries import when they are installed (:data:`UNUSED_MODULES`). They are
blocked here, before :mod:`traceproof.cli` (and with it pyarrow and DuckDB) is imported: a block
installed later would come after pyarrow had already loaded numpy. This module imports only the
standard library.
"""

from __future__ import annotations

import os
import sys
from typing import Any

#: The commands whose process never uses :data:`UNUSED_MODULES` (they run no user code).
LEAN_COMMANDS = ("ingest", "watch")
#: What the libraries of an import load, when installed, and an import never uses:
#: - pandas: DuckDB (1.4 on: duckdb/duckdb PR #18658, "Load pandas in import cache before
#:   binding") imports it before it binds any parameter, and pyarrow's pa.array() looks for it
#:   too: ~45 MB of RSS and ~0.3 s.
#: - pyarrow.dataset: DuckDB's scan of an Arrow table imports it (to tell a table from a
#:   dataset), and with it Acero, Parquet, Substrait and the S3, GCS and Azure filesystems:
#:   ~20 MB of RSS. (pyarrow.parquet, for Parquet eval files, reads without it.)
#: - numpy: pyarrow imports it when installed (optional since pyarrow 16) and with it
#:   OpenBLAS: ~12 MB of RSS. Arrow tables are built from Python lists and scanned by DuckDB
#:   without it.
#: Each takes an ImportError as the module absent (and remembers it).
UNUSED_MODULES = ("pandas", "pyarrow.dataset", "numpy")
#: DuckDB's jemalloc for a lean command, unless DUCKDB_JE_MALLOC_CONF is set already (jemalloc
#: reads it once, when DuckDB's library loads). DuckDB's own settings (an arena per two cores,
#: thread caches, freed pages kept 1 s, then 1 s more as MADV_FREE pages that still count in
#: RSS) kept 40-80 MB of freed pages resident during an import, whose DuckDB work runs on one
#: thread: one arena, no thread cache, freed pages returned after 100 ms and then at once.
#: Measured on a 1 GB Claude Code history (benchmarks/transcript_import.py): peak RSS ~20 MB
#: lower at the same speed; returning them at once (dirty_decay_ms:0) took 20-35% longer.
LEAN_JEMALLOC = "narenas:1,tcache:false,dirty_decay_ms:100,muzzy_decay_ms:0"


class Unused:
    """A meta path finder for which the modules of :data:`UNUSED_MODULES` are not installed."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> None:
        if any(name == root or name.startswith(root + ".") for root in UNUSED_MODULES):
            raise ModuleNotFoundError(
                f"No module named {name!r} (blocked by traceproof)", name=name
            )


def _lean(argv: list[str]) -> bool:
    return bool(argv[1:2]) and argv[1] in LEAN_COMMANDS


def block_unused(argv: list[str]) -> bool:
    """Block :data:`UNUSED_MODULES` for the rest of this process when ``argv`` runs a lean
    command and none of them is loaded yet; True when it did."""
    if not _lean(argv) or any(name in sys.modules for name in UNUSED_MODULES):
        return False
    if not any(isinstance(finder, Unused) for finder in sys.meta_path):
        sys.meta_path.insert(0, Unused())
    return True


def lean_allocator(argv: list[str]) -> bool:
    """Give DuckDB :data:`LEAN_JEMALLOC` when ``argv`` runs a lean command, DuckDB is not loaded
    yet and DUCKDB_JE_MALLOC_CONF is not set; True when it did."""
    if not _lean(argv) or "duckdb" in sys.modules or "DUCKDB_JE_MALLOC_CONF" in os.environ:
        return False
    os.environ["DUCKDB_JE_MALLOC_CONF"] = LEAN_JEMALLOC
    return True


def main() -> None:
    """`traceproof` (the console script and ``python -m traceproof``)."""
    block_unused(sys.argv)
    lean_allocator(sys.argv)
    from traceproof.cli import main as cli_main

    cli_main()
