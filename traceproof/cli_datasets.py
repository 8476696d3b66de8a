"""``traceproof dataset``: create, add to, import, export, list and show datasets.

``create``, ``add``, ``import``, ``list`` and ``show`` run the dataset tools (on the store, or
through the server that holds it: the same validation, the same result). ``import`` reads the
whole file first (a bad line stops it with its number, and nothing is stored), then writes it as
one version. ``export`` writes every example of a version as JSON Lines or CSV; through a server
it pages ``get_dataset`` and stops with an error when a value is longer than one answer holds.
``export --format chat`` (from a dataset's source spans, or ``--spans`` with filters) reads span
attributes, so it works on the store only: stop the server holding it, or point ``--db`` at a
copy.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import click
from rich.console import Console

from traceproof.cli import _fail, _settings, _store_or_remote, db_option
from traceproof.cli_proof import dataset
from traceproof.cli_render import render_table
from traceproof.cli_tools import call, emit, error_for_people, json_option, tool_result
from traceproof.errors import ErrorCode, TraceproofError
from traceproof.experiments import dataset_files as files
from traceproof.experiments import datasets as domain
from traceproof.remote import RemoteStore
from traceproof.storage import Store

#: Characters of a value in ``dataset show``'s table.
CELL_CHARS = 80
#: How the error for a dataset name that is taken starts (storage's ``DatasetExists``).
EXISTS = "A dataset named "


def _count(number: int, noun: str) -> str:
    """``1 example``, ``2 examples``."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _sources(input: str | None, expected: str | None, metadata: tuple[str, ...]) -> dict[str, str]:
    sources: dict[str, str] = {}
    if input:
        sources["input"] = input
    if expected:
        sources["expected"] = expected
    for item in metadata:
        key, sep, source = item.partition("=")
        if not sep or not key.strip() or key.strip() in ("input", "expected"):
            raise click.BadParameter(
                f"{item!r} is not KEY=SOURCE (e.g. model=model).", param_hint="--metadata"
            )
        sources[key.strip()] = source
    return sources


Command = Callable[..., Any]

_SPAN_OPTIONS: list[Command] = [
    click.option("--ids", multiple=True, help="A span id (repeat for more); else the filters."),
    click.option("--project", default=None, help="Project name."),
    click.option("--where", default=None, help="SQL over span columns and attribute paths."),
]
_SOURCE_OPTIONS: list[Command] = [
    click.option("--input", "input_source", default=None, help="Source of the input."),
    click.option("--expected", default=None, help="Source of the expected output."),
    click.option(
        "--metadata",
        multiple=True,
        help="KEY=SOURCE, a metadata value (repeat). Sources: a path (input.value, model, "
        "attributes.llm.input_messages), jq:PROGRAM or annotation:NAME[.FIELD].",
    ),
    click.option("--split", default=None, help="A split name, or hash:train=0.8,test=0.2."),
]


def _with(options: list[Command]) -> Callable[[Command], Command]:
    def apply(command: Command) -> Command:
        for option in reversed(options):
            command = option(command)
        return command

    return apply


def _change_arguments(options: dict[str, Any]) -> dict[str, Any]:
    sources = _sources(options["input_source"], options["expected"], options["metadata"])
    return {
        "ids": list(options["ids"]) or None,
        "where": _where(options["project"], options["where"]),
        "split": options["split"],
        "sources": sources or None,
    }


def _where(project: str | None, where: str | None) -> str | None:
    """``--project`` and ``--where`` as the one where expression the tools take."""
    if project is None:
        return where
    named = "project = '" + project.replace("'", "''") + "'"
    return named if where is None else f"{named} AND ({where})"


