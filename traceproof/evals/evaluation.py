"""An evaluation run: one evaluator over chosen targets, its verdicts written as annotations.

The library both ``evaluate`` and the experiments use:

- :func:`prepare` turns a definition from ``traceproof.toml`` into a :class:`Prepared`
  evaluator: its annotation ``name`` (the evaluator's name), its ``annotator``
  (``name@version``; a judge's version is the first 12 hex digits of its definition hash), its
  annotator kind (``CODE`` for built-in and custom code, ``LLM`` for a judge) and the hash its
  stored definition is kept under.
- :func:`plan` splits the targets into those this exact version already judged (skipped: their
  stored verdicts count in the summary, nothing is run or written) and those to run.
- :func:`run` runs the evaluator over the rest in chunks (the spans a chunk covers are read
  once, its results written as one transaction per batch as soon as the batch is judged), so a
  run that stops halfway keeps what it did and running it again resumes. Custom code runs in
  child processes kept for the whole run; a judge calls the model through :mod:`.llm`.

How results are stored (one annotation per target, key (target, name, annotator, ``""``)):

- a verdict: ``label``, ``score``, ``explanation``; ``metadata`` holds what the evaluator added
  (a judge's ``definition_hash``, ``model``, tokens, ``cost_usd``, ``latency_ms``,
  ``evidence``, ``flags``, ``unsupported_quotes``);
- an error (the evaluator raised, timed out, could not judge, or its answer was malformed or
  refused by the annotation's config): no label and no score, the error text as
  ``explanation`` and ``metadata.error`` its kind (``cannot_evaluate``, ``timeout``,
  ``llm_failed``…). An error is not a verdict: a re-run tries that target again, and a verdict
  then replaces the error (which stays in the annotation's history). The same error again
  changes nothing.
"""

from __future__ import annotations

import queue
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from traceproof.errors import ErrorCode, TraceproofError
from traceproof.evals.annotations import (
    AnnotationInput,
    AnnotatorKind,
    TargetKind,
    hash_version,
    judge_annotator,
)
from traceproof.evals.builtin import BUILTINS, evaluate_builtin
from traceproof.evals.config import (
    BuiltinEvaluatorConfig,
    CodeEvaluatorConfig,
    EvaluatorDefinition,
    JudgeConfig,
)
from traceproof.evals.custom import CodeEvaluator
from traceproof.evals.judge import JudgeDefinition, JudgeTarget, Judgment, judge
from traceproof.evals.llm import LLMClient
from traceproof.evals.runner import BUILTIN_CHUNK, BatchEvaluator, run_evaluator
from traceproof.evals.target import EvalResult, EvalTarget, targets_from_rows
from traceproof.settings import Settings
from traceproof.storage import Store
from traceproof.storage.annotations import AnnotationWrite, write_annotations
from traceproof.storage.evaluations import session_trace_ids, stored_verdicts, trace_rows

__all__ = [
    "Plan",
    "Prepared",
    "Tally",
    "TargetJudge",
    "TargetRef",
    "annotation_for",
    "plan",
    "prepare",
    "run",
]

#: Example target ids kept per label, and error examples kept.
EXAMPLES = 3
#: Characters of an error message kept in a summary.
ERROR_CHARS = 300
_ERROR_KIND = re.compile(r"^\[(\w+)\]|^(\w+):")

Key = tuple[str, str]


@dataclass(frozen=True)
class TargetRef:
    """A chosen target: its kind, id and project, and for a span its trace."""

    kind: str
    id: str
    project: str
    trace_id: str | None = None

    @property
    def key(self) -> Key:
        """``(trace_id, span_id)`` for a span, ``(project, id)`` for a trace or session."""
        return (self.trace_id or "", self.id) if self.kind == "span" else (self.project, self.id)


def _key_of(target: EvalTarget) -> Key:
    if target.kind == "span":
        return (target.trace_id or "", target.id)
    return (target.project or "", target.id)


