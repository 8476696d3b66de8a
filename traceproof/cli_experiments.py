"""``traceproof experiment run|show|list|cancel``: experiments for people and CI.

``experiment run`` runs a ``[tasks.NAME]`` of traceproof.toml on a dataset through the
``run_experiment`` tool, with a progress bar on a terminal. When a ``traceproof serve`` holds the
store, the server runs it (its OTLP receiver gets the runs' spans) and the command follows it;
otherwise the command opens the store itself and, for the duration, serves OTLP (and the API)
in-process on the configured ``--host``/``--port`` (``TRACEPROOF_PORT``, default 4318), so the
application's spans reach the store. Exit status: 0 when the experiment ran (its runs may have
failed: that is data), 3 when it could not run (bad config, unknown dataset, cancelled, port
taken). The comparison with a baseline and the gate decide the exit status in
:func:`_exit_status` (``--baseline`` / ``--gate``, added by the compare commands); what would
fail that comparison only after every run (a bad gate, a missing baseline, a file that cannot be
written) is refused before any run. The experiment's id goes to stderr as soon as it exists.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape

from traceproof.cli import _settings, _store_or_remote, config_option, db_option
from traceproof.cli_proof import NotRunCommand, experiment
from traceproof.cli_render import closed_pipe_ok, drawing_console
from traceproof.cli_tools import call, emit, error_for_people, json_option
from traceproof.errors import ErrorCode, TraceproofError
from traceproof.remote import RemoteStore
from traceproof.settings import Settings
from traceproof.storage import Store

#: Exit status when the experiment could not run.
EXIT_NOT_RUN = 3
#: Seconds between two looks at an experiment a server runs.
POLL_SECONDS = 1.0

err = Console(stderr=True)


def _not_run(message: str) -> None:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(EXIT_NOT_RUN)


@contextmanager
def _receiver(store: Store, settings: Settings) -> Iterator[None]:
    """This process serves OTLP (the whole app) on the settings' host and port meanwhile."""
    import logging

    import uvicorn

    from traceproof.experiments.runner import otlp_endpoint_for, set_otlp_endpoint
    from traceproof.server.app import create_app

    logging.getLogger("mcp").setLevel(logging.WARNING)  # its session manager's INFO lines

    server = uvicorn.Server(
        uvicorn.Config(
            create_app(store, settings),
            host=settings.host,
            port=settings.port,
            log_level="warning",
            lifespan="on",
        )
    )
    failed: list[BaseException] = []

    def serve() -> None:
        try:
            server.run()
        except BaseException as exc:  # uvicorn exits when the port is taken
            failed.append(exc)

    thread = threading.Thread(target=serve, daemon=True, name="traceproof-otlp")
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    if not server.started:
        server.should_exit = True
        raise TraceproofError(
            f"Cannot serve OTLP on {settings.host}:{settings.port} for the runs' spans (the port "
            "is taken?). Pass --port with a free port, or run `traceproof serve` and run the "
            "experiment again (it then goes through the server).",
            code=ErrorCode.OTLP_PORT_TAKEN,
        )
    if not settings.port:  # port 0: the one the system chose
        bound = server.servers[0].sockets[0].getsockname()[1]
        set_otlp_endpoint(store, otlp_endpoint_for(settings.host, int(bound)))
    try:
        yield
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _bar(label: str, enabled: bool) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn(escape(label)),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not enabled,
    )


