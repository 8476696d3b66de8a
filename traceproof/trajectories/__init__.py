"""Coding-agent trajectories: transcript readers (Claude Code, Codex, SWE-agent, OpenHands,
Inspect AI), secret redaction, action labels and trajectory analysis.

Readers turn a transcript into :class:`~traceproof.trajectories.common.StepSpan` objects (one
per session turn, model call, tool call and subagent); ``traceproof/ingest/`` detects the
format and stores them like any other span, so every read tool, filter, ``aggregate`` and
``sql`` already understands them. Nothing here imports ``duckdb``.
"""
