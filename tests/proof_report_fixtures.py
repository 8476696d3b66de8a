"""Comparison objects and waterfalls shaped exactly as PROOF.md's "The comparison object" says,
for the report tests (they do not depend on the compare helper's code)."""

from __future__ import annotations

import copy
from typing import Any

#: Strings an attacker could plant in an app's output: each must show as text in the report.
HOSTILE = [
    "</script><script>window.__pwned = 1</script>",
    '<img src=x onerror="window.__pwned = 2">',
    "<!-- <script>window.__pwned = 3</script>",
    "\u2028\u2029 line separators & 'quotes' \"double\"",
    "</SCRIPT ><svg onload=window.__pwned=4>",
]


def _span(
    span_id: str,
    parent: str | None,
    name: str,
    start: float,
    duration: float,
    kind: str = "CHAIN",
    status: str = "OK",
) -> dict[str, Any]:
    return {
        "span_id": span_id,
        "parent_span_id": parent,
        "name": name,
        "span_kind": kind,
        "status": status,
        "start_ms": start,
        "duration_ms": duration,
    }


def agent_trace(prefix: str, *, fail_tool: bool = False, slow: float = 0.0) -> list[dict[str, Any]]:
    """Four spans: agent → llm, tool (error when ``fail_tool``) → nested retriever."""
    return [
        _span(f"{prefix}-a", None, "agent", 0.0, 400.0 + slow, "AGENT"),
        _span(f"{prefix}-l", f"{prefix}-a", "ChatCompletion", 5.0, 180.0, "LLM"),
        _span(
            f"{prefix}-t",
            f"{prefix}-a",
            "lookup_order",
            190.0,
            150.0 + slow,
            "TOOL",
            "ERROR" if fail_tool else "OK",
        ),
        _span(f"{prefix}-r", f"{prefix}-t", "search_kb", 200.0, 60.0, "RETRIEVER"),
    ]


def _example(
    n: int, change: str, base: float, cand: float, *, base_out: str, cand_out: str
) -> dict[str, Any]:
    return {
        "example_id": f"ex{n:014d}",
        "change": change,
        "evaluators": {
            "correct": {"baseline": base, "candidate": cand, "change": change},
            "helpful": {"baseline": 0.5, "candidate": 0.5, "change": "unchanged"},
        },
        "input_preview": f'{{"question": "order {n} status?"}}',
        "baseline_output": base_out,
        "candidate_output": cand_out,
        "baseline_trace_id": f"tb{n:030d}",
        "candidate_trace_id": f"tc{n:030d}",
        "baseline_run_id": f"exp_base00000001:ex{n:014d}:0",
        "candidate_run_id": f"exp_cand00000001:ex{n:014d}:0",
    }


def comparison() -> dict[str, Any]:
    """A failing comparison: two regressions (the first one's candidate output hostile), three
    improvements, one flaky, four unchanged; regressions first, as compare orders them."""
    examples = [
        _example(1, "regressed", 1.0, 0.0, base_out="shipped", cand_out=HOSTILE[0]),
        _example(2, "regressed", 1.0, 0.0, base_out="shipped", cand_out=HOSTILE[1]),
        _example(3, "improved", 0.0, 1.0, base_out=HOSTILE[2], cand_out="delivered"),
        _example(4, "improved", 0.0, 1.0, base_out="unknown", cand_out="delivered"),
        _example(5, "improved", 0.0, 1.0, base_out="unknown", cand_out=HOSTILE[3]),
        _example(6, "flaky", 1.0, 0.5, base_out="shipped", cand_out="shipped (sometimes)"),
    ]
    examples[1]["candidate_error"] = "timeout: no answer after 30 s"
    examples += [
        _example(n, "unchanged", 1.0, 1.0, base_out="fine", cand_out=HOSTILE[4] if n == 7 else "ok")
        for n in range(7, 11)
    ]
    return {
        "baseline": {
            "id": "exp_base00000001",
            "name": "baseline <b>bold</b>",
            "created_at": "2026-11-30T10:00:00Z",
            "provenance": {"git_commit": "a1b2c3d4e5f6", "git_dirty": False},
        },
        "candidate": {
            "id": "exp_cand00000001",
            "name": "candidate",
            "created_at": "2026-11-30T11:00:00Z",
            "provenance": {"git_commit": "f6e5d4c3b2a1", "git_dirty": True, "diff_hash": "9f9f"},
        },
        "examples_compared": len(examples),
        "evaluators": [
            {
                "name": "correct",
                "kind": "binary",
                "baseline_mean": 0.6,
                "candidate_mean": 0.7,
                "delta": 0.1,
                "ci_low": -0.2,
                "ci_high": 0.4,
                "test": "mcnemar_exact",
                "p_value": 0.62,
                "p_adjusted": 1.0,
                "mde": 0.45,
                "improved": 3,
                "regressed": 2,
                "unchanged": 4,
                "flaky": 1,
                "uncalibrated": False,
            },
            {
                "name": "helpful",
                "kind": "numeric",
                "baseline_mean": 0.5,
                "candidate_mean": 0.5,
                "delta": 0.0,
                "ci_low": None,
                "ci_high": None,
                "test": "bootstrap+sign",
                "p_value": None,
                "p_adjusted": None,
                "mde": None,
                "improved": 0,
                "regressed": 0,
                "unchanged": 10,
                "flaky": 0,
                "uncalibrated": True,
            },
        ],
        "operational": [
            {
                "metric": "latency_p50_ms",
                "baseline": 120.0,
                "candidate": 110.0,
                "delta": -10.0,
                "delta_pct": -8.3,
            },
            {
                "metric": "errors",
                "baseline": 0.0,
                "candidate": 2.0,
                "delta": 2.0,
                "delta_pct": None,
            },
            {
                "metric": "cost_usd",
                "baseline": 0.012,
                "candidate": 0.015,
                "delta": 0.003,
                "delta_pct": 25.0,
            },
        ],
        "examples": examples,
        "notes": ["1 example only in the baseline was left out"],
        "verdict": {
            "status": "fail",
            "gate": "no_regressions,min:correct>=0.9",
            "reasons": ["2 examples regressed on correct", "correct 0.70 < 0.9"],
            "checks": [
                {"rule": "no_regressions", "status": "fail", "detail": "2 regressed"},
                {"rule": "min:correct>=0.9", "status": "fail", "detail": "0.70 < 0.90"},
            ],
        },
    }


def traces(comp: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Waterfalls for every example's two traces: regressions fail their tool in the candidate;
    example 1's candidate has a fifth span whose name is hostile."""
    found: dict[str, list[dict[str, Any]]] = {}
    for ex in comp["examples"]:
        regressed = ex["change"] == "regressed"
        found[ex["baseline_trace_id"]] = agent_trace("b" + ex["example_id"])
        found[ex["candidate_trace_id"]] = agent_trace(
            "c" + ex["example_id"], fail_tool=regressed, slow=100.0 if regressed else 0.0
        )
    first = comp["examples"][0]
    found[first["candidate_trace_id"]].append(
        _span("hostile", "c" + first["example_id"] + "-a", HOSTILE[0], 350.0, 20.0, "TOOL")
    )
    return found


def with_verdict(comp: dict[str, Any], status: str) -> dict[str, Any]:
    out = copy.deepcopy(comp)
    out["verdict"]["status"] = status
    return out
