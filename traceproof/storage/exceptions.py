"""Exceptions raised by the store. A raw DuckDB error never leaves ``traceproof.storage``.

::

    TraceproofError (traceproof.errors)
    └── StoreError            something went wrong inside the store
        ├── StoreLocked       another process holds the DuckDB file
        ├── Busy              the write queue is full; retry after ``retry_after`` seconds
        │   └── StoreUnavailable  the store is reopening after a fatal DuckDB error (or failed)
        ├── StoreClosed       the store was closed; nothing more is accepted
        ├── NotFound          a named thing (trace, span, project) does not exist
        ├── InvalidQuery      DuckDB could not parse, bind or run a query
        ├── InvalidArgument   a value DuckDB cannot take (text that is not valid Unicode)
        ├── ForbiddenQuery    not one read-only statement, or reaches outside the store
        ├── QueryTimeout      a query ran past its time limit and was interrupted
        └── QueryTooLarge     a query needs more memory than the store may use
"""

from __future__ import annotations

from pathlib import Path

from traceproof.errors import ErrorCode, TraceproofError


class StoreError(TraceproofError):
    """Something went wrong inside the store."""

    code = ErrorCode.STORE_ERROR


class StoreLocked(StoreError):
    """Another process holds the store's DuckDB file."""

    code = ErrorCode.STORE_LOCKED

    def __init__(self, path: Path, *, pid: int | None, holder: str | None, url: str | None) -> None:
        self.path = path
        self.pid = pid
        self.url = url
        who = f"process {pid}" if pid is not None else "another process"
        if holder:
            who = f"{holder} ({who})"
        advice = (
            f"Send traces to it at {url}/v1/traces, stop it (kill {pid}) to use the store "
            "directly, or pass --db to use another store."
            if url
            else "Stop that process, or pass --db (or set TRACEPROOF_DB) to use another store."
        )
        super().__init__(f"The store {path} is in use by {who}. {advice}")


class Busy(StoreError):
    """The write queue is full. Nothing was accepted; retry after ``retry_after`` seconds."""

    code = ErrorCode.STORE_BUSY

    def __init__(self, retry_after: float) -> None:
        self.retry_after = retry_after
        super().__init__(
            f"The write queue is full. Retry in {retry_after:g} s; nothing from this batch "
            "was stored."
        )


class StoreUnavailable(Busy):
    """The store cannot read or write now: it is reopening its file after DuckDB failed, or it
    failed for good (then the server exits for a supervisor to restart it). Retryable."""

    def __init__(self, detail: str, retry_after: float) -> None:
        self.retry_after = retry_after
        what = detail.rstrip(".") or "The store is unavailable"
        StoreError.__init__(
            self, f"{what}. Retry in {max(1, retry_after):g} s; nothing of this request was done."
        )


class StoreClosed(StoreError):
    """The store was closed."""

    code = ErrorCode.STORE_CLOSED

    def __init__(self) -> None:
        super().__init__("The store is closed. Open it again to write.")


class NotFound(StoreError):
    """A trace, span or project that does not exist."""

    code = ErrorCode.NOT_FOUND


class InvalidQuery(StoreError):
    """A query that DuckDB could not parse, bind or run (the message says why)."""

    code = ErrorCode.INVALID_QUERY


class InvalidArgument(StoreError):
    """A value a query cannot take, such as text with a lone surrogate (not valid UTF-8)."""

    code = ErrorCode.INVALID_ARGUMENT


class ForbiddenQuery(StoreError):
    """A query that is not one read-only statement, or reaches outside the store."""

    code = ErrorCode.FORBIDDEN_QUERY


class QueryTimeout(StoreError):
    """A query ran past its time limit and was interrupted."""

    code = ErrorCode.QUERY_TIMEOUT


class QueryTooLarge(StoreError):
    """A query needs more memory than the store may use: its answer or its state is too big.
    The caller can fix it (aggregate, LIMIT, clip); the store is fine."""

    code = ErrorCode.QUERY_TOO_LARGE