def _print_change(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit(result, True)
        return
    line = (
        f"dataset {result['dataset']} ({result['id']}) version {result['version']}: "
        f"{_count(result['examples'], 'example')}; added {result['added']}, "
        f"{_count(result['duplicates'], 'duplicate')}"
    )
    if result.get("removed"):
        line += f", removed {result['removed']}"
    if result.get("skipped"):
        line += f", {_count(result['skipped'], 'span')} skipped (no input)"
    click.echo(line)
    if result.get("note"):
        click.echo(result["note"])


@dataset.command("create")
@click.argument("name")
@db_option
@_with(_SPAN_OPTIONS)
@_with(_SOURCE_OPTIONS)
@json_option
def create(name: str, db: Path | None, as_json: bool, **options: Any) -> None:
    """Make dataset NAME from spans (span ids, or the newest matching the filters)."""
    arguments = {"name": name} | _change_arguments(options)
    _print_change(call(db, "create_dataset", arguments), as_json)


@dataset.command("add")
@click.argument("name")
@db_option
@_with(_SPAN_OPTIONS)
@_with(_SOURCE_OPTIONS)
@click.option("--remove", multiple=True, help="An example id to remove (repeat).")
@json_option
def add(name: str, db: Path | None, remove: tuple[str, ...], as_json: bool, **options: Any) -> None:
    """Add spans' examples to NAME and/or remove examples: its next version."""
    arguments = {"dataset": name, "remove": list(remove) or None} | _change_arguments(options)
    _print_change(call(db, "add_examples", arguments), as_json)


@dataset.command("import")
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@db_option
@click.option("--split", default=None, help="A split name, or hash:train=0.8,test=0.2.")
@click.option("--add", "into", is_flag=True, help="Add to the existing dataset NAME.")
@json_option
def import_command(
    name: str, file: Path, db: Path | None, split: str | None, into: bool, as_json: bool
) -> None:
    """Import FILE (.jsonl, or .csv with JSON cells) as dataset NAME, all or nothing."""
    try:
        fmt = files.file_format(file.name)
        text = file.read_text(encoding="utf-8")
        examples = files.read_examples(text, fmt, str(file))
    except UnicodeDecodeError:
        _fail(TraceproofError(f"{file}: not UTF-8 text.", code=ErrorCode.INVALID_INPUT))
        return
    except TraceproofError as exc:
        _fail(exc)
        return
    rows = [e.as_dict() for e in examples]
    for row in rows:
        row.pop("id", None)
    arguments: dict[str, Any] = {"examples": rows, "split": split}
    if into:
        result = call(db, "add_examples", arguments | {"dataset": name})
    else:
        # A fresh project has no store yet: importing its first dataset creates it, as
        # `traceproof ingest` does.
        try:
            result = tool_result(db, "create_dataset", arguments | {"name": name}, create=True)
        except TraceproofError as exc:
            if exc.code == ErrorCode.INVALID_ARGUMENT and exc.message.startswith(EXISTS):
                failed = exc.message.partition(". ")[0]
                _fail(
                    f"[{exc.code}] {failed}. Add the file to it with `traceproof dataset import "
                    f"{name} {file} --add`, or import it under another name."
                )
            _fail(error_for_people(exc))
            return
    _print_change(result, as_json)


@dataset.command("export")
@click.argument("name", required=False)
@db_option
@click.option("--version", type=int, default=None, help="Version (default the newest).")
@click.option("--split", default=None, help="Only this split.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv", "chat"]),
    default="jsonl",
    show_default=True,
    help="chat: the source LLM spans as chat fine-tuning JSONL (store only).",
)
@click.option("--spans", is_flag=True, help="Chat records of spans chosen by the filters.")
@_with(_SPAN_OPTIONS)
@click.option("--limit", type=int, default=1000, show_default=True, help="Most spans (--spans).")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File to write (default stdout).",
)
def export(
    name: str | None,
    db: Path | None,
    version: int | None,
    split: str | None,
    fmt: str,
    spans: bool,
    output: Path | None,
    **options: Any,
) -> None:
    """Write a dataset version (JSONL, CSV, chat), or with --spans LLM spans as chat JSONL."""
    if spans == (name is not None):
        raise click.UsageError("Give a dataset NAME, or --spans with filters (not both).")
    if spans and fmt != "chat":
        fmt = "chat"
    settings = _settings(db)
    try:
        with _store_or_remote(settings) as store:
            if fmt == "chat":
                if isinstance(store, RemoteStore):
                    raise TraceproofError(
                        f"Chat export reads span attributes from the store, which the server at "
                        f"{store.url} holds. Stop that server to export, or pass --db with a "
                        "copy of the store.",
                        code=ErrorCode.NOT_AVAILABLE,
                    )
                records = (
                    _span_records(store, options)
                    if spans
                    else _dataset_records(store, str(name), version, split)
                )
                written, skipped = _write_lines(records, output)
                what = "span" if spans else "example"
                click.echo(
                    f"wrote {_count(written, 'chat record')}"
                    + (f"; {_count(skipped, what)} had no chat messages" if skipped else ""),
                    err=True,
                )
                return
            rows = _examples(store, str(name), version, split)
            written = _write_rows(rows, fmt, output)
    except TraceproofError as exc:
        _fail(exc)
        return
    click.echo(f"wrote {_count(written, 'example')}", err=True)


@dataset.command("list")
@db_option
@json_option
def list_command(db: Path | None, as_json: bool) -> None:
    """Datasets: versions, examples in the newest, last change."""
    result = call(db, "list_datasets", {})
    rows = list(result["datasets"])
    while result.get("next_cursor"):
        result = call(db, "list_datasets", {"cursor": result["next_cursor"]})
        rows += result["datasets"]
    if as_json:
        emit({"datasets": rows, "total": len(rows)}, True)
        return
    if not rows:
        click.echo("No datasets yet. Make one with `traceproof dataset create NAME --where …`.")
        return
    names = ["name", "id", "version", "examples", "project", "updated"]
    table = [
        [r["name"], r["id"], r["version"], r["examples"], r.get("project"), r["updated_at"]]
        for r in rows
    ]
    render_table(names, table, Console(), fold=frozenset({0}))


