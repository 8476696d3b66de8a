"""Drawing a tool's result for a person: tables that fit the terminal, records when they do not.

:func:`render` takes any result model's JSON. Its scalar fields print as ``key: value`` lines,
lists of rows as tables, text blocks (a trace's tree) as they are, nested objects as path/value
tables, rows holding rows of their own (the schema's tables and their columns) as a record
followed by a table, and last what the answer left out and how to page on.

A table is drawn only when it fits the width: ids, times, numbers and other one-word values are
never wrapped, headers never break, and free text keeps at least :data:`TEXT_MIN` columns. A
table that cannot meet that turns vertical: one ``column: value`` line per field, a blank line
between rows. Values keep their line breaks (a stack trace stays a stack trace). Output that is
not a terminal is drawn up to :data:`PIPED_WIDTH` columns wide, so that piping to a file or a
pager folds nothing that would fit there.
"""

from __future__ import annotations

import errno
import json
import os
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from rich.cells import cell_len
from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from traceproof.tools.layout import duration

#: The longest a table cell is drawn; --json prints every value whole.
CELL_CHARS = 200
#: The longest a value is drawn in a record (vertical) or path/value view.
RECORD_CHARS = 4 * CELL_CHARS
#: Most lines of one value drawn in a table cell or a record.
VALUE_LINES = 40
#: The narrowest a column of free text is squeezed (or its natural width, when less).
TEXT_MIN = 16
#: The narrowest the value column of a path/value table is squeezed.
PATH_TEXT_MIN = 32
#: A value up to this long without spaces (an id, a model, a time) is never wrapped.
ATOM_CHARS = 48
#: Width of the drawing when the output is not a terminal.
PIPED_WIDTH = 400

#: Scalar fields about the whole answer (paging, what was left out): printed after the rows.
AFTER = frozenset(
    {"total", "row_count", "truncated", "clipped_cells", "note", "next_cursor", "next_call"}
)

_ISO_TIME = re.compile(r"(\d{4}-\d\d-\d\d)T(\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]00:00)?")


def drawing_width(console: Console) -> int:
    """The width a command draws at on ``console``: the terminal's, else :data:`PIPED_WIDTH`."""
    return console.width if console.is_terminal else PIPED_WIDTH


class _Console(Console):
    def on_broken_pipe(self) -> None:  # rich's own exits 1: :func:`closed_pipe_ok` decides
        raise BrokenPipeError(errno.EPIPE, "the reader of stdout went away")


def drawing_console() -> Console:
    """A console on stdout for what a command draws itself (tables of rich), at
    :func:`drawing_width`: piped output is as wide as :func:`render` draws it. Its writes to
    a closed pipe raise ``BrokenPipeError`` (for :func:`closed_pipe_ok`)."""
    console = _Console()
    return console if console.is_terminal else _Console(width=PIPED_WIDTH)


