"""Why a search found nothing: one short sentence naming the filter that emptied the result.

An empty page alone leaves an agent (or a person) guessing: wrong project, a time window that
misses the data, a filter no row satisfies, or filters that each match but never together.
:func:`explain_empty` tells which, at the cost of a few counts, and only runs when a first page
came back empty (the search tools call it then and never otherwise).

Order of the checks: the scope (project or store) holds nothing; the time window misses the
data (with the age of the newest, or oldest, item); one filter alone matches nothing in the
window; else each filter matches some but not all of them together.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from traceproof.storage import Reader

#: Longest filter value quoted in a note.
VALUE_CHARS = 60


def explain_empty(
    reader: Reader,
    *,
    noun: str,
    table: str,
    project: str | None,
    since: str | None,
    until: str | None,
    since_at: datetime | None,
    until_at: datetime | None,
    filters: dict[str, Any],
    count: Callable[[dict[str, Any]], int],
    now: datetime | None = None,
) -> str:
    """A sentence saying why no ``noun`` (``"traces"``, ``"spans"``) matched.

    ``table`` is read for the scope's time range (``start_time``, ``project`` columns);
    ``filters`` are the call's other filters that were set (name → value); ``count(subset)``
    counts the matches in the scope and time window with only ``subset`` of them."""
    scope = f"project {project!r}" if project is not None else "the store"
    where, params = ("project = ?", [project]) if project is not None else ("TRUE", [])
    first, last, total = reader.rows(
        f"SELECT min(start_time), max(start_time), count(*) FROM {table} WHERE {where}", params
    )[0]
    if not total:
        return f"No {noun}: {scope} has none yet."
    window, one = _window(since, until), noun.removesuffix("s")
    if since_at is not None and last < since_at:
        age = f"{_age(last, now)} ago ({_at(last)})"
        return f"No {noun} since {since}: the newest {one} in {scope} started {age}."
    if until_at is not None and first >= until_at:
        return f"No {noun} before {until}: the oldest {one} in {scope} started {_at(first)}."
    if since_at is not None or until_at is not None:
        inside = count({}) if filters else 0  # no filters: the window alone emptied it
        if not inside:
            return f"No {noun}{window}: {scope} has {noun} from {_at(first)} to {_at(last)} only."
    matched: list[str] = []
    for name, value in filters.items():
        alone = count({name: value})
        shown = _shown(name, value)
        if not alone:
            return f"{scope[0].upper()}{scope[1:]} has no {noun} with {shown}{window}."
        matched.append(f"{shown}: {alone:,}")
    if len(matched) > 1:
        return (
            f"No {noun} match all the filters together{window}; each matches some in {scope} "
            f"({'; '.join(matched)})."
        )
    return f"No {noun} match the filters{window} in {scope}."


def _window(since: str | None, until: str | None) -> str:
    parts = ([f" since {since}"] if since else []) + ([f" before {until}"] if until else [])
    return " and".join(parts)


def _shown(name: str, value: Any) -> str:
    text = repr(value) if isinstance(value, str) else str(value)
    if len(text) > VALUE_CHARS:
        text = text[: VALUE_CHARS - 1] + "…"
    return f"{name}={text}"


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _at(moment: datetime) -> str:
    return f"{_utc(moment):%Y-%m-%d %H:%M} UTC"


def _age(moment: datetime, now: datetime | None) -> str:
    """``moment``'s age in its largest whole unit: "28 days", "3 hours", "12 minutes"."""
    seconds = max(0.0, ((now or datetime.now(UTC)) - _utc(moment)).total_seconds())
    for unit, length in (("day", 86_400), ("hour", 3_600), ("minute", 60)):
        if seconds >= length:
            amount = int(seconds // length)
            return f"{amount} {unit}{'s' if amount != 1 else ''}"
    return "less than a minute"


def annotation_note(reader: Reader, where: str | None) -> str | None:
    """For a ``where`` that reads annotations: which it read and what those names annotate in
    the store (``'resolved' annotates traces (60) here``), so a filter that found nothing is
    not mistaken for "no verdicts"."""
    from traceproof.tools.filters import annotation_names  # filters imports nothing from here

    names = annotation_names(where)
    if not names:
        return None
    rows = reader.rows(
        "SELECT name, target_kind, count(*) FROM annotations WHERE list_contains(?, name) "
        "GROUP BY ALL ORDER BY name, target_kind",
        [names],
    )
    kinds: dict[str, list[str]] = {}
    for name, kind, count in rows:
        kinds.setdefault(name, []).append(f"{kind}s ({count:,})")
    said = [
        f"{name!r} annotates {' and '.join(kinds[name])} here"
        if name in kinds
        else f"no annotation is named {name!r} here"
        for name in names
    ]
    quoted = ", ".join(repr(name) for name in names)
    return (
        f"The where read annotation {quoted} as a span's own, else its trace's, else its "
        f"session's (a trace matches by its own or any of its spans'); {'; '.join(said)}."
    )
