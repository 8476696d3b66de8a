"""A span as a document: every value it holds as a ``(path, value)`` leaf.

One vocabulary of field paths, shared by ``get_span_data``, ``find_in_trace`` and
``search_spans`` (and the same names ``where`` filters accept):

- public columns by name: ``name``, ``input_value``, ``status_message``, ``start_time``…
- attributes as ``attributes.<dotted OpenInference path>``: the store keeps attributes nested
  (``{"llm": {"input_messages": [{"message": …}]}}``), so array indexes become path segments
  (``attributes.llm.input_messages.3.message.content``);
- events as ``events.<i>.name``, ``events.<i>.timestamp``, ``events.<i>.attributes.…``;
- links as ``links.<i>.…`` and the resource as ``resource.service.name``.

Leaves are scalars (strings, numbers, booleans) or empty objects/lists; ``None`` columns are
left out. A value nested deeper than :data:`FOLD_DEPTH` (ingest never stores one that deep, but
a store may hold one) is one leaf at that depth whose value is its JSON text: reading a span
never recurses without bound. Offsets into a leaf count Python characters (code points) of
:attr:`Leaf.text`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from traceproof.storage import SPAN_COLUMNS
from traceproof.tools.common import iso_time
from traceproof.tools.paging import tidy

#: Columns stored as JSON, walked into leaves under their own name.
JSON_COLUMNS = ("attributes", "events", "links", "resource")

#: Levels below a JSON column walked into leaves; what is nested deeper becomes one leaf of
#: JSON text (as jq folds past its own depth).
FOLD_DEPTH = 64

#: Plain columns, in table order.
PLAIN_COLUMNS = tuple(c for c in SPAN_COLUMNS if c not in JSON_COLUMNS)

#: Where text search looks in ``search_spans`` (a span's own text, not its events or resource).
TEXT_COLUMNS = ("name", "input_value", "output_value", "status_message", "error_message")

#: Every column of a span, for ``SELECT``.
SELECT_COLUMNS = ", ".join(SPAN_COLUMNS)


@dataclass(frozen=True, slots=True)
class Leaf:
    """One value of a span and its field path."""

    path: str
    value: Any

    @property
    def text(self) -> str:
        """The value as text: strings as they are, anything else as compact JSON."""
        return self.value if isinstance(self.value, str) else dumps(self.value)


def dumps(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def leaves(row: Mapping[str, Any]) -> list[Leaf]:
    """Every leaf of a span row (a dict of its columns as the store returns them), columns
    first, then attributes, events, links, resource."""
    out: list[Leaf] = []
    for column in PLAIN_COLUMNS:
        value = row.get(column)
        if value is None:
            continue
        if isinstance(value, datetime):
            value = iso_time(value)
        elif isinstance(value, float):  # latency_ms: a measurement, sent without float noise
            value = tidy(value)
        out.append(Leaf(column, value))
    for column in JSON_COLUMNS:
        _walk(column, _parse(row.get(column)), out)
    return out


def _parse(value: Any) -> Any:
    if isinstance(value, str | bytes):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            return value
    return value


def _walk(path: str, node: Any, out: list[Leaf], depth: int = 0) -> None:
    if isinstance(node, dict | list) and node and depth >= FOLD_DEPTH:
        out.append(Leaf(path, _folded(node)))
    elif isinstance(node, dict) and node:
        for key, child in node.items():
            _walk(f"{path}.{key}", child, out, depth + 1)
    elif isinstance(node, list) and node:
        for index, child in enumerate(node):
            _walk(f"{path}.{index}", child, out, depth + 1)
    elif node is not None and not (path in JSON_COLUMNS and node in ({}, [])):
        out.append(Leaf(path, node))


def _folded(node: dict[str, Any] | list[Any]) -> str:
    """JSON text of a deep value; past what orjson writes (255 levels), an object of its
    leaves under dotted paths (``{"a.0.b": 1}``), made without recursion."""
    try:
        return dumps(node)
    except orjson.JSONEncodeError:
        pass
    flat: dict[str, Any] = {}
    stack: list[tuple[str, Any]] = [("", node)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, dict | list) and item:
            pairs = item.items() if isinstance(item, dict) else enumerate(item)
            children = [(f"{path}.{k}" if path else str(k), v) for k, v in pairs]
            stack.extend(reversed(children))
        else:
            flat[path] = item
    return dumps(flat)


# -- path patterns ------------------------------------------------------------------------------

_ROOTS = frozenset(PLAIN_COLUMNS) | frozenset(JSON_COLUMNS)


def path_matcher(patterns: Iterable[str]) -> Callable[[str], bool]:
    """A test of field paths against ``patterns``: dotted paths where ``*`` matches one
    segment (or part of one). A pattern also selects everything under it (``events`` selects
    every event field), and may leave out the ``attributes.`` prefix
    (``llm.input_messages.*.message.content``)."""
    regexes = [_pattern_regex(p) for p in patterns]

    def matches(path: str) -> bool:
        return any(r.match(path) for r in regexes)

    return matches


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    pattern = pattern.strip().removeprefix(".")
    segments = pattern.split(".")
    body = r"\.".join(re.escape(s).replace(r"\*", "[^.]*") for s in segments)
    if segments[0] in _ROOTS or segments[0] == "*":
        return re.compile(rf"(?:{body})(?:\..*)?\Z", re.DOTALL)
    return re.compile(rf"(?:attributes\.)?(?:{body})(?:\..*)?\Z", re.DOTALL)


def suggest(pattern: str, paths: list[str], count: int = 8) -> list[str]:
    """A few available paths to offer when ``pattern`` matched nothing: the closest first."""
    bare = pattern.replace("*", "0")
    close = difflib.get_close_matches(bare, paths, n=count, cutoff=0.4)
    close += difflib.get_close_matches("attributes." + bare, paths, n=count, cutoff=0.4)
    picked = list(dict.fromkeys(close))
    for path in paths:
        if len(picked) >= count:
            break
        if path not in picked:
            picked.append(path)
    return picked[:count]
