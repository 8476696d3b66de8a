"""get_trace_preview: a trace as a compact tree, within its budget, on hand-built traces with
known timings and on the demo project."""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest

from traceproof.errors import ErrorCode
from traceproof.ingest.normalize import Event, SpanRows
from traceproof.storage import Store
from traceproof.tools.common import ToolFailure, size
from traceproof.tools.preview import TracePreview, get_trace_preview
from traceproof.tools.tree import RUN_MIN

T0 = datetime(2026, 3, 1, 12, 0, 0)
EPOCH = datetime(1970, 1, 1)


@dataclass
class Sp:
    """One span: times in milliseconds after ``T0``."""

    span_id: str
    parent: str | None
    name: str
    start_ms: float
    end_ms: float
    kind: str = "CHAIN"
    error: str | None = None
    model: str | None = None
    tool: str | None = None
    tokens: int | None = None
    input: str | None = None
    output: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


def _ns(ms: float) -> int:
    return int((T0 - EPOCH) / timedelta(microseconds=1) + ms * 1000) * 1000


def write(store: Store, spans: list[Sp], trace_id: str = "t" * 32, project: str = "p") -> str:
    rows = SpanRows()
    for s in spans:
        attributes: dict[str, Any] = {"openinference.span.kind": s.kind, **s.attributes}
        optional = {
            "llm.model_name": s.model,
            "tool.name": s.tool,
            "llm.token_count.total": s.tokens,
            "input.value": s.input,
            "output.value": s.output,
        }
        attributes |= {k: v for k, v in optional.items() if v is not None}
        events = []
        if s.error:
            kind, _, message = s.error.partition(": ")
            events.append(
                Event(
                    "exception",
                    _ns(s.end_ms),
                    {"exception.type": kind, "exception.message": message},
                )
            )
        rows.add(
            project=project,
            trace_id=trace_id,
            span_id=s.span_id,
            parent_span_id=s.parent,
            name=s.name,
            start_ns=_ns(s.start_ms),
            end_ns=_ns(s.end_ms),
            status="ERROR" if s.error else "OK",
            status_message=s.error,
            attributes=attributes,
            events=events,
        )
    store.write(rows.table())
    return trace_id


def line_of(preview: TracePreview, span_id: str) -> str:
    found = [line for line in preview.tree if f" {span_id} " in line]
    assert len(found) == 1, (span_id, preview.tree)
    return found[0]


def shown_ids(preview: TracePreview) -> set[str]:
    """Span ids on lines of their own (not a run's first/last ids)."""
    spans = [line for line in preview.tree if "→" not in line]
    return {m for line in spans for m in re.findall(r" ([0-9a-z]{16}) \+", line)}


# A small agent trace with known timings (ms):
#   root  0..1000   children: plan 0..300, tool 200..600 (overlaps plan), answer 700..900
#   plan has an LLM child 50..250; tool fails.
#   root self = 1000 - union of [0,600] and [700,900] = 1000 - 800 = 200
#   plan self = 300 - 200 = 100
SMALL = [
    Sp("root000000000001", None, "agent", 0, 1000, "AGENT", input="Where is my order 42?",
       output="It ships Monday."),
    Sp("plan000000000002", "root000000000001", "plan", 0, 300, input="Where is my order 42?"),
    Sp("llm0000000000003", "plan000000000002", "ChatCompletion", 50, 250, "LLM",
       model="gpt-4o", tokens=1234,
       input='{"messages": [{"role": "system", "content": "Be kind."}, '
             '{"role": "user", "content": "Where is my order 42?"}]}',
       output="call lookup_order"),
    Sp("tool000000000004", "root000000000001", "lookup_order", 200, 600, "TOOL",
       tool="lookup_order", input='{"order_id": 42}',
       error="TimeoutError: orders API did not answer"),
    Sp("answ000000000005", "root000000000001", "answer", 700, 900, "LLM", model="claude",
       tokens=80, output="It ships Monday."),
]  # fmt: skip


