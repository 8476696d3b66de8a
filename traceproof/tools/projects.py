"""(being written: see issue #3)"""

from __future__ import annotations

from pydantic import BaseModel

from traceproof.storage import Store


def list_projects(store: Store) -> BaseModel:
    """list_projects (not yet written)."""
    raise NotImplementedError
