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
        default=32 * 1024 * 1024,
        ge=1024 * 1024,
        description="Approximate bytes of decoded spans waiting for the writer before ingest "
        "answers 503 with Retry-After. Bounds memory under overload: 32 MB is about five "
        "seconds of backlog at the writer's ~1,500-2,000 spans/s of 3 KB spans on a 2M-span "
        "store, so a longer queue would only add memory (the server's RSS target is 1.5 GB: "
        "this, max_body_bytes_in_flight, duckdb_memory_max and ~400 MB of Python and jq "
        "workers). Measured at 2M spans, 64 MB here and 128 MB of bodies in flight gave an "
        "overload RSS peak 80 MB higher at the same ingest rate.",
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
    otlp_redact: bool = Field(
        default=False,
        description="Redact secrets (API keys, tokens, private keys, passwords in URLs, "
        ".env-style assignments) in the string attribute values of spans received over OTLP "
        "(/v1/traces, /v1/logs) and Phoenix's POST /v1/projects/{project}/spans, as "
        "traceproof ingest does for transcripts. Off by default.",
    )
    max_spans_request_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=1024,
        description="Largest Arrow IPC body accepted on POST /api/v1/spans (what traceproof "
        "ingest sends to a server; 413 above).",
    )
    max_spans_request_batches: int = Field(
        default=1024,
        ge=1,
        description="Most Arrow record batches in one POST /api/v1/spans body (400 above); "
        "traceproof ingest sends one per request.",
    )
    max_api_request_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1024,
        description="Largest request body accepted on /api/v1/tools/* and /mcp (413 above).",
    )
    max_body_bytes_in_flight: int = Field(
        default=64 * 1024 * 1024,
        ge=1024 * 1024,
        description="Total bytes of request bodies being read or decoded at once, over every "
        "route (declared Content-Length counted up front, streamed and decompressed bytes as "
        "they come). Beyond it requests answer 503 with Retry-After once their body is read "
        "and dropped in chunks. Bounds memory when many senders post large bodies at once "
        "(each body decoded holds about five times its size for a moment); 64 MB admits a "
        "body of the largest size (max_request_bytes) and keeps both ingest threads busy with "
        "ordinary ones.",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names accepted in Host and Origin headers besides loopback and the "
        "bound address (DNS-rebinding protection on every route), e.g. a container's service "
        "name; a name may end in :PORT. '*' accepts any Host (Origin is still checked): only "
        "behind a proxy that checks it, with a token.",
    )
    max_attribute_key_depth: int = Field(
        default=64,
        ge=1,
        description="Most dotted segments in an attribute key; a span with a deeper key is "
        "rejected (partial_success), so stored spans stay readable by jq and filters.",
    )
    max_attribute_key_chars: int = Field(
        default=1024,
        ge=16,
        description="Longest attribute key kept; a span with a longer key is rejected.",
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
        default=2_048,
        ge=1,
        description="Spans per batch handed to the writer by file import (a batch ends at "
        "the first trace that reaches it). At import_row_group_size or more, a batch fills a "
        "whole row group, which DuckDB writes straight into the store file at commit (its "
        "optimistic write) instead of into the write-ahead log and memory and again at a "
        "checkpoint. Measured on a 1 GB Claude Code history "
        "(benchmarks/transcript_import.py): 2048 spans with 2048-row groups wrote the data "
        "~1.2x to disk and imported ~35% faster than 8 MB batches into 16,384-row groups, "
        "which wrote it ~3.5x (WAL, checkpoints rewriting half-full row groups, evictions).",
    )
    import_batch_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        description="Approximate bytes at which a file import's batch ends before "
        "import_batch_spans, when its spans are too large for import_batch_spans of them to "
        "fit import_full_batch_bytes. Such a batch goes through DuckDB's write-ahead log and "
        "is held in import_memory_limit several times over until a checkpoint: at 80 MB, "
        "16 MB batches of 40 KB spans ran out of memory (and DuckDB invalidated the store).",
    )
    import_full_batch_bytes: int = Field(
        default=20 * 1024 * 1024,
        ge=1024,
        description="Most approximate bytes of a file import's batch whose spans are small "
        "enough that import_batch_spans of them fit: such a batch fills a whole row group, "
        "which DuckDB writes straight into the file with far less memory (1 GB Claude Code "
        "history, ~8 KB spans: 2048-span batches of ~17 MB within an 80 MB import_memory_limit).",
    )
    duckdb_memory_limit: str = Field(
        default="auto",
        description="DuckDB's memory_limit for the store (its buffer pool: cached blocks, writes "
        "not yet checkpointed, query state). 'auto' (the default) takes duckdb_memory_fraction "
        "of this machine's memory (or of the container's cgroup limit when lower), clamped "
        "between duckdb_memory_min and duckdb_memory_max; or a size such as 512MB or 2GB. A "
        "query that needs more spills to duckdb_temp_directory.",
    )
    duckdb_memory_fraction: float = Field(
        default=0.2,
        gt=0,
        le=0.9,
        description="Share of the machine's memory an 'auto' memory_limit takes.",
    )
    duckdb_memory_min: str = Field(
        default="512MB", description="Floor of an 'auto' memory_limit (small machines)."
    )
    duckdb_memory_max: str = Field(
        default="700MB",
        description="Ceiling of an 'auto' memory_limit (large machines): the server's RSS stays "
        "near this plus DuckDB's allocator overhead (~100-200 MB), the Python process and jq "
        "workers (~300-400 MB) and the ingest byte budgets (queue_max_bytes, "
        "max_body_bytes_in_flight); queries beyond it spill to disk. Measured on a 2M-span "
        "store with 4 callers and 8 senders: 800 MB gave an RSS peak of 1.32 GB under ingest "
        "and 1.49 GB under overload, 700 MB 1.23 and 1.47 GB at the same ingest rate and query "
        "times. (At 640 MB, checkpoints used to take 40-110 s: they merged row groups, which "
        "duckdb_max_vacuum_tasks now turns off.) A store much larger than 2M spans needs more "
        "(set duckdb_memory_limit).",
    )
    duckdb_temp_directory: str = Field(
        default="auto",
        description="Where DuckDB spills queries (sorts, joins, aggregates) and evicted "
        "uncheckpointed writes that do not fit memory_limit. 'auto': a private directory "
        "'<store file>.tmp' beside the store, created on first spill and removed on close; '' "
        "turns spilling off (such queries then fail with out of memory). Set before the "
        "configuration is locked, so the sql tool's sandbox (no file access) does not affect it.",
    )
    duckdb_max_temp_directory_size: str = Field(
        default="4GB",
        description="DuckDB's max_temp_directory_size: most disk the temp directory may hold "
        "(DuckDB's own default is 90% of the free disk). DuckDB 1.5.5 enforces it for evicted "
        "buffer blocks; a sort or hash aggregate spilling its partitions was seen to pass it, "
        "so keep disk headroom beyond it.",
    )
    duckdb_allocator_flush_threshold: str = Field(
        default="32MB",
        description="DuckDB's allocator_flush_threshold: after a task that allocated more "
        "than this, DuckDB's allocator (jemalloc in its Linux builds) returns its free memory "
        "to the system. DuckDB's default, 128 MB, let memory a checkpoint or a query had "
        "freed stay in the process for seconds.",
    )
    duckdb_allocator_background_threads: bool = Field(
        default=True,
        description="DuckDB's allocator_background_threads: a jemalloc thread returns freed "
        "memory to the system on its decay schedule even when no DuckDB task ends.",
    )
    duckdb_max_vacuum_tasks: int = Field(
        default=0,
        ge=0,
        description="DuckDB's max_vacuum_tasks: row-group merges a checkpoint may do. DuckDB's "
        "default (100) made the server's checkpoints merge the smaller row groups written by "
        "traceproof ingest (import_row_group_size) into the server's larger ones: on a "
        "300k-span store each such checkpoint held ~700 MB of rewritten rows, spilled to disk "
        "and stalled ingest for 15-60 s (the 40-110 s checkpoints seen at 2M spans with a "
        "640 MB limit). Spans are never deleted, so there is little to reclaim; 0 turns it "
        "off.",
    )
    duckdb_threads: int = Field(default=2, ge=1, description="DuckDB worker threads.")
    duckdb_row_group_size: int = Field(
        default=122_880,
        ge=2048,
        multiple_of=2048,
        description="Rows per DuckDB row group written by this process (DuckDB's default).",
    )
    import_memory_limit: str = Field(
        default="80MB",
        description="DuckDB's memory_limit while traceproof ingest or watch holds the store "
        "itself. An import only appends: DuckDB fills its pool up to the limit with blocks it "
        "has written, so a larger limit is mostly RSS. A batch of import_batch_spans writes "
        "one row group at a time (~17 MB of 8 KB spans, held uncompressed and compressed "
        "while it is written): on a 1 GB Claude Code history (benchmarks/transcript_import.py) "
        "72 MB ran out of memory, 80 MB peaked ~20 MB lower than 96 MB at the same speed.",
    )
    import_threads: int = Field(
        default=1,
        ge=1,
        description="DuckDB worker threads while traceproof ingest or watch holds the store "
        "itself. The import's CPU is the transcript reader's (Python, one core); on one core "
        "a second DuckDB thread made the same writes slower and kept ~50 MB more RSS.",
    )
    import_row_group_size: int = Field(
        default=2_048,
        ge=2048,
        multiple_of=2048,
        description="Row group size while traceproof ingest or watch holds the store itself "
        "(DuckDB's least): a batch of import_batch_spans fills whole row groups, written once "
        "and compressed at commit, and a row group of multi-kilobyte span text is small "
        "enough to hold in import_memory_limit while it is written.",
    )
    duckdb_checkpoint_threshold: str = Field(
        default="64MB",
        description="Write-ahead log size at which DuckDB checkpoints into the main file (at "
        "commit, in the writer). Writes not yet checkpointed stay in memory_limit (about 1.5-2x "
        "the WAL size) and compete with queries, so this stays a small part of memory_limit; "
        "larger means fewer checkpoints during ingest and a longer WAL replay after a crash.",
    )
    duckdb_idle_checkpoint_seconds: float = Field(
        default=1.0,
        gt=0,
        description="Seconds without a new batch after which the writer checkpoints (when the "
        "WAL holds at least duckdb_idle_checkpoint_bytes), giving queries back the memory that "
        "recent writes held.",
    )
    duckdb_idle_checkpoint_bytes: int = Field(
        default=1024 * 1024,
        ge=0,
        description="Smallest WAL that an idle checkpoint writes into the file (0: never "
        "checkpoint on idle, only at duckdb_checkpoint_threshold).",
    )
    malloc_arena_max: int = Field(
        default=2,
        ge=0,
        description="Most glibc malloc arenas of the server, ingest and watch processes (Linux "
        "with glibc; set at "
        "start, before its threads). glibc's default, 8 per core, let freed request bodies "
        "and span text sit in a dozen thread arenas (about 200 MB free but kept, measured "
        "under ingest); the writer and two ingest threads do nearly all the allocating, so 2 "
        "costs no measurable speed. 0 leaves glibc's default.",
    )
    malloc_mmap_threshold: int = Field(
        default=256 * 1024,
        ge=0,
        description="Bytes from which a malloc gets a mapping of its own, unmapped when freed "
        "(glibc's M_MMAP_THRESHOLD, fixed): request bodies, decoded buffers and Arrow batches "
        "go back to the system at once instead of fragmenting the heap. 0 leaves glibc's "
        "dynamic threshold (which rises to 32 MB after the first large free).",
    )
    malloc_trim_bytes: int = Field(
        default=64 * 1024 * 1024,
        ge=0,
        description="The writer returns the heap's free pages to the system (glibc's "
        "malloc_trim, and a purge of DuckDB's jemalloc, which otherwise keeps freed pages for "
        "5-10 s) after every checkpoint and each time this many bytes of spans have been "
        "committed since the last time (about 15 s of full-speed ingest; a trim takes "
        "milliseconds). 0: never.",
    )
    arrow_memory_pool: str = Field(
        default="system",
        pattern="^(system|default|jemalloc|mimalloc)$",
        description="pyarrow's memory pool in the server: 'system' (malloc, so the settings "
        "above apply to Arrow batches too), 'default' (pyarrow's choice, mimalloc in its "
        "wheels: it kept about twice the batches it built), 'jemalloc' or 'mimalloc'.",
    )
    store_reopen_attempts: int = Field(
        default=5,
        ge=1,
        description="Times the writer tries to reopen the store after a fatal DuckDB error "
        "before the store stays failed (then `traceproof serve` exits with status 3).",
    )
    store_reopen_backoff_seconds: float = Field(
        default=1.0,
        ge=0,
        description="Wait before reopen attempt n+1: n times this many seconds.",
    )
    store_write_retries: int = Field(
        default=2,
        ge=0,
        description="Times a batch whose write hit a fatal error is written again after the "
        "store reopened, before it is answered with an error (never acknowledged unwritten).",
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
    sql_max_fetch_chars: int = Field(
        default=4_000_000,
        ge=10_000,
        description="Characters of values one sql call reads into the server (each value is "
        "first clipped inside DuckDB to what the response could show); rows past it are left "
        "unread and the result says so. Bounds a call's memory whatever its values.",
    )
    sql_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Time limit of one sql query (and of every tool's queries); the query is "
        "interrupted when it runs longer.",
    )
    search_window_spans: int = Field(
        default=25_000,
        ge=1,
        description="Spans in the first start_time window that a newest- or oldest-first regex "
        "search (search_spans pattern, search_traces regex) reads; each next window holds as "
        "many as all before it, and the search stops once its page is full, so a common pattern "
        "reads a few percent of a large store and a rare one still reads each span once (on "
        "2M spans: a common pattern's page in 0.9 s instead of 4.8 s). A scope with fewer than "
        "twice this many spans is read in one pass.",
    )
    query_threads: int = Field(
        default=4,
        ge=1,
        description="Worker threads of the server for light tool calls (list_projects, "
        "get_trace_preview, get_span_data, find_in_trace, unfiltered searches…). Separate from "
        "the heavy-query and ingest threads, so neither can starve the other. A call waiting "
        "for a thread spends its own time limit (sql_timeout_seconds) waiting.",
    )
    query_queue_max: int = Field(
        default=64,
        ge=0,
        description="Light tool calls that may wait for a query thread; more answer [busy] "
        "(HTTP 503 with Retry-After).",
    )
    heavy_queries: int = Field(
        default=3,
        ge=1,
        description="Heavy tool calls the server runs at once, each on a thread of its own: "
        "sql, jq, aggregate, search_spans with pattern or where, search_traces with regex or "
        "where. More wait for a slot (heavy_queue_max).",
    )
    heavy_queue_max: int = Field(
        default=8,
        ge=0,
        description="Heavy tool calls that may wait for a heavy slot; the wait counts against "
        "the call's time limit (sql_timeout_seconds) and a call whose limit passes while it "
        "waits answers [busy] without running. One more than this answers [busy] (HTTP 503 "
        "with Retry-After) at once. 8 lets a few agents' bursts queue briefly while a storm "
        "of long queries is still refused quickly.",
    )
    ingest_threads: int = Field(
        default=2,
        ge=1,
        description="Threads that decode OTLP requests, apart from the query threads (ingest "
        "latency stays low while queries run, and the reverse).",
    )
    jq_workers: int = Field(
        default=3,
        ge=1,
        description="jq child processes running programs at once. A call waits for a free one "
        "within its time limit, and a program is killed at the call's deadline.",
    )
    jq_max_spans: int = Field(
        default=500, ge=1, description="Most spans the jq tool reads when it runs over a filter."
    )
    annotation_text_max_chars: int = Field(
        default=20_000,
        ge=100,
        description="Longest annotation explanation (and metadata as JSON) accepted, in "
        "characters; a longer one is refused.",
    )
    annotate_confirm_over: int = Field(
        default=20,
        ge=1,
        description="annotate with filters writes at most this many targets unless confirm is "
        "set; above it, it answers how many it would touch.",
    )
    annotate_max_targets: int = Field(
        default=10_000,
        ge=1,
        description="Most targets one annotate call (or one Phoenix request) writes.",
    )
    errors_merge_similarity: float = Field(
        default=0.8,
        ge=0.5,
        le=1.01,
        description="categorize_errors: share of word positions two message templates of one "
        "error type must agree on to be merged into one cluster (above 1: never merge).",
    )
    errors_merge_templates: int = Field(
        default=1000,
        ge=0,
        description="categorize_errors: the largest clusters whose templates are compared for "
        "merging (bounds the cost of merging on very varied errors).",
    )
    errors_example_chars: int = Field(
        default=300,
        ge=40,
        description="categorize_errors: characters of each example's raw message.",
    )
    token: str | None = Field(
        default=None,
        description="Bearer token that protects /mcp, /v1/traces and /api when set "
        "(clients send Authorization: Bearer <token>).",
    )
    config: Path | None = Field(
        default=None,
        description="The project config file (traceproof.toml: evaluators, tasks, annotation "
        "configs); default: traceproof.toml in the working directory, when there is one.",
    )

    toolsets: str | None = Field(
        default=None,
        description="Tool families the MCP server offers, comma-separated (inspect, judgment, "
        "proof, trajectories; default all): a host that wants a smaller tools/list asks for "
        "fewer. `traceproof mcp --toolsets` sets it too.",
    )
    # Evaluators (traceproof/evals/).
    eval_code_timeout_seconds: float = Field(
        default=60.0,
        gt=0,
        description="Time limit of one batch of a custom code evaluator; past it the child "
        "process is killed and the batch's unanswered targets record a timeout error. An "
        "evaluator's own `timeout` in traceproof.toml overrides it.",
    )
    eval_code_batch_size: int = Field(
        default=200,
        ge=1,
        le=100_000,
        description="Targets sent to a custom code evaluator's child process per batch.",
    )
    eval_concurrency: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Batches an evaluator runs at once (child processes for custom code, "
        "concurrent calls for a judge).",
    )
    eval_max_targets: int = Field(
        default=10_000,
        ge=1,
        description="Most targets one evaluate call runs an evaluator on.",
    )
    eval_wait_max_seconds: float = Field(
        default=120.0,
        ge=0,
        description="Longest evaluate waits for its run before it answers with a job id and "
        "the run continues in the background (a call's wait is cut to it).",
    )
    jobs_kept: int = Field(
        default=100,
        ge=1,
        description="Finished background jobs (evaluate runs) whose status a server keeps in "
        "memory; older ones are forgotten (their results are annotations in the store).",
    )

    # Experiments (traceproof/experiments/).
    experiment_timeout_seconds: float = Field(
        default=120.0,
        gt=0,
        description="Time limit of one run of a task unless the task or the call sets one; "
        "past it the run's whole process group is killed and the run records a timeout.",
    )
    experiment_concurrency: int = Field(
        default=4, ge=1, le=64, description="Runs of an experiment at once unless the call sets it."
    )
    experiment_output_max_bytes: int = Field(
        default=1_000_000,
        ge=1_000,
        description="Bytes of a run's output kept; a longer output is clipped and the run "
        "records bad_output (the rest is read and dropped, never held).",
    )
    experiment_span_wait_seconds: float = Field(
        default=10.0,
        ge=0,
        description="Longest a finished run waits for its spans to be stored before it is "
        "evaluated.",
    )
    experiment_span_quiet_seconds: float = Field(
        default=0.2,
        ge=0,
        description="A run's spans are taken as all stored once no new one arrived for this "
        "long after the task ended.",
    )
    experiment_dry_run_examples: int = Field(
        default=3, ge=1, description="Examples a dry run runs (it records nothing)."
    )

    # -- the LLM client and the judge (traceproof/evals/llm.py, judge.py, calibration.py) ------
    llm_model: str = Field(
        default="claude-sonnet-5-5",
        description="Model the LLM judge (and other LLM work) calls unless a judge names one.",
    )
    llm_timeout_seconds: float = Field(
        default=60.0, gt=0, description="Time limit of one LLM call (each retry has its own)."
    )
    llm_max_retries: int = Field(
        default=4,
        ge=0,
        le=20,
        description="Retries of an LLM call answered 429, 529 (overloaded), 5xx or not at all, "
        "with exponential backoff and jitter (Retry-After honoured).",
    )
    llm_retry_base_seconds: float = Field(
        default=0.5, ge=0, description="First backoff of an LLM retry; doubles each retry."
    )
    llm_retry_max_seconds: float = Field(
        default=30.0, ge=0, description="Longest wait before one LLM retry (Retry-After included)."
    )
    llm_concurrency: int = Field(
        default=8, ge=1, le=256, description="LLM calls in flight at once per client."
    )
    llm_prices: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description="USD per million input and output tokens by model or model-name prefix, "
        'e.g. {"claude-sonnet-5-5": [3, 15]}; overrides the built-in table (JSON in the env).',
    )
    judge_context_tokens: int = Field(
        default=4_000,
        ge=200,
        description="Tokens of trace context (compact tree and span texts) a judge is shown.",
    )
    judge_text_chars: int = Field(
        default=20_000,
        ge=100,
        description="Most characters of a target's input, output or expected text in a prompt.",
    )
    calibration_min_agreement: float = Field(
        default=0.80, ge=0, le=1, description="Agreement with people a judge needs to pass."
    )
    calibration_min_tpr: float = Field(
        default=0.70, ge=0, le=1, description="True-positive rate a two-label judge needs."
    )
    calibration_min_tnr: float = Field(
        default=0.70, ge=0, le=1, description="True-negative rate a two-label judge needs."
    )
    calibration_min_kappa: float = Field(
        default=0.60, ge=-1, le=1, description="Cohen's kappa a judge needs to pass."
    )
    calibration_min_pairs: int = Field(
        default=10,
        ge=1,
        description="Targets labelled by people (and judged) a calibration needs at least.",
    )

    # -- proof: comparing experiments ----------------------------------------------------------
    gate_default: str = Field(
        default="no_regressions,calibrated_judges",
        description="Gate applied by compare_experiments and `traceproof experiment compare` "
        "when none is given (rules: README, Gates).",
    )
    compare_alpha: float = Field(
        default=0.05,
        gt=0,
        lt=1,
        description="Significance level of a comparison's tests (Holm-adjusted) and its MDE.",
    )
    compare_power: float = Field(
        default=0.8, gt=0, lt=1, description="Power the minimal detectable effect is stated at."
    )
    compare_bootstrap_resamples: int = Field(
        default=10_000,
        ge=100,
        le=1_000_000,
        description="Resamples of the paired bootstrap interval (seeded: reproducible).",
    )

    def for_import(self) -> Settings:
        """These settings for a bulk import that holds the store alone (no concurrent readers,
        so the small row groups' optimistic writes are safe): a smaller memory footprint."""
        return self.model_copy(
            update={
                "duckdb_memory_limit": self.import_memory_limit,
                "duckdb_row_group_size": self.import_row_group_size,
                "duckdb_threads": self.import_threads,
            }
        )
