"""(being written: see issue #3)"""

from __future__ import annotations

from pydantic import BaseModel

from traceproof.storage import Store


def search_traces(store: Store) -> BaseModel:
    """search_traces (not yet written)."""
    raise NotImplementedError


def get_session(store: Store) -> BaseModel:
    """get_session (not yet written)."""
    raise NotImplementedError
