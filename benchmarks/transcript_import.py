"""Transcript import benchmark: ``traceproof ingest`` of a Claude Code history, MB/s and peak RSS.

The history is made from the real Claude Code transcripts in
``../shared/data/claude-code/spotter`` (sessions with their subagent and compaction transcripts,
an orphaned subagent, small files; the ``edge-cases`` files are left out: made-up ids such as
``msg_001``, and one is malformed on purpose). Each replica re-ids every identifier
consistently (session ids, uuids and parentUuids, ``msg_``/``req_``/``toolu_`` ids, agent ids
and so the subagent file names), keeping structure, subagents and big tool outputs: each
replica is new spans to the store. Replicas go into a ``projects/<project>/`` tree as Claude
Code writes ``~/.claude/projects``, plus one very large single session (``--big-mb``, default
200 MB: replicas of the main sessions concatenated under one session id, their subagents beside
it), the memory worst case of a reader that rebuilds a file's parentUuid tree.

Phases:

- ``baseline``: ``traceproof ingest`` of the first 3 lines of a transcript: the process's fixed
  cost (startup wall time, peak RSS of the interpreter, DuckDB, pyarrow and the CLI's imports).
- ``history``: ``traceproof ingest`` of the whole tree into a fresh store, pinned to one core
  (``taskset -c 0`` when present). MB/s = bytes of JSONL / wall time of the process; peak RSS from
  ``getrusage(RUSAGE_CHILDREN)`` (exact) and psutil sampling every 50 ms. The import summary must
  reject nothing, and the store must hold every span it added.

Run from the repository root:

    .venv/bin/python benchmarks/transcript_import.py                 # 1 GB history, 200 MB session
    .venv/bin/python benchmarks/transcript_import.py --quick         # 100 MB, 25 MB session
    .venv/bin/python benchmarks/transcript_import.py --size-mb 300 --big-mb 100 --profile

``--profile`` runs the history import under cProfile once more and prints where the time goes.
Prints a table (measure, value, target, ok?) and writes every figure, the machine and the command
line to ``--out`` (default benchmarks/results/transcript_import.json). Exit status 1 if a target
or a check is missed. Targets: ≥ 20 MB/s on one core, peak RSS ≤ 300 MB.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import hashlib
import io
import json
import os
import platform
import pstats
import re
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import psutil
from ingest import PeakRSS  # the same sampler as benchmarks/ingest.py

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data" / "claude-code" / "spotter"
MB = 1_000_000
MBS_TARGET, RSS_TARGET_MB = 20.0, 300.0

_UUID = rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_PREFIXED = rb"(?:srvtoolu|toolu|msg|req)_[A-Za-z0-9]{8,}"
_SESSION = re.compile(rb'"sessionId":"(' + _UUID + rb')"')
_AGENT = re.compile(rb'"agentId":"([A-Za-z0-9_-]+)"')
_ALNUM = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


class Template:
    """One source file split at its identifiers: literal, id, literal, id, ..., literal."""

    def __init__(self, data: bytes, ids: re.Pattern[bytes]) -> None:
        self.parts = ids.split(data)
        self.size = len(data)

    def render(self, new_id: Callable[[bytes], bytes]) -> bytes:
        parts = self.parts
        out = list(parts)
        for i in range(1, len(parts), 2):
            out[i] = new_id(parts[i])
        return b"".join(out)


class Source:
    """The shared transcripts, split once; :meth:`renamer` makes one replica's id mapping."""

    def __init__(self, root: Path) -> None:
        files = sorted(root.rglob("*.jsonl"))
        blobs = {p: p.read_bytes() for p in files}
        agents = {m for data in blobs.values() for m in _AGENT.findall(data)}
        agents |= {
            p.stem.removeprefix("agent-").encode() for p in files if p.parent.name == "subagents"
        }
        self.sessions = {m for data in blobs.values() for m in _SESSION.findall(data)}
        alternatives = b"|".join(re.escape(a) for a in sorted(agents, key=len, reverse=True))
        ids = re.compile(
            b"(" + _UUID + b"|" + _PREFIXED + rb"|(?<![A-Za-z0-9])(?:" + alternatives + rb")"
            rb"(?![A-Za-z0-9]))"
        )
        self.ids = ids
        self.root = root
        #: Main session files (a uuid name) with their subagent files.
        self.mains: list[tuple[Path, list[Path]]] = []
        #: Subagent folders without their main file, and the other small transcripts.
        self.others: list[Path] = []
        for path in files:
            if path.parent.name == "subagents":
                main = path.parent.parent.with_suffix(".jsonl")
                if main.is_file():
                    continue
                self.others.append(path)
            elif re.fullmatch(_UUID.decode(), path.stem):
                subs = sorted((path.parent / path.stem / "subagents").glob("agent-*.jsonl"))
                self.mains.append((path, subs))
            else:
                self.others.append(path)
        self.templates = {p: Template(blobs[p], ids) for p in files}

    def renamer(self, salt: str, session: bytes | None = None) -> Callable[[bytes], bytes]:
        """A replica's mapping, the same for every occurrence of an id; ``session``: every
        session id becomes this one (the big single session)."""
        memo: dict[bytes, bytes] = {}

        def new_id(old: bytes) -> bytes:
            found = memo.get(old)
            if found is not None:
                return found
            if session is not None and old in self.sessions:
                memo[old] = session
                return session
            digest = hashlib.blake2b(salt.encode() + b":" + old, digest_size=32).digest()
            if old[8:9] == b"-" and len(old) == 36:
                h = digest.hex().encode()
                found = b"-".join((h[:8], h[8:12], h[12:16], h[16:20], h[20:32]))
            elif b"_" in old[:9] and not old.startswith(b"a"):
                prefix, _, tail = old.partition(b"_")
                chars = bytes(_ALNUM[b % len(_ALNUM)] for b in (digest * 4)[: len(tail)])
                found = prefix + b"_" + chars
            else:  # an agent id: a7be2f0, acompact-946d2b
                head, _, tail = old.rpartition(b"-")
                keep = tail[:1] if not head else b""
                hexed = digest.hex().encode()[: len(tail) - len(keep)]
                found = (head + b"-" if head else b"") + keep + hexed
            memo[old] = found
            return found

        return new_id

    def rename_path(self, path: Path, new_id: Callable[[bytes], bytes]) -> Path:
        """``path`` relative to the source, its ids renamed as in its content."""
        relative = path.relative_to(self.root).parts
        parts = [self.ids.sub(lambda m: new_id(m.group(0)), p.encode()).decode() for p in relative]
        return Path(*parts)


