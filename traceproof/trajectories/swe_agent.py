"""SWE-agent ``.traj`` files and mini-swe-agent ``.traj.json`` files as spans.

One file is one task: one session (the file's name without its suffix) and one trace under an
``AGENT`` root whose input is the task (the first user message) and whose output is the
submission (``info.submission``); an exit status other than ``submitted`` makes the root an
error. Each model step is an ``LLM`` span (its response or thought as output; the file has no
per-step tokens, so the run's totals from ``info.model_stats`` go on the root, with the cost
and the number of API calls), and each action a ``TOOL`` span under the root: the command as
input (``{"command": ...}``, the function call's own arguments in ``tool.parameters``) and
target, the observation as output, named after the tool the model called (or the
command's first word). A step is an error when its observation says so: an edit SWE-agent
rejected for a syntax error, a Python traceback, a missing command or file; mini-swe-agent's
``<returncode>`` other than 0.

The working directory is the sandbox's (``/testbed``), not a project of the user's: it is
kept as ``swe_agent.working_dir`` (``mini_swe_agent.working_dir``) rather than
``process.cwd``, so that imported runs land in the agent's project, not one per sandbox path.

``.traj`` files record no times: spans are laid out back from the file's modification time,
one millisecond per model step and each action's ``execution_time`` (or a millisecond), and
carry ``trajectory.time_estimated``. mini-swe-agent's messages carry a ``timestamp`` from
version 1.1 on, used when present.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from traceproof.trajectories.common import (
    STOP_REASON,
    TARGET,
    Item,
    Malformed,
    Redact,
    Skipped,
    Status,
    StepSpan,
    span_id_for,
    trace_id_for,
)
from traceproof.trajectories.records import (
    TIME_ESTIMATED,
    as_dict,
    as_int,
    clip,
    dumps,
    first_lines,
    load_json,
    raw,
    text_of,
)

_MS = 1_000_000
_ERROR_LINE = re.compile(
    r"^Your proposed edit has introduced new syntax error|^Traceback \(most recent call last\)"
    r"|: command not found\s*$|No such file or directory|^Error: |^ERROR: ",
    re.M,
)
_TRAJ_HEAD = re.compile(rb'"trajectory"\s*:\s*\[\s*\{\s*"(action|observation|response|thought)"')
_HISTORY_HEAD = re.compile(rb'^\s*\{\s*"history"\s*:\s*\[')
_MINI_HEAD = re.compile(rb'"(mini_version|trajectory_format)"\s*:\s*"')
_BASH_BLOCK = re.compile(r"```(?:bash|sh|mswea_bash_command)?[ \t]*\n(.*?)```", re.S)
_MSWEA_COMMAND = re.compile(r"<mswea_bash_command>(.*?)</mswea_bash_command>", re.S)
_RETURNCODE = re.compile(r"<returncode>\s*(-?\d+)\s*</returncode>")
_OUTPUT = re.compile(r"<output>\n?(.*?)</output>", re.S)


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".traj.json", ".traj", ".json"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


@dataclass(slots=True)
class _Step:
    thought: str | None
    action: str | None
    observation: str | None
    tool: str | None
    arguments: str | None
    seconds: float | None
    record: Any
    start_ns: int | None = None
    end_ns: int | None = None
    model: str | None = None
    usage: dict[str, Any] = field(default_factory=dict)
    stop: str | None = None
    status: Status = "OK"
    message: str | None = None


@dataclass(slots=True)
class _Run:
    """What both formats give the span builder."""

    source: str
    service: str
    root_name: str
    session: str
    task: str | None
    submission: str | None
    exit_status: str | None
    ok_statuses: tuple[str, ...]
    stats: dict[str, Any]
    model: str | None
    steps: list[_Step]
    resource: dict[str, Any]
    root_record: Any
    estimated: bool
    end_ns: int
    skipped: list[str] = field(default_factory=list)


class SweAgentReader:
    """SWE-agent ``.traj`` (a JSON object: ``trajectory``, ``history``, ``info``)."""

    name = "swe_agent"

    def sniff(self, path: Path, head: bytes) -> bool:
        if path.name.endswith(".traj"):
            return True
        if path.name.endswith(".traj.json") or _MINI_HEAD.search(head[:4096]):
            return False
        start = head.lstrip()[:1]
        return start == b"{" and bool(_TRAJ_HEAD.search(head) or _HISTORY_HEAD.match(head))

    def read(self, path: Path, stream: IO[bytes], redact: Redact) -> Iterator[Item]:
        data = load_json(stream, redact)
        if isinstance(data, Malformed):
            yield data
            return
        if not isinstance(data, dict):
            yield Malformed(None, "a SWE-agent trajectory is a JSON object")
            return
        yield from _spans(_swe_run(path, data))


class MiniSweAgentReader:
    """mini-swe-agent ``.traj.json`` (``info``, ``messages``, ``trajectory_format``)."""

    name = "mini_swe_agent"

    def sniff(self, path: Path, head: bytes) -> bool:
        if path.name.endswith(".traj.json"):
            return True
        return head.lstrip()[:1] == b"{" and bool(_MINI_HEAD.search(head))

    def read(self, path: Path, stream: IO[bytes], redact: Redact) -> Iterator[Item]:
        data = load_json(stream, redact)
        if isinstance(data, Malformed):
            yield data
            return
        if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
            yield Malformed(None, "a mini-swe-agent trajectory is an object with messages")
            return
        yield from _spans(_mini_run(path, data))


# -- SWE-agent ---------------------------------------------------------------------------


def _swe_run(path: Path, data: dict[str, Any]) -> _Run:
    info = as_dict(data.get("info"))
    history = [m for m in data.get("history") or [] if isinstance(m, dict) and not m.get("is_demo")]
    actions = [m for m in history if m.get("role") == "assistant" and "action" in m]
    entries: list[Any] = data["trajectory"] if isinstance(data.get("trajectory"), list) else []
    trajectory = [s for s in entries if isinstance(s, dict)]
    skipped = ["trajectory/not-an-object"] * (len(entries) - len(trajectory))
    steps: list[_Step] = []
    if trajectory:
        for index, entry in enumerate(trajectory):
            message = actions[index] if index < len(actions) else {}
            if message and message.get("action") != entry.get("action"):
                message = {}
            tool, arguments = _tool_call(message)
            seconds = entry.get("execution_time")
            steps.append(
                _Step(
                    thought=text_of(entry.get("response") or entry.get("thought")),
                    action=text_of(entry.get("action")),
                    observation=text_of(entry.get("observation")),
                    tool=tool,
                    arguments=arguments,
                    seconds=float(seconds) if isinstance(seconds, int | float) else None,
                    record=entry,
                    stop="tool_calls" if message.get("tool_calls") else None,
                )
            )
    else:  # only the chat: an action and the observation after it
        for index, message in enumerate(history):
            if message.get("role") != "assistant" or "action" not in message:
                continue
            after = history[index + 1] if index + 1 < len(history) else {}
            observation = (
                text_of(after.get("content")) if after.get("role") in ("tool", "user") else None
            )
            tool, arguments = _tool_call(message)
            steps.append(
                _Step(
                    thought=text_of(message.get("thought") or message.get("content")),
                    action=text_of(message.get("action")),
                    observation=observation,
                    tool=tool,
                    arguments=arguments,
                    seconds=None,
                    record=[message, after] if after else [message],
                    stop="tool_calls" if message.get("tool_calls") else None,
                )
            )
    for step in steps:
        if step.observation and _ERROR_LINE.search("\n".join(step.observation.splitlines()[:3])):
            step.status, step.message = "ERROR", first_lines(step.observation)
    task = next(
        (text_of(m.get("content")) for m in history if m.get("role") == "user"),
        None,
    )
    replay = as_dict(data.get("replay_config"))
    agent = as_dict(replay.get("agent"))
    model = as_dict(agent.get("model")).get("name")
    resource: dict[str, Any] = {"service.name": "swe-agent"}
    if isinstance(info.get("swe_agent_version"), str):  # SWE-agent 1.x writes its version
        resource["service.version"] = info["swe_agent_version"]
    state = as_dict(trajectory[0].get("state")) if trajectory else {}
    if isinstance(state.get("working_dir"), str):
        resource["swe_agent.working_dir"] = state["working_dir"]
    repo = as_dict(as_dict(replay.get("env")).get("repo"))
    if isinstance(repo.get("base_commit"), str):
        resource["vcs.ref.head.revision"] = repo["base_commit"]
    root_record = {key: value for key, value in data.items() if key not in ("trajectory",)}
    return _Run(
        source="swe_agent",
        service="swe-agent",
        root_name="swe-agent run",
        session=_stem(path),
        task=task,
        submission=text_of(info.get("submission")),
        exit_status=text_of(info.get("exit_status")),
        ok_statuses=("submitted",),
        stats=as_dict(info.get("model_stats")),
        model=model if isinstance(model, str) else None,
        steps=steps,
        resource=resource,
        root_record=root_record,
        estimated=True,
        end_ns=_mtime_ns(path),
        skipped=skipped,
    )


def _tool_call(message: dict[str, Any]) -> tuple[str | None, str | None]:
    calls = message.get("tool_calls")
    if isinstance(calls, list) and calls and isinstance(calls[0], dict):
        function = as_dict(calls[0].get("function"))
        name = function.get("name")
        return (name if isinstance(name, str) else None), text_of(function.get("arguments"))
    return None, None


# -- mini-swe-agent ----------------------------------------------------------------------


def _mini_run(path: Path, data: dict[str, Any]) -> _Run:
    info = as_dict(data.get("info"))
    config = as_dict(info.get("config"))
    model_config = as_dict(config.get("model"))
    model = model_config.get("model_name")
    messages = [m for m in data["messages"] if isinstance(m, dict)]
    steps: list[_Step] = []
    skipped = ["message/not-an-object"] * (len(data["messages"]) - len(messages))
    task: str | None = None
    for index, message in enumerate(messages):
        role = message.get("role")
        content = _content(message.get("content"))
        if role == "user" and task is None and not steps:
            task = content
            continue
        if role not in ("assistant", "user", "system", "tool"):
            skipped.append(f"message/{role}")
            continue
        if role != "assistant":
            continue
        extra = as_dict(message.get("extra"))
        after = messages[index + 1] if index + 1 < len(messages) else {}
        observation = _content(after.get("content")) if after.get("role") != "assistant" else None
        after_extra = as_dict(after.get("extra"))
        command = _mini_command(content or "", extra)
        tool, arguments = _tool_call(message)  # tool-calling models: tool_calls, role "tool"
        if command is None and arguments is not None:
            command = text_of(as_dict(arguments).get("command")) or arguments
        step = _Step(
            thought=content,
            action=command,
            observation=observation,
            tool=tool or ("bash" if command is not None else None),
            arguments=arguments,
            seconds=None,
            record=[message, after] if after else [message],
            model=model if isinstance(model, str) else None,
        )
        response = as_dict(extra.get("response"))
        step.usage = as_dict(response.get("usage"))
        choices = response.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            reason = choices[0].get("finish_reason")
            step.stop = reason if isinstance(reason, str) else None
        if isinstance(response.get("model"), str):
            step.model = response["model"]
        started, ended = extra.get("timestamp"), after_extra.get("timestamp")
        if isinstance(started, int | float):
            step.start_ns = int(started * 1e9)
            step.end_ns = int(ended * 1e9) if isinstance(ended, int | float) else step.start_ns
        code = as_int(after_extra.get("returncode"))
        if code is None and observation:
            found = _RETURNCODE.search(observation)
            code = as_int(found.group(1)) if found else None
        if code not in (None, 0):
            shown = _OUTPUT.search(observation or "")
            step.status = "ERROR"
            step.message = f"exit code {code}" + (
                f": {first_lines(shown.group(1))}" if shown and first_lines(shown.group(1)) else ""
            )
        steps.append(step)
    resource: dict[str, Any] = {"service.name": "mini-swe-agent"}
    if isinstance(info.get("mini_version"), str):
        resource["service.version"] = info["mini_version"]
    environment = as_dict(config.get("environment"))
    if isinstance(environment.get("cwd"), str) and environment["cwd"]:
        resource["mini_swe_agent.working_dir"] = environment["cwd"]
    timed = [step.start_ns for step in steps if step.start_ns is not None]
    return _Run(
        source="mini_swe_agent",
        service="mini-swe-agent",
        root_name="mini-swe-agent run",
        session=_stem(path),
        task=task,
        submission=text_of(info.get("submission")),
        exit_status=text_of(info.get("exit_status")),
        ok_statuses=("submitted", "Submitted"),
        stats=as_dict(info.get("model_stats")),
        model=model if isinstance(model, str) else None,
        steps=steps,
        resource=resource,
        root_record={"info": info, "trajectory_format": data.get("trajectory_format")},
        estimated=not timed,
        end_ns=_mtime_ns(path),
        skipped=skipped,
    )


def _content(content: Any) -> str | None:
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        return "\n".join(p for p in parts if isinstance(p, str)) or None
    return text_of(content)


def _mini_command(content: str, extra: dict[str, Any]) -> str | None:
    actions = extra.get("actions")
    if isinstance(actions, list):
        commands = [
            a["command"]
            for a in actions
            if isinstance(a, dict) and isinstance(a.get("command"), str)
        ]
        if commands:
            return "\n".join(commands)
    found = _MSWEA_COMMAND.search(content) or _BASH_BLOCK.search(content)
    return found.group(1).strip() if found else None


# -- spans -------------------------------------------------------------------------------


def _layout(run: _Run) -> None:
    """Times for steps that have none: back from the file's time, a millisecond per model
    step and each action's execution time."""
    if not run.estimated:
        last = 0
        for step in run.steps:
            if step.start_ns is None:
                step.start_ns = step.end_ns = last
            last = step.end_ns or step.start_ns or last
        return
    durations = [_MS + int((step.seconds or 0.001) * 1e9) for step in run.steps]
    clock = max(run.end_ns - sum(durations), 0)
    for step, duration in zip(run.steps, durations, strict=True):
        step.start_ns = clock
        step.end_ns = clock + duration
        clock += duration