def test_each_line_shows_kind_status_offset_duration_self_time_share_and_tokens(
    store: Store,
) -> None:
    trace_id = write(store, SMALL)
    preview = get_trace_preview(store, trace_id=trace_id)

    assert preview.tree[0] == (
        "*agent AGENT root000000000001 +0ms 1.00s self 200ms 100% in:Where is my order 42? "
        "out:It ships Monday."
    )
    assert line_of(preview, "plan000000000002") == (
        "├─plan CHAIN plan000000000002 +0ms 300ms self 100ms 30% in:^"
    )
    # An LLM's input preview is its latest message; equal to its parent's input, so "^".
    assert line_of(preview, "llm0000000000003") == (
        "│ └─ChatCompletion LLM llm0000000000003 +50ms 200ms 20% gpt-4o 1.2ktok in:^ "
        "out:call lookup_order"
    )
    assert line_of(preview, "tool000000000004") == (
        "├─*lookup_order TOOL ERROR tool000000000004 +200ms 400ms 40% in:{order_id: 42} "
        "err:TimeoutError: orders API did not answer"
    )
    assert line_of(preview, "answ000000000005") == (
        "└─*answer LLM answ000000000005 +700ms 200ms 20% claude 80tok out:^"
    )
    assert (preview.span_count, preview.error_count, preview.total_tokens) == (5, 1, 1314)
    assert (preview.name, preview.project, preview.latency_ms) == ("agent", "p", 1000.0)
    assert preview.start_time == T0
    assert preview.collapsed == [] and preview.truncated is False
    # How to read a line is in the tool's description, not paid again in every answer.
    assert "legend" not in preview.model_dump()
    assert "* critical path" in (get_trace_preview.__doc__ or "")


def test_self_time_clips_children_to_the_span_and_merges_overlaps(store: Store) -> None:
    # parent 100..500; children 50..150 (clipped to 100..150), 120..200 (overlaps: adds 150..200)
    # and 450..700 (clipped to 450..500): covered 50 + 50 + 50 = 150, self = 400 - 150 = 250.
    spans = [
        Sp("root000000000001", None, "root", 0, 1000),
        Sp("prnt000000000002", "root000000000001", "parent", 100, 500),
        Sp("chda000000000003", "prnt000000000002", "a", 50, 150),
        Sp("chdb000000000004", "prnt000000000002", "b", 120, 200),
        Sp("chdc000000000005", "prnt000000000002", "c", 450, 700),
    ]
    preview = get_trace_preview(store, trace_id=write(store, spans))
    assert " 400ms self 250ms 40%" in line_of(preview, "prnt000000000002")
    # root: children cover 100..500 only (its own children; grandchildren don't count).
    assert " 1.00s self 600ms 100%" in line_of(preview, "root000000000001")


def critical(store: Store, spans: list[Sp], trace_id: str = "c" * 32) -> list[str]:
    """The critical path of ``spans`` (longest-holding first), checked against the "*" marks
    of the tree."""
    preview = get_trace_preview(store, trace_id=write(store, spans, trace_id=trace_id))
    marked = {s for s in shown_ids(preview) if line_of(preview, s).lstrip("│├└─ ").startswith("*")}
    assert marked == set(preview.critical_path)
    return preview.critical_path


def test_critical_path_of_sequential_children_takes_every_step_not_only_the_last(
    store: Store,
) -> None:
    # An agent: LLM call, a long tool, another LLM call: the tool is most of the trace.
    spans = [
        Sp("root000000000001", None, "agent", 0, 16_000, "AGENT"),
        Sp("llma000000000002", "root000000000001", "Messages", 10, 800, "LLM"),
        Sp("tool000000000003", "root000000000001", "lookup", 800, 11_600, "TOOL"),
        Sp("llmb000000000004", "root000000000001", "Messages", 11_600, 15_990, "LLM"),
    ]
    assert critical(store, spans) == [
        "tool000000000003",  # holds the path 10.8s
        "llmb000000000004",  # 4.39s
        "llma000000000002",  # 790ms
        "root000000000001",  # 20ms of its own
    ]


