"""``traceproof experiment report BASELINE CANDIDATE`` and ``compare --report-html``: the HTML
report written by the CLI, with the verdict's exit status (the page itself is tested in a real
browser by tests/test_report_html.py)."""

from __future__ import annotations

from pathlib import Path

from tests.proof_fixtures import insert_comparison
from tests.test_compare import cli
from traceproof.storage import Store


def test_experiment_report_writes_one_self_contained_file_and_exits_with_the_verdict(
    store: Store, tmp_path: Path
) -> None:
    made = insert_comparison(store)
    db = store.settings.db
    store.close()
    page = tmp_path / "out" / "report.html"
    written = cli(db, "report", "exp_base", "exp_cand", "-o", str(page))
    assert written.returncode == 1, written.stderr  # the default gate: a regression fails
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") or html.lower().startswith("<!doctype html>")
    assert made["examples"][2] in html  # the regressed example is in the page's data
    assert "http://" not in html.replace("http://www.w3.org/2000/svg", "")  # nothing fetched
    passed = tmp_path / "passed.html"
    gated = cli(
        db, "report", "exp_base", "exp_cand", "-o", str(passed), "--gate", "min:quality>=0.6"
    )
    assert gated.returncode == 0, gated.stderr
    assert passed.exists()
    also = tmp_path / "compare.html"
    compared = cli(db, "compare", "exp_cand", "--report-html", str(also))
    assert compared.returncode == 1, compared.stderr
    assert also.read_text().count(made["examples"][2]) >= 1
    missing = cli(db, "report", "exp_base", "exp_nope", "-o", str(tmp_path / "x.html"))
    assert missing.returncode == 3 and not (tmp_path / "x.html").exists()
