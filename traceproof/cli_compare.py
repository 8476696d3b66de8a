"""``traceproof experiment compare`` and ``traceproof experiment baseline``: the verdict for CI.

``compare CANDIDATE [--baseline auto|ID] [--gate SPEC] [--json] [--summary-md FILE]`` compares
an experiment with its baseline (on the store, or through the server that holds it) and exits
with the verdict: 0 pass, 1 fail, 2 inconclusive, 3 when it could not run (no such experiment,
no baseline, a bad gate spec or option, a store error). ``--json`` prints the comparison with
its verdict, the answer of ``compare_experiments`` with every changed example and every field;
``--summary-md`` writes the Markdown summary
(:func:`traceproof.experiments.summary.summary_markdown`) for a CI job summary or a PR comment.

``baseline TASK --dataset D [--set ID]`` shows (or sets) the baseline of a task on a dataset.

:func:`finish_run` is what ``traceproof experiment run`` calls once its experiment is done, with
its ``--baseline/--gate/--summary-md/--report-html`` options: the same comparison, files and
exit codes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from traceproof.cli import _settings, _store_or_remote, db_option, err
from traceproof.cli_proof import NotRunCommand as _Command
from traceproof.cli_proof import experiment
from traceproof.cli_render import closed_pipe_ok, drawing_console
from traceproof.cli_tools import error_for_people
from traceproof.errors import ErrorCode, TraceproofError
from traceproof.experiments.compare import Comparison
from traceproof.remote import RemoteStore
from traceproof.storage import Store

__all__ = ["EXIT_CODES", "NOT_RUN", "finish_run", "load_comparison"]

#: Exit status of each verdict; :data:`NOT_RUN` when there was none.
EXIT_CODES = {"pass": 0, "fail": 1, "inconclusive": 2}
NOT_RUN = 3


def _say_error(exc: TraceproofError | str) -> None:
    text = error_for_people(exc) if isinstance(exc, TraceproofError) else exc
    if isinstance(exc, TraceproofError) and exc.message.startswith("No baseline is set"):
        failed = exc.message.partition(" Pass baseline=")[0]
        text = (
            f"[{exc.code}] {failed} Pass --baseline EXPERIMENT_ID, or set one: `traceproof "
            "experiment baseline TASK --dataset DATASET --set EXPERIMENT_ID`."
        )
    err.print(f"[red]error:[/red] {escape(text)}", highlight=False, soft_wrap=True)


def load_comparison(
    store: Store | RemoteStore, candidate: str, baseline: str | None, gate: str | None
) -> Comparison:
    """The comparison with its verdict: every example on a local store; through a server, the
    changed examples (every page of ``compare_experiments``, as its answer)."""
    from traceproof.tools.compare import ComparisonAnswer, comparison_for

    if isinstance(store, Store):
        return comparison_for(store, candidate, baseline, gate)
    arguments: dict[str, Any] = {"candidate": candidate, "max_chars": 80_000}
    if baseline is not None:
        arguments["baseline"] = baseline
    if gate is not None:
        arguments["gate"] = gate
    found = store.call_tool("compare_experiments", arguments)
    page = found
    while page.get("next_cursor"):
        page = store.call_tool("compare_experiments", arguments | {"cursor": page["next_cursor"]})
        found["examples"] = found.get("examples", []) + page.get("examples", [])
    return ComparisonAnswer.model_validate(found)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _report(store: Store | RemoteStore, comparison: Comparison, path: Path) -> None:
    """The HTML report (:mod:`traceproof.experiments.report`): it reads the runs' traces from
    the store, so through a server the server makes it (``POST /api/v1/report``)."""
    from traceproof.experiments.report import write_page, write_report

    if isinstance(store, RemoteStore):
        base = comparison.baseline.id if comparison.baseline else None
        gate = comparison.verdict.gate if comparison.verdict else None
        write_page(store.report_html(comparison.candidate.id, base, gate), path)
        return
    write_report(store, comparison, path)


def finish_run(
    store: Store | RemoteStore,
    experiment_id: str,
    baseline: str | None,
    gate: str | None,
    summary_md: Path | None,
    report_html: Path | None,
    *,
    as_json: bool = False,
    console: Console | None = None,
) -> int:
    """Compare ``experiment_id`` with ``baseline`` (None: ``auto``) under ``gate`` (None: the
    ``gate_default`` setting), write the summary and the report when asked, print the verdict
    (``as_json``: the comparison as JSON on stdout), and return the exit code: 0 pass, 1 fail,
    2 inconclusive, 3 could not run (the error said on stderr)."""
    from traceproof.experiments.summary import summary_markdown

    try:
        comparison = load_comparison(store, experiment_id, baseline, gate)
        if summary_md is not None:
            _write(summary_md, summary_markdown(comparison))
        if report_html is not None:
            _report(store, comparison, report_html)
    except TraceproofError as exc:
        _say_error(exc)
        return NOT_RUN
    except OSError as exc:
        _say_error(f"[invalid_argument] Could not write {exc.filename}: {exc.strerror}.")
        return NOT_RUN
    with closed_pipe_ok():
        if as_json:  # the tool's answer, every page, every field
            from traceproof.tools.compare import answer_of

            click.echo(answer_of(comparison).model_dump_json(indent=2))
        else:
            show(comparison, console or drawing_console())
    assert comparison.verdict is not None
    return EXIT_CODES[comparison.verdict.status]


_HTML_OPTION = click.option(
    "--report-html",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the self-contained HTML report to FILE.",
)


@experiment.command("compare", cls=_Command)
@click.argument("candidate")
@db_option
@click.option(
    "--baseline",
    default="auto",
    show_default=True,
    help="Baseline experiment id, or auto: the stored baseline of the candidate's task and "
    "dataset.",
)
@click.option(
    "--gate",
    default=None,
    metavar="SPEC",
    help="Gate rules, comma-separated (README: Gates); default the gate_default setting.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the comparison and verdict as JSON.")
@click.option(
    "--summary-md",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write a Markdown summary (CI job summary, PR comment) to FILE.",
)
@_HTML_OPTION
def compare_command(
    candidate: str,
    db: Path | None,
    baseline: str,
    gate: str | None,
    as_json: bool,
    summary_md: Path | None,
    report_html: Path | None,
) -> None:
    """Compare CANDIDATE with its baseline; exit 0 pass, 1 fail, 2 inconclusive, 3 not run."""
    settings = _settings(db)
    try:
        with _store_or_remote(settings) as store:
            code = finish_run(
                store, candidate, baseline, gate, summary_md, report_html, as_json=as_json
            )
    except TraceproofError as exc:
        _say_error(exc)
        code = NOT_RUN
    sys.exit(code)


@experiment.command("report", cls=_Command)
@click.argument("baseline")
@click.argument("candidate")
@db_option
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("report.html"),
    show_default=True,
    help="The HTML file to write.",
)
@click.option("--gate", default=None, metavar="SPEC", help="Gate rules (README: Gates).")
def report_command(
    baseline: str, candidate: str, db: Path | None, output: Path, gate: str | None
) -> None:
    """Write the HTML report comparing CANDIDATE with BASELINE (one self-contained file); exit
    as `compare` does: 0 pass, 1 fail, 2 inconclusive, 3 not run."""
    settings = _settings(db)
    try:
        with _store_or_remote(settings) as store:
            code = finish_run(store, candidate, baseline, gate, None, output)
    except TraceproofError as exc:
        _say_error(exc)
        code = NOT_RUN
    if code != NOT_RUN:
        err.print(f"wrote {escape(str(output))}", highlight=False)
    sys.exit(code)


@experiment.command("baseline", cls=_Command)
@click.argument("task")
@db_option
@click.option("--dataset", required=True, help="Dataset name or id.")
@click.option(
    "--set", "set_to", default=None, metavar="ID", help="Make experiment ID the baseline."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def baseline_command(
    task: str, db: Path | None, dataset: str, set_to: str | None, as_json: bool
) -> None:
    """Show (or --set) the baseline experiment of TASK on a dataset."""
    settings = _settings(db)
    try:
        with _store_or_remote(settings) as store:
            found = _baseline(store, task, dataset, set_to)
    except TraceproofError as exc:
        _say_error(exc)
        sys.exit(NOT_RUN)
    if as_json:
        click.echo(json.dumps(found, indent=2, default=str))
    elif found.get("experiment_id"):
        was = f" (was {found['previous']})" if found.get("previous") else ""
        click.echo(
            f"baseline of task {task} on dataset {found['dataset']}: {found['experiment_id']}{was}"
        )
    else:
        click.echo(
            f"No baseline for task {task} on dataset {found['dataset']}. Set one with "
            f"`traceproof experiment baseline {task} --dataset {dataset} --set EXPERIMENT_ID`."
        )


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _rows(store: Store | RemoteStore, query: str) -> list[list[Any]]:
    if isinstance(store, RemoteStore):
        return list(store.call_tool("sql", {"query": query}).get("rows", []))
    with store.reader() as reader:
        return [list(row) for row in reader.rows(query)]


def _baseline(
    store: Store | RemoteStore, task: str, dataset: str, set_to: str | None
) -> dict[str, Any]:
    found = _rows(
        store,
        f"SELECT id, name FROM datasets WHERE id = {_sql_text(dataset)} OR name = "
        f"{_sql_text(dataset)} ORDER BY id = {_sql_text(dataset)} DESC LIMIT 1",
    )
    if not found:
        names = [r[0] for r in _rows(store, "SELECT name FROM datasets ORDER BY name LIMIT 20")]
        raise TraceproofError(
            f"No dataset {dataset!r}. Datasets: {', '.join(names) or 'none yet'}. Run "
            "`traceproof dataset list` to see them.",
            code=ErrorCode.NOT_FOUND,
        )
    dataset_id, dataset_name = found[0]
    where = f"task = {_sql_text(task)} AND dataset_id = {_sql_text(dataset_id)}"
    current = _rows(store, f"SELECT experiment_id FROM experiment_baselines WHERE {where}")
    result: dict[str, Any] = {
        "task": task,
        "dataset": dataset_name,
        "dataset_id": dataset_id,
        "experiment_id": current[0][0] if current else None,
    }
    if set_to is None:
        return result
    exp = _rows(
        store,
        f"SELECT id, task, dataset_id FROM experiments WHERE id = {_sql_text(set_to)} OR name = "
        f"{_sql_text(set_to)} ORDER BY id = {_sql_text(set_to)} DESC, created_at DESC, id "
        "LIMIT 10",
    )
    if len(exp) > 1 and exp[0][0] != set_to:
        raise TraceproofError(
            f"{set_to!r} names {len(exp)}{'+' if len(exp) == 10 else ''} experiments: "
            f"{', '.join(str(r[0]) for r in exp)} (newest first). Pass one of their ids.",
            code=ErrorCode.INVALID_ARGUMENT,
        )
    if not exp:
        raise TraceproofError(
            f'No experiment {set_to!r}. Run `traceproof sql "SELECT id, task, status FROM '
            'experiments ORDER BY created_at DESC"` to list them.',
            code=ErrorCode.NOT_FOUND,
        )
    exp_id, exp_task, exp_dataset = exp[0]
    if (exp_task, exp_dataset) != (task, dataset_id):
        raise TraceproofError(
            f"Experiment {exp_id} ran task {exp_task!r} on dataset {exp_dataset}, not task "
            f"{task!r} on {dataset_id}: it cannot be their baseline. Pick an experiment of "
            "that task and dataset.",
            code=ErrorCode.INVALID_ARGUMENT,
        )
    if isinstance(store, RemoteStore):
        # the candidate as its own baseline: set without comparing
        store.call_tool(
            "compare_experiments",
            {"candidate": exp_id, "baseline": exp_id, "set_baseline": True},
        )
    else:
        from traceproof.storage.comparison import set_baseline

        set_baseline(store, task, dataset_id, exp_id)
    return result | {"experiment_id": exp_id, "previous": result["experiment_id"]}


# -- for a person -------------------------------------------------------------------------------

_COLOURS = {"pass": "green", "fail": "red", "inconclusive": "yellow"}


def _n(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.4g}" if signed else f"{value:.4g}"


def show(comparison: Comparison, console: Console) -> None:
    """Draw a comparison: verdict and reasons, evaluators, operational deltas, regressions."""
    verdict = comparison.verdict
    base = comparison.baseline.id if comparison.baseline else "-"
    if verdict is not None:
        colour = _COLOURS[verdict.status]
        console.print(
            f"[{colour}]{verdict.status.upper()}[/{colour}] {escape(comparison.candidate.id)} "
            f"vs {escape(base)}: {comparison.examples_compared} examples, gate "
            f"{escape(verdict.gate)}",
            highlight=False,
        )
        for reason in verdict.reasons:
            console.print(f"  - {escape(reason)}", highlight=False)
    if comparison.evaluators:
        table = Table(title="evaluators", title_justify="left")
        columns = ("evaluator", "baseline", "candidate", "delta", "95% interval", "p (Holm)")
        for column in (*columns, "MDE", "+", "-", "flaky"):
            table.add_column(column)
        for e in comparison.evaluators:
            table.add_row(
                escape(e.name) + (" (uncalibrated)" if e.uncalibrated else ""),
                _n(e.baseline_mean),
                _n(e.candidate_mean),
                _n(e.delta, True),
                f"[{_n(e.ci_low, True)}, {_n(e.ci_high, True)}]",
                _n(e.p_adjusted),
                _n(e.mde),
                str(e.improved),
                str(e.regressed),
                str(e.flaky),
            )
        console.print(table)
    ops = [o for o in comparison.operational if o.baseline is not None or o.candidate is not None]
    if ops:
        table = Table(title="operational", title_justify="left")
        for column in ("metric", "baseline", "candidate", "delta", "delta %"):
            table.add_column(column)
        for o in ops:
            pct = f"{o.delta_pct:+.1f}%" if o.delta_pct is not None else "-"
            table.add_row(o.metric, _n(o.baseline), _n(o.candidate), _n(o.delta, True), pct)
        console.print(table)
    regressions = [x for x in comparison.examples if x.change in ("regressed", "mixed")]
    for x in regressions[:10]:
        worse = ", ".join(
            f"{name} {_n(s.baseline)}→{_n(s.candidate)}" + (f" ({s.error})" if s.error else "")
            for name, s in x.evaluators.items()
            if s.change == "regressed"
        )
        console.print(
            f"regressed {escape(x.example_id)}: {escape(worse)}; traces "
            f"{x.baseline_trace_id or '-'} → {x.candidate_trace_id or '-'}",
            highlight=False,
            soft_wrap=True,
        )
        if x.input_preview:
            console.print(f"  input: {escape(x.input_preview)}", highlight=False, soft_wrap=True)
    if len(regressions) > 10:
        console.print(f"... and {len(regressions) - 10} more regressions (--json lists them).")
