"""``compare_experiments``: a candidate experiment against its baseline, and the gate's verdict.

The baseline is an experiment id (or name), or ``auto`` (the default): the stored baseline of the
candidate's (task, dataset) (``experiment_baselines``). ``set_baseline=true`` makes the candidate
that baseline after comparing when the verdict is ``pass`` (else ``baseline_set`` says the
baseline was kept and why); with no baseline stored yet, or with the candidate as its own
``baseline``, it only sets it, without comparing (how a person or an agent moves the baseline
on purpose). A separate tool would cost every agent turn more than one boolean parameter does.
A name that several experiments carry is refused listing their ids (names are labels).

The answer is the comparison object of :mod:`traceproof.experiments.compare` with the verdict of
:mod:`traceproof.experiments.gate`; its examples are the changed ones (regressed first, then
mixed, improved, flaky; unchanged examples are counted, not listed), with previews clipped to
:data:`PREVIEW_CHARS`, as many as the budget holds (``examples_listed``; ``examples_changed``
over every page), the rest paged by cursor.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field

from traceproof.errors import ErrorCode
from traceproof.evals.annotations import judge_version_of
from traceproof.experiments.compare import (
    Comparison,
    ExampleComparison,
    ExperimentData,
    compare,
    reference,
)
from traceproof.experiments.gate import evaluate_gate, parse_gate
from traceproof.storage import Store
from traceproof.storage.comparison import (
    example_inputs,
    experiment_runs,
    find_experiments,
    get_baseline,
    recent_experiments,
    run_scores,
    score_directions,
    set_baseline,
)
from traceproof.storage.judges import calibration_states
from traceproof.storage.reader import Reader
from traceproof.tools.common import (
    Cursor,
    MaxChars,
    ToolFailure,
    budget,
    decode_cursor,
    encode_cursor,
    size,
)
from traceproof.tools.paging import largest_fit

__all__ = [
    "ComparisonAnswer",
    "answer_of",
    "compare_experiments",
    "comparison_for",
    "load_experiment",
]

#: Experiments of one name listed when a name is ambiguous.
NAME_MATCHES = 10
#: Characters of each input and output preview in the tool's answer.
PREVIEW_CHARS = 300
#: What the answer says about previews and unchanged examples.
PREVIEW_NOTE = (
    "Previews are clipped to {chars} characters: a run's full output is "
    "sql(\"SELECT output FROM experiment_runs WHERE id = '<run id>'\"); open a trace with "
    "get_trace_preview."
)


class ComparisonAnswer(Comparison):
    """The comparison, its verdict, and the changed examples that fit."""

    examples_listed: int = Field(default=0, description="Examples in this answer.")
    examples_changed: int = Field(default=0, description="Changed examples (all pages).")
    examples_unchanged: int | None = Field(default=None, description="Not listed.")
    baseline_set: str | None = Field(default=None, description="What set_baseline did.")
    truncated: bool = False
    next_cursor: str | None = None


def compare_experiments(
    store: Store,
    *,
    candidate: Annotated[str, Field(description="Experiment id or name.")],
    baseline: Annotated[
        str | None,
        Field(description='Experiment id, or "auto": the stored baseline.'),
    ] = None,
    gate: Annotated[
        str | None,
        Field(description="Rules, e.g. no_regressions,min:correct>=0.9"),
    ] = None,
    set_baseline: Annotated[
        bool, Field(description="Make candidate the baseline on pass.")
    ] = False,
    cursor: Cursor = None,
    max_chars: MaxChars = None,
) -> ComparisonAnswer:
    """Compare an experiment with its baseline per example, regressions first, and apply a
    gate: pass/fail/inconclusive with reasons."""
    chars = budget(max_chars, store.settings)
    spec = gate or store.settings.gate_default
    parse_gate(spec)  # a bad spec is refused before any work
    offset = 0
    key = f"{candidate}\x00{baseline or 'auto'}\x00{spec}"
    if cursor is not None:
        found = decode_cursor(cursor, "compare_experiments", key)
        if len(found) != 1 or not isinstance(found[0], int) or found[0] < 0:
            raise ToolFailure(
                "This cursor belongs to other arguments. Repeat the call's arguments with it, "
                "or omit cursor to start again.",
                code=ErrorCode.INVALID_CURSOR,
            )
        offset = found[0]
        set_baseline = False  # the first page did it
    if set_baseline:
        with store.reader() as reader:
            row = _experiment(reader, candidate)
            stored = get_baseline(reader, row["task"], row["dataset_id"])
            itself = (
                baseline not in (None, "auto") and _experiment(reader, baseline)["id"] == row["id"]
            )
        if itself or (baseline in (None, "auto") and stored in (None, row["id"])):
            done = _promote(store, row)
            return ComparisonAnswer(candidate=reference(row), baseline_set=done, notes=[done])
    comparison = comparison_for(store, candidate, baseline, spec, preview_chars=PREVIEW_CHARS)
    answer = answer_of(comparison)
    if set_baseline:
        answer.baseline_set = _promote_on_pass(store, comparison)
    if answer.examples:
        answer.notes.append(PREVIEW_NOTE.format(chars=PREVIEW_CHARS))
    return _fit(answer, answer.examples, offset, chars, key)


def answer_of(comparison: Comparison) -> ComparisonAnswer:
    """The answer of ``comparison`` with every changed example (unchanged ones counted):
    what every page of ``compare_experiments`` holds together, and the CLI's ``--json``."""
    if isinstance(comparison, ComparisonAnswer):
        answer = comparison.model_copy(update={"truncated": False, "next_cursor": None})
    else:
        answer = ComparisonAnswer(**{k: getattr(comparison, k) for k in Comparison.model_fields})
        changed = [x for x in answer.examples if x.change != "unchanged"]
        answer.examples = changed
        answer.examples_changed = len(changed)
        answer.examples_unchanged = (len(comparison.examples) - len(changed)) or None
    answer.examples_listed = len(answer.examples)
    return answer


