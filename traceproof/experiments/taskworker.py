"""The child side of a ``python`` task: imports ``module:function``, calls it once, answers.

Run as ``python -c <this file's source> module:function`` in the task's directory with the
project's interpreter (standard library only). It reads one JSON object ``{input, expected,
metadata}`` on stdin, binds the function's arguments by name (``input``, ``expected``,
``metadata``; ``**kwargs`` takes all three), and writes one JSON line on the stdout it was given:
``{"output": ...}``, ``{"error": "..."}`` or, for a value JSON cannot hold (an object, a set,
NaN), ``{"bad_output": "..."}`` naming its type. The user's own prints go to stderr (at the
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
    except BaseException as exc:  # the user's code: what it raises is the run's error
        text = json.dumps({"error": f"{type(exc).__name__}: {exc}"[:2000]})
    else:
        text = _answer(result)
    protocol.write(text + "\n")
    protocol.flush()


class _NotJson(TypeError):
    pass


def _not_json(value: Any) -> Any:
    raise _NotJson(type(value).__qualname__)


def _answer(result: Any) -> str:
    """The answer line for the function's value, or a ``bad_output`` one naming what JSON
    cannot hold (an object, a set, NaN, a key that is not a string)."""
    try:
        return json.dumps({"output": result}, ensure_ascii=False, default=_not_json,
                          allow_nan=False)  # fmt: skip
    except _NotJson as exc:
        kind = type(result).__qualname__
        holding = "" if str(exc) == kind else f"a {kind} holding "
        why = f"{holding}a value of type {exc}, which JSON cannot hold"
    except (TypeError, ValueError, RecursionError) as exc:
        why = f"a {type(result).__qualname__} that is not JSON ({exc})"
    return json.dumps({"bad_output": f"the function returned {why}"[:2000]})


async def _wait(awaitable: Any) -> Any:
    return await awaitable


if __name__ == "__main__":
    main()