@dataclass(frozen=True)
class Prepared:
    """An evaluator ready to run (see the module docstring)."""

    name: str
    kind: str
    version: str
    annotator: str
    definition_hash: str
    annotator_kind: AnnotatorKind
    config: EvaluatorDefinition
    judge: JudgeDefinition | None = None

    def stored_definition(self) -> dict[str, Any]:
        """What :func:`~traceproof.storage.annotations.save_evaluator_definition` keeps."""
        if self.judge is not None:
            return self.judge.model_dump(mode="json")
        return {"kind": self.kind, "table": self.config.table}


def prepare(definition: EvaluatorDefinition) -> Prepared:
    """The evaluator of ``definition``; a judge's table is checked here
    (``[invalid_argument]`` naming what is wrong)."""
    if isinstance(definition, JudgeConfig):
        judge_definition = JudgeDefinition.from_config(definition.name, definition.table)
        digest = judge_definition.definition_hash
        return Prepared(
            name=definition.name,
            kind="judge",
            version=hash_version(digest),
            annotator=judge_annotator(definition.name, digest),
            definition_hash=digest,
            annotator_kind=AnnotatorKind.LLM,
            config=definition,
            judge=judge_definition,
        )
    return Prepared(
        name=definition.name,
        kind=definition.kind,
        version=definition.version,
        annotator=definition.annotator,
        definition_hash=definition.content_hash,
        annotator_kind=AnnotatorKind.CODE,
        config=definition,
    )


# -- the summary ------------------------------------------------------------------------------


@dataclass
class Tally:
    """What a run found so far (thread-safe; :meth:`snapshot` reads it consistently)."""

    labels: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    score_sum: float = 0.0
    scored: int = 0
    errors: int = 0
    error_examples: list[tuple[str, str]] = field(default_factory=list)
    written: int = 0
    skipped: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    cost_notes: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _verdict(self, target_id: str, label: str | None, score: float | None) -> None:
        shown = label if label is not None else "(none)"
        self.labels[shown] += 1
        picks = self.examples.setdefault(shown, [])
        if len(picks) < EXAMPLES:
            picks.append(target_id)
        if score is not None:
            self.score_sum += score
            self.scored += 1

    def _error(self, target_id: str, message: str) -> None:
        self.errors += 1
        if len(self.error_examples) < EXAMPLES:
            self.error_examples.append((target_id, message[:ERROR_CHARS]))

    def add_stored(self, verdicts: Iterable[tuple[str, str | None, float | None]]) -> None:
        """Verdicts this version already stored (skipped targets)."""
        with self._lock:
            for target_id, label, score in verdicts:
                self.skipped += 1
                self._verdict(target_id, label, score)

    def add(
        self, results: Sequence[EvalResult], written: AnnotationWrite, *, usage: bool = False
    ) -> None:
        """Results and what writing them did; ``usage``: count a judge's tokens and cost."""
        rejected = {r.index: f"[{r.code}] {r.message}" for r in written.rejected}
        with self._lock:
            self.written += written.created + written.updated
            for index, result in enumerate(results):
                if usage:
                    self._usage(result.metadata)
                if result.error is not None:
                    self._error(result.target_id, result.error)
                elif index in rejected:
                    self._error(result.target_id, rejected[index])
                else:
                    self._verdict(result.target_id, result.label, result.score)

    def _usage(self, usage: dict[str, Any]) -> None:
        self.input_tokens += int(usage.get("input_tokens") or 0)
        self.output_tokens += int(usage.get("output_tokens") or 0)
        if usage.get("cost_usd") is not None:
            self.cost_usd = (self.cost_usd or 0.0) + float(usage["cost_usd"])
        if usage.get("cost_note"):
            self.cost_notes.add(str(usage["cost_note"]))

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "labels": dict(self.labels.most_common()),
                "examples": {k: list(v) for k, v in self.examples.items()},
                "mean_score": self.score_sum / self.scored if self.scored else None,
                "errors": self.errors,
                "error_examples": list(self.error_examples),
                "written": self.written,
                "skipped": self.skipped,
                "input_tokens": self.input_tokens,
                "output_tokens": self.output_tokens,
                "cost_usd": self.cost_usd,
                "cost_notes": sorted(self.cost_notes),
            }


