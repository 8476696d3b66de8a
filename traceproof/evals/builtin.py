"""Built-in code evaluators: deterministic checks of a target's text, JSON, numbers and spans.

Each evaluator has a pydantic parameter model (unknown keys refused, so a config file is checked
when it loads) and answers ``pass`` / ``fail`` with a score (1 / 0, or graded where natural) and
a short explanation of why. The tool-call evaluators live in :mod:`traceproof.evals.toolcalls`;
both register in :data:`traceproof.evals.checks.REGISTRY`, which :data:`BUILTINS` exposes.

Most evaluators read one value of the target, named by ``field`` (default ``output``):
``input``, ``output``, ``expected``, ``metadata.<key>``, a span column (``status_message``,
``model``…), ``attributes.<dotted path>``, or a path into JSON text (``output.answer.id``).
"""

from __future__ import annotations

import contextlib
import math
import time
from datetime import datetime
from typing import Annotated, Any, Literal

import orjson
import re2  # type: ignore[import-untyped]
from jsonschema import exceptions as schema_errors
from jsonschema import validators
from pydantic import Field, PrivateAttr, model_validator

from traceproof.evals import toolcalls
from traceproof.evals.checks import (
    REGISTRY,
    Builtin,
    CannotEvaluate,
    Params,
    Verdict,
    as_text,
    clip,
    parse_json,
    register,
)
from traceproof.evals.target import EvalResult, EvalTarget

__all__ = ["BUILTINS", "evaluate_builtin", "get_builtin", "reference_markdown"]

FieldPath = Annotated[
    str,
    Field(
        description="What is checked: input, output, expected, metadata.KEY, a span column, "
        "attributes.PATH, or a path into JSON text (output.answer.id).",
        min_length=1,
    ),
]


def _field(target: EvalTarget, path: str) -> Any:
    value = target.value_of(path)
    if value is None:
        raise CannotEvaluate(f"the target has no {path}")
    return value


def _reference(target: EvalTarget, value: Any) -> Any:
    if value is not None:
        return value
    if target.expected is None:
        raise CannotEvaluate("no value to compare with: set `value`, or evaluate targets that "
                             "have an expected value")  # fmt: skip
    return target.expected


# -- text ---------------------------------------------------------------------------------------


class ExactMatchParams(Params):
    field: FieldPath = "output"
    value: Any = Field(default=None, description="Expected value; default: the target's expected.")
    case_sensitive: bool = Field(default=True, description="Compare case as well.")
    strip: bool = Field(default=True, description="Ignore leading and trailing whitespace.")


def _norm(text: str, p: ExactMatchParams | _TextsParams) -> str:
    text = text.strip() if getattr(p, "strip", False) else text
    return text if p.case_sensitive else text.casefold()


@register("exact_match", ExactMatchParams)
def exact_match(target: EvalTarget, p: ExactMatchParams) -> Verdict:
    """The field equals a value (or the target's expected value) as text."""
    got, want = as_text(_field(target, p.field)), as_text(_reference(target, p.value))
    if _norm(got, p) == _norm(want, p):
        return Verdict(True, f"{p.field} equals {clip(want)}")
    return Verdict(False, f"{p.field} is {clip(got)}, expected {clip(want)}")


class _TextsParams(Params):
    field: FieldPath = "output"
    value: str | list[str] = Field(description="Text, or a list of texts, to look for.")
    case_sensitive: bool = Field(default=False, description="Match case as well.")

    @property
    def values(self) -> list[str]:
        return [self.value] if isinstance(self.value, str) else list(self.value)

    @model_validator(mode="after")
    def _some(self) -> _TextsParams:
        if not self.values or any(v == "" for v in self.values):
            raise ValueError("value needs at least one non-empty text")
        return self


class ContainsParams(_TextsParams):
    match: Literal["any", "all"] = Field(
        default="all", description="Whether all the texts must appear, or any one."
    )


class NotContainsParams(_TextsParams):
    pass


def _found(target: EvalTarget, p: _TextsParams) -> tuple[list[str], list[str]]:
    text = _norm(as_text(_field(target, p.field)), p)
    found = [v for v in p.values if _norm(v, p) in text]
    return found, [v for v in p.values if v not in found]


@register("contains", ContainsParams)
def contains(target: EvalTarget, p: ContainsParams) -> Verdict:
    """The field contains the text(s); the score is the share of texts found."""
    found, missing = _found(target, p)
    share = len(found) / len(p.values)
    passed = not missing if p.match == "all" else bool(found)
    if passed:
        return Verdict(True, f"{p.field} contains {', '.join(map(clip, found))}", share)
    return Verdict(False, f"{p.field} lacks {', '.join(map(clip, missing))}", share)