def test_critical_path_of_parallel_children_takes_the_one_that_ends_last(store: Store) -> None:
    spans = [
        Sp("root000000000001", None, "fan-out", 0, 1000),
        Sp("fast000000000002", "root000000000001", "fetch", 0, 300),
        Sp("slow000000000003", "root000000000001", "fetch", 0, 950),
        Sp("midd000000000004", "root000000000001", "fetch", 0, 600),
        Sp("slin000000000005", "slow000000000003", "inner", 100, 900),
    ]
    assert critical(store, spans) == [
        "slin000000000005",  # 800ms
        "slow000000000003",  # 150ms around its child
        "root000000000001",  # 50ms after slow ends
    ]


def test_critical_path_skips_children_that_end_after_the_cursor_and_recurses(
    store: Store,
) -> None:
    spans = [
        Sp("root000000000001", None, "root", 0, 1000),
        Sp("aaaa000000000002", "root000000000001", "early", 0, 900),  # overlaps late: off
        Sp("bbbb000000000003", "root000000000001", "late", 100, 950),
        Sp("cccc000000000004", "bbbb000000000003", "x", 100, 400),  # ends as y starts: on
        Sp("dddd000000000005", "bbbb000000000003", "y", 400, 940),
        Sp("eeee000000000006", "dddd000000000005", "z", 500, 600),
        Sp("ffff000000000007", "aaaa000000000002", "w", 0, 899),
        Sp("gggg000000000008", "root000000000001", "before", 0, 90),  # ends before late: on
    ]
    assert critical(store, spans) == [
        "dddd000000000005",  # 540ms - z's 100ms
        "cccc000000000004",  # 300ms
        "eeee000000000006",  # 100ms
        "gggg000000000008",  # 90ms
        "root000000000001",  # 1000 - 850 - 90
        "bbbb000000000003",  # 850 - 840
    ]


def test_critical_path_clamps_children_that_outlive_their_parent(store: Store) -> None:
    # "async" is fired by the step and outlives it: up to the step's end it is what the step
    # waits on; "sync" ended before it started. "later" starts after the step ended: off.
    spans = [
        Sp("root000000000001", None, "root", 0, 2000),
        Sp("step000000000002", "root000000000001", "step", 0, 1000),
        Sp("sync000000000003", "step000000000002", "sync", 0, 200),
        Sp("asyn000000000004", "step000000000002", "async", 300, 1800),
        Sp("late000000000005", "step000000000002", "later", 1200, 1300),
        Sp("next000000000006", "root000000000001", "next", 1000, 1900),
    ]
    assert critical(store, spans) == [
        "next000000000006",  # 900ms
        "asyn000000000004",  # 300..1000, clamped to the step's end
        "sync000000000003",  # 200ms
        "root000000000001",  # 100ms, before a tie in tree order
        "step000000000002",  # 100ms
    ]


def test_the_demo_agent_trace_puts_its_long_tool_on_the_critical_path(demo_store: Store) -> None:
    preview = get_trace_preview(demo_store, trace_id="eaa8611afa3053a865b60a2a0fce9401")
    tool = line_of(preview, "cfb7f29441bcfbe1")
    assert " 66%" in tool and tool.startswith("├─*lookup_order TOOL")
    assert preview.critical_path[0] == "cfb7f29441bcfbe1"


def test_ties_on_start_time_render_in_span_id_order_every_time(store: Store) -> None:
    spans = [Sp("root000000000001", None, "root", 0, 100)]
    spans += [Sp(f"tie{c}000000000000", "root000000000001", f"n{c}", 10, 20) for c in "dbca"]
    trace_id = write(store, spans)
    first = get_trace_preview(store, trace_id=trace_id)
    assert [line.split()[0][2:] for line in first.tree[1:]] == ["na", "nb", "nc", "*nd"]
    assert get_trace_preview(store, trace_id=trace_id) == first


