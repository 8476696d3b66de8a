"""The Markdown summary of a comparison (what ``--summary-md`` writes), read back by a real
CommonMark parser (markdown-it-py, with GitHub's tables) to check what a CI job summary or a pull
request comment would show."""

from __future__ import annotations

import re
from typing import Any

from markdown_it import MarkdownIt

from tests.proof_report_fixtures import HOSTILE, comparison, with_verdict
from traceproof.experiments.compare import Comparison
from traceproof.experiments.summary import summary_markdown


def _model(data: dict[str, Any]) -> Comparison:
    """PROOF.md's comparison object (the report fixtures) as the model the summary takes: an
    evaluator the fixture gives no p-value is one without a difference."""
    for evaluator in data["evaluators"]:
        evaluator.setdefault("examples", data["examples_compared"])
        for key in ("p_value", "p_adjusted"):
            evaluator[key] = 1.0 if evaluator[key] is None else evaluator[key]
    return Comparison.model_validate(data)


def _html(text: str) -> str:
    return MarkdownIt("commonmark").enable("table").render(text)


def _rows(html: str) -> list[list[str]]:
    """Every table row as its cells' inner HTML."""
    return [
        re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", row, re.S)
        for row in re.findall(r"<tr>(.*?)</tr>", html, re.S)
    ]


def test_the_summary_leads_with_the_verdict_and_its_reasons() -> None:
    text = summary_markdown(_model(comparison()))
    assert text.splitlines()[0] == "## traceproof: ❌ FAIL"
    html = _html(text)
    assert "<li>2 examples regressed on correct</li>" in html
    assert "Gate <code>no_regressions,min:correct&gt;=0.9</code>:" in html
    passed = summary_markdown(_model(with_verdict(comparison(), "pass")))
    assert passed.startswith("## traceproof: ✅ PASS")
    no_gate = comparison()
    no_gate["verdict"] = None
    assert summary_markdown(_model(no_gate)).startswith("## traceproof: no verdict")


def test_the_tables_hold_one_row_per_evaluator_metric_and_regression() -> None:
    rows = _rows(_html(summary_markdown(_model(comparison()))))
    assert {len(r) for r in rows} == {10, 5, 6}  # evaluators, operational, regressions
    evaluators = [r for r in rows if len(r) == 10]
    assert [r[0] for r in evaluators] == ["evaluator", "correct", "helpful ⚠️ uncalibrated"]
    assert evaluators[1][3:5] == ["+0.1", "[-0.2, +0.4]"]
    assert [r[0] for r in rows if len(r) == 5][1:] == ["latency_p50_ms", "errors", "cost_usd"]
    regressions = [r for r in rows if len(r) == 6][1:]
    assert [r[0] for r in regressions] == [
        "<code>ex00000000000001</code>",
        "<code>ex00000000000002</code>",
    ]
    assert regressions[1][4] == "timeout: no answer after 30 s"


def test_hostile_outputs_stay_text_and_cannot_break_the_table() -> None:
    comp = comparison()
    comp["examples"][0]["candidate_output"] = HOSTILE[0] + " | a | b |\n| --- |\n`code` **bold**"
    html = _html(summary_markdown(_model(comp)))
    assert "<script" not in html and "<img" not in html and "<code>code" not in html
    regressions = [r for r in _rows(html) if len(r) == 6][1:]
    cell = regressions[0][4]  # the first regression's candidate output
    assert cell.startswith("&lt;/script&gt;&lt;script&gt;window.__pwned = 1&lt;/script&gt; | a")
    assert len(regressions) == 2 and all(len(r) == 6 for r in regressions)


def test_at_most_top_regressions_are_listed_and_the_rest_counted() -> None:
    text = summary_markdown(_model(comparison()), top=1)
    assert len([r for r in _rows(_html(text)) if len(r) == 6]) == 2  # the header and one
    assert "… and 1 more (`traceproof experiment compare --json`)." in text


def test_html_and_markdown_syntax_from_the_application_render_as_text() -> None:
    hostile = (
        "<b>bold</b> [link](http://x.test) ![img](http://y.test/i.png) **strong** _em_ ~~del~~"
    )
    comp = comparison()
    comp["examples"][0]["input_preview"] = hostile
    comp["examples"][0]["candidate_output"] = hostile
    comp["notes"] = [f"evaluator error: {hostile}"]
    html = (
        MarkdownIt("commonmark")
        .enable(["table", "strikethrough"])
        .render(summary_markdown(_model(comp)))
    )
    for tag in ("<a ", "<img", "<b>", "<strong>", "<em>", "<s>", "<del>"):
        assert tag not in html, tag
    regressions = [r for r in _rows(html) if len(r) == 6][1:]
    shown = "&lt;b&gt;bold&lt;/b&gt; [link](http://x.test) ![img](http://y.test/i.png) "
    assert regressions[0][2].startswith(shown)  # the input, as the application wrote it
    assert regressions[0][2].endswith("**strong** _em_ ~~del~~")
    assert regressions[0][4].startswith(shown)
    assert f"evaluator error: {shown}" in html
