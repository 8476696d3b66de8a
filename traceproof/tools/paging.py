"""Paging helpers shared by the trace-level tools: fitting a page to its budget, the
continuation call, and the checks every filtered call makes first."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from traceproof.errors import ErrorCode
from traceproof.storage import Reader
from traceproof.tools.common import ToolFailure, size

#: Longest name or id echoed in a row (they are normally short; a pathological one is cut).
ID_CHARS = 200


def largest_fit(build: Callable[[int], BaseModel], count: int, limit: int) -> int:
    """The most leading items whose response (``build(n)``) fits in ``limit`` characters; at
    least one when there are any, so that paging always moves on."""
    if count == 0 or size(build(count)) <= limit:
        return count
    low, high = 1, count - 1
    while low < high:
        middle = (low + high + 1) // 2
        if size(build(middle)) <= limit:
            low = middle
        else:
            high = middle - 1
    return low


#: The one form of a paged answer's ``next_call``: the cursor is not written twice.
NEXT_CALL_FORM = "{tool}(<same arguments>, cursor=next_cursor)"

#: Output-schema description of every paged answer's ``next_call``.
NEXT_CALL_DESCRIPTION = "This call, same arguments, cursor=next_cursor."


def next_call(tool: str) -> str:
    """The next page's call, ``tool(<same arguments>, cursor=next_cursor)``: repeat the call
    just made with its cursor argument set to the answer's ``next_cursor``."""
    return NEXT_CALL_FORM.format(tool=tool)


def tidy(value: float) -> float:
    """A measured number without float noise: to 0.1 from 100 up (1437.6999999999998 →
    1437.7 ms), three significant digits below (0.24444 → 0.244)."""
    if not math.isfinite(value) or value == 0:
        return value
    if abs(value) >= 100:
        return round(value, 1)
    return round(value, 2 - math.floor(math.log10(abs(value))))


def tidy_cell(value: Any) -> Any:
    """``value`` tidied when it is a float (a result cell of any type)."""
    return tidy(value) if isinstance(value, float) else value


def check_project(reader: Reader, project: str) -> None:
    """Raise UNKNOWN_PROJECT, naming a few known projects, unless ``project`` exists: a typo
    should say so rather than look like an empty result."""
    if reader.scalar("SELECT count(*) FROM projects WHERE name = ?", [project]):
        return
    names = [row[0] for row in reader.rows("SELECT name FROM projects ORDER BY name LIMIT 11")]
    known = ", ".join(repr(n[:60]) for n in names[:10]) or "none yet"
    if len(names) > 10:
        known += " and more"
    raise ToolFailure(
        f"No project {project[:ID_CHARS]!r}. Known projects: {known}. Call list_projects "
        "for their counts.",
        code=ErrorCode.UNKNOWN_PROJECT,
    )


def cut(text: str | None) -> str | None:
    """A name or id as is, unless pathologically long."""
    if text is None or len(text) <= ID_CHARS:
        return text
    return text[: ID_CHARS - 1] + "…"
