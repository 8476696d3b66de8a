"""Storage: the only package that imports DuckDB.

Public API: :class:`Store` (open, submit/write, reader), :class:`WriteResult`, the span column
contract :data:`SPAN_SCHEMA`, and the exceptions in :mod:`traceproof.storage.exceptions`.
"""

from traceproof.storage.columns import SPAN_COLUMNS, SPAN_KINDS, SPAN_SCHEMA
from traceproof.storage.exceptions import Busy, NotFound, StoreClosed, StoreError, StoreLocked
from traceproof.storage.store import Reader, Store, WriteResult

__all__ = [
    "SPAN_COLUMNS",
    "SPAN_KINDS",
    "SPAN_SCHEMA",
    "Busy",
    "NotFound",
    "Reader",
    "Store",
    "StoreClosed",
    "StoreError",
    "StoreLocked",
    "WriteResult",
]
