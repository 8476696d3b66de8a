"""Waiting for a finished run's spans: the receiver answers an export only once it is stored,
so spans a task flushed before exiting are there; :func:`wait_for_spans` polls until no new span
arrived for ``experiment_span_quiet_seconds``, at most ``experiment_span_wait_seconds``, through
one shared :class:`SpanCounts` per experiment.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import datetime
from typing import Any

from traceproof.storage import Store
from traceproof.storage import experiments as db

__all__ = ["SpanCounts", "wait_for_spans"]


class SpanCounts:
    """The span counts of an experiment's waiting runs, from one grouped query that every run
    asking at about the same time shares (a query per run and poll would load the store as
    much as the runs themselves). A run asks for counts taken after it asked."""

    def __init__(self, store: Store, experiment_id: str, since: datetime) -> None:
        self.store, self.experiment_id, self.since = store, experiment_id, since
        self._lock = threading.Lock()
        self._taken = 0.0
        self._by_run: dict[tuple[str, str], int] = {}
        self._by_trace: dict[str, int] = {}
        self._waiting: Counter[str] = Counter()
        self._waiting_lock = threading.Lock()

    def wait_on(self, trace_id: str, delta: int) -> None:
        with self._waiting_lock:
            self._waiting[trace_id] += delta
            if self._waiting[trace_id] <= 0:
                del self._waiting[trace_id]

    def count(self, example_id: str, rep: int, trace_id: str) -> int:
        asked = time.monotonic()
        with self._lock:
            if self._taken <= asked:
                self._taken = time.monotonic()
                with self._waiting_lock:
                    traces = list(self._waiting)
                with self.store.reader() as reader:
                    self._by_run, self._by_trace = db.span_counts(
                        reader, experiment_id=self.experiment_id, since=self.since,
                        trace_ids=traces,
                    )  # fmt: skip
            return self._by_run.get((example_id, str(rep)), 0) + self._by_trace.get(trace_id, 0)


def wait_for_spans(
    store: Store,
    experiment_id: str,
    counts: SpanCounts,
    example_id: str,
    rep: int,
    trace_id: str,
) -> list[dict[str, Any]]:
    """The spans of one finished run once no new one arrived for
    ``experiment_span_quiet_seconds`` (at most ``experiment_span_wait_seconds``)."""
    settings = store.settings
    deadline = time.monotonic() + settings.experiment_span_wait_seconds
    quiet = settings.experiment_span_quiet_seconds
    counts.wait_on(trace_id, 1)
    try:
        last = -1
        while True:
            count = counts.count(example_id, rep, trace_id)
            if count == last or time.monotonic() >= deadline:
                break
            last = count
            time.sleep(quiet)
    finally:
        counts.wait_on(trace_id, -1)
    if not count:
        return []
    with store.reader() as reader:
        return db.run_spans(
            reader, trace_id=trace_id, experiment_id=experiment_id, example_id=example_id,
            repetition=rep, since=counts.since,
        )  # fmt: skip
