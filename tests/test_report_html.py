"""The HTML report of a comparison, opened from file:// in a real headless Chromium (Debian's
package, driven by Playwright), and the store reads behind its waterfalls (a real DuckDB file).

Without Chromium or Playwright a developer gets a skip that says what to install; under CI
(``TRACEPROOF_CI=1``, set by .ci/run, which installs Chromium) the same is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.proof_report_fixtures import HOSTILE, comparison, traces, with_verdict
from traceproof.experiments.report import render_html, write_report
from traceproof.ingest.normalize import SpanRows
from traceproof.storage import Store
from traceproof.storage.reports import read_waterfalls, run_trace_ids, trace_waterfalls

CHROMIUM = os.environ.get("TRACEPROOF_CHROMIUM", "/usr/bin/chromium")
IN_CI = os.environ.get("TRACEPROOF_CI") == "1"
INSTALL = (
    "the browser tests need Chromium and Playwright: `sudo apt-get install -y chromium` "
    "(Debian's package, at /usr/bin/chromium; or set TRACEPROOF_CHROMIUM) and "
    "`pip install -e '.[test]'` (never `playwright install`)"
)


class Page:
    """A page opened from a file, with everything the browser reported while it ran."""

    def __init__(self, browser: Any, path: Path) -> None:
        self.page = browser.new_page()
        self.page.set_default_timeout(10_000)
        self.console: list[str] = []
        self.errors: list[str] = []
        self.failed: list[tuple[str, str | None]] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("requestfailed", lambda r: self.failed.append((r.url, r.failure)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(path.as_uri())

    def rows(self) -> Any:
        return self.page.locator("#examples tr.example")

    def visible_changes(self) -> list[str]:
        return [
            str(v)
            for v in self.page.eval_on_selector_all(
                "#examples tr.example:not([hidden])", "rs => rs.map(r => r.dataset.change)"
            )
        ]

    def bars(self, role: str) -> Any:
        return self.page.locator(f"#detail .wf[data-role={role}] .wf-bar")

    def assert_clean(self) -> None:
        """No console message of any kind, no script error, no failed request, and no request
        to anything but the file itself."""
        assert self.console == []
        assert self.errors == []
        assert self.failed == []
        assert self.requests and all(u.startswith("file://") for u in self.requests)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    problem = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problem = f"Playwright is not installed; {INSTALL}"
    if problem is None and not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        problem = f"no Chromium at {CHROMIUM}; {INSTALL}"
    if problem is not None:
        if IN_CI:
            pytest.fail(f"TRACEPROOF_CI=1 and {problem}")
        pytest.skip(problem)
    with sync_playwright() as pw:
        launched = pw.chromium.launch(executable_path=CHROMIUM)
        try:
            yield launched
        finally:
            launched.close()


def _write(tmp_path: Path, page: str, name: str = "report.html") -> Path:
    path = tmp_path / name
    path.write_text(page, encoding="utf-8")
    return path


@pytest.fixture
def report(tmp_path: Path, browser: Any) -> Iterator[Page]:
    comp = comparison()
    opened = Page(browser, _write(tmp_path, render_html(comp, traces(comp))))
    try:
        yield opened
    finally:
        opened.page.close()


# -- the page in the browser --------------------------------------------------------------------


def test_the_report_renders_from_a_file_with_no_console_output_and_no_request(
    report: Page,
) -> None:
    report.page.locator("#examples tr.example").first.click()
    report.page.select_option("#filter-change", "improved")
    report.page.fill("#filter-text", "order")
    report.assert_clean()
    assert report.requests == [report.page.url]


def test_the_verdict_and_its_reasons_are_shown(report: Page) -> None:
    verdict = report.page.locator("#verdict")
    assert verdict.locator(".status").inner_text().lower() == "fail"
    assert "fail" in (verdict.get_attribute("class") or "").split()
    text = verdict.inner_text()
    assert "2 examples regressed on correct" in text
    assert "no_regressions,min:correct>=0.9" in text
    assert report.page.title() == "Experiment comparison: baseline <b>bold</b> → candidate"


@pytest.mark.parametrize("status", ["pass", "inconclusive"])
def test_each_verdict_status_is_shown_as_itself(tmp_path: Path, browser: Any, status: str) -> None:
    comp = with_verdict(comparison(), status)
    page = Page(browser, _write(tmp_path, render_html(comp, traces(comp))))
    assert page.page.locator("#verdict .status").inner_text().lower() == status
    page.assert_clean()


def test_a_comparison_without_a_gate_says_there_is_no_verdict(tmp_path: Path, browser: Any) -> None:
    comp = comparison()
    comp["verdict"] = None
    page = Page(browser, _write(tmp_path, render_html(comp, {})))
    assert page.page.locator("#verdict .status").inner_text().lower() == "no gate"
    page.page.locator("#examples tr.example").first.click()
    assert "No spans of this trace" in page.page.locator("#detail").inner_text()
    page.assert_clean()


def test_regressions_come_first_in_the_examples_table(report: Page) -> None:
    changes = report.visible_changes()
    assert len(changes) == 10
    assert changes[:2] == ["regressed", "regressed"]
    assert "regressed" not in changes[2:]
    first = report.rows().first
    assert "ex00000000000001" in first.inner_text()


def test_the_evaluators_show_their_deltas_intervals_and_a_bar_each(report: Page) -> None:
    table = report.page.locator("table.evaluators")
    rows = table.locator("tbody tr")
    assert rows.count() == 2
    correct = rows.nth(0).inner_text()
    assert "+0.1" in correct and "[−0.2, 0.4]" in correct and "mcnemar_exact" in correct
    assert rows.nth(0).locator("svg.interval rect.ci").count() == 1
    assert rows.nth(0).locator("svg.interval").get_attribute("aria-label") == (
        "delta +0.1, interval −0.2 to 0.4"
    )
    # no interval: a dot, no bar; an uncalibrated judge is marked
    assert rows.nth(1).locator("svg.interval rect.ci").count() == 0
    assert "uncalibrated" in rows.nth(1).inner_text()
    operational = report.page.locator("table.operational").inner_text()
    assert "latency_p50_ms" in operational and "(better)" in operational
    assert "(worse)" in operational


def test_the_change_filter_and_the_text_search_hide_rows(report: Page) -> None:
    report.page.select_option("#filter-change", "improved")
    assert report.visible_changes() == ["improved"] * 3
    assert report.page.locator("#filter-count").inner_text() == "3 of 10 shown"
    report.page.select_option("#filter-change", "")
    report.page.fill("#filter-text", "ORDER 7 status")
    assert report.page.locator("#examples tr.example:not([hidden])").count() == 1
    assert (
        "ex00000000000007" in report.page.locator("#examples tr.example:not([hidden])").inner_text()
    )
    # search reaches output text, not only what the table cell shows
    report.page.fill("#filter-text", "onerror")
    assert report.visible_changes() == ["regressed"]
    report.page.select_option("#filter-change", "flaky")
    assert report.visible_changes() == []
    assert report.page.locator("#filter-count").inner_text() == "0 of 10 shown"
    report.page.fill("#filter-text", "")
    assert report.visible_changes() == ["flaky"]


def test_clicking_a_row_shows_both_waterfalls_with_one_bar_per_span(report: Page) -> None:
    assert report.page.locator("#detail-body").is_hidden()
    report.rows().nth(0).click()
    assert report.bars("baseline").count() == 4
    assert report.bars("candidate").count() == 5
    # the candidate's failed tool is marked as an error, in colour and in words
    errors = report.page.locator("#detail .wf[data-role=candidate] .wf-bar.wf-error")
    assert errors.count() == 1
    error_row = report.page.locator(
        "#detail .wf[data-role=candidate] .wf-row", has=report.page.locator(".wf-error")
    )
    assert "error" in error_row.locator(".wf-flag").inner_text()
    assert report.page.locator("#detail .wf[data-role=baseline] .wf-error").count() == 0
    assert "run exp_cand00000001:ex00000000000001:0, trace tc" in (
        report.page.locator("#detail .wf[data-role=candidate] p.sub").first.inner_text()
    )
    # bars sit at start/scale and span duration/scale; the scale is the longer trace (500 ms)
    tool = report.page.locator("#detail .wf[data-role=baseline] .wf-row[data-span-id$='-t']")
    style = tool.locator(".wf-bar").get_attribute("style") or ""
    assert re.search(r"left: 38%", style) and re.search(r"width: 30%", style), style
    # nesting: the retriever under the tool under the agent is indented twice
    names = report.page.eval_on_selector_all(
        "#detail .wf[data-role=baseline] .wf-label",
        "ls => ls.map(l => [l.querySelector('.wf-name').textContent, l.style.paddingLeft])",
    )
    assert names == [
        ["agent", "0px"],
        ["ChatCompletion", "14px"],
        ["lookup_order", "14px"],
        ["search_kb", "28px"],
    ]
    # another row replaces the waterfalls
    report.rows().nth(9).click()
    assert report.bars("candidate").count() == 4
    assert report.page.locator("#detail .wf-error").count() == 0
    assert "ex00000000000010" in report.page.locator("#detail").inner_text()


def test_a_failed_run_shows_its_error_in_the_table_and_the_detail(report: Page) -> None:
    row = report.rows().nth(1)
    assert "error: timeout: no answer after 30 s" in row.locator(".run-error").inner_text()
    row.click()
    detail = report.page.locator("#detail .io").inner_text()
    assert "error: timeout: no answer after 30 s" in detail
    assert report.page.locator("#detail .io .run-error").count() == 1
    assert "1 example only in the baseline" in report.page.locator("header .notes").inner_text()


def test_the_row_button_opens_the_traces_from_the_keyboard(report: Page) -> None:
    button = report.rows().nth(2).locator("button.show")
    button.focus()
    report.page.keyboard.press("Enter")
    assert report.bars("baseline").count() == 4
    assert report.rows().nth(2).get_attribute("aria-selected") == "true"


def test_hostile_strings_in_outputs_and_span_names_are_shown_as_text(report: Page) -> None:
    for i in range(report.rows().count()):
        report.rows().nth(i).click()
        if i == 0:
            shown = report.page.locator("#detail .io pre").all_inner_texts()
            assert shown[2] == HOSTILE[0]
            names = report.page.locator("#detail .wf[data-role=candidate] .wf-name")
            assert names.all_inner_texts()[-1] == HOSTILE[0]
    assert report.page.evaluate("window.__pwned") is None
    # no element the strings spell out was made: the only scripts are the page's two
    assert report.page.locator("img, svg[onload], script").count() == 2
    assert report.page.locator("svg").count() == 2  # the evaluators' bars
    cells = report.page.locator("#examples td.text").all_inner_texts()
    for text in HOSTILE:
        assert any(text.strip() in c for c in cells), text
    report.assert_clean()


def test_a_cut_waterfall_says_how_many_spans_it_shows(tmp_path: Path, browser: Any) -> None:
    comp = comparison()
    found = traces(comp)
    first = comp["examples"][0]
    totals = {first["baseline_trace_id"]: 900}
    notes = ["1 trace(s) have more than 4 spans: their waterfalls show the first 4."]
    page = Page(
        browser, _write(tmp_path, render_html(comp, found, span_totals=totals, notes=notes))
    )
    assert notes[0] in page.page.locator("header .notes").inner_text()
    page.rows().first.click()
    wf = page.page.locator("#detail .wf[data-role=baseline]").inner_text()
    assert "Showing the first 4 of 900 spans" in wf
    assert "Showing" not in page.page.locator("#detail .wf[data-role=candidate]").inner_text()
    page.assert_clean()


# -- the page's text --------------------------------------------------------------------------


def _embedded(page: str) -> Any:
    found = re.search(
        r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S
    )
    assert found
    return json.loads(found.group(1))


def test_embedded_data_cannot_close_its_script_block_and_parses_back_whole() -> None:
    comp = comparison()
    comp["examples"][1]["input_preview"] = "\ud800 lone surrogate </script"
    page = render_html(comp, traces(comp))
    block = page.split('id="report-data">', 1)[1].split("</script>", 1)[0]
    assert "<" not in block and ">" not in block and "&" not in block
    assert block.isascii()
    data = _embedded(page)
    assert data["examples"][0]["candidate_output"] == HOSTILE[0]
    assert data["examples"][1]["input_preview"] == "\ud800 lone surrogate </script"
    spans = data["traces"][comp["examples"][0]["candidate_trace_id"]]["spans"]
    assert spans[-1][2] == HOSTILE[0]  # SPAN_FIELDS order: the name is third
    # the page's markup holds the hostile strings only escaped
    for text in HOSTILE:
        assert text not in page.replace(block, "")


def test_long_outputs_are_clipped_with_the_count_of_what_was_left_out() -> None:
    comp = comparison()
    comp["examples"][0]["candidate_output"] = "x" * 10_000
    comp["examples"][0]["baseline_output"] = {"answer": "structured"}
    data = _embedded(render_html(comp, {}))
    assert data["examples"][0]["candidate_output"] == "x" * 4_000 + "… (6,000 more characters)"
    assert data["examples"][0]["baseline_output"] == '{"answer": "structured"}'


def test_an_interval_above_zero_is_worse_for_an_evaluator_that_minimizes() -> None:
    comp = comparison()
    comp["evaluators"][0] |= {"ci_low": 0.1, "ci_high": 0.3, "delta": 0.2}
    assert "class='interval better'" in render_html(comp, {})
    comp["evaluators"][0]["lower_is_better"] = True
    page = render_html(comp, {})
    assert "class='interval worse'" in page and "class='interval better'" not in page


def test_not_a_number_in_the_comparison_is_shown_as_missing() -> None:
    comp = comparison()
    comp["evaluators"][0]["p_value"] = float("nan")
    comp["operational"][0]["delta_pct"] = float("inf")
    page = render_html(comp, {})
    assert "nan" not in page.lower().replace("nanos", "")
    assert "inf%" not in page


# -- the store behind the waterfalls --------------------------------------------------------------

T0 = datetime(2026, 11, 30, 12, 0, 0)


def _spans(
    store: Store, trace_id: str, spans: list[tuple[str, str | None, str, int, int, str]]
) -> None:
    """Write spans (id, parent, name, start ms, end ms, status) of one trace."""
    rows = SpanRows()
    epoch = datetime(1970, 1, 1)
    for span_id, parent, name, start, end, status in spans:
        rows.add(
            project="app",
            trace_id=trace_id,
            span_id=span_id,
            parent_span_id=parent,
            name=name,
            start_ns=(T0 + timedelta(milliseconds=start) - epoch)
            // timedelta(microseconds=1)
            * 1000,
            end_ns=(T0 + timedelta(milliseconds=end) - epoch) // timedelta(microseconds=1) * 1000,
            status=status,
            status_message=None,
            attributes={"openinference.span.kind": "TOOL" if parent else "AGENT"},
        )
    store.write(rows.table())


def test_waterfalls_time_spans_from_their_trace_s_first_span(store: Store) -> None:
    # the root starts after a skewed child: times count from the earliest span
    _spans(
        store,
        "t1",
        [
            ("root", None, "agent", 100, 600, "OK"),
            ("c1", "root", "tool", 50, 150, "ERROR"),
            ("c2", "root", "x" * 500, 300, 300, "OK"),
        ],
    )
    _spans(store, "t2", [("r2", None, "agent", 1000, 1250, "OK")])
    with store.reader() as reader:
        found = trace_waterfalls(reader, ["t1", "t2", "absent", "t1"])
    assert set(found) == {"t1", "t2"}
    assert found["t1"] == [
        {
            "span_id": "c1",
            "parent_span_id": "root",
            "name": "tool",
            "span_kind": "TOOL",
            "status": "ERROR",
            "start_ms": 0.0,
            "duration_ms": 100.0,
        },
        {
            "span_id": "root",
            "parent_span_id": None,
            "name": "agent",
            "span_kind": "AGENT",
            "status": "OK",
            "start_ms": 50.0,
            "duration_ms": 500.0,
        },
        {
            "span_id": "c2",
            "parent_span_id": "root",
            "name": "x" * 200,
            "span_kind": "TOOL",
            "status": "OK",
            "start_ms": 250.0,
            "duration_ms": 0.0,
        },
    ]
    assert found["t2"][0]["start_ms"] == 0.0 and found["t2"][0]["duration_ms"] == 250.0


def test_a_waterfall_keeps_at_most_max_spans_the_earliest_and_counts_them_all(
    store: Store,
) -> None:
    _spans(
        store,
        "big",
        [("root", None, "agent", 0, 1000, "OK")]
        + [(f"s{i:03d}", "root", f"step {i}", 10 * i, 10 * i + 5, "OK") for i in range(1, 60)],
    )
    with store.reader() as reader:
        spans, totals = read_waterfalls(reader, ["big"], max_spans=7)
    assert totals == {"big": 60}
    assert [s["span_id"] for s in spans["big"]] == ["root"] + [f"s{i:03d}" for i in range(1, 7)]


def _run(store: Store, run_id: str, trace_ids: list[str]) -> None:
    store.run_write(
        lambda cur: cur.execute(
            "INSERT INTO experiment_runs (id, experiment_id, example_id, repetition, status, "
            "trace_ids, started_at) VALUES (?, ?, ?, 0, 'ok', ?, ?)",
            [run_id, *run_id.split(":")[:2], trace_ids, T0],
        )
    )


def test_write_report_embeds_the_compared_runs_traces_and_opens_in_the_browser(
    store: Store, tmp_path: Path, browser: Any
) -> None:
    comp = comparison()
    first = comp["examples"][0]
    _spans(store, first["baseline_trace_id"], [("b", None, "agent", 0, 300, "OK")])
    _spans(
        store,
        "from-the-run",
        [
            ("c", None, "agent", 0, 400, "OK"),
            ("c-t", "c", "lookup_order", 10, 300, "ERROR"),
            ("c-r", "c-t", "search_kb", 20, 40, "OK"),
        ],
    )
    # the comparison names no candidate trace: the run's recorded one is used
    first["candidate_trace_id"] = None
    _run(store, first["candidate_run_id"], ["from-the-run", "second"])
    with store.reader() as reader:
        assert run_trace_ids(reader, [first["candidate_run_id"], "nope"]) == {
            first["candidate_run_id"]: ["from-the-run", "second"]
        }
    out = tmp_path / "reports"
    out.mkdir()
    path = write_report(store, comp, out / "out.html")
    assert path == out / "out.html"
    assert list(out.iterdir()) == [path]  # no temporary file left behind
    data = _embedded(path.read_text(encoding="utf-8"))
    assert set(data["traces"]) == {first["baseline_trace_id"], "from-the-run"}
    page = Page(browser, path)
    page.rows().first.click()
    assert page.bars("baseline").count() == 1
    assert page.bars("candidate").count() == 3
    assert page.page.locator("#detail .wf[data-role=candidate] .wf-error").count() == 1
    page.rows().nth(1).click()
    assert "No spans of this trace" in page.page.locator("#detail").inner_text()
    page.assert_clean()


def test_write_report_bounds_the_spans_it_embeds_and_says_what_it_left_out(
    store: Store, tmp_path: Path
) -> None:
    comp = comparison()
    for ex in comp["examples"][:3]:
        for side in ("baseline", "candidate"):
            _spans(
                store,
                ex[f"{side}_trace_id"],
                [("r", None, "agent", 0, 100, "OK")]
                + [(f"s{i}", "r", "step", i, i + 1, "OK") for i in range(5)],
            )
    path = write_report(
        store, comp, tmp_path / "r.html", max_spans_per_trace=4, max_report_spans=10
    )
    page = path.read_text(encoding="utf-8")
    data = _embedded(page)
    # regressions first: the first example's two traces fit (4 + 4 spans), the rest do not
    first = comp["examples"][0]
    assert set(data["traces"]) == {first["baseline_trace_id"], first["candidate_trace_id"]}
    assert all(t["total"] == 6 and len(t["spans"]) == 4 for t in data["traces"].values())
    assert "2 trace(s) have more than 4 spans" in page
    assert "The waterfalls of 4 trace(s) are left out" in page


def test_the_content_security_policy_stops_markup_that_got_in_from_running_or_fetching(
    tmp_path: Path, browser: Any
) -> None:
    # defence in depth: were escaping ever to fail, the page's policy allows only its own
    # script and style (by hash) and no request at all
    comp = comparison()
    page = render_html(comp, traces(comp)).replace(
        "<main>",
        "<main><script>window.__pwned = 9</script>"
        '<img id="planted" src="http://127.0.0.1:9/x.png">',
    )
    opened = Page(browser, _write(tmp_path, page))
    assert opened.page.evaluate("window.__pwned") is None
    # the browser stopped the image itself: the request never reached the network
    assert opened.failed == [("http://127.0.0.1:9/x.png", "csp")]
    assert any("Content Security Policy" in m for m in opened.console)
    # the page's own script still runs
    opened.rows().first.click()
    assert opened.bars("candidate").count() == 5
