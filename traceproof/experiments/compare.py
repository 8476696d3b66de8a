"""Baseline against candidate, example by example. The comparison object's models are in
:mod:`traceproof.experiments.comparison`, the statistics in
:mod:`traceproof.experiments.significance` (both re-exported here).

:func:`compare` takes what :mod:`traceproof.storage.comparison` reads of two experiments (their
rows, runs and the current ``experiment_run`` annotations on the runs) and answers a
:class:`Comparison` (PROOF.md's shape), without a verdict (:mod:`traceproof.experiments.gate`
adds it). The rules, precisely:

- **Examples compared**: those both experiments ran. A run's score for an evaluator is its
  current annotation of that name (the evaluator's own, CODE or LLM, before a person's; the
  newest), its ``score``, else its label read as pass/fail (:data:`PASS_LABELS`,
  :data:`FAIL_LABELS`). A run that failed (error, timeout, crash, bad output) and carries no
  score for one of its experiment's evaluators, or whose evaluator errored (an annotation with
  ``metadata.error`` and no score), scores 0 on it when higher is better: an application that
  crashes, or that the evaluator cannot score, has not passed. When lower is better there is
  no worst score, and such a run has none.
- **Failures are regressions**: when the candidate failed on an example (a run or the
  evaluator, as above) where the baseline did not, the example ``regressed`` on that evaluator
  whatever the scores, with the reason (``evaluator error: ...`` or the run's status) in its
  ``error`` and counted in the evaluator's ``errors``; when lower is better it is left out of
  the means and the test (it has no score). A note says how they were counted.
- **Repetitions are grouped by example**: an example's score is the mean of its runs' scores.
- **Per example and evaluator**: ``flaky`` when the baseline's own repetitions disagree and the
  candidate's mean lies within their range (the candidate did nothing the baseline's noise does
  not); else ``unchanged`` (equal means), ``improved`` or ``regressed`` (in the evaluator's
  direction: higher is better unless its annotation config says ``MINIMIZE``). An example is
  ``mixed`` when it improved on one evaluator and regressed on another.
- **Kind**: ``binary`` when every score of the evaluator is 0 or 1, else ``numeric``.
- **Test**: on the per-example differences d = candidate - baseline, a two-sided exact test on
  the signs of the non-zero ones: ``binomtest(#d>0, #d≠0, 0.5)``. For pass/fail scores with one
  repetition that *is* the exact McNemar test on the discordant pairs (``mcnemar_exact``); for
  numeric scores it is the sign test, beside a paired bootstrap interval (``bootstrap+sign``).
- **Interval**: the paired bootstrap percentile interval (95%) of the mean difference, resampling
  examples with replacement, :data:`BOOTSTRAP_SEED`-seeded (the same data, the same interval).
- **Holm**: ``p_adjusted`` corrects the evaluators' p-values together (Holm-Bonferroni).
- **MDE** (smallest detectable effect at two-sided alpha and power 1-beta): with n examples
  and sigma the standard deviation of their differences (when no example changed, sqrt(2) x
  the baseline's standard deviation, the differences of an independent re-run),
  ``MDE = (z(1-alpha/2) + z(1-beta)) * sigma / sqrt(n)`` (the normal approximation of a paired
  test). An exact sign test needs at least k discordant examples, k the smallest with
  2 * 0.5^k <= alpha (6 at 0.05): for binary scores the MDE is at least k/n, and below k
  examples nothing is detectable (MDE None).
- **Operational deltas** over the compared examples' runs: latency p50 and p95 (linear
  interpolation), tokens, cost and tool calls per run (mean over the runs that recorded them),
  errors (error, crash, bad_output) and timeouts (counts of runs).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from traceproof.experiments.comparison import (
    OPERATIONAL_METRICS,
    Change,
    Check,
    Comparison,
    EvaluatorComparison,
    ExampleChange,
    ExampleComparison,
    ExampleScore,
    ExperimentRef,
    OperationalDelta,
    Verdict,
)
from traceproof.experiments.significance import (
    BOOTSTRAP_SEED,
    EPSILON,
    bootstrap_interval,
    holm,
    min_discordant,
    minimal_detectable_effect,
    sign_test,
)
from traceproof.tools.common import one_line
from traceproof.tools.paging import tidy

__all__ = [
    "BOOTSTRAP_SEED",
    "Check",
    "Comparison",
    "EvaluatorComparison",
    "ExampleComparison",
    "ExampleScore",
    "ExperimentData",
    "ExperimentRef",
    "OperationalDelta",
    "Verdict",
    "bootstrap_interval",
    "compare",
    "holm",
    "min_discordant",
    "minimal_detectable_effect",
    "sign_test",
]

#: Labels read as a pass (1) or a fail (0) when an annotation has no score.
PASS_LABELS = frozenset({"pass", "passed", "true", "yes", "correct", "ok", "good", "1"})
FAIL_LABELS = frozenset({"fail", "failed", "false", "no", "incorrect", "wrong", "bad", "0"})
#: Run statuses counted as errors and as timeouts.
ERROR_STATUSES = frozenset({"error", "crash", "bad_output"})
TIMEOUT_STATUSES = frozenset({"timeout"})
#: Order of examples: regressions first.
CHANGE_ORDER = {"regressed": 0, "mixed": 1, "improved": 2, "flaky": 3, "unchanged": 4}


# -- the input --------------------------------------------------------------------------------


@dataclass
class ExperimentData:
    """One experiment as the store holds it: its row (JSON parsed), its runs and the current
    annotations on them (:mod:`traceproof.storage.comparison`)."""

    experiment: dict[str, Any]
    runs: list[dict[str, Any]]
    scores: list[dict[str, Any]]
    #: Evaluator names whose judge has no passing calibration.
    uncalibrated: set[str] = field(default_factory=set)

    @property
    def id(self) -> str:
        return str(self.experiment["id"])

    def evaluator_names(self) -> list[str]:
        found = self.experiment.get("evaluators") or []
        return [str(e["name"]) for e in found if isinstance(e, dict) and e.get("name")]


def score_of(row: Mapping[str, Any]) -> float | None:
    """An annotation's score: its score, else its label read as pass (1) or fail (0)."""
    score = row.get("score")
    if score is not None and math.isfinite(float(score)):
        return float(score)
    label = str(row.get("label") or "").strip().lower()
    if label in PASS_LABELS:
        return 1.0
    if label in FAIL_LABELS:
        return 0.0
    return None


