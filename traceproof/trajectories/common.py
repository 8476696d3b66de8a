"""What every transcript reader produces, and the names it uses.

A session is a session (``session.id``); a user turn is a trace under an ``AGENT`` root; a
model call is an ``LLM`` span; a tool call is a ``TOOL`` span; a subagent is a nested ``AGENT``
under the tool call that started it. Ids are derived from the transcript's own identifiers
(never from time or chance), so importing the same transcript twice adds nothing and a
transcript that grew adds only its new spans.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from traceproof.evals.annotations import AnnotationInput

#: Which reader made a span (an attribute on every span a reader makes).
SOURCE = "trajectory.source"
#: The transcript record a span came from, as JSON text after redaction.
RAW = "trajectory.raw"
#: The step's number in its trace (1-based, in start order), set on TOOL and LLM spans.
STEP = "trajectory.step"
#: What the step does (``localize``, ``edit``, ``execute``, ``verify``, ``vcs``, ``plan``,
#: ``delegate``, ``web``, ``other``), set by :mod:`traceproof.trajectories.actions`.
ACTION = "trajectory.action"
#: ``true`` on a step that follows an error or a failed verification.
RECOVER = "trajectory.recover"
#: The file or command a step acts on.
TARGET = "trajectory.target"
#: ``ok``, ``error``, ``tests_passed`` or ``tests_failed``.
OUTCOME = "trajectory.outcome"
#: Test counts a verification's output gave, when it said.
TESTS_PASSED = "trajectory.tests.passed"
TESTS_FAILED = "trajectory.tests.failed"
#: ``true`` on spans of a dead-end branch (a retried API call that forked the transcript).
DEAD_END = "trajectory.dead_end"
#: The LLM stop reason (not an OpenInference name; documented in README).
STOP_REASON = "llm.stop_reason"
CACHE_READ = "llm.token_count.prompt_details.cache_read"
CACHE_WRITE = "llm.token_count.prompt_details.cache_write"
REASONING = "llm.token_count.completion_details.reasoning"

Kind = Literal["AGENT", "LLM", "TOOL", "CHAIN"]
Status = Literal["OK", "ERROR", "UNSET"]


def trace_id_for(source: str, session: str, turn: str) -> str:
    """32 hex digits naming a turn of a session, the same on every import."""
    return hashlib.sha256(f"{source}:{session}:{turn}".encode()).hexdigest()[:32]


def span_id_for(source: str, session: str, key: str) -> str:
    """16 hex digits naming one record's span, the same on every import."""
    return hashlib.sha256(f"{source}:{session}:{key}".encode()).hexdigest()[:16]


@dataclass(slots=True)
class StepSpan:
    """One span a reader made; ``attributes`` use OpenInference names (``input.value``,
    ``output.value``, ``tool.name``, ``llm.model_name``, ``llm.token_count.*``,
    ``session.id``) plus the ``trajectory.*`` names above."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: Kind
    start_ns: int
    end_ns: int
    status: Status = "OK"
    status_message: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    #: Resource attributes: ``service.name`` (the agent), ``service.version``, ``process.cwd``,
    #: ``vcs.repository.ref.name`` (git branch).
    resource: dict[str, Any] = field(default_factory=dict)
    #: The transcript line the span starts from (the importer's resume point), when known.
    line: int | None = None
    #: Annotations the transcript gives this span's trace (an Inspect AI sample's scores):
    #: written once the span is stored, in the span's project.
    annotations: list[AnnotationInput] = field(default_factory=list)


@dataclass(slots=True)
class Skipped:
    """A record a reader read and did not turn into a span (an unknown type, a meta record):
    counted in the import summary, never fatal."""

    kind: str
    line: int | None = None


@dataclass(slots=True)
class Malformed:
    """A line that is not what the format allows (truncated JSON, say): rejected with its line
    number in the import summary; the rest of the file is still read."""

    line: int | None
    reason: str


@dataclass(slots=True)
class Resume:
    """Where a later import of the grown file may start reading (a reader that yields none is
    read from the start each time): ``line``, the first line of the earliest turn that may
    still grow (every record before it belongs to turns that are complete), and ``keep``, the
    lines before it a read from ``line`` needs as well (a session header, say). Lines are those
    of the file, 1-based. The importer hands a resumed read the file with every other line
    before ``line`` blank, so line numbers, and ids made from them, stay the same. ``open``: a
    turn's root was held back as still in progress (the file is read again once it is idle,
    even unchanged). ``trace_id`` is that turn's trace and ``pending_ns`` the earliest start of
    its steps held back (a tool call waiting for its result, a response still being written):
    its steps starting from then are left for a later read too, so a step is stored only once
    every step before it is known, and its number and labels are those of a read of the whole
    turn."""

    line: int
    keep: tuple[int, ...] = ()
    open: bool = False
    trace_id: str | None = None
    pending_ns: int | None = None


Item = StepSpan | Skipped | Malformed | Resume


class Reader(Protocol):
    """One transcript format."""

    #: ``claude_code``, ``codex``, ``swe_agent``, ``mini_swe_agent``, ``openhands``, ``inspect``.
    name: str

    def sniff(self, path: Path, head: bytes) -> bool:
        """Whether this file is this format, from its path and its first bytes (up to 64 KiB,
        decompressed)."""
        ...

    def read(self, path: Path, stream: IO[bytes], redact: Redact) -> Iterator[Item]:
        """The spans of one file (``stream`` is the decompressed content of ``path``; a reader
        may open files beside it, e.g. Claude Code's subagent transcripts). Every string that
        came from the transcript passes through ``redact`` first. An incremental reader ends
        with a :class:`Resume`."""
        ...


class Redact(Protocol):
    """Secret redaction: text in, text out; counts what it replaced."""

    count: int

    def __call__(self, text: str) -> str: ...

    def value(self, value: Any) -> Any:
        """A JSON value with every string redacted (keys too); its shape stays the same."""
        ...

    def value_of(self, text: bytes, value: Any) -> Any:
        """:meth:`value` of ``value``, parsed from the JSON text ``text`` (or a part of it);
        the text may tell at once that nothing in it needs redacting."""
        ...


def first(mapping: Mapping[str, Any], *keys: str) -> Any:
    """The first of ``keys`` present and not None."""
    for key in keys:
        value = mapping.get(key)
        if value is not None:
            return value
    return None
