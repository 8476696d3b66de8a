"""Background jobs: their records, progress, cancelling, and what a registry keeps."""

from __future__ import annotations

import threading

import pytest

from traceproof.jobs import (
    Job,
    JobRegistry,
    JobStatus,
    report_progress,
    reporting_progress,
)


def test_a_job_runs_in_its_own_thread_and_records_its_result() -> None:
    registry = JobRegistry()
    gate = threading.Event()

    def work(job: Job) -> str:
        gate.wait(30)
        job.progress(3, 3)
        return "answer"

    job = registry.start("test", work, total=3)
    assert job.status is JobStatus.RUNNING and not job.wait(0)
    gate.set()
    assert job.wait(30)
    assert (job.status, job.result, job.done, job.total) == (JobStatus.DONE, "answer", 3, 3)
    assert job.finished_at is not None and job.finished_at >= job.started_at
    assert registry.get(job.id) is job


def test_a_failing_job_keeps_its_error() -> None:
    def work(job: Job) -> None:
        raise ValueError("broken")

    job = JobRegistry().start("test", work)
    assert job.wait(30)
    assert job.status is JobStatus.FAILED
    assert isinstance(job.error, ValueError) and str(job.error) == "broken"


def test_a_cancelled_job_stops_at_its_next_check() -> None:
    checked = threading.Event()
    release = threading.Event()

    def work(job: Job) -> None:
        while True:
            checked.set()
            release.wait(30)
            job.check_cancelled()

    job = JobRegistry().start("test", work)
    assert checked.wait(30)
    job.cancel()
    release.set()
    assert job.wait(30) and job.status is JobStatus.CANCELLED


def test_a_running_job_with_the_same_key_is_reused_not_started_again() -> None:
    registry = JobRegistry()
    gate = threading.Event()
    runs: list[int] = []

    def work(job: Job) -> None:
        runs.append(1)
        gate.wait(30)

    first = registry.start("test", work, key="same")
    second = registry.start("test", work, key="same")
    other = registry.start("test", work, key="other")
    assert second is first and other is not first
    gate.set()
    assert first.wait(30) and other.wait(30)
    assert len(runs) == 2
    assert registry.start("test", work, key="same") is not first  # finished: a new run


def test_only_the_newest_finished_jobs_are_kept() -> None:
    registry = JobRegistry(keep=2)
    jobs = [registry.start("test", lambda job: None) for _ in range(5)]
    for job in jobs:
        assert job.wait(30)
    registry.start("test", lambda job: None).wait(30)
    kept = registry.jobs()
    assert len(kept) == 2 and all(job.finished for job in kept)
    assert registry.get(jobs[0].id) is None


def test_waiting_reports_progress_as_it_changes() -> None:
    step = threading.Semaphore(0)

    def work(job: Job) -> None:
        for n in range(1, 4):
            step.acquire(timeout=30)
            job.progress(n, 3)

    job = JobRegistry().start("test", work, total=3)
    seen: list[tuple[float, float | None]] = []

    def listener(done: float, total: float | None, message: str | None) -> None:
        seen.append((done, total))
        step.release()

    assert job.wait(30, on_progress=listener)
    assert seen[0] == (0, 3) and seen[-1] == (3, 3)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_progress_reaches_the_listener_of_the_call_and_never_a_jobs_thread() -> None:
    heard: list[float] = []
    inside: list[bool] = []

    def work(job: Job) -> None:
        report_progress(99)  # nobody listens here: a job starts from an empty context
        inside.append(True)

    with reporting_progress(lambda done, total, message: heard.append(done)):
        report_progress(1, 2)
        JobRegistry().start("test", work).wait(30)
    report_progress(5)  # outside the block: nobody listens
    assert heard == [1] and inside == [True]


@pytest.mark.parametrize("keep", [0, -3])
def test_a_registry_keeps_at_least_one_finished_job(keep: int) -> None:
    assert JobRegistry(keep=keep).keep == 1
