"""``traceproof watch [DIR...]``: follow coding agents' session directories and import each new
line as it is written (see :mod:`traceproof.ingest.watch`)."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

import click
from rich.markup import escape

from traceproof.cli import (
    _fail,
    _say,
    _settings,
    _store_or_remote,
    cli,
    config_option,
    configure_process,
    db_option,
    out,
    transcript_book,
)
from traceproof.errors import TraceproofError
from traceproof.ingest.files import ImportSummary, Sink
from traceproof.remote import RemoteStore


@cli.command()
@click.argument("dirs", nargs=-1, type=click.Path(path_type=Path))
@db_option
@click.option("--project", default=None, help="Put every span in this project.")
@click.option("--json", "as_json", is_flag=True, help="One JSON line per import.")
@click.option(
    "--no-redact",
    is_flag=True,
    help="Keep secrets in coding-agent transcripts (redacted by default).",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.01),
    default=0.25,
    show_default=True,
    help="Seconds between looks at the directories.",
)
@config_option
def watch(
    dirs: tuple[Path, ...],
    db: Path | None,
    project: str | None,
    as_json: bool,
    no_redact: bool,
    interval: float,
    config: Path | None,
) -> None:
    """Follow Claude Code's and Codex's session directories (default ~/.claude/projects and
    ~/.codex/sessions; CLAUDE_CONFIG_DIR, CODEX_HOME honoured) and import each new or grown
    transcript as it changes, into the store or the server holding it, so a session in progress
    is queryable. Ctrl-C or SIGTERM stops it after the import under way."""
    from traceproof.ingest.watch import SETTLE_SECONDS, Watcher, default_directories
    from traceproof.projectconfig import project_config

    targets = list(dirs) or default_directories()
    if not targets:
        raise click.UsageError(
            "No session directory to watch: neither ~/.claude/projects nor ~/.codex/sessions "
            "exists (CLAUDE_CONFIG_DIR and CODEX_HOME are honoured). Name the directories."
        )
    missing = [p for p in targets if not p.exists()]
    if missing:
        raise click.BadParameter(f"{missing[0]} does not exist.", param_hint="DIRS")
    settings = _settings(db, config=config)
    configure_process(settings)  # before the store starts its threads
    stopping: list[int] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        if stopping:  # a second signal: stop now (what was stored stays stored)
            raise KeyboardInterrupt
        stopping.append(signum)

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
    total = ImportSummary()
    try:
        with _store_or_remote(settings.for_import(), create=True) as store:
            book = transcript_book(store, settings)
            book.settle = SETTLE_SECONDS
            sink: Sink = lambda table: store.submit(table, wait=None)  # noqa: E731
            watcher = Watcher(
                targets,
                sink,
                book,
                settings=settings,
                project=project,
                redact=not no_redact,
                rules=project_config(settings).action_rules(),
            )
            where = store.url if isinstance(store, RemoteStore) else str(settings.db)
            if not as_json:
                _say(f"Watching {', '.join(map(str, targets))} into {where}; Ctrl-C stops.")
            else:
                _emit({"event": "started", "targets": [str(t) for t in targets], "into": where})

            def report(cycle: Any) -> None:
                _add(total, cycle.summary)
                if as_json:
                    _emit({"event": "import", "seconds": round(cycle.seconds, 4)}
                          | {"paths": [str(p) for p in cycle.paths]}
                          | cycle.summary.as_dict())  # fmt: skip
                elif out.is_terminal:
                    _status(cycle)

            watcher.run(report, lambda: bool(stopping), interval=interval)
    except TraceproofError as exc:
        _fail(exc)
    except KeyboardInterrupt:
        pass
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if as_json:
        _emit({"event": "stopped"} | total.as_dict())
    else:
        _say(
            f"Stopped. {total.spans_added:,} new spans in {total.traces:,} traces from "
            f"{total.files:,} file reads ({total.rejected:,} lines rejected)."
        )


def _emit(value: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(value, default=str) + "\n")
    sys.stdout.flush()


def _add(total: ImportSummary, one: ImportSummary) -> None:
    total.files += one.files
    total.spans_read += one.spans_read
    total.spans_added += one.spans_added
    total.rejected += one.rejected
    total.rejections.extend(one.rejections[: max(0, 1000 - len(total.rejections))])
    total.records_skipped += one.records_skipped
    for kind, count in one.skipped_by_kind.items():
        total.skipped_by_kind[kind] = total.skipped_by_kind.get(kind, 0) + count
    total.redactions += one.redactions
    total.unchanged += one.unchanged
    total.incremental += one.incremental
    total.projects |= one.projects
    total._traces |= one._traces
    for name, count in one.formats.items():
        total.formats[name] = total.formats.get(name, 0) + count


def _status(cycle: Any) -> None:
    summary: ImportSummary = cycle.summary
    names = ", ".join(escape(p.name) for p in cycle.paths[:3]) + (
        " …" if len(cycle.paths) > 3 else ""
    )
    line = (
        f"[dim]{time.strftime('%H:%M:%S')}[/dim] {names}: "
        f"[green]+{summary.spans_added:,}[/green] spans in {summary.traces:,} trace(s)"
    )
    if summary.incremental:
        line += f", {summary.incremental} read from where it stopped"
    if summary.rejected:
        line += f", [yellow]{summary.rejected} rejected[/yellow]"
    out.print(line, highlight=False, soft_wrap=True)
