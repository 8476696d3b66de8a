"""The gate: a spec of comma-separated rules that turns a comparison into one verdict.

Rules (:data:`RULE_FORMS`); EVALUATOR is an evaluator's name, METRIC an evaluator or one of
latency_p50, latency_p95, tokens, cost, tool_calls, errors, timeouts (the operational deltas;
``_ms``/``_usd`` suffixes accepted):

=================================  ===========================================================
``no_regressions[:EVALUATOR]``      fail when an example regressed (on that evaluator); flaky
                                    examples (the baseline disagrees with itself) never count;
                                    else inconclusive when the candidate has no scores of an
                                    evaluator the baseline ran (without EVALUATOR), or did not
                                    run some of the baseline's examples (unless the spec has
                                    ``min_examples:N``, which then decides how many suffice)
``no_significant_regressions``      fail when an evaluator got significantly worse (Holm-adjusted
                                    p < alpha); inconclusive when one has too few examples to detect
                                    anything (MDE None) or the candidate lacks one the baseline ran
``min:EVALUATOR>=X``                the candidate's mean is at least X
``max:EVALUATOR<=X``                the candidate's mean is at most X
``max_delta:METRIC<=+X[%]``         candidate - baseline at most X (or X percent of the baseline)
``min_delta:METRIC>=-X[%]``         candidate - baseline at least X (or X percent)
``significant:EVALUATOR``           pass when it improved significantly, fail when it got
                                    significantly worse, inconclusive otherwise (the detail gives
                                    the smallest effect the dataset detects)
``calibrated_judges``               inconclusive while a judge's evaluator has no passing
                                    calibration (its scores are not yet evidence)
``min_examples:N``                  inconclusive below N compared examples
=================================  ===========================================================

Two checks come before the rules, always: ``compared`` (inconclusive when no example ran in
both experiments) and ``finished`` (inconclusive unless both experiments are ``done``: a
running, cancelled, failed or interrupted experiment is partial).

A rule that names what the comparison does not hold (an evaluator no run was scored by, a metric
no run recorded) is ``inconclusive``: the gate cannot tell. A percentage of a zero baseline is
0% when the candidate is 0 too, else infinite (an increase fails ``max_delta``).

The verdict: ``fail`` when a check fails; else ``inconclusive`` when one is; else ``pass``.
Its reasons are the details of the checks that decided it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from traceproof.errors import ErrorCode, TraceproofError
from traceproof.experiments.compare import (
    Check,
    Comparison,
    EvaluatorComparison,
    OperationalDelta,
    Verdict,
    min_discordant,
)

__all__ = ["DEFAULT_GATE", "RULE_FORMS", "Rule", "evaluate_gate", "parse_gate"]

#: The gate when none is given (setting ``gate_default``).
DEFAULT_GATE = "no_regressions,calibrated_judges"

RULE_FORMS = (
    "no_regressions",
    "no_regressions:EVALUATOR",
    "no_significant_regressions",
    "min:EVALUATOR>=X",
    "max:EVALUATOR<=X",
    "max_delta:METRIC<=+X or +X%",
    "min_delta:METRIC>=-X or -X%",
    "significant:EVALUATOR",
    "calibrated_judges",
    "min_examples:N",
)

#: Operational metric names a rule may use, to the comparison's metric.
METRIC_ALIASES = {
    "latency_p50": "latency_p50_ms",
    "latency_p50_ms": "latency_p50_ms",
    "latency_p95": "latency_p95_ms",
    "latency_p95_ms": "latency_p95_ms",
    "tokens": "tokens",
    "cost": "cost_usd",
    "cost_usd": "cost_usd",
    "tool_calls": "tool_calls",
    "errors": "errors",
    "timeouts": "timeouts",
}

_NAME = r"(?P<name>[^,<>=]+?)"
#: A threshold as a rule holds it: anything up to the end (or a ``%``), checked by :data:`NUMBER`.
_VALUE = r"(?P<value>[^%]*?)"
#: What a valid threshold is: a finite decimal number.
NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
_FORMS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("no_regressions", re.compile(rf"no_regressions(?::{_NAME})?")),
    ("no_significant_regressions", re.compile(r"no_significant_regressions")),
    ("min", re.compile(rf"min:{_NAME}\s*>=\s*{_VALUE}")),
    ("max", re.compile(rf"max:{_NAME}\s*<=\s*{_VALUE}")),
    ("max_delta", re.compile(rf"max_delta:{_NAME}\s*<=\s*{_VALUE}(?P<pct>%)?")),
    ("min_delta", re.compile(rf"min_delta:{_NAME}\s*>=\s*{_VALUE}(?P<pct>%)?")),
    ("significant", re.compile(rf"significant:{_NAME}")),
    ("calibrated_judges", re.compile(r"calibrated_judges")),
    ("min_examples", re.compile(r"min_examples:\s*(?P<value>.*)")),
)


@dataclass(frozen=True)
class Rule:
    """One parsed rule: its text as written, its form, the evaluator or metric it names and
    its threshold (``percent``: of the baseline)."""

    text: str
    kind: str
    name: str | None = None
    value: float | None = None
    percent: bool = False


def _invalid(what: str) -> TraceproofError:
    return TraceproofError(
        f"{what} Rules, comma-separated: {', '.join(RULE_FORMS)}; METRIC is an evaluator or "
        f"one of latency_p50, latency_p95, tokens, cost, tool_calls, errors, timeouts. "
        f'Example: "no_regressions,min:correct>=0.9,max_delta:latency_p95<=+10%".',
        code=ErrorCode.INVALID_ARGUMENT,
    )


def parse_gate(spec: str) -> list[Rule]:
    """The rules of a gate spec; ``[invalid_argument]`` listing the rule forms otherwise."""
    texts = [part.strip() for part in spec.split(",")]
    if not any(texts):
        raise _invalid("The gate spec is empty.")
    rules: list[Rule] = []
    for text in texts:
        if not text:
            raise _invalid(f"The gate spec {spec[:200]!r} has an empty rule (two commas).")
        rules.append(_rule(text))
    return rules


def _rule(text: str) -> Rule:
    for kind, pattern in _FORMS:
        match = pattern.fullmatch(text)
        if match is None:
            continue
        found = match.groupdict()
        name = (found.get("name") or "").strip() or None
        value = _value(text, kind, found["value"]) if "value" in found else None
        return Rule(text, kind, name, value, bool(found.get("pct")))
    raise _invalid(f"The gate rule {text[:120]!r} is not one the gate knows.")


def _value(text: str, kind: str, written: str) -> float:
    """The threshold of a rule; ``[invalid_argument]`` naming the rule when it is not a finite
    number (for ``min_examples``, a whole number of examples, 0 or more)."""
    written = written.strip()
    counts = kind == "min_examples"
    valid = (
        written.isascii() and written.isdigit() if counts else NUMBER.fullmatch(written) is not None
    )
    value = float(written) if valid else math.nan
    if not math.isfinite(value):
        want = "a whole number of examples, 0 or more" if counts else "a finite number"
        raise _invalid(
            f"The gate rule {text[:120]!r} has an invalid number {written[:40]!r}: "
            f"{kind} takes {want}."
        )
    return value


# -- the verdict ------------------------------------------------------------------------------


def evaluate_gate(comparison: Comparison, spec: str, *, alpha: float = 0.05) -> Verdict:
    """The verdict of ``spec`` on ``comparison`` (see the module docstring)."""
    rules = parse_gate(spec)
    counted = any(r.kind == "min_examples" for r in rules)
    checks = [
        *_preconditions(comparison),
        *(_check(comparison, r, alpha, counted=counted) for r in rules),
    ]
    failed = [c for c in checks if c.status == "fail"]
    unsure = [c for c in checks if c.status == "inconclusive"]
    if failed:
        status, deciding = "fail", failed
    elif unsure:
        status, deciding = "inconclusive", unsure
    else:
        status, deciding = "pass", checks
    return Verdict(
        status=status,  # type: ignore[arg-type]
        gate=",".join(r.text for r in rules),
        reasons=[f"{c.rule}: {c.detail}" for c in deciding],
        checks=checks,
    )


def _preconditions(comparison: Comparison) -> list[Check]:
    checks = []
    n = comparison.examples_compared
    if n:
        checks.append(Check(rule="compared", status="pass", detail=f"{_examples(n)} in both"))
    else:
        checks.append(
            Check(rule="compared", status="inconclusive", detail="no example ran in both")
        )
    unfinished = [
        f"{role} {ref.id} is {ref.status}"
        for role, ref in (("baseline", comparison.baseline), ("candidate", comparison.candidate))
        if ref is not None and ref.status not in (None, "done")
    ]
    if unfinished:
        detail = "; ".join(unfinished) + " (partial results)"
        checks.append(Check(rule="finished", status="inconclusive", detail=detail))
    else:
        checks.append(Check(rule="finished", status="pass", detail="both experiments are done"))
    return checks


def _evaluator(comparison: Comparison, name: str | None) -> EvaluatorComparison | None:
    return next((e for e in comparison.evaluators if e.name == name), None)


def _missing(comparison: Comparison, rule: Rule) -> Check:
    known = ", ".join(e.name for e in comparison.evaluators) or "none"
    return Check(
        rule=rule.text,
        status="inconclusive",
        detail=f"no scores named {rule.name!r} in both experiments (compared: {known})",
    )


def _examples(n: int) -> str:
    return "1 example" if n == 1 else f"{n} examples"


def _num(value: float) -> str:
    return f"{value:.4g}"


def _worse(e: EvaluatorComparison) -> bool:
    return e.delta > 0 if e.lower_is_better else e.delta < 0


def _unscored(comparison: Comparison, rule: Rule) -> Check | None:
    """Inconclusive when the candidate lacks evaluators the baseline ran (a rule over every
    evaluator cannot tell whether they regressed)."""
    lacking = comparison.evaluators_only_baseline
    if not lacking:
        return None
    return Check(
        rule=rule.text,
        status="inconclusive",
        detail=f"the candidate has no scores of {', '.join(lacking)}, which the baseline ran: "
        "run it with the same evaluators",
    )


def _uncompared(comparison: Comparison, rule: Rule) -> Check | None:
    """Inconclusive when the candidate did not run some of the baseline's examples."""
    left = comparison.examples_only_baseline or 0
    if not left:
        return None
    total = comparison.examples_compared + left
    return Check(
        rule=rule.text,
        status="inconclusive",
        detail=f"the candidate did not run {left} of the baseline's {_examples(total)}: no "
        "telling whether they regressed (run it on the same dataset version, or add "
        "min_examples:N to the gate to accept N compared examples)",
    )


