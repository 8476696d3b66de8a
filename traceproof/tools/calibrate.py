"""``calibrate_judge``: how far an LLM judge agrees with people, stored with its definition hash.

The judge is an ``[evaluators.NAME] kind = "judge"`` table of ``traceproof.toml`` (the project
root: the directory the server or the CLI runs in), else a judge definition the store recorded
under that name (``evaluator_definitions``: the demo's, or one a run stored). The people's labels
are the current ``HUMAN`` annotations of the given name. :func:`run_calibration`:

1. finds the targets people labelled (one label per target: the latest when several people did);
2. reuses the judge's verdicts of its *current* definition (annotator ``name@version``, see
   :func:`traceproof.evals.annotations.judge_annotator`) on them, and runs the judge
   (:func:`traceproof.evals.judge.judge` through :class:`~traceproof.evals.llm.LLMClient`) only
   on those without one (all of them with ``rerun``), writing its verdicts as ``LLM``
   annotations like every judge run;
3. computes the calibration (:func:`traceproof.evals.calibration.calibrate_definition`) with the
   thresholds of the settings, and stores it (:func:`traceproof.storage.judges.save_calibration`):
   a passing one makes the judge's results of that hash lose their ``uncalibrated`` mark.

The answer holds the whole report and as many disagreements as the budget allows; the rest page
from the stored calibration (no judging again).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationError

from traceproof.errors import ErrorCode, TraceproofError
from traceproof.evals.annotations import (
    AnnotationInput,
    AnnotatorKind,
    TargetKind,
    judge_annotator,
)
from traceproof.evals.calibration import (
    Disagreement,
    LabelStats,
    Pair,
    Thresholds,
    calibrate_definition,
)
from traceproof.evals.config import CONFIG_FILE, JudgeConfig, load_config
from traceproof.evals.judge import JudgeDefinition, JudgeTarget, Judgment
from traceproof.evals.judge import judge as run_judge
from traceproof.evals.llm import LLMClient
from traceproof.evals.target import targets_from_rows
from traceproof.settings import Settings
from traceproof.storage import Store
from traceproof.storage.annotations import target_spans, write_annotations
from traceproof.storage.judges import (
    Calibration as StoredCalibration,
)
from traceproof.storage.judges import (
    human_labels,
    judge_verdicts,
    list_calibrations,
    list_evaluator_definitions,
    save_calibration,
    save_evaluator_definition,
)
from traceproof.tools.common import (
    Cursor,
    MaxChars,
    ToolFailure,
    budget,
    clip,
    decode_cursor,
    encode_cursor,
    size,
)
from traceproof.tools.paging import largest_fit

__all__ = [
    "CalibrationReport",
    "calibrate_judge",
    "judge_definition",
    "report_of",
    "run_calibration",
]

#: Characters of each explanation kept with a disagreement (stored and shown).
EXPLANATION_CHARS = 300
#: Disagreements a stored calibration keeps (the report pages through them).
STORED_DISAGREEMENTS = 200
#: Kind under which judge definitions are stored in ``evaluator_definitions``.
JUDGE_KIND = "judge"

#: Builds the LLM client a run needs (tests and the demo pass one over a mock transport).
ClientFactory = Callable[[Settings], LLMClient]


class CalibrationReport(BaseModel):
    """A judge measured against people's labels, and the verdict stored with its hash."""

    judge: str
    definition_hash: str
    human: str
    calibration_id: str
    n: int = Field(description="Targets both people and the judge labelled.")
    reused: int = Field(default=0, description="Verdicts of this definition reused.")
    judged: int = Field(default=0, description="Verdicts made by this call.")
    errors: int = Field(default=0, description="Targets the judge failed on (left out).")
    error: str | None = Field(default=None, description="The first such error.")
    cost_usd: float | None = None
    labels: list[str]
    agreement: float | None
    kappa: float | None
    kappa_weights: str | None = None
    per_label: list[LabelStats]
    confusion: list[list[int]] = Field(description="Rows: people's labels; columns: judge's.")
    positive_label: str | None = None
    tpr: float | None = None
    tpr_95: list[float] | None = Field(default=None, description="95% Wilson interval.")
    tnr: float | None = None
    tnr_95: list[float] | None = None
    observed_positive_rate: float | None = Field(
        default=None, description="Judge's positive rate over all its verdicts."
    )
    corrected_positive_rate: float | None = Field(
        default=None, description="Rogan-Gladen corrected for its TPR and TNR."
    )
    thresholds: dict[str, float]
    passed: bool
    reasons: list[str] = Field(default_factory=list, description="Why it failed.")
    notes: list[str] = Field(default_factory=list)
    disagreements_total: int = 0
    disagreements: list[Disagreement] = Field(default_factory=list)
    truncated: bool = False
    next_cursor: str | None = None


