"""The read commands on the demo store: values in tables and --json, error codes and exit
status, and the same answers through a running server that holds the store."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from rich.cells import cell_len

from tests.conftest import ServeProcess
from traceproof.cli import cli
from traceproof.cli_tools import for_people
from traceproof.errors import TraceproofError
from traceproof.settings import Settings
from traceproof.storage import Store


@dataclass(frozen=True)
class Facts:
    """Ids and figures of the demo store, read with SQL, to check the commands against."""

    db: Path
    error_trace: str  # the newest trace with an ERROR span
    error_span: str  # its first failing TOOL span
    error_text: str  # that span's error message
    session: str  # a session with a failing turn
    session_turns: int
    session_error_turns: int


@pytest.fixture
def demo(demo_db: Path, tmp_path: Path) -> Facts:
    db = tmp_path / "demo.duckdb"
    shutil.copyfile(demo_db, db)
    with Store.open(db, Settings(db=db)) as store, store.reader() as reader:
        trace, span, text = reader.rows(
            """
            SELECT trace_id, span_id, error_message FROM spans
            WHERE status = 'ERROR' AND span_kind = 'TOOL' AND error_message IS NOT NULL
            ORDER BY start_time DESC LIMIT 1
            """
        )[0]
        session, turns, error_turns = reader.rows(
            """
            SELECT session_id, count(*), count(*) FILTER (WHERE error_count > 0)
            FROM traces WHERE session_id IS NOT NULL
            GROUP BY session_id HAVING count(*) FILTER (WHERE error_count > 0) > 0
            ORDER BY session_id LIMIT 1
            """
        )[0]
    return Facts(db, trace, span, text, session, turns, error_turns)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def run(runner: CliRunner, *args: str | Path) -> Result:
    return runner.invoke(cli, [str(a) for a in args], catch_exceptions=False)


def as_json(runner: CliRunner, *args: str | Path) -> Any:
    result = run(runner, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def table_cells(output: str) -> list[list[str]]:
    return [
        [cell.strip() for cell in line.strip("│").split("│")]
        for line in output.splitlines()
        if line.startswith("│")
    ]


def test_sql_counts_the_demo_spans_as_json_and_as_a_table(runner: CliRunner, demo: Facts) -> None:
    found = as_json(runner, "sql", "select count(*) as n from spans", "--db", demo.db)
    assert found["columns"] == ["n"]
    assert found["rows"] == [[1064]]
    human = run(runner, "sql", "select count(*) as n, 'demo' as p from spans", "--db", demo.db)
    assert human.exit_code == 0, human.output
    assert table_cells(human.stdout) == [["1,064", "demo"]]


def test_projects_lists_the_demo_project_with_its_counts(runner: CliRunner, demo: Facts) -> None:
    found = as_json(runner, "projects", "--db", demo.db)
    (project,) = found["projects"]
    assert (project["project"], project["traces"], project["spans"]) == ("demo", 90, 1064)
    assert project["errors"] == 22
    human = run(runner, "projects", "--db", demo.db)
    assert table_cells(human.stdout)[0][:4] == ["demo", "90", "1,064", "22"]


def test_traces_filters_by_status_and_pages_to_the_end_with_the_cursor(
    runner: CliRunner, demo: Facts
) -> None:
    failing = as_json(runner, "traces", "--status", "error", "--limit", "100", "--db", demo.db)
    assert failing["total"] == 20
    assert all(row["error_count"] >= 1 for row in failing["traces"])
    assert failing["traces"][0]["trace_id"] == demo.error_trace

    seen: list[str] = []
    cursor: str | None = None
    while True:
        args: list[str | Path] = ["traces", "--limit", "40", "--db", demo.db]
        page = as_json(runner, *args, *(["--cursor", cursor] if cursor else []))
        seen += [row["trace_id"] for row in page["traces"]]
        cursor = page.get("next_cursor")
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == 90

    human = run(runner, "traces", "--status", "ERROR", "--limit", "2", "--db", demo.db)
    assert human.exit_code == 0
    assert demo.error_trace in human.stdout
    assert "total: 20" in human.stdout
    assert "next page: --cursor " in human.stdout


def test_trace_prints_the_tree_with_the_failing_span(runner: CliRunner, demo: Facts) -> None:
    found = as_json(runner, "trace", demo.error_trace, "--db", demo.db)
    assert (found["trace_id"], found["span_count"], found["error_count"]) == (
        demo.error_trace,
        11,
        1,
    )
    human = run(runner, "trace", demo.error_trace, "--db", demo.db)
    assert human.exit_code == 0, human.output
    lines = human.stdout.splitlines()
    # The failing span's tree line (its id is also listed on the critical_path line).
    (failing,) = [ln for ln in lines if demo.error_span in ln and " TOOL " in ln]
    assert " TOOL ERROR " in failing
    assert f"trace_id: {demo.error_trace}" in human.stdout
    missing = run(runner, "trace", "f" * 32, "--db", demo.db)
    assert missing.exit_code == 1 and missing.stderr.startswith("error: [unknown_trace] ")


def test_find_locates_the_error_text_in_the_failing_span(runner: CliRunner, demo: Facts) -> None:
    needle = demo.error_text.split(":")[0][:20]
    found = as_json(runner, "find", demo.error_trace, needle, "--db", demo.db)
    assert demo.error_span in {match["span_id"] for match in found["matches"]}
    upper = as_json(runner, "find", demo.error_trace, needle.upper(), "-i", "--db", demo.db)
    assert upper["total_matches"] == found["total_matches"] >= 1
    human = run(runner, "find", demo.error_trace, needle, "--db", demo.db)
    assert demo.error_span in human.stdout


def test_span_prints_one_span_and_selects_paths(runner: CliRunner, demo: Facts) -> None:
    found = as_json(runner, "span", demo.error_span, "--db", demo.db)
    assert demo.error_span in json.dumps(found)
    assert demo.error_text[:40] in json.dumps(found)
    some = as_json(runner, "span", demo.error_span, "--path", "name", "--db", demo.db)
    assert len(json.dumps(some)) < len(json.dumps(found))


def test_spans_finds_failing_tool_calls_across_traces(runner: CliRunner, demo: Facts) -> None:
    found = as_json(
        runner, "spans", "--kind", "TOOL", "--status", "ERROR", "--limit", "100", "--db", demo.db
    )
    rows = found["spans"]
    assert rows and all(row["status"] == "ERROR" and row["span_kind"] == "TOOL" for row in rows)
    assert demo.error_span in {row["span_id"] for row in rows}


def test_session_shows_its_turns_and_failing_turn(runner: CliRunner, demo: Facts) -> None:
    found = as_json(runner, "session", demo.session, "--db", demo.db)
    assert found["session_id"] == demo.session
    assert (found["turn_count"], found["error_turns"]) == (
        demo.session_turns,
        demo.session_error_turns,
    )
    assert [turn["turn"] for turn in found["turns"]] == list(range(1, demo.session_turns + 1))
    human = run(runner, "session", demo.session, "--db", demo.db)
    assert f"turn_count: {demo.session_turns}" in human.stdout


def test_agg_groups_llm_spans_by_model_as_sql_does(runner: CliRunner, demo: Facts) -> None:
    found = as_json(
        runner, "agg", "--group-by", "model", "--metric", "count", "--kind", "LLM", "--db", demo.db
    )
    expected = as_json(
        runner,
        "sql",
        "select model, count(*) from spans where span_kind = 'LLM' group by model",
        "--db",
        demo.db,
    )
    assert found["columns"] == ["model", "count"]
    assert sorted(map(tuple, found["rows"])) == sorted(map(tuple, expected["rows"]))
    assert sum(row[1] for row in found["rows"]) == 398
    human = run(runner, "agg", "--group-by", "model", "--kind", "LLM", "--db", demo.db)
    assert ["claude-sonnet-4-5", "167"] in table_cells(human.stdout)


def test_jq_runs_over_a_trace_and_over_one_span(runner: CliRunner, demo: Facts) -> None:
    program = '[.[] | select(.status == "ERROR") | .span_id]'
    found = as_json(runner, "jq", program, "--trace", demo.error_trace, "--db", demo.db)
    assert demo.error_span in found["results"][0]
    one = as_json(runner, "jq", ".error_message", "--span", demo.error_span, "--db", demo.db)
    assert one["results"] == [demo.error_text]
    human = run(runner, "jq", ".span_id", "--span", demo.error_span, "--db", demo.db)
    assert demo.error_span in human.stdout.splitlines()
    bad = run(runner, "jq", ".name", "--trace", demo.error_trace, "--db", demo.db)
    assert bad.exit_code == 1 and bad.stderr.startswith("error: [invalid_jq] ")


def test_schema_describes_the_traces_view(runner: CliRunner, demo: Facts) -> None:
    found = as_json(runner, "schema", "--table", "traces", "--db", demo.db)
    assert "latency_ms" in json.dumps(found)
    assert run(runner, "schema", "--db", demo.db).exit_code == 0


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["session", "no-such-session"], "unknown_session"),
        (["span", "0000000000000000"], "unknown_span"),
        (["traces", "--limit", "0"], "invalid_argument"),
        (["traces", "--where", "latency_ms >"], "invalid_filter"),
        (["sql", "delete from spans"], "forbidden_query"),
        (["sql", "select * from read_csv('/etc/passwd')"], "forbidden_query"),
    ],
)
def test_a_tool_error_prints_its_code_and_exits_1(
    runner: CliRunner, demo: Facts, args: list[str], code: str
) -> None:
    result = run(runner, *args, "--db", demo.db)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: [{code}] ")


def test_find_with_a_bad_regex_is_invalid_regex(runner: CliRunner, demo: Facts) -> None:
    result = run(runner, "find", demo.error_trace, "(unclosed", "--db", demo.db)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: [invalid_regex] ")


@pytest.fixture
def served(demo: Facts) -> Iterator[ServeProcess]:
    server = ServeProcess(demo.db)
    yield server
    server.stop()


@pytest.mark.slow
def test_the_commands_answer_the_same_through_the_server_that_holds_the_store(
    runner: CliRunner, demo: Facts, served: ServeProcess
) -> None:
    count = as_json(runner, "sql", "select count(*) as n from spans", "--db", demo.db)
    assert count["rows"] == [[1064]]
    failing = as_json(runner, "traces", "--status", "ERROR", "--db", demo.db)
    assert (failing["total"], failing["traces"][0]["trace_id"]) == (20, demo.error_trace)
    session = as_json(runner, "session", demo.session, "--db", demo.db)
    assert session["turn_count"] == demo.session_turns
    human = run(runner, "projects", "--db", demo.db)
    assert table_cells(human.stdout)[0][:3] == ["demo", "90", "1,064"]

    missing = run(runner, "session", "no-such-session", "--db", demo.db)
    assert missing.exit_code == 1
    assert missing.stderr.startswith("error: [unknown_session] No session 'no-such-session'")
    invalid = run(runner, "traces", "--limit", "0", "--db", demo.db)
    assert invalid.stderr.startswith("error: [invalid_argument] Invalid arguments for ")


@pytest.fixture
def served_with_token(demo: Facts) -> Iterator[ServeProcess]:
    server = ServeProcess(demo.db, None, "--token", "s3cret")
    yield server
    server.stop()


@pytest.mark.slow
def test_the_commands_send_the_token_of_a_protected_server(
    demo: Facts, served_with_token: ServeProcess
) -> None:
    def sql(token: str | None) -> Result:
        runner = CliRunner(env={"TRACEPROOF_TOKEN": token})
        return run(runner, "sql", "select count(*) from spans", "--json", "--db", demo.db)

    allowed = sql("s3cret")
    assert allowed.exit_code == 0, allowed.output
    assert json.loads(allowed.stdout)["rows"] == [[1064]]
    refused = sql(None)
    assert refused.exit_code == 1
    assert refused.stderr.startswith("error: [unauthorized] ")


# -- drawing for a terminal of 80 to 120 columns -------------------------------------------------

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def at_width(runner: CliRunner, width: int, *args: str | Path) -> list[str]:
    """The command's output lines as a terminal of ``width`` columns shows them."""
    env = {"COLUMNS": str(width), "TTY_COMPATIBLE": "1", "NO_COLOR": "1"}
    result = runner.invoke(cli, [str(a) for a in args], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = [ANSI.sub("", line).rstrip() for line in result.stdout.splitlines()]
    paging = "next page: --cursor "  # one line, as is, to copy whole
    too_wide = [line for line in lines if cell_len(line) > width and not line.startswith(paging)]
    assert too_wide == [], f"lines wider than {width} columns"
    return lines


@pytest.mark.parametrize("width", [80, 120])
def test_trace_ids_are_never_wrapped(runner: CliRunner, demo: Facts, width: int) -> None:
    found = as_json(runner, "traces", "--limit", "5", "--db", demo.db)
    lines = at_width(runner, width, "traces", "--limit", "5", "--db", demo.db)
    for row in found["traces"]:
        assert any(row["trace_id"] in line for line in lines), row["trace_id"]
    session = as_json(runner, "session", demo.session, "--db", demo.db)
    lines = at_width(runner, width, "session", demo.session, "--db", demo.db)
    text = "\n".join(lines)
    for turn in session["turns"]:
        assert turn["trace_id"] in text
    for header in ("total_tokens", "error_count", "span_count", "latency_ms"):
        assert header in text  # a header or key is never broken


@pytest.mark.parametrize("width", [80, 120])
def test_a_wide_row_turns_vertical_one_column_per_line(
    runner: CliRunner, demo: Facts, width: int
) -> None:
    found = as_json(runner, "sql", "select * from spans limit 1", "--db", demo.db)
    lines = at_width(runner, width, "sql", "select * from spans limit 1", "--db", demo.db)
    assert len(lines) < 60  # was 202 lines one character wide
    starts = [line.split(":", 1)[0] for line in lines if ":" in line]
    assert [name for name in found["columns"] if name in starts] == found["columns"]
    (row,) = found["rows"]
    span_id = row[found["columns"].index("span_id")]
    assert any(line.split() == ["span_id:", span_id] for line in lines)


def test_schema_shows_each_table_s_columns_as_rows_not_clipped_json(
    runner: CliRunner, demo: Facts
) -> None:
    found = as_json(runner, "schema", "--db", demo.db)
    lines = at_width(runner, 100, "schema", "--db", demo.db)
    text = "\n".join(lines)
    assert '[{"name"' not in text
    cells = table_cells(text.replace("┃", "│"))
    for table in found["tables"]:
        assert f"name:        {table['name']}" in text
        for column in table["columns"]:
            assert [column["name"], column["type"]] in [c[:2] for c in cells]


@pytest.mark.parametrize("width", [80, 120])
def test_a_stack_trace_keeps_its_lines(runner: CliRunner, demo: Facts, width: int) -> None:
    lines = at_width(runner, width, "span", demo.error_span, "--db", demo.db)
    values = [line.strip(" │").split("│")[-1].strip() for line in lines]  # the value column
    assert "Traceback (most recent call last):" in values
    assert "raise map_error(response)" in values


TOOL_NAMES = ("list_projects", "search_traces", "get_trace_preview", "get_span_data",
              "find_in_trace", "search_spans", "describe_schema", "get_session")  # fmt: skip


@pytest.mark.parametrize(
    ("args", "command"),
    [
        (["trace", "f" * 32], "traceproof traces"),
        (["session", "no-such-session"], "traceproof sql"),
        (["span", "0000000000000000"], "traceproof trace"),
    ],
)
def test_errors_name_commands_to_run_not_tools_to_call(
    runner: CliRunner, demo: Facts, args: list[str], command: str
) -> None:
    result = run(runner, *args, "--db", demo.db)
    assert result.exit_code == 1
    said = " ".join(result.stderr.split())
    assert f"`{command}" in said and "un `traceproof" in said
    assert not [name for name in TOOL_NAMES if name in said]
    assert "Call " not in said


def test_an_unknown_session_says_how_to_list_sessions_in_a_persons_words(
    runner: CliRunner, demo: Facts
) -> None:
    result = run(runner, "session", "sess-9999", "--db", demo.db)
    assert result.exit_code == 1
    said = " ".join(result.stderr.split())
    assert said.startswith("error: [unknown_session] No session 'sess-9999'. Run `traceproof sql")
    assert "from sessions order by start_time desc" in said and "`traceproof traces`" in said
    for agents_words in ("unset", "session_id unset", "view", "Call ", "search_traces"):
        assert agents_words not in said
    # The query it gives runs and lists the demo's sessions.
    query = said.split("`traceproof sql ", 1)[1].split("`", 1)[0].strip('"')
    listed = as_json(runner, "sql", query, "--db", demo.db)
    assert demo.session in [row[0] for row in listed["rows"]]


def test_agents_still_read_tool_names_in_the_same_errors(demo_store: Store) -> None:
    from traceproof.tools.invoke import run_tool

    with pytest.raises(TraceproofError) as raised:
        run_tool(demo_store, "get_trace_preview", {"trace_id": "f" * 32})
    assert "Call search_traces" in str(raised.value)


def test_tool_mentions_become_commands_with_their_options() -> None:
    said = for_people("Call describe_schema(table='spans') for one table; see get_span_data.")
    assert said == "Run `traceproof schema --table spans` for one table; see `traceproof span`."
    assert for_people("bad jq program; call sql") == "bad jq program; run `traceproof sql`"


README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def readme_examples() -> list[str]:
    """The example column of README's CLI reference table for the read commands."""
    section = README.split("## CLI reference", 1)[1].split("\n## ", 1)[0]
    examples = []
    for line in section.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 3 and cells[2].startswith("`traceproof "):
            examples.append(cells[2].strip("`").replace("\\|", "|"))
    return examples


@pytest.fixture(scope="module")
def fresh_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo as `traceproof serve --demo` loads it on a fresh machine: ending now."""
    from traceproof.server.run import load_demo

    db = tmp_path_factory.mktemp("fresh") / "demo.duckdb"
    with Store.open(db, Settings(db=db)) as store:
        load_demo(store, Settings(db=db))
    return db


#: The transcripts README's trajectory examples read (imported into the demo for them): two
#: runs of one task, for ``trajectory diff``.
EXAMPLE_TRANSCRIPTS = Path(__file__).resolve().parents[1] / "examples" / "transcripts"


@pytest.fixture(scope="module")
def demo_with_transcript(fresh_demo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo plus README's example transcripts, imported as README says."""
    db = tmp_path_factory.mktemp("transcript") / "demo.duckdb"
    shutil.copyfile(fresh_demo, db)
    imported = CliRunner().invoke(cli, ["ingest", str(EXAMPLE_TRANSCRIPTS), "--db", str(db)])
    assert imported.exit_code == 0, imported.output
    return db


def test_readme_lists_an_example_for_every_read_command() -> None:
    named = {shlex.split(example)[1] for example in readme_examples()}
    assert named == {"projects", "traces", "trace", "span", "find", "spans", "jq", "agg", "sql",
                     "schema", "session", "errors", "trajectory"}  # fmt: skip


@pytest.mark.parametrize("example", readme_examples())
def test_readme_cli_examples_answer_on_the_demo(
    runner: CliRunner, fresh_demo: Path, demo_with_transcript: Path, example: str
) -> None:
    args = shlex.split(example)[1:]
    if args[0] == "trajectory":  # needs a coding agent's transcript, which the demo lacks
        fresh_demo = demo_with_transcript
    result = run(runner, *args, "--db", fresh_demo)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip()
    found = as_json(runner, *[a for a in args if a != "--json"], "--db", fresh_demo)
    assert found.get("note") is None  # no search came back empty
    contents = [v for k, v in found.items() if isinstance(v, list | dict | str) and k != "columns"]
    assert any(contents), found  # rows, fields or a tree: something was found
