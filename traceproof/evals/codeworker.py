"""The child side of a custom code evaluator: imports the user's function and answers targets.

Run as ``python -c <this file's source> module:function`` in the project's directory, with the
project's interpreter (which need not have traceproof installed: this file uses only the
standard library). It speaks JSON lines on the stdout it was given, and points its own stdout
(``print`` in the user's code, at the file-descriptor level too) at stderr so nothing the user
prints can break the protocol:

- first line out: ``{"ready": true, "accepts": [...], "file": ..., "sha256": ...}`` (the
  arguments the function takes, its module's file and that file's hash), or
  ``{"fatal": "..."}`` when the function cannot be loaded, then exit;
- then per line in, ``{"i": n, "args": {...}}``: one line out,
  ``{"i": n, "label", "score", "explanation", "metadata", "error", "ms"}``.

A return is understood as the common evaluation libraries do: bool (score 1/0, label
pass/fail), number (score), string (label), a 1-3 tuple (``(score,)``, ``(label,)``,
``(score, explanation)``, ``(label, explanation)``, ``(score, label, explanation)``), a dict
with ``label`` / ``score`` / ``explanation`` (other keys kept as metadata), or an object
carrying those attributes (a dataclass, a pydantic model). Exceptions become ``error``.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib
import inspect
import json
import math
import os
import sys
import time
from typing import Any

ARGUMENTS = ("input", "output", "expected", "metadata", "span", "trace")
SHAPES = "a bool, a number, a label string, (score, explanation) or a dict with label/score"


class BadReturn(Exception):
    pass


def _score(value: Any) -> float:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, str) or not hasattr(value, "__float__"):
        raise BadReturn(f"score {value!r} is not a number")
    number = float(value)
    if not math.isfinite(number):
        raise BadReturn(f"score {number!r} is not finite")
    return number


def _is_number(value: Any) -> bool:
    return not isinstance(value, str | bytes) and hasattr(value, "__float__")


def normalize(result: Any) -> dict[str, Any]:
    """``result`` as ``{label, score, explanation, metadata}``; raises BadReturn."""
    out: dict[str, Any] = {"label": None, "score": None, "explanation": None, "metadata": {}}
    if isinstance(result, bool):
        return out | {"score": float(result), "label": "pass" if result else "fail"}
    if isinstance(result, str):
        return out | {"label": result}
    if _is_number(result):
        return out | {"score": _score(result)}
    if isinstance(result, tuple | list) and 0 < len(result) <= 3:
        items = list(result)
        if len(items) == 3:
            score, label, explanation = items
            out["score"] = None if score is None else _score(score)
            out["label"] = None if label is None else str(label)
        else:
            first = items[0]
            if isinstance(first, bool):
                out |= {"score": float(first), "label": "pass" if first else "fail"}
            elif _is_number(first):
                out["score"] = _score(first)
            elif isinstance(first, str):
                out["label"] = first
            else:
                raise BadReturn(f"first item {first!r} is neither a score nor a label")
            explanation = items[1] if len(items) == 2 else None
        out["explanation"] = None if explanation is None else str(explanation)
    else:
        if not isinstance(result, dict):
            if hasattr(result, "model_dump"):
                result = result.model_dump()
            elif hasattr(result, "__dataclass_fields__"):
                result = {k: getattr(result, k) for k in result.__dataclass_fields__}
            elif hasattr(result, "score") or hasattr(result, "label"):
                keys = ("label", "score", "explanation", "metadata")
                result = {k: getattr(result, k) for k in keys if hasattr(result, k)}
            else:
                raise BadReturn(f"returned {type(result).__name__}; return {SHAPES}")
        data = dict(result)
        score, label = data.pop("score", None), data.pop("label", None)
        explanation = data.pop("explanation", None)
        metadata = data.pop("metadata", None) or {}
        out["score"] = None if score is None else _score(score)
        if isinstance(label, bool):
            label = "pass" if label else "fail"
        out["label"] = None if label is None else str(label)
        out["explanation"] = None if explanation is None else str(explanation)
        out["metadata"] = (dict(metadata) if isinstance(metadata, dict) else {}) | {
            k: v for k, v in data.items() if k != "name"
        }
    if out["label"] is None and out["score"] is None:
        raise BadReturn(f"returned no label and no score; return {SHAPES}")
    return out


def load(spec: str) -> tuple[Any, list[str], list[str], dict[str, Any]]:
    """The function, its positional-only argument names, its keyword ones, and what it is."""
    module_name, _, attr = spec.partition(":")
    module = importlib.import_module(module_name)
    fn = getattr(module, attr)
    if not callable(fn):
        raise TypeError(f"{spec} is not callable")
    params = inspect.signature(fn).parameters.values()
    positional: list[str] = []
    keyword: list[str] = []
    for p in params:
        if p.kind is p.VAR_KEYWORD:
            keyword.extend(a for a in ARGUMENTS if a not in keyword)
        elif p.kind is p.VAR_POSITIONAL:
            continue
        elif p.name in ARGUMENTS:
            (positional if p.kind is p.POSITIONAL_ONLY else keyword).append(p.name)
        elif p.default is p.empty:
            raise TypeError(
                f"{spec} takes an argument {p.name!r}; evaluators are given only "
                f"{', '.join(ARGUMENTS)} (by name)"
            )
    file = getattr(module, "__file__", None)
    digest = None
    if file:
        with open(file, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
    return fn, positional, keyword, {"file": file, "sha256": digest}


def call(fn: Any, positional: list[str], keyword: list[str], args: dict[str, Any]) -> Any:
    result = fn(*(args.get(n) for n in positional), **{n: args.get(n) for n in keyword})
    if inspect.isawaitable(result):
        result = asyncio.run(_wait(result))
    return result


async def _wait(awaitable: Any) -> Any:
    return await awaitable


def answer(
    fn: Any, positional: list[str], keyword: list[str], request: dict[str, Any]
) -> dict[str, Any]:
    started = time.perf_counter()
    reply: dict[str, Any] = {"i": request.get("i")}
    try:
        reply |= normalize(call(fn, positional, keyword, request.get("args") or {}))
        reply["error"] = None
    except BadReturn as exc:
        reply["error"] = f"bad_return: {exc}"
    except (Exception, SystemExit) as exc:  # the user's code: what it raises is the target's
        reply["error"] = f"{type(exc).__name__}: {exc}"[:1000]
    reply["ms"] = (time.perf_counter() - started) * 1000
    return reply


def main() -> None:
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        fn, positional, keyword, about = load(sys.argv[1])
    except BaseException as exc:
        protocol.write(json.dumps({"fatal": f"{type(exc).__name__}: {exc}"[:2000]}) + "\n")
        protocol.flush()
        return
    hello = {"ready": True, "accepts": sorted(set(positional) | set(keyword))} | about
    protocol.write(json.dumps(hello) + "\n")
    protocol.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        reply = answer(fn, positional, keyword, json.loads(line))
        try:
            text = json.dumps(reply, ensure_ascii=False, default=str, allow_nan=False)
        except ValueError as exc:
            reply = {"i": reply["i"], "error": f"bad_return: {exc}", "ms": reply["ms"]}
            text = json.dumps(reply)
        protocol.write(text + "\n")
        protocol.flush()


if __name__ == "__main__":
    main()