def generate(out: Path, size_mb: float, big_mb: float, projects: int = 8) -> dict[str, Any]:
    """Write the history under ``out/projects``; answers what was written."""
    t0 = time.perf_counter()
    src = Source(DATA)
    root = out / "projects"
    written = files = replicas = 0
    big_written = 0
    # The big single session: main sessions (with subagents) under one session id.
    if big_mb > 0:
        session = hashlib.blake2b(b"big-session", digest_size=16).hexdigest()
        big_id = "-".join(
            (session[:8], session[8:12], session[12:16], session[16:20], session[20:])
        )
        folder = root / "-home-USER-projects-big"
        main = folder / f"{big_id}.jsonl"
        (folder / big_id / "subagents").mkdir(parents=True, exist_ok=True)
        with main.open("wb") as sink:
            k = 0
            while big_written < big_mb * MB:
                new_id = src.renamer(f"big:{k}", session=big_id.encode())
                for path, subs in src.mains:
                    data = src.templates[path].render(new_id)
                    sink.write(data if data.endswith(b"\n") else data + b"\n")
                    big_written += len(data)
                    for sub in subs:
                        data = src.templates[sub].render(new_id)
                        name = src.rename_path(sub, new_id).name
                        (folder / big_id / "subagents" / name).write_bytes(data)
                        big_written += len(data)
                        files += 1
                k += 1
        files += 1
        written += big_written
    while written < size_mb * MB:
        new_id = src.renamer(f"replica:{replicas}")
        folder = root / f"-home-USER-projects-bench-{replicas % projects}"
        for path, subs in src.mains:
            for one in [path, *subs]:
                target = folder / src.rename_path(one, new_id)
                target.parent.mkdir(parents=True, exist_ok=True)
                data = src.templates[one].render(new_id)
                target.write_bytes(data)
                written += len(data)
                files += 1
        for one in src.others:
            target = folder / src.rename_path(one, new_id)
            if target.parent == folder:  # name the small files apart per replica
                target = target.with_name(f"{target.stem}-{replicas}.jsonl")
            target.parent.mkdir(parents=True, exist_ok=True)
            data = src.templates[one].render(new_id)
            target.write_bytes(data)
            written += len(data)
            files += 1
        replicas += 1
    return {"bytes": written, "mb": written / MB, "files": files, "replicas": replicas,
            "big_session_mb": big_written / MB, "projects": projects,
            "generate_seconds": time.perf_counter() - t0}  # fmt: skip