def chosen_annotations(scores: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], Any]:
    """Per (run id, name) the annotation that scores it: the evaluator's (not HUMAN) before a
    person's, the newest first (rows come newest first)."""
    chosen: dict[tuple[str, str], Mapping[str, Any]] = {}
    for row in scores:
        if score_of(row) is None:
            continue
        key = (str(row["run_id"]), str(row["name"]))
        held = chosen.get(key)
        if held is None or (held["annotator_kind"] == "HUMAN" and row["annotator_kind"] != "HUMAN"):
            chosen[key] = row
    return chosen


@dataclass
class _Scores:
    """What an experiment's runs scored, ``values[run][evaluator]``, and where a run has no
    score of its own why not (``failures[run][evaluator]``: the run failed, or the evaluator
    errored); a failure scores 0 when higher is better."""

    values: dict[str, dict[str, float]]
    failures: dict[str, dict[str, str]]


def _run_scores(data: ExperimentData, directions: Mapping[str, str], chars: int) -> _Scores:
    """The scores of ``data``'s runs (see the module docstring)."""
    values: dict[str, dict[str, float]] = defaultdict(dict)
    for (run_id, name), row in chosen_annotations(data.scores).items():
        value = score_of(row)
        if value is not None:
            values[run_id][name] = value
    failures: dict[str, dict[str, str]] = defaultdict(dict)
    names = data.evaluator_names()
    for run in data.runs:
        if run["status"] == "ok":
            continue
        reason = _failure(run, chars) or str(run["status"])
        for name in names:
            if name not in values[run["id"]]:
                failures[run["id"]][name] = reason
    for row in data.scores:  # newest first for each (run, name)
        run_id, name = str(row["run_id"]), str(row["name"])
        if row.get("error") is None or row["annotator_kind"] == "HUMAN":
            continue
        if name not in values[run_id] and name not in failures[run_id]:
            said = one_line(str(row.get("explanation") or row["error"]), chars)
            failures[run_id][name] = f"evaluator error: {said}"
    for run_id, failed in failures.items():
        for name in failed:
            if directions.get(name, "MAXIMIZE") == "MAXIMIZE":
                values[run_id][name] = 0.0
    return _Scores(values, failures)


