"""Every limit and default in one place.

Each setting has a default and help text, and can be set from the environment with the
``TRACEPROOF_`` prefix (``TRACEPROOF_DB``, ``TRACEPROOF_PORT``, ...) or by the CLI flags that
mirror them.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DB = Path(".traceproof") / "traceproof.duckdb"


class Settings(BaseSettings):
    """traceproof's settings. Environment variables use the prefix ``TRACEPROOF_``."""

    model_config = SettingsConfigDict(env_prefix="TRACEPROOF_", extra="ignore")

    db: Path = Field(
        default=DEFAULT_DB,
        description="DuckDB file of the store; created with its folder when missing.",
    )
    host: str = Field(default="127.0.0.1", description="Address the server binds.")
    port: int = Field(
        default=4318, ge=0, le=65535, description="Port of OTLP/HTTP (and MCP at /mcp)."
    )
    default_project: str = Field(
        default="default",
        description="Project of spans whose resource names neither "
        "openinference.project.name nor service.name.",
    )
    queue_max_batches: int = Field(
        default=64, ge=1, description="Batches waiting for the writer before ingest is refused."
    )
    queue_max_bytes: int = Field(
        default=256 * 1024 * 1024,
        ge=1024 * 1024,
        description="Approximate bytes of decoded spans waiting for the writer before ingest "
        "answers 503 with Retry-After. Bounds memory under overload.",
    )
    commit_max_spans: int = Field(
        default=20_000,
        ge=1,
        le=100_000,
        description="Most spans the writer commits in one transaction when it groups batches. "
        "Kept well below a row group (122,880 rows): DuckDB 1.5 writes larger transactions "
        "optimistically, and readers can then see part of one while it commits.",
    )
    max_request_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        description="Largest OTLP request body accepted, after decompression (413 above).",
    )
    max_requests_in_flight: int = Field(
        default=32,
        ge=1,
        description="OTLP requests being read, decoded or written at once; more answer 503.",
    )
    retry_after_seconds: int = Field(
        default=1, ge=1, description="Retry-After sent with 503 when the write queue is full."
    )
    import_batch_spans: int = Field(
        default=2_500, ge=1, description="Spans per batch handed to the writer by file import."
    )
    import_batch_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        description="Approximate bytes per batch handed to the writer by file import.",
    )
    duckdb_memory_limit: str = Field(
        default="512MB",
        description="DuckDB's memory_limit for the store (bounds its buffer pool).",
    )
    duckdb_threads: int = Field(default=2, ge=1, description="DuckDB worker threads.")
    duckdb_row_group_size: int = Field(
        default=122_880,
        ge=2048,
        multiple_of=2048,
        description="Rows per DuckDB row group written by this process (DuckDB's default).",
    )
    import_memory_limit: str = Field(
        default="192MB",
        description="DuckDB's memory_limit while traceproof ingest holds the store itself.",
    )
    import_row_group_size: int = Field(
        default=16_384,
        ge=2048,
        multiple_of=2048,
        description="Row group size while traceproof ingest holds the store itself: a "
        "checkpoint then compresses less multi-kilobyte span text at once (lower peak memory).",
    )
    duckdb_checkpoint_threshold: str = Field(
        default="256MB",
        description="Write-ahead log size at which DuckDB checkpoints into the main file. "
        "Larger means fewer, cheaper-per-span checkpoints during ingest and a longer WAL replay "
        "after a crash.",
    )

    # -- agents' tools ------------------------------------------------------------------------
    response_chars: int = Field(
        default=20_000,
        ge=1_000,
        description="Default character budget of one tool response (compact JSON). A call may "
        "ask for less or more with max_chars, up to response_chars_max.",
    )
    response_chars_max: int = Field(
        default=80_000,
        ge=1_000,
        le=80_000,
        description="Hard ceiling of a tool response's characters (at most 80,000, the "
        "max_chars maximum in the tools' schema): a call asking for more is refused "
        "(Claude Code rejects results over 25,000 tokens).",
    )
    sql_row_limit: int = Field(
        default=200, ge=1, description="Rows the sql tool returns when a call names no limit."
    )
    sql_max_rows: int = Field(default=5_000, ge=1, description="Most rows one sql call returns.")
    sql_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Time limit of one sql query (and of every tool's queries); the query is "
        "interrupted when it runs longer.",
    )
    jq_max_spans: int = Field(
        default=500, ge=1, description="Most spans the jq tool reads when it runs over a filter."
    )
    token: str | None = Field(
        default=None,
        description="Bearer token that protects /mcp and /v1/traces when set "
        "(clients send Authorization: Bearer <token>).",
    )

    toolsets: str | None = Field(
        default=None,
        description="Tool families the MCP server offers, comma-separated (inspect, judgment, "
        "proof, trajectories; default all): a host that wants a smaller tools/list asks for "
        "fewer. `traceproof mcp --toolsets` sets it too.",
    )

    def for_import(self) -> Settings:
        """These settings for a bulk import that holds the store alone (no concurrent readers,
        so the small row groups' optimistic writes are safe): a smaller memory footprint."""
        return self.model_copy(
            update={
                "duckdb_memory_limit": self.import_memory_limit,
                "duckdb_row_group_size": self.import_row_group_size,
            }
        )
