"""Error fingerprints and clusters: templates, frames, the SQL twin, merging near-duplicates."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from traceproof.evals.clusters import ErrorRecord, cluster, group_records
from traceproof.evals.fingerprint import (
    fingerprint,
    shape,
    shape_sql,
    template,
    template_query,
    top_frames,
)
from traceproof.storage import Store

T0 = datetime(2026, 3, 1, 12, 0, 0)

TEMPLATES = [
    (
        "request to https://api.example.com/v1/items/93?x=1 timed out after 10.8s",
        "request to <url> timed out after <duration>",
    ),
    ("user bob.smith+x@corp.example.com not found", "user <email> not found"),
    ("connect to 10.0.12.7:5432 refused", "connect to <ip> refused"),
    ("connect to [fe80::1ff:fe23:4567:890a] refused", "connect to [<ip>] refused"),
    ("connect to 2001:0db8:85a3:0000:0000:8a2e:0370:7334 refused", "connect to <ip> refused"),
    ("db-1.prod.internal:5432 is down", "<host> is down"),
    ("session 123e4567-e89b-12d3-a456-426614174000 expired", "session <uuid> expired"),
    ("bad token d41d8cd98f00b204e9800998ecf8427e", "bad token <hash>"),
    ("object 3f2a9c1d7e and 0x1F missing", "object <hex> and <hex> missing"),
    ("deadbeef cafebabe stay words", "deadbeef cafebabe stay words"),
    ("at 2026-03-01T12:27:46.123Z and 2026-03-02", "at <datetime> and <datetime>"),
    ("stopped at 12:30:01", "stopped at <time>"),
    (
        "took 250ms, then 5000 ms, then 2.5 seconds",
        "took <duration>, then <duration>, then <duration>",
    ),
    ("refund of $229.00 exceeds 1,200 limit", "refund of $<num> exceeds <num> limit"),
    ("KeyError 'order_17' in \"batch A\"", "KeyError '<str>' in \"<str>\""),
    ("can't read it's fine", "can't read it's fine"),
    ("no file /var/data/17/input.csv", "no file <path>"),
    ("no file C:\\Users\\ann\\in.txt", "no file <path>"),
    ("  spaces\n\tcollapse  ", "spaces collapse"),
]


@pytest.mark.parametrize(("message", "expected"), TEMPLATES)
def test_variable_parts_become_placeholders_and_the_words_stay(message: str, expected: str) -> None:
    assert template(message) == expected


def test_the_duckdb_query_makes_the_same_templates_as_python(store: Store) -> None:
    messages = [m for m, _ in TEMPLATES] + ["ünïcode 42 naïve", "", "'", "x1 " * 1500]
    values = ", ".join(f"({i}, ?)" for i in range(len(messages)))
    query = (
        f"WITH d AS (SELECT i, {shape_sql('m')} AS shape FROM (VALUES {values}) AS v(i, m)) "
        f"SELECT i, template FROM d JOIN ({template_query('(SELECT DISTINCT shape FROM d) AS s')})"
        " USING (shape) ORDER BY i"
    )
    with store.reader() as reader:
        rows = reader.rows(query, messages)
    assert [text for _, text in rows] == [template(m) for m in messages]


def test_digits_never_survive_so_shapes_lose_nothing() -> None:
    for message, _ in TEMPLATES:
        assert template(shape(message)) == template(message)
        assert not any(c.isdigit() for c in template(message))


PYTHON_STACK = """Traceback (most recent call last):
  File "/srv/app/agent/tools.py", line 142, in lookup_order
    result = await client.call(**arguments)
  File "/srv/app/clients/http.py", line 77, in call
    raise map_error(response)
  File "/usr/lib/python3.11/site-packages/httpx/_client.py", line 1500, in send
    raise TimeoutError
