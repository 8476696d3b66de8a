"""What built-in evaluators share: the parameter base class, the verdict, the failure.

An evaluator function takes a target and its validated parameters and returns a
:class:`Verdict` (pass or fail, a score, why). It raises :class:`CannotEvaluate` when the
target does not hold what it needs (no expected value, no output): that is an error for the
target, never a failing score.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from traceproof.evals.target import EvalTarget

__all__ = [
    "REGISTRY",
    "Builtin",
    "CannotEvaluate",
    "Params",
    "Verdict",
    "as_text",
    "clip",
    "parse_json",
    "register",
]

#: Characters of a value quoted in an explanation.
QUOTE_CHARS = 80


class Params(BaseModel):
    """Base of every built-in evaluator's parameters: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True, slots=True)
class Verdict:
    passed: bool
    explanation: str
    score: float | None = None  # None: 1.0 when passed, else 0.0

    @property
    def label(self) -> str:
        return "pass" if self.passed else "fail"

    @property
    def value(self) -> float:
        if self.score is not None:
            return self.score
        return 1.0 if self.passed else 0.0


class CannotEvaluate(Exception):
    """The target lacks what the evaluator needs; recorded as an error for that target."""


def clip(value: Any, limit: int = QUOTE_CHARS) -> str:
    """``value`` quoted for an explanation, cut to ``limit`` characters."""
    text = value if isinstance(value, str) else as_text(value)
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def as_text(value: Any) -> str:
    """Strings as they are; anything else as compact JSON (``None`` as the empty string)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return orjson.dumps(value, default=str).decode()


def parse_json(value: Any) -> Any:
    """A JSON text parsed; non-strings (already parsed values) as they are. Raises
    ``ValueError`` with the parser's reason for text that is not JSON."""
    if isinstance(value, str | bytes):
        return orjson.loads(value)
    return value


# -- the registry -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Builtin:
    """A built-in evaluator: its name, parameter model, check, one-line summary, and the
    version of its behaviour (bumped when the same parameters would judge differently; part of
    every definition hash)."""

    name: str
    params: type[Params]
    check: Callable[[EvalTarget, Any], Verdict]
    summary: str
    version: int = 1


#: Every built-in evaluator by name, in documentation order.
REGISTRY: dict[str, Builtin] = {}


def register(
    name: str, params: type[Params], *, version: int = 1
) -> Callable[[Callable[[EvalTarget, Any], Verdict]], Callable[[EvalTarget, Any], Verdict]]:
    """Decorator: ``check`` becomes the built-in evaluator ``name``; its docstring's first
    paragraph is the summary."""

    def add(check: Callable[[EvalTarget, Any], Verdict]) -> Callable[[EvalTarget, Any], Verdict]:
        summary = " ".join((check.__doc__ or "").strip().split("\n\n")[0].split())
        REGISTRY[name] = Builtin(name, params, check, summary, version)
        return check

    return add
