"""Experiments in a store without running anything: datasets, experiments, runs and their
evaluations written straight into migration 3's tables (through ``store.run_write``) and the
annotation writer (evaluations are ``experiment_run`` annotations).

:func:`insert_dataset` / :func:`insert_experiment` write what a test needs;
:func:`insert_comparison` writes a ready baseline and candidate (see its docstring) and sets the
baseline, for tests of every tool that need experiments in the store.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from traceproof.evals.annotations import AnnotationInput, AnnotatorKind, TargetKind
from traceproof.storage import Store
from traceproof.storage.annotations import write_annotations

START = datetime(2026, 11, 1, 9, 0, 0)


def example_id(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def trace_id(*parts: Any) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]


def insert_dataset(
    store: Store, inputs: Sequence[Any], *, dataset_id: str = "ds_000000000001", name: str = "qa"
) -> list[str]:
    """A dataset of one version holding ``inputs`` (expected: none); the example ids."""
    ids = [example_id({"input": value, "expected": None}) for value in inputs]

    def run(cursor: Any) -> None:
        cursor.execute(
            "INSERT INTO datasets VALUES (?, ?, NULL, NULL, ?, ?)", [dataset_id, name, START, START]
        )
        cursor.execute(
            "INSERT INTO dataset_versions VALUES (?, 1, ?, ?, 0, NULL, ?)",
            [dataset_id, len(ids), len(ids), START],
        )
        for eid, value in zip(ids, inputs, strict=True):
            cursor.execute(
                "INSERT INTO dataset_examples VALUES (?, ?, 1, NULL, ?, NULL, NULL, NULL, NULL, "
                "NULL)",
                [dataset_id, eid, json.dumps(value)],
            )

    store.run_write(run)
    return ids


def insert_experiment(
    store: Store,
    experiment_id: str,
    scores: Mapping[str, Mapping[str, Sequence[float | str | None]]],
    *,
    evaluators: Sequence[str] | None = None,
    task: str = "qa",
    dataset_id: str = "ds_000000000001",
    status: str = "done",
    judges: Mapping[str, str] | None = None,
    run_status: Mapping[tuple[str, int], str] | None = None,
    latency: float = 100.0,
    cost: float | None = 0.001,
    minutes: int = 0,
) -> list[str]:
    """An experiment whose runs carry ``scores``: ``{evaluator: {example_id: [score of each
    repetition]}}`` (None: no annotation; a string: the evaluator's error, no score, that
    text as its explanation). ``evaluators``: the evaluators it records (default: the names
    of ``scores``). ``judges`` names evaluators written by an LLM judge,
    with the 12-hex version its annotator ends with; the others are CODE evaluators.
    ``run_status``: (example, repetition) → a failed run's status. The run ids."""
    judges = judges or {}
    run_status = run_status or {}
    examples: dict[str, int] = {}
    for by_example in scores.values():
        for eid, values in by_example.items():
            examples[eid] = max(examples.get(eid, 0), len(values))
    recorded = [
        {"name": n, "kind": "judge" if n in judges else "code", "hash": "", "calibrated": None}
        for n in (scores if evaluators is None else evaluators)
    ]
    created = START + timedelta(minutes=minutes)
    runs: list[tuple[Any, ...]] = []
    for index, (eid, reps) in enumerate(sorted(examples.items())):
        for rep in range(reps):
            status_of = run_status.get((eid, rep), "ok")
            runs.append(
                (
                    f"{experiment_id}:{eid}:{rep}",
                    experiment_id,
                    eid,
                    rep,
                    status_of,
                    None if status_of == "ok" else f"{status_of} after 5 s",
                    json.dumps({"answer": f"{experiment_id} answer {index}.{rep}"}),
                    [trace_id(experiment_id, eid, rep)],
                    latency + index,
                    50 + index,
                    cost,
                    1,
                    created,
                    created,
                )
            )

    def run(cursor: Any) -> None:
        cursor.execute(
            "INSERT INTO experiments VALUES (?, ?, 'app', ?, 'sha256:task', ?, 1, NULL, ?, ?, 1, "
            "30, ?, ?, NULL, ?, ?)",
            [
                experiment_id,
                experiment_id,
                task,
                dataset_id,
                json.dumps(recorded),
                max(examples.values(), default=1),
                status,
                json.dumps({"git_commit": "abc123", "git_dirty": False}),
                created,
                created,
            ],
        )
        cursor.executemany(
            "INSERT INTO experiment_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", runs
        )

    store.run_write(run)
    items = []
    for name, by_example in scores.items():
        for eid, values in by_example.items():
            for rep, value in enumerate(values):
                if value is None:
                    continue
                judge = name in judges
                said: dict[str, Any] = (
                    {"explanation": value, "metadata": {"error": "cannot_evaluate"}}
                    if isinstance(value, str)
                    else {"score": value}
                )
                items.append(
                    AnnotationInput(
                        target_kind=TargetKind.EXPERIMENT_RUN,
                        target_id=f"{experiment_id}:{eid}:{rep}",
                        name=name,
                        annotator_kind=AnnotatorKind.LLM if judge else AnnotatorKind.CODE,
                        annotator=f"{name}@{judges[name] if judge else 'code'}",
                        **said,
                    )
                )
    if items:
        write_annotations(store, items)
    return [r[0] for r in runs]


def set_stored_baseline(store: Store, task: str, dataset_id: str, experiment_id: str) -> None:
    store.run_write(
        lambda cursor: cursor.execute(
            "INSERT OR REPLACE INTO experiment_baselines VALUES (?, ?, ?, ?)",
            [task, dataset_id, experiment_id, START],
        )
    )


def insert_comparison(
    store: Store, *, examples: int = 10, dataset_name: str = "qa"
) -> dict[str, Any]:
    """A dataset of ``examples`` questions; baseline ``exp_base`` (the stored baseline of task
    ``qa``) and candidate ``exp_cand``, scored by ``correct`` (pass/fail) and ``quality``
    (0-1): the candidate fixes examples 0 and 1, breaks example 2 (``correct`` 1 → 0), and the
    baseline's two repetitions of example 3 disagree (flaky). What was written, by name."""
    ids = insert_dataset(
        store, [{"question": f"q{i}?"} for i in range(examples)], name=dataset_name
    )
    base_correct = {e: [1.0, 1.0] for e in ids}
    cand_correct = {e: [1.0, 1.0] for e in ids}
    base_correct[ids[0]] = base_correct[ids[1]] = [0.0, 0.0]
    base_correct[ids[3]] = [1.0, 0.0]
    cand_correct[ids[2]] = [0.0, 0.0]
    base_quality = {e: [0.5 + i / 100, 0.5 + i / 100] for i, e in enumerate(ids)}
    cand_quality = {e: [0.6 + i / 100, 0.6 + i / 100] for i, e in enumerate(ids)}
    insert_experiment(store, "exp_base", {"correct": base_correct, "quality": base_quality})
    insert_experiment(
        store, "exp_cand", {"correct": cand_correct, "quality": cand_quality}, minutes=10
    )
    set_stored_baseline(store, "qa", "ds_000000000001", "exp_base")
    return {"examples": ids, "baseline": "exp_base", "candidate": "exp_cand"}
