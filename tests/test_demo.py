"""The demo project: deterministic bytes, and the content the README and docstring promise."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2
import pytest
from click.testing import CliRunner
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.conftest import ServeProcess
from traceproof.cli import cli
from traceproof.demo import DEMO_LENGTH, DEMO_PROJECT, DEMO_SERVICE, REFERENCE_NOW, demo_requests
from traceproof.ingest.otlp import decode_protobuf
from traceproof.server.run import load_demo
from traceproof.settings import Settings
from traceproof.storage import Reader, Store
from traceproof.tools.stats import get_stats

TOOL_ERRORS = {"OrderNotFound", "TimeoutError", "ValidationError", "OrderAlreadyShipped",
               "PermissionError"}  # fmt: skip


@pytest.fixture(scope="module")
def requests() -> list[bytes]:
    return demo_requests(REFERENCE_NOW)


@pytest.fixture(scope="module")
def demo_store(requests: list[bytes], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    db = tmp_path_factory.mktemp("demo") / "demo.duckdb"
    with Store.open(db, Settings(db=db)) as store:
        for body in requests:
            decoded = decode_protobuf(body, default_project="default")
            assert (decoded.rejected, decoded.warnings) == (0, [])
            store.write(decoded.rows.table())
        yield store


@pytest.fixture
def reader(demo_store: Store) -> Iterator[Reader]:
    with demo_store.reader() as opened:
        yield opened


def test_demo_requests_are_the_same_bytes_every_time(requests: list[bytes]) -> None:
    again = demo_requests(REFERENCE_NOW)
    assert again == requests
    assert len(requests) > 1


def spans_of(requests: list[bytes]) -> list[tuple[bytes, bytes, int, int]]:
    """(trace id, span id, start ns, end ns) of every span in the requests."""
    return [
        (s.trace_id, s.span_id, s.start_time_unix_nano, s.end_time_unix_nano)
        for body in requests
        for rs in ExportTraceServiceRequest.FromString(body).resource_spans
        for ss in rs.scope_spans
        for s in ss.spans
    ]


def test_the_demo_ends_just_before_its_anchor_with_the_same_ids_whatever_the_anchor(
    requests: list[bytes],
) -> None:
    now = datetime(2031, 3, 4, 5, 6, 7, tzinfo=UTC)
    moved = spans_of(demo_requests(now))
    now_ns = int(now.timestamp()) * 1_000_000_000
    assert max(end for *_, end in moved) <= now_ns
    assert max(end for *_, end in moved) >= now_ns - 5 * 60 * 1_000_000_000
    assert min(start for _, _, start, _ in moved) >= now_ns - DEMO_LENGTH.total_seconds() * 1e9
    original = spans_of(requests)
    assert [ids[:2] for ids in moved] == [ids[:2] for ids in original]
    shift = now_ns - int(REFERENCE_NOW.timestamp()) * 1_000_000_000
    assert [(s + shift, e + shift) for *_, s, e in original] == [(s, e) for *_, s, e in moved]


def test_readme_example_finds_the_latest_failures_of_a_freshly_loaded_demo(
    tmp_path: Path,
) -> None:
    """`traceproof serve --demo` loads the demo ending now, so README's
    `traceproof traces --status ERROR --since 2h` has rows on any day."""
    db = tmp_path / "fresh.duckdb"
    with Store.open(db, Settings(db=db)) as store:
        assert load_demo(store, Settings(db=db)) == 1064
    result = CliRunner().invoke(
        cli, ["traces", "--status", "ERROR", "--since", "2h", "--db", str(db), "--json"]
    )
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert found["total"] >= 3
    assert all(row["error_count"] > 0 for row in found["traces"])


def test_loading_the_demo_again_adds_nothing_and_keeps_the_first_times(tmp_path: Path) -> None:
    db = tmp_path / "twice.duckdb"
    settings = Settings(db=db)
    first = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    with Store.open(db, settings) as store:
        assert load_demo(store, settings, now=first) == 1064
        with store.reader() as reader:
            judged = reader.rows("SELECT id, version FROM annotations ORDER BY id")
        assert load_demo(store, settings, now=first + timedelta(days=3)) == 0
        with store.reader() as reader:
            newest = reader.scalar("SELECT max(end_time) FROM spans")
            assert reader.rows("SELECT id, version FROM annotations ORDER BY id") == judged
            assert reader.scalar("SELECT count(*) FROM calibrations") == 1
    assert first - timedelta(minutes=5) <= newest.replace(tzinfo=UTC) <= first


def test_demo_requests_hold_whole_traces_of_one_project(requests: list[bytes]) -> None:
    seen: dict[bytes, int] = {}
    for index, body in enumerate(requests):
        message = ExportTraceServiceRequest.FromString(body)
        spans = [s for rs in message.resource_spans for ss in rs.scope_spans for s in ss.spans]
        assert 0 < len(spans) <= 200
        for resource_spans in message.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            assert resource == {
                "openinference.project.name": DEMO_PROJECT,
                "service.name": DEMO_SERVICE,
            }
        for trace_id in {s.trace_id for s in spans}:
            assert seen.setdefault(trace_id, index) == index, "a trace is split across requests"


def test_demo_has_every_advertised_span_kind(reader: Reader) -> None:
    kinds = dict(reader.rows("SELECT span_kind, count(*) FROM spans GROUP BY span_kind"))
    assert set(kinds) == {"AGENT", "CHAIN", "LLM", "TOOL", "RETRIEVER"}
    assert reader.rows("SELECT DISTINCT project FROM spans") == [(DEMO_PROJECT,)]
    # Every trace is one turn with an AGENT root, and nothing is orphaned.
    assert reader.rows(
        "SELECT count(*), count(*) FILTER (WHERE has_root AND span_kind = 'AGENT') FROM traces"
    ) == [(kinds["AGENT"], kinds["AGENT"])]
    orphans = reader.scalar(
        "SELECT count(*) FROM spans c WHERE parent_span_id IS NOT NULL AND NOT EXISTS "
        "(SELECT 1 FROM spans p WHERE p.span_id = c.parent_span_id AND p.trace_id = c.trace_id)"
    )
    assert orphans == 0


def test_demo_has_25_multi_turn_sessions_of_one_user_each(reader: Reader) -> None:
    sessions = reader.dicts(
        "SELECT session_id, trace_count, user_id FROM sessions ORDER BY session_id"
    )
    assert [s["session_id"] for s in sessions] == [f"sess-{i:04d}" for i in range(1, 26)]
    assert all(2 <= s["trace_count"] <= 5 for s in sessions)
    assert sum(s["trace_count"] for s in sessions) == reader.scalar("SELECT count(*) FROM traces")
    assert reader.scalar("SELECT count(*) FROM traces WHERE session_id IS NULL") == 0
    users = reader.rows(
        "SELECT session_id FROM spans WHERE session_id IS NOT NULL "
        "GROUP BY session_id HAVING count(DISTINCT user_id) <> 1"
    )
    assert users == []


def test_demo_has_failing_tool_calls_with_exception_types(reader: Reader) -> None:
    tools = reader.dicts(
        """SELECT count(*) AS calls,
                  count(*) FILTER (WHERE status = 'ERROR') AS failed,
                  list(DISTINCT error_type) FILTER (WHERE status = 'ERROR') AS types,
                  count(*) FILTER (WHERE status = 'ERROR' AND (error_message IS NULL
                      OR json_array_length(events) = 0)) AS unexplained
           FROM spans WHERE span_kind = 'TOOL'"""
    )[0]
    assert 0.05 <= tools["failed"] / tools["calls"] <= 0.2  # "about one tool call in ten"
    assert set(tools["types"]) <= TOOL_ERRORS
    assert len(tools["types"]) >= 3
    assert tools["unexplained"] == 0
    event = json.loads(
        reader.scalar("SELECT events FROM spans WHERE span_kind = 'TOOL' AND status = 'ERROR'")
    )
    assert [e["name"] for e in event] == ["exception"]
    assert event[0]["attributes"]["exception"]["stacktrace"].startswith("Traceback")


def test_demo_has_two_turns_that_fail_as_a_whole(reader: Reader) -> None:
    failed = reader.rows(
        """SELECT s.error_type, s.error_message LIKE 'giving up after %'
           FROM traces t JOIN spans s ON s.trace_id = t.trace_id AND s.span_id = t.root_span_id
           WHERE s.status = 'ERROR'"""
    )
    assert failed == [("AgentExecutionError", True)] * 2


def test_demo_has_one_llm_span_of_several_hundred_kilobytes(reader: Reader) -> None:
    big = reader.rows(
        """SELECT span_kind, model, length(input_value), length(attributes::VARCHAR)
           FROM spans WHERE length(input_value) + length(attributes::VARCHAR) > 100000"""
    )
    assert len(big) == 1
    kind, model, input_chars, attribute_chars = big[0]
    assert (kind, model) == ("LLM", "gpt-4o-mini")
    assert input_chars > 300_000
    assert input_chars + attribute_chars > 700_000  # "about 800 KB" in the README


def test_demo_has_genai_llm_spans_mapped_to_the_same_columns(reader: Reader) -> None:
    genai = reader.dicts(
        """SELECT span_kind, model, prompt_tokens, completion_tokens, total_tokens, input_value
           FROM spans WHERE attributes->>'$.gen_ai.operation.name' = 'chat'"""
    )
    assert len(genai) == 3
    for span in genai:
        assert (span["span_kind"], span["model"]) == ("LLM", "gpt-4o-mini-2024-07-18")
        assert span["prompt_tokens"] > 0 and span["completion_tokens"] > 0
        assert span["total_tokens"] == span["prompt_tokens"] + span["completion_tokens"]
        assert json.loads(span["input_value"])[0]["role"] == "system"


def test_demo_has_a_few_slow_tools(reader: Reader) -> None:
    slow = reader.scalar(
        "SELECT count(*) FROM spans WHERE span_kind IN ('TOOL', 'RETRIEVER') AND latency_ms >= 8000"
    )
    assert 1 <= slow <= 15


@pytest.mark.slow
def test_serve_demo_loads_the_demo_project(tmp_path: Path, demo_store: Store) -> None:
    server = ServeProcess(tmp_path / "served.duckdb", None, "--demo")
    try:
        served = httpx2.get(server.url + "/api/v1/stats").json()
    finally:
        server.stop()
    expected = json.loads(get_stats(demo_store).model_dump_json())
    times = ("first_span", "last_span")
    for stats in (served, expected):  # the served demo ends at its load time, not the fixture's
        for row in stats["projects"]:
            row["times"] = [datetime.fromisoformat(row.pop(key)) for key in times]
    assert [{**p, "times": None} for p in served["projects"]] == [
        {**p, "times": None} for p in expected["projects"]
    ]
    (project,) = served["projects"]
    first, last = project["times"]
    assert last - first == expected["projects"][0]["times"][1] - expected["projects"][0]["times"][0]
    assert datetime.now(UTC) - last.replace(tzinfo=UTC) < timedelta(hours=1)
    assert project["project"] == DEMO_PROJECT
    assert project["traces"] == 90  # the README's "90 traces in 25 multi-turn sessions"
    assert project["error_traces"] > 2


def test_demo_has_a_reviewers_labels_a_judges_verdicts_and_a_passing_calibration(
    demo_db: Path,
) -> None:
    from traceproof.demo_judgments import DEMO_JUDGE, LABELLED_TRACES
    from traceproof.evals.annotations import judge_annotator

    with Store.open(demo_db, Settings(db=demo_db)) as store, store.reader() as reader:
        counts = reader.rows(
            "SELECT annotator_kind, annotator, target_kind, label, count(*) FROM annotations "
            "WHERE name = 'resolved' GROUP BY ALL ORDER BY ALL"
        )
        calibrations = reader.rows("SELECT id, judge_hash, n, passed FROM calibrations")
        definitions = reader.rows("SELECT name, kind, hash FROM evaluator_definitions")
    judge = judge_annotator("resolved", DEMO_JUDGE.definition_hash)
    assert counts == [
        ("HUMAN", "demo-reviewer", "trace", "fail", 4),
        ("HUMAN", "demo-reviewer", "trace", "pass", 26),
        ("LLM", judge, "trace", "fail", 4),
        ("LLM", judge, "trace", "pass", 26),
    ]
    assert LABELLED_TRACES == 30
    digest = DEMO_JUDGE.definition_hash
    assert calibrations == [(f"demo-{digest.removeprefix('sha256:')}", digest, 30, True)]
    assert definitions == [("resolved", "judge", digest)]


def test_the_demos_recorded_verdicts_do_not_look_like_calls_to_a_provider(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The judge's verdicts are replayed through a mock transport: no `HTTP Request: POST
    https://api.anthropic.com/...` lines that a new user would read as live, paid calls."""
    from traceproof.demo_judgments import REPLAY_URL, replay_client

    path = tmp_path / "fresh.duckdb"
    settings = Settings(db=path)
    with caplog.at_level(logging.DEBUG), Store.open(path, settings) as store:
        load_demo(store, settings, now=REFERENCE_NOW)
        with store.reader() as reader:
            verdicts = reader.scalar("SELECT count(*) FROM annotations WHERE annotator_kind='LLM'")
    assert verdicts == 30  # the replay ran
    said = [r.getMessage() for r in caplog.records if r.name.startswith("httpx")]
    assert said == []
    assert "anthropic.com" not in caplog.text
    assert REPLAY_URL.endswith(".invalid")
    assert str(replay_client(settings)._client().base_url).startswith(REPLAY_URL)


def test_the_demos_resolved_labels_have_a_pass_fail_config(demo_db: Path) -> None:
    from traceproof.tools.annotations import get_annotations

    with Store.open(demo_db, Settings(db=demo_db)) as store:
        with store.reader() as reader:
            (config,) = reader.rows(
                "SELECT kind, labels, direction FROM annotation_configs WHERE name = 'resolved'"
            )
        answer = get_annotations(store, name="resolved", limit=1)
    kind, labels, direction = config
    assert (kind, direction) == ("CATEGORICAL", "MAXIMIZE")
    assert json.loads(labels) == [{"label": "pass", "score": 1.0}, {"label": "fail", "score": 0.0}]
    assert answer.configs is not None and "pass" in answer.configs["resolved"]