TimeoutError: upstream timed out"""

JS_STACK = """TypeError: Cannot read properties of undefined (reading 'id')
    at getUser (/app/src/users.js:42:17)
    at async Router.handle (file:///app/node_modules/express/lib/router.js:281:3)
    at /app/src/index.js:10:5
    at process.processTicksAndRejections (node:internal/process/task_queues:95:5)"""


def test_top_frames_are_innermost_first_without_line_numbers() -> None:
    assert top_frames(PYTHON_STACK) == (
        "httpx/_client.py:send",
        "clients/http.py:call",
        "agent/tools.py:lookup_order",
    )
    assert top_frames(JS_STACK) == (
        "src/users.js:getUser",
        "lib/router.js:Router.handle",
        "src/index.js:?",
    )
    moved = PYTHON_STACK.replace("line 142", "line 150").replace("line 77", "line 80")
    assert top_frames(moved) == top_frames(PYTHON_STACK)


def test_one_failure_has_one_fingerprint_whatever_its_ids() -> None:
    one = fingerprint("TimeoutError", "request to https://a.example.com/1 after 10.8s", JS_STACK)
    two = fingerprint("TimeoutError", "request to https://b.example.com/22 after 3s", JS_STACK)
    assert one == two
    assert one.title == "TimeoutError: request to <url> after <duration>"
    assert fingerprint("ValueError", "request to https://a.example.com/1 after 1s").key != one.key
    assert fingerprint("TimeoutError", "request to https://a.example.com after 1s").key != (
        one.key
    )  # no stack: other frames


def test_a_status_message_naming_its_type_gives_the_same_fingerprint() -> None:
    from_event = fingerprint("TimeoutError", "DHL did not respond within 5000 ms")
    from_status = fingerprint(None, "TimeoutError: DHL did not respond within 5000 ms")
    repeated = fingerprint("TimeoutError", "TimeoutError: DHL did not respond within 5000 ms")
    assert from_event == from_status == repeated
    assert from_event.error_type == "TimeoutError"


def _records(messages: list[tuple[str, str]]) -> list[ErrorRecord]:
    return [
        ErrorRecord(
            id=f"s{i}",
            trace_id=f"t{i % 3}",
            session_id=f"sess{i % 2}",
            error_type=kind,
            message=message,
            stack=None,
            time=T0 + timedelta(seconds=i),
            span_name="get_shipping_status",
            tool="get_shipping_status",
        )
        for i, (kind, message) in enumerate(messages)
    ]


def test_near_duplicate_templates_merge_and_different_causes_do_not() -> None:
    records = _records(
        [
            ("TimeoutError", "DHL tracking API did not respond within 5000 ms"),
            ("TimeoutError", "DHL tracking API did not respond within 4000 ms"),
            ("TimeoutError", "UPS tracking API did not respond within 5000 ms"),
            ("TimeoutError", "FedEx tracking API did not respond within 5000 ms"),
            ("AgentError", "giving up after PermissionError from issue_refund"),
            ("AgentError", "giving up after TimeoutError from get_shipping_status"),
            ("ValueError", "DHL tracking API did not respond within 5000 ms"),
        ]
    )
    found = cluster(group_records(records))
    assert [(c.error_type, c.template, c.count, len(c.templates)) for c in found] == [
        ("TimeoutError", "<*> tracking API did not respond within <duration>", 4, 3),
        ("AgentError", "giving up after PermissionError from issue_refund", 1, 1),
        ("AgentError", "giving up after TimeoutError from get_shipping_status", 1, 1),
        ("ValueError", "DHL tracking API did not respond within <duration>", 1, 1),
    ]
    timeouts = found[0]
    assert timeouts.traces == {"t0", "t1", "t2"} and timeouts.sessions == {"sess0", "sess1"}
    assert (timeouts.first_seen, timeouts.last_seen) == (T0, T0 + timedelta(seconds=3))
    never = cluster(group_records(records), threshold=1.01)
    assert len(never) == 6  # the three carriers stay apart; the two DHL timings are one template


def test_clusters_are_the_same_whatever_order_the_errors_come_in() -> None:
    records = _records(
        [(k, f"user u{i}@x.io lacks role '{r}'") for i, (k, r) in enumerate([("E", "a")] * 5)]
        + [("F", f"disk {i} full at 9{i}%") for i in range(7)]
    )
    forward = cluster(group_records(records))
    backward = cluster(group_records(list(reversed(records))))
    assert [(c.key, c.count, c.template) for c in forward] == [
        (c.key, c.count, c.template) for c in backward
    ]
    assert [e.span_id for e in forward[0].examples] == ["s11", "s10", "s9"]
