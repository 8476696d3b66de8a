"""Calling a registered tool by name with arguments from outside Python (JSON, the command line).

The MCP SDK validates a tool's arguments against its signature itself; the HTTP API and the CLI
call the same functions and must refuse the same bad input the same way. Each tool's keyword
parameters (``Annotated[T, Field(...)]``) become a pydantic model, built once per function:
unknown arguments are refused, constraints (``ge``/``le``, literals) apply, and a refusal is a
:class:`ToolFailure` with code ``invalid_argument`` whose message names each bad argument.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import cache
from typing import Any, get_type_hints

from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from pydantic_core import ErrorDetails

from traceproof.errors import ErrorCode, TraceproofError
from traceproof.tools.common import ToolFailure
from traceproof.tools.registry import TOOLS, TOOLS_BY_NAME, ToolSpec


class UnknownTool(TraceproofError):
    """A tool name that is not registered."""

    code = ErrorCode.NOT_FOUND

    def __init__(self, name: str) -> None:
        known = ", ".join(spec.name for spec in TOOLS)
        super().__init__(f"No tool {name[:80]!r}. Use one of: {known}.")


def tool_names() -> list[str]:
    """The registered tools, in the order ``tools/list`` shows them."""
    return [spec.name for spec in TOOLS]


def find_tool(name: str) -> ToolSpec:
    try:
        return TOOLS_BY_NAME[name]
    except KeyError:
        raise UnknownTool(name) from None


def validate_arguments(name: str, arguments: Any) -> dict[str, Any]:
    """``arguments`` checked and converted against tool ``name``'s parameters; only the ones
    given are returned, so the function's own defaults apply to the rest."""
    spec = find_tool(name)
    if not isinstance(arguments, dict):
        raise ToolFailure(
            f"The arguments of {name} must be a JSON object of named parameters, not "
            f"{type(arguments).__name__}. Send {{}} for none.",
            code=ErrorCode.INVALID_ARGUMENT,
        )
    model = arguments_model(spec.fn)
    try:
        checked = model.model_validate(arguments)
    except ValidationError as exc:
        raise ToolFailure(_explain(name, model, exc), code=ErrorCode.INVALID_ARGUMENT) from None
    return {key: getattr(checked, key) for key in checked.model_fields_set}


def run_tool(store: Any, name: str, arguments: Any) -> BaseModel:
    """Validate ``arguments`` and run tool ``name`` on ``store``."""
    checked = validate_arguments(name, arguments)
    return find_tool(name).fn(store, **checked)


@cache
def arguments_model(fn: Callable[..., BaseModel]) -> type[BaseModel]:
    """A pydantic model of ``fn``'s keyword parameters (everything after the store)."""
    hints = get_type_hints(fn, include_extras=True)
    fields: dict[str, Any] = {}
    for parameter in list(inspect.signature(fn).parameters.values())[1:]:
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        annotation = hints.get(parameter.name, Any)
        default = ... if parameter.default is parameter.empty else parameter.default
        fields[parameter.name] = (annotation, default)
    config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    return create_model(f"{fn.__name__}_arguments", __config__=config, **fields)


def _explain(name: str, model: type[BaseModel], exc: ValidationError) -> str:
    problems = [_problem(error) for error in exc.errors(include_url=False)[:5]]
    accepted = ", ".join(model.model_fields) or "none"
    return (
        f"Invalid arguments for {name}: {'; '.join(problems)}. "
        f"Fix them and call again (accepted arguments: {accepted})."
    )


def _problem(error: ErrorDetails) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "arguments"
    if error["type"] == "extra_forbidden":
        return f"unknown argument {where!r}"
    if error["type"] == "missing":
        return f"{where} is required"
    given = repr(error.get("input"))
    if len(given) > 60:
        given = given[:57] + "..."
    return f"{where}: {error['msg']} (got {given})"
