"""Annotation configs in use: stored from traceproof.toml when a server starts and before CLI
writes, set and listed by `traceproof annotation-config` (on the store or through a running
server), enforced on every write with nothing half-written; and eval-result files ingested
through the server that holds the store."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from click.testing import CliRunner, Result

from tests.conftest import NOT_THE_DEMOS, LiveServer, ServeProcess
from traceproof.cli import cli
from traceproof.errors import ErrorCode
from traceproof.evals.annotations import (
    AnnotationConfig,
    AnnotationInput,
    ConfigKind,
    InvalidAnnotation,
    LabelChoice,
    TargetKind,
)
from traceproof.evals.config import parse_config
from traceproof.projectconfig import apply_annotation_configs
from traceproof.server.stdio import _apply_configs
from traceproof.settings import Settings
from traceproof.storage import Store
from traceproof.storage.annotations import (
    get_configs,
    outside_config,
    set_configs,
    write_annotations,
)
from traceproof.tools.annotations import read_annotations

TOML = """
[annotations.correctness]
labels = { pass = 1.0, fail = 0.0 }
direction = "maximize"

[annotations.tone]
kind = "continuous"
min = 0
max = 1

[evaluators.helpful]
kind = "judge"
rubric = "Is {output} helpful?"
labels = ["yes", "no"]
"""


def run(*args: str | Path, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], env=env, catch_exceptions=False)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    path = tmp_path / "traceproof.toml"
    path.write_text(TOML)
    return path


@pytest.fixture
def demo(demo_db: Path, tmp_path: Path) -> Path:
    db = tmp_path / "demo.duckdb"
    shutil.copy(demo_db, db)
    return db


def span_ids(db: Path, n: int = 3) -> list[str]:
    with Store.open(db, Settings(db=db)) as store, store.reader() as reader:
        rows = reader.rows("SELECT span_id FROM spans ORDER BY start_time, span_id LIMIT ?", [n])
    return [r[0] for r in rows]


def stored_annotations(db: Path) -> list[tuple[Any, ...]]:
    with Store.open(db, Settings(db=db)) as store, store.reader() as reader:
        return reader.rows(
            "SELECT target_id, name, label, score, annotator FROM annotations "
            f"WHERE {NOT_THE_DEMOS} ORDER BY ALL"
        )


def span(target: str, name: str, **values: Any) -> AnnotationInput:
    return AnnotationInput(target_kind=TargetKind.SPAN, target_id=target, name=name, **values)


# -- the store ------------------------------------------------------------------------------------


def test_configs_are_stored_in_one_transaction_and_an_unchanged_file_writes_nothing(
    demo_store: Store, project: Path
) -> None:
    configs = parse_config(project.read_text(), root=project.parent)
    first = apply_annotation_configs(demo_store, configs)
    assert first is not None
    assert sorted(first.changed) == ["correctness", "helpful", "tone"] and not first.unchanged
    with demo_store.reader() as reader:
        stamps = reader.rows("SELECT name, updated_at FROM annotation_configs ORDER BY name")
        assert get_configs(reader)["helpful"].labels == (LabelChoice("yes"), LabelChoice("no"))
    again = apply_annotation_configs(demo_store, configs)
    assert again is not None and not again.changed and len(again.unchanged) == 3
    with demo_store.reader() as reader:
        assert reader.rows("SELECT name, updated_at FROM annotation_configs ORDER BY name") == (
            stamps
        )
    removed = set_configs(demo_store, [], remove=["tone", "never_there"])
    assert removed.removed == ("tone",)
    with demo_store.reader() as reader:
        assert sorted(get_configs(reader)) == [
            "correctness",
            "helpful",
            "resolved",
        ]  # the demo's own


def test_a_write_that_breaks_a_declared_config_is_refused_and_nothing_of_the_batch_is_stored(
    demo_store: Store, project: Path
) -> None:
    apply_annotation_configs(demo_store, parse_config(project.read_text(), root=project.parent))
    with demo_store.reader() as reader:
        s1, s2 = (r[0] for r in reader.rows("SELECT span_id FROM spans ORDER BY span_id LIMIT 2"))
    good = span(s1, "correctness", label="pass")
    for bad, allowed in (
        (span(s2, "correctness", label="maybe"), "labels 'pass' (score 1), 'fail' (score 0)"),
        (span(s2, "tone", score=1.5), "scores from 0 to 1"),
        (span(s2, "tone", label="warm"), "scores from 0 to 1"),
        (span(s2, "helpful", label="pass"), "labels 'yes', 'no'"),
    ):
        with pytest.raises(InvalidAnnotation) as info:
            write_annotations(demo_store, [good, bad])
        assert info.value.code == ErrorCode.INVALID_ANNOTATION
        assert allowed in info.value.message and "Nothing of this batch" in info.value.message
    with demo_store.reader() as reader:
        assert reader.scalar(f"SELECT count(*) FROM annotations WHERE {NOT_THE_DEMOS}") == 0
    written = write_annotations(demo_store, [good, span(s2, "tone", score=0.25)])
    assert (written.created, written.rejected) == (2, [])
    # An explanation alone (a note, an evaluator's error record) says no label nor score.
    notes = write_annotations(
        demo_store,
        [
            span(s2, "correctness", explanation="timed out", metadata={"error": "timeout"}),
            span(s2, "tone", explanation="could not judge", annotator="polite@1"),
        ],
    )
    assert notes.created == 2
    with demo_store.reader() as reader:
        # The label's configured score is filled in.
        assert reader.rows(
            f"SELECT name, score FROM annotations WHERE {NOT_THE_DEMOS} ORDER BY name, score"
        ) == [
            ("correctness", 1.0),
            ("correctness", None),
            ("tone", 0.25),
            ("tone", None),
        ]
        assert (
            outside_config(reader, AnnotationConfig("tone", ConfigKind.CONTINUOUS, lower_bound=0.5))
            == 1
        )


def test_get_annotations_shows_the_config_of_each_name_it_counts(
    demo_store: Store, project: Path
) -> None:
    apply_annotation_configs(demo_store, parse_config(project.read_text(), root=project.parent))
    with demo_store.reader() as reader:
        (s1,) = (r[0] for r in reader.rows("SELECT span_id FROM spans ORDER BY span_id LIMIT 1"))
    write_annotations(
        demo_store, [span(s1, "correctness", label="fail"), span(s1, "free", label="x")]
    )
    found = read_annotations(demo_store)
    assert found.configs == {  # and the demo's own, for its people's and judge's verdicts
        "correctness": "categorical pass=1|fail=0, maximize",
        "resolved": "categorical pass=1|fail=0, maximize",
    }
    assert read_annotations(demo_store, name="free").configs is None


def test_an_mcp_server_warns_about_a_config_file_that_does_not_load_and_keeps_going(
    store: Store, tmp_path: Path
) -> None:
    said: list[str] = []
    bad = tmp_path / "bad.toml"
    bad.write_text("[annotations.x]\nkind = 'categorical'\n")
    _apply_configs(store, store.settings.model_copy(update={"config": bad}), said.append)
    assert said[0].startswith("warning: annotation configs not applied: [invalid_config] ")
    assert "annotations.x.labels: missing" in said[0]
    good = tmp_path / "good.toml"
    good.write_text(TOML)
    _apply_configs(store, store.settings.model_copy(update={"config": good}), said.append)
    assert said[1] == (
        "traceproof mcp: annotation configs from good.toml: correctness, helpful, tone "
        "(3 changed, 0 unchanged)"
    )


# -- the CLI on the store ---------------------------------------------------------------------


def test_cli_annotate_applies_the_project_configs_before_it_writes(
    demo: Path, project: Path
) -> None:
    (s1,) = span_ids(demo, 1)
    refused = run("annotate", "--db", demo, "--config", project, "--name", "correctness",
                  "--label", "maybe", "--id", s1)  # fmt: skip
    assert refused.exit_code == 1
    assert "[invalid_annotation]" in refused.stderr and "'pass' (score 1)" in refused.stderr
    assert stored_annotations(demo) == []
    written = run("annotate", "--db", demo, "--config", project, "--name", "correctness",
                  "--label", "fail", "--id", s1, "--annotator", "alice", "--json")  # fmt: skip
    assert written.exit_code == 0, written.output
    assert stored_annotations(demo) == [(s1, "correctness", "fail", 0.0, "alice")]
    # TRACEPROOF_CONFIG is the same as --config.
    env = {"TRACEPROOF_CONFIG": str(project)}
    again = run("annotate", "--db", demo, "--name", "tone", "--score", "3", "--id", s1, env=env)
    assert again.exit_code == 1 and "scores from 0 to 1" in again.stderr


def test_cli_sets_lists_and_removes_configs_and_leaves_the_files_names_to_the_file(
    demo: Path, project: Path
) -> None:
    own = run("annotation-config", "--db", demo)  # the demo's own: its people's verdicts
    assert own.exit_code == 0 and "resolved" in own.stdout and "pass=1|fail=0" in own.stdout
    listed = json.loads(
        run("annotation-config", "--db", demo, "--config", project, "--json").stdout
    )
    assert [c["name"] for c in listed["configs"]] == ["resolved"]
    assert listed["not_applied"] == ["correctness", "helpful", "tone"]
    result = run("annotation-config", "--db", demo, "--config", project, "--name", "severity",
                 "--categorical", "low=0", "high=1", "unknown", "--direction", "minimize",
                 "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert sorted(found["changed"]) == ["correctness", "helpful", "severity", "tone"]
    by_name = {c["name"]: c for c in found["configs"]}
    assert by_name["severity"]["summary"] == "categorical low=0|high=1|unknown, minimize"
    assert (by_name["severity"]["source"], by_name["helpful"]["source"]) == ("set", "judge")
    assert by_name["correctness"]["source"] == "traceproof.toml"
    assert "not_applied" not in found
    cont = run("annotation-config", "--db", demo, "--name", "latency", "--continuous", "0", "inf")
    assert cont.exit_code == 0, cont.output
    table = run("annotation-config", "--db", demo, "--config", project)
    assert "continuous 0.." in table.stdout and "severity" in table.stdout
    declared = run("annotation-config", "--db", demo, "--config", project, "--name",
                   "correctness", "--freeform")  # fmt: skip
    assert declared.exit_code == 1
    assert (
        "[invalid_argument]" in declared.stderr and "[annotations.correctness]" in declared.stderr
    )
    removed = run("annotation-config", "--db", demo, "--name", "severity", "--remove", "--json")
    assert json.loads(removed.stdout)["removed"] == ["severity"]
    gone = run("annotation-config", "--db", demo, "--name", "severity", "--remove")
    assert gone.exit_code == 1 and "[not_found]" in gone.stderr
    for bad, says in (
        (["--name", "x"], "Say what to do with --name"),
        (["--categorical", "a"], "--name says which"),
        (["--name", "x", "--freeform", "--continuous", "0", "1"], "Give one of"),
        (["--name", "x", "--freeform", "a=1"], "go with --categorical only"),
        (["--name", "x", "--categorical", "a=high"], "'high' is not a number"),
    ):
        refused = run("annotation-config", "--db", demo, *bad)
        assert refused.exit_code == 2 and says in refused.output, refused.output
    repeated = run("annotation-config", "--db", demo, "--name", "x", "--categorical", "a", "a")
    assert repeated.exit_code == 1 and "repeats a label" in repeated.stderr


def test_a_config_file_that_does_not_load_stops_a_cli_write_with_its_error(
    demo: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "traceproof.toml"
    bad.write_text("[annotations.tone]\nmin = 1\nmax = 0\n")
    (s1,) = span_ids(demo, 1)
    result = run("annotate", "--db", demo, "--config", bad, "--name", "n", "--label", "x",
                 "--id", s1)  # fmt: skip
    assert result.exit_code == 1
    assert "[invalid_config]" in result.stderr and "annotations.tone: min 1 is above max 0" in (
        " ".join(result.stderr.split())
    )
    assert stored_annotations(demo) == []


# -- through a running server -------------------------------------------------------------------


def test_phoenix_routes_with_partial_write_what_they_can_and_report_the_rest(
    demo_store: Store, settings: Settings
) -> None:
    set_configs(demo_store, [AnnotationConfig("tone", ConfigKind.CONTINUOUS, upper_bound=1)])
    with demo_store.reader() as reader:
        s1, s2 = (r[0] for r in reader.rows("SELECT span_id FROM spans ORDER BY span_id LIMIT 2"))
    body = {
        "data": [
            {"span_id": s1, "name": "tone", "result": {"score": 0.5}, "annotator": "bob"},
            {"span_id": "0" * 16, "name": "tone", "result": {"score": 0.5}},
            {"span_id": s2, "name": "tone", "result": {"score": 7}},
            {"span_id": s2, "name": "tone", "result": {"score": 0.1}, "metadata": {"k": 1}},
        ]
    }
    with LiveServer(demo_store, settings) as server:
        strict = httpx2.post(server.url + "/v1/span_annotations", json=body)
        assert strict.status_code == 404  # Phoenix's all-or-nothing, unchanged
        answer = httpx2.post(server.url + "/v1/span_annotations?partial=true", json=body)
    assert answer.status_code == 200
    found = answer.json()
    assert found["status"] == ["created", "rejected", "rejected", "created"]
    assert len(found["data"]) == 2 and all(d["id"] for d in found["data"])
    assert [(r["index"], r["code"]) for r in found["rejected"]] == [
        (1, "unknown_span"),
        (2, "invalid_annotation"),
    ]
    with demo_store.reader() as reader:
        assert reader.rows(
            f"SELECT target_id, score, annotator, metadata FROM annotations WHERE {NOT_THE_DEMOS} "
            "ORDER BY score"
        ) == [(s2, 0.1, "human", '{"k":1}'), (s1, 0.5, "bob", None)]


@pytest.fixture
def served(demo: Path, project: Path) -> Iterator[ServeProcess]:
    server = ServeProcess(demo, None, "--config", str(project))
    yield server
    server.stop()


def eval_file(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.mark.slow
def test_a_server_stores_the_project_configs_when_it_starts_and_enforces_them(
    served: ServeProcess, demo: Path
) -> None:
    listed = httpx2.get(served.url + "/api/v1/annotation-configs").json()["configs"]
    assert [c["name"] for c in listed] == ["correctness", "helpful", "resolved", "tone"]
    assert listed[0]["labels"] == [
        {"label": "pass", "score": 1.0},
        {"label": "fail", "score": 0.0},
    ]
    (s1,) = span_ids_via(served, 1)
    refused = httpx2.post(
        served.url + "/v1/span_annotations",
        json={"data": [{"span_id": s1, "name": "correctness", "result": {"label": "maybe"}}]},
    )
    assert refused.status_code == 422
    assert refused.json()["detail"].startswith("[invalid_annotation] ")
    # The CLI lists and sets configs through the server's API.
    result = run("annotation-config", "--db", demo, "--name", "speed", "--continuous", "0",
                 "10", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["changed"] == ["speed"]
    names = [c["name"] for c in httpx2.get(served.url + "/api/v1/annotation-configs").json()[
        "configs"]]  # fmt: skip
    assert names == ["correctness", "helpful", "resolved", "speed", "tone"]
    bad = httpx2.post(served.url + "/api/v1/annotation-configs", json={"set": [{"name": "x"}]})
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_argument"


def span_ids_via(server: ServeProcess, n: int) -> list[str]:
    answer = httpx2.post(
        server.url + "/api/v1/tools/sql",
        json={"query": f"SELECT span_id FROM spans ORDER BY start_time, span_id LIMIT {n}"},
    )
    assert answer.status_code == 200, answer.text
    return [row[0] for row in answer.json()["rows"]]


@pytest.mark.slow
def test_ingest_of_eval_files_goes_through_the_running_server_with_the_same_summary(
    served: ServeProcess, demo_db: Path, project: Path, tmp_path: Path
) -> None:
    s1, s2, s3 = span_ids_via(served, 3)
    rows = [
        {"span_id": s1, "label": "pass", "explanation": "ok", "annotator": "judge@1"},
        {"span_id": "0" * 16, "label": "fail"},
        {"span_id": s2, "label": "maybe"},
        {"span_id": s3, "label": "fail", "metadata": {"run": 7}},
        {"span_id": s2, "label": "pass", "explanation": "x" * 30_000},
    ]
    # Many more rows than one request carries: they go in chunks.
    rows += [{"span_id": s3, "label": "pass", "identifier": f"r{i}"} for i in range(1200)]
    path = eval_file(tmp_path / "correctness.jsonl", rows)
    remote = run("ingest", path, "--db", served.db, "--json")
    assert remote.exit_code == 2, remote.output
    summary = json.loads(remote.stdout)

    local_db = tmp_path / "local.duckdb"
    shutil.copy(demo_db, local_db)
    local = run("ingest", path, "--db", local_db, "--config", project, "--json")
    assert local.exit_code == 2, local.output
    assert summary == json.loads(local.stdout)
    assert (summary["annotations_read"], summary["annotations_created"]) == (1205, 1202)
    assert [(r["line"], r["reason"].split(" ")[0]) for r in summary["annotation_rejections"]] == [
        (2, "No"),
        (3, "The"),
        (5, "The"),
    ]
    rejections = summary["annotation_rejections"]
    assert "'maybe'" in rejections[1]["reason"] and "20,000 allowed" in rejections[2]["reason"]
    assert all(r["path"] == str(path) for r in rejections)

    again = json.loads(run("ingest", path, "--db", served.db, "--json").stdout)
    assert (again["annotations_created"], again["annotations_unchanged"]) == (0, 1202)

    served.stop()
    assert stored_annotations(served.db) == stored_annotations(local_db)
    assert (s3, "correctness", "fail", 0.0, "llm") in stored_annotations(served.db)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.slow
@pytest.mark.anyio
async def test_traceproof_mcp_stores_the_project_configs_when_it_starts(
    demo: Path, project: Path, tmp_path: Path
) -> None:
    import sys

    from mcp import Client, StdioServerParameters
    from mcp.client.stdio import stdio_client

    (s1,) = span_ids(demo, 1)
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "traceproof", "mcp", "--db", str(demo), "--no-otlp", "--config", str(project)],
        env={"PYTHONUNBUFFERED": "1"},
    )
    errlog = tmp_path / "stderr.txt"
    with errlog.open("w") as err:
        async with Client(stdio_client(params, errlog=err)) as client:
            refused = await client.call_tool(
                "annotate", {"name": "correctness", "label": "maybe", "ids": [s1]}
            )
            written = await client.call_tool(
                "annotate", {"name": "correctness", "label": "fail", "ids": [s1]}
            )
            found = await client.call_tool("get_annotations", {"ids": [s1]})
    assert refused.is_error
    assert "[invalid_annotation]" in str(refused.content[0])
    assert not written.is_error
    assert found.structured_content is not None
    assert found.structured_content["configs"] == {
        "correctness": "categorical pass=1|fail=0, maximize"
    }
    assert "annotation configs from traceproof.toml: correctness, helpful, tone" in (
        errlog.read_text()
    )
    assert stored_annotations(demo) == [(s1, "correctness", "fail", 0.0, "llm")]
