"""(being written: see issue #3)"""

from __future__ import annotations

from pydantic import BaseModel

from traceproof.storage import Store


def get_span_data(store: Store) -> BaseModel:
    """get_span_data (not yet written)."""
    raise NotImplementedError


def search_spans(store: Store) -> BaseModel:
    """search_spans (not yet written)."""
    raise NotImplementedError
