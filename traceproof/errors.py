"""Error codes shared by every surface (CLI, OTLP receiver, MCP tools).

Messages follow one shape: ``[code] what failed. What to do next.`` Tests assert the code, never
the sentence.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    """Stable, machine-readable codes for everything that can go wrong for a caller."""

    STORE_LOCKED = "store_locked"
    STORE_BUSY = "store_busy"
    STORE_CLOSED = "store_closed"
    STORE_ERROR = "store_error"
    INVALID_INPUT = "invalid_input"
    UNSUPPORTED_FORMAT = "unsupported_format"
    NOT_FOUND = "not_found"
    # Tool errors: what an agent did that it can fix.
    INVALID_ARGUMENT = "invalid_argument"
    INVALID_CURSOR = "invalid_cursor"
    INVALID_REGEX = "invalid_regex"
    INVALID_FILTER = "invalid_filter"
    INVALID_QUERY = "invalid_query"
    FORBIDDEN_QUERY = "forbidden_query"
    QUERY_TIMEOUT = "query_timeout"
    # A query needs more memory than the store may use (DuckDB ran out of memory).
    QUERY_TOO_LARGE = "query_too_large"
    # Every slot for heavy queries is taken, or a call waited its whole time limit for a worker.
    BUSY = "busy"
    INVALID_JQ = "invalid_jq"
    UNKNOWN_PROJECT = "unknown_project"
    UNKNOWN_TRACE = "unknown_trace"
    UNKNOWN_SPAN = "unknown_span"
    UNKNOWN_SESSION = "unknown_session"
    # Judgment: an annotation its config refuses, a write to more targets than allowed.
    INVALID_ANNOTATION = "invalid_annotation"
    CONFIRM_REQUIRED = "confirm_required"
    UNAUTHORIZED = "unauthorized"
    # Requests the HTTP guard refuses before any route sees them.
    FORBIDDEN_HOST = "forbidden_host"
    FORBIDDEN_ORIGIN = "forbidden_origin"
    REQUEST_TOO_LARGE = "request_too_large"
    SERVER_BUSY = "server_busy"
    OTLP_PORT_TAKEN = "otlp_port_taken"
    # traceproof.toml: a table that does not parse or validate, a name it does not declare, and
    # a custom evaluator that cannot start (its module does not import, its interpreter is gone).
    INVALID_CONFIG = "invalid_config"
    UNKNOWN_EVALUATOR = "unknown_evaluator"
    EVALUATOR_FAILED = "evaluator_failed"
    # A background job (evaluate's) this server does not know: never started, or forgotten.
    UNKNOWN_JOB = "unknown_job"
    # The LLM provider: no key or base URL set (or refused); failed after retries; an answer
    # outside the forced tool call's shape.
    LLM_UNAVAILABLE = "llm_unavailable"
    LLM_FAILED = "llm_failed"
    LLM_MALFORMED = "llm_malformed"
    # A feature this build does not have yet (the call is valid; it cannot be served).
    NOT_AVAILABLE = "not_available"
    # A failure inside traceproof itself (details in the server log, never in the message).
    INTERNAL_ERROR = "internal_error"


class TraceproofError(Exception):
    """Base of every error traceproof raises on purpose.

    ``str(error)`` is the full ``[code] message`` sentence; ``code`` and ``message`` are the
    parts.
    """

    code: ErrorCode = ErrorCode.STORE_ERROR

    def __init__(self, message: str, *, code: ErrorCode | None = None) -> None:
        if code is not None:
            self.code = code
        self.message = message
        super().__init__(f"[{self.code}] {message}")
