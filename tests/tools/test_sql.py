"""The sql tool's sandbox, limits and values, and describe_schema, on real DuckDB files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.tools.test_span_session import sessions_on_roots  # noqa: F401  (the fixture)
from traceproof.errors import ErrorCode, TraceproofError
from traceproof.settings import Settings
from traceproof.storage import Store
from traceproof.tools.common import size
from traceproof.tools.schema_doc import EXAMPLES, MEANINGS, TABLES
from traceproof.tools.sql import describe_schema, sql

FORBIDDEN_STATEMENTS = [
    "INSERT INTO projects VALUES ('x', now())",
    "UPDATE spans SET name = 'x'",
    "DELETE FROM spans",
    "CREATE TABLE stolen AS SELECT * FROM spans",
    "DROP TABLE spans",
    "ATTACH '/tmp/traceproof-attached.duckdb' AS other",
    "DETACH store",
    "COPY spans TO '/tmp/traceproof-copy.csv'",
    "EXPORT DATABASE '/tmp/traceproof-export'",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET threads = 1",
    "PRAGMA version",
    "/* sneaky */ PRAGMA database_list",
    "CALL pragma_version()",
    "SELECT 1; SELECT 2",
    "SELECT 1; DROP TABLE spans",
]

FILE_AND_NETWORK_READS = [
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_csv_auto('/etc/passwd')",
    "SELECT * FROM read_json('/etc/passwd')",
    "SELECT * FROM read_json_auto('/etc/passwd')",
    "SELECT * FROM read_ndjson('/etc/passwd')",
    "SELECT * FROM read_parquet('/etc/passwd')",
    "SELECT * FROM parquet_scan('/etc/passwd')",
    "SELECT * FROM read_text('/etc/passwd')",
    "SELECT * FROM read_blob('/etc/passwd')",
    "SELECT * FROM glob('/etc/*')",
    "SELECT * FROM sniff_csv('/etc/passwd')",
    "SELECT * FROM 'file.csv'",
    "SELECT * FROM read_csv('https://example.com/data.csv')",
    "SELECT * FROM 'https://example.com/data.parquet'",
    "SELECT count(*) FROM spans WHERE EXISTS (SELECT * FROM read_text('/etc/hostname'))",
]


def fingerprint(store: Store) -> list[Any]:
    """What a write, an attach or a setting change would alter."""
    with store.reader() as reader:
        return [
            reader.rows("SELECT count(*), sum(latency_ms) FROM spans"),
            reader.rows("SELECT * FROM projects ORDER BY name"),
            reader.rows("SELECT count(*) FROM traces"),
            reader.rows(
                "SELECT table_catalog, table_name FROM information_schema.tables ORDER BY ALL"
            ),
            reader.rows("SELECT database_name FROM duckdb_databases() ORDER BY ALL"),
            reader.rows("SELECT current_setting('threads'), current_setting('memory_limit')"),
        ]


def code_of(call: Any) -> ErrorCode:
    with pytest.raises(TraceproofError) as caught:
        call()
    return caught.value.code


@pytest.mark.parametrize("query", FORBIDDEN_STATEMENTS)
def test_every_statement_but_one_select_is_forbidden_and_changes_nothing(
    demo_store: Store, query: str
) -> None:
    before = fingerprint(demo_store)
    assert code_of(lambda: sql(demo_store, query=query)) == ErrorCode.FORBIDDEN_QUERY
    assert fingerprint(demo_store) == before
    assert not Path("/tmp/traceproof-copy.csv").exists()
    assert not Path("/tmp/traceproof-export").exists()


@pytest.mark.parametrize("query", FILE_AND_NETWORK_READS)
def test_reading_files_or_the_network_is_forbidden(demo_store: Store, query: str) -> None:
    before = fingerprint(demo_store)
    with pytest.raises(TraceproofError) as caught:
        sql(demo_store, query=query)
    assert caught.value.code == ErrorCode.FORBIDDEN_QUERY
    assert "root:" not in str(caught.value)
    assert "describe_schema" in caught.value.message
    assert fingerprint(demo_store) == before


@pytest.fixture
def quick_timeout_store(tmp_path: Path) -> Iterator[Store]:
    settings = Settings(db=tmp_path / "store.duckdb", sql_timeout_seconds=0.5)
    with Store.open(settings.db, settings) as opened:
        yield opened


def test_a_long_query_is_interrupted_and_the_store_keeps_answering(
    quick_timeout_store: Store,
) -> None:
    long_query = "SELECT count(*) FROM range(100000000000) a(x), range(1000) b(y) WHERE x * y = -1"
    with pytest.raises(TraceproofError) as caught:
        sql(quick_timeout_store, query=long_query)
    assert caught.value.code == ErrorCode.QUERY_TIMEOUT
    assert "LIMIT" in caught.value.message
    assert sql(quick_timeout_store, query="SELECT 41 + 1 AS answer").rows == [[42]]


def test_rows_default_to_200_with_truncated_exact(store: Store) -> None:
    result = sql(store, query="SELECT range AS n FROM range(1000)")
    assert result.row_count == 200
    assert [row[0] for row in result.rows] == list(range(200))
    assert result.truncated is True
    assert result.note is not None and "more than 200 rows" in result.note

    exact = sql(store, query="SELECT range AS n FROM range(200)")
    assert exact.row_count == 200
    assert exact.truncated is False
    assert exact.note is None


def test_limit_reaches_5000_rows_at_most(store: Store) -> None:
    result = sql(store, query="SELECT range FROM range(7000)", limit=9000, max_chars=80_000)
    assert result.row_count == 5000
    assert result.rows[-1] == [4999]
    assert result.truncated is True
    assert result.note is not None and "5000" in result.note

    small = sql(store, query="SELECT range FROM range(7000)", limit=3)
    assert small.rows == [[0], [1], [2]]
    assert small.truncated is True


def test_values_are_json_safe(store: Store) -> None:
    result = sql(
        store,
        query="""
        SELECT TIMESTAMP '2026-01-02 03:04:05.5' AS ts, DATE '2026-01-02' AS d,
               1.25::DECIMAL(10, 2) AS dec, 12::DECIMAL(10, 0) AS whole,
               'abc'::BLOB AS blob, 'nan'::DOUBLE AS nan,
               170141183460469231731687303715884105727::HUGEINT AS huge,
               [1, 2] AS list, {'a': TIME '01:02:03'} AS struct,
               MAP {'k': 1.5::DECIMAL(4,1)} AS map,
               '4ac7a9fe-4d63-4d5e-9f4e-cc9a2b1e5e1d'::UUID AS id, INTERVAL 90 MINUTE AS span,
               NULL AS nothing, true AS flag, '{"x": 1}'::JSON AS js
        """,
    )
    row = dict(zip(result.columns, result.rows[0], strict=True))
    json.dumps(result.rows, allow_nan=False)  # raises on anything JSON cannot carry
    assert row == {
        "ts": "2026-01-02T03:04:05.500000Z",
        "d": "2026-01-02",
        "dec": 1.25,
        "whole": 12,
        "blob": "abc",
        "nan": "nan",
        "huge": "170141183460469231731687303715884105727",
        "list": [1, 2],
        "struct": {"a": "01:02:03"},
        "map": {"k": 1.5},
        "id": "4ac7a9fe-4d63-4d5e-9f4e-cc9a2b1e5e1d",
        "span": 5400.0,
        "nothing": None,
        "flag": True,
        "js": '{"x": 1}',
    }
    assert result.types[:3] == ["TIMESTAMP", "DATE", "DECIMAL(10,2)"]


def test_long_cells_are_clipped_within_budget_with_a_way_to_read_on(demo_store: Store) -> None:
    query = (
        "SELECT span_id, input_value FROM spans ORDER BY length(input_value) DESC NULLS LAST "
        "LIMIT 20"
    )
    result = sql(demo_store, query=query, max_chars=5000)
    assert size(result) <= 5000
    assert result.clipped_cells >= 1
    span_id, cell = result.rows[0]
    assert "…[clipped: " in cell and "substr(input_value, " in cell
    kept = cell.split("…[clipped: ")[0]
    with demo_store.reader() as reader:
        full = reader.scalar("SELECT input_value FROM spans WHERE span_id = ?", [span_id])
    assert full.startswith(kept) and len(full) > 400_000 - 1
    # The marker's continuation reads the next characters.
    start = len(kept) + 1
    more = sql(
        demo_store,
        query=f"SELECT substr(input_value, {start}, 100) FROM spans WHERE span_id = '{span_id}'",
    )
    assert more.rows[0][0] == full[len(kept) : len(kept) + 100]
    assert result.truncated is True
    assert result.row_count < 20
    assert result.note is not None and f"OFFSET {result.row_count}" in result.note


def test_every_response_stays_within_its_budget(demo_store: Store) -> None:
    for max_chars in (1000, 3000, 20_000):
        result = sql(demo_store, query="SELECT * FROM spans", max_chars=max_chars)
        assert size(result) <= max_chars
        assert result.truncated is True
        assert result.note is not None and "did not fit the response budget" in result.note
        if max_chars > 1000:  # 30 columns' names and types alone nearly fill 1000 chars
            assert result.row_count >= 1


def test_sql_errors_say_what_to_do_next(demo_store: Store) -> None:
    with pytest.raises(TraceproofError) as caught:
        sql(demo_store, query="SELECT no_such_column FROM spans")
    assert caught.value.code == ErrorCode.INVALID_QUERY
    assert "no_such_column" in caught.value.message
    assert "describe_schema" in caught.value.message
    with pytest.raises(TraceproofError) as caught:
        sql(demo_store, query="SELEC 1")
    assert caught.value.code == ErrorCode.INVALID_QUERY


# -- describe_schema ----------------------------------------------------------------------------


def test_schema_lists_every_public_table_with_live_types_and_meanings(demo_store: Store) -> None:
    description = describe_schema(demo_store)
    assert [t.name for t in description.tables] == list(TABLES)
    assert size(description) <= 20_000
    assert description.truncated is False
    with demo_store.reader() as reader:
        live = reader.rows(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_catalog = current_database() ORDER BY table_name, ordinal_position"
        )
    for table in description.tables:
        expected = [(c, t) for name, c, t in live if name == table.name]
        assert [(c.name, c.type) for c in table.columns] == expected
        # A column added to the schema without a meaning here fails this test.
        assert all(c.meaning for c in table.columns), table.name
        assert set(MEANINGS[table.name]) == {c.name for c in table.columns}
    spans = description.tables[0]
    types = {c.name: c.type for c in spans.columns}
    assert types["latency_ms"] == "DOUBLE" and types["attributes"] == "JSON"
    assert "json_extract_string(attributes, '$.llm.token_count.prompt')" in description.attributes
    assert "->>" in description.attributes
    pitfalls = " ".join(description.pitfalls)
    for needle in ("UTC", "LLM spans only", "left(", "unique per trace", "TRY_CAST"):
        assert needle in pitfalls


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.question)
def test_every_example_query_runs_and_returns_rows(demo_store: Store, example: Any) -> None:
    result = sql(demo_store, query=example.sql)
    assert result.row_count > 0


def test_schema_of_one_table_and_of_an_unknown_one(demo_store: Store) -> None:
    traces = describe_schema(demo_store, table="traces")
    assert [t.name for t in traces.tables] == ["traces"]
    assert "total_tokens" in [c.name for c in traces.tables[0].columns]
    with pytest.raises(TraceproofError) as caught:
        describe_schema(demo_store, table="trace_index")
    assert caught.value.code == ErrorCode.INVALID_ARGUMENT
    assert "spans, traces, sessions, projects" in caught.value.message


PROOF_TABLES = (
    "datasets",
    "dataset_versions",
    "dataset_examples",
    "experiments",
    "experiment_runs",
    "experiment_baselines",
)


def test_schema_documents_the_proof_tables_within_the_default_budget(store: Store) -> None:
    description = describe_schema(store)
    assert description.truncated is False and size(description) <= 20_000
    documented = {t.name: t for t in description.tables}
    for name in PROOF_TABLES:
        assert name in documented and documented[name].columns, name
        assert all(c.meaning for c in documented[name].columns), name
    runs = {c.name: c for c in documented["experiment_runs"].columns}
    # The column is a list named trace_ids (a guess of trace_id fails); the meaning says how
    # to read it, the table's description where its scores are.
    assert runs["trace_ids"].type == "VARCHAR[]" and "unnest(trace_ids)" in (
        runs["trace_ids"].meaning or ""
    )
    assert "experiment_run" in documented["experiment_runs"].description
    (runs_only,) = describe_schema(store, table="experiment_runs").tables
    assert [c.name for c in runs_only.columns] == list(runs)
    query = "SELECT id, status, trace_ids[1] AS first_trace, unnest(trace_ids) FROM experiment_runs"
    assert sql(store, query=query).row_count == 0  # the columns it names exist


def test_schema_shrinks_to_a_small_budget_and_says_so(demo_store: Store) -> None:
    small = describe_schema(demo_store, max_chars=1000)
    assert size(small) <= 1000
    assert small.truncated is True
    assert small.tables[0].name == "spans"
    assert small.note is not None and "describe_schema(table=" in small.note


# -- issue 8: bounded memory, zoned times, the store's own file, checkpoints -------------------


def test_huge_values_are_clipped_inside_duckdb_not_materialised_in_python(store: Store) -> None:
    import tracemalloc

    tracemalloc.start()
    try:
        found = sql(store, query="select repeat('x', 20000000) as big from range(5)")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Five 20 MB strings never reached Python: each was cut inside DuckDB.
    assert peak < 5_000_000
    assert found.row_count >= 1 and found.clipped_cells == found.row_count
    assert found.truncated or found.row_count == 5
    assert "…[clipped: " in found.rows[0][0] and "of 20,000,000 chars" in found.rows[0][0]
    assert size(found) <= 20_000


def test_a_long_list_is_clipped_as_text_and_a_short_one_stays_a_list(store: Store) -> None:
    found = sql(store, query="select range(3) as small, range(100000) as big")
    small, big = found.rows[0]
    assert small == [0, 1, 2]
    assert isinstance(big, str) and big.startswith("[0, 1, 2") and "…[clipped: " in big


def test_rows_stop_at_the_fetch_budget_and_the_note_says_so(tmp_path: Path) -> None:
    settings = Settings(db=tmp_path / "s.duckdb", sql_max_fetch_chars=10_000)
    with Store.open(settings.db, settings) as small:
        found = sql(small, query="select repeat('y', 500) as v from range(1000)", limit=1000)
    assert found.truncated
    assert found.note is not None and "too long to read more at once" in found.note


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("select timestamptz '2026-05-01 12:00:00+05' as t", "2026-05-01T07:00:00"),
        ("select [timestamptz '2026-05-01 12:00:00+00'] as t", "2026-05-01 12:00:00+00"),
        ("select timetz '12:00:00+02' as t", "12:00:00+02"),
    ],
)
def test_zoned_times_come_back_without_pytz(store: Store, query: str, expected: str) -> None:
    found = sql(store, query=query)
    assert expected in str(found.rows[0][0])


@pytest.mark.parametrize("query", ["select now()", "select current_timestamp", "select now() t"])
def test_now_and_current_timestamp_answer_utc_times(store: Store, query: str) -> None:
    found = sql(store, query=query)
    (value,) = found.rows[0]
    assert isinstance(value, str) and value[:2] == "20" and "T" in value
    assert found.types == ["TIMESTAMP WITH TIME ZONE"]


def test_start_time_is_unchanged_by_the_wrapper(demo_store: Store) -> None:
    found = sql(demo_store, query="select start_time, name from spans order by start_time limit 1")
    assert found.types == ["TIMESTAMP", "VARCHAR"]
    assert found.rows[0][0].startswith("20") and isinstance(found.rows[0][1], str)


def test_the_stores_own_file_cannot_be_read(store: Store) -> None:
    path = str(store.path)
    for query in [
        f"select * from read_blob('{path}')",
        f"select * from read_text('{path}.wal')",
        f"select * from '{path}'",
        f'select * from "{path}"',
        f"select * from read_duckdb('{path}')",
        f"select size from READ_BLOB/**/('{path}')",
        "select * from query('select 1')",
        f"select count(*) from spans where exists (select 1 from read_blob('{path}'))",
        f"pivot (select * from '{path}') on content using count(*)",
    ]:
        with pytest.raises(TraceproofError) as caught:
            sql(store, query=query)
        assert caught.value.code == ErrorCode.FORBIDDEN_QUERY, query


@pytest.mark.parametrize(
    "query",
    [
        'select * from "checkpoint"()',
        "select * from checkpoint/**/()",
        "select * from CheckPoint ( )",
        'select * from "force_checkpoint"()',
        "select * from main.checkpoint()",
        "select 1 from spans where exists (select * from checkpoint--x\n())",
    ],
)
def test_checkpoint_is_refused_however_it_is_written(store: Store, query: str) -> None:
    with pytest.raises(TraceproofError) as caught:
        sql(store, query=query)
    assert caught.value.code == ErrorCode.FORBIDDEN_QUERY


def test_checkpoint_inside_a_where_filter_is_refused(demo_store: Store) -> None:
    from traceproof.tools.spansearch import search_spans

    with pytest.raises(TraceproofError) as caught:
        search_spans(demo_store, where='(select count(*) from "checkpoint"()) = 0')
    assert caught.value.code in (ErrorCode.FORBIDDEN_QUERY, ErrorCode.INVALID_FILTER)


def test_names_and_strings_that_only_look_like_functions_are_fine(store: Store) -> None:
    found = sql(store, query="select 'checkpoint()' as a, 'read_blob(x)' as b, repeat('z', 3) c")
    assert found.rows == [["checkpoint()", "read_blob(x)", "zzz"]]
    assert sql(store, query="select count(*) from range(3)").rows == [[3]]


def test_the_wrapper_keeps_the_querys_own_names_and_accepts_a_trailing_semicolon(
    store: Store,
) -> None:
    found = sql(store, query="select 1 as a, 2 as a, {'k': [1]} as s;  ")
    assert found.columns == ["a", "a", "s"]
    assert found.rows == [[1, 2, {"k": [1]}]]
    assert sql(store, query="describe spans").row_count > 10


def test_the_sessions_example_counts_a_failing_tool_span_whose_session_is_on_its_root(
    sessions_on_roots: Store,  # noqa: F811
) -> None:
    """Only the roots carry session.id: the example joins the trace's session (as aggregate)."""
    (example,) = [e for e in EXAMPLES if e.question == "Sessions that had failing tool calls"]
    own = sql(sessions_on_roots, query="SELECT count(*) FROM spans WHERE session_id IS NOT NULL")
    assert own.rows == [[2]]  # the two roots; the failing tool spans have none of their own
    result = sql(sessions_on_roots, query=example.sql)
    assert sorted(row[:2] for row in result.rows) == [["sess-a", 1], ["sess-b", 1]]


def test_schema_says_spans_session_id_is_the_spans_own_and_gives_the_join(
    demo_store: Store,
) -> None:
    description = describe_schema(demo_store, table="spans")
    (spans,) = description.tables
    meaning = {c.name: c.meaning or "" for c in spans.columns}
    assert "own" in meaning["session_id"] and "own" in meaning["user_id"]
    pitfalls = " ".join(description.pitfalls)
    assert "coalesce(s.session_id, t.session_id)" in pitfalls
    session_examples = [e.sql for e in EXAMPLES if "session_id" in e.sql]
    assert session_examples
    assert all("coalesce(s.session_id, t.session_id)" in q for q in session_examples)
