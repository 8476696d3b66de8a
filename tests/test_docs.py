"""README stays true to the code it documents."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from traceproof.cli import cli, load_commands
from traceproof.settings import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_setting_is_in_the_readme_configuration_table() -> None:
    missing = [
        f"TRACEPROOF_{name.upper()}"
        for name in Settings.model_fields
        if f"`TRACEPROOF_{name.upper()}`" not in README
    ]
    assert not missing, f"README's configuration table misses {missing}"


def test_every_cli_command_is_in_the_readme() -> None:
    load_commands()  # the commands of the other cli_* modules register on first use
    assert {"ingest", "traces", "watch", "experiment", "trajectory"} <= set(cli.commands)
    missing = [name for name in cli.commands if f"`traceproof {name}" not in README]
    assert not missing, f"README's CLI reference misses {missing}"


def test_every_command_has_help() -> None:
    import click

    runner = CliRunner()
    load_commands()
    for name, command in cli.commands.items():
        words = [[name]]
        if isinstance(command, click.Group):  # a group's commands each take --db
            words = [[name, sub] for sub in command.commands]
        for args in words:
            result = runner.invoke(cli, [*args, "--help"])
            assert result.exit_code == 0, result.output
            assert "--db" in result.output, args


def test_every_registered_tool_is_in_the_readme_tool_reference() -> None:
    from traceproof.tools.registry import TOOLS

    section = README.split("## Tool reference", 1)[1].split("\n## ", 1)[0]
    missing = [spec.name for spec in TOOLS if f"`{spec.name}`" not in section]
    assert not missing, f"README's tool reference misses {missing}"


ROOT = Path(__file__).resolve().parents[1]
MARKDOWN = {
    "README.md": README,
    "examples/support_agent/README.md": (ROOT / "examples/support_agent/README.md").read_text(),
}


def prose_lines(text: str) -> list[str]:
    """The lines of a Markdown text outside its fenced code blocks."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
            continue
        lines.append("" if fenced else line)
    return lines


def test_every_table_row_is_in_a_table_with_a_header() -> None:
    """A row after a paragraph (no header, no separator) renders as text, not as a table."""
    for name, text in MARKDOWN.items():
        lines = prose_lines(text)
        for n, line in enumerate(lines):
            starts = line.startswith("|") and not (n and lines[n - 1].startswith("|"))
            if not starts:
                continue
            below = lines[n + 1] if n + 1 < len(lines) else ""
            assert below.startswith("| ---") or below.startswith("|---"), (
                f"{name} line {n + 1}: a table row without a header: {line[:80]}"
            )


def test_each_setting_is_in_the_configuration_table_once() -> None:
    section = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = [
        line.split("|")[1].strip()
        for line in section.splitlines()
        if line.startswith("| `TRACEPROOF_")
    ]
    assert len(rows) > 50
    twice = sorted({row for row in rows if rows.count(row) > 1})
    assert not twice, f"README's configuration table lists {twice} more than once"


def test_the_tool_reference_names_every_tool_that_writes() -> None:
    from traceproof.tools.registry import TOOLS

    section = README.split("## Tool reference", 1)[1]
    first = section.strip().split("\n\n", 1)[0]
    writes = [spec.name for spec in TOOLS if not spec.read_only]
    missing = [name for name in writes if f"`{name}`" not in first]
    assert not missing, f"README says these are read-only, but they write: {missing}"


def test_the_status_line_does_not_announce_as_next_what_ships() -> None:
    from traceproof.tools.registry import TOOLS

    status = README.split("Status:", 1)[1].split("\n\n", 1)[0].lower()
    words = {
        "inspect": "trace-inspection",
        "judgment": "judgment",
        "proof": "datasets",
        "trajectories": "trajector",
    }
    shipped = {spec.family for spec in TOOLS}
    for family in shipped:
        assert words[family] in status, f"README's status line omits the {family} tools"
    for sentence in (s for s in status.split(". ") if "next" in s):
        for family in shipped:
            assert words[family] not in sentence, f"README's status says {family} comes next"
        assert "experiment" not in sentence