def _pin() -> list[str]:
    return ["taskset", "-c", "0"] if shutil.which("taskset") else []


def run_ingest(target: Path, db: Path, timeout: float, env: dict[str, str]) -> dict[str, Any]:
    """``traceproof ingest TARGET --json`` as a child process; wall time, peak RSS, summary."""
    cmd = [*_pin(), sys.executable, "-m", "traceproof", "ingest", str(target), "--db", str(db),
           "--json"]  # fmt: skip
    log = db.with_suffix(".log")
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    with log.open("wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=err, env=os.environ | env
        )
        with PeakRSS(proc.pid) as rss:
            try:
                out, _ = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
        elapsed = time.perf_counter() - t0
    maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if proc.returncode not in (0, 2):
        raise RuntimeError(f"traceproof ingest exited {proc.returncode}: {log.read_text()[-3000:]}")
    summary = json.loads(out)
    with duckdb.connect(str(db), read_only=True) as con:
        stored = (con.execute("SELECT count(*) FROM spans").fetchone() or (0,))[0]
    return {"command": shlex.join(cmd), "seconds": elapsed, "exit": proc.returncode,
            # ru_maxrss is KiB on Linux; it is the largest child so far (the ingest when larger)
            "peak_rss_mb": max(maxrss, before) * 1024 / MB if maxrss > before else rss.peak / MB,
            "peak_rss_sampled_mb": rss.peak / MB, "stored": stored,
            "summary": {k: v for k, v in summary.items() if k != "rejections"},
            "rejections": summary.get("rejections", [])[:20]}  # fmt: skip


def store_digest(db: Path) -> str:
    """A hash over every stored span, all columns, in (trace_id, span_id) order: two stores of
    the same input hold the same spans exactly when their digests match."""
    sql = (
        "SELECT md5(string_agg(md5(CAST(s AS VARCHAR)), '' ORDER BY s.trace_id, s.span_id)) "
        "FROM spans s"
    )
    with duckdb.connect(str(db), read_only=True) as con:
        return str((con.execute(sql).fetchone() or ("",))[0])


