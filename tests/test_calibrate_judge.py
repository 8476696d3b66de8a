"""calibrate_judge over the real MCP client on a real store, with the LLM provider faked on
loopback: the real ``anthropic`` SDK, found through ANTHROPIC_BASE_URL / ANTHROPIC_API_KEY as a
user would point it at a gateway, answered by :class:`FakeAnthropic`."""

from __future__ import annotations

import json
import re
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp_types import CallToolResult, TextContent

from tests.evals.anthropic_mock import FakeAnthropic
from traceproof.demo_judgments import DEMO_JUDGE
from traceproof.evals.annotations import AnnotationInput, AnnotatorKind, TargetKind
from traceproof.evals.annotations import judge_annotator as annotator_of
from traceproof.evals.judge import JudgeDefinition
from traceproof.server.mcp import create_mcp_server
from traceproof.settings import Settings
from traceproof.storage import Store
from traceproof.storage.annotations import write_annotations
from traceproof.storage.judges import is_calibrated, list_calibrations

pytestmark = pytest.mark.anyio

HELPFUL = """
[evaluators.helpful]
kind = "judge"
rubric = "Is this answer helpful? <answer>{output}</answer>"
labels = ["fail", "pass"]
positive_label = "fail"

[evaluators.short]
evaluator = "latency_under"
max_ms = 1000
"""
HELPFUL_JUDGE = JudgeDefinition.from_config(
    "helpful",
    {
        "kind": "judge",
        "rubric": "Is this answer helpful? <answer>{output}</answer>",
        "labels": ["fail", "pass"],
        "positive_label": "fail",
    },
)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def failing(text: str) -> bool:
    return "couldn't find" in text or "went wrong" in text


def right(body: dict[str, Any]) -> dict[str, Any]:
    """The judge's answer that agrees with :func:`people_label` on the answer under review."""
    prompt = body["messages"][0]["content"]
    prompt = prompt if isinstance(prompt, str) else prompt[0]["text"]
    found = _ANSWER.search(prompt)
    output = found.group(1) if found else ""
    label = "fail" if failing(output) else "pass"
    return {"explanation": f"judged {label}", "evidence": [], "label": label}


def always_pass(body: dict[str, Any]) -> dict[str, Any]:
    return {"explanation": "looks fine", "evidence": [], "label": "pass"}


class Provider:
    """A FakeAnthropic behind a real HTTP server on loopback."""

    def __init__(self) -> None:
        self.fake = FakeAnthropic(default=right)
        fake = self.fake

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = httpx2.Request(
                    "POST", f"http://fake{self.path}", content=body, headers=dict(self.headers)
                )
                answer = fake._answer(request)
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Provider]:
    served = Provider()
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", served.url)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    project = tmp_path / "project"
    project.mkdir()
    (project / "traceproof.toml").write_text(HELPFUL)
    monkeypatch.chdir(project)
    yield served
    served.close()


@pytest.fixture
def store(demo_db: Path, tmp_path: Path) -> Iterator[Store]:
    path = tmp_path / "demo.duckdb"
    shutil.copyfile(demo_db, path)
    with Store.open(path, Settings(db=path)) as opened:
        yield opened


def root_spans(store: Store, n: int) -> list[tuple[str, str, str]]:
    """(trace id, span id, final answer) of the root spans of the first ``n`` demo turns."""
    with store.reader() as reader:
        rows = reader.rows(
            "SELECT s.trace_id, s.span_id, coalesce(s.output_value, '') FROM spans s "
            "JOIN trace_index t USING (project, trace_id) WHERE s.parent_span_id IS NULL "
            "ORDER BY t.start_time, t.trace_id LIMIT ?",
            [n],
        )
    return [(str(a), str(b), str(c)) for a, b, c in rows]


def label_spans(store: Store, n: int, name: str = "quality") -> list[tuple[str, str, str]]:
    """People's labels ``name`` on the root spans of the first ``n`` turns (fail: the answer
    reports an error or a missing order)."""
    spans = root_spans(store, n)
    write_annotations(
        store,
        [
            AnnotationInput(
                target_kind=TargetKind.SPAN,
                target_id=span_id,
                trace_id=trace_id,
                name=name,
                label="fail" if failing(output) else "pass",
                explanation="checked by hand",
                annotator_kind=AnnotatorKind.HUMAN,
                annotator="ana",
            )
            for trace_id, span_id, output in spans
        ],
    )
    return spans


def text(result: CallToolResult) -> str:
    block = result.content[0]
    assert isinstance(block, TextContent)
    return block.text


async def call(store: Store, name: str, arguments: dict[str, Any]) -> CallToolResult:
    async with Client(create_mcp_server(store)) as client:
        return await client.call_tool(name, arguments)


