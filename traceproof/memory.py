"""The heap of the server (and of `traceproof ingest` and `watch`): how freed memory goes back to
the operating system.

Measured on a loaded server (benchmarks/load.py, 300k spans, 8 OTLP senders and 4 tool callers,
then 40 senders of 16 MB bodies), DuckDB stayed within its memory_limit, but the process's RSS
went about 700-900 MB beyond it. The rest was the C heap, not live data:

- glibc malloc keeps what threads free in per-thread arenas (up to 8 per core) and raises its
  mmap threshold after the first large free, so request bodies, decoded span text and protobuf
  buffers of many megabytes end up in arenas too. Half of ~440 MB of arena memory was free but
  kept (fragmented), and stayed after ingest stopped.
- pyarrow's default pool (mimalloc) kept about twice the Arrow batches it built.
- DuckDB's own allocator (the jemalloc its Linux builds link, configured by DuckDB with a 5 s
  decay) keeps the pages DuckDB frees for seconds. Writing the batches of a 1 GB Claude Code
  import, it ended with ~115 MB of such dirty pages beside ~70 MB of live DuckDB memory
  (``stats.arenas.<all>.pdirty``).

:func:`configure` (at server start, before threads start) caps the arenas, fixes the mmap
threshold (allocations above it are mapped and unmapped on free) and puts pyarrow on the system
allocator; :func:`release` (the writer calls it after checkpoints and every
``malloc_trim_bytes`` of committed spans) returns the free pages of every glibc arena with
``malloc_trim`` and purges DuckDB's jemalloc arenas. Each is a no-op where that allocator is not
there (macOS, musl, a DuckDB build without jemalloc): nothing fails.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import platform
import sys
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from traceproof.settings import Settings

log = logging.getLogger(__name__)

# mallopt(3) parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

ARROW_POOLS = ("system", "default", "jemalloc", "mimalloc")


@functools.cache
def _glibc() -> Any:
    """glibc loaded through ctypes, or None on another C library or platform."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


@dataclass(frozen=True)
class Applied:
    """What :func:`configure` set (``None``: left as it was)."""

    arena_max: int | None = None
    mmap_threshold: int | None = None
    arrow_pool: str | None = None


def configure(*, arena_max: int, mmap_threshold: int, arrow_pool: str, libc: Any = None) -> Applied:
    """Apply the heap settings to this process; call before it starts its threads.

    ``arena_max``: most glibc malloc arenas (0 leaves glibc's default). ``mmap_threshold``:
    allocations of at least this many bytes get their own mapping, returned on free (0 leaves
    glibc's dynamic threshold). ``arrow_pool``: pyarrow's default memory pool (``system``,
    ``jemalloc``, ``mimalloc``, or ``default`` to leave pyarrow's choice). ``libc`` is for
    tests (an object with ``mallopt``); by default glibc, when it is the C library.
    """
    lib = libc if libc is not None else _glibc()
    arena = mmap = None
    if lib is not None:
        if arena_max > 0 and lib.mallopt(M_ARENA_MAX, arena_max) == 1:
            arena = arena_max
        if mmap_threshold > 0 and lib.mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1:
            mmap = mmap_threshold
            # Keep the top of the main heap trimmed at the same scale (glibc would otherwise
            # tie the trim threshold to a dynamic mmap threshold, now fixed).
            lib.mallopt(M_TRIM_THRESHOLD, 2 * mmap_threshold)
    pool = _set_arrow_pool(arrow_pool)
    applied = Applied(arena_max=arena, mmap_threshold=mmap, arrow_pool=pool)
    log.debug("heap settings: %s", applied)
    return applied


def configure_server(settings: Settings) -> Applied:
    """:func:`configure` with the server's settings (``malloc_*``, ``arrow_memory_pool``)."""
    return configure(
        arena_max=settings.malloc_arena_max,
        mmap_threshold=settings.malloc_mmap_threshold,
        arrow_pool=settings.arrow_memory_pool,
    )


