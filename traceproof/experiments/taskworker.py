"""The child side of a ``python`` task: imports ``module:function``, calls it once, answers.

Run as ``python -c <this file's source> module:function`` in the task's directory with the
project's interpreter (standard library only). It reads one JSON object ``{input, expected,
metadata}`` on stdin, binds the function's arguments by name (``input``, ``expected``,
``metadata``; ``**kwargs`` takes all three), and writes one JSON line on the stdout it was given:
``{"output": ...}`` or ``{"error": "..."}``. The user's own prints go to stderr (at the
file-descriptor level too), so they cannot break the answer.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import os
import sys
from typing import Any

ARGUMENTS = ("input", "expected", "metadata")


def bind(fn: Any, given: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind is p.VAR_KEYWORD:
            out.update({a: given.get(a) for a in ARGUMENTS if a not in out})
        elif p.name in ARGUMENTS:
            out[p.name] = given.get(p.name)
        elif p.default is p.empty and p.kind is not p.VAR_POSITIONAL:
            raise TypeError(f"takes an argument {p.name!r}; tasks get only {', '.join(ARGUMENTS)}")
    return out


def main() -> None:
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module_name, _, attr = sys.argv[1].partition(":")
        fn = getattr(importlib.import_module(module_name), attr)
        given = json.loads(sys.stdin.read() or "{}")
        result = fn(**bind(fn, given))
        if inspect.isawaitable(result):
            result = asyncio.run(_wait(result))
        text = json.dumps({"output": result}, ensure_ascii=False, default=str)
    except BaseException as exc:  # the user's code: what it raises is the run's error
        text = json.dumps({"error": f"{type(exc).__name__}: {exc}"[:2000]})
    protocol.write(text + "\n")
    protocol.flush()


async def _wait(awaitable: Any) -> Any:
    return await awaitable


if __name__ == "__main__":
    main()