def calibrate_judge(
    store: Store,
    *,
    judge: Annotated[str, Field(description="Judge evaluator (traceproof.toml).")],
    human: Annotated[str, Field(description="Name of people's annotations.")],
    target: Annotated[
        Literal["span", "trace", "session"] | None, Field(description="Only these targets.")
    ] = None,
    rerun: Annotated[bool, Field(description="Judge again.")] = False,
    cursor: Cursor = None,
    max_chars: MaxChars = None,
) -> CalibrationReport:
    """Measure an LLM judge against people's labels (agreement, kappa, TPR/TNR), judging
    where it has no verdict; stores pass/fail (until a pass its results say uncalibrated)."""
    chars = budget(max_chars, store.settings)
    definition = judge_definition(store, judge)
    key = f"{judge}\x00{definition.definition_hash}\x00{human}\x00{target}"
    if cursor is not None:
        stored, offset = _resume(store, cursor, key)
        return _fit(report_of(stored), chars, offset, key)
    stored = run_calibration(store, definition, human, target_kind=target, rerun=rerun)
    return _fit(report_of(stored), chars, 0, key)


# -- the judge --------------------------------------------------------------------------------


def judge_definition(store: Store, name: str) -> JudgeDefinition:
    """The judge ``name``: its table in traceproof.toml, else the newest judge definition of
    that name stored in the store; else ``[unknown_evaluator]`` (or ``[invalid_argument]`` for
    an evaluator that is not a judge)."""
    config = load_config()
    declared = config.evaluators.get(name)
    if declared is not None:
        if not isinstance(declared, JudgeConfig):
            raise ToolFailure(
                f"Evaluator {name!r} is a {declared.kind} evaluator, not an LLM judge: only a "
                f'judge (kind = "judge" in {CONFIG_FILE}) is calibrated. Name a judge.',
                code=ErrorCode.INVALID_ARGUMENT,
            )
        return JudgeDefinition.from_config(name, declared.table)
    with store.reader() as reader:
        stored = list_evaluator_definitions(reader, name, kind=JUDGE_KIND)
    if stored:
        try:
            return JudgeDefinition.model_validate(stored[0]["definition"])
        except ValidationError:
            pass  # a definition of another build: say it is unknown, as below
    with store.reader() as reader:
        recorded = sorted({d["name"] for d in list_evaluator_definitions(reader, kind=JUDGE_KIND)})
    try:
        config.evaluator(name)
    except TraceproofError as exc:
        extra = f" Judges the store recorded: {', '.join(recorded)}." if recorded else ""
        raise ToolFailure(exc.message + extra, code=ErrorCode.UNKNOWN_EVALUATOR) from None
    raise AssertionError("unreachable")  # pragma: no cover


# -- a run ------------------------------------------------------------------------------------


def _target_key(kind: str, target_id: str, trace_id: str | None) -> tuple[str, str, str | None]:
    return kind, target_id, trace_id if kind == TargetKind.SPAN else None