@contextmanager
def closed_pipe_ok() -> Iterator[None]:
    """Output whose reader went away (``| head -1``): stop writing, quietly, so the command
    exits with its own status (click would exit 1), as command-line tools do on SIGPIPE."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # the flush at exit must not fail again


def render(result: dict[str, Any], console: Console) -> None:
    """Draw ``result`` (a tool's JSON) on ``console``."""
    _Screen(console).result(result)


def render_table(
    names: list[str], rows: Sequence[Sequence[Any]], console: Console, fold: frozenset[int]
) -> None:
    """Rows (JSON values) as a table that fits ``console``, the columns in ``fold`` folding
    (names), else as records."""
    _Screen(console).grid(names, rows, fold=fold)


#: Critical-path spans named (with their durations) under a trace's tree; --json lists all.
CRITICAL_SHOWN = 5

_GUIDES = re.compile(r"^(?:[│ ] |[├└]─)+")


@dataclass(frozen=True)
class _TraceColumn:
    field: str
    header: str
    required: bool = False

    def value(self, row: dict[str, Any]) -> Any:
        value = row.get(self.field)
        if self.field == "latency_ms" and isinstance(value, int | float):
            return duration(round(value * 1000))
        return value


#: The trace listing's columns: the required ones, then the others in the order they are
#: added while they fit.
TRACE_COLUMNS = (
    _TraceColumn("trace_id", "trace_id", required=True),
    _TraceColumn("start_time", "start", required=True),
    _TraceColumn("latency_ms", "latency", required=True),
    _TraceColumn("span_count", "spans", required=True),
    _TraceColumn("error_count", "errors", required=True),
    _TraceColumn("name", "name", required=True),
    _TraceColumn("session_id", "session"),
    _TraceColumn("total_tokens", "tokens"),
    _TraceColumn("project", "project"),
    _TraceColumn("input", "input"),
    _TraceColumn("output", "output"),
)


class _Screen:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.terminal = console.is_terminal
        self.width = drawing_width(console)

    def say(self, text: str) -> None:
        """Text as it is, its lines wrapped at the width (on a terminal)."""
        self.console.print(Text(text, overflow="fold"), highlight=False, width=self.width)

    def whole(self, line: str) -> None:
        """A line never wrapped by us (a cursor to copy)."""
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def result(self, result: dict[str, Any]) -> None:
        grid = isinstance(result.get("columns"), list) and isinstance(result.get("rows"), list)
        grid = grid and not _is_rows(result["rows"])
        scalars = [(k, v) for k, v in result.items() if _is_scalar(v) and _shown(v)]
        self.fields([(k, v) for k, v in scalars if k not in AFTER])
        tree = result.get("tree") if isinstance(result.get("tree"), list) else None
        for key, value in result.items():
            if key == "traces" and _is_rows(value):
                self.traces(value)
            elif key == "tree" and tree is not None:
                self.tree([str(line) for line in tree])
            elif key == "critical_path" and tree is not None and isinstance(value, list):
                self.critical_path([str(v) for v in value], tree)
            elif grid and key == "rows":
                names = [_column_name(c) for c in result["columns"]]
                self.grid(names, [row if isinstance(row, list) else [row] for row in value])
            elif _is_scalar(value) or (grid and key in ("columns", "types")) or value in ([], {}):
                continue  # printed as fields, the header of the rows grid, or empty
            elif isinstance(value, str):
                self.say(value)
            elif _is_rows(value):
                self.rows(value)
            elif isinstance(value, dict) and value:
                self.paths(key, value)
            elif isinstance(value, list) and key != "results" and _ids(value):
                self.fields([(key, ", ".join(value))])
            elif isinstance(value, list):
                for item in value:
                    self.say(item if isinstance(item, str) else _json(item, indent=2))
        self.fields([(k, v) for k, v in scalars if k in AFTER])

    def fields(self, fields: list[tuple[str, Any]]) -> None:
        paged = any(key == "next_cursor" for key, _ in fields)
        for key, value in fields:
            if key == "next_cursor":
                self.whole(f"next page: --cursor {value}")
            elif key == "next_call" and paged:
                continue  # the agents' form of the same continuation
            else:
                self.say(f"{key}: {cell(value, limit=100_000)}")

    def rows(self, rows: list[dict[str, Any]]) -> None:
        """Rows of objects: a table, or, when rows hold rows of their own, each row as a
        record followed by the table of its inner rows."""
        if any(_is_rows(v) for row in rows for v in row.values()):
            for index, row in enumerate(rows):
                if index:
                    self.console.print()
                flat = [(k, v) for k, v in row.items() if not _is_rows(v)]
                self.records([k for k, _ in flat], [[v for _, v in flat]])
                for value in row.values():
                    if _is_rows(value):
                        self.rows(value)
            return
        names: dict[str, None] = {}
        for row in rows:  # fields no row sets are left out (a query's columns never are)
            names.update(dict.fromkeys(k for k, v in row.items() if v is not None))
        self.grid(list(names), [[row.get(n) for n in names] for row in rows])

    def grid(
        self, names: list[str], rows: Sequence[Sequence[Any]], fold: frozenset[int] = frozenset()
    ) -> None:
        """A table of ``rows`` under ``names`` if it fits the width, else records; the
        columns in ``fold`` (names) may fold to fit."""
        cells = [[cell(value) for value in row] for row in rows]
        table = _table(names, rows, cells, self.width, fold=fold)
        if table is None:
            self.records(names, rows)
        else:
            self.table(table)

    def traces(self, rows: list[dict[str, Any]]) -> None:
        """The trace listing: a table of what a person scans for (id, start, latency, spans,
        errors, name), with more columns while they fit; records when even those do not."""
        shown = [c for c in TRACE_COLUMNS if any(row.get(c.field) is not None for row in rows)]
        chosen = [c for c in shown if c.required]
        table = self._traces_table(chosen, rows)
        if table is None:
            keys = list(dict.fromkeys(k for row in rows for k, v in row.items() if v is not None))
            self.records(keys, [[row.get(k) for k in keys] for row in rows])
            return
        for column in shown:
            if column not in chosen:
                wider = self._traces_table([c for c in shown if c in chosen or c is column], rows)
                if wider is not None:
                    chosen.append(column)
                    table = wider
        self.table(table)

    def _traces_table(
        self, columns: list[_TraceColumn], rows: list[dict[str, Any]]
    ) -> Table | None:
        values = [[c.value(row) for c in columns] for row in rows]
        cells = [[cell(v) for v in row] for row in values]
        fold = frozenset(i for i, c in enumerate(columns) if c.field == "name")
        right = frozenset(i for i, c in enumerate(columns) if c.field == "latency_ms")
        names = [c.header for c in columns]
        return _table(names, values, cells, self.width, fold=fold, right=right)

    def tree(self, lines: list[str]) -> None:
        """A trace's tree lines, wrapped at the width with the tree guides continued on every
        wrapped line (a span's text hangs under its name)."""
        for index, line in enumerate(lines):
            guides = _GUIDES.match(line)
            prefix = guides[0] if guides else ""
            below = lines[index + 1] if index + 1 < len(lines) else ""
            below_guides = _GUIDES.match(below)
            deeper = below_guides is not None and len(below_guides[0]) > len(prefix)
            hang = prefix.replace("├─", "│ ").replace("└─", "  ") + ("│ " if deeper else "  ")
            room = max(self.width - cell_len(hang), 20)
            text = Text(line[len(prefix) :])
            wrapped = text.wrap(self.console, room, overflow="fold") if self.terminal else [text]
            for number, piece in enumerate(wrapped):
                lead = prefix if number == 0 else hang
                self.console.print(
                    Text(lead) + piece, highlight=False, no_wrap=True, width=self.width
                )

    def critical_path(self, ids: list[str], tree: list[str]) -> None:
        """The spans that hold the critical path longest (``ids`` comes ordered so), each with
        its duration, kind and id as its tree line gives them; the tree marks them all *."""
        grid = Table.grid(padding=(0, 2))
        grid.add_column(justify="right", no_wrap=True)
        grid.add_column(overflow="fold")
        grid.add_column(no_wrap=True)
        for span_id in ids[:CRITICAL_SHOWN]:
            line = re.compile(
                rf"\*(?P<name>.*?) (?P<kind>[A-Z_]+)(?: ERROR)? {re.escape(span_id)} "
                r"\+\S+ (?P<took>\S+)"
            )
            found = next((m for m in map(line.search, tree) if m), None)
            if found is None:  # a span folded out of the tree: its id alone
                grid.add_row("", "", span_id)
            else:
                grid.add_row(found["took"], Text(f"{found['name']} {found['kind']}"), span_id)
        self.say("critical path, the spans that hold it longest (all marked * in the tree):")
        self.console.print(Padding(grid, (0, 0, 0, 2), expand=False), width=self.width)
        more = len(ids) - CRITICAL_SHOWN
        if more > 0:
            self.say(f"  and {more} more (--json lists them)")

    def paths(self, title: str, value: dict[str, Any]) -> None:
        """A nested object as (dotted path, value) pairs: a table if it fits, else lines."""
        pairs = _flatten(value)
        cells = [[path, cell(leaf, limit=RECORD_CHARS)] for path, leaf in pairs]
        rows = [[p, v] for p, v in pairs]
        table = _table([title, "value"], rows, cells, self.width, key=True, text_min=PATH_TEXT_MIN)
        if table is None:
            self.pairs([(p, v) for p, v in pairs])
        else:
            self.table(table)

    def records(self, names: list[str], rows: Sequence[Sequence[Any]]) -> None:
        for index, row in enumerate(rows):
            if index:
                self.console.print()
            self.pairs(list(zip(names, row, strict=False)))

    def pairs(self, pairs: list[tuple[str, Any]]) -> None:
        """``key: value`` lines; a value's wrapped and further lines hang under its start."""
        if not pairs:
            return
        key_width = min(max(cell_len(k) for k, _ in pairs) + 1, self.width // 3)
        for key, value in pairs:
            text = Text(cell(value, limit=RECORD_CHARS), overflow="fold")
            if cell_len(key) + 1 > key_width:  # a long key on its own line, the value below
                self.console.print(Text(key + ":", overflow="fold"), width=self.width)
                self.console.print(Padding(text, (0, 0, 0, 2)), width=self.width)
                continue
            line = Table.grid(padding=(0, 1))
            line.add_column(width=key_width, no_wrap=True)
            line.add_column(overflow="fold")
            line.add_row(Text(key + ":"), text)
            self.console.print(line, width=self.width)

    def table(self, table: Table) -> None:
        if self.terminal:
            self.console.print(table)
        else:  # piped or captured: its natural width, so that nothing folds that would fit
            natural = Console(file=None, width=100_000).measure(table).maximum
            Console(file=self.console.file, width=min(natural, self.width)).print(table)


def _table(
    names: list[str],
    rows: Sequence[Sequence[Any]],
    cells: list[list[str]],
    width: int,
    *,
    key: bool = False,
    text_min: int = TEXT_MIN,
    fold: frozenset[int] = frozenset(),
    right: frozenset[int] = frozenset(),
) -> Table | None:
    """The table, or ``None`` when it cannot fit ``width`` without wrapping a one-word value
    or a header, or squeezing free text below ``text_min`` columns. With ``key`` the first
    column (paths) is never wrapped, however long; the columns in ``fold`` (names) may fold
    down to their header's width. A table a column or two too wide for the outer borders is
    drawn without them (a frame costs 4 columns)."""
    minimums: list[int] = []
    atoms: list[bool] = []
    for index, name in enumerate(names):
        texts = [row[index] for row in cells if index < len(row)]
        natural = max([cell_len(name), *(_line_width(text) for text in texts)])
        atom = (key and index == 0) or all(_is_atom(text) for text in texts)
        if index in fold:
            atom, natural = False, max(cell_len(name), min(natural, text_min))
        atoms.append(atom)
        minimums.append(natural if atom else max(cell_len(name), min(natural, text_min)))
    framed = sum(minimums) + 3 * len(names) + 1 <= width
    if not framed and sum(minimums) + 3 * len(names) - 3 > width:
        return None
    table = Table(*names) if framed else Table(*names, show_edge=False, pad_edge=False)
    for index, column in enumerate(table.columns):
        column.min_width = minimums[index]
        column.no_wrap = atoms[index]
        column.overflow = "fold"
        values = [row[index] for row in rows if index < len(row) and row[index] is not None]
        if index in right or (values and all(_is_number(v) for v in values)):
            column.justify = "right"
    for row in cells:
        table.add_row(*[Text(text) for text in row])
    return table


def _line_width(text: str) -> int:
    return max((cell_len(line) for line in text.split("\n")), default=0)


def _is_atom(text: str) -> bool:
    """A value a person reads as one word: an id, a name, a number, a time, a model."""
    if len(text) > ATOM_CHARS or "\n" in text:
        return False
    return not any(c.isspace() for c in text) or bool(_is_time_text(text))


def _is_time_text(text: str) -> bool:
    return bool(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ?", text))


def _column_name(column: Any) -> str:
    return str(column.get("name", column)) if isinstance(column, dict) else str(column)


def _ids(values: list[Any]) -> bool:
    """Whether a list holds names or ids (shown on one line) rather than lines of text."""
    return all(isinstance(v, str) and v and not any(c.isspace() for c in v) for v in values)


def _shown(value: Any) -> bool:
    """Whether a field says something: unset, empty and false fields are left out; 0 is not."""
    return value is not None and value != "" and value is not False


def _is_scalar(value: Any) -> bool:
    if isinstance(value, str):
        return "\n" not in value
    return not isinstance(value, list | dict)


def _is_rows(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested objects as (dotted path, leaf) pairs: how agents name attributes."""
    if isinstance(value, dict) and value:
        pairs: list[tuple[str, Any]] = []
        for key, inner in value.items():
            pairs.extend(_flatten(inner, f"{prefix}.{key}" if prefix else str(key)))
        return pairs
    if isinstance(value, list) and value and all(isinstance(v, dict | list) for v in value):
        return [pair for i, v in enumerate(value) for pair in _flatten(v, f"{prefix}.{i}")]
    return [(prefix, value)]


def cell(value: Any, limit: int = CELL_CHARS) -> str:
    """A value as a person reads it: numbers with thousands separators, times in one format
    (``2026-11-01 14:37:45Z``: to the second, Z for UTC), text with its line breaks, at most
    ``limit`` characters and :data:`VALUE_LINES` lines (an ellipsis marks the cut)."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}".rstrip("0").rstrip(".")
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    whole = value if isinstance(value, str) else _json(value)
    time = _ISO_TIME.fullmatch(whole)
    if time:  # 2026-11-01T14:37:45.017000Z -> 2026-11-01 14:37:45Z: one format, to the second
        return f"{time[1]} {time[2]}{'Z' if time[4] else ''}"
    text = whole[: limit + 1].replace("\r\n", "\n").replace("\r", "\n").replace("\t", "    ")
    lines = text.split("\n")
    cut = len(whole) > limit or len(lines) > VALUE_LINES
    text = "\n".join(line.rstrip() for line in lines[:VALUE_LINES])[:limit].rstrip()
    return text + "…" if cut else text


def _json(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=False, default=str)
