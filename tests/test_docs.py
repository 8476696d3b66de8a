"""README stays true to the code it documents."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from traceproof.cli import cli
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
    assert isinstance(cli.commands, dict)
    missing = [name for name in cli.commands if f"`traceproof {name}" not in README]
    assert not missing, f"README's CLI reference misses {missing}"


def test_every_command_has_help() -> None:
    runner = CliRunner()
    for name, command in cli.commands.items():
        subcommands = getattr(command, "commands", None)  # a group: each of its commands
        for words in [[name, sub] for sub in subcommands] if subcommands else [[name]]:
            result = runner.invoke(cli, [*words, "--help"])
            assert result.exit_code == 0, result.output
            assert "--db" in result.output, words


def test_every_registered_tool_is_in_the_readme_tool_reference() -> None:
    from traceproof.tools.registry import TOOLS

    section = README.split("## Tool reference", 1)[1].split("\n## ", 1)[0]
    missing = [spec.name for spec in TOOLS if f"`{spec.name}`" not in section]
    assert not missing, f"README's tool reference misses {missing}"
