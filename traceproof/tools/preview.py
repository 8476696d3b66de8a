"""(being written: see issue #3)"""

from __future__ import annotations

from pydantic import BaseModel

from traceproof.storage import Store


def get_trace_preview(store: Store) -> BaseModel:
    """get_trace_preview (not yet written)."""
    raise NotImplementedError
