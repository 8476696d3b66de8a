"""Where a benchmarked server's memory goes: one JSON line a second (benchmarks/load.py --memlog).

Python imports this module at start-up when its folder is on ``PYTHONPATH``; it does nothing
unless the process is ``traceproof serve`` and ``TP_MEMLOG`` names a file. Each line holds:

- ``rss``: the process's resident MB (``/proc/self/statm``);
- ``duckdb``: DuckDB's own accounting (``duckdb_memory()``, MB by tag) and ``duckdb_temp``;
- ``malloc_used``/``malloc_free``/``malloc_mapped``: glibc's ``mallinfo2`` (free: kept by
  malloc, resident or not);
- ``arrow``: bytes pyarrow's pool has allocated;
- ``maps``: resident MB by kind of mapping (``sbrk``: glibc's main heap, ``arena``: its 64 MB
  thread heaps, ``anon4m``: other anonymous mappings of 4 MB or more (DuckDB's jemalloc, large
  mapped blocks), ``anon``: smaller ones (Python's object arenas), ``file``: code and data);
- ``queue``: MB and batches waiting for the store's writer.

A benchmark aid only: the store is found by wrapping ``Store.__init__``.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import sys
import threading
import time
from typing import Any

MB = 1_000_000
_HEAP = 64 << 20
_MAP_RE = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ (\d+)\s*(.*)$")


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd",
            "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost",
        )
    ]  # fmt: skip


def _maps() -> dict[str, int]:
    maps: list[list[Any]] = []
    with open("/proc/self/smaps") as f:
        for line in f:
            if m := _MAP_RE.match(line):
                maps.append([int(m[1], 16), int(m[2], 16), m[3], int(m[4]), m[5].strip(), 0])
            elif line.startswith("Rss:") and maps:
                maps[-1][5] = int(line.split()[1]) * 1024
    out: dict[str, int] = {}
    for i, (start, end, _perm, inode, name, rss) in enumerate(maps):
        nxt = maps[i + 1] if i + 1 < len(maps) else None
        thread_heap = start % _HEAP == 0 and (
            end - start == _HEAP
            or (nxt is not None and nxt[0] == end and nxt[2][0] == "-" and nxt[1] - start == _HEAP)
        )
        if name == "[heap]":
            kind = "sbrk"
        elif name and inode:
            kind = "file"
        elif name:
            kind = "named"
        elif thread_heap:
            kind = "arena"
        else:
            kind = "anon4m" if end - start >= (4 << 20) else "anon"
        out[kind] = out.get(kind, 0) + rss
    return {k: v // MB for k, v in out.items()}


def _run(path: str) -> None:
    while not hasattr(sys.modules.get("traceproof.storage.store"), "Store"):
        time.sleep(0.005)
    store_class = sys.modules["traceproof.storage.store"].Store
    found: list[Any] = []
    init = store_class.__init__

    def remember(self: Any, *args: Any, **kwargs: Any) -> None:
        found.append(self)
        init(self, *args, **kwargs)

    store_class.__init__ = remember
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    page = os.sysconf("SC_PAGE_SIZE")
    with open(path, "a", buffering=1) as out:
        while True:
            time.sleep(1)
            with open("/proc/self/statm") as f:
                rec: dict[str, Any] = {"t": time.strftime("%H:%M:%S"),
                                       "rss": int(f.read().split()[1]) * page // MB}  # fmt: skip
            info = libc.mallinfo2()
            rec |= {"malloc_used": info.uordblks // MB, "malloc_free": info.fordblks // MB,
                    "malloc_mapped": info.hblkhd // MB}  # fmt: skip
            import pyarrow as pa

            rec["arrow"] = pa.total_allocated_bytes() // MB
            rec["maps"] = _maps()
            store = found[0] if found else None
            conn = getattr(store, "_conn", None)
            if store is not None and conn is not None:
                try:
                    cursor = conn.cursor()
                    try:
                        rows = cursor.execute(
                            "SELECT tag, memory_usage_bytes, temporary_storage_bytes "
                            "FROM duckdb_memory()"
                        ).fetchall()
                    finally:
                        cursor.close()
                    rec["duckdb"] = {tag: n // MB for tag, n, _ in rows if n >= MB}
                    rec["duckdb_total"] = sum(n for _, n, _ in rows) // MB
                    rec["duckdb_temp"] = sum(t for _, _, t in rows) // MB
                except Exception as exc:  # the store is reopening or closing
                    rec["duckdb_error"] = type(exc).__name__
                rec["queue"] = [store._pending_bytes // MB, len(store._queue)]
            out.write(json.dumps(rec) + "\n")


if "serve" in sys.argv and os.environ.get("TP_MEMLOG"):
    threading.Thread(
        target=_run, args=(os.environ["TP_MEMLOG"],), name="memlog", daemon=True
    ).start()
