"""Error clusters: errors grouped by fingerprint, near-duplicate templates merged.

The input is pluggable. A source yields :class:`ErrorGroup` rows: errors that share a type, a
message template and a stack trace, already counted (the span source in
:mod:`traceproof.tools.errors` makes them in one DuckDB query, templating each distinct
message shape once); :func:`group_records` makes the same groups from single
:class:`ErrorRecord` values (an annotation's explanations, a list in memory). :func:`cluster`
then

1. fingerprints every group (:func:`traceproof.evals.fingerprint.make`: type, template, top
   frames) and adds up the groups with one fingerprint: counts, first and last seen, and the
   *sets* of traces and sessions, so distinct counts stay exact;
2. merges near-duplicate templates: within one error type, one set of top frames and one
   number of words, a template joins the first larger cluster whose template agrees with it on
   at least ``threshold`` of the word positions; the positions that differ read ``<*>``
   (``<*> tracking API did not respond within <duration>`` for DHL, FedEx and UPS). Only the
   ``max_templates`` largest clusters take part, each compared with at most
   :data:`MAX_COMPARED` others of its bucket, so the cost stays bounded whatever the input.

Everything is deterministic: the same errors give the same clusters, keys and order.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from traceproof.evals.fingerprint import (
    Fingerprint,
    key,
    make,
    strip_type,
    template,
    tokens,
    top_frames,
)

#: A template is compared with at most this many merged templates of its bucket.
MAX_COMPARED = 200
#: The word that stands for the positions where merged templates differ.
WILDCARD = "<*>"


@dataclass(frozen=True)
class Example:
    """One error of a cluster, as it was: its span and raw message (clipped by the source)."""

    span_id: str
    trace_id: str
    message: str
    seen: datetime


@dataclass(frozen=True)
class ErrorRecord:
    """One error from any source: an exception on a span, a judge's failing explanation…"""

    id: str
    trace_id: str
    session_id: str | None
    error_type: str | None
    message: str | None
    stack: str | None
    time: datetime
    span_name: str | None = None
    tool: str | None = None


@dataclass
class ErrorGroup:
    """Errors with one type, one message template and one stack trace, counted."""

    error_type: str | None
    template: str
    stack: str | None
    count: int
    first_seen: datetime
    last_seen: datetime
    span_names: Sequence[str] = ()
    tools: Sequence[str] = ()
    trace_ids: Sequence[str] = ()
    session_ids: Sequence[str] = ()
    examples: Sequence[Example] = ()  # the most recent first


@dataclass
class Cluster:
    """Errors with one fingerprint (after near-duplicates are merged)."""

    key: str
    error_type: str | None
    template: str
    frames: tuple[str, ...]
    count: int
    first_seen: datetime
    last_seen: datetime
    traces: set[str] = field(default_factory=set)
    sessions: set[str] = field(default_factory=set)
    span_names: Counter[str] = field(default_factory=Counter)
    tools: Counter[str] = field(default_factory=Counter)
    examples: list[Example] = field(default_factory=list)
    templates: set[str] = field(default_factory=set)
    #: Indices of the input groups it holds (what maps each error to its cluster).
    groups: list[int] = field(default_factory=list)

    def absorb(self, other: Cluster) -> None:
        self.count += other.count
        self.first_seen = min(self.first_seen, other.first_seen)
        self.last_seen = max(self.last_seen, other.last_seen)
        self.traces |= other.traces
        self.sessions |= other.sessions
        self.span_names.update(other.span_names)
        self.tools.update(other.tools)
        self.examples.extend(other.examples)
        self.templates |= other.templates
        self.groups.extend(other.groups)


#: What an :class:`ErrorGroup` is one of: error type, message template, stack trace.
GroupKey = tuple[str | None, str, str | None]


def group_key(group: ErrorGroup) -> GroupKey:
    return (group.error_type, group.template, group.stack)