def _no_labels(store: Store, human: str, target_kind: str | None) -> ToolFailure:
    with store.reader() as reader:
        names = [
            row[0]
            for row in reader.rows(
                "SELECT name FROM annotations WHERE annotator_kind = 'HUMAN' AND label IS NOT "
                "NULL GROUP BY name ORDER BY count(*) DESC, name LIMIT 10"
            )
        ]
    kinds = f" on {target_kind}s" if target_kind else ""
    known = f" People labelled: {', '.join(names)}." if names else ""
    return ToolFailure(
        f"No targets{kinds} carry a label named {human!r} by a person (annotator kind HUMAN)."
        f"{known} Add labels with annotate(name={human!r}, label=..., annotator_kind='HUMAN', "
        f"ids=[...]), `traceproof annotate --name {human} --label ... --id ...`, or Phoenix's "
        "POST /v1/span_annotations with annotator_kind HUMAN; then call again.",
        code=ErrorCode.NOT_FOUND,
    )


def run_calibration(
    store: Store,
    definition: JudgeDefinition,
    human: str,
    *,
    target_kind: str | None = None,
    rerun: bool = False,
    client: ClientFactory = LLMClient,
    calibration_id: str = "",
) -> StoredCalibration:
    """Calibrate ``definition`` against the HUMAN labels named ``human`` (see the module
    docstring) and store the result; ``client`` builds the LLM client, only when some target
    has no verdict to reuse."""
    settings = store.settings
    digest = definition.definition_hash
    annotator = judge_annotator(definition.name, digest)
    save_evaluator_definition(
        store,
        hash=digest,
        name=definition.name,
        kind=JUDGE_KIND,
        definition=definition.model_dump(mode="json"),
    )
    with store.reader() as reader:
        people = human_labels(reader, human, target_kind=target_kind)
        verdicts = judge_verdicts(reader, annotator, definition.name)
    if not people:
        raise _no_labels(store, human, target_kind)
    if len(people) < settings.calibration_min_pairs:
        raise ToolFailure(
            f"Only {len(people)} targets carry a person's {human!r} label; a calibration needs "
            f"at least {settings.calibration_min_pairs} (setting calibration_min_pairs). Label "
            "more targets (annotate with annotator_kind='HUMAN'), then call again.",
            code=ErrorCode.INVALID_ARGUMENT,
        )
    found = {_target_key(v["target_kind"], v["target_id"], v["trace_id"]): v for v in verdicts}
    keys = [_target_key(p["target_kind"], p["target_id"], p["trace_id"]) for p in people]
    missing = [p for p, k in zip(people, keys, strict=True) if rerun or k not in found]
    judgments: dict[tuple[str, str, str | None], Judgment] = {}
    if missing:
        judgments = _judge(store, definition, missing, client, total=len(people))
    pairs: list[Pair] = []
    for person, k in zip(people, keys, strict=True):
        made = judgments.get(k)
        if made is not None:
            label, why = made.label, made.explanation
        elif k in found:
            label, why = found[k]["label"], found[k]["explanation"]
        else:
            label, why = None, None
        pairs.append(
            Pair(
                target_id=person["target_id"],
                human_label=person["label"],
                judge_label=label,
                human_explanation=clip(person["explanation"], EXPLANATION_CHARS)[0],
                judge_explanation=clip(why, EXPLANATION_CHARS)[0],
            )
        )
    with store.reader() as reader:
        population = [
            v["label"] for v in judge_verdicts(reader, annotator, definition.name) if v["label"]
        ]
    thresholds = Thresholds.from_settings(settings)
    result = calibrate_definition(
        definition,
        pairs,
        thresholds=thresholds,
        population=population,
        max_disagreements=STORED_DISAGREEMENTS,
    )
    if 0 < result.n < settings.calibration_min_pairs:
        result.reasons.append(
            f"only {result.n} pairs (needs ≥ {settings.calibration_min_pairs}, setting "
            "calibration_min_pairs)"
        )
        result.passed = False
    failed = [j for j in judgments.values() if j.error]
    costs = [j.cost_usd for j in judgments.values() if j.cost_usd is not None]
    metrics = result.model_dump(mode="json") | {
        "reused": len(people) - len(missing),
        "judged": len(judgments) - len(failed),
        "errors": len(failed),
        "error": failed[0].error if failed else None,
        "cost_usd": round(sum(costs), 6) if costs else None,
        "target_kind": target_kind,
    }
    return save_calibration(
        store,
        StoredCalibration(
            judge_name=definition.name,
            judge_hash=digest,
            human_name=human,
            n=result.n,
            metrics=metrics,
            passed=result.passed,
            thresholds=thresholds.model_dump() | {"min_pairs": settings.calibration_min_pairs},
            id=calibration_id,
        ),
    )