@register("not_contains", NotContainsParams)
def not_contains(target: EvalTarget, p: NotContainsParams) -> Verdict:
    """The field contains none of the texts; the score is the share of texts absent."""
    found, missing = _found(target, p)
    share = len(missing) / len(p.values)
    if not found:
        return Verdict(True, f"{p.field} contains none of {', '.join(map(clip, p.values))}", share)
    return Verdict(False, f"{p.field} contains {', '.join(map(clip, found))}", share)


class RegexParams(Params):
    field: FieldPath = "output"
    pattern: str = Field(min_length=1, description="RE2 regular expression.")
    full_match: bool = Field(default=False, description="The whole field must match.")
    case_sensitive: bool = Field(default=True, description="Match case as well.")
    negate: bool = Field(default=False, description="Pass when the pattern does NOT match.")
    _compiled: Any = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _compile(self) -> RegexParams:
        options = re2.Options()
        options.log_errors = False
        options.case_sensitive = self.case_sensitive
        try:
            self._compiled = re2.compile(self.pattern, options)
        except re2.error as exc:
            reason = exc.args[0] if exc.args else "invalid"
            reason = reason.decode(errors="replace") if isinstance(reason, bytes) else reason
            raise ValueError(
                f"not an RE2 pattern ({reason}); RE2 has no backreferences or lookaround"
            ) from None
        return self


@register("regex", RegexParams)
def regex(target: EvalTarget, p: RegexParams) -> Verdict:
    """The field matches an RE2 pattern (linear time whatever the text)."""
    text = as_text(_field(target, p.field))
    m = p._compiled.fullmatch(text) if p.full_match else p._compiled.search(text)
    if m is not None:
        return Verdict(not p.negate, f"{p.field} matches /{p.pattern}/ at {clip(m.group(0))}")
    return Verdict(p.negate, f"{p.field} does not match /{p.pattern}/")


# -- JSON ---------------------------------------------------------------------------------------


class JsonValidParams(Params):
    field: FieldPath = "output"
    type: Literal["any", "object", "array"] = Field(
        default="any", description="Also require this JSON type."
    )


def _load(target: EvalTarget, path: str) -> Any:
    raw = _field(target, path)
    try:
        return parse_json(raw)
    except ValueError as exc:
        raise _NotJson(f"{path} is not JSON ({exc})") from None


class _NotJson(Exception):
    pass


@register("json_valid", JsonValidParams)
def json_valid(target: EvalTarget, p: JsonValidParams) -> Verdict:
    """The field is valid JSON (optionally an object or an array)."""
    try:
        value = _load(target, p.field)
    except _NotJson as exc:
        return Verdict(False, str(exc))
    want = {"object": dict, "array": list}.get(p.type)
    if want is not None and not isinstance(value, want):
        return Verdict(False, f"{p.field} is JSON but not an {p.type}")
    return Verdict(True, f"{p.field} is valid JSON")


class JsonSchemaParams(Params):
    field: FieldPath = "output"
    json_schema: dict[str, Any] = Field(
        alias="schema", description="JSON Schema (draft from its $schema; default 2020-12)."
    )
    _validator: Any = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _check(self) -> JsonSchemaParams:
        cls = validators.validator_for(self.json_schema, default=validators.Draft202012Validator)
        try:
            cls.check_schema(self.json_schema)
        except schema_errors.SchemaError as exc:
            raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
        self._validator = cls(self.json_schema)
        return self