def test_a_run_of_similar_tool_calls_collapses_into_one_line(store: Store) -> None:
    spans = [Sp("root000000000001", None, "agent", 0, 10_000, "AGENT")]
    spans.append(Sp("plan000000000002", "root000000000001", "plan", 0, 100, "LLM"))
    for i in range(50):
        failed = i in (7, 21, 40)
        spans.append(
            Sp(f"call{i:012d}", "root000000000001", "fetch_page", 100 + i * 100,
               150 + i * 100, "TOOL", tool="fetch_page", input=f'{{"page": {i}}}',
               error="HTTPError: 503 from the pages API" if failed else None)
        )  # fmt: skip
    spans.append(Sp("answ000000000003", "root000000000001", "answer", 5200, 10_000, "LLM"))
    preview = get_trace_preview(store, trace_id=write(store, spans))

    assert len(preview.tree) == 4
    run = preview.tree[2]
    # Sequential calls are all on the critical path: the run is marked.
    assert run.startswith("├─*50× fetch_page TOOL (3 errors) first call000000000000 ")
    assert "last call000000000049 +100ms total 2.50s avg 50ms" in run
    assert "err:HTTPError: 503 from the pages API" in run
    [entry] = preview.collapsed
    assert (entry.span_id, entry.hidden, entry.errors) == ("call000000000000", 50, 3)
    assert entry.call == (
        "search_spans(name='fetch_page', where=\"trace_id='" + "t" * 32 + "' and "
        "parent_span_id='root000000000001'\")"
    )
    assert entry.call in run
    assert preview.truncated is True
    # Fewer than RUN_MIN similar siblings stay on lines of their own.
    short = [*spans[:2], *spans[2 : 2 + RUN_MIN - 1]]
    other = get_trace_preview(store, trace_id=write(store, short, trace_id="s" * 32))
    assert len(other.tree) == 2 + RUN_MIN - 1 and other.collapsed == []


def test_orphans_are_shown_under_their_missing_parent_and_several_roots_are_fine(
    store: Store,
) -> None:
    spans = [
        Sp("root000000000001", None, "first root", 0, 100),
        Sp("kid0000000000002", "root000000000001", "kid", 10, 20),
        Sp("orph000000000003", "gone000000000000", "orphan a", 30, 60),
        Sp("orph000000000004", "gone000000000000", "orphan b", 40, 200),
        Sp("root000000000005", None, "second root", 50, 150),
    ]
    preview = get_trace_preview(store, trace_id=write(store, spans))
    assert preview.tree[0].startswith("first root CHAIN root000000000001")
    assert preview.tree[1].startswith("└─kid CHAIN kid0000000000002")
    assert preview.tree[2] == "*(missing parent gone000000000000): 2 spans"
    assert preview.tree[3].startswith("├─orphan a CHAIN orph000000000003")
    assert preview.tree[4].startswith("└─*orphan b CHAIN orph000000000004")
    assert preview.tree[5].startswith("second root CHAIN root000000000005")
    assert preview.critical_path == ["orph000000000004"]


def test_a_parent_cycle_still_shows_every_span(store: Store) -> None:
    spans = [
        Sp("root000000000001", None, "root", 0, 100),
        Sp("cyca000000000002", "cycb000000000003", "a", 10, 20),
        Sp("cycb000000000003", "cyca000000000002", "b", 15, 30),
    ]
    preview = get_trace_preview(store, trace_id=write(store, spans))
    assert shown_ids(preview) == {s.span_id for s in spans}
    assert "(parent cycle): 2 spans" in preview.tree


def test_span_id_shows_only_that_subtree(store: Store) -> None:
    trace_id = write(store, SMALL)
    preview = get_trace_preview(store, trace_id=trace_id, span_id="plan000000000002")
    assert preview.span_id == "plan000000000002"
    assert shown_ids(preview) == {"plan000000000002", "llm0000000000003"}
    # Offsets and shares stay relative to the whole trace; the path starts at the span.
    assert preview.tree[0].startswith("*plan CHAIN plan000000000002 +0ms 300ms self 100ms 30%")
    assert preview.critical_path == ["llm0000000000003", "plan000000000002"]


def test_max_depth_collapses_deeper_levels_with_the_call_that_expands_them(store: Store) -> None:
    trace_id = write(store, SMALL)
    preview = get_trace_preview(store, trace_id=trace_id, max_depth=1)
    call = f"get_trace_preview(trace_id='{trace_id}', span_id='plan000000000002')"
    assert preview.tree[2] == f"│ └─… 1 spans → {call}"
    assert [(c.span_id, c.hidden, c.errors, c.call) for c in preview.collapsed] == [
        ("plan000000000002", 1, 0, call)
    ]
    assert preview.truncated is True
    top = get_trace_preview(store, trace_id=trace_id, project="p", max_depth=0)
    assert top.tree[1] == (
        f"└─*… 4 spans (1 error) → get_trace_preview(trace_id='{trace_id}', project='p', "
        "span_id='root000000000001')"
    )