def _fit(
    answer: ComparisonAnswer,
    changed: list[ExampleComparison],
    offset: int,
    chars: int,
    key: str,
) -> ComparisonAnswer:
    """``answer`` with the changed examples from ``offset`` that fit in ``chars``: when even
    none fit, the provenance, the operational deltas, evaluators, then the checks that passed
    are left out (the verdict and its reasons stay)."""
    rest = changed[offset:]

    def build(n: int, base: ComparisonAnswer | None = None) -> ComparisonAnswer:
        more = offset + n < len(changed)
        return (base or answer).model_copy(
            update={
                "examples": rest[:n],
                "examples_listed": n,
                "truncated": more,
                "next_cursor": (
                    encode_cursor("compare_experiments", key, [offset + n]) if more else None
                ),
            }
        )

    if size(build(0)) > chars:
        answer = _shrink(answer, lambda a: size(build(0, a)) > chars)
    n = largest_fit(build, len(rest), chars) if rest else 0
    if n == 1 and size(build(1)) > chars:  # one example always goes out: its previews cut
        bare = rest[0].model_copy(
            update={"input_preview": None, "baseline_output": None, "candidate_output": None}
        )
        rest = [bare, *rest[1:]]
    return build(n)


def _shrink(
    answer: ComparisonAnswer, too_big: Callable[[ComparisonAnswer], bool]
) -> ComparisonAnswer:
    note = "max_chars too small: parts left out."
    answer = answer.model_copy(deep=True, update={"notes": [note]})
    for ref in (answer.baseline, answer.candidate):
        if ref is not None:  # the id and status; get_experiment has the rest
            ref.provenance, ref.name, ref.task, ref.dataset_id = {}, None, None, None
            ref.dataset_version = ref.created_at = None
    if too_big(answer):
        answer.operational = []
    while answer.evaluators and too_big(answer):
        answer.evaluators = answer.evaluators[:-1]
    if answer.verdict is not None and too_big(answer):
        answer.verdict.checks = [c for c in answer.verdict.checks if c.status != "pass"]
    return answer


def _promote_on_pass(store: Store, comparison: Comparison) -> str:
    """Make the candidate the baseline when the verdict is ``pass``; else what was kept, why,
    and how to set it anyway."""
    assert comparison.verdict is not None and comparison.baseline is not None
    cand = comparison.candidate
    if comparison.verdict.status == "pass":
        return _promote(store, {"task": cand.task, "dataset_id": cand.dataset_id, "id": cand.id})
    return (
        f"Baseline kept: {comparison.baseline.id} (the verdict is {comparison.verdict.status}; "
        f"set_baseline makes the candidate the baseline only on pass). To make it the baseline "
        f"anyway: compare_experiments(candidate={cand.id!r}, baseline={cand.id!r}, "
        "set_baseline=true)."
    )


def _promote(store: Store, row: dict[str, Any]) -> str:
    task, dataset, exp = str(row["task"]), str(row["dataset_id"]), str(row["id"])
    before = set_baseline(store, task, dataset, exp)
    was = f" (was {before})" if before and before != exp else ""
    return f"{exp} is the baseline of task {task!r} on dataset {dataset}{was}."


# -- loading ----------------------------------------------------------------------------------


