"""How far a judge agrees with people, and whether that is enough to trust it.

:func:`calibrate` takes one :class:`Pair` per target (the person's label, the judge's label,
both explanations) and computes: n, raw agreement, Cohen's kappa (also weighted, linear or
quadratic, when the labels are ordinal), per-label precision, recall and F1, the confusion
matrix (rows: people; columns: the judge), and for two-label judges the TPR and TNR with 95 %
Wilson intervals and the Rogan-Gladen prevalence-corrected rate. The verdict compares them with
thresholds (defaults: agreement ≥ 0.80, TPR and TNR ≥ 0.70, kappa ≥ 0.60). Undefined statistics
are None with a note, never a made-up number: a statistic that is undefined fails its threshold.

The definitions match scikit-learn's (``cohen_kappa_score``, ``confusion_matrix``,
``precision_recall_fscore_support`` with ``zero_division=nan``); the tests check them against it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, Field

from traceproof.evals.judge import INSUFFICIENT_EVIDENCE, FewShot, JudgeDefinition, JudgeTarget
from traceproof.settings import Settings

__all__ = [
    "Calibration",
    "Disagreement",
    "Interval",
    "LabelStats",
    "Pair",
    "Thresholds",
    "calibrate",
    "cohen_kappa",
    "confusion",
    "disagreements_as_few_shot",
    "rogan_gladen",
    "wilson",
]

#: z for a two-sided 95 % interval.
Z95 = 1.959963984540054
Weights = Literal["linear", "quadratic"]


@dataclass(frozen=True)
class Pair:
    """One target labelled by a person and by the judge (``judge_label`` None: it failed)."""

    target_id: str
    human_label: str
    judge_label: str | None
    human_explanation: str | None = None
    judge_explanation: str | None = None


class Thresholds(BaseModel):
    """What a judge must reach to pass."""

    agreement: float = 0.80
    tpr: float = 0.70
    tnr: float = 0.70
    kappa: float = 0.60

    @classmethod
    def from_settings(cls, settings: Settings) -> Thresholds:
        return cls(
            agreement=settings.calibration_min_agreement,
            tpr=settings.calibration_min_tpr,
            tnr=settings.calibration_min_tnr,
            kappa=settings.calibration_min_kappa,
        )


class Interval(BaseModel):
    low: float
    high: float


class LabelStats(BaseModel):
    """One label's precision, recall and F1 (people as the truth); None where undefined."""

    label: str
    precision: float | None
    recall: float | None
    f1: float | None
    support: int = Field(description="Targets people gave this label.")
    predicted: int = Field(description="Targets the judge gave this label.")


class Disagreement(BaseModel):
    target_id: str
    human_label: str
    judge_label: str
    human_explanation: str | None = None
    judge_explanation: str | None = None


class Calibration(BaseModel):
    """A judge measured against people, and the verdict."""

    judge: str | None = None
    definition_hash: str | None = None
    n: int = Field(description="Pairs compared (targets both people and the judge labelled).")
    skipped: int = Field(default=0, description="Pairs left out: the judge gave no label.")
    labels: list[str]
    agreement: float | None
    kappa: float | None = Field(description="Cohen's kappa; weighted when the labels are ordinal.")
    kappa_weights: str | None = Field(default=None, description="linear, quadratic or None.")
    kappa_unweighted: float | None
    per_label: list[LabelStats]
    confusion: list[list[int]] = Field(description="Rows: people's labels; columns: the judge's.")
    positive_label: str | None = None
    tpr: float | None = None
    tpr_interval: Interval | None = None
    tnr: float | None = None
    tnr_interval: Interval | None = None
    observed_positive_rate: float | None = None
    corrected_positive_rate: float | None = None
    disagreements: list[Disagreement] = Field(default_factory=list)
    disagreements_total: int = 0
    thresholds: Thresholds
    passed: bool
    reasons: list[str] = Field(description="Why it failed (empty when it passed).")
    notes: list[str] = Field(default_factory=list)


def confusion(
    truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str]
) -> list[list[int]]:
    """Counts of (truth row, predicted column) over ``labels``; pairs outside them ignored."""
    index = {label: i for i, label in enumerate(labels)}
    matrix = [[0] * len(labels) for _ in labels]
    for t, p in zip(truth, predicted, strict=True):
        if t in index and p in index:
            matrix[index[t]][index[p]] += 1
    return matrix


