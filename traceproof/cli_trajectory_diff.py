"""``traceproof trajectory diff`` drawn for a person: each run's figures, where they part, the
loops one has and the other lacks, then the aligned steps side by side (a rich table on a
terminal, plain columns when piped)."""

from __future__ import annotations

from itertools import zip_longest
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

__all__ = ["draw_diff"]

#: The mark between the two sides of a row, per block kind.
MARKS = {"equal": "=", "changed": "≠", "only_a": "<", "only_b": ">"}
#: Widest a side is drawn when piped (the rest of a target is in --json).
PLAIN_SIDE = 90


def _step(step: dict[str, Any] | None) -> str:
    if step is None:
        return ""
    words = [str(step["n"]), step["action"], step.get("target") or "", step.get("outcome") or ""]
    return " ".join(w for w in words if w)


def _span(numbers: list[int]) -> str:
    if not numbers:
        return "-"
    return str(numbers[0]) if numbers[0] == numbers[-1] else f"{numbers[0]}-{numbers[-1]}"


def _count(n: int, noun: str) -> str:
    """``1 edit``, ``2 edits``."""
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def _run_line(name: str, run: dict[str, Any]) -> str:
    last = run.get("last_verify") or "never verified"
    return (
        f"{name}: {run['scope']} {run['id']} ({run['project']}): {_count(run['steps'], 'step')}, "
        f"{_count(run['edits'], 'edit')}, "
        f"{_count(run['verifications'], 'verification')} ({last}), "
        f"{_count(run['errors'], 'error')}, {_count(run['fix_loops'], 'fix loop')}, "
        f"{_count(run['tokens'], 'token')}"
    )


Row = tuple[str, str, str]


def _sections(blocks: list[dict[str, Any]]) -> list[list[Row]]:
    """The rows (a, mark, b) of each block."""
    return [_rows(block) for block in blocks]


def _rows(block: dict[str, Any]) -> list[Row]:
    op = block["op"]
    if op == "equal":
        count = block["count_a"]
        alike = f"… {count} step{'s' if count != 1 else ''} alike ({_span(block['a_range'])})"
        return [(alike, MARKS[op], f"({_span(block['b_range'])})")]
    a, b = block.get("a") or [], block.get("b") or []
    rows = [(_step(left), MARKS[op], _step(right)) for left, right in zip_longest(a, b)]
    hidden_a, hidden_b = block["count_a"] - len(a), block["count_b"] - len(b)
    if hidden_a or hidden_b:
        more = [f"… {n} more" if n else "" for n in (hidden_a, hidden_b)]
        rows.append((more[0], MARKS[op], more[1]))
    return rows


def _head(result: dict[str, Any]) -> list[str]:
    lines = [_run_line(name, result[name]) for name in ("a", "b") if result.get(name)]
    if result.get("same"):
        lines.append("The runs take the same steps with the same outcomes.")
    elif result.get("a") is not None:
        where = f"{result['common_prefix']} steps alike, then they part: a "
        where += _step(result.get("parted_a")) or "had ended"
        where += " / b " + (_step(result.get("parted_b")) or "had ended")
        lines.append(where)
    for loop in result.get("loops") or []:
        lines.append(
            f"{loop['kind']} loop {loop['action']} {loop['target']}: a {loop['a']}x "
            f"(steps {', '.join(map(str, loop['a_steps'])) or '-'}), b {loop['b']}x "
            f"(steps {', '.join(map(str, loop['b_steps'])) or '-'})"
        )
    return lines


def _tail(result: dict[str, Any]) -> list[str]:
    lines = []
    if result.get("partial"):
        lines.append("partial: a run is longer than the diff reads.")
    if result.get("next_cursor"):
        lines.append(f"more blocks: --cursor {result['next_cursor']}")
    elif result.get("truncated"):
        lines.append("truncated: lists were cut to fit --max-chars (--json shows the same).")
    return lines


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def draw_diff(result: dict[str, Any], console: Console) -> None:
    """Draw diff_trajectories' answer (its JSON) on ``console``."""
    for line in _head(result):
        console.print(escape(line), highlight=False, soft_wrap=True)
    sections = _sections(result.get("blocks") or [])
    rows = [row for section in sections for row in section]
    if console.is_terminal:
        table = Table("a", "", "b", expand=False)
        for section in sections:
            for left, mark, right in section:
                table.add_row(escape(left), mark, escape(right))
            table.add_section()
        console.print(table)
    elif rows:
        width = min(PLAIN_SIDE, max(len(left) for left, _, _ in rows))
        for left, mark, right in rows:
            line = f"{_clip(left, width):<{width}}  {mark}  {_clip(right, PLAIN_SIDE)}"
            console.print(escape(line.rstrip()), highlight=False, soft_wrap=True)
    for line in _tail(result):
        console.print(escape(line), highlight=False, soft_wrap=True)
