"""``evaluate`` over real stores through the real MCP client: built-in, custom (child process)
and LLM-judge evaluators (the real anthropic client against a fake Messages API on loopback),
idempotent re-runs, errors, background jobs, progress notifications; and ``traceproof eval
run`` on the store and through a running server."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from click.testing import CliRunner
from mcp import Client

from tests.conftest import ServeProcess, wait_until
from tests.evals.anthropic_server import FakeAnthropicServer, prompt_of
from traceproof.cli import cli
from traceproof.jobs import jobs_for
from traceproof.server.mcp import create_mcp_server
from traceproof.settings import Settings
from traceproof.storage import Store
from traceproof.storage.judges import Calibration, save_calibration

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


CHECKS = """
import pathlib
import time

GATE = pathlib.Path({gate!r})
STARTED = GATE.with_name("started")


def picky(output):
    if output is None:
        raise ValueError("no output to judge")
    return len(output) > 40, f"{{len(output)}} characters"


def gated(output):
    STARTED.touch()
    while not GATE.exists():  # the test opens the gate when it has seen the job running
        time.sleep(0.005)
    return 1.0
"""

CONFIG = '''
[evaluators.mentions_refund]
evaluator = "contains"
value = ["refund"]

[evaluators.picky]
function = "checks:picky"

[evaluators.gated]
function = "checks:gated"

[evaluators.correctness]
kind = "judge"
rubric = """Did the agent resolve the request?
QUESTION: {input}
ANSWER: {output}
END"""
labels = { fail = 0.0, pass = 1.0 }
'''


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    root.mkdir()
    (root / "checks.py").write_text(CHECKS.format(gate=str(root / "gate")))
    (root / "traceproof.toml").write_text(CONFIG)
    return root


def open_store(demo_db: Path, project: Path, **settings: Any) -> Store:
    db = project / "store.duckdb"
    shutil.copyfile(demo_db, db)
    return Store.open(db, Settings(db=db, config=project / "traceproof.toml", **settings))


@pytest.fixture
def store(demo_db: Path, project: Path) -> Iterator[Store]:
    with open_store(demo_db, project) as opened:
        yield opened


async def call(store: Store, arguments: dict[str, Any], **options: Any) -> dict[str, Any]:
    async with Client(create_mcp_server(store)) as client:
        result = await client.call_tool("evaluate", arguments, **options)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def error_of(store: Store, arguments: dict[str, Any]) -> str:
    async with Client(create_mcp_server(store)) as client:
        result = await client.call_tool("evaluate", arguments)
    assert result.is_error
    text: str = result.content[0].text  # type: ignore[union-attr]
    return text


def rows(store: Store, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with store.reader() as reader:
        return reader.rows(sql, params)


def annotation_count(store: Store) -> tuple[int, int]:
    return (
        rows(store, "SELECT count(*) FROM annotations")[0][0],
        rows(store, "SELECT count(*) FROM annotation_history")[0][0],
    )


# -- built-in and custom code -----------------------------------------------------------------


async def test_a_builtin_judges_every_trace_and_writes_one_code_annotation_each(
    store: Store,
) -> None:
    found = await call(store, {"evaluator": "mentions_refund", "target": "trace"})
    refunds = rows(
        store,
        "SELECT count(*) FROM spans WHERE parent_span_id IS NULL AND output_value LIKE '%refund%'",
    )[0][0]
    assert (found["status"], found["targets"], found["written"]) == ("done", 90, 90)
    assert found["labels"] == {"fail": 90 - refunds, "pass": refunds}
    assert found["mean_score"] == round(refunds / 90, 4)
    assert len(found["examples"]["pass"]) == 3
    stored = rows(
        store,
        "SELECT annotator_kind, annotator, target_kind, count(*), count(DISTINCT target_id) "
        "FROM annotations WHERE name = 'mentions_refund' GROUP BY ALL",
    )
    assert stored == [("CODE", f"mentions_refund@{found['version']}", "trace", 90, 90)]
    passed = {r[0] for r in rows(store, "SELECT target_id FROM annotations WHERE label = 'pass'")}
    assert set(found["examples"]["pass"]) <= passed
    assert "uncalibrated" not in found and "input_tokens" not in found


async def test_running_the_same_version_again_writes_nothing_and_reports_the_stored_verdicts(
    store: Store,
) -> None:
    first = await call(store, {"evaluator": "mentions_refund", "target": "trace"})
    before = annotation_count(store)
    again = await call(store, {"evaluator": "mentions_refund", "target": "trace"})
    assert annotation_count(store) == before
    assert (again["written"], again["skipped"], again["total"]) == (0, 90, 0)
    assert again["labels"] == first["labels"] and again["mean_score"] == first["mean_score"]
    assert "job" not in again  # nothing to run: no job


async def test_a_custom_evaluator_in_a_child_process_records_errors_not_scores(
    store: Store,
) -> None:
    found = await call(store, {"evaluator": "picky", "where": "span_kind = 'TOOL'"})
    missing = rows(
        store, "SELECT count(*) FROM spans WHERE span_kind = 'TOOL' AND output_value IS NULL"
    )[0][0]
    assert missing > 0
    assert found["targets"] == 177 and found["errors"] == missing
    assert sum(found["labels"].values()) == 177 - missing
    assert found["error_examples"][0]["error"].startswith("ValueError: no output to judge")
    errors = rows(
        store,
        "SELECT label, score, explanation, json_extract_string(metadata, '$.error') "
        "FROM annotations WHERE name = 'picky' AND label IS NULL",
    )
    assert len(errors) == missing
    assert {(label, score, kind) for label, score, _, kind in errors} == {
        (None, None, "ValueError")
    }
    assert all(e[2].startswith("ValueError: no output to judge") for e in errors)
    verdict = rows(
        store,
        "SELECT a.label, a.explanation, length(s.output_value) FROM annotations a JOIN spans s "
        "ON s.span_id = a.span_id AND s.trace_id = a.trace_id WHERE a.name = 'picky' AND "
        "a.label IS NOT NULL LIMIT 1",
    )[0]
    assert verdict[1] == f"{verdict[2]} characters"
    assert verdict[0] == ("pass" if verdict[2] > 40 else "fail")

    # Errors are not verdicts: they run again, and the same error again changes nothing.
    before = annotation_count(store)
    again = await call(store, {"evaluator": "picky", "where": "span_kind = 'TOOL'"})
    assert (again["skipped"], again["total"], again["errors"]) == (177 - missing, missing, missing)
    assert again["written"] == 0 and annotation_count(store) == before


async def test_a_changed_evaluator_is_a_new_version_beside_the_old_one(
    store: Store, project: Path
) -> None:
    first = await call(store, {"evaluator": "mentions_refund", "target": "trace"})
    config = project / "traceproof.toml"
    config.write_text(config.read_text().replace('value = ["refund"]', 'value = ["refunded"]'))
    second = await call(store, {"evaluator": "mentions_refund", "target": "trace"})
    assert second["version"] != first["version"]
    assert (second["written"], second["skipped"]) == (90, 0)
    versions = rows(
        store,
        "SELECT annotator, count(*) FROM annotations WHERE name = 'mentions_refund' "
        "GROUP BY ALL ORDER BY ALL",
    )
    assert sorted(v[0] for v in versions) == sorted(
        f"mentions_refund@{v}" for v in (first["version"], second["version"])
    )


async def test_progress_notifications_reach_the_client_and_end_at_the_total(
    demo_db: Path, project: Path
) -> None:
    seen: list[tuple[float, float | None]] = []

    async def progress(done: float, total: float | None, message: str | None) -> None:
        seen.append((done, total))

    with open_store(demo_db, project, eval_code_batch_size=25, eval_concurrency=2) as store:
        found = await call(
            store, {"evaluator": "picky", "where": "span_kind = 'LLM'"}, progress_callback=progress
        )
    assert found["done"] == found["total"] == 398
    assert len(seen) >= 3
    assert [d for d, _ in seen] == sorted({d for d, _ in seen})  # strictly increasing
    assert seen[-1] == (398, 398)
    assert {t for _, t in seen} == {398}


async def test_progress_notifications_arrive_over_streamable_http_with_a_progress_token(
    demo_db: Path, project: Path
) -> None:
    """The JSON-RPC path: the client sends a progressToken, the server's worker thread reports,
    the event loop sends notifications/progress before the answer."""
    from mcp.client.streamable_http import streamable_http_client

    from tests.conftest import LiveServer

    seen: list[float] = []

    async def progress(done: float, total: float | None, message: str | None) -> None:
        seen.append(done)

    with (
        open_store(demo_db, project, eval_code_batch_size=50) as store,
        LiveServer(store, store.settings) as server,
    ):
        async with (
            httpx2.AsyncClient(timeout=60) as http,
            Client(streamable_http_client(server.url + "/mcp", http_client=http)) as client,
        ):
            result = await client.call_tool(
                "evaluate",
                {"evaluator": "picky", "where": "span_kind = 'LLM'"},
                progress_callback=progress,
            )
    assert not result.is_error and result.structured_content is not None
    assert result.structured_content["written"] == 398
    assert seen and seen[-1] == 398 and seen == sorted(set(seen))


async def test_a_long_run_continues_in_the_background_and_its_job_tells_its_status(
    demo_db: Path, project: Path
) -> None:
    with open_store(demo_db, project, eval_code_batch_size=10, eval_concurrency=1) as store:
        started = await call(
            store, {"evaluator": "gated", "where": "span_kind = 'AGENT'", "wait": 0}
        )
        assert started["status"] == "running" and started["total"] == 90
        assert f"evaluate(job='{started['job']}')" in started["note"]
        status = await call(store, {"job": started["job"], "wait": 0})
        assert status["status"] == "running" and status["done"] < 90
        (project / "gate").touch()
        done = await call(store, {"job": started["job"], "wait": 60})
        assert (done["status"], done["done"], done["written"]) == ("done", 90, 90)
        assert done["labels"] == {"(none)": 90} and done["mean_score"] == 1.0
        assert "note" not in done


async def test_a_cancelled_run_keeps_what_it_wrote_and_the_same_call_resumes_it(
    demo_db: Path, project: Path
) -> None:
    arguments = {"evaluator": "gated", "where": "span_kind = 'AGENT'"}
    with open_store(demo_db, project, eval_code_batch_size=10, eval_concurrency=1) as store:
        started = await call(store, arguments | {"wait": 0})
        job = jobs_for(store).get(started["job"])
        assert job is not None
        wait_until((project / "started").exists, what="the first batch to start")
        job.cancel()
        (project / "gate").touch()  # the batch in flight finishes and is written; no other
        cancelled = await call(store, {"job": started["job"], "wait": 60})
        assert cancelled["status"] == "cancelled" and cancelled["written"] == 10
        resumed = await call(store, arguments)
        assert (resumed["skipped"], resumed["written"], resumed["status"]) == (10, 80, "done")
        assert rows(store, "SELECT count(*) FROM annotations WHERE name = 'gated'") == [(90,)]


async def test_an_unknown_evaluator_names_those_declared(store: Store) -> None:
    text = await error_of(store, {"evaluator": "helpfulness"})
    assert text.startswith("[unknown_evaluator] No evaluator 'helpfulness'")
    assert "mentions_refund, picky, gated, correctness" in text


@pytest.mark.parametrize(
    ("arguments", "code"),
    [
        ({"evaluator": "picky", "where": "latency_ms >>> 3"}, "invalid_filter"),
        ({"evaluator": "picky", "where": "no_such_column = 1"}, "invalid_filter"),
        ({"evaluator": "picky", "since": "yesterday"}, "invalid_argument"),
        ({"evaluator": "picky", "ids": ["abc"], "where": "status = 'OK'"}, "invalid_argument"),
        ({"evaluator": "picky", "ids": ["0000000000000000"]}, "unknown_span"),
        ({"evaluator": "picky", "target": "trace", "ids": ["ffff"]}, "unknown_trace"),
        ({"evaluator": "picky", "limit": 0}, "invalid_argument"),
        ({"evaluator": "picky", "stauts": "OK"}, "invalid_argument"),
        ({"job": "no-such-job"}, "unknown_job"),
        ({}, "invalid_argument"),
    ],
)
async def test_bad_arguments_are_refused_with_their_code_and_nothing_is_written(
    store: Store, arguments: dict[str, Any], code: str
) -> None:
    before = annotation_count(store)
    assert (await error_of(store, arguments)).startswith(f"[{code}] ")
    assert annotation_count(store) == before


async def test_ids_choose_exactly_those_targets_in_their_order(store: Store) -> None:
    ids = [r[0] for r in rows(store, "SELECT trace_id FROM trace_index ORDER BY trace_id LIMIT 4")]
    found = await call(store, {"evaluator": "mentions_refund", "target": "trace", "ids": ids})
    assert found["targets"] == 4 and found["written"] == 4
    stored = rows(store, "SELECT target_id FROM annotations WHERE name = 'mentions_refund'")
    assert sorted(r[0] for r in stored) == ids


async def test_limit_takes_the_newest_and_says_how_many_matched(store: Store) -> None:
    found = await call(store, {"evaluator": "mentions_refund", "target": "trace", "limit": 5})
    assert found["targets"] == 5 and "90 traces match; the newest 5" in found["note"]
    newest = rows(
        store, "SELECT trace_id FROM trace_index ORDER BY start_time DESC, trace_id LIMIT 5"
    )
    stored = rows(store, "SELECT target_id FROM annotations WHERE name = 'mentions_refund'")
    assert sorted(r[0] for r in stored) == sorted(r[0] for r in newest)


async def test_sessions_are_judged_on_their_first_input_and_last_output(store: Store) -> None:
    found = await call(store, {"evaluator": "mentions_refund", "target": "session"})
    assert found["targets"] == 25 and found["written"] == 25
    assert rows(
        store, "SELECT DISTINCT target_kind FROM annotations WHERE name = 'mentions_refund'"
    ) == [("session",)]


# -- the LLM judge ----------------------------------------------------------------------------


def refund_judge(body: dict[str, Any]) -> dict[str, Any]:
    """``pass`` when the answer mentions a refund, else ``fail``; malformed for a skillet."""
    answer = prompt_of(body).split("ANSWER:", 1)[1].split("END", 1)[0]
    if "skillet" in answer:
        return {"explanation": "unsure", "evidence": [], "label": "maybe"}
    label = "pass" if "refund" in answer else "fail"
    quote = answer.strip()[:20]
    return {"explanation": f"it says {label}", "evidence": [{"quote": quote, "span_id": None}],
            "label": label}  # fmt: skip


@pytest.fixture
def fake_anthropic(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAnthropicServer]:
    with FakeAnthropicServer(refund_judge) as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-not-a-key")
        yield server


def trace_roots(store: Store, n: int) -> list[tuple[str, str]]:
    return [
        (r[0], r[1] or "")
        for r in rows(
            store,
            "SELECT trace_id, output_value FROM spans WHERE parent_span_id IS NULL "
            f"ORDER BY trace_id LIMIT {n}",
        )
    ]


async def test_a_judge_writes_llm_verdicts_with_its_hash_tokens_and_cost(
    store: Store, fake_anthropic: FakeAnthropicServer
) -> None:
    roots = trace_roots(store, 12)
    ids = [t for t, _ in roots]
    found = await call(store, {"evaluator": "correctness", "target": "trace", "ids": ids})
    malformed = sum("skillet" in out for _, out in roots)
    refunds = sum("refund" in out and "skillet" not in out for _, out in roots)
    assert len(fake_anthropic.requests) == 12
    assert found["errors"] == malformed
    assert found["labels"].get("pass", 0) == refunds
    assert found["labels"].get("fail", 0) == 12 - malformed - refunds
    assert found["uncalibrated"] is True
    assert found["input_tokens"] == 12 * 1200 and found["output_tokens"] == 12 * 150
    stored = rows(
        store,
        "SELECT annotator_kind, annotator, label, score, "
        "json_extract_string(metadata, '$.definition_hash'), "
        "CAST(json_extract(metadata, '$.cost_usd') AS DOUBLE), "
        "json_extract_string(metadata, '$.error') FROM annotations WHERE name = 'correctness'",
    )
    assert len(stored) == 12
    assert {r[0] for r in stored} == {"LLM"}
    hashes = {r[4] for r in stored}
    assert len(hashes) == 1
    digest = hashes.pop()
    assert digest.startswith("sha256:")
    assert {r[1] for r in stored} == {f"correctness@{digest.removeprefix('sha256:')[:12]}"}
    assert {(r[2], r[3]) for r in stored if r[6] is None} <= {("pass", 1.0), ("fail", 0.0)}
    assert [r[6] for r in stored if r[2] is None] == ["llm_malformed"] * malformed
    (each,) = {r[5] for r in stored if r[6] is None}
    assert each > 0
    # Every call is paid for, malformed answers too (their error annotations keep no cost).
    assert found["cost_usd"] == pytest.approx(12 * each, rel=1e-6)
    definition = rows(
        store, "SELECT name, kind FROM evaluator_definitions WHERE hash = ?", [digest]
    )
    assert definition == [("correctness", "judge")]

    # A passing calibration of this definition: its verdicts are no longer uncalibrated.
    save_calibration(
        store,
        Calibration(
            judge_name="correctness",
            judge_hash=digest,
            human_name="correctness",
            n=50,
            metrics={"agreement": 0.9},
            passed=True,
            thresholds={},
        ),
    )
    again = await call(store, {"evaluator": "correctness", "target": "trace", "ids": ids})
    assert "uncalibrated" not in again
    assert again["skipped"] == 12 - malformed and again["total"] == malformed
    assert len(fake_anthropic.requests) == 12 + malformed  # only the errors were asked again


async def test_a_judge_without_a_key_answers_llm_unavailable_and_writes_nothing(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    before = annotation_count(store)
    text = await error_of(store, {"evaluator": "correctness", "target": "trace", "limit": 3})
    assert text.startswith("[llm_unavailable] ") and "ANTHROPIC_API_KEY" in text
    assert annotation_count(store) == before


async def test_a_refused_key_stops_the_run_with_llm_unavailable(
    demo_db: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeAnthropicServer(lambda body: 401) as fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-revoked")
        with open_store(demo_db, project, llm_concurrency=1) as store:
            before = annotation_count(store)  # the demo's own labels and judgments
            text = await error_of(store, {"evaluator": "correctness", "target": "trace"})
            assert text.startswith("[llm_unavailable] ")
            assert len(fake.requests) == 1  # not one refused call per target
            assert annotation_count(store) == before


# -- through a running server, and the CLI ----------------------------------------------------


def test_eval_run_on_the_store_prints_the_summary_as_json(
    demo_db: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = project / "store.duckdb"
    shutil.copyfile(demo_db, db)
    monkeypatch.chdir(project)  # traceproof.toml is found where the command runs
    runner = CliRunner()
    result = runner.invoke(
        cli,
        ["eval", "run", "mentions_refund", "--target", "trace", "--kind", "AGENT", "--json",
         "--db", str(db)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert (found["status"], found["written"]) == ("done", 90)
    again = runner.invoke(
        cli, ["eval", "run", "mentions_refund", "--target", "trace", "--db", str(db)]
    )
    assert again.exit_code == 0
    assert "skipped: 90" in again.stdout
    unknown = runner.invoke(cli, ["eval", "run", "nope", "--db", str(db)])
    assert unknown.exit_code == 1
    assert unknown.stderr.startswith("error: [unknown_evaluator] No evaluator 'nope'")


@pytest.mark.slow
def test_a_judge_runs_through_the_servers_api_and_the_cli_follows_it(
    demo_db: Path, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = project / "served.duckdb"
    shutil.copyfile(demo_db, db)
    with FakeAnthropicServer(refund_judge) as fake:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-not-a-key")
        monkeypatch.setenv("TRACEPROOF_CONFIG", str(project / "traceproof.toml"))
        server = ServeProcess(db)
        try:
            ids = _root_ids(server.url, 6)
            answer = httpx2.post(
                f"{server.url}/api/v1/tools/evaluate",
                json={"evaluator": "correctness", "target": "trace", "ids": ids[:3]},
                timeout=60,
            )
            assert answer.status_code == 200, answer.text
            first = answer.json()
            assert first["status"] == "done" and first["targets"] == 3
            assert first["uncalibrated"] is True and first["input_tokens"] == 3 * 1200

            runner = CliRunner()
            args = ["eval", "run", "correctness", "--target", "trace", "--json", "--db", str(db)]
            for trace_id in ids:
                args += ["--id", trace_id]
            result = runner.invoke(cli, args)
            assert result.exit_code == 0, result.output
            found = json.loads(result.stdout)
            assert (found["targets"], found["skipped"] + found["total"]) == (6, 6)
            assert found["skipped"] >= 3 - first["errors"]
            assert len(fake.requests) == 3 + found["total"]

            elsewhere = runner.invoke(cli, ["eval", "run", "not_on_server", "--db", str(db)])
            assert elsewhere.exit_code == 1  # the server reads its own file, not this one
            said = " ".join(elsewhere.stderr.split())
            assert "[unknown_evaluator] No evaluator 'not_on_server'" in said
            assert "reads its own traceproof.toml" in said and "pass --config" in said
            assert "Add an [evaluators" not in said

            bad = httpx2.post(
                f"{server.url}/api/v1/tools/evaluate", json={"job": "nope"}, timeout=30
            )
            assert bad.status_code == 404 and bad.json()["code"] == "unknown_job"
        finally:
            server.stop()


def _root_ids(url: str, n: int) -> list[str]:
    answer = httpx2.post(
        f"{url}/api/v1/tools/sql",
        json={"query": f"SELECT trace_id FROM trace_index ORDER BY trace_id LIMIT {n}"},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    return [row[0] for row in answer.json()["rows"]]