@dataset.command("show")
@click.argument("name")
@db_option
@click.option("--version", type=int, default=None, help="Version (default the newest).")
@click.option("--split", default=None, help="Only this split.")
@click.option("--cursor", default=None, help="next_cursor of a previous call.")
@click.option("--max-chars", type=int, default=None, help="Character budget of the result.")
@json_option
def show(
    name: str,
    db: Path | None,
    version: int | None,
    split: str | None,
    cursor: str | None,
    max_chars: int | None,
    as_json: bool,
) -> None:
    """A dataset version's examples (a page; --cursor for the next)."""
    arguments = {"dataset": name, "version": version, "split": split, "cursor": cursor}
    result = call(db, "get_dataset", arguments | {"max_chars": max_chars})
    if as_json:
        emit(result, True)
        return
    splits = ", ".join(f"{k} {v}" for k, v in result.get("splits", {}).items())
    click.echo(
        f"dataset {result['dataset']} ({result['id']}) version {result['version']} of "
        f"{result['newest']}: {_count(result['examples'], 'example')}"
        + (f" ({splits})" if splits else "")
    )
    table = [
        [r["id"], r.get("split"), _cell(r.get("input")), _cell(r.get("expected"))]
        for r in result["rows"]
    ]
    if table:
        render_table(["id", "split", "input", "expected"], table, Console(), fold=frozenset())
    if result.get("next_cursor"):
        click.echo(f"more: --cursor {result['next_cursor']}")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else domain.canonical(value).decode()
    text = " ".join(text.split())
    return text if len(text) <= CELL_CHARS else text[: CELL_CHARS - 1] + "…"


# -- export -------------------------------------------------------------------------------------


def _examples(
    store: Store | RemoteStore, name: str, version: int | None, split: str | None
) -> Iterator[dict[str, Any]]:
    if isinstance(store, RemoteStore):
        return _remote_examples(store, name, version, split)
    from traceproof.storage.datasets import dataset_examples, resolve_dataset

    with store.reader() as reader:
        found = resolve_dataset(reader, name)
        rows = dataset_examples(reader, found["id"], version, split)
    return iter([{k: v for k, v in r.items() if k != "added_version"} for r in rows])


def _remote_examples(
    store: RemoteStore, name: str, version: int | None, split: str | None
) -> Iterator[dict[str, Any]]:
    from traceproof.tools.common import MAX_CHARS_CEILING

    arguments: dict[str, Any] = {"dataset": name, "max_chars": MAX_CHARS_CEILING}
    if version is not None:
        arguments["version"] = version
    if split is not None:
        arguments["split"] = split
    while True:
        page = store.call_tool("get_dataset", arguments)
        if page.get("clipped"):
            raise TraceproofError(
                f"Dataset {name!r} has values longer than the server at {store.url} returns in "
                "one answer. Stop that server to export from the store itself, or pass --db "
                "with a copy of the store.",
                code=ErrorCode.NOT_AVAILABLE,
            )
        yield from page["rows"]
        if not page.get("next_cursor"):
            return
        arguments["cursor"] = page["next_cursor"]


def _open(output: Path | None) -> IO[str]:
    if output is None:
        return sys.stdout
    return output.open("w", encoding="utf-8", newline="")


def _write_rows(rows: Iterator[dict[str, Any]], fmt: str, output: Path | None) -> int:
    # Everything is read before the file is opened: a failure leaves no half-written file.
    listed = list(rows)
    stream = _open(output)
    try:
        if fmt == "csv":
            return files.write_csv(listed, stream)
        return files.write_jsonl(listed, stream)
    finally:
        if output is not None:
            stream.close()


def _write_lines(records: tuple[list[dict[str, Any]], int], output: Path | None) -> tuple[int, int]:
    found, skipped = records
    stream = _open(output)
    try:
        return files.write_jsonl(found, stream), skipped
    finally:
        if output is not None:
            stream.close()


def _span_records(store: Store, options: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
    from traceproof.tools.datasets import choose_spans
    from traceproof.tools.filters import SpanFilter
    from traceproof.tools.jqtool import span_document

    flt = SpanFilter(project=options["project"], where=options["where"])
    rows, _ = choose_spans(store, list(options["ids"]) or None, flt, options["limit"])
    rows.reverse()  # oldest first
    records = [files.chat_record(span_document(row)) for row in rows]
    return [r for r in records if r is not None], sum(r is None for r in records)


def _dataset_records(
    store: Store, name: str, version: int | None, split: str | None
) -> tuple[list[dict[str, Any]], int]:
    from traceproof.tools.datasets import choose_spans
    from traceproof.tools.filters import SpanFilter
    from traceproof.tools.jqtool import span_document

    rows = list(_examples(store, name, version, split))
    ids = [r["source_span_id"] for r in rows if r.get("source_span_id")]
    documents: dict[tuple[str, str], dict[str, Any]] = {}
    if ids:
        spans, _ = choose_spans(store, list(dict.fromkeys(ids)), SpanFilter(), len(ids))
        documents = {(s["trace_id"], s["span_id"]): span_document(s) for s in spans}
    records = []
    for row in rows:
        doc = documents.get((row.get("source_trace_id") or "", row.get("source_span_id") or ""))
        record = files.chat_record(doc) if doc is not None else None
        if record is not None:
            records.append(record)
    return records, len(rows) - len(records)
