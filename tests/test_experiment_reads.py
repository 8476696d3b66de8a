"""Reading experiments back: get_experiment within its budget whatever the experiment holds, the
listing of experiments, done/total, the run-status filter, and what a resume may change."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.experiment_helpers import ECHO_TOML, add_dataset, qa_examples, write_config
from traceproof.errors import ErrorCode, TraceproofError
from traceproof.settings import Settings
from traceproof.storage import Store
from traceproof.storage import experiments as db
from traceproof.tools.experiments import cancel_experiment, get_experiment, run_experiment


@pytest.fixture
def fast(tmp_path: Path) -> Iterator[Store]:
    settings = Settings(db=tmp_path / "store.duckdb", experiment_span_quiet_seconds=0.05)
    settings.config = write_config(tmp_path, ECHO_TOML)
    with Store.open(settings.db, settings) as opened:
        yield opened


NOW = datetime.now(UTC).replace(tzinfo=None)


def stored(
    store: Store,
    key: str,
    *,
    runs: int,
    evaluators: int = 1,
    text: int = 10,
    name: str | None = None,
    status: str = "done",
) -> str:
    """An experiment written straight into the tables: ``runs`` runs whose error and output
    are ``text`` characters long, a summary of ``evaluators`` evaluators with a few labels."""
    dataset_id = add_dataset(store, f"ds_{key}", qa_examples(runs))
    with store.reader() as reader:
        ids = [r[0] for r in reader.rows(
            "SELECT example_id FROM dataset_examples WHERE dataset_id = ? ORDER BY 1",
            [dataset_id],
        )]  # fmt: skip
    names = [f"evaluator_with_a_rather_long_name_{i}" for i in range(evaluators)]
    summary = {
        "runs": runs,
        "status": {"ok": runs},
        "latency_p50_ms": 12.5,
        "evaluators": {
            n: {"count": runs, "mean": 0.5, "labels": {"pass": 1, "fail": 1, "partial": 3},
                "errors": 0}
            for n in names
        },
    }  # fmt: skip
    exp_id = f"exp_{key}"
    db.create_experiment(
        store,
        {
            "id": exp_id, "name": name, "project": "default", "task": "echo",
            "task_hash": "h" * 64, "dataset_id": dataset_id, "dataset_version": 1,
            "split": None, "evaluators": [{"name": n, "kind": "code", "hash": "e" * 64,
                                           "annotator": n} for n in names],
            "repetitions": 1, "concurrency": 1, "timeout_s": 10.0, "status": status,
            "provenance": {"git_commit": "c" * 40, "git_dirty": True, "diff_hash": "d" * 64,
                           "evaluators": [{"name": n, "hash": "e" * 64} for n in names]},
            "summary": summary,
        },
    )  # fmt: skip
    db.upsert_runs(
        store,
        [
            {"id": f"{exp_id}:{e}:1", "experiment_id": exp_id, "example_id": e, "repetition": 1,
             "status": "error" if i % 2 else "ok", "error": "E" * text if i % 2 else None,
             "output": "o" * text, "trace_ids": ["t" * 32], "latency_ms": 1.0,
             "started_at": NOW, "finished_at": NOW}
            for i, e in enumerate(ids)
        ],
    )  # fmt: skip
    return exp_id


SHAPES = {
    "plain": {"runs": 5},
    "many_evaluators": {"runs": 4, "evaluators": 40},
    "long_texts": {"runs": 30, "text": 5000},
    "everything": {"runs": 30, "evaluators": 25, "text": 5000, "name": "n" * 500},
    "interrupted": {"runs": 3, "evaluators": 10, "status": "running"},
}


@pytest.mark.parametrize("budget", [1000, 1200, 1500, 2500, 5000])
def test_get_experiment_keeps_within_max_chars_whatever_the_experiment_holds(
    fast: Store, budget: int
) -> None:
    for key, shape in SHAPES.items():
        exp_id = stored(fast, key, **shape)
        seen = 0
        cursor = None
        for _ in range(100):
            page = get_experiment(fast, id=exp_id, max_chars=budget, cursor=cursor)
            assert len(page.model_dump_json()) <= budget, (key, budget)
            assert page.id == exp_id and page.status is not None
            assert page.runs, (key, budget)  # every page moves on
            seen += len(page.runs)
            cursor = page.next_cursor
            if cursor is None:
                break
        assert seen == shape["runs"], (key, budget)


def test_get_experiment_without_an_id_lists_the_newest_first_paged_within_budget(
    fast: Store,
) -> None:
    assert get_experiment(fast).experiments == []
    made = [stored(fast, f"k{i}", runs=1, name="x" * 300) for i in range(12)]
    interrupted = stored(fast, "left", runs=1, status="running")
    listed = get_experiment(fast, limit=5)
    assert listed.experiments is not None and len(listed.experiments) == 5
    assert listed.experiments[0].id == interrupted
    assert listed.experiments[0].status == "interrupted"  # no job runs it
    ids: list[str] = []
    cursor = None
    while True:
        page = get_experiment(fast, limit=50, max_chars=1000, cursor=cursor)
        assert len(page.model_dump_json()) <= 1000 and page.experiments
        ids += [e.id for e in page.experiments]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert ids == [interrupted, *reversed(made)]
    with pytest.raises(TraceproofError) as caught:
        get_experiment(fast, status="ok")
    assert caught.value.code == ErrorCode.INVALID_ARGUMENT


def test_an_unknown_run_status_is_refused_naming_the_statuses(fast: Store) -> None:
    exp_id = stored(fast, "s", runs=2)
    assert [r.status for r in get_experiment(fast, id=exp_id, status="error").runs] == ["error"]
    with pytest.raises(TraceproofError) as caught:
        get_experiment(fast, id=exp_id, status="nosuch")
    assert caught.value.code == ErrorCode.INVALID_ARGUMENT
    assert "bad_output" in str(caught.value) and "'nosuch'" in str(caught.value)


def test_done_and_total_are_filled_for_ended_experiments(fast: Store) -> None:
    add_dataset(fast, "qa", qa_examples(3))
    ran = run_experiment(fast, task="echo", dataset="qa", repetitions=2, wait=60)
    assert ran.status == "done"
    shown = get_experiment(fast, id=ran.id)
    assert (shown.done, shown.total) == (6, 6)
    ended = cancel_experiment(fast, id=ran.id)
    assert (ended.status, ended.done, ended.total) == ("done", 6, 6)
    cut_short = stored(fast, "c", runs=4, status="cancelled")
    fast.run_write(  # two of its four runs were stored before the cancel
        lambda c: c.execute(
            "DELETE FROM experiment_runs WHERE experiment_id = ? AND status = 'error'",
            [cut_short],
        )
    )
    shown = get_experiment(fast, id=cut_short)
    assert (shown.status, shown.done, shown.total) == ("cancelled", 2, 4)


def _row(store: Store, exp_id: str) -> dict[str, Any]:
    with store.reader() as reader:
        return reader.dicts("SELECT * FROM experiments WHERE id = ?", [exp_id])[0]


def test_a_resume_with_nothing_to_run_changes_nothing_stored(fast: Store) -> None:
    add_dataset(fast, "qa", qa_examples(2))
    ran = run_experiment(fast, task="echo", dataset="qa", evaluators=["same"], wait=60)
    before = _row(fast, ran.id)
    again = run_experiment(fast, resume=ran.id, wait=60)
    assert again.status == "done" and "Nothing to resume" in (again.note or "")
    assert again.summary is not None and again.summary == json.loads(before["summary"])
    assert _row(fast, ran.id) == before


def test_a_resume_refuses_arguments_that_differ_from_the_experiment(fast: Store) -> None:
    add_dataset(fast, "qa", qa_examples(2))
    add_dataset(fast, "other", qa_examples(3))
    ran = run_experiment(fast, task="echo", dataset="qa", evaluators=["same"], wait=60)
    before = _row(fast, ran.id)
    for given, word in (
        ({"task": "reply"}, "task 'reply'"),
        ({"dataset": "other"}, "dataset 'other'"),
        ({"repetitions": 3}, "repetitions 3"),
        ({"evaluators": ["other"]}, "evaluators"),
        ({"split": "train"}, "split 'train'"),
    ):
        with pytest.raises(TraceproofError) as caught:
            run_experiment(fast, resume=ran.id, wait=60, **given)
        assert caught.value.code == ErrorCode.INVALID_ARGUMENT, given
        assert word in str(caught.value), (given, str(caught.value))
    assert _row(fast, ran.id) == before
    same = run_experiment(fast, resume=ran.id, task="echo", dataset="qa", wait=60)
    assert "Nothing to resume" in (same.note or "")


def test_an_out_of_range_number_is_named_as_given(fast: Store) -> None:
    add_dataset(fast, "qa", qa_examples(1))
    with pytest.raises(TraceproofError) as caught:
        run_experiment(fast, task="echo", dataset="qa", repetitions=1_000_000_000)
    assert "repetitions=1000000000 is out of range" in str(caught.value)