def _experiment(reader: Reader, id_or_name: str) -> dict[str, Any]:
    """The experiment of this id or name; ``[invalid_argument]`` listing the ids when a name
    is several experiments' (names are labels, nothing is picked silently)."""
    found = find_experiments(reader, id_or_name, NAME_MATCHES)
    if len(found) > 1:
        ids = ", ".join(str(r["id"]) for r in found)
        more = "+" if len(found) == NAME_MATCHES else ""
        raise ToolFailure(
            f"{id_or_name[:120]!r} names {len(found)}{more} experiments: {ids} (newest first). "
            "Pass "
            "one of their ids.",
            code=ErrorCode.INVALID_ARGUMENT,
        )
    row = found[0] if found else None
    if row is None:
        recent = recent_experiments(reader)
        known = "; ".join(f"{r['id']} ({r['task']}, {r['status']})" for r in recent) or "none yet"
        raise ToolFailure(
            f"No experiment {id_or_name[:120]!r}. Recent experiments: {known}. Run one with "
            "run_experiment, or pass an id from get_experiment.",
            code=ErrorCode.NOT_FOUND,
        )
    return row


def load_experiment(reader: Reader, row: dict[str, Any]) -> ExperimentData:
    """An experiment's runs and scores, with the evaluators whose judge is uncalibrated (its
    annotations' judge version, or the recorded definition hash, has no passing
    calibration)."""
    exp_id = str(row["id"])
    data = ExperimentData(experiment=dict(row), runs=experiment_runs(reader, exp_id), scores=[])
    data.scores = run_scores(reader, exp_id)
    versions: dict[str, set[str]] = {}
    for score in data.scores:
        version = judge_version_of(str(score["annotator_kind"]), str(score["annotator"]))
        if version:
            versions.setdefault(str(score["name"]), set()).add(version)
    recorded = row.get("evaluators")
    for item in recorded if isinstance(recorded, list) else []:
        if isinstance(item, dict) and item.get("kind") == "judge" and item.get("name"):
            name = str(item["name"])
            if item.get("hash") and name not in versions:
                versions.setdefault(name, set()).add(str(item["hash"]))
            elif item.get("calibrated") is False and name not in versions:
                data.uncalibrated.add(name)
    states = calibration_states(reader, {v for found in versions.values() for v in found})
    for name, found in versions.items():
        if not all(states.get(v, False) for v in found):
            data.uncalibrated.add(name)
    return data


def comparison_for(
    store: Store,
    candidate: str,
    baseline: str | None = None,
    gate: str | None = None,
    *,
    preview_chars: int = PREVIEW_CHARS,
) -> Comparison:
    """The whole comparison of ``candidate`` with ``baseline`` (id, name, or None/"auto": the
    stored baseline of its task and dataset) and the verdict of ``gate`` (default: the
    ``gate_default`` setting). Every example, unchanged ones too."""
    settings = store.settings
    spec = gate or settings.gate_default
    parse_gate(spec)
    with store.reader() as reader:
        cand = _experiment(reader, candidate)
        if baseline in (None, "auto"):
            found = get_baseline(reader, str(cand["task"]), str(cand["dataset_id"]))
            if found is None:
                recent = [
                    r["id"]
                    for r in recent_experiments(
                        reader, task=str(cand["task"]), dataset_id=str(cand["dataset_id"])
                    )
                    if r["id"] != cand["id"]
                ]
                known = f" Earlier experiments: {', '.join(recent)}." if recent else ""
                raise ToolFailure(
                    f"No baseline is set for task {cand['task']!r} on dataset "
                    f"{cand['dataset_id']}.{known} Pass baseline=<experiment id>, or make one "
                    "the baseline: compare_experiments(candidate=<its id>, set_baseline=true).",
                    code=ErrorCode.NOT_FOUND,
                )
            baseline = found
        base = _experiment(reader, baseline)
        if base["id"] == cand["id"]:
            raise ToolFailure(
                f"The candidate {cand['id']} is its own baseline: there is nothing to compare. "
                "Run the changed application as a new experiment (run_experiment) and compare "
                "that, or pass another baseline.",
                code=ErrorCode.INVALID_ARGUMENT,
            )
        base_data = load_experiment(reader, base)
        cand_data = load_experiment(reader, cand)
        names = {str(s["name"]) for s in (*base_data.scores, *cand_data.scores)}
        names |= set(base_data.evaluator_names()) | set(cand_data.evaluator_names())
        directions = score_directions(reader, names)
        shared = {str(r["example_id"]) for r in base_data.runs} & {
            str(r["example_id"]) for r in cand_data.runs
        }
        inputs = example_inputs(reader, {str(base["dataset_id"]), str(cand["dataset_id"])}, shared)
    comparison = compare(
        base_data,
        cand_data,
        inputs=inputs,
        directions=directions,
        alpha=settings.compare_alpha,
        power=settings.compare_power,
        resamples=settings.compare_bootstrap_resamples,
        preview_chars=preview_chars,
    )
    if (base["task"], base["dataset_id"]) != (cand["task"], cand["dataset_id"]):
        comparison.notes.append(
            f"The experiments differ in task or dataset (baseline: {base['task']} on "
            f"{base['dataset_id']}; candidate: {cand['task']} on {cand['dataset_id']}): only "
            "examples of the same content are compared."
        )
    comparison.verdict = evaluate_gate(comparison, spec, alpha=settings.compare_alpha)
    return comparison