async def report(store: Store, **arguments: Any) -> dict[str, Any]:
    result = await call(store, "calibrate_judge", arguments)
    assert not result.is_error, text(result)
    assert result.structured_content is not None
    return result.structured_content


async def test_the_demo_judge_is_calibrated_from_its_recorded_verdicts_without_an_llm_call(
    store: Store, provider: Provider
) -> None:
    with store.reader() as reader:
        before = len(list_calibrations(reader))
    found = await report(store, judge="resolved", human="resolved")
    assert provider.fake.requests == []
    assert (found["n"], found["reused"], found.get("judged", 0)) == (30, 30, 0)
    assert found["definition_hash"] == DEMO_JUDGE.definition_hash
    assert found["confusion"] == [[3, 1], [1, 25]]
    assert found["agreement"] == pytest.approx(28 / 30, abs=1e-4)
    assert found["passed"] is True and "reasons" not in found
    assert found["tpr"] == 0.75 and found["tpr_95"][0] < 0.75 < found["tpr_95"][1]
    assert {d["target_id"] for d in found["disagreements"]} and found["disagreements_total"] == 2
    assert {d["human_label"] for d in found["disagreements"]} == {"pass", "fail"}
    with store.reader() as reader:
        assert len(list_calibrations(reader)) == before + 1
        assert is_calibrated(reader, DEMO_JUDGE.definition_hash)
    again = await report(store, judge="resolved", human="resolved")
    assert again["calibration_id"] == found["calibration_id"]  # the same measure: no new row
    with store.reader() as reader:
        assert len(list_calibrations(reader)) == before + 1


async def test_verdicts_missing_are_judged_written_then_reused_and_rerun_judges_again(
    store: Store, provider: Provider
) -> None:
    label_spans(store, 30)
    first = await report(store, judge="helpful", human="quality")
    assert (first["n"], first["judged"], first.get("reused", 0)) == (30, 30, 0)
    assert len(provider.fake.requests) == 30
    assert first["passed"] is True and first["kappa"] == 1.0
    assert first["cost_usd"] > 0
    written = await call(store, "get_annotations", {"name": "helpful", "limit": 100})
    assert written.structured_content is not None
    rows = written.structured_content["rows"]
    assert len(rows) == 30
    annotator = annotator_of("helpful", HELPFUL_JUDGE.definition_hash)
    assert {(r["annotator_kind"], r["annotator"]) for r in rows} == {("LLM", annotator)}
    assert {r["metadata"]["definition_hash"] for r in rows} == {HELPFUL_JUDGE.definition_hash}
    again = await report(store, judge="helpful", human="quality")
    assert (again["reused"], again.get("judged", 0)) == (30, 0)
    assert len(provider.fake.requests) == 30
    rerun = await report(store, judge="helpful", human="quality", rerun=True)
    assert (rerun["judged"], rerun.get("reused", 0)) == (30, 0)
    assert len(provider.fake.requests) == 60


async def test_uncalibrated_shows_until_a_passing_calibration_is_stored(
    store: Store, provider: Provider
) -> None:
    spans = label_spans(store, 30)
    failed_trace, failed_span, _ = next(s for s in spans if failing(s[2]))
    provider.fake.default = always_pass
    bad = await report(store, judge="helpful", human="quality")
    assert bad["passed"] is False
    assert any(reason.startswith("TPR 0.000") for reason in bad["reasons"])

    async def shown() -> tuple[list[dict[str, Any]], str, dict[str, Any]]:
        async with Client(create_mcp_server(store)) as client:
            rows = await client.call_tool("get_annotations", {"ids": [failed_span]})
            preview = await client.call_tool("get_trace_preview", {"trace_id": failed_trace})
            span = await client.call_tool("get_span_data", {"span_id": failed_span})
        assert rows.structured_content and preview.structured_content
        assert span.structured_content is not None
        return (
            rows.structured_content["rows"],
            "\n".join(preview.structured_content["tree"]),
            span.structured_content,
        )

    rows, tree, span = await shown()
    by_kind = {r["annotator_kind"]: r for r in rows}
    assert by_kind["LLM"]["uncalibrated"] is True and "uncalibrated" not in by_kind["HUMAN"]
    assert "helpful=pass?" in tree and "quality=fail" in tree
    assert "uncalibrated" in str(span)

    provider.fake.default = right
    good = await report(store, judge="helpful", human="quality", rerun=True)
    assert good["passed"] is True
    rows, tree, span = await shown()
    assert all("uncalibrated" not in r for r in rows)
    assert "helpful=fail" in tree and "?" not in tree.split("helpful=")[1].split("]")[0]
    assert "uncalibrated" not in str(span)