def _check(comparison: Comparison, rule: Rule, alpha: float, *, counted: bool) -> Check:
    kind = rule.kind
    if kind == "no_regressions":
        return _no_regressions(comparison, rule, counted=counted)
    if kind == "no_significant_regressions":
        return _no_significant_regressions(comparison, rule, alpha)
    if kind == "calibrated_judges":
        bad = [e.name for e in comparison.evaluators if e.uncalibrated]
        if bad:
            return Check(
                rule=rule.text,
                status="inconclusive",
                detail=f"judge(s) without a passing calibration: {', '.join(bad)} "
                "(calibrate_judge, then evaluate again)",
            )
        return Check(rule=rule.text, status="pass", detail="no uncalibrated judge")
    if kind == "min_examples":
        need = int(rule.value or 0)
        n = comparison.examples_compared
        ok = n >= need
        return Check(
            rule=rule.text,
            status="pass" if ok else "inconclusive",
            detail=f"{_examples(n)} compared ({'≥' if ok else '<'} {need})",
        )
    if kind in ("max_delta", "min_delta"):
        return _delta(comparison, rule)
    e = _evaluator(comparison, rule.name)
    if e is None:
        return _missing(comparison, rule)
    if kind in ("min", "max"):
        assert rule.value is not None
        ok = e.candidate_mean >= rule.value if kind == "min" else e.candidate_mean <= rule.value
        sign = (">=" if ok else "<") if kind == "min" else ("<=" if ok else ">")
        return Check(
            rule=rule.text,
            status="pass" if ok else "fail",
            detail=f"{e.name} {_num(e.candidate_mean)} {sign} {_num(rule.value)}",
        )
    return _significant(e, rule, alpha)