def cohen_kappa(matrix: Sequence[Sequence[int]], weights: Weights | None = None) -> float | None:
    """Cohen's kappa of a confusion matrix (weighted by distance in label order when asked);
    None when undefined (no pairs, or chance agreement is total: one label only)."""
    k = len(matrix)
    total = sum(sum(row) for row in matrix)
    if total == 0:
        return None
    rows = [sum(row) for row in matrix]
    cols = [sum(matrix[i][j] for i in range(k)) for j in range(k)]

    def weight(i: int, j: int) -> float:
        if weights is None:
            return 0.0 if i == j else 1.0
        return abs(i - j) if weights == "linear" else (i - j) ** 2

    observed = sum(weight(i, j) * matrix[i][j] for i in range(k) for j in range(k))
    expected = sum(weight(i, j) * rows[i] * cols[j] / total for i in range(k) for j in range(k))
    if expected == 0:
        return None
    return 1 - observed / expected


def wilson(successes: int, n: int, z: float = Z95) -> Interval | None:
    """The Wilson score interval of a proportion; None when n is 0."""
    if n == 0:
        return None
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return Interval(low=max(0.0, centre - half), high=min(1.0, centre + half))


def rogan_gladen(observed: float, tpr: float, tnr: float) -> tuple[float | None, str | None]:
    """The true prevalence behind an observed positive rate, given the judge's TPR and TNR,
    clipped to [0, 1]; None and why when TPR + TNR = 1 (the judge is no better than chance)."""
    youden = tpr + tnr - 1
    if abs(youden) < 1e-12:
        return None, "corrected rate undefined: TPR + TNR = 1 (the judge separates nothing)"
    corrected = (observed + tnr - 1) / youden
    note = None
    if corrected < 0 or corrected > 1:
        note = f"corrected rate {corrected:.3f} clipped to [0, 1]"
    return min(1.0, max(0.0, corrected)), note


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def calibrate(
    pairs: Iterable[Pair],
    labels: Sequence[str],
    *,
    ordinal: bool = False,
    weights: Weights = "quadratic",
    positive_label: str | None = None,
    thresholds: Thresholds | None = None,
    population: Sequence[str] | None = None,
    judge: str | None = None,
    definition_hash: str | None = None,
    max_disagreements: int = 50,
) -> Calibration:
    """The calibration of a judge over ``pairs``. ``labels`` are the judge's labels (in order
    when ``ordinal``); ``population`` is the judge's labels over the wider set whose positive
    rate is to be corrected (default: its labels in ``pairs``)."""
    thresholds = thresholds or Thresholds()
    pairs = list(pairs)
    labels = list(labels)
    notes: list[str] = []
    for pair in pairs:
        for label in (pair.human_label, pair.judge_label):
            if label is not None and label not in labels:
                labels.append(label)  # insufficient_evidence, or a person's own label
    judged = [p for p in pairs if p.judge_label is not None]
    skipped = len(pairs) - len(judged)
    if skipped:
        notes.append(f"{skipped} pairs left out: the judge gave no label (errors)")
    truth = [p.human_label for p in judged]
    predicted = [p.judge_label or "" for p in judged]
    n = len(judged)
    matrix = confusion(truth, predicted, labels)
    agree = sum(matrix[i][i] for i in range(len(labels)))
    agreement = _ratio(agree, n)
    kappa_plain = cohen_kappa(matrix)
    kappa = cohen_kappa(matrix, weights) if ordinal else kappa_plain
    if n and kappa is None:
        notes.append("kappa undefined: chance agreement is total (a single label throughout)")
    per_label = []
    for i, label in enumerate(labels):
        tp = matrix[i][i]
        support = sum(matrix[i])
        predicted_count = sum(row[i] for row in matrix)
        f1_den = support + predicted_count
        per_label.append(
            LabelStats(
                label=label,
                precision=_ratio(tp, predicted_count),
                recall=_ratio(tp, support),
                f1=_ratio(2 * tp, f1_den),
                support=support,
                predicted=predicted_count,
            )
        )
    result = Calibration(
        judge=judge,
        definition_hash=definition_hash,
        n=n,
        skipped=skipped,
        labels=labels,
        agreement=agreement,
        kappa=kappa,
        kappa_weights=weights if ordinal else None,
        kappa_unweighted=kappa_plain,
        per_label=per_label,
        confusion=matrix,
        thresholds=thresholds,
        passed=False,
        reasons=[],
        notes=notes,
    )
    main = [label for label in labels if label != INSUFFICIENT_EVIDENCE]
    if len(main) == 2:
        _binary(result, judged, main, positive_label or main[0], population)
    wrong = [p for p in judged if p.human_label != p.judge_label]
    result.disagreements_total = len(wrong)
    result.disagreements = [
        Disagreement(
            target_id=p.target_id,
            human_label=p.human_label,
            judge_label=p.judge_label or "",
            human_explanation=p.human_explanation,
            judge_explanation=p.judge_explanation,
        )
        for p in wrong[:max_disagreements]
    ]
    result.reasons = _verdict(result, thresholds, binary=len(main) == 2)
    result.passed = not result.reasons
    return result