def _run_local(store: Store, arguments: dict[str, Any], bar: bool) -> dict[str, Any]:
    from traceproof.jobs import jobs_for, reporting_progress
    from traceproof.tools.experiments import follow
    from traceproof.tools.invoke import run_tool

    progress = _bar(str(arguments.get("task") or arguments.get("resume")), bar)
    task = progress.add_task("experiment", total=None)

    def show(done: float, total: float | None, message: str | None = None) -> None:
        progress.update(task, completed=done, total=total)

    started: list[str] = []
    with _receiver(store, store.settings), progress:
        try:
            with reporting_progress(show):
                result = run_tool(store, "run_experiment", {**arguments, "wait": 0})
                answer = result.model_dump(mode="json")
                started.append(answer["id"])
                _say_started(answer, arguments)
                while answer["status"] == "running":
                    followed = follow(store, answer["id"], 5.0)
                    if followed is None:
                        break
                    answer = followed.model_dump(mode="json")
        except KeyboardInterrupt:
            for running in jobs_for(store).jobs():
                started.append(getattr(running.meta, "id", ""))
                running.cancel()
                running.wait(30)
            found = next((i for i in started if i), None)
            if found is None or arguments.get("dry_run"):
                _not_run("Cancelled; its processes were killed.")
            _not_run(
                f"Cancelled experiment {found}; its processes were killed. What it stored "
                f"stays: `traceproof experiment run --resume {found}` runs what is missing."
            )
    return dict(answer)


def _say_started(answer: dict[str, Any], arguments: dict[str, Any]) -> None:
    """The experiment's id on stderr as soon as it exists: what a cancel, a resume or a
    comparison names."""
    if not arguments.get("dry_run"):
        err.print(
            f"experiment {answer['id']} {'resumed' if arguments.get('resume') else 'started'}",
            markup=False, highlight=False, soft_wrap=True,
        )  # fmt: skip


def _run_remote(store: RemoteStore, arguments: dict[str, Any], bar: bool) -> dict[str, Any]:
    progress = _bar(str(arguments.get("task") or arguments.get("resume")), bar)
    task = progress.add_task("experiment", total=None)
    with progress:
        answer = store.call_tool("run_experiment", {**arguments, "wait": 0})
        _say_started(answer, arguments)
        try:
            while answer.get("status") == "running":
                shown = store.call_tool("get_experiment", {"id": answer["id"], "limit": 0})
                if shown.get("total"):
                    progress.update(task, completed=shown.get("done", 0), total=shown["total"])
                if shown["status"] != "running":
                    answer = {"id": shown["id"], "status": shown["status"],
                              "summary": shown.get("summary")}  # fmt: skip
                    break
                time.sleep(POLL_SECONDS)
        except KeyboardInterrupt:
            _not_run(
                f"Stopped following; the experiment goes on in the server. "
                f"`traceproof experiment cancel {answer['id']}` stops it."
            )
    return answer


def _exit_status(answer: dict[str, Any], options: dict[str, Any]) -> int:
    """The command's exit status once the experiment ended: 0 when it ran, else 3 (with
    ``--baseline`` / ``--gate`` the comparison's verdict decides next, in
    :func:`traceproof.cli_compare.finish_run`)."""
    if answer.get("status") in ("done",):
        return 0
    return EXIT_NOT_RUN


def _print_summary(answer: dict[str, Any]) -> None:
    out = drawing_console()
    summary = answer.get("summary") or {}
    out.print(f"[bold]{escape(answer['id'])}[/bold]  {escape(answer.get('status', ''))}")
    if answer.get("note"):
        out.print(escape(answer["note"]))
    status = ", ".join(f"{k} {v}" for k, v in (summary.get("status") or {}).items())
    if summary:
        out.print(f"runs {summary.get('runs', 0)}: {escape(status or 'none')}")
    ops = [
        f"{label} {summary[key]:g}"
        for key, label in (
            ("latency_p50_ms", "latency p50 ms"),
            ("latency_p95_ms", "p95 ms"),
            ("tokens", "tokens"),
            ("cost_usd", "cost $"),
            ("tool_calls", "tool calls"),
        )
        if summary.get(key) is not None
    ]
    if ops:
        out.print(", ".join(ops))
    for name, scored in (summary.get("evaluators") or {}).items():
        labels = ", ".join(f"{k} {v}" for k, v in (scored.get("labels") or {}).items())
        mean = "" if scored.get("mean") is None else f" mean {scored['mean']:g}"
        errors = f", {scored['errors']} errors" if scored.get("errors") else ""
        out.print(f"  {escape(name)}:{mean} {escape(labels)}{errors}")
    for run in summary.get("dry_runs") or []:
        shown = json.dumps(run.get("output"), ensure_ascii=False)[:100]
        out.print(f"  {escape(run['example_id'])} {escape(run['status'])} {escape(shown)}")


