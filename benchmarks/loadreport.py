"""The tables of ``benchmarks/load.py``: per-tool latencies, and every target with its verdict."""

from __future__ import annotations

from typing import Any

Row = tuple[str, str, str, str, bool | None]  # phase, measure, value, target, ok


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"


def _errors(*summaries: dict[str, Any] | None) -> str:
    merged: dict[str, int] = {}
    for s in summaries:
        for k, v in (s or {}).get("errors", {}).items():
            merged[k] = merged.get(k, 0) + v
    return ", ".join(f"{k} x{v}" for k, v in merged.items()) or "0"


def tool_table(res: dict[str, Any], labels: list[str]) -> list[tuple[str, ...]]:
    idle, ingest = res.get("idle") or {}, res.get("under-ingest") or {}
    rows = [("tool call", "alone p50/p95 ms", f"{res['args']['callers']} callers p50/p95",
             "under ingest p50/p95", "calls", "errors")]  # fmt: skip
    for label in labels:
        cells = [(idle.get(k) or {}).get(label) for k in ("alone", "concurrent")]
        cells.append((ingest.get("queries") or {}).get(label))
        pair = [f"{_ms(c and c['p50_ms'])} / {_ms(c and c['p95_ms'])}" for c in cells]
        calls = sum((c or {}).get("calls", 0) for c in cells)
        rows.append((label, *pair, str(calls), _errors(*cells)))
    return rows


