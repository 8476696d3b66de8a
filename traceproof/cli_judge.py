"""``traceproof judge``: calibrate an LLM judge against people's labels, list calibrations.

``traceproof judge calibrate JUDGE --human NAME`` runs the ``calibrate_judge`` tool (on the
store, or through the server that holds it) and prints the report for a person: the verdict and
its reasons, the statistics, the confusion matrix and the disagreements. ``--few-shot-out FILE``
writes the disagreements as few-shot examples, a TOML fragment of ``[[evaluators.JUDGE.examples]]``
tables (preceded by the judge's own table when traceproof.toml does not declare it) to paste
into traceproof.toml: the judge's next version, a new definition hash, shows them to the model.
``traceproof judge calibrations [JUDGE]`` lists the stored calibrations, newest first.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from traceproof.cli import cli, db_option
from traceproof.cli_tools import call, emit, json_option

#: Most examples written by --few-shot-out.
FEW_SHOT_LIMIT = 8
#: Characters of an example's input or output written (the judge caps them again).
FEW_SHOT_CHARS = 4000


@cli.group()
def judge() -> None:
    """LLM judges: calibrate one against people's labels, list calibrations."""


@judge.command("calibrate")
@click.argument("judge_name", metavar="JUDGE")
@db_option
@click.option("--human", required=True, help="Name of the people's annotations to compare.")
@click.option(
    "--target",
    type=click.Choice(["span", "trace", "session"]),
    default=None,
    help="Only targets of this kind.",
)
@click.option("--rerun", is_flag=True, help="Judge every target again (no reuse).")
@click.option(
    "--few-shot-out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the disagreements as few-shot examples (TOML for traceproof.toml).",
)
@json_option
def calibrate(
    judge_name: str,
    db: Path | None,
    human: str,
    target: str | None,
    rerun: bool,
    few_shot_out: Path | None,
    as_json: bool,
) -> None:
    """Measure JUDGE against people's labels; store the pass/fail verdict with its hash."""
    arguments = {"judge": judge_name, "human": human, "target": target, "rerun": rerun}
    report = call(db, "calibrate_judge", arguments)
    pages = report
    while pages.get("next_cursor"):  # every disagreement the calibration kept
        pages = call(db, "calibrate_judge", arguments | {"cursor": pages["next_cursor"]})
        report["disagreements"] = report.get("disagreements", []) + pages["disagreements"]
    report.pop("next_cursor", None)
    if few_shot_out is not None:
        count = write_few_shot(db, report, few_shot_out)
        report["few_shot_out"] = {"path": str(few_shot_out), "examples": count}
    if as_json:
        emit(report, True)
    else:
        show(report, Console())
    if not report.get("passed"):  # a failing verdict fails the command (a CI gate)
        raise SystemExit(1)


@judge.command("calibrations")
@click.argument("judge_name", metavar="[JUDGE]", required=False)
@db_option
@click.option("--limit", type=int, default=20, show_default=True, help="Most rows.")
@json_option
def calibrations(judge_name: str | None, db: Path | None, limit: int, as_json: bool) -> None:
    """Stored calibrations, newest first (of one judge when given)."""
    where = f"WHERE judge_name = {_sql_text(judge_name)} " if judge_name else ""
    query = (
        "SELECT created_at, judge_name AS judge, judge_hash, human_name AS human, n, "
        "round(TRY_CAST(metrics->>'$.agreement' AS DOUBLE), 3) AS agreement, "
        "round(TRY_CAST(metrics->>'$.kappa' AS DOUBLE), 3) AS kappa, passed, id "
        f"FROM calibrations {where}ORDER BY created_at DESC, id LIMIT {int(limit)}"
    )
    emit(call(db, "sql", {"query": query}), as_json)


