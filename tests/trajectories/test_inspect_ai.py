"""Inspect AI eval logs (.eval and .json) as traces and annotations: real logs written by
``inspect_ai.eval`` with ``mockllm/model`` (offline), read by a reader that does not import
inspect_ai."""

from __future__ import annotations

import json
import zipfile
from collections import Counter
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from mcp import Client

from tests.conftest import LiveServer, ServeProcess
from tests.trajectories.inspect_logs import EPOCHS, SAMPLES, SECRET, SPANS, USAGE, write_log
from tests.trajectories.reader_helpers import malformed, read, skipped, spans_of
from traceproof.cli import cli
from traceproof.errors import ErrorCode, TraceproofError
from traceproof.evals.annotations import TargetKind
from traceproof.ingest.files import ImportInterrupted, import_files
from traceproof.remote import RemoteStore
from traceproof.server.mcp import create_mcp_server
from traceproof.settings import Settings
from traceproof.storage import Store
from traceproof.storage.annotations import write_annotations
from traceproof.trajectories import inspect_json
from traceproof.trajectories.common import (
    CACHE_READ,
    CACHE_WRITE,
    STOP_REASON,
    Malformed,
    trace_id_for,
)
from traceproof.trajectories.inspect_ai import InspectReader
from traceproof.trajectories.inspect_records import eval_header, score_annotations
from traceproof.trajectories.readers import detect

pytestmark = [
    pytest.mark.xdist_group("inspect_logs"),
    # inspect_ai's own retry setup warns about a tenacity parameter; not ours to fix.
    pytest.mark.filterwarnings("ignore:The 'initial' parameter is deprecated:DeprecationWarning"),
]

