from __future__ import annotations

import httpx2

from tests.conftest import CollectingExporter, LiveServer, encoded, make_agent_trace, sdk_provider


def test_exported_trace_is_queryable(live_server: LiveServer) -> None:
    exporter = CollectingExporter()
    make_agent_trace(sdk_provider(exporter), fail_tool=True)
    response = httpx2.post(
        live_server.url + "/v1/traces",
        content=encoded(exporter.spans),
        headers={"content-type": "application/x-protobuf"},
    )
    assert response.status_code == 200
    with live_server.store.reader() as reader:
        row = reader.dicts("select name, span_count, error_count, session_id from traces")
    assert row == [{"name": "agent", "span_count": 3, "error_count": 1, "session_id": "session-1"}]