def profile(target: Path, db: Path, top: int) -> str:
    """The history import in this process under cProfile: the top functions by own time and
    by cumulative time."""
    from traceproof.cli import cli

    prof = cProfile.Profile()
    prof.enable()
    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):
        cli(["ingest", str(target), "--db", str(db), "--json"], standalone_mode=False)
    prof.disable()
    text = io.StringIO()
    stats = pstats.Stats(prof, stream=text)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return text.getvalue()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="traceproof transcript import benchmark (see docstring)"
    )
    p.add_argument("--size-mb", type=float, default=1000, help="history size, MB of JSONL")
    p.add_argument("--big-mb", type=float, default=200, help="the one very large session, MB")
    p.add_argument(
        "--digest",
        type=Path,
        nargs=2,
        metavar=("PATH", "DB"),
        help="only import PATH into a fresh DB and print the stores' span digest",
    )
    p.add_argument("--quick", action="store_true", help="--size-mb 100 --big-mb 25")
    p.add_argument("--profile", action="store_true", help="also profile the import (cProfile)")
    p.add_argument("--top", type=int, default=30, help="functions listed by --profile")
    p.add_argument("--timeout", type=float, default=3600, help="deadline per import, seconds")
    p.add_argument("--env", action="append", default=[], help="KEY=VALUE for the ingest process")
    p.add_argument("--workdir", type=Path, help="parent of the temp dir for data and stores")
    p.add_argument("--keep", action="store_true", help="keep the temp dir")
    p.add_argument(
        "--out", type=Path, default=REPO / "benchmarks" / "results" / "transcript_import.json"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.size_mb, args.big_mb = 100.0, 25.0
    return args


Row = tuple[str, str, str, bool | None]


def table(res: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []

    def add(measure: str, v: float, target: str = "", ok: bool | None = None) -> None:
        text = f"{v:,.2f}" if v < 10 else f"{v:,.1f}" if v < 1000 else f"{v:,.0f}"
        rows.append((measure, f"{v:,}" if isinstance(v, int) else text, target, ok))

    d, b, h = res["data"], res.get("baseline"), res.get("history")
    add("history MB of JSONL", d["mb"])
    add("files (subagents included)", d["files"])
    add("largest session MB", d["big_session_mb"])
    if b:
        add("baseline: wall s (3-line file)", b["seconds"])
        add("baseline: peak RSS MB", b["peak_rss_mb"])
    if h:
        s = h["summary"]
        add("history: wall s", h["seconds"])
        add(
            "history: MB/s (one core)",
            h["mb_per_s"],
            f">= {MBS_TARGET:.0f}",
            h["mb_per_s"] >= MBS_TARGET,
        )
        add(
            "history: peak RSS MB",
            h["peak_rss_mb"],
            f"<= {RSS_TARGET_MB:.0f}",
            h["peak_rss_mb"] <= RSS_TARGET_MB,
        )
        add("history: peak RSS MB (sampled)", h["peak_rss_sampled_mb"])
        add(
            "history: spans written", s["spans_added"], "== stored", s["spans_added"] == h["stored"]
        )
        add("history: spans/s", s["spans_added"] / h["seconds"])
        add("history: records skipped", s.get("records_skipped", 0))
        add("history: redactions", s.get("redactions", 0))
        add("history: rejected", s["rejected"], "== 0", s["rejected"] == 0)
    return rows


def print_table(rows: list[Row]) -> None:
    cells = [("measure", "value", "target", "ok?")]
    cells += [(m, v, t, "" if ok is None else ("yes" if ok else "NO")) for m, v, t, ok in rows]
    widths = [max(len(row[c]) for row in cells) for c in range(4)]
    for k, row in enumerate(cells):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if k == 0:
            print("  ".join("-" * w for w in widths))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not DATA.is_dir():
        print(f"{DATA} is missing: the benchmark replicates the shared Claude Code transcripts.")
        return 1
    env = dict(item.split("=", 1) for item in args.env)
    if args.digest:
        path, db = args.digest
        db.unlink(missing_ok=True)
        found = run_ingest(path, db, args.timeout, env)
        print(json.dumps({"spans": found["stored"], "summary": found["summary"],
                          "digest": store_digest(db)}))  # fmt: skip
        return 0
    work = Path(tempfile.mkdtemp(prefix="traceproof-transcripts-", dir=args.workdir))
    res: dict[str, Any] = {"command": shlex.join([sys.executable, *sys.argv]), "env": env}
    res["machine"] = {
        "logical_cpus": os.cpu_count(), "ram_gb": round(psutil.virtual_memory().total / 1e9, 1),
        "platform": platform.platform(), "python": platform.python_version(),
        "duckdb": duckdb.__version__, "pinned": " ".join(_pin()) or "no (taskset missing)",
        "load_average": os.getloadavg(),
    }  # fmt: skip
    try:
        res["data"] = generate(work / "history", args.size_mb, args.big_mb)
        print(f"generated {res['data']['mb']:,.0f} MB in {res['data']['files']:,} files "
              f"({res['data']['generate_seconds']:.0f} s)", flush=True)  # fmt: skip
        tiny = work / "tiny.jsonl"
        tiny.write_bytes(b"".join((DATA / "short.jsonl").read_bytes().splitlines(True)[:3]))
        res["baseline"] = run_ingest(tiny, work / "baseline.duckdb", args.timeout, env)
        print(f"baseline: {res['baseline']['peak_rss_mb']:,.0f} MB", flush=True)
        h = run_ingest(work / "history" / "projects", work / "history.duckdb", args.timeout, env)
        h["mb_per_s"] = res["data"]["mb"] / h["seconds"]
        h["digest"] = store_digest(work / "history.duckdb")
        res["history"] = h
        print(f"history: {h['mb_per_s']:,.1f} MB/s, {h['peak_rss_mb']:,.0f} MB", flush=True)
        if args.profile:
            db = work / "profile.duckdb"
            text = profile(work / "history" / "projects", db, args.top)
            res["profile"] = text
            print(text)
        rows = table(res)
        res["load_average_after"] = os.getloadavg()
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")
    print_table(rows)
    res["table"] = [dict(zip(("measure", "value", "target", "ok"), r, strict=True)) for r in rows]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2, default=str) + "\n")
    return 0 if all(ok is not False for *_, ok in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
