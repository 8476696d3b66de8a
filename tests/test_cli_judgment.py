"""The judgment commands as a person types them: `traceproof annotate` and `traceproof errors`
on a copy of the demo store, through click's runner."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from traceproof.cli import cli


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def demo(demo_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # no traceproof.toml of the checkout's
    db = tmp_path / "demo.duckdb"
    shutil.copy(demo_db, db)
    return db


def test_a_write_past_the_confirm_setting_asks_for_the_confirm_option(demo: Path) -> None:
    many = ("--where", "status='ERROR'")  # the demo's 22 error spans: more than 20
    for args in (
        ("annotate", "--name", "notes", "--explanation", "x", *many),
        ("errors", "--save"),
    ):
        said = run(*args, "--db", demo, "--json")
        assert said.exit_code == 0, said.output
        answer = json.loads(said.stdout)
        note = answer["note"] if "note" in answer else answer["saved"]["note"]
        assert "Call again with --confirm" in note and "confirm=true" not in note


@pytest.mark.parametrize("label", [None, "fail"])
def test_a_nan_score_is_refused_as_not_finite_with_or_without_a_label(
    demo: Path, label: str | None
) -> None:
    labelled = ("--label", label) if label else ()
    said = run("annotate", "--name", "tone", "--score", "NaN", *labelled, "--where", "TRUE",
               "--db", demo)  # fmt: skip
    assert said.exit_code == 1
    assert "The score of 'tone' is nan. Give a finite number." in said.stderr


def test_annotate_writes_an_identifier_and_metadata(demo: Path) -> None:
    from traceproof.settings import Settings
    from traceproof.storage import Store

    with Store.open(demo, Settings(db=demo)) as store, store.reader() as reader:
        (span_id,) = reader.rows("SELECT span_id FROM spans ORDER BY span_id LIMIT 1")[0]
    said = run("annotate", "--name", "tone", "--label", "warm", "--id", span_id,
               "--identifier", "second-look", "--metadata", '{"round": 2}', "--db", demo,
               "--json")  # fmt: skip
    assert said.exit_code == 0, said.output
    assert json.loads(said.stdout)["created"] == 1
    with Store.open(demo, Settings(db=demo)) as store, store.reader() as reader:
        rows = reader.rows(
            "SELECT identifier, metadata FROM annotations WHERE name = 'tone' AND target_id = ?",
            [span_id],
        )
    assert [(i, json.loads(m)) for i, m in rows] == [("second-look", {"round": 2})]
    bad = run("annotate", "--name", "tone", "--label", "x", "--id", span_id, "--metadata", "[1]",
              "--db", demo)  # fmt: skip
    assert bad.exit_code == 1 and "--metadata is not a JSON object" in bad.stderr
