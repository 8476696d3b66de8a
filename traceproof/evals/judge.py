"""LLM judges: a definition, the prompt and forced tool it gives the model, and judging targets.

A :class:`JudgeDefinition` is content: a name, a rubric template with slots (``{input}``,
``{output}``, ``{expected}``, ``{trace}``), a fixed set of labels (optionally
``insufficient_evidence``), a score per label, the model and its settings, few-shot examples.
Its :attr:`~JudgeDefinition.definition_hash` is a hash of that content: a changed rubric is a
new version, and every :class:`Judgment` records the hash it came from.

The model answers through one forced tool call whose properties come in the order it should
think in: ``explanation``, then ``evidence`` (quotes with the span they come from), then
``label`` (an enum of the labels). Quotes found in neither the trace nor the target's texts are
flagged (``unsupported_quotes``). A malformed answer is an error for that target, never a label.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from traceproof.errors import ErrorCode, TraceproofError
from traceproof.evals.context import Sources, span_facts, trace_context
from traceproof.evals.llm import CallResult, Effort, LLMClient, LLMError, Tool
from traceproof.tools.tree import SpanFacts

__all__ = [
    "INSUFFICIENT_EVIDENCE",
    "TOOL_NAME",
    "Evidence",
    "FewShot",
    "JudgeDefinition",
    "JudgeTarget",
    "Judgment",
    "ajudge",
    "judge",
]

INSUFFICIENT_EVIDENCE = "insufficient_evidence"
TOOL_NAME = "record_judgment"
SLOTS = ("input", "output", "expected", "trace")
_SLOT = re.compile(r"\{(input|output|expected|trace)\}")
_ANY_SLOT = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
#: Evidence items the schema allows (more is noise, and costs output tokens).
MAX_EVIDENCE = 8

SYSTEM_PROMPT = (
    "You are an evaluator. Judge the material against the rubric and answer only by calling "
    f"the tool {TOOL_NAME}: first your explanation, then the evidence (verbatim quotes from the "
    "material, each with the span_id of the span it comes from, or null for the input, output "
    "or expected text), then the label. Quote exactly; never invent a quote."
)


class FewShot(BaseModel):
    """A worked example shown to the judge before the material."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: str | None = None
    output: str | None = None
    expected: str | None = None
    label: str
    explanation: str = ""


