"""The annotation model: what a label, score or verdict on a span, trace or session is.

An annotation targets a span (with its trace), a trace or a session, and says ``name`` (what is
judged: ``correctness``), ``label`` and/or ``score``, an ``explanation`` and JSON ``metadata``.
Its author is an ``annotator_kind`` (``HUMAN``, ``LLM``, ``CODE``) and an ``annotator`` (who, or
which evaluator and version). One annotation exists per (target, name, annotator, identifier):
writing that key again updates it and keeps the previous version in ``annotation_history``;
a different annotator is a different annotation, so a person overriding a judge never erases the
judge's verdict.

An :class:`AnnotationConfig` (stored under the annotation's ``name``) constrains what a write may
say: ``CATEGORICAL`` (allowed labels, optionally a score per label), ``CONTINUOUS`` (score bounds)
or ``FREEFORM``, with an optimisation direction. :func:`check_input` (the value itself) and
:func:`check_config` (against its config) raise :class:`InvalidAnnotation` with a message listing
what is allowed; the store runs both before it writes anything of a batch.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

import orjson

from traceproof.errors import ErrorCode, TraceproofError


class TargetKind(StrEnum):
    """What an annotation is about: a span, a trace, a session or one run of an experiment."""

    SPAN = "span"
    TRACE = "trace"
    SESSION = "session"
    EXPERIMENT_RUN = "experiment_run"


class AnnotatorKind(StrEnum):
    HUMAN = "HUMAN"
    LLM = "LLM"
    CODE = "CODE"


class ConfigKind(StrEnum):
    CATEGORICAL = "CATEGORICAL"
    CONTINUOUS = "CONTINUOUS"
    FREEFORM = "FREEFORM"


class Direction(StrEnum):
    MAXIMIZE = "MAXIMIZE"
    MINIMIZE = "MINIMIZE"
    NONE = "NONE"


class InvalidAnnotation(TraceproofError):
    """An annotation that cannot be written as given (the message says what is allowed)."""

    code = ErrorCode.INVALID_ANNOTATION


#: Longest annotation name, annotator and identifier.
NAME_MAX_CHARS = 200


@dataclass(frozen=True)
class AnnotationInput:
    """One annotation to write. ``target_id`` is the span, trace or session id; for a span,
    ``trace_id`` narrows it to one trace (needed only when the id is ambiguous) and ``project``
    to one project. ``annotator`` defaults to the lower-cased kind (``human``, ``llm``,
    ``code``)."""

    target_kind: TargetKind
    target_id: str
    name: str
    label: str | None = None
    score: float | None = None
    explanation: str | None = None
    metadata: dict[str, Any] | None = None
    annotator_kind: AnnotatorKind = AnnotatorKind.HUMAN
    annotator: str | None = None
    identifier: str = ""
    trace_id: str | None = None
    project: str | None = None

    @property
    def author(self) -> str:
        return self.annotator or self.annotator_kind.lower()


@dataclass(frozen=True)
class LabelChoice:
    label: str
    score: float | None = None


@dataclass(frozen=True)
class AnnotationConfig:
    """What annotations named ``name`` may say."""

    name: str
    kind: ConfigKind
    labels: tuple[LabelChoice, ...] = ()
    lower_bound: float | None = None
    upper_bound: float | None = None
    direction: Direction = Direction.NONE
    description: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind is ConfigKind.CATEGORICAL and not self.labels:
            raise InvalidAnnotation(
                f"The categorical config {self.name!r} has no labels. Give at least one label."
            )
        names = [choice.label for choice in self.labels]
        if len(set(names)) != len(names):
            raise InvalidAnnotation(
                f"The config {self.name!r} repeats a label ({', '.join(names)}). Give each "
                "label once."
            )
        low, high = self.lower_bound, self.upper_bound
        if low is not None and high is not None and low > high:
            raise InvalidAnnotation(
                f"The config {self.name!r} has lower_bound {low:g} above upper_bound {high:g}. "
                "Swap them."
            )

    def allowed(self) -> str:
        """What this config allows, as a phrase for error messages."""
        if self.kind is ConfigKind.CATEGORICAL:
            shown = ", ".join(
                repr(c.label) + (f" (score {c.score:g})" if c.score is not None else "")
                for c in self.labels
            )
            return f"labels {shown}"
        if self.kind is ConfigKind.CONTINUOUS:
            low = "-inf" if self.lower_bound is None else f"{self.lower_bound:g}"
            high = "inf" if self.upper_bound is None else f"{self.upper_bound:g}"
            return f"scores from {low} to {high}"
        return "any label, score or explanation"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": str(self.kind),
            "labels": [{"label": c.label, "score": c.score} for c in self.labels],
            "lower_bound": self.lower_bound,
            "upper_bound": self.upper_bound,
            "direction": str(self.direction),
            "description": self.description,
        }


def _has_lone_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _check_text(what: str, value: str | None, limit: int) -> None:
    if value is None:
        return
    if _has_lone_surrogate(value):
        raise InvalidAnnotation(
            f"The {what} holds a lone surrogate (text that is not valid Unicode). Send valid "
            "UTF-8 text.",
            code=ErrorCode.INVALID_ARGUMENT,
        )
    if len(value) > limit:
        raise InvalidAnnotation(
            f"The {what} has {len(value):,} characters, more than the {limit:,} allowed "
            "(setting annotation_text_max_chars). Shorten it, or put the long part in a span.",
            code=ErrorCode.INVALID_ARGUMENT,
        )


def check_input(item: AnnotationInput, *, text_max_chars: int) -> AnnotationInput:
    """``item`` if it can be written, with its kinds normalised; else :class:`InvalidAnnotation`.

    Checks what does not depend on the store: a name, something said (a label, a score or an
    explanation), a finite score, text that is valid Unicode and within ``text_max_chars``
    (explanation, label, metadata as JSON), names within :data:`NAME_MAX_CHARS`."""
    try:
        target = TargetKind(str(item.target_kind).lower())
        kind = AnnotatorKind(str(item.annotator_kind).upper())
    except ValueError:
        raise InvalidAnnotation(
            f"Unknown target kind {item.target_kind!r} or annotator kind "
            f"{item.annotator_kind!r}. Targets: span, trace, session; annotator kinds: HUMAN, "
            "LLM, CODE.",
            code=ErrorCode.INVALID_ARGUMENT,
        ) from None
    for what, value in (
        ("target id", item.target_id),
        ("name", item.name),
        ("annotator", item.annotator),
        ("identifier", item.identifier),
        ("trace id", item.trace_id),
        ("project", item.project),
    ):
        _check_text(what, value, NAME_MAX_CHARS)
    if not item.target_id:
        raise InvalidAnnotation(
            f"An annotation needs the id of its {target}. Pass it.",
            code=ErrorCode.INVALID_ARGUMENT,
        )
    if not item.name or not item.name.strip():
        raise InvalidAnnotation(
            "An annotation needs a name (what is judged, e.g. 'correctness'). Pass name.",
            code=ErrorCode.INVALID_ARGUMENT,
        )
    if item.label is None and item.score is None and not item.explanation:
        raise InvalidAnnotation(
            f"The annotation {item.name!r} says nothing. Give a label, a score or an explanation.",
            code=ErrorCode.INVALID_ARGUMENT,
        )
    score = item.score
    if score is not None:
        if isinstance(score, bool) or not isinstance(score, int | float):
            raise InvalidAnnotation(
                f"The score of {item.name!r} is {score!r}, not a number. Give a number.",
                code=ErrorCode.INVALID_ARGUMENT,
            )
        score = float(score)
        if not math.isfinite(score):
            raise InvalidAnnotation(
                f"The score of {item.name!r} is {score}. Give a finite number.",
                code=ErrorCode.INVALID_ARGUMENT,
            )
    _check_text("label", item.label, NAME_MAX_CHARS)
    _check_text("explanation", item.explanation, text_max_chars)
    if item.metadata is not None:
        if not isinstance(item.metadata, dict):
            raise InvalidAnnotation(
                "metadata must be a JSON object. Pass an object, or leave it out.",
                code=ErrorCode.INVALID_ARGUMENT,
            )
        try:
            encoded = orjson.dumps(item.metadata).decode()
        except TypeError as exc:
            raise InvalidAnnotation(
                f"metadata is not JSON ({exc}). Pass JSON values only.",
                code=ErrorCode.INVALID_ARGUMENT,
            ) from None
        _check_text("metadata", encoded, text_max_chars)
    return replace(item, target_kind=target, annotator_kind=kind, score=score)


def check_config(item: AnnotationInput, config: AnnotationConfig | None) -> AnnotationInput:
    """``item`` checked against its config (None: anything goes), with a categorical label's
    configured score filled in when none was given. A config constrains labels and scores: an
    annotation that gives neither (an explanation only: a note, or an evaluator's error record)
    passes any config."""
    if config is None or config.kind is ConfigKind.FREEFORM:
        return item
    if item.label is None and item.score is None:
        return item
    where = f"The annotation {item.name!r} on {item.target_kind} {item.target_id!r}"
    if config.kind is ConfigKind.CATEGORICAL:
        if item.label is None:
            raise InvalidAnnotation(
                f"{where} has no label; its config allows {config.allowed()}. Give one of them."
            )
        choice = next((c for c in config.labels if c.label == item.label), None)
        if choice is None:
            raise InvalidAnnotation(
                f"{where} has label {item.label!r}; its config allows {config.allowed()}. "
                "Use one of them, or change the config."
            )
        if item.score is None and choice.score is not None:
            return replace(item, score=choice.score)
        return item
    score = item.score
    if score is None:
        raise InvalidAnnotation(
            f"{where} has no score; its config allows {config.allowed()}. Give a score."
        )
    low, high = config.lower_bound, config.upper_bound
    if (low is not None and score < low) or (high is not None and score > high):
        raise InvalidAnnotation(
            f"{where} has score {score:g}; its config allows {config.allowed()}. Give a score "
            "within the bounds."
        )
    return item


def config_from_dict(data: Any) -> AnnotationConfig:
    """A config from :meth:`AnnotationConfig.as_dict`'s shape (the server's API); kinds and
    directions in any case; :class:`InvalidAnnotation` (``invalid_argument``) naming what is
    wrong."""

    def bad(detail: str) -> InvalidAnnotation:
        return InvalidAnnotation(
            f"Not an annotation config: {detail}. Send {{name, kind, labels: [{{label, score}}], "
            "lower_bound, upper_bound, direction, description}.",
            code=ErrorCode.INVALID_ARGUMENT,
        )

    if not isinstance(data, dict):
        raise bad("not an object")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip() or len(name) > NAME_MAX_CHARS:
        raise bad(f"name {name!r} is not a name")
    try:
        kind = ConfigKind(str(data.get("kind")).upper())
        direction = Direction(str(data.get("direction") or "NONE").upper())
    except ValueError:
        raise bad(
            f"kind {data.get('kind')!r} or direction {data.get('direction')!r} unknown (kinds: "
            "CATEGORICAL, CONTINUOUS, FREEFORM; directions: MAXIMIZE, MINIMIZE, NONE)"
        ) from None
    labels = data.get("labels") or []
    if not isinstance(labels, list):
        raise bad("labels is not a list")
    choices: list[LabelChoice] = []
    for entry in labels:
        label = entry.get("label") if isinstance(entry, dict) else None
        score = entry.get("score") if isinstance(entry, dict) else None
        if not isinstance(label, str) or not label or len(label) > NAME_MAX_CHARS:
            raise bad(f"label {entry!r} is not {{label, score}} with a label")
        if score is not None and (
            isinstance(score, bool)
            or not isinstance(score, int | float)
            or not math.isfinite(score)
        ):
            raise bad(f"the score of {label!r} is {score!r}, not a finite number")
        choices.append(LabelChoice(label, None if score is None else float(score)))
    bounds: list[float | None] = []
    for key in ("lower_bound", "upper_bound"):
        value = data.get(key)
        if value is not None and (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise bad(f"{key} is {value!r}, not a finite number")
        bounds.append(None if value is None else float(value))
    description = data.get("description")
    if description is not None and not isinstance(description, str):
        raise bad("description is not a string")
    try:
        return AnnotationConfig(
            name=name,
            kind=kind,
            labels=tuple(choices) if kind is ConfigKind.CATEGORICAL else (),
            lower_bound=bounds[0] if kind is ConfigKind.CONTINUOUS else None,
            upper_bound=bounds[1] if kind is ConfigKind.CONTINUOUS else None,
            direction=direction,
            description=description,
        )
    except InvalidAnnotation as exc:
        raise InvalidAnnotation(exc.message, code=ErrorCode.INVALID_ARGUMENT) from None


def config_summary(config: AnnotationConfig) -> str:
    """A config in a few words: ``categorical pass=1|fail=0, maximize``, ``continuous 0..1``,
    ``freeform``."""
    if config.kind is ConfigKind.CATEGORICAL:
        text = "categorical " + "|".join(
            c.label if c.score is None else f"{c.label}={c.score:g}" for c in config.labels
        )
    elif config.kind is ConfigKind.CONTINUOUS:
        low = "" if config.lower_bound is None else f"{config.lower_bound:g}"
        high = "" if config.upper_bound is None else f"{config.upper_bound:g}"
        text = f"continuous {low}..{high}"
    else:
        text = "freeform"
    if config.direction is not Direction.NONE:
        text += f", {config.direction.lower()}"
    return text


# -- what a judge's annotations record ----------------------------------------------------------

#: Hex digits of a judge definition hash in its annotator string.
JUDGE_VERSION_CHARS = 12
_VERSION = re.compile(rf"@([0-9a-f]{{{JUDGE_VERSION_CHARS}}})$")
#: SQL (DuckDB) over an ``annotations`` row aliased ``a``: the 12-hex judge version its
#: annotator ends with when an LLM judge wrote it, else NULL.
JUDGE_VERSION_SQL = (
    "CASE WHEN a.annotator_kind = 'LLM' THEN "
    f"nullif(regexp_extract(a.annotator, '@([0-9a-f]{{{JUDGE_VERSION_CHARS}}})$', 1), '') END"
)


def hash_version(definition_hash: str) -> str:
    """The short version of a judge definition hash (``sha256:0123…`` → its first 12 hex
    digits); a version passes through unchanged."""
    return definition_hash.removeprefix("sha256:")[:JUDGE_VERSION_CHARS]


def judge_annotator(name: str, definition_hash: str) -> str:
    """What an annotation written by judge ``name`` records as its annotator (kind ``LLM``):
    ``name@version``, the version being the first 12 hex digits of the
    :attr:`~traceproof.evals.judge.JudgeDefinition.definition_hash` (what calibrations record;
    not the config table's hash). The full hash goes in the annotation's metadata
    (``definition_hash``)."""
    return f"{name}@{hash_version(definition_hash)}"


def judge_version_of(annotator_kind: str, annotator: str) -> str | None:
    """The judge version an annotation's annotator ends with (LLM annotations), else None."""
    if str(annotator_kind).upper() != AnnotatorKind.LLM:
        return None
    found = _VERSION.search(annotator)
    return found.group(1) if found else None