def _spans(run: _Run) -> Iterator[Item]:
    for kind in run.skipped:
        yield Skipped(kind)
    _layout(run)
    trace = trace_id_for(run.source, run.session, "task")
    root = span_id_for(run.source, run.session, "root")
    session = {"session.id": run.session}
    estimated = {TIME_ESTIMATED: True} if run.estimated else {}
    resource = run.resource
    for number, step in enumerate(run.steps):
        start = step.start_ns or 0
        end = step.end_ns or start
        model = step.model or run.model
        llm_end = min(start + _MS, end) if run.estimated else start
        attributes: dict[str, Any] = {**session, **estimated}
        if model:
            attributes["llm.model_name"] = model
        if step.thought is not None:
            attributes["output.value"] = step.thought
        for name, key in (
            ("llm.token_count.prompt", "prompt_tokens"),
            ("llm.token_count.completion", "completion_tokens"),
            ("llm.token_count.total", "total_tokens"),
        ):
            value = as_int(step.usage.get(key))
            if value is not None:
                attributes[name] = value
        if step.stop:
            attributes[STOP_REASON] = step.stop
        attributes.update(raw(step.record))
        yield StepSpan(
            trace,
            span_id_for(run.source, run.session, f"step:{number}:llm"),
            root,
            model or "model call",
            "LLM",
            start,
            llm_end,
            attributes=attributes,
            resource=resource,
        )
        if step.action is None:
            continue
        tool = step.tool or (step.action.split(None, 1) or ["action"])[0]
        attributes = {**session, **estimated, "tool.name": tool}
        attributes["input.value"] = dumps({"command": step.action})
        attributes["input.mime_type"] = "application/json"
        if step.arguments is not None:
            attributes["tool.parameters"] = step.arguments
        attributes[TARGET] = clip(step.action.strip(), 200)
        if step.observation is not None:
            attributes["output.value"] = step.observation
        attributes.update(raw(step.record))
        yield StepSpan(
            trace,
            span_id_for(run.source, run.session, f"step:{number}:tool"),
            root,
            tool,
            "TOOL",
            llm_end,
            end,
            step.status,
            step.message,
            attributes=attributes,
            resource=resource,
        )
    starts = [step.start_ns for step in run.steps if step.start_ns is not None]
    ends = [step.end_ns for step in run.steps if step.end_ns is not None]
    root_start = min(starts) if starts else max(run.end_ns - _MS, 0)
    root_end = max(ends) if ends else run.end_ns
    attributes = {**session, **estimated}
    if run.task is not None:
        attributes["input.value"] = run.task
    if run.submission is not None:
        attributes["output.value"] = run.submission
    status: Status = "OK"
    message = None
    if run.exit_status is not None:
        attributes[f"{run.source}.exit_status"] = run.exit_status
        if run.exit_status not in run.ok_statuses:
            status, message = "ERROR", f"exit status {run.exit_status}"
    cost = run.stats.get("instance_cost")
    if isinstance(cost, int | float):
        attributes[f"{run.source}.cost"] = cost
    calls = as_int(run.stats.get("api_calls"))
    if calls is not None:
        attributes[f"{run.source}.api_calls"] = calls
    sent, received = as_int(run.stats.get("tokens_sent")), as_int(run.stats.get("tokens_received"))
    if sent or received:
        attributes["llm.token_count.prompt"] = sent or 0
        attributes["llm.token_count.completion"] = received or 0
    attributes.update(raw(run.root_record))
    yield StepSpan(
        trace,
        root,
        None,
        run.root_name,
        "AGENT",
        root_start,
        root_end,
        status,
        message,
        attributes=attributes,
        resource=resource,
    )
