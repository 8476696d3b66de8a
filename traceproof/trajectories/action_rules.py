"""Action rules: the action names, a project's ``[trajectories.actions]`` rules, and the
built-in tables of tool names (see :mod:`traceproof.trajectories.actions`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

Action = Literal["localize", "edit", "execute", "verify", "vcs", "plan", "delegate", "web", "other"]
ACTIONS: tuple[Action, ...] = get_args(Action)


class InvalidRules(ValueError):
    """A ``[trajectories.actions]`` table that cannot be used; the message says where."""


@dataclass(frozen=True, slots=True)
class ActionRules:
    """Project rules, tried before the built-in ones: tool names (lowercase) to actions, and
    command regexes per action."""

    tools: Mapping[str, Action] = field(default_factory=dict)
    commands: tuple[tuple[Action, re.Pattern[str]], ...] = ()

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> ActionRules:
        """Rules from ``[trajectories.actions]``: ``{action: {"tools": [...], "commands":
        [...]}}``. Raises :class:`InvalidRules`."""
        tools: dict[str, Action] = {}
        commands: list[tuple[Action, re.Pattern[str]]] = []
        for action, rules in table.items():
            where = f"trajectories.actions.{action}"
            if action not in ACTIONS:
                raise InvalidRules(f"{where}: unknown action; known: {', '.join(ACTIONS)}")
            if not isinstance(rules, dict):
                raise InvalidRules(f"{where}: must be a table with tools and commands")
            for key in rules:
                if key not in ("tools", "commands"):
                    raise InvalidRules(f"{where}.{key}: unknown key; known: tools, commands")
            for name in _strings(rules.get("tools", []), f"{where}.tools"):
                tools[name.lower()] = action
            for pattern in _strings(rules.get("commands", []), f"{where}.commands"):
                try:
                    commands.append((action, re.compile(pattern)))
                except re.error as exc:
                    raise InvalidRules(
                        f"{where}.commands: {pattern!r} is not a regex ({exc})"
                    ) from None
        return cls(tools=tools, commands=tuple(commands))


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidRules(f"{where}: must be a list of strings")
    return value


# --- tool names --------------------------------------------------------------------------------

TOOLS: dict[str, Action] = {
    **dict.fromkeys(
        (
            "read", "read_file", "view", "view_file", "notebookread", "grep", "grep_search",
            "glob", "find", "ls", "list_dir", "list_directory", "list_files", "search",
            "file_search", "codebase_search", "find_file", "search_dir", "search_file", "open",
            "goto", "scroll_up", "scroll_down", "read_many_files", "search_file_content",
        ),
        "localize",
    ),
    **dict.fromkeys(
        (
            "edit", "write", "multiedit", "notebookedit", "apply_patch", "str_replace",
            "create", "edit_file", "write_file", "create_file", "insert", "replace",
            "write_to_file", "replace_in_file",
        ),
        "edit",
    ),
    **dict.fromkeys(
        ("todowrite", "todoread", "update_plan", "exitplanmode", "enterplanmode", "think"),
        "plan",
    ),
    **dict.fromkeys(
        ("task", "agent", "dispatch_agent", "spawn_agent", "delegate", "subagent"), "delegate"
    ),
    **dict.fromkeys(
        (
            "webfetch", "websearch", "web_fetch", "web_search", "fetch", "browser", "browse",
            "browse_interactive", "web_read", "google_web_search",
        ),
        "web",
    ),
    **dict.fromkeys(
        ("execute_ipython_cell", "run_ipython", "ipython", "killshell", "write_stdin",
         "taskoutput"),
        "execute",
    ),
}  # fmt: skip
#: Tools whose argument is a shell command, classified by the command.
SHELLS = frozenset(
    {
        "bash", "shell", "exec_command", "execute_bash", "run_shell_command", "terminal",
        "run", "local_shell", "container.exec", "run_command", "cmd", "bashoutput",
        "execute_command", "run_terminal_cmd",
    }
)  # fmt: skip
#: Editor tools with a sub-command (SWE-agent's and OpenHands' ``str_replace_editor``).
EDITORS = frozenset({"str_replace_editor", "str_replace_based_edit_tool", "text_editor"})
EDITOR_READS = frozenset({"view"})
