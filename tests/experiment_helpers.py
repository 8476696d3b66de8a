"""Test helpers for experiments: a dataset written straight into the tables (until the datasets
helper's storage functions are used), and a traceproof.toml with an echo task."""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from traceproof.storage import Store

PY = json.dumps(sys.executable)

#: A command task that answers its input's ``q`` as JSON, and the evaluator that checks it.
ECHO_TOML = f"""
[tasks.echo]
command = [{PY}, "-c", "import sys, json; print(json.dumps(json.load(sys.stdin)['q']))"]

[evaluators.same]
evaluator = "exact_match"
"""


def example_id(example: dict[str, Any]) -> str:
    content = {"input": example["input"], "expected": example.get("expected")}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def add_dataset(store: Store, name: str, examples: Sequence[dict[str, Any]]) -> str:
    """A dataset of one version holding ``examples`` (dicts of input, expected, metadata,
    split); its id."""
    dataset_id = "ds_" + hashlib.sha256(name.encode()).hexdigest()[:12]
    now = datetime.now(UTC).replace(tzinfo=None)

    def write(cursor: duckdb.DuckDBPyConnection) -> None:
        cursor.execute(
            "INSERT INTO datasets VALUES (?, ?, NULL, NULL, ?, ?)", [dataset_id, name, now, now]
        )
        cursor.execute(
            "INSERT INTO dataset_versions VALUES (?, 1, ?, ?, 0, NULL, ?)",
            [dataset_id, len(examples), len(examples), now],
        )
        for ex in examples:
            cursor.execute(
                "INSERT INTO dataset_examples VALUES (?, ?, 1, NULL, ?, ?, ?, ?, NULL, NULL)",
                [
                    dataset_id,
                    example_id(ex),
                    json.dumps(ex["input"]),
                    json.dumps(ex.get("expected")),
                    json.dumps(ex.get("metadata")),
                    ex.get("split"),
                ],
            )

    store.run_write(write)
    return dataset_id


def qa_examples(n: int) -> list[dict[str, Any]]:
    return [{"input": {"q": f"question {i}"}, "expected": f"question {i}"} for i in range(n)]


def write_config(folder: Path, text: str) -> Path:
    path = folder / "traceproof.toml"
    path.write_text(text)
    return path


def stored_experiment(store: Store, root: Path) -> str:
    """Dataset ``qa`` (2 examples) and one finished experiment of ``echo`` on it, scored by
    ``same`` (the tables of :data:`ECHO_TOML`); its id."""
    from traceproof.evals.config import parse_config
    from traceproof.experiments import runner

    add_dataset(store, "qa", qa_examples(2))
    plan = runner.plan_experiment(
        store, parse_config(ECHO_TOML, root=root), task="echo", dataset="qa", evaluators=["same"]
    )
    runner.execute(store, plan)
    return plan.id
