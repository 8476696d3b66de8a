"""Calibration statistics, checked against scikit-learn as an oracle (test-only dependency)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from sklearn.exceptions import UndefinedMetricWarning
from sklearn.metrics import cohen_kappa_score, confusion_matrix, precision_recall_fscore_support

from traceproof.evals.calibration import (
    Pair,
    Thresholds,
    calibrate,
    calibrate_definition,
    disagreements_as_few_shot,
    rogan_gladen,
    wilson,
)
from traceproof.evals.judge import INSUFFICIENT_EVIDENCE, JudgeDefinition, JudgeTarget
from traceproof.settings import Settings


def pairs_of(human: list[str], judged: list[str]) -> list[Pair]:
    return [
        Pair(f"t{i}", h, j, f"person {i}", f"judge {i}")
        for i, (h, j) in enumerate(zip(human, judged, strict=True))
    ]


def random_labels(
    seed: int, labels: list[str], n: int, accuracy: float
) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    human = [rng.choice(labels) for _ in range(n)]
    judged = [h if rng.random() < accuracy else rng.choice(labels) for h in human]
    return human, judged


def close(ours: float | None, theirs: float) -> bool:
    if ours is None:
        return math.isnan(theirs)
    return ours == pytest.approx(float(theirs), abs=1e-12)


@pytest.mark.parametrize("seed", range(12))
def test_statistics_match_scikit_learn_on_random_label_sets(seed: int) -> None:
    rng = random.Random(seed)
    labels = ["bad", "poor", "fair", "good", "great"][: rng.randint(2, 5)]
    human, judged = random_labels(seed, labels, rng.randint(5, 300), rng.random())
    for ordinal, weights in ((False, None), (True, "linear"), (True, "quadratic")):
        result = calibrate(
            pairs_of(human, judged), labels, ordinal=ordinal, weights=weights or "quadratic"
        )
        assert result.n == len(human)
        assert result.confusion == confusion_matrix(human, judged, labels=labels).tolist()
        expected_kappa = cohen_kappa_score(human, judged, labels=labels, weights=weights)
        assert close(result.kappa, expected_kappa)
        assert close(result.kappa_unweighted, cohen_kappa_score(human, judged, labels=labels))
        assert result.agreement == pytest.approx(
            sum(h == j for h, j in zip(human, judged, strict=True)) / len(human)
        )
        precision, recall, f1, support = precision_recall_fscore_support(
            human, judged, labels=labels, zero_division=np.nan
        )
        for i, stats in enumerate(result.per_label):
            assert stats.label == labels[i]
            assert close(stats.precision, precision[i])
            assert close(stats.recall, recall[i])
            assert close(stats.f1, f1[i])
            assert stats.support == support[i]


@pytest.mark.parametrize("seed", range(6))
def test_two_label_rates_match_scikit_learn_recall_and_wilson_intervals(seed: int) -> None:
    human, judged = random_labels(seed, ["fail", "pass"], 200, 0.8)
    result = calibrate(pairs_of(human, judged), ["fail", "pass"])
    _, recall, _, support = precision_recall_fscore_support(
        human, judged, labels=["fail", "pass"], zero_division=np.nan
    )
    assert result.positive_label == "fail"
    assert result.tpr == pytest.approx(recall[0]) and result.tnr == pytest.approx(recall[1])
    assert result.tpr_interval is not None and result.tnr_interval is not None
    assert result.tpr_interval.low < result.tpr < result.tpr_interval.high
    expected = wilson(round(recall[0] * support[0]), int(support[0]))
    assert result.tpr_interval == expected


def test_wilson_matches_the_textbook_interval() -> None:
    # 81 of 263 (Wilson 1927 / Newcombe 1998, table I example): 0.2553 to 0.3662
    interval = wilson(81, 263)
    assert interval is not None
    assert (round(interval.low, 4), round(interval.high, 4)) == (0.2553, 0.3662)
    zero = wilson(0, 10)
    assert zero is not None and zero.low == 0 and round(zero.high, 4) == 0.2775  # z²/(n+z²)
    assert wilson(0, 0) is None


def test_the_corrected_rate_undoes_a_known_judge_bias() -> None:
    # True prevalence 0.30, TPR 0.9, TNR 0.8: the judge sees 0.3*0.9 + 0.7*0.2 = 0.41.
    corrected, note = rogan_gladen(0.41, 0.9, 0.8)
    assert corrected == pytest.approx(0.30) and note is None
    clipped, note = rogan_gladen(0.05, 0.9, 0.8)
    assert clipped == 0.0 and note is not None and "clipped" in note
    undefined, note = rogan_gladen(0.5, 0.6, 0.4)
    assert undefined is None and note is not None and "undefined" in note


def test_the_corrected_rate_uses_the_population_when_given() -> None:
    human = ["fail"] * 10 + ["pass"] * 10
    judged = ["fail"] * 9 + ["pass"] + ["fail"] * 2 + ["pass"] * 8
    result = calibrate(
        pairs_of(human, judged), ["fail", "pass"], population=["fail"] * 41 + ["pass"] * 59
    )
    assert (result.tpr, result.tnr) == (0.9, 0.8)
    assert result.observed_positive_rate == pytest.approx(0.41)
    assert result.corrected_positive_rate == pytest.approx(0.30)


def test_perfect_agreement_passes() -> None:
    human = ["pass", "fail", "pass", "fail", "pass"]
    result = calibrate(pairs_of(human, human), ["fail", "pass"])
    assert result.agreement == 1.0 and result.kappa == 1.0
    assert (result.tpr, result.tnr) == (1.0, 1.0)
    assert result.passed and result.reasons == [] and result.disagreements == []


def test_one_class_only_leaves_kappa_and_a_rate_undefined_and_fails() -> None:
    result = calibrate(pairs_of(["pass"] * 6, ["pass"] * 6), ["fail", "pass"])
    assert result.agreement == 1.0
    assert result.kappa is None and result.tpr is None and result.tnr == 1.0
    with pytest.warns(UndefinedMetricWarning):
        oracle = cohen_kappa_score(["pass"] * 6, ["pass"] * 6, labels=["fail", "pass"])
    assert math.isnan(oracle)
    assert not result.passed
    assert any("kappa undefined" in reason for reason in result.reasons)
    assert any("TPR undefined" in reason for reason in result.reasons)
    assert result.corrected_positive_rate is None


def test_no_pairs_is_a_failed_verdict_without_numbers() -> None:
    result = calibrate([], ["fail", "pass"])
    assert result.n == 0 and result.agreement is None and result.kappa is None
    assert result.confusion == [[0, 0], [0, 0]]
    assert not result.passed and result.reasons[0].startswith("no pairs")


def test_thresholds_are_parameters_with_the_issue_defaults() -> None:
    assert Thresholds() == Thresholds(agreement=0.8, tpr=0.7, tnr=0.7, kappa=0.6)
    assert Thresholds.from_settings(Settings()) == Thresholds()
    human = ["fail"] * 10 + ["pass"] * 10
    judged = ["fail"] * 6 + ["pass"] * 4 + ["pass"] * 10  # TPR 0.6, TNR 1.0, agreement 0.8
    result = calibrate(pairs_of(human, judged), ["fail", "pass"])
    assert not result.passed
    assert [r.split()[0] for r in result.reasons] == ["TPR"]
    lenient = calibrate(
        pairs_of(human, judged), ["fail", "pass"], thresholds=Thresholds(tpr=0.5, kappa=0.5)
    )
    assert lenient.passed


def test_judge_errors_are_left_out_and_counted() -> None:
    pairs = [*pairs_of(["pass", "fail"], ["pass", "fail"]), Pair("t9", "pass", None)]
    result = calibrate(pairs, ["fail", "pass"])
    assert result.n == 2 and result.skipped == 1
    assert any("left out" in note for note in result.notes)


def test_disagreements_carry_both_explanations_and_become_few_shot_examples() -> None:
    definition = JudgeDefinition(
        name="correctness",
        rubric="Is {output} right for {input}?",
        labels=("fail", "pass"),
        insufficient_evidence=True,
    )
    pairs = [
        Pair("a", "pass", "pass", "ok", "ok"),
        Pair("b", "fail", "pass", "It says Sydney.", "Looks right."),
        Pair("c", "pass", INSUFFICIENT_EVIDENCE, None, "Cannot tell."),
    ]
    result = calibrate_definition(definition, pairs)
    assert result.definition_hash == definition.definition_hash and result.judge == "correctness"
    assert result.labels == ["fail", "pass", INSUFFICIENT_EVIDENCE]
    assert [(d.target_id, d.human_label, d.judge_label) for d in result.disagreements] == [
        ("b", "fail", "pass"),
        ("c", "pass", INSUFFICIENT_EVIDENCE),
    ]
    assert result.disagreements[0].human_explanation == "It says Sydney."
    assert result.disagreements[0].judge_explanation == "Looks right."
    targets = {
        "b": JudgeTarget(id="b", input="Capital of Australia?", output="Sydney"),
        "c": JudgeTarget(id="c", input="2+2?", output="4"),
    }
    examples = disagreements_as_few_shot(result, targets)
    assert [(e.input, e.output, e.label) for e in examples] == [
        ("Capital of Australia?", "Sydney", "fail"),
        ("2+2?", "4", "pass"),
    ]
    assert examples[0].explanation == "It says Sydney."
    assert "'insufficient_evidence'" in examples[1].explanation
    next_version = definition.with_examples(examples)
    assert next_version.definition_hash != definition.definition_hash
    assert len(next_version.examples) == 2


def test_ordinal_definitions_get_weighted_kappa() -> None:
    definition = JudgeDefinition(
        name="helpfulness", rubric="{output}", labels=("low", "mid", "high"), ordinal=True
    )
    human = ["low", "mid", "high", "high", "mid", "low"]
    judged = ["mid", "mid", "high", "mid", "mid", "low"]
    result = calibrate_definition(definition, pairs_of(human, judged), weights="linear")
    assert result.kappa_weights == "linear"
    expected = cohen_kappa_score(human, judged, labels=list(definition.labels), weights="linear")
    assert result.kappa == pytest.approx(expected)
    assert result.tpr is None  # three labels: no TPR/TNR
