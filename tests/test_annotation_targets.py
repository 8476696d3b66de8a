"""Trace and session annotations are visible wherever spans and traces are: the preview's
header, the shared ``where`` over spans and traces, ``aggregate`` over both, and the note of a
search that finds nothing. Over the demo, whose ``resolved`` labels (a reviewer's and a judge's)
annotate traces."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from traceproof.cli import cli
from traceproof.evals.annotations import AnnotationInput, AnnotatorKind, TargetKind
from traceproof.storage import Store
from traceproof.storage.annotations import write_annotations
from traceproof.tools.aggregate import aggregate
from traceproof.tools.preview import get_trace_preview
from traceproof.tools.spans import search_spans
from traceproof.tools.traces import search_traces

FAIL = "annotation.resolved = 'fail'"


def verdicts(store: Store) -> dict[str, str]:
    """Trace id → the reviewer's (HUMAN) label, which wins over the judge's."""
    with store.reader() as reader:
        rows = reader.rows(
            "SELECT trace_id, label FROM annotations WHERE target_kind = 'trace' "
            "AND name = 'resolved' AND annotator_kind = 'HUMAN'"
        )
    return dict(rows)


def spans_of(store: Store, traces: set[str]) -> int:
    with store.reader() as reader:
        return int(
            reader.scalar(
                "SELECT count(*) FROM spans WHERE list_contains(?, trace_id)", [sorted(traces)]
            )
        )


def test_the_demo_labels_traces_and_the_judge_disagrees_on_some(demo_store: Store) -> None:
    people = verdicts(demo_store)
    with demo_store.reader() as reader:
        judge = dict(
            reader.rows(
                "SELECT trace_id, label FROM annotations WHERE target_kind = 'trace' "
                "AND name = 'resolved' AND annotator_kind = 'LLM'"
            )
        )
    assert len(people) == 30 and set(people.values()) == {"fail", "pass"}
    assert any(judge.get(t) != label for t, label in people.items())


def test_the_preview_shows_the_traces_marks_with_the_uncalibrated_sign(demo_store: Store) -> None:
    people = verdicts(demo_store)
    failed = sorted(t for t, label in people.items() if label == "fail")[0]
    write_annotations(
        demo_store,
        [
            AnnotationInput(
                TargetKind.TRACE,
                failed,
                "resolved2",
                label="pass",
                annotator_kind=AnnotatorKind.LLM,
                annotator="judge2@0123456789ab",
            )
        ],
    )
    preview = get_trace_preview(demo_store, trace_id=failed)
    assert preview.annotations is not None
    assert preview.annotations.startswith("trace: [")
    assert "resolved2=pass?" in preview.annotations
    # The reviewer and the (calibrated) judge: one value, or both when they disagree.
    assert "resolved=fail" in preview.annotations
    unlabelled = next(iter({t for t in _all_traces(demo_store)} - set(people)))
    assert get_trace_preview(demo_store, trace_id=unlabelled).annotations is None


def _all_traces(store: Store) -> set[str]:
    with store.reader() as reader:
        return {row[0] for row in reader.rows("SELECT trace_id FROM traces")}


def test_where_over_spans_and_traces_reads_the_traces_verdicts(demo_store: Store) -> None:
    people = verdicts(demo_store)
    failed = {t for t, label in people.items() if label == "fail"}
    assert failed
    traces = search_traces(demo_store, where=FAIL, limit=100)
    assert {t.trace_id for t in traces.traces} == failed
    assert traces.total == len(failed)
    spans = search_spans(demo_store, where=FAIL, limit=100)
    assert {s.trace_id for s in spans.spans} == failed
    counted = aggregate(demo_store, metrics=["count"], where=FAIL)
    assert counted.rows == [[spans_of(demo_store, failed)]]
    # A span's own verdict comes before its trace's.
    one = sorted(failed)[0]
    with demo_store.reader() as reader:
        root = reader.scalar("SELECT root_span_id FROM traces WHERE trace_id = ?", [one])
    write_annotations(
        demo_store, [AnnotationInput(TargetKind.SPAN, root, "resolved", label="pass", trace_id=one)]
    )
    fewer = aggregate(demo_store, metrics=["count"], where=FAIL)
    assert fewer.rows == [[spans_of(demo_store, failed) - 1]]
    # A trace still matches through its other spans (and its own verdict).
    assert search_traces(demo_store, where=FAIL, limit=100).total == len(failed)


def test_a_session_verdict_reaches_its_traces_and_spans_after_their_own(
    demo_store: Store,
) -> None:
    with demo_store.reader() as reader:
        session, n_traces, n_spans = reader.rows(
            "SELECT session_id, count(*), sum(span_count) FROM traces "
            "WHERE session_id IS NOT NULL GROUP BY ALL ORDER BY 1 LIMIT 1"
        )[0]
    write_annotations(
        demo_store, [AnnotationInput(TargetKind.SESSION, session, "csat", label="low", score=2)]
    )
    assert search_traces(demo_store, where="annotation.csat = 'low'").total == n_traces
    low = aggregate(demo_store, metrics=["count"], where="annotation.csat.score < 3")
    assert low.rows == [[n_spans]]
    grouped = aggregate(demo_store, over="traces", group_by=["annotation.csat"])
    assert dict(map(tuple, grouped.rows))["low"] == n_traces  # type: ignore[arg-type]
    preview = get_trace_preview(
        demo_store, trace_id=search_traces(demo_store, session_id=session).traces[0].trace_id
    )
    assert preview.annotations is not None and "session: [csat=low]" in preview.annotations


def test_aggregate_groups_traces_and_spans_by_the_traces_verdicts(demo_store: Store) -> None:
    people = verdicts(demo_store)
    fails = sum(label == "fail" for label in people.values())
    over_traces = aggregate(demo_store, over="traces", group_by=["annotation.resolved"])
    counts = {row[0]: row[1] for row in over_traces.rows}
    assert counts == {
        "fail": fails,
        "pass": len(people) - fails,
        None: len(_all_traces(demo_store)) - len(people),
    }
    scores = aggregate(
        demo_store,
        over="traces",
        group_by=["annotation.resolved"],
        metrics=["avg(annotation.resolved.score)"],
    )
    means = {row[0]: row[1] for row in scores.rows}
    assert means["pass"] is not None and means["fail"] is not None
    over_spans = aggregate(demo_store, group_by=["annotation.resolved"])
    span_counts = {row[0]: row[1] for row in over_spans.rows}
    failed = {t for t, label in people.items() if label == "fail"}
    assert span_counts["fail"] == spans_of(demo_store, failed)


def test_an_empty_annotation_search_says_what_it_read_and_what_the_name_annotates(
    demo_store: Store,
) -> None:
    traces = search_traces(demo_store, where="annotation.resolved = 'Fail'")
    assert traces.traces == [] and traces.note is not None
    assert "'resolved' annotates traces (" in traces.note
    assert "else its trace's" in traces.note
    spans = search_spans(demo_store, where="annotation.nope = 'x'")
    assert spans.note is not None and "no annotation is named 'nope' here" in spans.note


def test_the_cli_trace_command_prints_the_traces_marks(demo_db: Path, tmp_path: Path) -> None:
    import shutil

    db = tmp_path / "demo.duckdb"
    shutil.copyfile(demo_db, db)
    from traceproof.settings import Settings

    with Store.open(db, Settings(db=db)) as store:
        failed = sorted(t for t, label in verdicts(store).items() if label == "fail")[0]
    result = CliRunner().invoke(cli, ["trace", failed, "--db", str(db)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "trace: [resolved=fail" in result.output
