"""(being written: see issue #3)"""

from __future__ import annotations

from pydantic import BaseModel

from traceproof.storage import Store


def aggregate(store: Store) -> BaseModel:
    """aggregate (not yet written)."""
    raise NotImplementedError
