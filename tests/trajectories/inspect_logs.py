"""Real Inspect AI eval logs for the reader's tests, written by ``inspect_ai.eval`` with its
``mockllm/model`` (offline: every output is scripted, with its token usage)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: A secret in one sample's metadata and input (the import redacts it).
SECRET = "sk-ant-api03-Zx9_aB-cD4eF5gH6iJ7"
#: The scripted task's samples: id → (input, target).
SAMPLES = {
    "add": ("What is 1+2? Use the tool.", "3"),
    # Over 100 characters: Inspect keeps it once, as an attachment the model events refer to;
    # the secret in it must be redacted there too.
    "wrong": (f"What is 2+2? My key is {SECRET}. " + "Think it through first. " * 4, "4"),
    "divide": ("What is 1/0? Use the tool.", "undefined"),
    "crash": ("Crash the tool.", "nothing"),
    "tests": ("Run the tests.", "passed"),
}
EPOCHS = 2
#: Spans of one log: per epoch, a root per sample, then model calls and tool calls (add,
#: divide, tests: model, tool, model; wrong: model; crash: model, tool, then the error).
SPANS = EPOCHS * (len(SAMPLES) + (2 + 1 + 2 + 2 + 1) + (1 + 1 + 1 + 1))
#: Token usage every scripted model call reports.
USAGE = {
    "input_tokens": 10,
    "output_tokens": 5,
    "total_tokens": 20,
    "input_tokens_cache_read": 3,
    "input_tokens_cache_write": 2,
}


@contextmanager
def _data_dirs(folder: Path) -> Iterator[None]:
    """inspect_ai's own data and cache (sample buffers, trace logs) under ``folder``, not the
    user's home (platformdirs reads these variables at each call)."""
    saved = {name: os.environ.get(name) for name in ("XDG_DATA_HOME", "XDG_CACHE_HOME")}
    os.environ["XDG_DATA_HOME"] = str(folder / "data")
    os.environ["XDG_CACHE_HOME"] = str(folder / "cache")
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def write_log(log_dir: Path, log_format: str) -> Path:
    """Run the scripted task once into ``log_dir``; answers the log file."""
    with _data_dirs(log_dir.parent / f".inspect-{log_format}"):
        return _write_log(log_dir, log_format)


def _write_log(log_dir: Path, log_format: str) -> Path:
    from inspect_ai import Task, eval
    from inspect_ai.dataset import Sample
    from inspect_ai.model import ChatMessageTool, ModelOutput, ModelUsage, get_model
    from inspect_ai.scorer import Score, Target, includes, match, mean, scorer
    from inspect_ai.solver import TaskState, generate, use_tools
    from inspect_ai.tool import ToolError, tool

    @tool
    def add() -> Any:
        async def execute(x: int, y: int) -> int:
            """Add two numbers.

            Args:
                x: First number.
                y: Second number.
            """
            return x + y

        return execute

    @tool
    def divide() -> Any:
        async def execute(x: int, y: int) -> float:
            """Divide two numbers.

            Args:
                x: Dividend.
                y: Divisor.
            """
            if y == 0:
                raise ToolError("division by zero")
            return x / y

        return execute

    @tool
    def bash() -> Any:
        async def execute(cmd: str) -> str:
            """Run a shell command.

            Args:
                cmd: The command.
            """
            return "...\n3 passed in 0.12s" if cmd.startswith("pytest") else ""

        return execute

    @tool
    def crash() -> Any:
        async def execute() -> str:
            """Crash."""
            raise RuntimeError("the sandbox fell over")

        return execute

    @scorer(metrics={"length": [mean()], "tool_calls": [mean()]})
    def shape() -> Any:
        async def score(state: TaskState, target: Target) -> Score:
            calls = sum(isinstance(m, ChatMessageTool) for m in state.messages)
            return Score(
                value={"length": len(state.output.completion), "tool_calls": calls},
                explanation="answer length and tool results",
            )

        return score

    def output(messages: list[Any], tools: Any, tool_choice: Any, config: Any) -> ModelOutput:
        prompt = str(messages[0].content)
        answered = isinstance(messages[-1], ChatMessageTool)
        if "1+2" in prompt and not answered:
            out = ModelOutput.for_tool_call("mockllm/model", "add", {"x": 1, "y": 2})
        elif "1/0" in prompt and not answered:
            out = ModelOutput.for_tool_call("mockllm/model", "divide", {"x": 1, "y": 0})
        elif "tests" in prompt and not answered:
            out = ModelOutput.for_tool_call("mockllm/model", "bash", {"cmd": "pytest -q tests"})
        elif "Crash" in prompt:
            out = ModelOutput.for_tool_call("mockllm/model", "crash", {})
        else:
            out = ModelOutput.from_content(
                "mockllm/model",
                "3"
                if "1+2" in prompt
                else "5"
                if "2+2" in prompt
                else "passed"
                if "tests" in prompt
                else "?",
            )
        out.usage = ModelUsage(**USAGE)
        return out

    task = Task(
        name="arith",
        dataset=[
            Sample(
                id=i,
                input=q,
                target=t,
                metadata={"note": f"key {SECRET} end"} if i == "wrong" else {"level": 1},
            )
            for i, (q, t) in SAMPLES.items()
        ],
        solver=[use_tools(add(), divide(), bash(), crash()), generate()],
        scorer=[match(), includes(), shape()],
        epochs=EPOCHS,
    )
    model = get_model("mockllm/model", custom_outputs=output)
    logs = eval(
        task,
        model=model,
        log_dir=str(log_dir),
        log_format=log_format,
        display="none",
        fail_on_error=False,
    )
    location = logs[0].location
    return Path(location)