#: Scored samples (the crashed one has no scores), times epochs, times annotations per sample
#: (match, includes, and the dict scorer's two keys).
ANNOTATIONS = (len(SAMPLES) - 1) * EPOCHS * 4


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One .eval and one .json log of the same scripted task, written once per module."""
    root = tmp_path_factory.mktemp("inspect_logs")
    return {fmt: write_log(root / fmt, fmt) for fmt in ("eval", "json")}


def header_of(path: Path) -> dict[str, Any]:
    if path.suffix == ".json":
        found: dict[str, Any] = json.loads(path.read_text())["eval"]
        return found
    from inspect_ai.log import read_eval_log

    return read_eval_log(str(path), header_only=True).eval.model_dump()


def by_trace(path: Path) -> dict[str, list[Any]]:
    spans: dict[str, list[Any]] = {}
    for span in spans_of(read(InspectReader(), path)):
        spans.setdefault(span.trace_id, []).append(span)
    return spans


@pytest.mark.parametrize("fmt", ["eval", "json"])
def test_each_sample_and_epoch_is_a_trace_of_its_eval_session(
    logs: dict[str, Path], fmt: str
) -> None:
    path = logs[fmt]
    assert detect(path, path.read_bytes()[:65536]) is not None
    assert detect(path, path.read_bytes()[:65536]).name == "inspect"  # type: ignore[union-attr]
    eval_id = header_of(path)["eval_id"]
    items = read(InspectReader(), path)
    assert malformed(items) == []
    traces = by_trace(path)
    expected = {trace_id_for("inspect", eval_id, f"{s}:{e}") for s in SAMPLES for e in (1, 2)}
    assert set(traces) == expected
    for spans in traces.values():
        root = spans[0]
        assert root.kind == "AGENT" and root.parent_span_id is None
        assert all(s.parent_span_id == root.span_id for s in spans[1:])
        assert {s.attributes["session.id"] for s in spans} == {eval_id}
        assert root.resource["service.name"] == "inspect_ai"
        assert root.resource["inspect.task"] == "arith"
        assert root.resource["service.version"] == header_of(path)["packages"]["inspect_ai"]
    kinds = Counter(s.kind for spans in traces.values() for s in spans)
    # add, divide, tests: model, tool, model; wrong: model; crash: model, tool (then the error).
    assert kinds == {"AGENT": 10, "LLM": 2 * (2 + 2 + 2 + 1 + 1), "TOOL": 2 * 4}
    # Events that are not model or tool calls are skipped and counted by type.
    found = skipped(items)
    assert found["event/span_begin"] > 0 and found["event/score"] == 8 * 3


def test_a_root_holds_input_target_output_and_metadata_and_steps_their_calls(
    logs: dict[str, Path],
) -> None:
    eval_id = header_of(logs["eval"])["eval_id"]
    spans = by_trace(logs["eval"])[trace_id_for("inspect", eval_id, "add:2")]
    root, first, tool, second = spans
    assert root.attributes["input.value"] == SAMPLES["add"][0]
    assert root.attributes["inspect.target"] == "3"
    assert root.attributes["output.value"] == "3"
    assert (root.attributes["inspect.sample.id"], root.attributes["inspect.sample.epoch"]) == (
        "add",
        2,
    )
    assert json.loads(root.attributes["metadata"]) == {"level": 1}
    assert root.status == "OK"
    assert [s.kind for s in (first, tool, second)] == ["LLM", "TOOL", "LLM"]
    prompt = USAGE["input_tokens"] + USAGE["input_tokens_cache_read"]
    prompt += USAGE["input_tokens_cache_write"]
    assert first.attributes["llm.token_count.prompt"] == prompt
    assert first.attributes["llm.token_count.completion"] == USAGE["output_tokens"]
    assert first.attributes["llm.token_count.total"] == USAGE["total_tokens"]
    assert first.attributes[CACHE_READ] == USAGE["input_tokens_cache_read"]
    assert first.attributes[CACHE_WRITE] == USAGE["input_tokens_cache_write"]
    assert first.attributes["llm.model_name"] == "mockllm/model"
    assert (first.attributes[STOP_REASON], second.attributes[STOP_REASON]) == (
        "tool_calls",
        "stop",
    )
    assert 'tool_call add: {"x": 1, "y": 2}' in first.attributes["output.value"]
    assert first.attributes["input.value"] == f"user: {SAMPLES['add'][0]}"
    assert second.attributes["input.value"] == "tool: 3"
    assert (tool.name, tool.attributes["tool.name"], tool.status) == ("add", "add", "OK")
    assert json.loads(tool.attributes["input.value"]) == {"x": 1, "y": 2}
    assert tool.attributes["output.value"] == "3"
    assert first.start_ns <= tool.start_ns <= second.start_ns
    assert root.start_ns <= first.start_ns and second.end_ns <= root.end_ns


@pytest.mark.parametrize("fmt", ["eval", "json"])
def test_a_tool_error_and_an_errored_sample_are_errors(logs: dict[str, Path], fmt: str) -> None:
    eval_id = header_of(logs[fmt])["eval_id"]
    traces = by_trace(logs[fmt])
    divide = traces[trace_id_for("inspect", eval_id, "divide:1")]
    assert divide[0].status == "OK"
    [tool] = [s for s in divide if s.kind == "TOOL"]
    assert (tool.status, tool.status_message) == ("ERROR", "division by zero")
    crash = traces[trace_id_for("inspect", eval_id, "crash:1")]
    assert crash[0].status == "ERROR"
    assert "the sandbox fell over" in (crash[0].status_message or "")
    [failed] = [s for s in crash if s.kind == "TOOL"]
    assert failed.status == "ERROR" and failed.attributes["tool.name"] == "crash"


def test_scores_become_annotations_of_the_sample_trace(logs: dict[str, Path]) -> None:
    log = json.loads(logs["json"].read_text())
    eval_id = log["eval"]["eval_id"]
    trace = trace_id_for("inspect", eval_id, "add:1")
    [root] = [
        s
        for s in spans_of(read(InspectReader(), logs["json"]))
        if s.trace_id == trace and s.kind == "AGENT"
    ]
    annotations = root.annotations
    assert {(a.target_kind, a.target_id) for a in annotations} == {(TargetKind.TRACE, trace)}
    rows = {a.name: (a.label, a.score, a.explanation) for a in annotations}
    assert rows == {
        "match": ("correct", 1.0, "3"),
        "includes": ("correct", 1.0, "3"),
        "shape/length": (None, 1.0, "answer length and tool results"),
        "shape/tool_calls": (None, 1.0, "answer length and tool results"),
    }
    match = next(a for a in annotations if a.name == "match")
    assert match.metadata == {"value": "C", "answer": "3"}
    assert (str(match.annotator_kind), match.annotator) == ("CODE", "inspect_ai")


@pytest.mark.parametrize(
    ("value", "label", "score"),
    [
        ("C", "correct", 1.0),
        ("I", "incorrect", 0.0),
        ("P", "partial", 0.5),
        ("N", "noanswer", 0.0),
        (True, "true", 1.0),
        (0.25, None, 0.25),
        (3, None, 3.0),
        ("B", "B", None),
    ],
)
def test_score_values_map_to_labels_and_scores(value: Any, label: str | None, score: Any) -> None:
    header = eval_header({"eval": {"eval_id": "e1", "task": "t"}})
    sample = {"id": 1, "epoch": 1, "scores": {"s": {"value": value}}}
    [annotation] = score_annotations(header, sample)
    assert (annotation.label, annotation.score) == (label, score)


def ingest(*args: str | Path) -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["ingest", *map(str, args), "--json"])
    assert result.exit_code in (0, 2), result.output
    found: dict[str, Any] = json.loads(result.stdout)
    return found


@pytest.mark.anyio
async def test_ingest_stores_traces_and_annotations_and_a_second_run_adds_nothing(
    logs: dict[str, Path], tmp_path: Path
) -> None:
    db = tmp_path / "t.duckdb"
    first = ingest(logs["eval"], logs["json"], "--db", db)
    assert (first["rejected"], first["formats"]) == (0, {"inspect": 2})
    assert first["traces"] == 2 * len(SAMPLES) * EPOCHS
    assert first["spans_added"] == first["spans_read"] == 2 * SPANS
    assert (first["annotations_read"], first["annotations_created"]) == (
        2 * ANNOTATIONS,
        2 * ANNOTATIONS,
    )
    again = ingest(logs["eval"].parent, logs["json"].parent, "--db", db)
    # Both logs are as they were: skipped whole (incremental import), nothing read or written.
    assert (again["unchanged"], again["spans_read"], again["spans_added"]) == (2, 0, 0)
    assert "annotations_read" not in again  # the summary names annotations only when it read some

    eval_id = header_of(logs["eval"])["eval_id"]
    trace = trace_id_for("inspect", eval_id, "wrong:1")
    with Store.open(db, Settings(db=db)) as store:
        with store.reader() as reader:
            assert reader.scalar("SELECT count(*) FROM annotations") == 2 * ANNOTATIONS
            assert reader.scalar("SELECT count(*) FROM annotation_history") == 0
            stored = reader.rows(
                "SELECT DISTINCT project, session_id FROM spans WHERE trace_id = ?", [trace]
            )
            assert stored == [("inspect", eval_id)]
            text = reader.scalar(
                "SELECT string_agg(CAST(attributes AS VARCHAR), '') FROM spans WHERE trace_id = ?",
                [trace],
            )
            assert SECRET not in text and "REDACTED" in text
            llm_input = reader.scalar(
                "SELECT input_value FROM spans WHERE trace_id = ? AND span_kind = 'LLM'", [trace]
            )
            assert llm_input.startswith("user: What is 2+2? My key is [REDACTED:anthropic_key]")
        async with Client(create_mcp_server(store)) as client:
            listed = await client.call_tool("get_annotations", {"ids": [trace]})
            assert not listed.is_error
            shown = listed.structured_content
            assert shown is not None
            rows = {(r["name"], r.get("label"), r.get("score")) for r in shown["rows"]}
            assert rows == {
                ("match", "incorrect", 0.0),
                ("includes", "incorrect", 0.0),
                ("shape/length", None, 1.0),
                ("shape/tool_calls", None, 0.0),
            }
            steps = await client.call_tool(
                "get_trajectory", {"trace_id": trace_id_for("inspect", eval_id, "add:1")}
            )
            assert not steps.is_error and steps.structured_content is not None
            labelled = [(s["action"], s.get("tool")) for s in steps.structured_content["steps"]]
            assert labelled[0][0] == "llm" and labelled[1][1] == "add"
            assert all(action for action, _ in labelled)
            tests = await client.call_tool(
                "get_trajectory", {"trace_id": trace_id_for("inspect", eval_id, "tests:1")}
            )
            assert tests.structured_content is not None
            rows = [
                (s["action"], s.get("tool"), s.get("target"), s.get("outcome"))
                for s in tests.structured_content["steps"]
            ]
            assert ("verify", "bash", "pytest -q tests", "tests_passed") in rows


def test_annotations_go_through_a_running_server(
    logs: dict[str, Path], store: Store, settings: Settings
) -> None:
    with LiveServer(store, settings) as server:
        remote = RemoteStore(server.url, timeout=10)
        summary = import_files(
            [logs["eval"]],
            lambda table: remote.submit(table, wait=None),
            settings=settings,
            annotate=remote.write_annotations,
        )
        assert (summary.rejected, summary.annotations_created) == (0, ANNOTATIONS)
        again = import_files(
            [logs["eval"]], remote.submit, settings=settings, annotate=remote.write_annotations
        )
    assert (again.spans_added, again.annotations_unchanged, again.annotations_created) == (
        0,
        ANNOTATIONS,
        0,
    )
    with store.reader() as reader:
        assert reader.scalar("SELECT count(*) FROM annotations") == ANNOTATIONS


@pytest.mark.slow
def test_ingest_writes_the_annotations_through_a_running_traceproof_serve(
    logs: dict[str, Path], tmp_path: Path
) -> None:
    db = tmp_path / "served.duckdb"
    served = ServeProcess(db)
    try:
        first = ingest(logs["json"], "--db", db)
        again = ingest(logs["json"], "--db", db)
    finally:
        served.stop()
    assert (first["rejected"], first["spans_added"]) == (0, SPANS)
    assert first["annotations_created"] == ANNOTATIONS
    # The log is as it was: the second run skips it (its state is kept next to the store).
    assert (again["unchanged"], again["spans_added"]) == (1, 0)
    assert "annotations_read" not in again
    with Store.open(db, Settings(db=db)) as store, store.reader() as reader:
        assert reader.scalar("SELECT count(*) FROM annotations") == ANNOTATIONS


def test_without_a_writer_the_annotations_are_rejected_and_the_spans_kept(
    logs: dict[str, Path], store: Store
) -> None:
    summary = import_files([logs["json"]], store.submit, settings=store.settings)
    assert summary.spans_added == SPANS
    assert summary.rejected == ANNOTATIONS
    assert "no store to write it to" in summary.rejections[0].reason


def _member_end(path: Path, name: str) -> int:
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(name)
        return (
            info.header_offset
            + 30
            + len(info.filename.encode())
            + len(info.extra)
            + (info.compress_size)
        )


def test_a_truncated_eval_log_keeps_the_samples_before_the_cut(
    logs: dict[str, Path], store: Store, tmp_path: Path
) -> None:
    source = logs["eval"]
    with zipfile.ZipFile(source) as archive:
        samples = [i.filename for i in archive.infolist() if i.filename.startswith("samples/")]
    assert len(samples) == len(SAMPLES) * EPOCHS
    # Cut inside the third sample member: the central directory (and header.json) are gone.
    cut = _member_end(source, samples[2]) - 10
    path = tmp_path / "cut.eval"
    path.write_bytes(source.read_bytes()[:cut])
    summary = import_files(
        [path],
        store.submit,
        settings=store.settings,
        annotate=lambda items: write_annotations(store, items, partial=True),
    )
    assert summary.traces == 2
    assert [r.reason for r in summary.rejections] == [
        "the zip archive is cut short or corrupt (File is not a zip file)"
    ]
    assert summary.annotations_created == sum(
        4 for name in samples[:2] if not name.startswith("samples/crash")
    )


def test_a_corrupt_zip_is_refused_and_the_other_files_are_imported(
    logs: dict[str, Path], store: Store, tmp_path: Path
) -> None:
    garbage = tmp_path / "broken.eval"
    garbage.write_bytes(b"PK\x03\x04" + b"\x00" * 200)
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("readme.txt", "not a log")
    summary = import_files(
        [garbage, other, logs["json"]],
        store.submit,
        settings=store.settings,
        annotate=lambda items: write_annotations(store, items, partial=True),
    )
    reasons = {Path(r.path).name: r.reason for r in summary.rejections}
    assert reasons["broken.eval"].startswith("not a readable Inspect AI .eval log")
    assert reasons["other.zip"] == "a zip archive that is not an Inspect AI eval log (.eval)"
    assert summary.spans_added == SPANS and summary.annotations_created == ANNOTATIONS


def test_unknown_events_and_bad_samples_are_skipped_and_counted(
    logs: dict[str, Path], tmp_path: Path
) -> None:
    log = json.loads(logs["json"].read_text())
    log["samples"][0]["events"].append({"event": "teleport", "timestamp": "2026-01-01T00:00:00Z"})
    log["samples"][0]["events"].append("not an event")
    log["samples"].append(["not", "a", "sample"])
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(log, indent=2))
    items = read(InspectReader(), path)
    found = skipped(items)
    assert (found["event/teleport"], found["event/not-an-event"]) == (1, 1)
    assert [m.reason for m in malformed(items)] == [
        f"sample {len(SAMPLES) * EPOCHS + 1} is not a JSON object"
    ]
    assert len([s for s in spans_of(items) if s.kind == "AGENT"]) == len(SAMPLES) * EPOCHS


def test_other_json_and_zip_files_are_not_claimed(tmp_path: Path) -> None:
    reader = InspectReader()
    span = b'{"name": "x", "context": {"span_id": "a", "trace_id": "b"}}'
    assert not reader.sniff(tmp_path / "spans.json", span)
    assert not reader.sniff(tmp_path / "a.zip", b"PK\x03\x04\x14\x00\x00\x00readme.txt")
    assert reader.sniff(tmp_path / "a.eval", b"PK\x03\x04\x14\x00")


def test_a_json_log_reads_the_same_through_a_tiny_buffer(
    logs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    def spans() -> list[tuple[str, str, dict[str, Any]]]:
        found = spans_of(read(InspectReader(), logs["json"]))
        return [(s.span_id, s.status, s.attributes) for s in found]

    whole = spans()
    monkeypatch.setattr(inspect_json, "CHUNK", 7)  # every value is cut by the buffer's edge
    small = spans()
    assert small == whole and len(whole) == SPANS


def test_a_truncated_json_log_keeps_the_samples_before_the_cut(
    logs: dict[str, Path], store: Store, tmp_path: Path
) -> None:
    text = logs["json"].read_text()
    log = json.loads(text)
    third = json.dumps(log["samples"][2]["id"])
    # Cut inside the third sample (after its id): the first two are whole.
    cut = text.index(f'"id": {third}', text.index('"samples"')) + 20
    path = tmp_path / "cut.json"
    path.write_text(text[:cut])
    summary = import_files(
        [path],
        store.submit,
        settings=store.settings,
        annotate=lambda items: write_annotations(store, items, partial=True),
    )
    assert summary.traces == 2
    [rejection] = summary.rejections
    assert rejection.reason.startswith("the log stops being JSON after 2 sample(s): not JSON (")
    scored = [s for s in log["samples"][:2] if s["scores"]]
    assert summary.annotations_created == 4 * len(scored)


def test_what_is_not_a_log_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.json"
    for content, reason in [
        (b"[1, 2]", "an Inspect AI log is a JSON object with an eval header (expected '{'"),
        (b'{"version": 2, "status": "success"}', "an Inspect AI log is a JSON object with an"),
    ]:
        path.write_bytes(content)
        [item] = read(InspectReader(), path)
        assert isinstance(item, Malformed) and item.reason.startswith(reason)


def test_attachments_are_resolved_where_the_spans_use_them(logs: dict[str, Path]) -> None:
    question = SAMPLES["wrong"][0]
    sample = next(s for s in json.loads(logs["json"].read_text())["samples"] if s["id"] == "wrong")
    assert any(text == question for text in sample["attachments"].values())
    eval_id = header_of(logs["json"])["eval_id"]
    root, llm = by_trace(logs["json"])[trace_id_for("inspect", eval_id, "wrong:1")]
    assert root.attributes["input.value"] == question
    assert llm.attributes["input.value"] == f"user: {question}"


def test_a_chunked_sample_is_refused_by_name(logs: dict[str, Path], tmp_path: Path) -> None:
    from inspect_ai.log._recorders.chunked import convert_eval_logs_to_chunked

    convert_eval_logs_to_chunked(str(logs["eval"]), str(tmp_path))
    [path] = tmp_path.glob("*.eval")
    items = read(InspectReader(), path)
    assert spans_of(items) == []
    reasons = sorted(m.reason for m in malformed(items))
    assert len(reasons) == len(SAMPLES) * EPOCHS
    assert reasons[0] == "samples/add_epoch_1/: a chunked sample, not read (yet)"


def test_a_failing_annotation_writer_interrupts_the_import_with_its_spans_stored(
    logs: dict[str, Path], store: Store
) -> None:
    def failing(items: Any) -> Any:
        raise TraceproofError("The server went away.", code=ErrorCode.STORE_ERROR)

    with pytest.raises(ImportInterrupted) as caught:
        import_files([logs["json"]], store.submit, settings=store.settings, annotate=failing)
    error = caught.value
    assert error.resume == (str(logs["json"]), None)
    assert "The server went away." in str(error) and "Re-run the same command" in str(error)
    with store.reader() as reader:
        assert reader.scalar("SELECT count(*) FROM spans") == SPANS


def test_events_without_times_follow_the_sample_start(
    logs: dict[str, Path], tmp_path: Path
) -> None:
    log = json.loads(logs["json"].read_text())
    for event in log["samples"][0]["events"]:
        for key in ("timestamp", "completed", "working_time"):
            event.pop(key, None)
    path = tmp_path / "timeless.json"
    path.write_text(json.dumps(log, indent=2))
    spans = by_trace(path)
    first = log["samples"][0]
    root, *steps = spans[trace_id_for("inspect", log["eval"]["eval_id"], f"{first['id']}:1")]
    assert steps and all(s.start_ns >= root.start_ns > 0 for s in steps)
    assert [s.start_ns for s in steps] == sorted(s.start_ns for s in steps)
    assert all(later.start_ns >= earlier.end_ns for earlier, later in pairwise(steps))
