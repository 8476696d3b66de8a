"""list_projects: the projects in the store, with their counts and time range.

The per-project figures are :func:`traceproof.tools.stats.get_stats`'s (the CLI's ``stats`` and
the server's ``/stats`` show the same numbers); this tool only fits them in a response budget.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from traceproof.storage import Store
from traceproof.tools.common import MaxChars, budget, size
from traceproof.tools.stats import ProjectStats, get_stats


class ProjectList(BaseModel):
    """The projects, by name."""

    projects: list[ProjectStats] = Field(description="One row per project, by name.")
    total: int = Field(description="Projects in the store (all of them, shown or not).")
    truncated: bool = Field(description="True when some projects did not fit in the budget.")
    next_call: str | None = Field(
        default=None, description="How to see the projects left out, when truncated."
    )


def list_projects(store: Store, *, max_chars: MaxChars = None) -> ProjectList:
    """Projects with trace, span and error counts and time range. Call first: other tools
    filter by these names."""
    rows = get_stats(store).projects
    result = ProjectList(projects=rows, total=len(rows), truncated=False)
    limit = budget(max_chars, store.settings)
    if size(result) <= limit:
        return result
    return _fitted(rows, limit)


def _fitted(rows: list[ProjectStats], limit: int) -> ProjectList:
    """The first projects that fit in ``limit`` characters, and the call that lists the rest."""
    result = ProjectList(projects=[], total=len(rows), truncated=True)
    used = size(_with_rest(result, len(rows)))
    for row in rows:
        used += size(row) + 1
        if used > limit:
            break
        result.projects.append(row)
    while result.projects and size(_with_rest(result, len(result.projects))) > limit:
        result.projects.pop()
    return _with_rest(result, len(result.projects))


def _with_rest(result: ProjectList, shown: int) -> ProjectList:
    result.next_call = (
        f'sql(query="SELECT name FROM projects ORDER BY name OFFSET {shown}") lists the '
        "projects left out"
    )
    return result