@experiment.command("run", cls=NotRunCommand)
@click.argument("task", required=False)
@click.option("--dataset", default=None, help="Dataset name or id.")
@click.option("--version", type=int, default=None, help="Dataset version (default newest).")
@click.option("--split", default=None, help="Only the examples of this split.")
@click.option("--evaluator", "evaluators", multiple=True, help="traceproof.toml evaluator.")
@click.option("--repetitions", type=click.IntRange(1, 100), default=None, help="Runs per example.")
@click.option("--concurrency", type=click.IntRange(1, 64), default=None, help="Runs at once.")
@click.option("--timeout", type=float, default=None, help="Seconds per run.")
@click.option("--name", default=None, help="A label for the experiment.")
@click.option("--dry-run", is_flag=True, help="Run a few examples once; record nothing.")
@click.option("--resume", default=None, help="Run what an experiment is missing (its id).")
@click.option("--port", type=int, default=None, help="OTLP port served meanwhile (no server).")
@click.option(
    "--baseline", default=None, help="Compare with this experiment id, or auto (the stored one)."
)
@click.option("--gate", default=None, metavar="SPEC", help="Gate rules (README: Gates).")
@click.option(
    "--summary-md",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the comparison's Markdown summary to FILE.",
)
@click.option(
    "--report-html",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the comparison's HTML report to FILE.",
)
@db_option
@config_option
@json_option
def experiment_run(
    db: Path | None,
    config: Path | None,
    as_json: bool,
    port: int | None,
    baseline: str | None,
    gate: str | None,
    summary_md: Path | None,
    report_html: Path | None,
    **options: Any,
) -> None:
    """Run TASK on every example of --dataset, score each run with --evaluator; exit 0 when it
    ran, 3 when it could not. With --baseline or --gate the comparison's verdict decides: 0
    pass, 1 fail, 2 inconclusive."""
    if options["resume"] is None and (options["task"] is None or options["dataset"] is None):
        raise click.UsageError("Give TASK and --dataset (or --resume ID).")
    compare = any(v is not None for v in (baseline, gate, summary_md, report_html))
    arguments = {
        k: (list(v) if isinstance(v, tuple) else v)
        for k, v in options.items()
        if v is not None and v != () and v is not False
    }
    bar = not as_json and err.is_terminal
    try:
        with _store_or_remote(_settings(db, config=config, port=port)) as store:
            if compare:
                _check_before(store, options, baseline, gate, summary_md, report_html)
            if isinstance(store, RemoteStore):
                answer = _run_remote(store, arguments, bar)
            else:
                answer = _run_local(store, arguments, bar)
            code = _exit_status(answer, options)
            with closed_pipe_ok():
                if not as_json:
                    _print_summary(answer)
                if as_json and not (compare and code == 0 and not options.get("dry_run")):
                    click.echo(json.dumps(answer, indent=2, ensure_ascii=False))
            if compare and code == 0 and not options.get("dry_run"):
                from traceproof.cli_compare import finish_run

                code = finish_run(
                    store, answer["id"], baseline, gate, summary_md, report_html, as_json=as_json
                )
    except TraceproofError as exc:
        _not_run(error_for_people(exc))
    sys.exit(code)