def _no_regressions(comparison: Comparison, rule: Rule, *, counted: bool) -> Check:
    if rule.name is not None and _evaluator(comparison, rule.name) is None:
        return _missing(comparison, rule)
    regressed: list[str] = []
    failures: list[str] = []
    for x in comparison.examples:
        scores = [
            s
            for n, s in x.evaluators.items()
            if s.change == "regressed" and (rule.name is None or n == rule.name)
        ]
        if scores:
            regressed.append(x.example_id)
            failures += [s.error for s in scores[:1] if s.error]
    on = f" on {rule.name}" if rule.name else ""
    flaky = sum(e.flaky for e in comparison.evaluators if rule.name in (None, e.name))
    if regressed:
        shown = ", ".join(regressed[:5]) + (" …" if len(regressed) > 5 else "")
        failed = (
            f" ({len(failures)} failed where the baseline did not, e.g. {failures[0][:160]})"
            if failures
            else ""
        )
        return Check(
            rule=rule.text,
            status="fail",
            detail=f"{_examples(len(regressed))} regressed{on}{failed}: {shown}",
        )
    unsure = (None if rule.name else _unscored(comparison, rule)) or (
        None if counted else _uncompared(comparison, rule)
    )
    if unsure is not None:
        return unsure
    extra = f" ({flaky} flaky left out)" if flaky else ""
    return Check(rule=rule.text, status="pass", detail=f"no example regressed{on}{extra}")


