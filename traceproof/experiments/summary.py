"""A comparison as Markdown, fit for a CI job summary (``$GITHUB_STEP_SUMMARY``) or a PR
comment: the verdict and its reasons, the per-evaluator table (means, delta, 95% interval,
p-values, MDE, example counts), the operational deltas and the top regressions with their
trace and run ids. GitHub-flavoured tables; cells escaped so an output cannot break them and
shows as text (``<``, ``>`` and ``&`` as entities: no HTML of an output reaches the page; ``[``,
``]``, ``*``, ``_`` and ``~`` backslash-escaped: no link, image, emphasis or strikethrough).
"""

from __future__ import annotations

from traceproof.experiments.compare import Comparison, ExampleComparison

__all__ = ["summary_markdown"]

#: Regressions (and mixed examples) listed, at most.
TOP_REGRESSIONS = 10
#: Characters of an input or output preview in a table cell.
CELL_CHARS = 120

_ESCAPES = {"\\": "\\\\", "|": "\\|", "`": "'"}
_CODE_SPECIAL = str.maketrans(_ESCAPES)
#: Outside code spans: HTML as entities, and link, image, emphasis and strikethrough syntax
#: backslash-escaped, so an input or output shows as it was written.
_CELL_SPECIAL = str.maketrans(
    _ESCAPES | {"<": "&lt;", ">": "&gt;", "&": "&amp;"} | {c: "\\" + c for c in "[]*_~"}
)
_BADGE = {"pass": "✅ PASS", "fail": "❌ FAIL", "inconclusive": "⚠️ INCONCLUSIVE"}


def _cell(value: object, limit: int = CELL_CHARS, *, code: bool = False) -> str:
    """``value`` on one line, at most ``limit`` characters, escaped for a table cell (``code``:
    for inside a code span, where Markdown shows entities as they are written)."""
    if value is None:
        return "–"
    text = " ".join(str(value).split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text.translate(_CODE_SPECIAL if code else _CELL_SPECIAL) or "–"


def _number(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.4g}" if signed else f"{value:.4g}"


def _ref(comparison: Comparison, role: str) -> str:
    ref = comparison.baseline if role == "baseline" else comparison.candidate
    if ref is None:
        return "–"
    commit = ref.provenance.get("git_commit")
    dirty = " (dirty)" if ref.provenance.get("git_dirty") else ""
    at = f" at `{str(commit)[:12]}`{dirty}" if commit else ""
    name = f" {_cell(ref.name, 60)}" if ref.name and ref.name != ref.id else ""
    return f"`{ref.id}`{name}{at}"


def summary_markdown(comparison: Comparison, *, top: int = TOP_REGRESSIONS) -> str:
    """The Markdown summary of ``comparison`` (with its verdict, when it has one)."""
    lines: list[str] = []
    verdict = comparison.verdict
    status = _BADGE[verdict.status] if verdict else "no verdict"
    lines.append(f"## traceproof: {status}")
    lines.append("")
    lines.append(
        f"Candidate {_ref(comparison, 'candidate')} vs baseline {_ref(comparison, 'baseline')}: "
        f"{comparison.examples_compared} examples compared."
    )
    if verdict is not None:
        lines += ["", f"Gate `{_cell(verdict.gate, 300, code=True)}`:", ""]
        lines += [f"- {_cell(reason, 400)}" for reason in verdict.reasons]
    if comparison.evaluators:
        lines += [
            "",
            "### Evaluators",
            "",
            "| evaluator | baseline | candidate | delta | 95% interval | p (Holm) | MDE "
            "| improved | regressed | flaky |",
            "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|",
        ]
        for e in comparison.evaluators:
            flag = " ⚠️ uncalibrated" if e.uncalibrated else ""
            interval = (
                f"[{_number(e.ci_low, True)}, {_number(e.ci_high, True)}]"
                if e.ci_low is not None
                else "–"
            )
            lines.append(
                f"| {_cell(e.name, 60)}{flag} | {_number(e.baseline_mean)} | "
                f"{_number(e.candidate_mean)} | {_number(e.delta, True)} | {interval} | "
                f"{_number(e.p_adjusted)} | {_number(e.mde)} | {e.improved} | {e.regressed} | "
                f"{e.flaky} |"
            )
    shown = [o for o in comparison.operational if o.baseline is not None or o.candidate is not None]
    if shown:
        lines += [
            "",
            "### Operational",
            "",
            "| metric | baseline | candidate | delta | delta % |",
            "|---|---:|---:|---:|---:|",
        ]
        for o in shown:
            pct = f"{o.delta_pct:+.1f}%" if o.delta_pct is not None else "–"
            lines.append(
                f"| {o.metric} | {_number(o.baseline)} | {_number(o.candidate)} | "
                f"{_number(o.delta, True)} | {pct} |"
            )
    regressions = [x for x in comparison.examples if x.change in ("regressed", "mixed")]
    if regressions:
        lines += _regressions(regressions, top)
    if comparison.notes:
        lines += ["", *[f"> {_cell(note, 400)}" for note in comparison.notes]]
    return "\n".join(lines) + "\n"


def _regressions(regressions: list[ExampleComparison], top: int) -> list[str]:
    lines = [
        "",
        f"### Regressions ({len(regressions)})",
        "",
        "| example | evaluators | input | baseline output | candidate output "
        "| traces (base → cand) |",
        "|---|---|---|---|---|---|",
    ]
    for x in regressions[:top]:
        scores = ", ".join(
            f"{name} {_number(s.baseline)}→{_number(s.candidate)}"
            + (f" ({s.error})" if s.error else "")
            for name, s in x.evaluators.items()
            if s.change == "regressed"
        )
        candidate = x.candidate_output if x.candidate_error is None else x.candidate_error
        traces = f"`{x.baseline_trace_id or '–'}` → `{x.candidate_trace_id or '–'}`"
        lines.append(
            f"| `{x.example_id}` | {_cell(scores)} | {_cell(x.input_preview)} | "
            f"{_cell(x.baseline_output)} | {_cell(candidate)} | {traces} |"
        )
    if len(regressions) > top:
        lines += [
            "",
            f"… and {len(regressions) - top} more (`traceproof experiment compare --json`).",
        ]
    return lines
