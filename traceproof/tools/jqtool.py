"""(being written: see issue #3)"""

from __future__ import annotations

from pydantic import BaseModel

from traceproof.storage import Store


def jq(store: Store) -> BaseModel:
    """jq (not yet written)."""
    raise NotImplementedError