def _binary(
    result: Calibration,
    judged: list[Pair],
    labels: list[str],
    positive: str,
    population: Sequence[str] | None,
) -> None:
    negative = labels[1] if positive == labels[0] else labels[0]
    both = [p for p in judged if p.human_label in labels and p.judge_label in labels]
    if len(both) < len(judged):
        result.notes.append(
            f"TPR and TNR over {len(both)} pairs: {len(judged) - len(both)} have "
            f"{INSUFFICIENT_EVIDENCE} or another label"
        )
    pos = [p for p in both if p.human_label == positive]
    neg = [p for p in both if p.human_label == negative]
    tp = sum(p.judge_label == positive for p in pos)
    tn = sum(p.judge_label == negative for p in neg)
    result.positive_label = positive
    result.tpr, result.tpr_interval = _ratio(tp, len(pos)), wilson(tp, len(pos))
    result.tnr, result.tnr_interval = _ratio(tn, len(neg)), wilson(tn, len(neg))
    if not pos:
        result.notes.append(f"TPR undefined: people gave no {positive!r}")
    if not neg:
        result.notes.append(f"TNR undefined: people gave no {negative!r}")
    seen = [
        label
        for label in (population if population is not None else [p.judge_label for p in both])
        if label in labels
    ]
    if not seen:
        return
    result.observed_positive_rate = sum(label == positive for label in seen) / len(seen)
    if result.tpr is None or result.tnr is None:
        result.notes.append("corrected rate undefined: TPR or TNR undefined")
        return
    corrected, note = rogan_gladen(result.observed_positive_rate, result.tpr, result.tnr)
    result.corrected_positive_rate = corrected
    if note:
        result.notes.append(note)


def _verdict(result: Calibration, limits: Thresholds, *, binary: bool) -> list[str]:
    if result.n == 0:
        return ["no pairs to compare: label some targets, and judge them"]
    reasons = []

    def need(name: str, value: float | None, floor: float) -> None:
        if value is None:
            reasons.append(f"{name} undefined (needs ≥ {floor:.2f})")
        elif value < floor:
            reasons.append(f"{name} {value:.3f} < {floor:.2f}")

    need("agreement", result.agreement, limits.agreement)
    need("kappa", result.kappa, limits.kappa)
    if binary:
        need("TPR", result.tpr, limits.tpr)
        need("TNR", result.tnr, limits.tnr)
    return reasons


def disagreements_as_few_shot(
    calibration: Calibration,
    targets: Mapping[str, JudgeTarget],
    *,
    limit: int = 8,
) -> list[FewShot]:
    """Few-shot examples for the judge's next version: each disagreement (those whose target is
    in ``targets``), labelled as the person labelled it, with the person's explanation (or a
    sentence saying what the judge got wrong). Use with :meth:`JudgeDefinition.with_examples`."""
    examples: list[FewShot] = []
    for item in calibration.disagreements:
        target = targets.get(item.target_id)
        if target is None:
            continue
        why = item.human_explanation or (
            f"A person labelled this {item.human_label!r}; a judge said {item.judge_label!r}"
            + (f" because: {item.judge_explanation}" if item.judge_explanation else "")
            + "."
        )
        examples.append(
            FewShot(
                input=target.input,
                output=target.output,
                expected=target.expected,
                label=item.human_label,
                explanation=why,
            )
        )
        if len(examples) >= limit:
            break
    return examples


def calibrate_definition(
    definition: JudgeDefinition,
    pairs: Iterable[Pair],
    *,
    thresholds: Thresholds | None = None,
    weights: Weights = "quadratic",
    population: Sequence[str] | None = None,
    max_disagreements: int = 50,
) -> Calibration:
    """:func:`calibrate` with the labels, order, positive label and hash of ``definition``."""
    return calibrate(
        pairs,
        definition.labels,
        ordinal=definition.ordinal,
        weights=weights,
        positive_label=definition.positive_label,
        thresholds=thresholds,
        population=population,
        judge=definition.name,
        definition_hash=definition.definition_hash,
        max_disagreements=max_disagreements,
    )