# -- the report, for a person -------------------------------------------------------------------


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def show(report: dict[str, Any], console: Console) -> None:
    """Draw a calibrate_judge report."""
    verdict = "[green]PASSED[/green]" if report.get("passed") else "[red]FAILED[/red]"
    console.print(
        f"judge {escape(report['judge'])} ({report['definition_hash']}) vs people's "
        f"{escape(report['human'])!r}: {verdict}",
        highlight=False,
    )
    for reason in report.get("reasons", []):
        console.print(f"  - {escape(reason)}", highlight=False)
    work = f"n {report['n']}: {report.get('reused', 0)} verdicts reused, "
    work += f"{report.get('judged', 0)} judged now"
    if report.get("errors"):
        work += f", {report['errors']} failed ({escape(str(report.get('error')))})"
    if report.get("cost_usd") is not None:
        work += f", ${report['cost_usd']:.4f}"
    console.print(work, highlight=False)
    limits = report.get("thresholds", {})
    stats = Table(title="statistics", title_justify="left")
    for column in ("statistic", "value", "95% interval", "needs"):
        stats.add_column(column)
    rows: list[tuple[str, Any, Any, Any]] = [
        ("agreement", report.get("agreement"), None, limits.get("agreement")),
        (
            f"kappa{' (' + report['kappa_weights'] + ')' if report.get('kappa_weights') else ''}",
            report.get("kappa"),
            None,
            limits.get("kappa"),
        ),
    ]
    if report.get("positive_label"):
        rows += [
            (f"TPR ({report['positive_label']})", report.get("tpr"), report.get("tpr_95"),
             limits.get("tpr")),
            ("TNR", report.get("tnr"), report.get("tnr_95"), limits.get("tnr")),
            ("judge's positive rate", report.get("observed_positive_rate"), None, None),
            ("corrected rate", report.get("corrected_positive_rate"), None, None),
        ]  # fmt: skip
    for name, value, interval, needs in rows:
        span = f"{interval[0]:.3f} - {interval[1]:.3f}" if interval else ""
        stats.add_row(name, _number(value), span, "" if needs is None else f">= {needs:.2f}")
    console.print(stats)
    labels = report.get("labels", [])
    console.print("confusion (rows: people's labels, columns: the judge's)")
    matrix = Table()
    matrix.add_column("")
    for label in labels:
        matrix.add_column(escape(label), justify="right")
    for label, counts in zip(labels, report.get("confusion", []), strict=False):
        matrix.add_row(escape(label), *(str(c) for c in counts))
    console.print(matrix)
    per = Table(title="per label", title_justify="left")
    for column in ("label", "precision", "recall", "F1", "people", "judge"):
        per.add_column(column, justify="left" if column == "label" else "right")
    for row in report.get("per_label", []):
        per.add_row(
            escape(row["label"]),
            _number(row.get("precision")),
            _number(row.get("recall")),
            _number(row.get("f1")),
            str(row.get("support", 0)),
            str(row.get("predicted", 0)),
        )
    console.print(per)
    for note in report.get("notes", []):
        console.print(f"note: {escape(note)}", highlight=False)
    wrong = report.get("disagreements", [])
    if wrong:
        table = Table(
            title=f"disagreements ({report.get('disagreements_total', len(wrong))})",
            title_justify="left",
        )
        for column in ("target", "people", "judge", "people's why", "judge's why"):
            table.add_column(column, overflow="fold")
        for d in wrong:
            table.add_row(
                d["target_id"],
                escape(d["human_label"]),
                escape(d["judge_label"]),
                escape(d.get("human_explanation") or ""),
                escape(d.get("judge_explanation") or ""),
            )
        console.print(table)
    if report.get("few_shot_out"):
        out = report["few_shot_out"]
        console.print(
            f"wrote {out['examples']} few-shot examples to {escape(out['path'])}: add them to "
            "traceproof.toml (a new version of the judge) and calibrate it again.",
            highlight=False,
        )
    console.print(f"calibration {report['calibration_id']} stored.", highlight=False)


# -- few-shot examples --------------------------------------------------------------------------


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _toml(value: Any) -> str:
    """A TOML value: JSON's string escapes are TOML's basic-string escapes."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML for {type(value).__name__}")


def _texts(db: Path | None, ids: list[str]) -> dict[str, tuple[str | None, str | None]]:
    """Input and output text of span or trace targets (a trace's: its root span's)."""
    listed = ", ".join(_sql_text(i) for i in ids)
    query = (
        f"SELECT span_id AS id, input_value, output_value FROM spans WHERE span_id IN ({listed}) "
        "UNION ALL SELECT trace_id, input_value, output_value FROM spans WHERE parent_span_id "
        f"IS NULL AND trace_id IN ({listed})"
    )
    found = call(db, "sql", {"query": query})
    out: dict[str, tuple[str | None, str | None]] = {}
    for target_id, given, said in found.get("rows", []):
        out.setdefault(target_id, (given, said))
    return out


def _declared(name: str) -> bool:
    from traceproof.evals.config import load_config

    try:
        return name in load_config().evaluators
    except Exception:  # a broken file: write the judge's table too, the user merges by hand
        return False


def write_few_shot(db: Path | None, report: dict[str, Any], path: Path) -> int:
    """Write the report's disagreements as few-shot examples to ``path``; how many."""
    name, digest = report["judge"], report["definition_hash"]
    wrong = report.get("disagreements", [])[:FEW_SHOT_LIMIT]
    texts = _texts(db, [d["target_id"] for d in wrong]) if wrong else {}
    lines = [
        f"# Few-shot examples for judge {name!r} from calibration {report['calibration_id']}",
        f"# (definition {digest}): where a person and the judge disagreed, labelled as the",
        "# person did. Add them to traceproof.toml: the judge's next version shows them to the",
        "# model (a new definition hash), then run `traceproof judge calibrate` again.",
    ]
    if not _declared(name):
        found = call(
            db,
            "sql",
            {
                "query": "SELECT definition FROM evaluator_definitions WHERE hash = "
                + _sql_text(digest),
            },
        )
        rows = found.get("rows", [])
        table = rows[0][0] if rows else {}
        table = json.loads(table) if isinstance(table, str) else table
        if isinstance(table, dict) and table:
            lines += ["", f"[evaluators.{name}]", 'kind = "judge"']
            for key, value in table.items():
                if key in ("name", "examples") or value in (None, "", [], {}):
                    continue
                lines.append(f"{key} = {_toml(value)}")
            previous = table.get("examples") or []
            for example in previous:
                lines += ["", f"[[evaluators.{name}.examples]]"]
                lines += [f"{k} = {_toml(v)}" for k, v in example.items() if v not in (None, "")]
    written = 0
    for d in wrong:
        given, said = texts.get(d["target_id"], (None, None))
        why = d.get("human_explanation") or (
            f"A person labelled this {d['human_label']!r}; a judge said {d['judge_label']!r}."
        )
        lines += ["", f"[[evaluators.{name}.examples]]"]
        if given:
            lines.append(f"input = {_toml(given[:FEW_SHOT_CHARS])}")
        if said:
            lines.append(f"output = {_toml(said[:FEW_SHOT_CHARS])}")
        lines += [f"label = {_toml(d['human_label'])}", f"explanation = {_toml(why)}"]
        written += 1
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return written
