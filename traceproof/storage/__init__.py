"""Storage: the only package that imports DuckDB.

Public API: :class:`Store` (open, submit/write, reader, health), :class:`StoreHealth`,
:class:`WriteResult`, the span column contract :data:`SPAN_SCHEMA`, and the exceptions in
:mod:`traceproof.storage.exceptions`.
"""

from traceproof.storage.columns import SPAN_COLUMNS, SPAN_KINDS, SPAN_NUMERIC_COLUMNS, SPAN_SCHEMA
from traceproof.storage.exceptions import (
    Busy,
    ForbiddenQuery,
    InvalidQuery,
    NotFound,
    QueryTimeout,
    StoreClosed,
    StoreError,
    StoreLocked,
    StoreUnavailable,
)
from traceproof.storage.reader import QueryResult, Reader, check_expression, check_select
from traceproof.storage.store import Store, StoreHealth
from traceproof.storage.writes import WriteResult

__all__ = [
    "SPAN_COLUMNS",
    "SPAN_KINDS",
    "SPAN_NUMERIC_COLUMNS",
    "SPAN_SCHEMA",
    "Busy",
    "ForbiddenQuery",
    "InvalidQuery",
    "NotFound",
    "QueryResult",
    "QueryTimeout",
    "Reader",
    "Store",
    "StoreClosed",
    "StoreError",
    "StoreHealth",
    "StoreLocked",
    "StoreUnavailable",
    "WriteResult",
    "check_expression",
    "check_select",
]
