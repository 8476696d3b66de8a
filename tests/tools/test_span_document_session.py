"""One answer for a span's session and user: the span documents of get_span_data and jq carry
the trace's session and user when the span itself has none (only the root says so)."""

from __future__ import annotations

from tests.tools.test_span_session import sessions_on_roots  # noqa: F401  (the fixture)
from traceproof.storage import Store
from traceproof.tools.jqtool import jq
from traceproof.tools.spans import get_span_data


def test_get_span_data_shows_the_traces_session_and_user_on_a_child_span(
    sessions_on_roots: Store,  # noqa: F811
) -> None:
    data = get_span_data(sessions_on_roots, span_id="tool000000000000")
    fields = data.fields
    assert fields["session_id"] == "sess-a"
    assert fields["user_id"] == "u1"


def test_jq_over_one_span_and_over_a_trace_sees_the_traces_session(
    sessions_on_roots: Store,  # noqa: F811
) -> None:
    one = jq(sessions_on_roots, program="[.session_id, .user_id]", span_id="tool000000000001")
    assert one.results == [["sess-b", "u2"]]
    trace = jq(sessions_on_roots, program="[.[] | .session_id] | unique", trace_id="1" * 32)
    assert trace.results == [["sess-b"]]
