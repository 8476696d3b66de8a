"""traceproof: traces, evals and experiments for coding agents.

OTLP in, DuckDB inside, MCP out. See README.md.

The names below are imported when first used (PEP 562), so that importing a submodule (the
`traceproof` command's entry point among them, :mod:`traceproof.entry`) does not load DuckDB and
pyarrow first.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from traceproof.errors import ErrorCode, TraceproofError
    from traceproof.settings import Settings
    from traceproof.storage import Store, StoreError, StoreLocked, WriteResult

__version__ = "0.1.0"

_EXPORTS = {
    "ErrorCode": "traceproof.errors",
    "TraceproofError": "traceproof.errors",
    "Settings": "traceproof.settings",
    "Store": "traceproof.storage",
    "StoreError": "traceproof.storage",
    "StoreLocked": "traceproof.storage",
    "WriteResult": "traceproof.storage",
}

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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'traceproof' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