def test_unknown_trace_and_unknown_span_say_what_to_call(store: Store) -> None:
    trace_id = write(store, SMALL)
    with pytest.raises(ToolFailure) as unknown:
        get_trace_preview(store, trace_id="nope")
    assert unknown.value.code == ErrorCode.UNKNOWN_TRACE
    assert "search_traces" in str(unknown.value)
    with pytest.raises(ToolFailure) as elsewhere:
        get_trace_preview(store, trace_id=trace_id, project="other")
    assert elsewhere.value.code == ErrorCode.UNKNOWN_TRACE
    with pytest.raises(ToolFailure) as span:
        get_trace_preview(store, trace_id=trace_id, span_id="missing")
    assert span.value.code == ErrorCode.UNKNOWN_SPAN


# -- size: a 70-span agent trace, a 5,000-span trace, the demo ---------------------------------

WORDS = [
    "order",
    "refund",
    "invoice",
    "shipping",
    "carrier",
    "warehouse",
    "customer",
    "ticket",
    "agent",
    "tool",
    "query",
    "table",
    "vector",
    "retrieve",
    "document",
    "account",
    "schema",
    "response",
    "error",
    "retry",
    "column",
    "filter",
]


def text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def agent_trace(steps: int, tools_per_step: list[int], seed: int = 3) -> list[Sp]:
    """An agent run like benchmarks/ingest.py's: AGENT root; per step a CHAIN holding an LLM
    call, tool calls, a retrieval (CHAIN → RETRIEVER) and a second LLM call; a final LLM."""
    rng = random.Random(seed)
    hex_id = lambda: f"{rng.getrandbits(64):016x}"  # noqa: E731
    root = hex_id()
    system = "You are a support agent. " + text(rng, 80)
    spans = [Sp(root, None, "agent.run", 0, 0, "AGENT", input=text(rng, 50))]
    clock = 1.0
    for step in range(steps):
        chain = hex_id()
        spans.append(Sp(chain, root, "agent.step", clock, 0, input=text(rng, 40)))
        messages = [{"role": "system", "content": system}, {"role": "user", "content": "hi"}]
        for llm_round in range(2):
            ms = rng.randrange(300, 3000)
            spans.append(
                Sp(hex_id(), chain, "ChatOpenAI", clock, clock + ms, "LLM",
                   model=rng.choice(["gpt-4o-2024-08-06", "claude-3-5-sonnet-20241022"]),
                   tokens=rng.randrange(200, 900), input=json.dumps({"messages": messages}),
                   output=text(rng, 40))
            )  # fmt: skip
            clock += ms + 1
            if llm_round == 1:
                break
            for _ in range(tools_per_step[step]):
                ms = rng.randrange(20, 900)
                name = rng.choice(["lookup_order", "search_kb", "issue_refund", "run_sql"])
                failed = rng.random() < 0.1
                spans.append(
                    Sp(hex_id(), chain, name, clock, clock + ms, "TOOL", tool=name,
                       input=json.dumps({"query": text(rng, 12), "limit": 10}),
                       output=None if failed else text(rng, 90),
                       error=f"ToolError: {name} failed: {text(rng, 8)}" if failed else None)
                )  # fmt: skip
                clock += ms + 1
            rag = hex_id()
            spans.append(Sp(rag, chain, "retrieve_context", clock, clock + 44))
            spans.append(
                Sp(hex_id(), rag, "vector_store.search", clock + 2, clock + 42, "RETRIEVER",
                   input=text(rng, 10))
            )  # fmt: skip
            clock += 45
        spans[[s.span_id for s in spans].index(chain)].end_ms = clock + 2
        clock += 3
    spans.append(
        Sp(hex_id(), root, "ChatOpenAI", clock, clock + 2000, "LLM", model="gpt-4o-2024-08-06",
           tokens=700, output=text(rng, 60))
    )  # fmt: skip
    spans[0].end_ms = clock + 2005
    return spans


