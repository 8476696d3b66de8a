"""The store's schema as numbered migrations, recorded in ``schema_migrations``.

A migration is applied once, in its own transaction, in version order. Never edit a released
migration: add the next number.

Public tables and views (what SQL users and tools see):

- ``projects``  one row per project name.
- ``spans``     one row per span; promoted columns plus ``attributes``/``events``/``links``/
                ``resource`` as JSON. Primary key ``(trace_id, span_id)``: re-sent spans are
                ignored.
- ``traces``    view: one row per (project, trace) over ``trace_index``.
- ``sessions``  view: one row per (project, session) over ``traces``.

Migration 2, judgment (issue 10):

- ``annotations``         the current annotation per (target, name, annotator, identifier).
- ``annotation_history``  every earlier version of an annotation (same columns + ``replaced_at``).
- ``annotation_versions`` view: current and earlier versions together.
- ``annotation_configs``  what annotations of a name may say (categorical, continuous, freeform).
- ``evaluator_definitions`` evaluator and judge definitions by content hash.
- ``calibrations``        a judge's measured agreement with people, with its verdict.

Migration 3, proof (issue 11):

- ``datasets``             one row per dataset (name unique).
- ``dataset_versions``     every version of a dataset: an add or a removal makes the next one.
- ``dataset_examples``     examples with the version that added them and the one that removed
                           them (version ``v`` holds ``added_version <= v`` and ``removed_version``
                           NULL or ``> v``); the id is a hash of the example's content.
- ``experiments``          one row per experiment: task, dataset version, evaluators with their
                           hashes and calibration state, status, provenance, summary.
- ``experiment_runs``      one row per (experiment, example, repetition): status, error,
                           output, the traces its spans formed, latency, tokens, cost.
- ``experiment_baselines`` the baseline experiment of each (task, dataset).

Evaluations of runs are annotations with ``target_kind = 'experiment_run'``.

Migration 4, live transcripts (issue 12):

- ``transcript_files``  per transcript file imported: what was read (size, mtime, identity, a
                        hash of its first bytes) and where a re-import of the grown file resumes
                        (see :mod:`traceproof.storage.transcript_files`).

``trace_index`` holds per-trace aggregates merged incrementally by the writer, so a trace row is
right whatever order its spans arrive in: every field is an order-independent aggregate (min,
max, sum, or the argmin of ``(start_time, span_id)``).
"""

from __future__ import annotations

from typing import NamedTuple