def targets(res: dict[str, Any], args: Any, labels: list[str]) -> list[Row]:
    rows: list[Row] = []
    limit = args.rss_limit_mb

    def add(phase: str, measure: str, value: Any, target: str = "", ok: bool | None = None) -> None:
        text = (
            f"{value:,.1f}"
            if isinstance(value, float)
            else f"{value:,}"
            if isinstance(value, int) and not isinstance(value, bool)
            else str(value)
        )
        rows.append((phase, measure, text, target, ok))

    def total_errors(summary: dict[str, Any]) -> int:
        return sum(v["error_count"] for v in summary.values())

    def no_p95(summary: dict[str, Any]) -> list[str]:
        return [k for k in labels if (summary.get(k) or {}).get("p95_ms") is None]

    s = res["store"]
    add("store", "spans built", s["spans"], f">= {args.spans:,}", s["spans"] >= args.spans)
    add("store", "avg span bytes (protobuf)", s["avg_span_bytes"], "~3,000")
    add("store", "file MB", s["file_mb"])
    for phase, body in res.items():
        if isinstance(body, dict) and "failed" in body:
            add(phase, "phase ran", body["failed"], "no exception", False)
    if (idle := res.get("idle")) and "failed" not in idle:
        for key in ("alone", "concurrent"):
            add("idle", f"query errors ({key})", total_errors(idle[key]), "0",
                total_errors(idle[key]) == 0)  # fmt: skip
        missing = no_p95(idle["concurrent"])
        add("idle", "tools without p95", ", ".join(missing) or "none", "none", not missing)
        add("idle", "server RSS peak MB", idle["rss_peak_mb"], f"< {limit:,}",
            idle["rss_peak_mb"] < limit)  # fmt: skip
    if (ui := res.get("under-ingest")) and "failed" not in ui:
        o = ui["otlp"]
        add("under-ingest", "ingest spans/s", o["spans_per_s"])
        add("under-ingest", "OTLP p95 ms", o["p95_ms"] or 0.0)
        add("under-ingest", "OTLP 503/429 resent", sum(o["retries"].values()))
        add("under-ingest", "OTLP errors", o["error_count"], "0", o["error_count"] == 0)
        q = total_errors(ui["queries"])
        add("under-ingest", "query errors", q, "0", q == 0)
        missing = no_p95(ui["queries"])
        add("under-ingest", "tools without p95", ", ".join(missing) or "none", "none", not missing)
        add("under-ingest", "server RSS peak MB", ui["rss_peak_mb"], f"< {limit:,}",
            ui["rss_peak_mb"] < limit)  # fmt: skip
    if (ov := res.get("overload")) and "failed" not in ov:
        o, n503 = ov["otlp"], ov["otlp"]["retries"].get("503", 0)
        add("overload", f"503 answers ({ov['body_mb']:.0f} MB bodies)", n503, "> 0", n503 > 0)
        add("overload", "503 without Retry-After", o["retry_after_missing"], "0",
            o["retry_after_missing"] == 0)  # fmt: skip
        add("overload", "OTLP p95 ms (200 answers)", o["p95_ms"] or 0.0)
        add("overload", "other OTLP errors", o["error_count"], "0", o["error_count"] == 0)
        add("overload", "light call errors", total_errors(ov["light"]), "0",
            total_errors(ov["light"]) == 0)  # fmt: skip
        add("overload", "server RSS peak MB", ov["rss_peak_mb"], f"< {limit:,}",
            ov["rss_peak_mb"] < limit)  # fmt: skip
        add("overload", f"RSS MB {args.settle_seconds:.0f} s after", ov["rss_after_settle_mb"])
        rec = ov["recovery_seconds"]
        add("overload", "recovered in s", "never" if rec is None else round(rec, 1),
            f"< {args.recovery_timeout:.0f}", rec is not None)  # fmt: skip
    if (qs := res.get("query-storm")) and "failed" not in qs:
        o, base = qs["otlp"], (res.get("under-ingest") or {}).get("otlp", {}).get("spans_per_s")
        floor = 0.25 * base if base else 1.0
        add("query-storm", "ingest spans/s", o["spans_per_s"], f">= {floor:,.0f}",
            o["spans_per_s"] >= floor)  # fmt: skip
        add("query-storm", "OTLP p95 ms", o["p95_ms"] or 0.0)
        add("query-storm", "OTLP errors", o["error_count"], "0", o["error_count"] == 0)
        add("query-storm", "light/healthz errors", total_errors(qs["light"]), "0",
            total_errors(qs["light"]) == 0)  # fmt: skip
        light_p95 = max((v["p95_ms"] or 0.0) for v in qs["light"].values()) if qs["light"] else 0.0
        add("query-storm", "light/healthz worst p95 ms", light_p95)
        heavy = qs["heavy"]
        done = sum(v["ok"] for v in heavy.values())
        refused = sum(sum(v["accepted_refusals"].values()) for v in heavy.values())
        add("query-storm", "heavy calls: results / busy+timeout", f"{done} / {refused}")
        add("query-storm", "heavy call errors (5xx other)", total_errors(heavy), "0",
            total_errors(heavy) == 0)  # fmt: skip
    if (k9 := res.get("kill9-ingest")) and "failed" not in k9:
        add("kill9-ingest", "acked spans before kill", k9["acked_spans_before_kill"], "> 0",
            k9["acked_spans_before_kill"] > 0)  # fmt: skip
        add("kill9-ingest", "restart s (WAL replay)", k9["restart_seconds"])
        add("kill9-ingest", "answers after restart", k9["reopened"], "True", k9["reopened"])
    if (fc := res.get("final_check")) and "failed" not in fc:
        add("final", "store opens after stop", fc["opened"], "True", fc["opened"])
        if fc["opened"]:
            for phase, p in fc.get("lost_by_phase", {}).items():
                add("final", f"lost acked spans ({phase}, of {p['acked_spans']:,})",
                    p["lost_spans"], "0", p["lost_spans"] == 0)  # fmt: skip
            add("final", "trace_index inconsistencies", fc["inconsistencies"], "0",
                fc["inconsistencies"] == 0)  # fmt: skip
    if (ki := res.get("kill9-import")) and "failed" not in ki:
        add("kill9-import", "killed mid-import (s, store MB)",
            f"{ki['killed_at']['seconds']:.1f} s, {ki['killed_at']['store_mb']:.0f} MB",
            "not finished", not ki["finished_before_kill"])  # fmt: skip
        add("kill9-import", "spans committed before kill", ki["committed_before_rerun"])
        add("kill9-import", "rerun exit status", ki["rerun"]["exit"], "0", ki["rerun"]["exit"] == 0)
        c = ki["check"]
        add("kill9-import", "spans after rerun", c.get("spans", "-"),
            f"== {ki['spans_in_file']:,}", c.get("spans") == ki["spans_in_file"])  # fmt: skip
        add("kill9-import", "duplicates", c.get("duplicates", "-"), "0", c.get("duplicates") == 0)
        add("kill9-import", "trace_index inconsistencies", c.get("inconsistencies", "-"), "0",
            c.get("inconsistencies") == 0)  # fmt: skip
    logs = res.get("server_log", {})
    add(
        "server log",
        "Out of Memory / FATAL lines",
        f"{logs.get('Out of Memory', 0)} / {logs.get('FATAL', 0)}",
    )
    return rows


def print_rows(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    for k, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))