def _judge(
    store: Store,
    definition: JudgeDefinition,
    people: list[dict[str, Any]],
    client: ClientFactory,
    *,
    total: int,
) -> dict[tuple[str, str, str | None], Judgment]:
    """Judge the targets of ``people`` and write the verdicts; by target key."""
    try:
        llm = client(store.settings)
    except TraceproofError as exc:
        raise ToolFailure(
            f"{len(people)} of the {total} targets people labelled have no verdict of judge "
            f"{definition.name!r} (version {definition.definition_hash}) to reuse, and it "
            f"cannot run: {exc.message}",
            code=exc.code,
        ) from None
    targets: list[JudgeTarget] = []
    with store.reader() as reader:
        for person in people:
            rows = target_spans(
                reader,
                person["target_kind"],
                person["target_id"],
                trace_id=person["trace_id"] if person["target_kind"] == TargetKind.SPAN else None,
                project=person["project"],
            )
            made = targets_from_rows(rows, person["target_kind"]) if rows else []
            one = next((t for t in made if t.id == person["target_id"]), None)
            targets.append(
                JudgeTarget(
                    id=person["target_id"],
                    input=_text(one.input) if one else None,
                    output=_text(one.output) if one else None,
                    spans=rows,
                )
            )
    judgments = run_judge(definition, targets, llm)
    items = [
        AnnotationInput(
            target_kind=TargetKind(person["target_kind"]),
            target_id=person["target_id"],
            name=definition.name,
            label=made.label,
            score=made.score,
            explanation=made.explanation,
            metadata=_verdict_metadata(made),
            annotator_kind=AnnotatorKind.LLM,
            annotator=judge_annotator(definition.name, definition.definition_hash),
            trace_id=person["trace_id"] if person["target_kind"] == TargetKind.SPAN else None,
            project=person["project"],
        )
        for person, made in zip(people, judgments, strict=True)
        if made.label is not None
    ]
    if items:
        write_annotations(store, items, partial=True)
    return {
        _target_key(p["target_kind"], p["target_id"], p["trace_id"]): j
        for p, j in zip(people, judgments, strict=True)
    }


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) or value is None else str(value)


def _verdict_metadata(judgment: Judgment) -> dict[str, Any]:
    """What a verdict's annotation keeps beside its label: the full definition hash, the
    evidence and its flags, the model and what the call cost."""
    meta: dict[str, Any] = {
        "definition_hash": judgment.definition_hash,
        "model": judgment.model,
        "input_tokens": judgment.input_tokens,
        "output_tokens": judgment.output_tokens,
        "cost_usd": judgment.cost_usd,
        "evidence": [e.model_dump(exclude_defaults=True) for e in judgment.evidence],
        "flags": judgment.flags,
    }
    return {k: v for k, v in meta.items() if v not in (None, [])}


# -- the answer -------------------------------------------------------------------------------