@register("json_schema", JsonSchemaParams)
def json_schema(target: EvalTarget, p: JsonSchemaParams) -> Verdict:
    """The field is JSON that validates against a JSON Schema; the explanation names the
    first violation and where it is."""
    try:
        value = _load(target, p.field)
    except _NotJson as exc:
        return Verdict(False, str(exc))
    errors = sorted(p._validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    if not errors:
        return Verdict(True, f"{p.field} matches the schema")
    first = errors[0]
    where = "/".join(str(x) for x in first.absolute_path) or "(root)"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return Verdict(False, f"{p.field} at {where}: {first.message[:200]}{more}")


class JsonEqualParams(Params):
    field: FieldPath = "output"
    value: Any = Field(default=None, description="Expected JSON; default: the expected value.")
    ignore_keys: list[str] = Field(
        default_factory=list, description="Object keys left out of the comparison, at any depth."
    )


def _first_difference(got: Any, want: Any, path: str, ignore: set[str]) -> str | None:
    if isinstance(got, dict) and isinstance(want, dict):
        for key in sorted(set(got) | set(want)):
            if key in ignore:
                continue
            if key not in got:
                return f"{path}/{key} missing"
            if key not in want:
                return f"{path}/{key} unexpected"
            diff = _first_difference(got[key], want[key], f"{path}/{key}", ignore)
            if diff:
                return diff
        return None
    if isinstance(got, list) and isinstance(want, list):
        if len(got) != len(want):
            return f"{path or '(root)'} has {len(got)} items, expected {len(want)}"
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            diff = _first_difference(a, b, f"{path}/{i}", ignore)
            if diff:
                return diff
        return None
    same = type(got) is type(want) or (
        isinstance(got, int | float) and isinstance(want, int | float) and not
        isinstance(got, bool) and not isinstance(want, bool)
    )  # fmt: skip
    if same and got == want:
        return None
    return f"{path or '(root)'} is {clip(got, 40)}, expected {clip(want, 40)}"


@register("json_equal", JsonEqualParams)
def json_equal(target: EvalTarget, p: JsonEqualParams) -> Verdict:
    """The field, parsed as JSON, equals a JSON value (or the parsed expected value); object
    key order is ignored, list order is not."""
    want = _reference(target, p.value)
    if isinstance(want, str):
        with contextlib.suppress(ValueError):  # else a plain string, compared with a JSON one
            want = parse_json(want)
    try:
        got = _load(target, p.field)
    except _NotJson as exc:
        return Verdict(False, str(exc))
    diff = _first_difference(got, want, "", set(p.ignore_keys))
    if diff is None:
        return Verdict(True, f"{p.field} equals the expected JSON")
    return Verdict(False, diff)


# -- numbers and spans --------------------------------------------------------------------------

_NUMBER = re2.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


class NumericCloseParams(Params):
    field: FieldPath = "output"
    value: float | None = Field(default=None, description="Expected number; default: expected.")
    abs_tol: float = Field(default=0.0, ge=0, description="Absolute tolerance.")
    rel_tol: float = Field(default=1e-9, ge=0, description="Relative tolerance.")
    extract: bool = Field(default=False, description="Use the first number found in the text.")


def _number(value: Any, extract: bool, what: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = as_text(value).strip()
    if extract:
        m = _NUMBER.search(text)
        if m is None:
            raise _NotJson(f"{what} holds no number: {clip(text)}")
        text = m.group(0)
    try:
        number = float(text)
    except ValueError:
        raise _NotJson(f"{what} is not a number: {clip(text)}") from None
    if not math.isfinite(number):
        raise _NotJson(f"{what} is not a finite number: {clip(text)}")
    return number


@register("numeric_close", NumericCloseParams)
def numeric_close(target: EvalTarget, p: NumericCloseParams) -> Verdict:
    """The field is a number within ``abs_tol`` or ``rel_tol`` of a value (or of expected)."""
    try:
        got = _number(_field(target, p.field), p.extract, p.field)
    except _NotJson as exc:
        return Verdict(False, str(exc))
    want = _reference(target, p.value)
    try:
        want = _number(want, False, "the expected value")
    except _NotJson as exc:
        raise CannotEvaluate(str(exc)) from None
    if math.isclose(got, want, rel_tol=p.rel_tol, abs_tol=p.abs_tol):
        return Verdict(True, f"{p.field} {got:g} is close to {want:g}")
    return Verdict(False, f"{p.field} {got:g} differs from {want:g} by {abs(got - want):g}")


class LatencyUnderParams(Params):
    max_ms: float = Field(gt=0, description="Largest latency that passes, in milliseconds.")


def _wall_ms(spans: list[dict[str, Any]]) -> float:
    starts = [datetime.fromisoformat(str(s["start_time"]).rstrip("Z")) for s in spans]
    ends = [datetime.fromisoformat(str(s["end_time"]).rstrip("Z")) for s in spans]
    return (max(ends) - min(starts)).total_seconds() * 1000


@register("latency_under", LatencyUnderParams)
def latency_under(target: EvalTarget, p: LatencyUnderParams) -> Verdict:
    """The latency is under ``max_ms``: a span's own, a trace's root span's, a session's from
    its first start to its last end."""
    if target.kind == "session" and target.trace:
        latency = _wall_ms(target.trace)
    else:
        own = target.span.get("latency_ms")
        if own is None:
            raise CannotEvaluate("the target has no latency_ms")
        latency = float(own)
    if latency < p.max_ms:
        return Verdict(True, f"{latency:,.0f} ms < {p.max_ms:,.0f} ms")
    return Verdict(False, f"{latency:,.0f} ms ≥ {p.max_ms:,.0f} ms")


class TokenBudgetParams(Params):
    max_total: int | None = Field(default=None, ge=0, description="Most total tokens.")
    max_prompt: int | None = Field(default=None, ge=0, description="Most prompt tokens.")
    max_completion: int | None = Field(default=None, ge=0, description="Most completion tokens.")

    @model_validator(mode="after")
    def _some(self) -> TokenBudgetParams:
        if self.max_total is None and self.max_prompt is None and self.max_completion is None:
            raise ValueError("set at least one of max_total, max_prompt, max_completion")
        return self


@register("token_budget", TokenBudgetParams)
def token_budget(target: EvalTarget, p: TokenBudgetParams) -> Verdict:
    """Token counts summed over the LLM spans the target covers (a span and its descendants, a
    trace, a session) stay within the budget."""
    spans = target.covered_spans()
    llm = [s for s in spans if s.get("span_kind") == "LLM"] or spans
    sums = {"prompt": 0, "completion": 0, "total": 0}
    for s in llm:
        prompt, completion = s.get("prompt_tokens") or 0, s.get("completion_tokens") or 0
        sums["prompt"] += prompt
        sums["completion"] += completion
        sums["total"] += s.get("total_tokens") or (prompt + completion)
    limits = {"total": p.max_total, "prompt": p.max_prompt, "completion": p.max_completion}
    over = [f"{k} {sums[k]:,} > {v:,}" for k, v in limits.items() if v is not None and sums[k] > v]
    n = f"over {len(llm)} span{'s' * (len(llm) != 1)}"
    if over:
        return Verdict(False, f"{'; '.join(over)} tokens {n}")
    shown = "; ".join(f"{k} {sums[k]:,} ≤ {v:,}" for k, v in limits.items() if v is not None)
    return Verdict(True, f"{shown} tokens {n}")


class NoErrorParams(Params):
    scope: Literal["all", "root"] = Field(
        default="all",
        description="all: no covered span has status ERROR; root: only the target's own span.",
    )
    ignore_types: list[str] = Field(
        default_factory=list, description="Error types (exception types) that do not count."
    )


@register("no_error", NoErrorParams)
def no_error(target: EvalTarget, p: NoErrorParams) -> Verdict:
    """No span has status ERROR: every span the target covers, or only its own (root) span."""
    spans = [target.span] if p.scope == "root" else target.covered_spans()
    errors = [
        s
        for s in spans
        if s.get("status") == "ERROR" and (s.get("error_type") or "") not in p.ignore_types
    ]
    if not errors:
        return Verdict(True, f"no error in {len(spans)} span{'s' * (len(spans) != 1)}")
    first = errors[0]
    what = first.get("status_message") or first.get("error_type") or "ERROR"
    return Verdict(
        False,
        f"{len(errors)} error span{'s' * (len(errors) != 1)}; first {first.get('name')!r} "
        f"({first.get('span_id')}): {clip(what)}",
    )


# -- running and documenting ---------------------------------------------------------------------

toolcalls.register_all()

#: Every built-in evaluator by name.
BUILTINS: dict[str, Builtin] = REGISTRY


def get_builtin(name: str) -> Builtin:
    """The built-in evaluator ``name``; ``KeyError`` with the known names otherwise."""
    try:
        return BUILTINS[name]
    except KeyError:
        raise KeyError(f"unknown evaluator {name!r}; known: {', '.join(BUILTINS)}") from None


def evaluate_builtin(builtin: Builtin, params: Params, target: EvalTarget) -> EvalResult:
    """One target judged; a target the evaluator cannot judge, or an unexpected exception,
    gives an error result (no label, no score)."""
    started = time.perf_counter()
    result = EvalResult(target_kind=target.kind, target_id=target.id)
    try:
        verdict = builtin.check(target, params)
    except CannotEvaluate as exc:
        result.error = f"cannot_evaluate: {exc}"
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"[:500]
    else:
        result.label, result.score, result.explanation = (
            verdict.label,
            verdict.value,
            verdict.explanation,
        )
    result.duration_ms = (time.perf_counter() - started) * 1000
    return result


def _default(info: Any) -> str:
    if info.is_required():
        return "required"
    default = info.get_default(call_default_factory=True)
    return f"`{orjson.dumps(default).decode()}`" if default is not None else "none"


def reference_markdown() -> str:
    """The evaluators reference (README): one table row per parameter of every built-in."""
    lines = []
    for b in BUILTINS.values():
        lines += [f"#### `{b.name}`", "", b.summary, ""]
        lines += ["| parameter | default | meaning |", "| --- | --- | --- |"]
        for name, info in b.params.model_fields.items():
            shown = info.alias or name
            lines.append(f"| `{shown}` | {_default(info)} | {info.description or ''} |")
        lines.append("")
    return "\n".join(lines)
