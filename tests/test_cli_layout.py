"""The CLI's layout for people, at terminal widths 80, 100 and 120 on the demo data: the trace
listing as a table, stats that fit 80 columns, a tree whose wrapped lines keep their guides, the
critical path's top spans with durations, and one time format."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from tests.test_cli_tools import Facts, as_json, at_width, demo, runner  # noqa: F401

TIME = re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d\S*")


def header_cells(line: str) -> list[str]:
    return [cell.strip() for cell in re.split(r"[┃│]", line.strip("┃│ "))]


@pytest.mark.parametrize("width", [100, 120])
def test_traces_is_a_table_from_100_columns(
    runner: CliRunner,  # noqa: F811
    demo: Facts,  # noqa: F811
    width: int,
) -> None:
    args = ["traces", "--status", "ERROR", "--limit", "9", "--db", demo.db]
    found = as_json(runner, *args)
    lines = at_width(runner, width, *args)
    (header,) = [line for line in lines if "trace_id" in line]
    names = header_cells(header)
    assert names[:6] == ["trace_id", "start", "latency", "spans", "errors", "name"]
    if width >= 120:
        assert "session" in names
    rows = [line for line in lines if re.match(r"^[│ ]*[0-9a-f]{32} ", line)]
    assert [re.search(r"[0-9a-f]{32}", row)[0] for row in rows] == [  # type: ignore[index]
        t["trace_id"] for t in found["traces"]
    ]
    assert len(lines) <= len(found["traces"]) + 8  # one line a trace (was 12 a trace)
    first = header_cells(rows[0])
    trace = found["traces"][0]
    assert first[3:5] == [str(trace["span_count"]), str(trace["error_count"])]
    assert first[2].endswith("s")  # a duration: 4.51s, 850ms


def test_traces_turns_vertical_below_100_columns(
    runner: CliRunner,  # noqa: F811
    demo: Facts,  # noqa: F811
) -> None:
    lines = at_width(runner, 80, "traces", "--status", "ERROR", "--limit", "3", "--db", demo.db)
    assert sum(line.startswith("trace_id: ") for line in lines) == 3


@pytest.mark.parametrize("width", [80, 100, 120])
def test_stats_fits_with_whole_headers_and_numbers_aligned_right(
    runner: CliRunner,  # noqa: F811
    demo: Facts,  # noqa: F811
    width: int,
) -> None:
    lines = at_width(runner, width, "stats", "--db", demo.db)
    (header,) = [line for line in lines if "project" in line]
    assert header_cells(header) == ["project", "traces", "spans", "errors", "first span",
                                    "last span"]  # fmt: skip
    (row,) = [line for line in lines if "demo" in line]
    cells = re.split(r"[┃│]", row.strip("┃│"))
    numbers = cells[1:4]
    assert [c.strip() for c in numbers] == ["90", "1,064", "22"]
    for number in numbers:  # right-aligned: the padding is on the left
        assert number.rstrip() == number.rstrip(" ") and number.endswith(number.strip() + " ")
        assert len(number) - len(number.lstrip()) >= 1
    assert numbers[0].startswith("    ")  # "90" under "traces"


def tree_block(lines: list[str]) -> list[str]:
    start = next(i for i, line in enumerate(lines) if line.startswith("*"))
    end = next(i for i, line in enumerate(lines) if line.startswith("critical path"))
    return lines[start:end]


@pytest.mark.parametrize("width", [80, 100, 120])
def test_trace_tree_keeps_its_guides_on_wrapped_lines(
    runner: CliRunner,  # noqa: F811
    demo: Facts,  # noqa: F811
    width: int,
) -> None:
    found = as_json(runner, "trace", demo.error_trace, "--db", demo.db)
    block = tree_block(at_width(runner, width, "trace", demo.error_trace, "--db", demo.db))
    assert len(block) > len(found["tree"])  # the long lines did wrap
    assert [line for line in block[1:] if line[0] not in "│├└ "] == []
    assert sum(line.startswith("*") for line in block) == 1  # only the root starts a line
    # Every span's line starts with its own guides, as in the tool's tree.
    starts = [line for line in block if re.search(r" [0-9a-f]{16} \+", line)]
    assert [re.match(r"^[│├└─ ]*", s)[0] for s in starts] == [  # type: ignore[index]
        re.match(r"^[│├└─ ]*", t)[0]  # type: ignore[index]
        for t in found["tree"]
    ]
    # A continuation line under a child that has siblings below keeps the parent's │.
    children = [i for i, line in enumerate(block) if line.startswith("├─")]
    for index in children:
        nxt = block[index + 1]
        if not nxt.startswith(("├─", "└─")):
            assert nxt.startswith("│")


def test_critical_path_shows_its_top_spans_with_durations(
    runner: CliRunner,  # noqa: F811
    demo: Facts,  # noqa: F811
) -> None:
    found = as_json(runner, "trace", demo.error_trace, "--db", demo.db)
    lines = at_width(runner, 100, "trace", demo.error_trace, "--db", demo.db)
    start = next(i for i, line in enumerate(lines) if line.startswith("critical path"))
    shown = lines[start + 1 : start + 6]
    entry = re.compile(r"^\s+(\d[\d.]*(?:ms|s))\s+(\S.*?)\s+([0-9a-f]{16})$")
    matches = [entry.match(line) for line in shown]
    assert all(matches), shown
    ids = [m[3] for m in matches if m]
    assert ids == found["critical_path"][:5]
    more = len(found["critical_path"]) - 5
    assert lines[start + 6].strip() == f"and {more} more (--json lists them)"
    # The duration is the span's own, as its tree line shows it.
    line = next(t for t in found["tree"] if ids[0] in t)
    assert f"{ids[0]} +" in line and f" {matches[0][1]} " in line  # type: ignore[index]


@pytest.mark.parametrize("width", [80, 120])
def test_cli_tables_show_one_time_format_utc_to_the_second(
    runner: CliRunner,  # noqa: F811
    demo: Facts,  # noqa: F811
    width: int,
) -> None:
    times: list[str] = []
    for args in (
        ["traces", "--limit", "20"],
        ["trace", demo.error_trace],
        ["stats"],
        ["spans", "--kind", "TOOL", "--limit", "20"],
        ["session", demo.session],
        ["sql", "select start_time, end_time from spans order by start_time limit 20"],
    ):
        times += TIME.findall("\n".join(at_width(runner, width, *args, "--db", demo.db)))
    assert len(times) > 40
    odd = [t for t in times if not re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", t)]
    assert odd == []
