"""Helpers for the evaluator tests: targets built from real span rows."""

from __future__ import annotations

from typing import Any

import pytest

from traceproof.evals.builtin import BUILTINS, evaluate_builtin
from traceproof.evals.target import EvalResult, EvalTarget, targets_from_rows
from traceproof.storage import Store


def judge(evaluator: str, target: EvalTarget, **params: Any) -> EvalResult:
    """``target`` judged by the built-in ``evaluator`` with ``params`` (validated)."""
    builtin = BUILTINS[evaluator]
    return evaluate_builtin(builtin, builtin.params.model_validate(params), target)


def text_target(output: Any = None, **fields: Any) -> EvalTarget:
    return EvalTarget(kind="span", id="s1", output=output, **fields)


@pytest.fixture(scope="session")
def demo_rows(demo_db: Any, tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """Every span row of the demo project, as the store returns them (from a copy of the
    demo store file)."""
    import shutil

    from traceproof.settings import Settings

    path = tmp_path_factory.mktemp("evals") / "demo.duckdb"
    shutil.copyfile(demo_db, path)
    with Store.open(path, Settings(db=path)) as store, store.reader() as reader:
        return reader.dicts("SELECT * FROM spans ORDER BY start_time, span_id")


@pytest.fixture(scope="session")
def demo_traces(demo_rows: list[dict[str, Any]]) -> list[EvalTarget]:
    return targets_from_rows(demo_rows, "trace")
