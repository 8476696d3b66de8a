"""Phoenix's own Python client writes annotations to a running traceproof server."""

from __future__ import annotations

import httpx
import pytest
from phoenix.client import Client

from tests.conftest import NOT_THE_DEMOS, LiveServer
from traceproof.settings import Settings
from traceproof.storage import Store


def _ids(store: Store) -> tuple[str, str, str]:
    with store.reader() as reader:
        ((span_id, trace_id, session_id),) = reader.rows(
            "SELECT s.span_id, s.trace_id, t.session_id FROM spans s JOIN trace_index t "
            "USING (project, trace_id) WHERE s.span_kind = 'LLM' AND t.session_id IS NOT NULL "
            "ORDER BY s.start_time LIMIT 1"
        )
    return span_id, trace_id, session_id


def _rows(store: Store) -> list[tuple[object, ...]]:
    with store.reader() as reader:
        return reader.rows(
            "SELECT target_kind, target_id, name, label, score, explanation, annotator_kind, "
            f"annotator, identifier, version FROM annotations WHERE {NOT_THE_DEMOS} "
            "ORDER BY target_kind, name"
        )


@pytest.fixture
def server(demo_store: Store, settings: Settings):  # type: ignore[no-untyped-def]
    with LiveServer(demo_store, settings) as live:
        yield live


def test_phoenix_client_logs_span_trace_and_session_annotations(
    server: LiveServer, demo_store: Store
) -> None:
    span_id, trace_id, session_id = _ids(demo_store)
    client = Client(base_url=server.url)
    inserted = client.spans.log_span_annotations(
        span_annotations=[
            {
                "span_id": span_id,
                "name": "correctness",
                "annotator_kind": "LLM",
                "result": {"label": "fail", "score": 0.0, "explanation": "wrong refund"},
                "metadata": {"annotator": "judge@1", "model": "m"},
            }
        ],
        sync=True,
    )
    assert len(inserted) == 1 and inserted[0]["id"]
    client.traces.log_trace_annotations(
        trace_annotations=[
            {
                "trace_id": trace_id,
                "name": "helpful",
                "annotator_kind": "HUMAN",
                "result": {"label": "yes"},
                "identifier": "alice",
            }
        ],
        sync=True,
    )
    client.sessions.log_session_annotations(
        session_annotations=[
            {
                "session_id": session_id,
                "name": "escalated",
                "annotator_kind": "CODE",
                "result": {"score": 1.0},
            }
        ],
        sync=True,
    )
    # Without sync Phoenix's client expects nothing back; the write is still committed.
    client.spans.log_span_annotations(
        span_annotations=[
            {
                "span_id": span_id,
                "name": "correctness",
                "annotator_kind": "HUMAN",
                "result": {"label": "pass", "explanation": "refund was right"},
            }
        ]
    )
    assert _rows(demo_store) == [
        ("session", session_id, "escalated", None, 1.0, None, "CODE", "code", "", 1),
        ("span", span_id, "correctness", "fail", 0.0, "wrong refund", "LLM", "judge@1", "", 1),
        ("span", span_id, "correctness", "pass", None, "refund was right", "HUMAN", "human", "", 1),
        ("trace", trace_id, "helpful", "yes", None, None, "HUMAN", "human", "alice", 1),
    ]


def test_an_unknown_span_is_404_and_nothing_of_the_batch_is_written(
    server: LiveServer, demo_store: Store
) -> None:
    span_id, _, _ = _ids(demo_store)
    response = httpx.post(
        server.url + "/v1/span_annotations",
        json={
            "data": [
                {
                    "span_id": span_id,
                    "name": "c",
                    "annotator_kind": "HUMAN",
                    "result": {"label": "x"},
                },
                {
                    "span_id": "0000000000000000",
                    "name": "c",
                    "annotator_kind": "HUMAN",
                    "result": {"label": "x"},
                },
            ]
        },
    )
    assert response.status_code == 404
    assert response.json()["detail"].startswith("[unknown_span]")
    assert _rows(demo_store) == []
    client = Client(base_url=server.url)
    with pytest.raises(httpx.HTTPStatusError):
        client.spans.log_span_annotations(
            span_annotations=[
                {
                    "span_id": "nope",
                    "name": "c",
                    "annotator_kind": "HUMAN",
                    "result": {"label": "x"},
                }
            ],
            sync=True,
        )


def test_the_annotation_routes_ask_for_the_token(demo_store: Store, settings: Settings) -> None:
    secured = settings.model_copy(update={"token": "s3cret"})
    span_id, _, _ = _ids(demo_store)
    with LiveServer(demo_store, secured) as live:
        body = {
            "data": [
                {
                    "span_id": span_id,
                    "name": "c",
                    "annotator_kind": "HUMAN",
                    "result": {"label": "x"},
                }
            ]
        }
        assert httpx.post(live.url + "/v1/span_annotations", json=body).status_code == 401
        client = Client(base_url=live.url, api_key="s3cret")
        inserted = client.spans.log_span_annotations(
            span_annotations=body["data"],
            sync=True,  # type: ignore[arg-type]
        )
    assert len(inserted) == 1
    assert len(_rows(demo_store)) == 1