class Migration(NamedTuple):
    version: int
    name: str
    sql: str


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "projects, spans, trace index, traces and sessions views",
        """
        CREATE TABLE projects (
            name VARCHAR PRIMARY KEY,
            created_at TIMESTAMP NOT NULL
        );

        CREATE TABLE spans (
            project VARCHAR NOT NULL,
            trace_id VARCHAR NOT NULL,
            span_id VARCHAR NOT NULL,
            parent_span_id VARCHAR,
            name VARCHAR NOT NULL,
            span_kind VARCHAR NOT NULL,
            otel_kind VARCHAR,
            status VARCHAR NOT NULL,
            status_message VARCHAR,
            start_time TIMESTAMP NOT NULL,
            end_time TIMESTAMP NOT NULL,
            latency_ms DOUBLE NOT NULL,
            session_id VARCHAR,
            user_id VARCHAR,
            model VARCHAR,
            tool_name VARCHAR,
            prompt_tokens BIGINT,
            completion_tokens BIGINT,
            total_tokens BIGINT,
            input_value VARCHAR,
            input_mime_type VARCHAR,
            output_value VARCHAR,
            output_mime_type VARCHAR,
            error_type VARCHAR,
            error_message VARCHAR,
            attributes JSON,
            events JSON,
            links JSON,
            resource JSON,
            scope_name VARCHAR,
            PRIMARY KEY (trace_id, span_id)
        );

        CREATE TABLE trace_index (
            project VARCHAR NOT NULL,
            trace_id VARCHAR NOT NULL,
            start_time TIMESTAMP NOT NULL,
            end_time TIMESTAMP NOT NULL,
            span_count BIGINT NOT NULL,
            error_count BIGINT NOT NULL,
            llm_span_count BIGINT NOT NULL,
            prompt_tokens BIGINT NOT NULL,
            completion_tokens BIGINT NOT NULL,
            total_tokens BIGINT NOT NULL,
            session_id VARCHAR,
            user_id VARCHAR,
            -- the root: the earliest span without a parent (NULL until it arrives)
            root_start TIMESTAMP,
            root_span_id VARCHAR,
            root_name VARCHAR,
            root_span_kind VARCHAR,
            root_status VARCHAR,
            root_input VARCHAR,
            root_output VARCHAR,
            -- the earliest span of all: names the trace while its root is missing
            first_start TIMESTAMP NOT NULL,
            first_span_id VARCHAR NOT NULL,
            first_name VARCHAR NOT NULL,
            PRIMARY KEY (project, trace_id)
        );

        CREATE VIEW traces AS
        SELECT
            project,
            trace_id,
            coalesce(root_name, first_name) AS name,
            root_span_id,
            root_span_id IS NOT NULL AS has_root,
            coalesce(root_span_kind, 'UNKNOWN') AS span_kind,
            CASE WHEN error_count > 0 THEN 'ERROR' ELSE 'OK' END AS status,
            start_time,
            end_time,
            (epoch_us(end_time) - epoch_us(start_time)) / 1000.0 AS latency_ms,
            span_count,
            error_count,
            llm_span_count,
            prompt_tokens,
            completion_tokens,
            total_tokens,
            session_id,
            user_id,
            root_input AS input_preview,
            root_output AS output_preview
        FROM trace_index;

        CREATE VIEW sessions AS
        SELECT
            project,
            session_id,
            count(*) AS trace_count,
            sum(span_count) AS span_count,
            sum(error_count) AS error_count,
            sum(total_tokens) AS total_tokens,
            min(start_time) AS start_time,
            max(end_time) AS end_time,
            min(user_id) AS user_id
        FROM traces
        WHERE session_id IS NOT NULL
        GROUP BY project, session_id;
        """,
    ),
    Migration(
        2,
        "annotations, their history and configs, evaluator definitions, calibrations",
        """
        CREATE TABLE annotations (
            id VARCHAR PRIMARY KEY,
            project VARCHAR NOT NULL,
            -- span, trace or session (experiment runs come later)
            target_kind VARCHAR NOT NULL,
            -- the span, trace or session id
            target_id VARCHAR NOT NULL,
            -- the span's or trace's trace (NULL for sessions)
            trace_id VARCHAR,
            -- the span (span targets only)
            span_id VARCHAR,
            -- the target's session, when it has one
            session_id VARCHAR,
            name VARCHAR NOT NULL,
            label VARCHAR,
            score DOUBLE,
            explanation VARCHAR,
            metadata JSON,
            annotator_kind VARCHAR NOT NULL,
            annotator VARCHAR NOT NULL,
            identifier VARCHAR NOT NULL,
            version INTEGER NOT NULL,
            created_at TIMESTAMP NOT NULL,
            updated_at TIMESTAMP NOT NULL
        );

        CREATE TABLE annotation_history (
            id VARCHAR NOT NULL,
            project VARCHAR NOT NULL,
            target_kind VARCHAR NOT NULL,
            target_id VARCHAR NOT NULL,
            trace_id VARCHAR,
            span_id VARCHAR,
            session_id VARCHAR,
            name VARCHAR NOT NULL,
            label VARCHAR,
            score DOUBLE,
            explanation VARCHAR,
            metadata JSON,
            annotator_kind VARCHAR NOT NULL,
            annotator VARCHAR NOT NULL,
            identifier VARCHAR NOT NULL,
            version INTEGER NOT NULL,
            created_at TIMESTAMP NOT NULL,
            updated_at TIMESTAMP NOT NULL,
            replaced_at TIMESTAMP NOT NULL,
            PRIMARY KEY (id, version)
        );

        CREATE VIEW annotation_versions AS
        SELECT *, TRUE AS is_current, NULL::TIMESTAMP AS replaced_at FROM annotations
        UNION ALL
        SELECT * EXCLUDE (replaced_at), FALSE AS is_current, replaced_at FROM annotation_history;

        CREATE TABLE annotation_configs (
            name VARCHAR PRIMARY KEY,
            -- CATEGORICAL, CONTINUOUS or FREEFORM
            kind VARCHAR NOT NULL,
            -- [{"label": ..., "score": ...}] for CATEGORICAL
            labels JSON,
            lower_bound DOUBLE,
            upper_bound DOUBLE,
            -- MAXIMIZE, MINIMIZE or NONE
            direction VARCHAR NOT NULL,
            description VARCHAR,
            created_at TIMESTAMP NOT NULL,
            updated_at TIMESTAMP NOT NULL
        );

        CREATE TABLE evaluator_definitions (
            hash VARCHAR PRIMARY KEY,
            name VARCHAR NOT NULL,
            kind VARCHAR NOT NULL,
            definition JSON NOT NULL,
            created_at TIMESTAMP NOT NULL
        );

        CREATE TABLE calibrations (
            id VARCHAR PRIMARY KEY,
            judge_name VARCHAR NOT NULL,
            judge_hash VARCHAR NOT NULL,
            human_name VARCHAR NOT NULL,
            n BIGINT NOT NULL,
            metrics JSON NOT NULL,
            passed BOOLEAN NOT NULL,
            thresholds JSON NOT NULL,
            created_at TIMESTAMP NOT NULL
        );
        """,
    ),
    Migration(
        3,
        "datasets, their versions and examples, experiments, runs and baselines",
        """
        CREATE TABLE datasets (
            id VARCHAR PRIMARY KEY,
            name VARCHAR NOT NULL UNIQUE,
            -- the project its spans came from, when they came from one
            project VARCHAR,
            description VARCHAR,
            created_at TIMESTAMP NOT NULL,
            updated_at TIMESTAMP NOT NULL
        );

        CREATE TABLE dataset_versions (
            dataset_id VARCHAR NOT NULL,
            version INTEGER NOT NULL,
            -- examples in this version, and what it changed from the one before
            examples BIGINT NOT NULL,
            added BIGINT NOT NULL,
            removed BIGINT NOT NULL,
            note VARCHAR,
            created_at TIMESTAMP NOT NULL,
            PRIMARY KEY (dataset_id, version)
        );

        CREATE TABLE dataset_examples (
            dataset_id VARCHAR NOT NULL,
            -- a hash of the example's content (input and expected output)
            example_id VARCHAR NOT NULL,
            added_version INTEGER NOT NULL,
            -- NULL while the example is in the newest version
            removed_version INTEGER,
            input JSON NOT NULL,
            expected JSON,
            metadata JSON,
            split VARCHAR,
            source_trace_id VARCHAR,
            source_span_id VARCHAR,
            PRIMARY KEY (dataset_id, example_id, added_version)
        );

        CREATE TABLE experiments (
            id VARCHAR PRIMARY KEY,
            name VARCHAR,
            -- the project the runs' spans go to
            project VARCHAR NOT NULL,
            task VARCHAR NOT NULL,
            task_hash VARCHAR NOT NULL,
            dataset_id VARCHAR NOT NULL,
            dataset_version INTEGER NOT NULL,
            split VARCHAR,
            -- [{"name", "kind", "hash", "calibrated"}]
            evaluators JSON NOT NULL,
            repetitions INTEGER NOT NULL,
            concurrency INTEGER NOT NULL,
            timeout_s DOUBLE NOT NULL,
            -- running, done, failed, cancelled or interrupted
            status VARCHAR NOT NULL,
            -- git commit, dirty tree and diff hash, hashes, traceproof version
            provenance JSON NOT NULL,
            summary JSON,
            created_at TIMESTAMP NOT NULL,
            finished_at TIMESTAMP
        );

        CREATE TABLE experiment_runs (
            -- experiment id, example id and repetition
            id VARCHAR PRIMARY KEY,
            experiment_id VARCHAR NOT NULL,
            example_id VARCHAR NOT NULL,
            repetition INTEGER NOT NULL,
            -- ok, error, timeout, crash or bad_output
            status VARCHAR NOT NULL,
            error VARCHAR,
            output JSON,
            -- the traces the run's spans formed
            trace_ids VARCHAR[],
            latency_ms DOUBLE,
            tokens BIGINT,
            cost_usd DOUBLE,
            tool_calls INTEGER,
            started_at TIMESTAMP NOT NULL,
            finished_at TIMESTAMP
        );

        CREATE TABLE experiment_baselines (
            task VARCHAR NOT NULL,
            dataset_id VARCHAR NOT NULL,
            experiment_id VARCHAR NOT NULL,
            set_at TIMESTAMP NOT NULL,
            PRIMARY KEY (task, dataset_id)
        );
        """,
    ),
    Migration(
        4,
        "transcript files: what an import read and where a re-import resumes",
        """
        CREATE TABLE transcript_files (
            -- the absolute path
            path VARCHAR PRIMARY KEY,
            device BIGINT NOT NULL,
            inode BIGINT NOT NULL,
            -- bytes read (up to the end of the last line read), and the mtime seen then
            size BIGINT NOT NULL,
            mtime_ns BIGINT NOT NULL,
            -- sha256 of the first head_bytes bytes: a rewritten file is read again from the start
            head_bytes BIGINT NOT NULL,
            head_hash VARCHAR NOT NULL,
            -- the files read beside it (Claude Code subagents): names, sizes and mtimes hashed
            companions VARCHAR,
            -- where a re-import starts: the byte offset of line resume_line (1-based)
            resume_offset BIGINT NOT NULL,
            resume_line BIGINT NOT NULL,
            -- lines before it the reader needs again: [[line, offset, length], ...]
            keep JSON,
            -- a turn was held back as in progress: read again once idle, even unchanged
            open BOOLEAN NOT NULL,
            reader VARCHAR,
            updated_at TIMESTAMP NOT NULL
        );
        """,
    ),
)

#: Characters of a root span's input/output kept in the trace index for previews.
PREVIEW_CHARS = 1000