# -- the comparison ---------------------------------------------------------------------------


def reference(row: Mapping[str, Any]) -> ExperimentRef:
    provenance = row.get("provenance")
    return ExperimentRef(
        id=row["id"],
        name=row.get("name"),
        task=row.get("task"),
        dataset_id=row.get("dataset_id"),
        dataset_version=row.get("dataset_version"),
        status=row.get("status"),
        created_at=row.get("created_at"),
        provenance=provenance if isinstance(provenance, dict) else {},
    )


def _text(value: Any, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        value = orjson.dumps(value, default=str).decode()
    return one_line(value, limit)


def _tidy(value: float | None) -> float | None:
    return None if value is None else tidy(float(value))


def _change(base: list[float], cand_mean: float, maximize: bool) -> Change:
    base_mean = sum(base) / len(base)
    low, high = min(base), max(base)
    if high - low > EPSILON and low - EPSILON <= cand_mean <= high + EPSILON:
        return "flaky"
    better = cand_mean - base_mean if maximize else base_mean - cand_mean
    if abs(better) <= EPSILON:
        return "unchanged"
    return "improved" if better > 0 else "regressed"


def _example_change(changes: Iterable[str]) -> ExampleChange:
    seen = set(changes)
    if "regressed" in seen:
        return "mixed" if "improved" in seen else "regressed"
    if "improved" in seen:
        return "improved"
    return "flaky" if "flaky" in seen else "unchanged"


def compare(
    baseline: ExperimentData,
    candidate: ExperimentData,
    *,
    inputs: Mapping[str, Mapping[str, Any]] | None = None,
    directions: Mapping[str, str] | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
    resamples: int = 10_000,
    preview_chars: int = 300,
) -> Comparison:
    """The comparison of ``candidate`` with ``baseline`` (see the module docstring)."""
    inputs = inputs or {}
    directions = directions or {}
    base_runs = _by_example(baseline.runs)
    cand_runs = _by_example(candidate.runs)
    shared = sorted(set(base_runs) & set(cand_runs))
    base_scores = _run_scores(baseline, directions, preview_chars)
    cand_scores = _run_scores(candidate, directions, preview_chars)
    base_values, base_fails = _tables(shared, base_runs, base_scores)
    cand_values, cand_fails = _tables(shared, cand_runs, cand_scores)
    base_names = set(base_values) | set(base_fails)
    cand_names = set(cand_values) | set(cand_fails)
    names = sorted(base_names & cand_names)
    notes: list[str] = []
    one_sided = sorted(base_names ^ cand_names)
    if one_sided:
        notes.append(f"Scored by one experiment only (not compared): {', '.join(one_sided)}.")
    # evaluators the baseline ran that the candidate did not score on any compared example
    missing = [n for n in baseline.evaluator_names() if n in base_names - cand_names]

    rows: list[EvaluatorComparison] = []
    per_example: dict[str, dict[str, ExampleScore]] = defaultdict(dict)
    for name in names:
        maximize = directions.get(name, "MAXIMIZE") == "MAXIMIZE"
        # a failure of the candidate where the baseline had none: a regression
        failed = {
            e: cand_fails[name][e][0]
            for e in shared
            if base_values[name].get(e) and cand_fails[name].get(e) and not base_fails[name].get(e)
        }
        both = [
            e
            for e in shared
            if base_values[name].get(e) and (cand_values[name].get(e) or e in failed)
        ]
        if not both:
            continue
        counts = dict.fromkeys(("improved", "regressed", "unchanged", "flaky"), 0)
        for e in both:
            base = base_values[name][e]
            cand = cand_values[name].get(e)
            cand_mean = sum(cand) / len(cand) if cand else None
            if e in failed:
                change: Change = "regressed"
            else:
                assert cand_mean is not None
                change = _change(base, cand_mean, maximize)
            counts[change] += 1
            per_example[e][name] = ExampleScore(
                baseline=tidy(sum(base) / len(base)),
                candidate=_tidy(cand_mean),
                change=change,
                error=failed.get(e),
            )
        if failed:
            counted = (
                "as 0 in the means and the test"
                if maximize
                else "left out of the means and the test (lower is better: no score is the worst)"
            )
            notes.append(
                f"{name}: the candidate failed on {_count(len(failed), 'example')} the baseline "
                f"did not (a failed run or an evaluator error): counted as regressions, {counted}."
            )
        scored = [e for e in both if cand_values[name].get(e)]
        if not scored:
            continue
        pairs = [(base_values[name][e], cand_values[name][e]) for e in scored]
        rows.append(
            EvaluatorComparison(
                name=name,
                lower_is_better=None if maximize else True,
                examples=len(both),
                uncalibrated=name in baseline.uncalibrated or name in candidate.uncalibrated,
                errors=len(failed),
                **(_statistics(pairs, alpha=alpha, power=power, resamples=resamples) | counts),
            )
        )
    for row, adjusted in zip(rows, holm([r.p_value for r in rows]), strict=True):
        row.p_value = tidy(row.p_value)
        row.p_adjusted = tidy(adjusted)

    examples = [
        _example(
            e,
            per_example.get(e, {}),
            base_runs[e],
            cand_runs[e],
            base_scores.values,
            cand_scores.values,
            inputs.get(e),
            preview_chars,
        )
        for e in shared
    ]
    examples.sort(key=lambda x: (CHANGE_ORDER[x.change], -_worsening(x, directions), x.example_id))
    only_base = len(set(base_runs) - set(cand_runs))
    only_cand = len(set(cand_runs) - set(base_runs))
    return Comparison(
        baseline=reference(baseline.experiment),
        candidate=reference(candidate.experiment),
        examples_compared=len(shared),
        examples_only_baseline=only_base or None,
        examples_only_candidate=only_cand or None,
        evaluators=rows,
        operational=operational(
            [r for e in shared for r in base_runs[e]], [r for e in shared for r in cand_runs[e]]
        ),
        examples=examples,
        notes=notes,
        evaluators_only_baseline=missing,
    )


def _statistics(
    pairs: Sequence[tuple[list[float], list[float]]],
    *,
    alpha: float,
    power: float,
    resamples: int,
) -> dict[str, Any]:
    """Kind, means, delta, interval, test, p-value and MDE of an evaluator over its examples'
    (baseline scores, candidate scores); ``p_adjusted`` is set once every evaluator has its
    p-value (Holm)."""
    b = [sum(base) / len(base) for base, _ in pairs]
    c = [sum(cand) / len(cand) for _, cand in pairs]
    binary = all(v in (0.0, 1.0) for base, cand in pairs for v in (*base, *cand))
    d = [y - x for x, y in zip(b, c, strict=True)]
    low, high = bootstrap_interval(d, resamples=resamples)
    return {
        "kind": "binary" if binary else "numeric",
        "baseline_mean": tidy(sum(b) / len(b)),
        "candidate_mean": tidy(sum(c) / len(c)),
        "delta": tidy(sum(d) / len(d)),
        "ci_low": tidy(low),
        "ci_high": tidy(high),
        "test": "mcnemar_exact" if binary else "bootstrap+sign",
        "p_value": sign_test(d),
        "p_adjusted": 1.0,
        "mde": _tidy(minimal_detectable_effect(d, b, binary=binary, alpha=alpha, power=power)),
    }


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _tables(
    shared: Sequence[str], runs: Mapping[str, list[dict[str, Any]]], scores: _Scores
) -> tuple[dict[str, dict[str, list[float]]], dict[str, dict[str, list[str]]]]:
    """Per evaluator and compared example the scores of its runs, and their failures."""
    values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    failures: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for example in shared:
        for run in runs[example]:
            for name, value in scores.values.get(run["id"], {}).items():
                values[name][example].append(value)
            for name, reason in scores.failures.get(run["id"], {}).items():
                failures[name][example].append(reason)
    return values, failures


def _by_example(runs: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        found[str(run["example_id"])].append(run)
    return found


def _worsening(example: ExampleComparison, directions: Mapping[str, str]) -> float:
    """How much worse the candidate did on the example, summed over its evaluators."""
    total = 0.0
    for name, s in example.evaluators.items():
        if s.candidate is None:
            if s.change == "regressed":
                return math.inf
            continue
        worse = s.baseline - s.candidate
        if directions.get(name, "MAXIMIZE") != "MAXIMIZE":
            worse = -worse
        total += max(0.0, worse) if s.change == "regressed" else 0.0
    return total


def _pick(
    runs: list[dict[str, Any]], scores: dict[str, dict[str, float]], *, worst: bool
) -> dict[str, Any]:
    """The run shown for an example: the worst (or best) by its scores' sum, else the first."""

    def total(run: dict[str, Any]) -> float:
        return sum(scores.get(run["id"], {}).values())

    return (min if worst else max)(runs, key=total)


def _example(
    example_id: str,
    evaluators: dict[str, ExampleScore],
    base_runs: list[dict[str, Any]],
    cand_runs: list[dict[str, Any]],
    base_scores: dict[str, dict[str, float]],
    cand_scores: dict[str, dict[str, float]],
    found: Mapping[str, Any] | None,
    chars: int,
) -> ExampleComparison:
    change = _example_change(s.change for s in evaluators.values())
    if change in ("regressed", "mixed"):
        base, cand = (
            _pick(base_runs, base_scores, worst=False),
            _pick(cand_runs, cand_scores, worst=True),
        )
    elif change == "improved":
        base, cand = (
            _pick(base_runs, base_scores, worst=True),
            _pick(cand_runs, cand_scores, worst=False),
        )
    else:
        base, cand = base_runs[0], cand_runs[0]
    return ExampleComparison(
        example_id=example_id,
        change=change,
        evaluators=evaluators,
        input_preview=_text(found.get("input"), chars) if found else None,
        baseline_output=_text(base.get("output"), chars),
        candidate_output=_text(cand.get("output"), chars),
        baseline_trace_id=(base.get("trace_ids") or [None])[0],
        candidate_trace_id=(cand.get("trace_ids") or [None])[0],
        baseline_run_id=base["id"],
        candidate_run_id=cand["id"],
        baseline_error=_failure(base, chars),
        candidate_error=_failure(cand, chars),
    )


def _failure(run: Mapping[str, Any], chars: int) -> str | None:
    if run.get("status") in (None, "ok"):
        return None
    reason = one_line(str(run.get("error") or ""), chars)
    return f"{run['status']}: {reason}" if reason else str(run["status"])


# -- operational deltas -----------------------------------------------------------------------


def _values(runs: Iterable[Mapping[str, Any]], column: str) -> list[float]:
    return [float(r[column]) for r in runs if r.get(column) is not None]


def _metric(runs: Sequence[Mapping[str, Any]], metric: str) -> float | None:
    if metric in ("latency_p50_ms", "latency_p95_ms"):
        found = _values(runs, "latency_ms")
        q = 50 if metric == "latency_p50_ms" else 95
        return float(np.percentile(found, q)) if found else None
    if metric in ("tokens", "cost_usd", "tool_calls"):
        found = _values(runs, metric)
        return sum(found) / len(found) if found else None
    wanted = ERROR_STATUSES if metric == "errors" else TIMEOUT_STATUSES
    return float(sum(1 for r in runs if r.get("status") in wanted))


def operational(
    baseline: Sequence[Mapping[str, Any]], candidate: Sequence[Mapping[str, Any]]
) -> list[OperationalDelta]:
    """The operational deltas of the compared runs (see the module docstring)."""
    rows = []
    for metric in OPERATIONAL_METRICS:
        b, c = _metric(baseline, metric), _metric(candidate, metric)
        delta = c - b if b is not None and c is not None else None
        pct = delta / abs(b) * 100 if delta is not None and b else None
        rows.append(
            OperationalDelta(
                metric=metric,
                baseline=_tidy(b),
                candidate=_tidy(c),
                delta=_tidy(delta),
                delta_pct=_tidy(pct),
            )
        )
    return rows