def _no_significant_regressions(comparison: Comparison, rule: Rule, alpha: float) -> Check:
    worse = [e for e in comparison.evaluators if e.p_adjusted < alpha and _worse(e)]
    if worse:
        detail = "; ".join(
            f"{e.name} {_num(e.delta)} (p_adjusted {_num(e.p_adjusted)})" for e in worse
        )
        return Check(rule=rule.text, status="fail", detail=f"significantly worse: {detail}")
    lacking = _unscored(comparison, rule)
    if lacking is not None:
        return lacking
    blind = [e.name for e in comparison.evaluators if e.mde is None]
    if blind or not comparison.evaluators:
        need = min_discordant(alpha)
        what = ", ".join(blind) if blind else "no evaluator compared"
        return Check(
            rule=rule.text,
            status="inconclusive",
            detail=f"too few examples to detect a regression ({what}; needs ≥ {need})",
        )
    smallest = ", ".join(f"{e.name} {_num(e.mde or 0)}" for e in comparison.evaluators)
    return Check(
        rule=rule.text,
        status="pass",
        detail=f"no significant regression (smallest detectable: {smallest})",
    )


def _significant(e: EvaluatorComparison, rule: Rule, alpha: float) -> Check:
    p = f"p_adjusted {_num(e.p_adjusted)}"
    if e.p_adjusted < alpha:
        ok = not _worse(e)
        return Check(
            rule=rule.text,
            status="pass" if ok else "fail",
            detail=f"{e.name} {'improved' if ok else 'got worse'} by {_num(abs(e.delta))} ({p})",
        )
    if e.mde is None:
        detail = (
            f"{_examples(e.examples)} {'is' if e.examples == 1 else 'are'} too few for any "
            "significant result "
            f"(needs ≥ {min_discordant(alpha)})"
        )
    else:
        detail = (
            f"not significant ({p}); this dataset detects effects ≥ {_num(e.mde)}, "
            f"the observed delta is {_num(e.delta)}"
        )
    return Check(rule=rule.text, status="inconclusive", detail=detail)


def _operational(comparison: Comparison, name: str) -> OperationalDelta | None:
    metric = METRIC_ALIASES.get(name)
    return next((o for o in comparison.operational if o.metric == metric), None)


def _delta(comparison: Comparison, rule: Rule) -> Check:
    assert rule.value is not None and rule.name is not None
    e = _evaluator(comparison, rule.name)
    base: float | None
    cand: float | None
    if e is not None:
        base, cand = e.baseline_mean, e.candidate_mean
    elif rule.name in METRIC_ALIASES:
        found = _operational(comparison, rule.name)
        base, cand = (found.baseline, found.candidate) if found else (None, None)
        if base is None or cand is None:
            return Check(
                rule=rule.text,
                status="inconclusive",
                detail=f"{rule.name} is not recorded by both experiments' runs",
            )
    else:
        return _missing(comparison, rule)
    delta = cand - base
    if rule.percent:
        if base:
            change = delta / abs(base) * 100
        else:
            change = 0.0 if delta == 0 else math.copysign(math.inf, delta)
        shown = f"{change:+.4g}%"
    else:
        change = delta
        shown = f"{change:+.4g}"
    ok = change <= rule.value if rule.kind == "max_delta" else change >= rule.value
    limit = f"{rule.value:+.4g}{'%' if rule.percent else ''}"
    sign = ("<=" if ok else ">") if rule.kind == "max_delta" else (">=" if ok else "<")
    return Check(
        rule=rule.text,
        status="pass" if ok else "fail",
        detail=f"{rule.name} {_num(base)} → {_num(cand)}: {shown} {sign} {limit}",
    )
