"""(being written: see issue #3)"""

from __future__ import annotations

from pydantic import BaseModel

from traceproof.storage import Store


def sql(store: Store) -> BaseModel:
    """sql (not yet written)."""
    raise NotImplementedError


def describe_schema(store: Store) -> BaseModel:
    """describe_schema (not yet written)."""
    raise NotImplementedError