# -- planning ---------------------------------------------------------------------------------


@dataclass
class Plan:
    """The targets to run, and the verdicts of the skipped ones, by target."""

    todo: list[TargetRef]
    stored: dict[Key, tuple[str | None, float | None]]


def plan(store: Store, prepared: Prepared, refs: Sequence[TargetRef], kind: str) -> Plan:
    """Which of ``refs`` (all of one ``kind``) still need this version's verdict."""
    with store.reader() as reader:
        verdicts = stored_verdicts(
            reader, target_kind=kind, name=prepared.name, annotator=prepared.annotator
        )
    stored = {r.key: verdicts[r.key] for r in refs if r.key in verdicts}
    return Plan(todo=[r for r in refs if r.key not in stored], stored=stored)


# -- running ----------------------------------------------------------------------------------


class _Builtin:
    def __init__(self, definition: BuiltinEvaluatorConfig) -> None:
        self.builtin = BUILTINS[definition.evaluator]
        self.params = definition.params

    def run_batch(self, targets: Sequence[EvalTarget]) -> list[EvalResult]:
        return [evaluate_builtin(self.builtin, self.params, t) for t in targets]


class _CodePool:
    """Custom code evaluators (one child process each) lent to the runner's threads and kept
    for the whole run, so its chunks do not start new processes."""

    def __init__(self, definition: CodeEvaluatorConfig, timeout: float) -> None:
        self.definition, self.timeout = definition, timeout
        self._idle: queue.SimpleQueue[CodeEvaluator] = queue.SimpleQueue()
        self._all: list[CodeEvaluator] = []
        self._lock = threading.Lock()

    def run_batch(self, targets: Sequence[EvalTarget]) -> list[EvalResult]:
        try:
            evaluator = self._idle.get_nowait()
        except queue.Empty:
            evaluator = CodeEvaluator(self.definition, timeout=self.timeout)
            with self._lock:
                self._all.append(evaluator)
        try:
            return evaluator.run_batch(targets)
        finally:
            self._idle.put(evaluator)

    def close(self) -> None:
        with self._lock:
            for evaluator in self._all:
                evaluator.close()


def _text(value: Any) -> str | None:
    return None if value is None else value if isinstance(value, str) else str(value)


class _Judge:
    """The LLM judge over one chunk's targets (``rows``: the chunk's spans as stored)."""

    def __init__(
        self,
        definition: JudgeDefinition,
        client: LLMClient,
        rows: dict[Key, dict[str, Any]],
    ) -> None:
        self.definition, self.client, self.rows = definition, client, rows

    def run_batch(self, targets: Sequence[EvalTarget]) -> list[EvalResult]:
        wanted = [
            JudgeTarget(
                id=t.id,
                input=_text(t.input),
                output=_text(t.output),
                expected=_text(t.expected),
                spans=[
                    self.rows[k]
                    for s in t.covered_spans()
                    if (k := (str(s.get("trace_id")), str(s.get("span_id")))) in self.rows
                ],
            )
            for t in targets
        ]
        judgments = judge(self.definition, wanted, self.client, concurrency=1)
        for judgment in judgments:
            if judgment.error_code == ErrorCode.LLM_UNAVAILABLE and judgment.error:
                # The provider refused the credential: every other call would fail the same.
                raise TraceproofError(
                    judgment.error.removeprefix(f"[{ErrorCode.LLM_UNAVAILABLE}] "),
                    code=ErrorCode.LLM_UNAVAILABLE,
                )
        return [_from_judgment(t, j) for t, j in zip(targets, judgments, strict=True)]


def _from_judgment(target: EvalTarget, judgment: Judgment) -> EvalResult:
    metadata: dict[str, Any] = {
        "definition_hash": judgment.definition_hash,
        "model": judgment.model,
        "input_tokens": judgment.input_tokens,
        "output_tokens": judgment.output_tokens,
        "cost_usd": judgment.cost_usd,
        "cost_note": judgment.cost_note,
        "latency_ms": round(judgment.latency_ms, 1),
        "attempts": judgment.attempts,
        "evidence": [e.model_dump(exclude_none=True) for e in judgment.evidence],
        "flags": judgment.flags,
        "unsupported_quotes": judgment.unsupported_quotes,
    }
    return EvalResult(
        target_kind=target.kind,
        target_id=target.id,
        label=judgment.label,
        score=judgment.score,
        explanation=judgment.explanation,
        error=judgment.error,
        duration_ms=judgment.latency_ms,
        metadata={k: v for k, v in metadata.items() if v not in (None, [], {})},
    )


