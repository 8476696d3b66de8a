"""Inspect AI eval log import: speed and peak memory of `traceproof ingest` on a large log.

It writes one real log with ``inspect_ai`` and ``mockllm/model`` (the tests' scripted task,
tests/trajectories/inspect_logs.py), then a large ``.eval`` (zstd members, as Inspect writes
them) and a large ``.json`` with ``--samples`` samples copied from it (new ids, so every copy is
its own trace), and times ``traceproof ingest`` of each into a fresh store in a child process,
sampling its peak RSS every 50 ms with psutil.

    .venv/bin/python benchmarks/inspect_import.py                   # 20,000 samples
    .venv/bin/python benchmarks/inspect_import.py --samples 2000

Needs the test extra (inspect_ai, psutil). Prints a table and writes every figure, the machine
and the command line to ``--out`` (default benchmarks/results/inspect_import.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
MB = 1024 * 1024


class PeakRSS:
    def __init__(self, pid: int) -> None:
        self.proc, self.peak, self.done = psutil.Process(pid), 0, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.done.is_set():
            try:
                total = self.proc.memory_info().rss
                for child in self.proc.children(recursive=True):
                    total += child.memory_info().rss
            except psutil.Error:
                return
            self.peak = max(self.peak, total)
            time.sleep(0.05)


def samples_of(base: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    import inspect_ai._util.zipfile  # noqa: F401  (zstd members for zipfile)

    with zipfile.ZipFile(base) as archive:
        header = json.loads(archive.read("header.json"))
        names = [n for n in archive.namelist() if n.startswith("samples/")]
        return header, [json.loads(archive.read(n)) for n in names]


def write_logs(base: Path, count: int, folder: Path) -> dict[str, Path]:
    from inspect_ai._util.zipfile import zipfile_compress_kwargs

    header, samples = samples_of(base)
    copies = []
    for i in range(count):
        sample = dict(samples[i % len(samples)])
        sample["id"] = f"{sample['id']}-{i}"
        copies.append(sample)
    eval_path = folder / "big.eval"
    with zipfile.ZipFile(eval_path, "w", **zipfile_compress_kwargs) as archive:
        archive.writestr("_journal/start.json", json.dumps({"version": 2, "eval": header["eval"]}))
        for sample in copies:
            name = f"samples/{sample['id']}_epoch_{sample['epoch']}.json"
            archive.writestr(name, json.dumps(sample))
        archive.writestr("header.json", json.dumps(header))
    json_path = folder / "big.json"
    with json_path.open("w") as out:
        head = {k: header[k] for k in ("version", "status", "eval") if k in header}
        out.write(json.dumps(head, indent=2)[:-2] + ',\n  "samples": [\n')
        for index, sample in enumerate(copies):
            out.write(("," if index else "") + json.dumps(sample, indent=2) + "\n")
        out.write("  ]\n}\n")
    return {"eval": eval_path, "json": json_path}


def ingest(path: Path, db: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "traceproof", "ingest", str(path), "--db", str(db), "--json"]
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    rss = PeakRSS(proc.pid)
    rss.thread.start()
    out, err = proc.communicate()
    elapsed = time.perf_counter() - start
    rss.done.set()
    if proc.returncode not in (0, 2):
        raise SystemExit(f"ingest failed ({proc.returncode}): {err.decode()[-2000:]}")
    summary = json.loads(out)
    size = path.stat().st_size / MB
    return {
        "file_mb": round(size, 1),
        "seconds": round(elapsed, 2),
        "mb_per_s": round(size / elapsed, 1),
        "peak_rss_mb": round(rss.peak / MB, 1),
        "traces": summary["traces"],
        "spans_added": summary["spans_added"],
        "annotations_created": summary.get("annotations_created", 0),
        "rejected": summary["rejected"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/inspect_import.json")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from tests.trajectories.inspect_logs import write_log

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        base = write_log(folder / "base", "eval")
        paths = write_logs(base, args.samples, folder)
        results = {fmt: ingest(path, folder / f"{fmt}.duckdb") for fmt, path in paths.items()}
    print(f"{'format':<8}{'MB':>8}{'s':>8}{'MB/s':>8}{'samples/s':>11}{'RSS MB':>9}{'traces':>8}")
    for fmt, r in results.items():
        rate = args.samples / r["seconds"]
        print(
            f"{fmt:<8}{r['file_mb']:>8}{r['seconds']:>8}{r['mb_per_s']:>8}{rate:>11.0f}"
            f"{r['peak_rss_mb']:>9}{r['traces']:>8}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "command": " ".join(sys.argv),
                "samples": args.samples,
                "results": results,
                "machine": {
                    "cpus": os.cpu_count(),
                    "platform": platform.platform(),
                    "python": platform.python_version(),
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
