"""Planning an experiment: what :func:`traceproof.experiments.runner.execute` runs.

:func:`plan_experiment` resolves what to run (the task and evaluators of the project's
traceproof.toml, the dataset version, the examples times repetitions still to run, in example
id order) and records the experiment with its provenance (status ``running``), unless it is a
dry run. With ``resume`` it takes the stored experiment's task, dataset version, split,
evaluators and repetitions, refuses when the task or an evaluator changed since, and plans only
the runs that are missing, did not end ``ok``, or lack a verdict of an evaluator.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from traceproof.errors import ErrorCode, TraceproofError
from traceproof.evals import evaluation
from traceproof.evals.config import ProjectConfig
from traceproof.evals.evaluation import Prepared
from traceproof.experiments.provenance import provenance
from traceproof.experiments.tasks import Task
from traceproof.experiments.tasks import task_of as _task_of
from traceproof.storage import NotFound, Store
from traceproof.storage import datasets as datasets_db
from traceproof.storage import experiments as db
from traceproof.storage.judges import is_calibrated, save_evaluator_definition

__all__ = ["ExperimentPlan", "plan_experiment"]


@dataclass
class ExperimentPlan:
    """What :func:`execute` runs."""

    id: str
    task: Task
    project: str
    dataset_id: str
    dataset_version: int
    split: str | None
    evaluators: list[Prepared]
    evaluator_info: list[dict[str, Any]]
    repetitions: int
    concurrency: int
    timeout: float
    dry_run: bool
    examples: int
    total: int
    todo: list[tuple[dict[str, Any], int]]
    resumed: bool = False
    provenance: dict[str, Any] = field(default_factory=dict)


def _resolve_dataset(store: Store, dataset: str, version: int | None) -> tuple[str, int]:
    """The id of the dataset named (or with id) ``dataset`` and ``version`` checked (None: the
    newest); ``[not_found]`` for an unknown dataset or version."""
    with store.reader() as reader:
        dataset_id = str(datasets_db.resolve_dataset(reader, dataset)["id"])
        return dataset_id, datasets_db.dataset_version(reader, dataset_id, version)


def plan_experiment(
    store: Store,
    config: ProjectConfig,
    *,
    task: str | None,
    dataset: str | None,
    version: int | None = None,
    split: str | None = None,
    evaluators: Sequence[str] = (),
    repetitions: int | None = None,
    concurrency: int | None = None,
    timeout: float | None = None,
    name: str | None = None,
    dry_run: bool = False,
    resume: str | None = None,
) -> ExperimentPlan:
    """Resolve an experiment and, unless ``dry_run``, record it (status ``running``). With
    ``resume`` the stored experiment's task, dataset version, split, evaluators and
    repetitions are used (given ones that differ are refused: ``[invalid_argument]`` naming
    them), and only what is missing or failed is planned; with nothing to run, nothing is
    written."""
    settings = store.settings
    stored: dict[str, Any] | None = None
    if resume is not None:
        with store.reader() as reader:
            stored = db.get_experiment(reader, resume)
        if stored is None:
            raise TraceproofError(
                f"No experiment {resume[:60]!r} to resume; get_experiment without an id or "
                "`traceproof experiment list` name the stored ones.",
                code=ErrorCode.NOT_FOUND,
            )
        _check_resume(
            store, stored, task=task, dataset=dataset, version=version, split=split,
            evaluators=evaluators, repetitions=repetitions, name=name, dry_run=dry_run,
        )  # fmt: skip
        task = str(stored["task"])
        dataset_id, version_n = str(stored["dataset_id"]), int(stored["dataset_version"])
        split = stored["split"]
        evaluators = [str(e["name"]) for e in stored["evaluators"]]
        repetitions = int(stored["repetitions"])
        concurrency = concurrency or int(stored["concurrency"])
        timeout = timeout or float(stored["timeout_s"])
    else:
        if task is None or dataset is None:
            raise TraceproofError(
                "Name the task (a [tasks.NAME] of traceproof.toml) and the dataset, or pass "
                "resume with an experiment id.",
                code=ErrorCode.INVALID_ARGUMENT,
            )
        dataset_id, version_n = _resolve_dataset(store, dataset, version)
    the_task = _task_of(config, task)
    prepared = [evaluation.prepare(config.evaluator(e)) for e in dict.fromkeys(evaluators)]
    info = []
    with store.reader() as reader:
        for p in prepared:
            entry: dict[str, Any] = {"name": p.name, "kind": p.kind, "hash": p.definition_hash,
                                     "annotator": p.annotator}  # fmt: skip
            if p.judge is not None:
                entry["calibrated"] = is_calibrated(reader, p.definition_hash)
            info.append(entry)
        # In example id order: runs (and a dry run's first few) go in the order list_runs reads.
        examples = sorted(
            datasets_db.dataset_examples(reader, dataset_id, version_n, split),
            key=lambda e: str(e["id"]),
        )
        done_runs = db.runs_by_key(reader, resume) if resume else {}
    if stored is not None:
        if stored["task_hash"] != the_task.content_hash:
            raise TraceproofError(
                f"tasks.{task} changed since experiment {resume} started (its definition hash "
                "differs): resuming would mix two tasks. Start a new experiment instead.",
                code=ErrorCode.INVALID_ARGUMENT,
            )
        before = {e["name"]: e["hash"] for e in stored["evaluators"]}
        changed = [e["name"] for e in info if before.get(e["name"]) != e["hash"]]
        if changed:
            raise TraceproofError(
                f"Evaluator(s) {', '.join(changed)} changed since experiment {resume} started; "
                "start a new experiment instead.",
                code=ErrorCode.INVALID_ARGUMENT,
            )
    if not examples:
        where = f" split {split!r}" if split else ""
        raise TraceproofError(
            f"Dataset version {version_n}{where} has no examples; add_examples adds some.",
            code=ErrorCode.INVALID_ARGUMENT,
        )
    repetitions = repetitions or 1
    if dry_run:
        examples = examples[: settings.experiment_dry_run_examples]
        repetitions = 1
    run_timeout = float(timeout or the_task.timeout or settings.experiment_timeout_seconds)
    workers = int(concurrency or settings.experiment_concurrency)
    project = the_task.project or settings.default_project
    experiment_id = ("dry_" if dry_run else "exp_") + uuid.uuid4().hex[:12]
    if resume is not None:
        experiment_id = resume
    all_runs = [(ex, rep) for ex in examples for rep in range(1, repetitions + 1)]
    todo = all_runs
    if resume is not None:
        verdicts = _verdicts(store, prepared, resume)
        todo = [
            (ex, rep) for ex, rep in all_runs
            if done_runs.get((ex["id"], rep)) != "ok"
            or any(f"{resume}:{ex['id']}:{rep}" not in v for v in verdicts)
        ]  # fmt: skip
    prov = provenance(
        config.root,
        dataset_id=dataset_id,
        dataset_version=version_n,
        task=the_task.name,
        task_hash=the_task.content_hash,
        evaluators=info,
    )
    plan = ExperimentPlan(
        id=experiment_id,
        task=the_task,
        project=project if stored is None else str(stored["project"]),
        dataset_id=dataset_id,
        dataset_version=version_n,
        split=split,
        evaluators=prepared,
        evaluator_info=info,
        repetitions=repetitions,
        concurrency=workers,
        timeout=run_timeout,
        dry_run=dry_run,
        examples=len(examples),
        total=len(all_runs),
        todo=todo,
        resumed=resume is not None,
        provenance=prov if stored is None else dict(stored["provenance"]),
    )
    if dry_run or (stored is not None and not todo):
        return plan  # a dry run records nothing; nor does a resume with nothing to run
    for p in prepared:
        save_evaluator_definition(
            store, hash=p.definition_hash, name=p.name, kind=p.kind,
            definition=p.stored_definition(),
        )  # fmt: skip
    if stored is None:
        db.create_experiment(
            store,
            {
                "id": experiment_id,
                "name": name,
                "project": project,
                "task": the_task.name,
                "task_hash": the_task.content_hash,
                "dataset_id": dataset_id,
                "dataset_version": version_n,
                "split": split,
                "evaluators": info,
                "repetitions": repetitions,
                "concurrency": workers,
                "timeout_s": run_timeout,
                "status": "running",
                "provenance": prov,
                "summary": None,
            },
        )
    else:
        db.set_status(store, experiment_id, "running")
    return plan


def _check_resume(
    store: Store,
    stored: dict[str, Any],
    *,
    task: str | None,
    dataset: str | None,
    version: int | None,
    split: str | None,
    evaluators: Sequence[str],
    repetitions: int | None,
    name: str | None,
    dry_run: bool,
) -> None:
    """``[invalid_argument]`` naming what a resume was given that differs from the stored
    experiment: a resume runs the experiment as it was recorded."""
    differ: list[str] = []
    if task is not None and task != stored["task"]:
        differ.append(f"task {task!r} (it runs {stored['task']!r})")
    if dataset is not None:
        try:
            with store.reader() as reader:
                found: str | None = str(datasets_db.resolve_dataset(reader, dataset)["id"])
        except NotFound:
            found = None
        if found != stored["dataset_id"]:
            differ.append(f"dataset {dataset!r} (it runs {stored['dataset_id']})")
    if version is not None and version != stored["dataset_version"]:
        differ.append(f"version {version} (it runs {stored['dataset_version']})")
    if split is not None and split != stored["split"]:
        differ.append(f"split {split!r} (it runs {stored['split']!r})")
    recorded = [str(e["name"]) for e in stored["evaluators"]]
    if evaluators and list(dict.fromkeys(evaluators)) != recorded:
        differ.append(f"evaluators {list(evaluators)} (it runs {recorded})")
    if repetitions is not None and repetitions != stored["repetitions"]:
        differ.append(f"repetitions {repetitions} (it runs {stored['repetitions']})")
    if name is not None and name != stored["name"]:
        differ.append(f"name {name!r} (it is named {stored['name']!r})")
    if dry_run:
        differ.append("dry_run (a resume records its runs)")
    if differ:
        raise TraceproofError(
            f"resume={stored['id']} runs the experiment as it was recorded, and these "
            f"arguments differ from it: {'; '.join(differ)}. Drop them (concurrency and "
            "timeout may change), or start a new experiment without resume.",
            code=ErrorCode.INVALID_ARGUMENT,
        )


def _verdicts(store: Store, prepared: Sequence[Prepared], experiment_id: str) -> list[set[str]]:
    """Per evaluator, the run ids of this experiment it has a verdict on."""
    out = []
    with store.reader() as reader:
        for p in prepared:
            rows = reader.rows(
                "SELECT target_id FROM annotations WHERE target_kind = 'experiment_run' AND "
                "name = ? AND annotator = ? AND identifier = '' AND starts_with(target_id, ?) "
                "AND (metadata IS NULL OR json_extract(metadata, '$.error') IS NULL)",
                [p.name, p.annotator, experiment_id + ":"],
            )
            out.append({str(r[0]) for r in rows})
    return out