def _error_kind(message: str) -> str:
    found = _ERROR_KIND.match(message)
    return (found.group(1) or found.group(2)) if found else "error"


def _clip(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def annotation_for(
    prepared: Prepared, ref: TargetRef, result: EvalResult, text_limit: int
) -> AnnotationInput:
    """The annotation that stores ``result`` (see the module docstring)."""
    common: dict[str, Any] = {
        "target_kind": TargetKind(ref.kind),
        "target_id": ref.id,
        "name": prepared.name,
        "annotator_kind": prepared.annotator_kind,
        "annotator": prepared.annotator,
        "trace_id": ref.trace_id if ref.kind == "span" else None,
        "project": ref.project,
    }
    if result.error is not None:
        # Only what stays the same from call to call (no tokens, no latency): the same error
        # again must change nothing.
        failed: dict[str, Any] = {"error": _error_kind(result.error)}
        if prepared.judge is not None:
            failed["definition_hash"] = prepared.definition_hash
        return AnnotationInput(
            **common, explanation=_clip(result.error, text_limit), metadata=failed
        )
    metadata = dict(result.metadata) or None
    return AnnotationInput(
        **common,
        label=result.label,
        score=result.score,
        explanation=_clip(result.explanation, text_limit),
        metadata=metadata,
    )


class _Recorder:
    """Runs the inner evaluator on a batch, then writes the batch's annotations (one
    transaction) and counts them, before the runner moves on."""

    def __init__(
        self,
        inner: BatchEvaluator,
        store: Store,
        prepared: Prepared,
        refs: dict[Key, TargetRef],
        tally: Tally,
        check_cancelled: Callable[[], None] | None,
    ) -> None:
        self.inner, self.store, self.prepared = inner, store, prepared
        self.refs, self.tally, self.check_cancelled = refs, tally, check_cancelled
        self.limit = store.settings.annotation_text_max_chars

    def run_batch(self, targets: Sequence[EvalTarget]) -> list[EvalResult]:
        if self.check_cancelled is not None:
            self.check_cancelled()
        results = self.inner.run_batch(targets)
        items = []
        for target, result in zip(targets, results, strict=True):
            ref = self.refs[_key_of(target)]
            item = annotation_for(self.prepared, ref, result, self.limit)
            items.append(item)
        written = write_annotations(self.store, items, partial=True)
        self.tally.add(results, written, usage=self.prepared.judge is not None)
        return results


def _load(
    store: Store, kind: str, refs: Sequence[TargetRef]
) -> tuple[list[EvalTarget], dict[Key, dict[str, Any]]]:
    """The chunk's targets, as evaluators see them, and its spans as stored."""
    with store.reader() as reader:
        if kind == "session":
            traces = session_trace_ids(reader, [(r.project, r.id) for r in refs])
            pairs = [(p, t) for (p, _), ids in traces.items() for t in ids]
        elif kind == "trace":
            pairs = [(r.project, r.id) for r in refs]
        else:
            pairs = list(dict.fromkeys((r.project, r.trace_id or "") for r in refs))
        rows = trace_rows(reader, pairs)
    wanted = {r.key for r in refs}
    if kind == "span":
        found = targets_from_rows(rows, "span", span_ids={r.id for r in refs})
    elif kind == "trace":
        found = targets_from_rows(rows, "trace")
    else:
        found = targets_from_rows(rows, "session")
    targets = [t for t in found if _key_of(t) in wanted]
    by_span = {(str(r["trace_id"]), str(r["span_id"])): r for r in rows}
    return targets, by_span


def run(
    store: Store,
    prepared: Prepared,
    todo: Sequence[TargetRef],
    *,
    tally: Tally,
    progress: Callable[[int, int], None] | None = None,
    check_cancelled: Callable[[], None] | None = None,
    llm: LLMClient | None = None,
    settings: Settings | None = None,
) -> None:
    """Run ``prepared`` over ``todo`` (targets of one kind), writing annotations as batches
    finish and counting them in ``tally``; ``progress(done, total)`` as they do. A judge needs
    ``llm``. Raises what stops the whole run (``[evaluator_failed]``, a store error, the
    caller's ``check_cancelled``)."""
    settings = settings or store.settings
    total = len(todo)
    if not total:
        return
    kind = todo[0].kind
    refs = {r.key: r for r in todo}
    pool: _CodePool | None = None
    config = prepared.config
    if prepared.judge is not None:
        if llm is None:
            raise ValueError("a judge runs with an LLMClient")
        concurrency, batch = settings.llm_concurrency, 1
        chunk = concurrency * 4
    elif isinstance(config, CodeEvaluatorConfig):
        pool = _CodePool(config, settings.eval_code_timeout_seconds)
        concurrency, batch = settings.eval_concurrency, settings.eval_code_batch_size
        chunk = max(1000, concurrency * batch * 2)
    else:
        concurrency, batch, chunk = 1, BUILTIN_CHUNK, 5 * BUILTIN_CHUNK
    if kind == "session":
        chunk = max(1, min(chunk, 200))
    done = 0
    try:
        for start in range(0, total, chunk):
            if check_cancelled is not None:
                check_cancelled()
            part = todo[start : start + chunk]
            targets, rows = _load(store, kind, part)
            inner: BatchEvaluator
            if prepared.judge is not None and llm is not None:
                inner = _Judge(prepared.judge, llm, rows)
            elif pool is not None:
                inner = pool
            else:
                assert isinstance(config, BuiltinEvaluatorConfig)
                inner = _Builtin(config)
            recorder = _Recorder(inner, store, prepared, refs, tally, check_cancelled)
            base = done

            def report(n: int, _of: int, base: int = base) -> None:
                if progress is not None:
                    progress(base + n, total)

            run_evaluator(
                recorder,
                targets,
                concurrency=concurrency,
                batch_size=batch,
                progress=report,
                settings=settings,
            )
            done = base + len(part)  # targets gone from the store since they were chosen count
            if progress is not None:
                progress(done, total)
    finally:
        if pool is not None:
            pool.close()


class TargetJudge:
    """``prepared`` over targets the caller built itself (an experiment's runs): each call
    judges a few targets and counts them in ``tally``; the caller writes their annotations
    (:func:`annotation_for`), batched as it likes. Code evaluators keep their child processes
    until :meth:`close`."""

    def __init__(
        self, store: Store, prepared: Prepared, *, tally: Tally, llm: LLMClient | None = None
    ) -> None:
        self.store, self.prepared, self.tally, self.llm = store, prepared, tally, llm
        config = prepared.config
        self._pool = (
            _CodePool(config, config.timeout or store.settings.eval_code_timeout_seconds)
            if isinstance(config, CodeEvaluatorConfig)
            else None
        )
        if prepared.judge is not None and llm is None:
            raise ValueError("a judge runs with an LLMClient")

    def judge(self, targets: Sequence[EvalTarget]) -> list[EvalResult]:
        """Verdicts (or errors) for ``targets``. The spans a judge is shown are each target's
        ``trace``."""
        inner: BatchEvaluator
        if self.prepared.judge is not None and self.llm is not None:
            rows = {(str(s.get("trace_id")), str(s.get("span_id"))): s for t in targets
                    for s in t.trace}  # fmt: skip
            inner = _Judge(self.prepared.judge, self.llm, rows)
        elif self._pool is not None:
            inner = self._pool
        else:
            config = self.prepared.config
            assert isinstance(config, BuiltinEvaluatorConfig)
            inner = _Builtin(config)
        results = inner.run_batch(targets)
        self.tally.add(results, AnnotationWrite(), usage=self.prepared.judge is not None)
        return results

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
