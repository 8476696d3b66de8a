"""Eval-result files (JSONL, CSV, Parquet) imported by `traceproof ingest` as annotations, and
the `traceproof annotate` / `traceproof annotations` commands."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from click.testing import CliRunner

from tests.conftest import NOT_THE_DEMOS
from traceproof.cli import cli
from traceproof.ingest.evalfiles import is_eval_file
from traceproof.settings import Settings
from traceproof.storage import Store


def demo_copy(demo_db: Path, tmp_path: Path) -> tuple[Path, list[tuple[str, str, str]]]:
    db = tmp_path / "store.duckdb"
    shutil.copy(demo_db, db)
    with Store.open(db, Settings(db=db)) as store, store.reader() as reader:
        rows = reader.rows(
            "SELECT s.span_id, s.trace_id, t.session_id FROM spans s JOIN trace_index t "
            "USING (project, trace_id) WHERE s.span_kind = 'LLM' AND t.session_id IS NOT NULL "
            "ORDER BY s.start_time, s.span_id LIMIT 3"
        )
    return db, [(r[0], r[1], r[2]) for r in rows]


def annotations(db: Path) -> list[tuple[object, ...]]:
    with Store.open(db, Settings(db=db)) as store, store.reader() as reader:
        return reader.rows(
            "SELECT target_kind, target_id, name, label, score, annotator_kind FROM annotations "
            f"WHERE {NOT_THE_DEMOS} ORDER BY name, target_id"
        )


def test_ingest_detects_eval_results_in_jsonl_csv_and_parquet(
    demo_db: Path, tmp_path: Path
) -> None:
    db, targets = demo_copy(demo_db, tmp_path)
    (s1, t1, session), (s2, _, _), (s3, _, _) = targets
    jsonl = tmp_path / "correctness.jsonl"  # one file per name: the stem names it
    jsonl.write_text(
        "\n".join(
            json.dumps(row)
            for row in (
                {"context.span_id": s1, "label": "pass", "score": 1, "explanation": "ok"},
                {"span_id": s2, "label": "fail", "score": 0, "annotator_kind": "HUMAN"},
                {"span_id": "0000000000000000", "label": "fail"},
            )
        )
        + "\n"
    )
    csv = tmp_path / "traces.csv"
    pacsv.write_csv(pa.table({"trace_id": [t1], "name": ["helpful"], "label": ["yes"]}), csv)
    parquet = tmp_path / "sessions.parquet"
    pq.write_table(
        pa.table({"session_id": [session], "name": ["escalated"], "score": [0.5]}), parquet
    )
    assert all(is_eval_file(p) for p in (jsonl, csv, parquet))
    result = CliRunner().invoke(
        cli, ["ingest", str(jsonl), str(csv), str(parquet), "--db", str(db), "--json"]
    )
    assert result.exit_code == 2, result.output  # one row rejected
    summary = json.loads(result.output)
    assert summary["annotations_created"] == 4
    assert summary["annotation_rejections"][0]["line"] == 3
    assert annotations(db) == sorted(
        [
            ("span", s1, "correctness", "pass", 1.0, "LLM"),
            ("span", s2, "correctness", "fail", 0.0, "HUMAN"),
            ("trace", t1, "helpful", "yes", None, "LLM"),
            ("session", session, "escalated", None, 0.5, "LLM"),
        ],
        key=lambda r: (r[2], r[1]),
    )
    again = CliRunner().invoke(cli, ["ingest", str(csv), "--db", str(db), "--json"])
    assert json.loads(again.output)["annotations_unchanged"] == 1
    assert s3  # a span left unjudged


def test_a_span_export_is_not_taken_for_eval_results(tmp_path: Path) -> None:
    export = tmp_path / "spans.jsonl"
    export.write_text(
        json.dumps(
            {
                "name": "x",
                "context": {"span_id": "a", "trace_id": "b"},
                "start_time": "t",
                "end_time": "t",
                "label": "not an eval",
            }
        )
        + "\n"
    )
    assert not is_eval_file(export)


def test_annotate_and_annotations_commands(demo_db: Path, tmp_path: Path) -> None:
    db, [(span_id, _, _), *_] = demo_copy(demo_db, tmp_path)
    runner = CliRunner()
    wrote = runner.invoke(
        cli,
        [
            "annotate",
            "--db",
            str(db),
            "--name",
            "correctness",
            "--label",
            "fail",
            "--id",
            span_id,
            "--annotator",
            "alice",
            "--json",
        ],
    )
    assert wrote.exit_code == 0, wrote.output
    assert json.loads(wrote.output)["created"] == 1
    wide = runner.invoke(
        cli,
        [
            "annotate",
            "--db",
            str(db),
            "--name",
            "tone",
            "--label",
            "ok",
            "--where",
            "span_kind = 'TOOL'",
            "--json",
        ],
    )
    assert json.loads(wide.output)["confirm_needed"] is True
    listed = runner.invoke(cli, ["annotations", "--db", str(db), "--name", "correctness", "--json"])
    found = json.loads(listed.output)
    assert found["total"] == 1
    assert found["rows"][0]["annotator"] == "alice"
    assert found["rows"][0]["annotator_kind"] == "HUMAN"
    unknown = runner.invoke(
        cli, ["annotate", "--db", str(db), "--name", "c", "--label", "x", "--id", "nope"]
    )
    assert unknown.exit_code == 1 and "[unknown_span]" in unknown.output