def _set_arrow_pool(name: str) -> str | None:
    if name not in ARROW_POOLS:
        raise ValueError(f"arrow_memory_pool must be one of {', '.join(ARROW_POOLS)}: {name!r}")
    if name == "default":
        return None
    makers = {
        "system": pa.system_memory_pool,
        "jemalloc": pa.jemalloc_memory_pool,
        "mimalloc": pa.mimalloc_memory_pool,
    }
    try:
        pool = makers[name]()
    except NotImplementedError:  # this pyarrow build lacks that allocator
        log.warning("pyarrow has no %s allocator here; keeping %s", name, _arrow_pool_name())
        return None
    pa.set_memory_pool(pool)
    return name


def _arrow_pool_name() -> str:
    return str(pa.default_memory_pool().backend_name)


def release(libc: Any = None) -> bool:
    """Return the free pages of every malloc arena to the operating system (``malloc_trim``)
    and purge DuckDB's jemalloc arenas (:func:`purge_duckdb`); True when glibc released some
    memory. Cheap (milliseconds for hundreds of MB of arenas)."""
    purge_duckdb()
    lib = libc if libc is not None else _glibc()
    if lib is None:
        return False
    return bool(lib.malloc_trim(0))


#: jemalloc's ``MALLCTL_ARENAS_ALL``: the arena index that names every arena.
_ALL_ARENAS = 4096


def _duckdb_mallctl() -> Any:
    """``duckdb_je_mallctl`` of the loaded DuckDB extension module, or None (DuckDB not loaded
    yet, or built without jemalloc: macOS, Windows, some ARM builds)."""
    module = sys.modules.get("_duckdb") or sys.modules.get("duckdb.duckdb")
    path = getattr(module, "__file__", None)
    return _mallctl_in(path) if path else None  # not loaded yet: looked for again next time


@functools.cache
def _mallctl_in(path: str) -> Any:
    """``duckdb_je_mallctl`` of the shared library at ``path`` (already loaded), or None."""
    try:
        mallctl = ctypes.CDLL(path).duckdb_je_mallctl
    except (OSError, AttributeError):
        return None
    mallctl.argtypes = [
        ctypes.c_char_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_size_t,
    ]
    mallctl.restype = ctypes.c_int
    return mallctl


def purge_duckdb() -> bool:
    """Return the pages DuckDB's jemalloc holds freed (dirty, awaiting its decay) to the
    operating system now; True when there was an allocator to purge."""
    mallctl = _duckdb_mallctl()
    if mallctl is None:
        return False
    return bool(mallctl(f"arena.{_ALL_ARENAS}.purge".encode(), None, None, None, 0) == 0)


def duckdb_allocator_stats() -> dict[str, int] | None:
    """Bytes of DuckDB's jemalloc: ``allocated`` (live), ``resident`` (in RAM, freed pages
    not yet purged included) and ``dirty`` (freed, not yet purged); None without jemalloc."""
    mallctl = _duckdb_mallctl()
    if mallctl is None:
        return None
    epoch = ctypes.c_uint64(1)
    mallctl(b"epoch", None, None, ctypes.byref(epoch), ctypes.sizeof(epoch))

    def read(name: str) -> int:
        value = ctypes.c_size_t()
        size = ctypes.c_size_t(ctypes.sizeof(value))
        if mallctl(name.encode(), ctypes.byref(value), ctypes.byref(size), None, 0) != 0:
            return 0
        return int(value.value)

    pages = read(f"stats.arenas.{_ALL_ARENAS}.pdirty")
    return {
        "allocated": read("stats.allocated"),
        "resident": read("stats.resident"),
        "dirty": pages * read("arenas.page"),
    }


class Trimmer:
    """Calls :func:`release` once ``every_bytes`` have been counted with :meth:`add` since the
    last release (0: never), and on :meth:`now`. Used by the store's writer thread only."""

    def __init__(self, every_bytes: int, release_fn: Any = release) -> None:
        self.every_bytes = every_bytes
        self._release = release_fn
        self.pending = 0
        self.releases = 0

    def add(self, nbytes: int) -> None:
        if not self.every_bytes:
            return
        self.pending += nbytes
        if self.pending >= self.every_bytes:
            self.now()

    def now(self) -> None:
        if not self.every_bytes:
            return
        self.pending = 0
        self.releases += 1
        self._release()
