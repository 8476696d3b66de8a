"""traceproof: traces, evals and experiments for coding agents.

OTLP in, DuckDB inside, MCP out. See README.md.
"""

from traceproof.errors import ErrorCode, TraceproofError
from traceproof.settings import Settings
from traceproof.storage import Store, StoreError, StoreLocked, WriteResult

__version__ = "0.1.0"

__all__ = [
    "ErrorCode",
    "Settings",
    "Store",
    "StoreError",
    "StoreLocked",
    "TraceproofError",
    "WriteResult",
    "__version__",
]
