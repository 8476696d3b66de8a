"""The comparison object (PROOF.md's "The comparison object"): what
:func:`traceproof.experiments.compare.compare` answers and :mod:`traceproof.experiments.gate`
gives a verdict, as pydantic models (the ``compare_experiments`` tool's output schema).
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, Field

from traceproof.tools.common import JsonValue, UtcTime

__all__ = [
    "OPERATIONAL_METRICS",
    "Change",
    "Check",
    "Comparison",
    "EvaluatorComparison",
    "ExampleChange",
    "ExampleComparison",
    "ExampleScore",
    "ExperimentRef",
    "OperationalDelta",
    "OperationalMetric",
    "Verdict",
]

Change = Literal["improved", "regressed", "unchanged", "flaky"]
ExampleChange = Literal["regressed", "mixed", "improved", "flaky", "unchanged"]
OperationalMetric = Literal[
    "latency_p50_ms", "latency_p95_ms", "tokens", "cost_usd", "tool_calls", "errors", "timeouts"
]
#: The operational metrics, in the order a comparison lists them.
OPERATIONAL_METRICS: tuple[OperationalMetric, ...] = get_args(OperationalMetric)


class ExperimentRef(BaseModel):
    id: str
    name: str | None = None
    task: str | None = None
    dataset_id: str | None = None
    dataset_version: int | None = None
    status: str | None = None
    created_at: UtcTime | None = None
    provenance: dict[str, JsonValue] = Field(default_factory=dict)


class EvaluatorComparison(BaseModel):
    name: str
    kind: Literal["binary", "numeric"]
    lower_is_better: bool | None = Field(default=None, description="Its config says MINIMIZE.")
    examples: int = Field(description="Examples compared on it.")
    baseline_mean: float
    candidate_mean: float
    delta: float = Field(description="candidate_mean - baseline_mean.")
    ci_low: float | None = Field(default=None, description="95% paired bootstrap interval.")
    ci_high: float | None = None
    test: Literal["mcnemar_exact", "bootstrap+sign"]
    p_value: float
    p_adjusted: float = Field(description="Holm-corrected across evaluators.")
    mde: float | None = Field(
        default=None, description="Smallest effect this dataset detects (None: none)."
    )
    improved: int
    regressed: int
    unchanged: int
    flaky: int
    errors: int = Field(
        default=0,
        description="Of the regressed: examples the candidate failed on (its run or the "
        "evaluator) where the baseline did not; 0 in the means when higher is better, else "
        "left out of them.",
    )
    uncalibrated: bool = Field(default=False, description="A judge without passing calibration.")


class OperationalDelta(BaseModel):
    metric: OperationalMetric
    baseline: float | None = None
    candidate: float | None = None
    delta: float | None = None
    delta_pct: float | None = None


class ExampleScore(BaseModel):
    baseline: float
    candidate: float | None = Field(default=None, description="None: it could not be scored.")
    change: Change
    error: str | None = Field(
        default=None,
        description="The candidate failed where the baseline did not (its run or the "
        "evaluator): a regression.",
    )


class ExampleComparison(BaseModel):
    example_id: str
    change: ExampleChange
    evaluators: dict[str, ExampleScore] = Field(default_factory=dict)
    input_preview: str | None = None
    baseline_output: str | None = None
    candidate_output: str | None = None
    baseline_trace_id: str | None = None
    candidate_trace_id: str | None = None
    baseline_run_id: str | None = None
    candidate_run_id: str | None = None
    baseline_error: str | None = Field(default=None, description="Status: reason, if it failed.")
    candidate_error: str | None = None


class Check(BaseModel):
    rule: str
    status: Literal["pass", "fail", "inconclusive"]
    detail: str


class Verdict(BaseModel):
    status: Literal["pass", "fail", "inconclusive"]
    gate: str
    reasons: list[str] = Field(default_factory=list)
    checks: list[Check] = Field(default_factory=list)


class Comparison(BaseModel):
    baseline: ExperimentRef | None = None
    candidate: ExperimentRef
    examples_compared: int = 0
    examples_only_baseline: int | None = None
    examples_only_candidate: int | None = None
    evaluators_only_baseline: list[str] = Field(
        default_factory=list,
        description="Evaluators the baseline ran that scored none of the candidate's runs.",
    )
    evaluators: list[EvaluatorComparison] = Field(default_factory=list)
    operational: list[OperationalDelta] = Field(default_factory=list)
    examples: list[ExampleComparison] = Field(default_factory=list)
    verdict: Verdict | None = None
    notes: list[str] = Field(default_factory=list)
