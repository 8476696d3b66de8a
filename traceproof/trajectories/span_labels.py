"""Action labels for coding-agent tool spans that arrive as plain spans (Phoenix's span route),
not through a transcript reader: the same rules as :func:`~traceproof.trajectories.actions.
label_trace`, applied to the ``TOOL`` spans whose ``tool.name`` the rules know (``Read``,
``Bash``, ``apply_patch``…). Other spans are left as they came.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from traceproof.trajectories.action_rules import EDITORS, SHELLS, TOOLS, ActionRules
from traceproof.trajectories.actions import label_trace
from traceproof.trajectories.common import STEP, StepSpan

#: The attributes a label writes (``trajectory.*``).
_PREFIX = "trajectory."


@dataclass(slots=True)
class PlainSpan:
    """What labelling needs of one span: its flat attributes are updated in place."""

    trace_id: str
    span_id: str
    kind: str
    start_ns: int
    end_ns: int
    status: str
    status_message: str | None
    attributes: dict[str, Any]


def is_coding_tool(name: str, rules: ActionRules | None = None) -> bool:
    """Whether the action rules know tool ``name`` (an MCP tool's own name counts)."""
    low = name.strip().lower()
    short = low.rsplit("__", 1)[-1] if low.startswith("mcp__") else low
    known = rules.tools if rules is not None else {}
    return (
        any(n in TOOLS or n in SHELLS or n in EDITORS or n in known for n in (low, short))
        or short == "apply_patch"
    )


def label_tool_spans(spans: Iterable[PlainSpan], rules: ActionRules | None = None) -> int:
    """Label the coding-agent TOOL spans of ``spans`` (any traces, any order), in place;
    returns how many were labelled. Steps are not numbered (``trajectory.step``): the spans of
    a trace may arrive in several requests, and are ordered by time instead."""
    by_trace: dict[str, list[tuple[PlainSpan, StepSpan]]] = {}
    for span in spans:
        name = span.attributes.get("tool.name")
        if span.kind != "TOOL" or not isinstance(name, str) or not is_coding_tool(name, rules):
            continue
        step = StepSpan(
            span.trace_id,
            span.span_id,
            None,
            name,
            "TOOL",
            span.start_ns,
            span.end_ns,
            "ERROR" if span.status == "ERROR" else "OK",
            span.status_message,
            {k: v for k, v in span.attributes.items() if k in _READ},
        )
        by_trace.setdefault(span.trace_id, []).append((span, step))
    for pairs in by_trace.values():
        label_trace([step for _, step in pairs], rules)
        for span, step in pairs:
            for key, value in step.attributes.items():
                if key.startswith(_PREFIX) and key != STEP and key not in span.attributes:
                    span.attributes[key] = value
    return sum(len(pairs) for pairs in by_trace.values())


_READ = frozenset({"tool.name", "input.value", "output.value"})