def group_records(
    records: Iterable[ErrorRecord], examples: int = 3, keys: list[GroupKey] | None = None
) -> list[ErrorGroup]:
    """:class:`ErrorGroup` rows from single errors, templated in Python (RE2). ``keys``, when
    given, receives each record's group key, in the records' order."""
    groups: dict[GroupKey, ErrorGroup] = {}
    made: dict[tuple[str | None, str], str] = {}
    for record in records:
        known = (record.error_type, record.message or "")
        text = made.get(known)
        if text is None:
            text = made[known] = template(strip_type(record.error_type, record.message))
        ident = (record.error_type, text, record.stack)
        if keys is not None:
            keys.append(ident)
        group = groups.get(ident)
        if group is None:
            group = groups[ident] = ErrorGroup(
                record.error_type, text, record.stack, 0, record.time, record.time,
                [], [], [], [], [],
            )  # fmt: skip
        group.count += 1
        group.first_seen = min(group.first_seen, record.time)
        group.last_seen = max(group.last_seen, record.time)
        _add(group.span_names, record.span_name)
        _add(group.tools, record.tool)
        _add(group.trace_ids, record.trace_id)
        _add(group.session_ids, record.session_id)
        assert isinstance(group.examples, list)
        group.examples.append(
            Example(record.id, record.trace_id, record.message or "", record.time)
        )
        group.examples.sort(key=lambda e: (e.seen, e.span_id), reverse=True)
        del group.examples[examples:]
    return list(groups.values())


def _add(values: Sequence[str], value: str | None) -> None:
    assert isinstance(values, list)
    if value is not None and value not in values:
        values.append(value)


def cluster(
    groups: Iterable[ErrorGroup],
    *,
    threshold: float = 0.8,
    max_templates: int = 1000,
    examples: int = 3,
) -> list[Cluster]:
    """The clusters of ``groups``, largest first (ties: earliest first seen, then key)."""
    exact: dict[str, Cluster] = {}
    frames_of: dict[str | None, tuple[str, ...]] = {}
    for index, group in enumerate(groups):
        frames = frames_of.get(group.stack)
        if frames is None:
            frames = frames_of[group.stack] = top_frames(group.stack)
        found = make(group.error_type, group.template, frames)
        one = _cluster_of(found, group, index)
        have = exact.get(found.key)
        if have is None:
            exact[found.key] = one
        else:
            have.absorb(one)
    merged = _merge(list(exact.values()), threshold, max_templates)
    for item in merged:
        item.examples.sort(key=lambda e: (e.seen, e.span_id), reverse=True)
        del item.examples[examples:]
    merged.sort(key=lambda c: (-c.count, c.first_seen, c.key))
    return merged


def _cluster_of(found: Fingerprint, group: ErrorGroup, index: int) -> Cluster:
    return Cluster(
        key=found.key,
        error_type=found.error_type,
        template=found.template,
        frames=found.frames,
        count=group.count,
        first_seen=group.first_seen,
        last_seen=group.last_seen,
        traces=set(group.trace_ids),
        sessions=set(group.session_ids),
        span_names=Counter({name: group.count for name in group.span_names}),
        tools=Counter({tool: group.count for tool in group.tools}),
        examples=list(group.examples),
        templates={found.template},
        groups=[index],
    )


def assignments(
    groups: Sequence[ErrorGroup], clusters: Iterable[Cluster]
) -> dict[GroupKey, Cluster]:
    """Each group's key (type, template, stack) → the cluster :func:`cluster` put it in (merged
    near-duplicates included): what maps every single error to its cluster."""
    return {group_key(groups[i]): item for item in clusters for i in item.groups}


def similarity(merged: Sequence[str], words: Sequence[str]) -> float:
    """Share of word positions where ``words`` agrees with a merged template (whose
    :data:`WILDCARD` agrees with anything); 0 for templates of different lengths."""
    if len(merged) != len(words) or not words:
        return 0.0
    same = sum(1 for a, b in zip(merged, words, strict=True) if a in (b, WILDCARD))
    return same / len(words)


def _merge(clusters: list[Cluster], threshold: float, max_templates: int) -> list[Cluster]:
    """Near-duplicate templates merged into the larger cluster (see the module's docstring)."""
    clusters.sort(key=lambda c: (-c.count, c.first_seen, c.key))
    if threshold > 1:
        return clusters
    buckets: dict[tuple[str | None, tuple[str, ...], int], list[tuple[list[str], Cluster]]] = {}
    out: list[Cluster] = []
    for index, item in enumerate(clusters):
        words = tokens(item.template)
        if index >= max_templates or WILDCARD in words or not words:
            out.append(item)
            continue
        bucket = buckets.setdefault((item.error_type, item.frames, len(words)), [])
        target = next(
            (pair for pair in bucket[:MAX_COMPARED] if similarity(pair[0], words) >= threshold),
            None,
        )
        if target is None:
            bucket.append((words, item))
            out.append(item)
            continue
        merged_words, into = target
        for i, word in enumerate(words):
            if merged_words[i] != word:
                merged_words[i] = WILDCARD
        into.absorb(item)
        into.template = " ".join(merged_words)
    for item in out:
        if len(item.templates) > 1:  # a merged cluster: its key names what it now holds
            item.key = key(item.error_type, item.template, item.frames)
    return out
