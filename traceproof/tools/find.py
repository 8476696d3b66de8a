"""(being written: see issue #3)"""

from __future__ import annotations

from pydantic import BaseModel

from traceproof.storage import Store


def find_in_trace(store: Store) -> BaseModel:
    """find_in_trace (not yet written)."""
    raise NotImplementedError
