"""The Markdown summary of a comparison, read back by a real CommonMark parser (markdown-it-py,
with GitHub's tables) to check what a CI job summary or a pull request comment would show."""

from __future__ import annotations

import re

from markdown_it import MarkdownIt

from tests.proof_report_fixtures import HOSTILE, comparison, with_verdict
from traceproof.experiments.report import render_markdown


def _html(text: str) -> str:
    return MarkdownIt("commonmark").enable("table").render(text)


def _rows(html: str) -> list[list[str]]:
    """Every table row as its cells' inner HTML."""
    return [
        re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S)
        for row in re.findall(r"<tr>(.*?)</tr>", html, re.S)
    ]


def test_the_summary_leads_with_the_verdict_and_its_reasons() -> None:
    text = render_markdown(comparison())
    assert text.splitlines()[0] == "## ❌ Experiment gate: FAIL"
    html = _html(text)
    assert "<li>2 examples regressed on correct</li>" in html
    assert "Gate: no_regressions,min:correct&gt;=0.9" in html
    assert render_markdown(with_verdict(comparison(), "pass")).startswith(
        "## ✅ Experiment gate: PASS"
    )
    no_gate = comparison()
    no_gate["verdict"] = None
    assert render_markdown(no_gate).startswith("## Experiment comparison (no gate)")


def test_the_tables_hold_one_row_per_evaluator_metric_and_notable_example() -> None:
    rows = _rows(_html(render_markdown(comparison())))
    widths = {len(r) for r in rows}
    assert widths == {8, 5}  # evaluators: 8 columns; operational and examples: 5 each
    evaluators = [r for r in rows if len(r) == 8]
    assert [r[0] for r in evaluators] == ["evaluator", "correct", "helpful (uncalibrated)"]
    assert evaluators[1][3:5] == ["<strong>+0.1</strong>", "[-0.2, 0.4]"]
    examples = [r for r in rows if len(r) == 5 and r[1] in ("regressed", "flaky")]
    assert [r[0] for r in examples] == ["ex00000000000001", "ex00000000000002", "ex00000000000006"]
    assert examples[1][4].startswith("error: timeout: no answer after 30 s ")


def test_hostile_outputs_stay_text_and_cannot_break_the_table() -> None:
    comp = comparison()
    comp["examples"][0]["candidate_output"] = HOSTILE[0] + " | a | b |\n| --- |\n`code` **bold**"
    html = _html(render_markdown(comp))
    assert "<script" not in html and "<img" not in html and "<strong>bold" not in html
    cell = _rows(html)[-3][4]  # the first regression's candidate output
    assert cell.startswith("&lt;/script&gt;&lt;script&gt;window.__pwned = 1&lt;/script&gt; | a")
    assert "`code` **bold**" in cell


def test_at_most_max_examples_are_listed_and_the_rest_counted() -> None:
    text = render_markdown(comparison(), max_examples=1)
    examples = [r for r in _rows(_html(text)) if len(r) == 5 and r[1] in ("regressed", "flaky")]
    assert len(examples) == 1
    assert "… and 2 more (the HTML report lists every example)." in text
