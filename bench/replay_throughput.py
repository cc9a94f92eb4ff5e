"""Replay throughput, CSV -> broker, and the replay's peak memory as the file grows.

Generates synthetic OpenCDP files (cached under data/bench/), starts a private
native broker on a free port, and replays each file with the real CLI in a child
process, so its peak RSS is the replay's alone. Records the medians in
bench/results/replay_throughput.json and prints a Markdown table.

    .venv/bin/python -m bench.replay_throughput            # 1M, 5M and 10M rows, 3 runs each
    .venv/bin/python -m bench.replay_throughput --sizes 1000000 --runs 1
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.machine import machine
from feature_store.settings import PROJECT_ROOT, Settings
from producer.synth import SynthConfig, write_synthetic_csv
from services.stack import native
from tests.services import native_settings

log = logging.getLogger("bench.replay")
RESULTS = PROJECT_ROOT / "bench" / "results" / "replay_throughput.json"
CLICKREC = Path(sys.executable).parent / "clickrec"
#: Users per day to get about this many rows per day from the generator's defaults.
ROWS_PER_USER_DAY = 3.42


def synthetic_file(rows: int, cache: Path) -> Path:
    """A synthetic file of at least `rows` rows over 7 days (generated once, then cached)."""
    users = int(rows / (7 * ROWS_PER_USER_DAY)) + 1
    path = cache / f"synth-{users}u-7d.csv"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        write_synthetic_csv(path, SynthConfig(users=users, days=7, seed=7))
    return path


def replay_once(settings: Settings, path: Path, limit: int, topic: str) -> dict:
    """Run `clickrec replay` in a child process; its summary line and peak RSS."""
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "CLICKS_TOPIC": topic,
        "DLQ_TOPIC": topic + ".dlq",
        "TOPIC_PARTITIONS": "3",
    }
    # A wrapper process whose only child is the replay, so ru_maxrss is the replay's own peak
    # (the broker this script started is a child of ours and must not count).
    wrapper = (
        "import resource, subprocess, sys; code = subprocess.run(sys.argv[1:]).returncode; "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)"
    )
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", wrapper, str(CLICKREC), "replay", str(path), "--limit", str(limit), "--no-progress"],
        env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    wall = time.perf_counter() - started
    peak_kib = int(out.stderr.strip().splitlines()[-1])
    published = int(re.search(r"^published\s+([\d,]+)", out.stdout, re.M).group(1).replace(",", ""))
    seconds = float(re.search(r"^time\s+([\d.]+) s", out.stdout, re.M).group(1))
    return {"published": published, "replay_s": seconds, "wall_s": wall, "rate": published / seconds, "peak_rss_mb": peak_kib / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 5_000_000, 10_000_000], help="rows per run")
    parser.add_argument("--runs", type=int, default=3, help="runs per size (the median is recorded)")
    parser.add_argument("--no-record", action="store_true", help="print only; do not update the results file")
    args = parser.parse_args()
    # A SIGTERM (timeout, kill) still runs the `finally` blocks that stop the private stack.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    source = synthetic_file(max(args.sizes), PROJECT_ROOT / "data" / "bench")
    rows = []
    with tempfile.TemporaryDirectory(prefix="clickrec-bench-") as tmp:
        for size in args.sizes:
            runs = []
            for run in range(args.runs):
                # A fresh broker per run: the native broker keeps every message in memory.
                settings = native_settings(Path(tmp) / f"{size}-{run}")
                native.up(settings)
                try:
                    runs.append(replay_once(settings, source, size, f"bench-{size}-{run}"))
                finally:
                    native.down(settings)
                log.info("%s rows, run %d: %.0f events/s, peak RSS %.0f MB", f"{size:,}", run + 1, runs[-1]["rate"], runs[-1]["peak_rss_mb"])
            rows.append(
                {
                    "rows": size,
                    "published": runs[0]["published"],
                    "runs": len(runs),
                    "median_events_per_s": statistics.median(r["rate"] for r in runs),
                    "median_replay_s": statistics.median(r["replay_s"] for r in runs),
                    "max_peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
                }
            )
    result = {
        "benchmark": "replay CSV -> broker (clickrec replay, acks=all, 3 partitions, native tansu broker)",
        "command": "make bench  (or: .venv/bin/python -m bench.replay_throughput)",
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "source_file": source.name,
        "results": rows,
    }
    print("| rows | median events/s | median time | peak RSS of the replay |")
    print("| ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['rows']:,} | {r['median_events_per_s']:,.0f} | {r['median_replay_s']:.1f} s | {r['max_peak_rss_mb']:.0f} MB |")
    if not args.no_record:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(result, indent=2) + "\n")
        print(f"recorded in {RESULTS.relative_to(PROJECT_ROOT)}")


if __name__ == "__main__":
    main()
