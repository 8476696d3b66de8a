"""The tools agents see, in the order ``tools/list`` shows them.

Each tool is a plain function ``fn(store, **params) -> pydantic model``: its name is the tool's
name, its docstring the description, its keyword parameters (``Annotated[..., Field(...)]``) the
input schema and its return type the output schema. The MCP server, the CLI and the HTTP API
all call these same functions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from traceproof.tools import (
    aggregate,
    errors,
    evaluate,
    experiments,
    find,
    jqtool,
    preview,
    projects,
    spans,
    sql,
    traces,
    trajectory_diff,
)
from traceproof.tools import annotations as annotation_tools
from traceproof.tools import calibrate as calibrate_tools
from traceproof.tools import compare as compare_tools
from traceproof.tools import datasets as dataset_tools
from traceproof.tools import trajectories as trajectory_tools
from traceproof.tools import wrong_step as wrong_step_tools

#: Tool families (DESIGN.md's tool surface), the units a host asks for with ``--toolsets``
#: (``TRACEPROOF_TOOLSETS``): trace inspection, judgment (annotations, evaluators), proof
#: (datasets, experiments) and coding-agent trajectories. A family without tools yet is valid.
FAMILIES: tuple[str, ...] = ("inspect", "judgment", "proof", "trajectories")


@dataclass(frozen=True)
class ToolSpec:
    fn: Callable[..., BaseModel]
    read_only: bool = True
    family: str = "inspect"
    #: Reaches outside the store: an LLM (a judge, ``llm=true``) when asked.
    open_world: bool = False

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"tool {self.name}: unknown family {self.family!r}")

    @property
    def name(self) -> str:
        return self.fn.__name__


TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec(projects.list_projects),
    ToolSpec(traces.search_traces),
    ToolSpec(preview.get_trace_preview),
    ToolSpec(spans.get_span_data),
    ToolSpec(find.find_in_trace),
    ToolSpec(spans.search_spans),
    ToolSpec(jqtool.jq),
    ToolSpec(aggregate.aggregate),
    ToolSpec(sql.sql),
    ToolSpec(sql.describe_schema),
    ToolSpec(traces.get_session),
    ToolSpec(annotation_tools.annotate, read_only=False, family="judgment"),
    ToolSpec(annotation_tools.get_annotations, family="judgment"),
    ToolSpec(errors.categorize_errors, read_only=False, family="judgment", open_world=True),
    ToolSpec(evaluate.evaluate, read_only=False, family="judgment", open_world=True),
    ToolSpec(calibrate_tools.calibrate_judge, read_only=False, family="judgment", open_world=True),
    ToolSpec(dataset_tools.create_dataset, read_only=False, family="proof"),
    ToolSpec(dataset_tools.add_examples, read_only=False, family="proof"),
    ToolSpec(dataset_tools.list_datasets, family="proof"),
    ToolSpec(dataset_tools.get_dataset, family="proof"),
    # open_world: a task runs the application, which may call anything.
    ToolSpec(experiments.run_experiment, read_only=False, family="proof", open_world=True),
    ToolSpec(experiments.get_experiment, family="proof"),
    ToolSpec(experiments.cancel_experiment, read_only=False, family="proof"),
    # read_only=False: set_baseline=true writes the baseline.
    ToolSpec(compare_tools.compare_experiments, read_only=False, family="proof"),
    ToolSpec(trajectory_tools.get_trajectory, family="trajectories"),
    ToolSpec(trajectory_tools.trajectory_stats, family="trajectories"),
    ToolSpec(trajectory_diff.diff_trajectories, family="trajectories"),
    # read_only=False: write=true (the default) stores annotations; open_world: judge=true.
    ToolSpec(
        wrong_step_tools.find_first_wrong_step,
        read_only=False,
        family="trajectories",
        open_world=True,
    ),
)

TOOLS_BY_NAME: dict[str, ToolSpec] = {spec.name: spec for spec in TOOLS}


def select(toolsets: Iterable[str] | None = None) -> tuple[ToolSpec, ...]:
    """The tools of the families named in ``toolsets`` (None or empty: every tool), in registry
    order. An unknown family raises ``ValueError`` naming the known ones."""
    wanted = {name.strip().lower() for name in toolsets or () if name.strip()}
    if not wanted:
        return TOOLS
    unknown = sorted(wanted - set(FAMILIES))
    if unknown:
        raise ValueError(
            f"Unknown toolset {', '.join(map(repr, unknown))}. Known toolsets: "
            f"{', '.join(FAMILIES)}."
        )
    return tuple(spec for spec in TOOLS if spec.family in wanted)


def tool(name: str) -> ToolSpec:
    return TOOLS_BY_NAME[name]


def call(store: Any, name: str, arguments: dict[str, Any]) -> BaseModel:
    """Run tool ``name`` on ``store`` with keyword ``arguments`` (already validated)."""
    return TOOLS_BY_NAME[name].fn(store, **arguments)