class JudgeDefinition(BaseModel):
    """An LLM judge, as content. Labels are in their order (worst to best or best to worst)
    when ``ordinal`` is set; ``positive_label`` is the one TPR counts for two-label judges
    (default: the first label)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=200)
    rubric: str = Field(min_length=1)
    labels: tuple[str, ...] = Field(min_length=1)
    scores: dict[str, float] = Field(default_factory=dict)
    insufficient_evidence: bool = False
    ordinal: bool = False
    positive_label: str | None = None
    model: str | None = None
    effort: Effort | None = None
    max_tokens: int = Field(default=1024, ge=64, le=32_000)
    context_tokens: int | None = Field(default=None, ge=200)
    examples: tuple[FewShot, ...] = ()
    description: str = ""

    @model_validator(mode="after")
    def _check(self) -> JudgeDefinition:
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"labels repeat: {list(self.labels)}")
        if INSUFFICIENT_EVIDENCE in self.labels:
            raise ValueError(f"{INSUFFICIENT_EVIDENCE!r} is not a label: set insufficient_evidence")
        allowed = set(self.all_labels)
        unknown = sorted(set(self.scores) - allowed)
        if unknown:
            raise ValueError(f"scores for unknown labels {unknown}; labels: {sorted(allowed)}")
        if self.positive_label is not None and self.positive_label not in self.labels:
            raise ValueError(f"positive_label {self.positive_label!r} is not one of the labels")
        bad_slots = sorted({s for s in _ANY_SLOT.findall(self.rubric) if s not in SLOTS})
        if bad_slots:
            raise ValueError(f"rubric slots {bad_slots} unknown; slots: {list(SLOTS)}")
        for example in self.examples:
            if example.label not in allowed:
                raise ValueError(f"example label {example.label!r} is not one of {sorted(allowed)}")
        return self

    @property
    def all_labels(self) -> tuple[str, ...]:
        """The labels the judge may answer, ``insufficient_evidence`` last when allowed."""
        return (*self.labels, INSUFFICIENT_EVIDENCE) if self.insufficient_evidence else self.labels

    @property
    def definition_hash(self) -> str:
        """``sha256:`` and 16 hex digits of the canonical JSON of the content (every field)."""
        content = orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
        return "sha256:" + hashlib.sha256(content).hexdigest()[:16]

    @classmethod
    def from_config(cls, name: str, table: Mapping[str, Any]) -> JudgeDefinition:
        """A definition from a ``[evaluators.NAME]`` table of ``traceproof.toml`` whose ``kind``
        is ``"judge"``. ``labels`` is a list, or a table of label = score. Raises
        ``[invalid_argument]`` naming what is wrong and what is allowed."""
        data = {k: v for k, v in table.items() if k != "kind"}
        labels = data.get("labels")
        if isinstance(labels, Mapping):
            data["labels"] = list(labels)
            scores = {str(k): v for k, v in labels.items() if v is not None}
            data["scores"] = {**scores, **dict(data.get("scores") or {})}
        allowed = sorted(set(cls.model_fields) - {"name"})
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise TraceproofError(
                f"Judge {name!r} in traceproof.toml has unknown keys {unknown}. Allowed: "
                f"{', '.join(allowed)}.",
                code=ErrorCode.INVALID_ARGUMENT,
            )
        try:
            return cls(name=name, **data)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'judge'}: {e['msg']}"
                for e in error.errors()
            )
            raise TraceproofError(
                f"Judge {name!r} in traceproof.toml is invalid: {problems[:800]}. Fix the "
                "table (rubric, labels, scores, model, ...) and call again.",
                code=ErrorCode.INVALID_ARGUMENT,
            ) from None

    def with_examples(self, examples: Iterable[FewShot]) -> JudgeDefinition:
        """The next version of this judge: the same, with ``examples`` added (a new hash)."""
        return self.model_copy(update={"examples": (*self.examples, *examples)})

    def score_of(self, label: str) -> float | None:
        return self.scores.get(label)

    def tool(self) -> Tool:
        """The forced tool: ``explanation`` and ``evidence`` before ``label`` (the model writes
        properties in order, so it reasons before it decides)."""
        schema = {
            "type": "object",
            "properties": {
                "explanation": {
                    "type": "string",
                    "description": "Your reasoning against the rubric, before the label.",
                },
                "evidence": {
                    "type": "array",
                    "maxItems": MAX_EVIDENCE,
                    "description": "Verbatim quotes from the material that support the label.",
                    "items": {
                        "type": "object",
                        "properties": {
                            "quote": {"type": "string"},
                            "span_id": {
                                "type": ["string", "null"],
                                "description": "Span the quote is from; null for the input, "
                                "output or expected text.",
                            },
                        },
                        "required": ["quote", "span_id"],
                    },
                },
                "label": {"type": "string", "enum": list(self.all_labels)},
            },
            "required": ["explanation", "evidence", "label"],
        }
        return Tool(
            name=TOOL_NAME,
            description=f"Record the verdict of judge {self.name!r}.",
            input_schema=schema,
        )


@dataclass
class JudgeTarget:
    """What one judgment is about: a span, trace or session (``id``), its texts, and the spans
    whose context the judge is shown (dicts with the ``spans`` table's columns)."""

    id: str
    input: str | None = None
    output: str | None = None
    expected: str | None = None
    spans: Sequence[Mapping[str, Any]] = field(default_factory=list)


class Evidence(BaseModel):
    """A quote the judge gave, and the span it said the quote comes from."""

    quote: str
    span_id: str | None = None
    supported: bool = True


class Judgment(BaseModel):
    """A judge's verdict on one target, or the error that took its place."""

    target_id: str
    judge: str
    definition_hash: str
    label: str | None = None
    score: float | None = None
    explanation: str | None = None
    evidence: list[Evidence] = Field(default_factory=list)
    flags: list[str] = Field(default_factory=list)
    unsupported_quotes: list[str] = Field(default_factory=list)
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    latency_ms: float = 0.0
    cost_usd: float | None = None
    cost_note: str | None = None
    attempts: int = 0
    error: str | None = Field(default=None, description="`[code] message` when no verdict.")
    error_code: str | None = None


def render_prompt(
    definition: JudgeDefinition,
    target: JudgeTarget,
    *,
    context_tokens: int,
    text_chars: int,
    facts: Sequence[SpanFacts] | None = None,
    examples: Sequence[str] | None = None,
) -> str:
    """The user message: examples, then the rubric with its slots filled (or, without slots,
    followed by the material in tagged sections). ``examples`` is
    :func:`render_examples` of the definition, when the caller keeps it."""
    values = {
        "input": _cap(target.input, text_chars),
        "output": _cap(target.output, text_chars),
        "expected": _cap(target.expected, text_chars),
        "trace": trace_context(facts or target.spans, context_tokens) if target.spans else "",
    }
    parts = list(render_examples(definition, text_chars) if examples is None else examples)
    if _SLOT.search(definition.rubric):
        parts.append(_SLOT.sub(lambda m: values[m.group(1)] or "(none)", definition.rubric))
    else:
        parts.append(definition.rubric)
        for slot in SLOTS:
            if values[slot]:
                parts.append(f"<{slot}>\n{values[slot]}\n</{slot}>")
    labels = ", ".join(definition.all_labels)
    parts.append(f"Answer with {TOOL_NAME}; label is one of: {labels}.")
    return "\n\n".join(parts)


def render_examples(definition: JudgeDefinition, text_chars: int) -> list[str]:
    """The few-shot part of the prompt (the same for every target of a definition)."""
    if not definition.examples:
        return []
    parts = ["Examples of judgments by people:"]
    for number, example in enumerate(definition.examples, 1):
        lines = [f"<example {number}>"]
        for slot in ("input", "output", "expected"):
            text = getattr(example, slot)
            if text:
                lines.append(f"<{slot}>{_cap(text, text_chars // 4)}</{slot}>")
        lines.append(f"label: {example.label}")
        if example.explanation:
            lines.append(f"why: {example.explanation}")
        lines.append("</example>")
        parts.append("\n".join(lines))
    return parts


def _cap(text: str | None, limit: int) -> str:
    if not text:
        return ""
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Plan:
    """Everything about judging one definition that does not depend on the target."""

    def __init__(self, definition: JudgeDefinition, client: LLMClient) -> None:
        self.definition, self.client = definition, client
        self.hash = definition.definition_hash
        self.tool = definition.tool()
        settings = client.settings
        self.context_tokens = definition.context_tokens or settings.judge_context_tokens
        self.text_chars = settings.judge_text_chars
        self.labels = definition.all_labels
        self.examples = render_examples(definition, self.text_chars)

    def request(self, target: JudgeTarget, facts: Sequence[SpanFacts]) -> dict[str, Any]:
        prompt = render_prompt(
            self.definition,
            target,
            context_tokens=self.context_tokens,
            text_chars=self.text_chars,
            facts=facts,
            examples=self.examples,
        )
        return {
            "system": SYSTEM_PROMPT,
            "messages": [{"role": "user", "content": prompt}],
            "tool": self.tool,
            "max_tokens": self.definition.max_tokens,
            "effort": self.definition.effort,
            "model": self.definition.model,
        }

    def failed(self, target: JudgeTarget, error: TraceproofError, started: float) -> Judgment:
        usage = error.usage if isinstance(error, LLMError) else None
        accounting = (
            _accounting(usage)
            if usage is not None
            else {"latency_ms": (time.perf_counter() - started) * 1000}
        )
        return Judgment(
            target_id=target.id,
            judge=self.definition.name,
            definition_hash=self.hash,
            error=str(error),
            error_code=str(error.code),
            **accounting,
        )

    def judged(
        self, target: JudgeTarget, facts: Sequence[SpanFacts], result: CallResult
    ) -> Judgment:
        answer = result.answer or {}
        problem = _malformed(answer, self.labels)
        if problem is not None:
            return Judgment(
                target_id=target.id,
                judge=self.definition.name,
                definition_hash=self.hash,
                error=str(
                    TraceproofError(
                        f"The judge's answer {problem}. Retry; if it recurs, check the model "
                        "supports forced tool use.",
                        code=ErrorCode.LLM_MALFORMED,
                    )
                ),
                error_code=str(ErrorCode.LLM_MALFORMED),
                **_accounting(result),
            )
        sources = Sources(facts, (target.input, target.output, target.expected))
        label: str = answer["label"]
        evidence: list[Evidence] = []
        flags: list[str] = []
        unsupported: list[str] = []
        for item in answer["evidence"]:
            quote, span_id = item["quote"], item.get("span_id")
            why = sources.check(quote, span_id)
            evidence.append(Evidence(quote=quote, span_id=span_id, supported=why is None))
            if why == "unsupported":
                unsupported.append(quote)
            if why is not None and why + "_quotes" not in flags:
                flags.append(why + "_quotes")
        if label == INSUFFICIENT_EVIDENCE:
            flags.append(INSUFFICIENT_EVIDENCE)
        return Judgment(
            target_id=target.id,
            judge=self.definition.name,
            definition_hash=self.hash,
            label=label,
            score=self.definition.score_of(label),
            explanation=answer["explanation"],
            evidence=evidence,
            flags=flags,
            unsupported_quotes=unsupported,
            **_accounting(result),
        )


def _accounting(result: CallResult) -> dict[str, Any]:
    """A judgment's model, tokens (cache reads and writes are input), latency and cost."""
    usage = result.usage
    return {
        "model": result.model,
        "input_tokens": usage.input_tokens + usage.cache_read_tokens + usage.cache_write_tokens,
        "output_tokens": usage.output_tokens,
        "latency_ms": result.latency_ms,
        "cost_usd": result.cost_usd,
        "cost_note": result.cost_note,
        "attempts": result.attempts,
    }


def _malformed(answer: Mapping[str, Any], labels: Sequence[str]) -> str | None:
    """What is wrong with the tool's input, or None."""
    missing = [key for key in ("explanation", "evidence", "label") if key not in answer]
    if missing:
        return f"lacks {', '.join(missing)}"
    label = answer["label"]
    if not isinstance(label, str) or label not in labels:
        return f"has label {str(label)[:80]!r}, not one of {list(labels)}"
    if not isinstance(answer["explanation"], str):
        return "has an explanation that is not text"
    evidence = answer["evidence"]
    if not isinstance(evidence, list):
        return "has evidence that is not a list"
    for item in evidence:
        if not isinstance(item, dict) or not isinstance(item.get("quote"), str):
            return "has evidence without a quote"
        if item.get("span_id") is not None and not isinstance(item["span_id"], str):
            return "has evidence whose span_id is not text"
    return None


def judge(
    definition: JudgeDefinition,
    targets: Sequence[JudgeTarget],
    client: LLMClient,
    concurrency: int | None = None,
) -> list[Judgment]:
    """Judge every target, ``concurrency`` at once (default: the client's limit), and return
    the judgments in target order. A target whose call fails or whose answer is malformed gets
    a judgment with ``error`` set and no label."""
    plan = _Plan(definition, client)
    workers = max(1, concurrency or client.settings.llm_concurrency)

    def one(target: JudgeTarget) -> Judgment:
        started = time.perf_counter()
        try:
            facts = [span_facts(span) for span in target.spans]
            result = client.call_tool(**plan.request(target, facts))
        except TraceproofError as error:
            return plan.failed(target, error, started)
        return plan.judged(target, facts, result)

    if workers == 1 or len(targets) <= 1:
        return [one(target) for target in targets]
    # Each worker takes the next target until none is left, and the caller waits for the
    # workers alone: one wake-up per worker, not one hand-off (future, result, wake-up of the
    # waiting thread, each needing the GIL) per target.
    judgments: list[Judgment | None] = [None] * len(targets)
    indexes = iter(range(len(targets)))
    taking = threading.Lock()

    def drain() -> None:
        while True:
            with taking:
                index = next(indexes, None)
            if index is None:
                return
            judgments[index] = one(targets[index])

    count = min(workers, len(targets))
    with ThreadPoolExecutor(max_workers=count) as pool:
        running = [pool.submit(drain) for _ in range(count)]
    for worker in running:
        worker.result()  # an exception other than a TraceproofError is raised here
    return [judgment for judgment in judgments if judgment is not None]


async def ajudge(
    definition: JudgeDefinition,
    targets: Sequence[JudgeTarget],
    client: LLMClient,
    concurrency: int | None = None,
) -> list[Judgment]:
    """:func:`judge` on an event loop (the server's): ``concurrency`` calls in flight."""
    plan = _Plan(definition, client)
    workers = max(1, concurrency or client.settings.llm_concurrency)
    judgments: list[Judgment | None] = [None] * len(targets)
    indexes = iter(range(len(targets)))

    async def drain() -> None:
        # ``concurrency`` tasks share the targets (one task per target would mean as many
        # tasks, semaphore waits and wake-ups as targets).
        for index in indexes:
            target = targets[index]
            started = time.perf_counter()
            try:
                facts = [span_facts(span) for span in target.spans]
                result = await client.acall_tool(**plan.request(target, facts))
            except TraceproofError as error:
                judgments[index] = plan.failed(target, error, started)
                continue
            judgments[index] = plan.judged(target, facts, result)

    await asyncio.gather(*(drain() for _ in range(min(workers, len(targets)))))
    return [judgment for judgment in judgments if judgment is not None]