def _rounded(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def _interval(value: Any) -> list[float] | None:
    if not isinstance(value, dict):
        return None
    return [round(float(value["low"]), 4), round(float(value["high"]), 4)]


def report_of(stored: StoredCalibration) -> CalibrationReport:
    """The report of a stored calibration, every disagreement it kept."""
    m = stored.metrics
    per_label = [
        LabelStats(**{k: _rounded(v) for k, v in row.items()}) for row in m.get("per_label", [])
    ]
    return CalibrationReport(
        judge=stored.judge_name,
        definition_hash=stored.judge_hash,
        human=stored.human_name,
        calibration_id=stored.id,
        n=stored.n,
        reused=m.get("reused", 0),
        judged=m.get("judged", 0),
        errors=m.get("errors", 0),
        error=m.get("error"),
        cost_usd=m.get("cost_usd"),
        labels=m.get("labels", []),
        agreement=_rounded(m.get("agreement")),
        kappa=_rounded(m.get("kappa")),
        kappa_weights=m.get("kappa_weights"),
        per_label=per_label,
        confusion=m.get("confusion", []),
        positive_label=m.get("positive_label"),
        tpr=_rounded(m.get("tpr")),
        tpr_95=_interval(m.get("tpr_interval")),
        tnr=_rounded(m.get("tnr")),
        tnr_95=_interval(m.get("tnr_interval")),
        observed_positive_rate=_rounded(m.get("observed_positive_rate")),
        corrected_positive_rate=_rounded(m.get("corrected_positive_rate")),
        thresholds={k: float(v) for k, v in stored.thresholds.items()},
        passed=stored.passed,
        reasons=m.get("reasons", []),
        notes=m.get("notes", []),
        disagreements_total=m.get("disagreements_total", 0),
        disagreements=[Disagreement(**d) for d in m.get("disagreements", [])],
    )


def _fit(report: CalibrationReport, chars: int, offset: int, key: str) -> CalibrationReport:
    """``report`` with the disagreements from ``offset`` that fit in ``chars``."""
    rest = report.disagreements[offset:]

    def build(n: int) -> CalibrationReport:
        more = offset + n < len(report.disagreements)
        return report.model_copy(
            update={
                "disagreements": rest[:n],
                "truncated": more or report.disagreements_total > len(report.disagreements),
                "next_cursor": (
                    encode_cursor("calibrate_judge", key, [report.calibration_id, offset + n])
                    if more
                    else None
                ),
            }
        )

    fitted = build(largest_fit(build, len(rest), chars))
    over = size(fitted) - chars
    if over > 0 and fitted.disagreements:
        # The one disagreement that moves paging on: its explanations cut to fit.
        first = fitted.disagreements[0]
        human, judge = first.human_explanation or "", first.judge_explanation or ""
        keep = max(0, (len(human) + len(judge) - over - 16) // 2)
        shorter = first.model_copy(
            update={
                "human_explanation": _cut(human, keep),
                "judge_explanation": _cut(judge, keep),
            }
        )
        fitted = fitted.model_copy(update={"disagreements": [shorter]})
    while size(fitted) > chars and (fitted.notes or fitted.reasons):
        field = "notes" if fitted.notes else "reasons"
        fitted = fitted.model_copy(update={field: getattr(fitted, field)[:-1]})
    return fitted


def _cut(text: str, keep: int) -> str | None:
    if len(text) <= keep:
        return text or None
    return text[: max(0, keep - 1)] + "…" if keep > 1 else None


def _resume(store: Store, cursor: str, key: str) -> tuple[StoredCalibration, int]:
    found = decode_cursor(cursor, "calibrate_judge", key)
    if len(found) != 2 or not isinstance(found[0], str) or not isinstance(found[1], int):
        raise ToolFailure(
            "This cursor belongs to other arguments. Repeat the call's arguments with it, or "
            "omit cursor to calibrate again.",
            code=ErrorCode.INVALID_CURSOR,
        )
    with store.reader() as reader:
        stored = list_calibrations(reader, calibration_id=found[0])
    if not stored:
        raise ToolFailure(
            "The calibration this cursor pages is gone. Omit cursor to calibrate again.",
            code=ErrorCode.INVALID_CURSOR,
        )
    return stored[0], found[1]