def _check_before(
    store: Store | RemoteStore,
    options: dict[str, Any],
    baseline: str | None,
    gate: str | None,
    *files: Path | None,
) -> None:
    """Refuse now what would fail only once every run ran: a bad --gate, a --baseline that is
    not there (``auto``: none set for the task and dataset), a --summary-md or --report-html
    that cannot be written."""
    from traceproof.cli_compare import _baseline, _rows, _sql_text
    from traceproof.experiments.gate import parse_gate

    if gate is not None:
        parse_gate(gate)
    for path in files:
        if path is not None:
            _check_writable(path)
    if options.get("dry_run"):
        return  # a dry run is not compared
    task, dataset = options.get("task"), options.get("dataset")
    if options.get("resume"):
        found = _rows(
            store,
            "SELECT task, dataset_id FROM experiments WHERE id = " + _sql_text(options["resume"]),
        )
        if not found:
            return  # the run says it is not there
        task, dataset = found[0]
    if task is None or dataset is None:
        return
    if baseline in (None, "auto"):
        if _baseline(store, str(task), str(dataset), None)["experiment_id"] is None:
            raise TraceproofError(
                f"No baseline is set for task {task!r} on dataset {dataset!r}, so the "
                "comparison after the runs would have none; nothing was run. Pass --baseline "
                "EXPERIMENT_ID, or set one: `traceproof experiment baseline TASK --dataset "
                "DATASET --set EXPERIMENT_ID` (`traceproof experiment list` lists them).",
                code=ErrorCode.NOT_FOUND,
            )
        return
    known = _rows(
        store,
        f"SELECT id FROM experiments WHERE id = {_sql_text(baseline)} OR name = "
        f"{_sql_text(baseline)} LIMIT 1",
    )
    if not known:
        raise TraceproofError(
            f"No experiment {baseline[:120]!r} to compare with (--baseline); nothing was run. "
            "`traceproof experiment list` lists the experiments.",
            code=ErrorCode.NOT_FOUND,
        )


def _check_writable(path: Path) -> None:
    """``[invalid_argument]`` unless ``path`` can be written (its folder made when missing)."""
    folder = path.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    problem = None
    if path.is_dir():
        problem = "it is a folder"
    elif not folder.is_dir():
        problem = f"{folder} is not a folder"
    elif not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        problem = "permission denied"
    if problem is not None:
        raise TraceproofError(
            f"Cannot write {path}: {problem}; nothing was run. Pick a file that can be written.",
            code=ErrorCode.INVALID_ARGUMENT,
        )


@experiment.command("show")
@click.argument("experiment_id", required=False)
@click.option("--id", "id_option", default=None, hidden=True)
@click.option("--status", default=None, help="Only runs of this status (ok, error, timeout…).")
@click.option("--limit", type=int, default=None, help="Runs per page (default 50).")
@click.option("--cursor", default=None, help="next_cursor of a previous call.")
@db_option
@json_option
def experiment_show(
    db: Path | None,
    as_json: bool,
    experiment_id: str | None,
    id_option: str | None,
    **options: Any,
) -> None:
    """An experiment: status, provenance, summary and its runs with their scores."""
    found = experiment_id or id_option
    if found is None:
        raise click.UsageError("Give the experiment's id (`traceproof experiment list`).")
    emit(call(db, "get_experiment", {"id": found, **options}), as_json)


@experiment.command("list")
@click.option("--limit", type=int, default=None, help="Experiments per page (default 50).")
@click.option("--cursor", default=None, help="next_cursor of a previous call.")
@db_option
@json_option
def experiment_list(db: Path | None, as_json: bool, **options: Any) -> None:
    """The newest experiments first: id, name, status, task, dataset, times."""
    emit(call(db, "get_experiment", options), as_json)


@experiment.command("cancel")
@click.argument("experiment_id")
@db_option
@json_option
def experiment_cancel(db: Path | None, as_json: bool, experiment_id: str) -> None:
    """Stop a running experiment and kill its processes (what it stored stays)."""
    emit(call(db, "cancel_experiment", {"id": experiment_id}), as_json)