def test_a_70_span_agent_trace_fits_in_about_6000_characters(store: Store) -> None:
    spans = agent_trace(10, [2, 2, 2, 2, 2, 2, 2, 2, 1, 1])
    assert len(spans) == 70
    preview = get_trace_preview(store, trace_id=write(store, spans))
    assert len(preview.tree) == 70 and preview.collapsed == [] and not preview.truncated
    print(f"70-span agent trace: {size(preview)} characters")
    assert 5_000 <= size(preview) <= 6_500
    # Tools' arguments stay visible: the question "which tools did it call with what".
    tool_lines = [line for line in preview.tree if " TOOL " in line]
    assert len(tool_lines) == 18
    assert all(" in:{query: " in line for line in tool_lines)
    assert all(" err:ToolError: " in line for line in tool_lines if " ERROR " in line)


def big_trace(errors_at: set[int]) -> list[Sp]:
    """5,001 spans: a root over 100 steps; each step has a plan LLM call, a tool call, a
    retrieval CHAIN of 45 alternating embed/search spans (never a run), and an answer."""
    spans = [Sp("root000000000000", None, "agent", 0, 100_000, "AGENT", input="big question")]
    for step in range(100):
        base = step * 1000.0
        sid = f"step{step:012d}"
        spans.append(Sp(sid, "root000000000000", "step", base, base + 990))
        spans.append(Sp(f"plan{step:012d}", sid, "plan", base, base + 100, "LLM", model="m"))
        spans.append(
            Sp(f"tool{step:012d}", sid, f"tool_{step % 3}", base + 100, base + 200, "TOOL",
               input=f'{{"step": {step}}}',
               error="ToolError: boom" if step in errors_at else None)
        )  # fmt: skip
        rag = f"ragc{step:012d}"
        spans.append(Sp(rag, sid, "retrieve", base + 200, base + 900))
        for k in range(45):
            kind, name = ("EMBEDDING", "embed") if k % 2 == 0 else ("RETRIEVER", "search")
            failed = step in errors_at and k == 7
            spans.append(
                Sp(f"r{step:03d}{k:012d}", rag, name, base + 200 + k * 15, base + 214 + k * 15,
                   kind, error="RetrieverError: index offline" if failed else None)
            )  # fmt: skip
        spans.append(Sp(f"answ{step:012d}", sid, "answer", base + 900, base + 990, "LLM"))
    return spans


def expand_all(store: Store, trace_id: str, max_chars: int | None) -> tuple[set[str], int]:
    """Every span shown by the preview and by every expand call it gives, recursively; and the
    number of calls made. Each response is within its budget."""
    limit = max_chars or store.settings.response_chars
    seen: set[str] = set()
    calls, pending = 0, [{"trace_id": trace_id}]
    while pending:
        arguments = pending.pop()
        preview = get_trace_preview(store, **arguments, max_chars=max_chars)
        calls += 1
        assert size(preview) <= limit
        seen |= shown_ids(preview)
        for entry in preview.collapsed:
            match = re.fullmatch(r"get_trace_preview\(trace_id='(\w+)', span_id='(\w+)'\)",
                                 entry.call)  # fmt: skip
            if match:
                pending.append({"trace_id": match[1], "span_id": match[2]})
                continue
            # A folded run names the search_spans call that lists its spans; each is then
            # opened with get_trace_preview, as an agent would. (search_spans is emulated.)
            listed = listing(store, entry.call)
            assert entry.span_id in listed
            pending.extend({"trace_id": trace_id, "span_id": s} for s in listed if s not in seen)
    return seen, calls


def listing(store: Store, call: str) -> list[str]:
    """The span ids a search_spans(name=..., where=...) call given by a run line lists."""
    match = re.fullmatch(r"search_spans\(name='(\w+)', where=\"(.*)\"\)", call)
    assert match, call
    with store.reader() as reader:
        rows = reader.rows(f"SELECT span_id FROM spans WHERE name = ? AND {match[2]}", [match[1]])
    return [row[0] for row in rows]


