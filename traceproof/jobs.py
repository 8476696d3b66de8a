"""Background jobs: long work that outlives the call that started it, and progress reports.

A :class:`JobRegistry` (one per store: :func:`jobs_for`) runs each job's work in a thread of its
own and keeps its record: id, kind, status (``running``, ``done``, ``failed``, ``cancelled``),
``done``/``total``, start and end times, the result or the error. Records live in memory only:
the finished ones beyond the setting ``jobs_kept`` are forgotten, and a restarted server knows
none. That is by design: a job's real output is data in the store (annotations, runs), so
running the same work again resumes it from what the store holds. A job is cancelled by a flag
its work checks (:meth:`Job.check_cancelled`); a started job with the same ``key`` as a running
one is that running one (the same work is not done twice at once).

Progress: code deep inside a call reports it with :func:`report_progress`; whoever runs the call
(the MCP server, which turns it into MCP progress notifications, or the CLI's progress bar)
listens with :func:`reporting_progress`. The listener is held in a context variable, so it
follows the call into the thread it runs in (set it there) and never leaks into a job's thread,
which starts from an empty context.
"""

from __future__ import annotations

import contextvars
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

__all__ = [
    "Cancelled",
    "Job",
    "JobRegistry",
    "JobStatus",
    "ProgressListener",
    "jobs_for",
    "report_progress",
    "reporting_progress",
]

#: ``listener(done, total, message)``.
ProgressListener = Callable[[float, float | None, str | None], None]

_LISTENER: contextvars.ContextVar[ProgressListener | None] = contextvars.ContextVar(
    "traceproof_progress", default=None
)


def report_progress(done: float, total: float | None = None, message: str | None = None) -> None:
    """Tell whoever runs the current call how far it is (nothing happens when nobody listens).
    Must not block: listeners only hand the report on."""
    listener = _LISTENER.get()
    if listener is not None:
        listener(done, total, message)


@contextmanager
def reporting_progress(listener: ProgressListener | None) -> Iterator[None]:
    """Run the block with ``listener`` receiving its :func:`report_progress` calls."""
    token = _LISTENER.set(listener)
    try:
        yield
    finally:
        _LISTENER.reset(token)


class JobStatus(StrEnum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Cancelled(Exception):
    """Raised by a job's work when its cancel flag is set (:meth:`Job.check_cancelled`)."""


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class Job:
    """One background job's record. ``meta`` is the starter's own data (what the job is
    about, live tallies); ``result`` is what the work returned, ``error`` what it raised."""

    def __init__(
        self, kind: str, *, total: int = 0, key: Hashable | None = None, meta: Any = None
    ) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.kind = kind
        self.key = key
        self.meta = meta
        self.status = JobStatus.RUNNING
        self.done = 0
        self.total = total
        self.started_at = _now()
        self.finished_at: datetime | None = None
        self.result: Any = None
        self.error: BaseException | None = None
        self._cancel = threading.Event()
        self._changed = threading.Condition()
        self._seen = 0  # bumped on every change, so a waiter knows when to report

    # -- the work's side --------------------------------------------------------------------

    def progress(self, done: int, total: int | None = None) -> None:
        """Record that ``done`` of ``total`` (default: unchanged) are done."""
        with self._changed:
            self.done = done
            if total is not None:
                self.total = total
            self._seen += 1
            self._changed.notify_all()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check_cancelled(self) -> None:
        """Raise :class:`Cancelled` when the job was asked to stop."""
        if self._cancel.is_set():
            raise Cancelled(self.id)

    def _finish(
        self, status: JobStatus, result: Any = None, error: BaseException | None = None
    ) -> None:
        with self._changed:
            self.status, self.result, self.error = status, result, error
            self.finished_at = _now()
            self._seen += 1
            self._changed.notify_all()

    # -- the caller's side ------------------------------------------------------------------

    @property
    def finished(self) -> bool:
        return self.status is not JobStatus.RUNNING

    def cancel(self) -> None:
        """Ask the work to stop (it stops at its next check)."""
        self._cancel.set()

    def wait(self, timeout: float, on_progress: ProgressListener | None = None) -> bool:
        """Wait up to ``timeout`` seconds for the job to finish, calling ``on_progress(done,
        total, None)`` in this thread whenever its progress changes; whether it finished."""
        deadline = time.monotonic() + max(0.0, timeout)
        seen = -1
        while True:
            with self._changed:
                if self._seen == seen and not self.finished:
                    self._changed.wait(max(0.0, deadline - time.monotonic()))
                seen, done, total, finished = self._seen, self.done, self.total, self.finished
            if on_progress is not None and total:
                on_progress(done, total, None)
            if finished or time.monotonic() >= deadline:
                return finished


class JobRegistry:
    """The jobs of one store: running ones, and the last ``keep`` finished ones."""

    def __init__(self, keep: int = 100) -> None:
        self.keep = max(1, keep)
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()

    def start(
        self,
        kind: str,
        work: Callable[[Job], Any],
        *,
        total: int = 0,
        key: Hashable | None = None,
        meta: Any = None,
    ) -> Job:
        """Run ``work(job)`` in a thread of its own and return the job at once; when a running
        job has the same ``key``, return that one instead (``work`` is not run)."""
        with self._lock:
            if key is not None:
                for job in self._jobs.values():
                    if job.key == key and not job.finished:
                        return job
            job = Job(kind, total=total, key=key, meta=meta)
            self._jobs[job.id] = job
            self._forget_old()

        def run() -> None:
            try:
                result = work(job)
            except Cancelled:
                job._finish(JobStatus.CANCELLED)
            except BaseException as exc:  # the record says what happened; nothing is lost
                job._finish(JobStatus.FAILED, error=exc)
            else:
                job._finish(JobStatus.CANCELLED if job.cancelled else JobStatus.DONE, result)
            with self._lock:
                self._forget_old()

        # An empty context: the job must not inherit the starting call's deadline or listener.
        context = contextvars.Context()
        thread = threading.Thread(
            target=context.run, args=(run,), name=f"traceproof-{kind}-{job.id}", daemon=True
        )
        thread.start()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def jobs(self) -> list[Job]:
        """Every job kept, oldest first."""
        with self._lock:
            return list(self._jobs.values())

    def cancel_all(self) -> None:
        for job in self.jobs():
            job.cancel()

    def _forget_old(self) -> None:
        finished = [job_id for job_id, job in self._jobs.items() if job.finished]
        for job_id in finished[: max(0, len(finished) - self.keep)]:
            del self._jobs[job_id]


_REGISTRIES: weakref.WeakKeyDictionary[Any, JobRegistry] = weakref.WeakKeyDictionary()
_REGISTRIES_LOCK = threading.Lock()


def jobs_for(owner: Any) -> JobRegistry:
    """The job registry of ``owner`` (a store; made on first use, kept while it lives). Its
    ``settings.jobs_kept``, when it has one, bounds the finished jobs kept."""
    with _REGISTRIES_LOCK:
        found = _REGISTRIES.get(owner)
        if found is None:
            settings = getattr(owner, "settings", None)
            found = _REGISTRIES[owner] = JobRegistry(getattr(settings, "jobs_kept", 100))
        return found
