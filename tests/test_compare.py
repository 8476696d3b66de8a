"""compare_experiments: the statistics against statsmodels and scipy (oracles only), flaky and
failed runs, the gate's rules and verdicts, the tool over the real MCP client within its budget,
and the CLI's exit codes and Markdown summary in a real child process."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from mcp import Client
from scipy import stats as scipy_stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.descriptivestats import sign_test as sm_sign_test
from statsmodels.stats.multitest import multipletests

from tests.proof_fixtures import (
    insert_comparison,
    insert_dataset,
    insert_experiment,
    set_stored_baseline,
)
from traceproof.cli_compare import finish_run
from traceproof.errors import ErrorCode, TraceproofError
from traceproof.experiments.compare import (
    Comparison,
    EvaluatorComparison,
    ExampleComparison,
    ExampleScore,
    ExperimentRef,
    OperationalDelta,
    bootstrap_interval,
    holm,
    min_discordant,
    minimal_detectable_effect,
    sign_test,
)
from traceproof.experiments.gate import evaluate_gate, parse_gate
from traceproof.server.mcp import create_mcp_server
from traceproof.storage import Store
from traceproof.tools.compare import compare_experiments, comparison_for

# -- statistics against the oracles -----------------------------------------------------------


@pytest.mark.parametrize(
    ("up", "down"), [(0, 0), (1, 0), (5, 0), (6, 0), (3, 9), (12, 4), (30, 41)]
)
def test_the_test_on_pass_fail_pairs_is_statsmodels_exact_mcnemar(up: int, down: int) -> None:
    # 20 concordant pairs (both pass or both fail) do not change the exact test
    differences = [1.0] * up + [-1.0] * down + [0.0] * 20
    table = [[12, up], [down, 8]]
    assert sign_test(differences) == pytest.approx(mcnemar(table, exact=True).pvalue, abs=1e-12)


def test_the_sign_test_on_numeric_differences_is_statsmodels_sign_test() -> None:
    rng = np.random.default_rng(7)
    for shift in (0.0, 0.2, 0.5):
        differences = np.round(rng.normal(shift, 1, size=35), 1)
        expected = sm_sign_test(differences, mu0=0)[1]
        assert sign_test(list(differences)) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("m", [1, 2, 3, 7, 20])
def test_holm_is_statsmodels_holm(m: int) -> None:
    rng = np.random.default_rng(m)
    p = list(rng.uniform(0, 0.2, size=m))
    p[0] = p[-1]  # ties
    expected = multipletests(p, method="holm")[1]
    assert holm(p) == pytest.approx(list(expected), abs=1e-12)


def test_the_paired_bootstrap_interval_covers_the_true_mean_about_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(2026)
    covered = 0
    trials = 300
    for trial in range(trials):
        differences = rng.normal(0.3, 1.0, size=40)
        low, high = bootstrap_interval(list(differences), resamples=2000, seed=trial)
        covered += low <= 0.3 <= high
    assert 0.90 <= covered / trials <= 0.98


def test_the_bootstrap_is_seeded_the_same_data_gives_the_same_interval() -> None:
    differences = [0.1, -0.2, 0.4, 0.0, 0.3, 0.25, -0.1]
    first = bootstrap_interval(differences)
    assert bootstrap_interval(differences) == first
    assert first[0] < np.mean(differences) < first[1]
    assert bootstrap_interval([0.2] * 5) == (0.2, 0.2)


def test_an_exact_sign_test_needs_six_one_sided_pairs_at_five_percent() -> None:
    assert min_discordant(0.05) == 6
    assert mcnemar([[0, 6], [0, 0]], exact=True).pvalue < 0.05
    assert mcnemar([[0, 5], [0, 0]], exact=True).pvalue > 0.05
    assert min_discordant(0.01) == 8


def test_the_minimal_detectable_effect_follows_its_formula() -> None:
    differences = [0.5, -0.1, 0.2, 0.0, 0.3, 0.1, 0.4, -0.2]
    sigma = np.std(differences, ddof=1)
    z = scipy_stats.norm.ppf(0.975) + scipy_stats.norm.ppf(0.8)
    expected = z * sigma / math.sqrt(len(differences))
    found = minimal_detectable_effect(differences, [0.5] * 8, binary=False)
    assert found == pytest.approx(expected)
    # nothing changed: the differences of an independent re-run of the baseline
    baseline = [0.2, 0.4, 0.6, 0.8, 0.3, 0.5]
    same = minimal_detectable_effect([0.0] * 6, baseline, binary=False)
    spread = math.sqrt(2) * np.std(baseline, ddof=1)
    assert same == pytest.approx(z * spread / math.sqrt(6))
    # pass/fail: at least the six discordant examples an exact test needs
    assert minimal_detectable_effect([0.0] * 40, [1.0] * 40, binary=True) == pytest.approx(6 / 40)
    assert minimal_detectable_effect([1.0] * 5, [0.0] * 5, binary=True) is None


# -- the comparison on a store ----------------------------------------------------------------


def test_the_comparison_counts_improved_regressed_unchanged_and_flaky(store: Store) -> None:
    made = insert_comparison(store)
    ids = made["examples"]
    found = comparison_for(store, "exp_cand")
    correct = next(e for e in found.evaluators if e.name == "correct")
    assert (correct.improved, correct.regressed, correct.unchanged, correct.flaky) == (2, 1, 6, 1)
    assert correct.kind == "binary" and correct.test == "mcnemar_exact"
    assert (correct.baseline_mean, correct.candidate_mean, correct.delta) == (0.75, 0.9, 0.15)
    # the flaky example's mean moved up (0.5 -> 1): three pairs up, one down
    assert correct.p_value == pytest.approx(mcnemar([[6, 3], [1, 0]], exact=True).pvalue, abs=1e-3)
    quality = next(e for e in found.evaluators if e.name == "quality")
    assert quality.kind == "numeric" and quality.test == "bootstrap+sign"
    assert quality.improved == 10 and quality.ci_low == quality.ci_high == 0.1
    adjusted = multipletests([correct.p_value, quality.p_value], method="holm")[1]
    assert [correct.p_adjusted, quality.p_adjusted] == pytest.approx(list(adjusted), rel=1e-2)
    first = found.examples[0]
    assert first.example_id == ids[2] and first.change == "mixed"
    assert first.evaluators["correct"].change == "regressed"
    assert first.input_preview == '{"question":"q2?"}'
    assert first.candidate_run_id == f"exp_cand:{ids[2]}:0"
    assert first.baseline_trace_id and first.candidate_trace_id
    flaky = next(x for x in found.examples if x.example_id == ids[3])
    assert flaky.evaluators["correct"].change == "flaky"
    assert found.verdict is not None and found.verdict.status == "fail"


def test_numeric_scores_are_flaky_only_within_the_baselines_own_spread(store: Store) -> None:
    ids = insert_dataset(store, ["a", "b", "c"])
    base = {"score": {ids[0]: [0.4, 0.6], ids[1]: [0.4, 0.6], ids[2]: [0.5, 0.5]}}
    cand = {"score": {ids[0]: [0.5, 0.5], ids[1]: [0.9, 0.9], ids[2]: [0.5, 0.5]}}
    insert_experiment(store, "exp_a", base)
    insert_experiment(store, "exp_b", cand, minutes=5)
    found = comparison_for(store, "exp_b", "exp_a")
    changes = {x.example_id: x.evaluators["score"].change for x in found.examples}
    assert changes == {ids[0]: "flaky", ids[1]: "improved", ids[2]: "unchanged"}


def test_a_failed_run_without_a_score_counts_as_a_fail_and_a_timeout(store: Store) -> None:
    ids = insert_dataset(store, ["a", "b"])
    insert_experiment(store, "exp_a", {"ok": {ids[0]: [1.0], ids[1]: [1.0]}})
    insert_experiment(
        store,
        "exp_b",
        {"ok": {ids[0]: [1.0], ids[1]: [None]}},
        run_status={(ids[1], 0): "timeout"},
        minutes=5,
    )
    found = comparison_for(store, "exp_b", "exp_a", "no_regressions,max_delta:timeouts<=0")
    (regressed,) = [x for x in found.examples if x.change == "regressed"]
    assert regressed.example_id == ids[1]
    assert regressed.candidate_error == "timeout: timeout after 5 s"
    timeouts = next(o for o in found.operational if o.metric == "timeouts")
    assert (timeouts.baseline, timeouts.candidate) == (0, 1)
    assert found.verdict is not None
    assert [c.status for c in found.verdict.checks] == ["pass", "pass", "fail", "fail"]


def test_an_evaluator_error_where_the_baseline_scored_is_a_regression_counted_as_0(
    store: Store,
) -> None:
    ids = insert_dataset(store, ["a", "b", "c", "d"])
    base = {"correct": {ids[0]: [1.0], ids[1]: [1.0], ids[2]: [0.0], ids[3]: [1.0]}}
    insert_experiment(store, "exp_a", base)
    error = "cannot_evaluate: the output has no 'answer'"
    insert_experiment(store, "exp_b", {"correct": {e: [error] for e in ids}}, minutes=5)
    found = comparison_for(store, "exp_b", "exp_a")
    assert not any("one experiment only" in note for note in found.notes), found.notes
    (correct,) = found.evaluators
    # every example regressed, the one the baseline failed too: the candidate could not be scored
    assert (correct.regressed, correct.errors, correct.examples) == (4, 4, 4)
    assert (correct.baseline_mean, correct.candidate_mean) == (0.75, 0.0)  # errors count as 0
    assert {x.change for x in found.examples} == {"regressed"}
    score = found.examples[0].evaluators["correct"]
    assert score.error == f"evaluator error: {error}"
    assert found.verdict is not None and found.verdict.status == "fail"
    assert "evaluator error: cannot_evaluate" in found.verdict.reasons[0]
    # the same error in both experiments is no change
    insert_experiment(store, "exp_c", {"correct": {e: [error] for e in ids}}, minutes=10)
    same = comparison_for(store, "exp_c", "exp_b")
    assert same.evaluators[0].regressed == 0 and same.evaluators[0].errors == 0


def test_a_failure_on_a_lower_is_better_evaluator_is_a_regression_left_out_of_the_means(
    store: Store,
) -> None:
    ids = insert_dataset(store, ["a", "b", "c"])
    store.run_write(
        lambda c: c.execute(
            "INSERT INTO annotation_configs VALUES ('steps', 'CONTINUOUS', NULL, NULL, NULL, "
            "'MINIMIZE', NULL, now()::TIMESTAMP, now()::TIMESTAMP)"
        )
    )
    insert_experiment(store, "exp_a", {"steps": {ids[0]: [5.0], ids[1]: [5.0], ids[2]: [4.0]}})
    insert_experiment(
        store,
        "exp_b",
        {"steps": {ids[0]: [3.0], ids[1]: ["timeout: no answer"], ids[2]: [None]}},
        run_status={(ids[2], 0): "crash"},
        minutes=5,
    )
    found = comparison_for(store, "exp_b", "exp_a")
    (steps,) = found.evaluators
    assert (steps.improved, steps.regressed, steps.errors, steps.examples) == (1, 2, 2, 3)
    assert (steps.baseline_mean, steps.candidate_mean) == (5.0, 3.0)  # the scored example
    changes = {x.example_id: x.evaluators["steps"] for x in found.examples}
    assert changes[ids[1]].error == "evaluator error: timeout: no answer"
    assert changes[ids[2]].error == "crash: crash after 5 s"
    assert changes[ids[2]].candidate is None and changes[ids[2]].change == "regressed"
    assert found.verdict is not None and found.verdict.status == "fail"


def test_lower_is_better_when_the_annotation_config_says_minimize(store: Store) -> None:
    ids = insert_dataset(store, ["a"])
    store.run_write(
        lambda c: c.execute(
            "INSERT INTO annotation_configs VALUES ('steps', 'CONTINUOUS', NULL, NULL, NULL, "
            "'MINIMIZE', NULL, now()::TIMESTAMP, now()::TIMESTAMP)"
        )
    )
    insert_experiment(store, "exp_a", {"steps": {ids[0]: [5.0]}})
    insert_experiment(store, "exp_b", {"steps": {ids[0]: [3.0]}}, minutes=5)
    found = comparison_for(store, "exp_b", "exp_a")
    assert found.evaluators[0].lower_is_better is True
    assert found.examples[0].change == "improved"


def test_an_uncalibrated_judge_makes_calibrated_judges_inconclusive(store: Store) -> None:
    ids = insert_dataset(store, [f"q{i}" for i in range(3)])
    scores = {"helpful": {e: [1.0] for e in ids}}
    insert_experiment(store, "exp_a", scores, judges={"helpful": "0123456789ab"})
    insert_experiment(store, "exp_b", scores, judges={"helpful": "0123456789ab"}, minutes=5)
    found = comparison_for(store, "exp_b", "exp_a", "no_regressions,calibrated_judges")
    assert found.evaluators[0].uncalibrated is True
    assert found.verdict is not None and found.verdict.status == "inconclusive"
    assert "helpful" in found.verdict.reasons[0]
    store.run_write(
        lambda c: c.execute(
            "INSERT INTO calibrations VALUES ('c1', 'helpful', 'sha256:0123456789abcdef', "
            "'people', 30, '{}', TRUE, '{}', now()::TIMESTAMP)"
        )
    )
    again = comparison_for(store, "exp_b", "exp_a", "no_regressions,calibrated_judges")
    assert again.evaluators[0].uncalibrated is False
    assert again.verdict is not None and again.verdict.status == "pass"


# -- the gate ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "kind", "name", "value", "percent"),
    [
        ("no_regressions", "no_regressions", None, None, False),
        ("no_regressions:correct", "no_regressions", "correct", None, False),
        ("no_significant_regressions", "no_significant_regressions", None, None, False),
        ("min:correct>=0.9", "min", "correct", 0.9, False),
        ("max:steps <= 4", "max", "steps", 4.0, False),
        ("max_delta:latency_p95<=+10%", "max_delta", "latency_p95", 10.0, True),
        ("max_delta:cost<=+0.01", "max_delta", "cost", 0.01, False),
        ("min_delta:correct>=-0.02", "min_delta", "correct", -0.02, False),
        ("min_delta:quality>=-5%", "min_delta", "quality", -5.0, True),
        ("significant:correct", "significant", "correct", None, False),
        ("calibrated_judges", "calibrated_judges", None, None, False),
        ("min_examples:30", "min_examples", None, 30.0, False),
    ],
)
def test_every_rule_form_parses(
    spec: str, kind: str, name: str | None, value: float | None, percent: bool
) -> None:
    (rule,) = parse_gate(spec)
    assert (rule.kind, rule.name, rule.value, rule.percent) == (kind, name, value, percent)


@pytest.mark.parametrize(
    "spec",
    ["", " , ", "no_regressions,,min:a>=1", "min:correct>0.9", "min:correct>=high",
     "max_delta:latency_p95<=10ms", "bogus", "significant:", "min_examples:-3", "min:>=1"],
)  # fmt: skip
def test_a_bad_gate_spec_is_refused_listing_the_rule_forms(spec: str) -> None:
    with pytest.raises(TraceproofError) as refused:
        parse_gate(spec)
    assert refused.value.code == ErrorCode.INVALID_ARGUMENT
    assert "min:EVALUATOR>=X" in str(refused.value)
    assert "max_delta:METRIC<=+X or +X%" in str(refused.value)


@pytest.mark.parametrize(
    ("spec", "number"),
    [("min:correct>=inf", "inf"), ("min:correct>=nan", "nan"), ("max:steps<=-inf", "-inf"),
     ("max_delta:latency_p95<=+1e999%", "+1e999"), ("min_delta:cost>=1_0", "1_0"),
     ("min:correct>=high", "high"), ("min_examples:-5", "-5"), ("min_examples:2.5", "2.5")],
)  # fmt: skip
def test_an_invalid_number_is_named_with_its_rule(spec: str, number: str) -> None:
    with pytest.raises(TraceproofError) as refused:
        parse_gate(f"no_regressions,{spec}")
    assert refused.value.code == ErrorCode.INVALID_ARGUMENT
    said = str(refused.value)
    assert f"The gate rule {spec!r} has an invalid number {number!r}" in said
    assert "is not one the gate knows" not in said


def test_gate_details_count_one_example_in_the_singular() -> None:
    single = evaluator("correct", examples=1, mde=None, p_adjusted=0.5)
    one = synthetic(examples_compared=1, evaluators=[single])
    verdict = evaluate_gate(one, "min_examples:1,significant:correct")
    details = [c.detail for c in verdict.checks]
    assert details[0] == "1 example in both"
    assert details[2] == "1 example compared (≥ 1)"
    assert details[3].startswith("1 example is too few")
    regressed = evaluate_gate(one, "no_regressions").checks[2].detail
    assert regressed.startswith("1 example regressed: e1")


def evaluator(name: str, **values: Any) -> EvaluatorComparison:
    row: dict[str, Any] = {
        "name": name,
        "kind": "binary",
        "examples": 40,
        "baseline_mean": 0.8,
        "candidate_mean": 0.9,
        "delta": 0.1,
        "test": "mcnemar_exact",
        "p_value": 0.01,
        "p_adjusted": 0.02,
        "mde": 0.15,
        "improved": 5,
        "regressed": 1,
        "unchanged": 34,
        "flaky": 0,
    }
    return EvaluatorComparison(**(row | values))


def synthetic(**values: Any) -> Comparison:
    ops = [
        OperationalDelta(metric="latency_p95_ms", baseline=100.0, candidate=108.0),
        OperationalDelta(metric="cost_usd", baseline=0.02, candidate=0.035),
        OperationalDelta(metric="errors", baseline=0.0, candidate=2.0),
        OperationalDelta(metric="tokens"),
    ]
    regressed = ExampleComparison(
        example_id="e1",
        change="regressed",
        evaluators={"correct": ExampleScore(baseline=1, candidate=0, change="regressed")},
    )
    row: dict[str, Any] = {
        "baseline": ExperimentRef(id="exp_a", status="done"),
        "candidate": ExperimentRef(id="exp_b", status="done"),
        "examples_compared": 40,
        "evaluators": [evaluator("correct"), evaluator("quality", kind="numeric", regressed=0)],
        "operational": ops,
        "examples": [regressed],
    }
    return Comparison(**(row | values))


@pytest.mark.parametrize(
    ("spec", "status"),
    [
        ("no_regressions", "fail"),
        ("no_regressions:quality", "pass"),
        ("no_regressions:nothing", "inconclusive"),
        ("min:correct>=0.9", "pass"),
        ("min:correct>=0.95", "fail"),
        ("max:correct<=0.95", "pass"),
        ("min:typo>=0.5", "inconclusive"),
        ("max_delta:latency_p95<=+10%", "pass"),
        ("max_delta:latency_p95<=+5%", "fail"),
        ("max_delta:latency_p95_ms<=+8", "pass"),
        ("max_delta:cost<=+0.01", "fail"),
        ("max_delta:cost_usd<=+0.02", "pass"),
        ("max_delta:errors<=+50%", "fail"),  # 0 → 2: an infinite increase
        ("max_delta:tokens<=+10%", "inconclusive"),  # no run recorded tokens
        ("min_delta:correct>=-0.02", "pass"),
        ("min_delta:correct>=+20%", "fail"),  # +12.5%
        ("significant:correct", "pass"),
        ("no_significant_regressions", "pass"),
        ("calibrated_judges", "pass"),
        ("min_examples:30", "pass"),
        ("min_examples:50", "inconclusive"),
        ("min:correct>=0.9,min_examples:50,no_regressions", "fail"),
        ("min:correct>=0.9,min_examples:50", "inconclusive"),
    ],
)
def test_each_rule_gives_its_verdict(spec: str, status: str) -> None:
    verdict = evaluate_gate(synthetic(), spec)
    assert verdict.status == status, verdict.reasons
    assert verdict.gate == spec
    assert [c.rule for c in verdict.checks] == ["compared", "finished", *spec.split(",")]
    assert verdict.reasons


def test_significance_rules_are_inconclusive_when_the_dataset_cannot_tell() -> None:
    small = synthetic(evaluators=[evaluator("correct", p_adjusted=0.4, mde=None, examples=4)])
    verdict = evaluate_gate(small, "significant:correct,no_significant_regressions")
    assert [c.status for c in verdict.checks[2:]] == ["inconclusive", "inconclusive"]
    assert "too few" in verdict.checks[2].detail
    wide = synthetic(evaluators=[evaluator("correct", p_adjusted=0.4, mde=0.3)])
    assert "detects effects ≥ 0.3" in evaluate_gate(wide, "significant:correct").reasons[0]
    worse = synthetic(evaluators=[evaluator("correct", delta=-0.2, p_adjusted=0.001)])
    assert evaluate_gate(worse, "significant:correct").status == "fail"
    assert evaluate_gate(worse, "no_significant_regressions").status == "fail"
    lower = synthetic(evaluators=[evaluator("steps", delta=-0.2, lower_is_better=True)])
    assert evaluate_gate(lower, "significant:steps").status == "pass"


def test_nothing_compared_or_an_unfinished_experiment_is_inconclusive() -> None:
    empty = evaluate_gate(synthetic(examples_compared=0, examples=[]), "min_examples:0")
    assert empty.status == "inconclusive"
    assert empty.reasons == ["compared: no example ran in both"]
    running = synthetic(candidate=ExperimentRef(id="exp_b", status="running"))
    verdict = evaluate_gate(running, "min:correct>=0.5")
    assert verdict.status == "inconclusive"
    assert "candidate exp_b is running" in verdict.reasons[0]


def test_no_regressions_is_inconclusive_when_the_candidate_lacks_evaluators_or_examples() -> None:
    clean = synthetic(examples=[], evaluators=[evaluator("correct", regressed=0)])
    assert evaluate_gate(clean, "no_regressions").status == "pass"
    lacking = clean.model_copy(update={"evaluators_only_baseline": ["has_a"]})
    for spec in (
        "no_regressions",
        "no_regressions,calibrated_judges",
        "no_significant_regressions",
    ):
        verdict = evaluate_gate(lacking, spec)
        assert verdict.status == "inconclusive", (spec, verdict.reasons)
        assert "has_a" in verdict.reasons[0]
    assert evaluate_gate(lacking, "no_regressions:correct").status == "pass"
    assert evaluate_gate(lacking, "no_regressions:has_a").status == "inconclusive"
    partial = clean.model_copy(update={"examples_only_baseline": 1})
    verdict = evaluate_gate(partial, "no_regressions")
    assert verdict.status == "inconclusive"
    assert "1 of the baseline's 41 examples" in verdict.reasons[0]
    assert "min_examples:N" in verdict.reasons[0]  # how to accept fewer
    assert evaluate_gate(partial, "no_regressions,min_examples:40").status == "pass"
    assert evaluate_gate(partial, "no_regressions,min_examples:41").status == "inconclusive"
    # a regression still fails
    assert evaluate_gate(synthetic(examples_only_baseline=1), "no_regressions").status == "fail"


def test_the_default_gate_does_not_pass_a_candidate_without_the_baselines_evaluators(
    store: Store,
) -> None:
    ids = insert_dataset(store, ["a", "b", "c", "d"])
    insert_experiment(store, "exp_a", {"correct": {e: [1.0] for e in ids}})
    insert_experiment(
        store, "exp_b", {"correct": {e: [None] for e in ids}}, evaluators=[], minutes=5
    )
    found = comparison_for(store, "exp_b", "exp_a")
    assert found.evaluators_only_baseline == ["correct"]
    assert found.verdict is not None and found.verdict.status == "inconclusive"
    assert "correct" in found.verdict.reasons[0]
    insert_experiment(store, "exp_c", {"correct": {ids[0]: [1.0]}}, minutes=10)
    subset = comparison_for(store, "exp_c", "exp_a")
    assert subset.examples_only_baseline == 3
    assert subset.verdict is not None and subset.verdict.status == "inconclusive"


# -- the tool over MCP ------------------------------------------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def call(store: Store, arguments: dict[str, Any]) -> Any:
    async with Client(create_mcp_server(store)) as opened:
        return await opened.call_tool("compare_experiments", arguments)


@pytest.mark.anyio
async def test_compare_experiments_pages_the_changed_examples_within_the_budget(
    store: Store,
) -> None:
    insert_comparison(store, examples=40)
    whole = await call(store, {"candidate": "exp_cand"})
    assert not whole.is_error
    answer = whole.structured_content
    assert answer["verdict"]["status"] == "fail"
    assert answer["baseline"]["id"] == "exp_base"  # auto: the stored baseline
    assert answer["examples"][0]["change"] == "mixed"
    assert answer["examples_changed"] == 40  # quality moved on every example
    assert answer["examples_listed"] == len(answer["examples"])
    arguments: dict[str, Any] = {"candidate": "exp_cand", "max_chars": 3000}
    async with Client(create_mcp_server(store)) as client:
        seen, pages = await read_pages(client, arguments)
    assert pages > 1
    every = comparison_for(store, "exp_cand").examples
    assert seen == [x.example_id for x in every if x.change != "unchanged"]
    tiny = await call(store, {"candidate": "exp_cand", "max_chars": 1000})
    assert len(tiny.content[0].text) <= 1000
    assert tiny.structured_content["verdict"]["status"] == "fail"


async def read_pages(client: Client, arguments: dict[str, Any]) -> tuple[list[str], int]:
    seen: list[str] = []
    pages = 0
    while True:
        result = await client.call_tool("compare_experiments", arguments)
        assert not result.is_error, result.content
        text = result.content[0].text
        assert len(text) <= 3000
        page = result.structured_content
        seen += [x["example_id"] for x in page.get("examples", [])]
        pages += 1
        if not page.get("next_cursor"):
            break
        assert page["truncated"] is True
        arguments["cursor"] = page["next_cursor"]
    return seen, pages


@pytest.mark.anyio
async def test_compare_experiments_says_what_to_do_without_a_baseline(store: Store) -> None:
    ids = insert_dataset(store, ["a"])
    insert_experiment(store, "exp_one", {"ok": {ids[0]: [1.0]}})
    missing = await call(store, {"candidate": "exp_one"})
    assert missing.is_error
    assert missing.content[0].text.startswith("[not_found] No baseline is set for task 'qa'")
    assert "set_baseline=true" in missing.content[0].text
    made = await call(store, {"candidate": "exp_one", "set_baseline": True})
    assert not made.is_error
    assert made.structured_content["baseline_set"].startswith("exp_one is the baseline")
    itself = await call(store, {"candidate": "exp_one"})
    assert itself.content[0].text.startswith("[invalid_argument] The candidate exp_one is its")
    unknown = await call(store, {"candidate": "exp_nope"})
    assert unknown.content[0].text.startswith("[not_found] No experiment 'exp_nope'")
    bad = await call(store, {"candidate": "exp_one", "gate": "min:ok>0.5"})
    assert bad.content[0].text.startswith("[invalid_argument] The gate rule 'min:ok>0.5'")


def stored_baseline(store: Store) -> Any:
    with store.reader() as reader:
        return reader.scalar("SELECT experiment_id FROM experiment_baselines")


def test_set_baseline_after_a_comparison_replaces_the_baseline_only_on_pass(
    store: Store,
) -> None:
    insert_comparison(store)
    failed = compare_experiments(store, candidate="exp_cand", set_baseline=True)
    assert failed.verdict is not None and failed.verdict.status == "fail"
    assert failed.baseline_set is not None
    assert failed.baseline_set.startswith("Baseline kept: exp_base (the verdict is fail;")
    assert stored_baseline(store) == "exp_base"
    unsure = compare_experiments(
        store, candidate="exp_cand", gate="min_examples:100", set_baseline=True
    )
    assert unsure.baseline_set is not None and "the verdict is inconclusive" in unsure.baseline_set
    assert stored_baseline(store) == "exp_base"
    answer = compare_experiments(
        store, candidate="exp_cand", gate="min:quality>=0.6", set_baseline=True
    )
    assert answer.baseline is not None and answer.baseline.id == "exp_base"
    assert answer.baseline_set == (
        "exp_cand is the baseline of task 'qa' on dataset ds_000000000001 (was exp_base)."
    )
    assert stored_baseline(store) == "exp_cand"
    # the candidate as its own baseline: set without comparing, whatever it would say
    forced = compare_experiments(
        store, candidate="exp_base", baseline="exp_base", set_baseline=True
    )
    assert forced.baseline_set is not None and forced.baseline_set.startswith("exp_base is the")
    assert stored_baseline(store) == "exp_base"


def test_a_name_several_experiments_carry_is_refused_listing_their_ids(store: Store) -> None:
    insert_comparison(store)
    store.run_write(lambda c: c.execute("UPDATE experiments SET name = 'nightly'"))
    for arguments in ({"candidate": "nightly"}, {"candidate": "exp_cand", "baseline": "nightly"}):
        with pytest.raises(TraceproofError) as refused:
            compare_experiments(store, **arguments)
        assert refused.value.code == ErrorCode.INVALID_ARGUMENT
        assert "'nightly' names 2 experiments: exp_cand, exp_base (newest first)" in str(
            refused.value
        )
    assert compare_experiments(store, candidate="exp_cand").candidate.id == "exp_cand"


def test_examples_listed_counts_the_examples_in_the_answer(store: Store) -> None:
    insert_comparison(store, examples=40)
    whole = compare_experiments(store, candidate="exp_cand", max_chars=80_000)
    assert whole.examples_listed == len(whole.examples) == whole.examples_changed == 40
    for chars in (1000, 3000, 20_000):
        page = compare_experiments(store, candidate="exp_cand", max_chars=chars)
        assert page.truncated and page.examples_listed == len(page.examples)
        assert page.examples_changed == 40


# -- the CLI ----------------------------------------------------------------------------------


def cli(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "traceproof", "experiment", *args, "--db", str(db)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env=env,
    )


def test_the_cli_exits_with_the_verdict_and_writes_the_markdown_summary(
    store: Store, tmp_path: Path
) -> None:
    made = insert_comparison(store)
    db = store.settings.db
    store.close()
    summary = tmp_path / "out" / "summary.md"
    failed = cli(db, "compare", "exp_cand", "--summary-md", str(summary))
    assert failed.returncode == 1, failed.stderr
    assert "FAIL exp_cand vs exp_base" in failed.stdout
    text = summary.read_text()
    assert text.startswith("## traceproof: ❌ FAIL")
    assert "| correct | 0.75 | 0.9 | +0.15 |" in text
    assert "### Regressions (1)" in text
    assert f"`{made['examples'][2]}`" in text
    passed = cli(db, "compare", "exp_cand", "--baseline", "exp_base", "--gate", "min:quality>=0.6")
    assert passed.returncode == 0, passed.stderr
    unsure = cli(db, "compare", "exp_cand", "--gate", "significant:correct", "--json")
    assert unsure.returncode == 2, unsure.stderr
    verdict = json.loads(unsure.stdout)["verdict"]
    assert verdict["status"] == "inconclusive" and verdict["gate"] == "significant:correct"
    for args in (
        ("compare", "exp_cand", "--gate", "bogus"),
        ("compare", "exp_nope"),
        ("compare", "exp_cand", "--no-such-option"),
        ("compare",),
    ):
        broken = cli(db, *args)
        assert broken.returncode == 3, (args, broken.stderr)
    assert (
        "[invalid_argument] The gate rule 'bogus'"
        in cli(db, "compare", "exp_cand", "--gate", "bogus").stderr
    )
    shown = cli(db, "baseline", "qa", "--dataset", "qa")
    assert shown.stdout.strip() == "baseline of task qa on dataset qa: exp_base"
    moved = cli(db, "baseline", "qa", "--dataset", "ds_000000000001", "--set", "exp_cand")
    assert moved.returncode == 0, moved.stderr
    assert moved.stdout.strip() == "baseline of task qa on dataset qa: exp_cand (was exp_base)"
    assert cli(db, "baseline", "qa", "--dataset", "nope").returncode == 3


def test_the_baseline_command_sets_one_through_a_server_and_refuses_an_ambiguous_name(
    store: Store,
) -> None:
    from tests.conftest import LiveServer
    from traceproof.cli_compare import _baseline
    from traceproof.remote import RemoteStore

    insert_comparison(store)
    with LiveServer(store, store.settings) as server:
        remote = RemoteStore(server.url)
        moved = _baseline(remote, "qa", "qa", "exp_cand")
        assert (moved["experiment_id"], moved["previous"]) == ("exp_cand", "exp_base")
        assert stored_baseline(store) == "exp_cand"  # though exp_cand fails the default gate
        store.run_write(lambda c: c.execute("UPDATE experiments SET name = 'nightly'"))
        for where in (remote, store):
            with pytest.raises(TraceproofError) as refused:
                _baseline(where, "qa", "qa", "nightly")
            assert refused.value.code == ErrorCode.INVALID_ARGUMENT
            assert "'nightly' names 2 experiments: exp_cand, exp_base" in str(refused.value)


def test_finish_run_returns_the_exit_code_for_experiment_run(store: Store, tmp_path: Path) -> None:
    insert_comparison(store)
    summary = tmp_path / "s.md"
    assert finish_run(store, "exp_cand", "auto", None, summary, None) == 1
    assert "❌ FAIL" in summary.read_text()
    assert finish_run(store, "exp_cand", None, "min:correct>=0.9", None, None) == 0
    assert finish_run(store, "exp_cand", "exp_base", "min_examples:100", None, None) == 2
    assert finish_run(store, "exp_nope", None, None, None, None) == 3
    set_stored_baseline(store, "qa", "ds_000000000001", "exp_cand")
    assert finish_run(store, "exp_cand", None, None, None, None) == 3  # its own baseline


def test_finish_run_through_the_server_holding_the_store_reads_every_page(
    store: Store, tmp_path: Path
) -> None:
    from tests.conftest import LiveServer
    from traceproof.remote import RemoteStore

    insert_comparison(store, examples=60)
    summary = tmp_path / "s.md"
    with LiveServer(store, store.settings) as server:
        remote = RemoteStore(server.url)
        assert finish_run(remote, "exp_cand", None, None, summary, None) == 1
        assert finish_run(remote, "exp_cand", "exp_base", "min:quality>=0.6", None, None) == 0
        assert finish_run(remote, "exp_nope", None, None, None, None) == 3
    assert "### Regressions (1)" in summary.read_text()


def test_the_cli_json_is_the_tools_answer_with_every_field(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.conftest import LiveServer
    from traceproof.remote import RemoteStore

    insert_comparison(store, examples=30)
    assert finish_run(store, "exp_cand", None, None, None, None, as_json=True) == 1
    local = json.loads(capsys.readouterr().out)
    tool = compare_experiments(store, candidate="exp_cand").model_dump(mode="json")
    assert set(local) == set(tool)
    for key in ("examples_only_baseline", "examples_only_candidate", "next_cursor"):
        assert local[key] is None
    assert local["truncated"] is False
    assert local["examples_listed"] == len(local["examples"]) == local["examples_changed"] == 30
    with LiveServer(store, store.settings) as server:
        remote = RemoteStore(server.url)
        assert finish_run(remote, "exp_cand", None, None, None, None, as_json=True) == 1
    through = json.loads(capsys.readouterr().out)
    assert set(through) == set(local)
    assert through["examples"] == local["examples"]
    assert (through["truncated"], through["examples_listed"]) == (False, 30)


def test_the_markdown_summary_escapes_what_would_break_its_tables() -> None:
    from traceproof.experiments.summary import summary_markdown

    comparison = synthetic()
    comparison.examples[0].input_preview = "a | b\nc `code`"
    comparison.verdict = evaluate_gate(comparison, "no_regressions")
    text = summary_markdown(comparison)
    assert text.startswith("## traceproof: ❌ FAIL\n")
    assert "| a \\| b c 'code' |" in text
    assert "| latency_p95_ms | 100 | 108 | – | – |" in text
    assert "| tokens |" not in text  # recorded by neither


def test_without_a_baseline_the_cli_says_how_to_set_one(
    store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    ids = insert_dataset(store, ["a"])
    insert_experiment(store, "exp_one", {"ok": {ids[0]: [1.0]}})
    assert finish_run(store, "exp_one", "auto", None, None, None) == 3
    said = " ".join(capsys.readouterr().err.split())
    assert "[not_found] No baseline is set for task 'qa' on dataset ds_000000000001." in said
    assert "`traceproof experiment baseline TASK --dataset DATASET --set EXPERIMENT_ID`" in said