def test_a_5000_span_trace_stays_in_budget_and_its_expand_calls_show_every_span(
    store: Store,
) -> None:
    spans = big_trace(errors_at={13, 77})
    trace_id = write(store, spans)
    preview = get_trace_preview(store, trace_id=trace_id)
    print(f"5,001-span trace: {size(preview)} characters, {len(preview.tree)} lines")
    assert 15_000 < size(preview) <= 20_000
    assert preview.truncated and preview.collapsed
    # Error spans and the critical path are kept on lines of their own while others fold.
    assert "tool000000000013" in shown_ids(preview) and "tool000000000077" in shown_ids(preview)
    # Every step is sequential, so every span is on the critical path (marked); the list
    # names the 20 that hold it longest: the root (its 100 gaps of 10ms), then the 100ms
    # plan and tool calls, earliest first.
    assert len(preview.critical_path) == 20
    assert preview.critical_path[:3] == ["root000000000000", "plan000000000000", "tool000000000000"]
    assert preview.tree[0].startswith("*agent AGENT root000000000000")
    hidden = sum(entry.hidden for entry in preview.collapsed)
    assert hidden + len(shown_ids(preview)) == len(spans)
    folded = [e for e in preview.collapsed if e.span_id == "ragc000000000013"]
    if folded:
        assert folded[0].errors == 1

    seen, calls = expand_all(store, trace_id, None)
    assert seen == {s.span_id for s in spans}
    print(f"expand calls to see every span (default budget): {calls}")


def test_a_5000_span_trace_fits_a_small_budget_and_each_expansion_fits_too(
    store: Store,
) -> None:
    trace_id = write(store, big_trace(errors_at={5}))
    preview = get_trace_preview(store, trace_id=trace_id, max_chars=4_000)
    print(f"5,001-span trace at max_chars=4000: {size(preview)} characters")
    assert size(preview) <= 4_000
    assert preview.tree and preview.truncated
    # One level of expansion: every expand call answers within the same small budget and shows
    # the span it names.
    for entry in preview.collapsed[:5]:
        match = re.search(r"span_id='(\w+)'", entry.call)
        if match is None:
            continue
        inner = get_trace_preview(store, trace_id=trace_id, span_id=match[1], max_chars=4_000)
        assert size(inner) <= 4_000
        assert inner.tree[0].split()[2] == match[1] or match[1] in inner.tree[0]


def test_every_demo_trace_fits_its_budget_and_shows_its_errors(demo_store: Store) -> None:
    with demo_store.reader() as reader:
        traces = reader.rows("SELECT trace_id, span_count, error_count FROM traces ORDER BY 1")
        big = reader.scalar(
            "SELECT trace_id FROM spans ORDER BY length(input_value) DESC NULLS LAST LIMIT 1"
        )
    assert len(traces) == 90
    largest = 0
    for trace_id, span_count, error_count in traces:
        preview = get_trace_preview(demo_store, trace_id=trace_id)
        largest = max(largest, size(preview))
        assert size(preview) <= 20_000
        assert len(shown_ids(preview)) == span_count  # small traces: nothing hidden
        assert sum(" ERROR " in line for line in preview.tree) == error_count
        assert all(" err:" in line for line in preview.tree if " ERROR " in line)
        small = get_trace_preview(demo_store, trace_id=trace_id, max_chars=1_500)
        assert size(small) <= 1_500
    print(f"largest demo preview: {largest} characters")
    # The trace holding a 400,000-character input previews like any other.
    assert size(get_trace_preview(demo_store, trace_id=big)) < 6_000


def test_a_node_with_thousands_of_distinct_children_is_cut_to_the_budget(store: Store) -> None:
    spans = [Sp("root000000000000", None, "root", 0, 10_000)]
    spans += [
        Sp(f"leaf{i:012d}", "root000000000000", f"step_{i % 2}_{i}", i, i + 1) for i in range(3000)
    ]
    preview = get_trace_preview(store, trace_id=write(store, spans), max_chars=4_000)
    assert size(preview) <= 4_000 and preview.truncated
    assert preview.tree[0].startswith("*root CHAIN root000000000000")
    assert re.fullmatch(r"… \d+ more lines cut to fit max_chars\..*", preview.tree[-1])
