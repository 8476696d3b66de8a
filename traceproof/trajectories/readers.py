"""The transcript readers ``traceproof ingest`` knows, and which one reads a file.

:func:`detect` asks each reader in :data:`READERS` order whether a file is its format, from the
path and the first (decompressed) bytes; the first that says yes reads it. A file no reader
claims goes to the OTLP and span-JSON importers (:mod:`traceproof.ingest.files`).
"""

from __future__ import annotations

from pathlib import Path

from traceproof.trajectories.claude_code import ClaudeCodeReader
from traceproof.trajectories.codex import CodexReader
from traceproof.trajectories.common import Reader
from traceproof.trajectories.inspect_ai import InspectReader
from traceproof.trajectories.openhands import OpenHandsReader
from traceproof.trajectories.swe_agent import MiniSweAgentReader, SweAgentReader

#: Every reader, most specific first (Inspect AI's logs, whose first bytes say what they are;
#: mini-swe-agent's ``.traj.json`` before SWE-agent's ``.traj``).
READERS: list[Reader] = [
    InspectReader(),
    ClaudeCodeReader(),
    CodexReader(),
    OpenHandsReader(),
    MiniSweAgentReader(),
    SweAgentReader(),
]

#: How many decompressed bytes :func:`detect` is shown.
HEAD_BYTES = 64 * 1024


def detect(path: Path, head: bytes) -> Reader | None:
    """The reader for ``path`` (``head``: its first bytes, decompressed), or None."""
    for reader in READERS:
        if reader.sniff(path, head):
            return reader
    return None