async def test_disagreements_page_from_the_stored_calibration(
    store: Store, provider: Provider
) -> None:
    label_spans(store, 30)
    provider.fake.default = always_pass
    first = await report(store, judge="helpful", human="quality", max_chars=1000)
    with store.reader() as reader:
        stored = len(list_calibrations(reader))
    assert first["disagreements_total"] == 3
    assert first["truncated"] is True and len(first["disagreements"]) < 3
    seen = [d["target_id"] for d in first["disagreements"]]
    page = first
    while "next_cursor" in page:
        page = await report(
            store, judge="helpful", human="quality", max_chars=1000, cursor=page["next_cursor"]
        )
        seen += [d["target_id"] for d in page["disagreements"]]
    assert len(seen) == len(set(seen)) == 3
    assert len(provider.fake.requests) == 30
    with store.reader() as reader:
        assert len(list_calibrations(reader)) == stored


@pytest.mark.parametrize(
    ("arguments", "code", "says"),
    [
        ({"judge": "nobody", "human": "resolved"}, "unknown_evaluator", "helpful"),
        ({"judge": "short", "human": "resolved"}, "invalid_argument", "not an LLM judge"),
        ({"judge": "helpful", "human": "nothing"}, "not_found", "annotate"),
        ({"judge": "helpful", "human": "few"}, "invalid_argument", "calibration_min_pairs"),
        (
            {"judge": "resolved", "human": "resolved", "cursor": "bogus"},
            "invalid_cursor",
            "cursor",
        ),
    ],
)
async def test_bad_inputs_answer_their_code_and_what_to_do(
    store: Store, provider: Provider, arguments: dict[str, Any], code: str, says: str
) -> None:
    label_spans(store, 2, name="few")
    result = await call(store, "calibrate_judge", arguments)
    assert result.is_error
    assert text(result).startswith(f"[{code}]") and says in text(result)
    assert provider.fake.requests == []


async def test_without_a_key_a_judge_with_verdicts_to_make_answers_llm_unavailable(
    store: Store, provider: Provider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    label_spans(store, 12)
    result = await call(store, "calibrate_judge", {"judge": "helpful", "human": "quality"})
    assert result.is_error
    assert text(result).startswith("[llm_unavailable]") and "ANTHROPIC_API_KEY" in text(result)
    reused = await report(store, judge="resolved", human="resolved")  # nothing to judge: fine
    assert reused["reused"] == 30
    with store.reader() as reader:
        written = reader.scalar("SELECT count(*) FROM annotations WHERE name = 'helpful'")
    assert written == 0


def test_the_cli_prints_the_report_and_writes_the_disagreements_as_the_judges_next_version(
    store: Store, provider: Provider, tmp_path: Path
) -> None:
    import tomllib

    from click.testing import CliRunner

    from traceproof.cli import cli
    from traceproof.evals.config import parse_config

    db = store.path
    store.close()
    out = tmp_path / "few_shot.toml"
    runner = CliRunner()
    shown = runner.invoke(
        cli,
        ["judge", "calibrate", "resolved", "--human", "resolved", "--db", str(db),
         "--few-shot-out", str(out)],
    )  # fmt: skip
    assert shown.exit_code == 0, shown.output
    assert "PASSED" in shown.output and "disagreements (2)" in shown.output
    assert provider.fake.requests == []
    config = parse_config(out.read_text(), root=tmp_path)
    table = config.evaluators["resolved"].table
    assert [e["label"] for e in table["examples"]] == ["pass", "fail"]
    assert all(e["input"] and e["output"] for e in table["examples"])
    nxt = JudgeDefinition.from_config("resolved", table)
    assert len(nxt.examples) == 2 and nxt.definition_hash != DEMO_JUDGE.definition_hash
    same = {k: v for k, v in tomllib.loads(out.read_text())["evaluators"]["resolved"].items()}
    same.pop("examples")
    assert JudgeDefinition.from_config("resolved", same).definition_hash == (
        DEMO_JUDGE.definition_hash
    )
    strict = {"TRACEPROOF_CALIBRATION_MIN_AGREEMENT": "0.99"}  # 28 of 30 agree: it fails
    failed = runner.invoke(cli, ["judge", "calibrate", "resolved", "--human", "resolved",
                                 "--db", str(db), "--json"], env=strict)  # fmt: skip
    assert failed.exit_code == 1 and json.loads(failed.stdout)["passed"] is False
    listed = runner.invoke(cli, ["judge", "calibrations", "resolved", "--db", str(db), "--json"])
    assert listed.exit_code == 0, listed.output
    rows = json.loads(listed.output)["rows"]
    assert len(rows) == 3 and {row[1] for row in rows} == {"resolved"}  # demo, shown, failed
    missing = runner.invoke(cli, ["judge", "calibrate", "nobody", "--human", "x", "--db", str(db)])
    assert missing.exit_code == 1 and "[unknown_evaluator]" in missing.output
