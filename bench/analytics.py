"""Analytics job time on a 10M-row synthetic file, and purchase-model scoring latency per request.

1. `clickrec analytics` in-process on a synthetic OpenCDP file of about 10M rows
   (generated once by producer.synth, cached under data/bench/, the same file as
   the replay benchmark's), timed by phase: CSV decode, dedup, each KPI, total.
   Artifacts go to a temporary directory.
2. The purchase model's request path on realistic sessions: a model trained on
   a small synthetic file, then for many random (session, prefix) pairs of that
   file, the time of `session_features(events, history)` (the API builds the
   event list from Redis) and of `score_session(features, model)`; median and
   p99 in microseconds.

Results go to bench/results/analytics.json; a Markdown summary is printed.

    .venv/bin/python -m bench.analytics                    # both parts
    .venv/bin/python -m bench.analytics --skip-analytics   # scoring only (fast)
    .venv/bin/python -m bench.analytics --rows 1000000     # a smaller analytics run
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

from bench.machine import machine
from feature_store.lake import load_events
from feature_store.settings import PROJECT_ROOT, Settings
from producer.synth import SynthConfig, write_synthetic_csv

log = logging.getLogger("bench.analytics")
RESULTS = PROJECT_ROOT / "bench" / "results" / "analytics.json"
CACHE = PROJECT_ROOT / "data" / "bench"
#: Users per day to get about this many rows per day from the generator's defaults (as bench/replay_throughput.py).
ROWS_PER_USER_DAY = 3.42


def synthetic_file(rows: int, cache: Path = CACHE, seed: int = 7) -> Path:
    """A synthetic file of about `rows` rows over 7 days (generated once, then cached; shared with the replay bench)."""
    users = int(rows / (7 * ROWS_PER_USER_DAY)) + 1
    path = cache / f"synth-{users}u-7d.csv"
    if not path.exists():
        log.info("generating %s (about %d rows)", path, rows)
        write_synthetic_csv(path, SynthConfig(users=users, days=7, seed=seed), progress=False)
    return path


def bench_analytics(rows: int, driver_memory: str) -> dict:
    from spark_jobs.analytics import job
    from spark_jobs.session import spark_session

    path = synthetic_file(rows)
    with tempfile.TemporaryDirectory(prefix="bench-analytics-") as tmp:
        settings = Settings(
            _env_file=None, artifacts_url=f"file://{tmp}/artifacts", lake_url=f"file://{tmp}/lake",
            spark_driver_memory=driver_memory,
        )  # fmt: skip
        spark = spark_session("bench-analytics", settings)
        try:
            started = time.perf_counter()
            result = job.run(spark, settings, from_csv=path)
            wall = time.perf_counter() - started
        finally:
            spark.stop()
    timings = result.timings
    kpi_s = sum(v for k, v in timings.items() if k not in ("load_s", "dedup_s", "total_s"))
    return {
        "source_file": path.name,
        "rows_before_dedup": result.manifest["rows_before_dedup"],
        "rows_after_dedup": result.manifest["rows_after_dedup"],
        "wall_s": round(wall, 1),
        "csv_decode_s": round(timings["load_s"], 1),
        "dedup_and_count_s": round(timings["dedup_s"], 1),
        "kpis_s": round(kpi_s, 1),
        "per_kpi_s": {k[:-2]: round(v, 2) for k, v in timings.items() if k not in ("load_s", "dedup_s", "total_s")},
        "spark": f"local[*] ({os.cpu_count()} cores), driver memory {driver_memory}",
        "funnel": result.tables["funnel"].to_pylist(),
    }


def bench_scoring(iterations: int, seed: int = 5) -> dict:
    from spark_jobs.purchase_model import features as F
    from spark_jobs.purchase_model import model as M

    with tempfile.TemporaryDirectory(prefix="bench-scoring-") as tmp:
        path = Path(tmp) / "clicks.csv"
        write_synthetic_csv(path, SynthConfig(users=5000, days=4, seed=seed, start=date(2019, 10, 1)), progress=False)
        table = load_events(Settings(_env_file=None), from_csv=path)
    training = F.build_training_set(table)
    model = M.train(training)
    frame = F.events_frame(table)
    history = F.user_history(frame)
    groups = {name: idx for name, idx in frame.groupby("user_session").indices.items() if len(idx) >= 2}
    names = np.array(sorted(groups))
    cols = {c: frame[c].to_numpy() for c in ("t", "event_type", "product_id", "cat", "price", "user_id", "user_session")}
    rng = np.random.default_rng(seed)
    requests = []
    for session in rng.choice(names, size=min(2000, len(names)), replace=False):
        events = [
            {"event_time": cols["t"][i], "event_type": cols["event_type"][i], "product_id": int(cols["product_id"][i]),
             "category_id": None if cols["cat"][i] < 0 else int(cols["cat"][i]), "price": float(cols["price"][i]),
             "user_id": int(cols["user_id"][i]), "user_session": cols["user_session"][i]}
            for i in groups[session]
        ]  # fmt: skip
        k = int(rng.integers(1, len(events) + 1))
        h = history.loc[session]
        user = F.UserHistory(
            sessions=int(h["past_sessions"]), purchase_sessions=int(h["past_purchase_sessions"]),
            purchases=int(h["past_purchases"]), views=int(h["past_views"]),
            carts=int(round(h["past_cart_rate"] * h["past_views"])) if h["past_views"] > 0 else 0,
        )  # fmt: skip
        requests.append((events[:k], user))
    lengths = np.array([len(e) for e, _ in requests])
    feature_ns, score_ns, total_ns = [], [], []
    for i in range(iterations):
        events, user = requests[i % len(requests)]
        t0 = time.perf_counter_ns()
        features = F.session_features(events, user)
        t1 = time.perf_counter_ns()
        M.score_session(features, model)
        t2 = time.perf_counter_ns()
        feature_ns.append(t1 - t0)
        score_ns.append(t2 - t1)
        total_ns.append(t2 - t0)

    def stats(ns: list[int]) -> dict:
        a = np.array(ns) / 1000.0
        return {"median_us": round(float(np.median(a)), 1), "p99_us": round(float(np.percentile(a, 99)), 1)}

    return {
        "iterations": iterations,
        "distinct_requests": len(requests),
        "events_per_request": {"median": float(np.median(lengths)), "p99": float(np.percentile(lengths, 99)), "max": int(lengths.max())},
        "session_features": stats(feature_ns),
        "score_session": stats(score_ns),
        "features_plus_score": stats(total_ns),
        "model": {"rounds": model.metrics["rounds"], "test_auc": round(model.metrics["test"]["auc"], 4),
                  "test": model.metrics["test"], "test_unknown_history": model.metrics["test_unknown_history"]},
    }


def markdown(results: dict) -> str:
    lines = []
    a = results.get("analytics")
    if a:
        lines += [
            f"Analytics job (`clickrec analytics --from-csv {a['source_file']}`), {a['rows_before_dedup']:,} rows, {a['spark']}:",
            "",
            "| phase | seconds |",
            "| --- | ---: |",
            f"| CSV decode (replay readers + validation) | {a['csv_decode_s']} |",
            f"| dedup + count (cached) | {a['dedup_and_count_s']} |",
            f"| 12 KPI tables | {a['kpis_s']} |",
            f"| total (wall) | {a['wall_s']} |",
            "",
        ]
    s = results.get("scoring")
    if s:
        lines += [
            f"Purchase-model request path, {s['iterations']:,} calls over {s['distinct_requests']:,} realistic session prefixes "
            f"(median {s['events_per_request']['median']:.0f} events, p99 {s['events_per_request']['p99']:.0f}):",
            "",
            "| step | median µs | p99 µs |",
            "| --- | ---: | ---: |",
            f"| `session_features(events, history)` | {s['session_features']['median_us']} | {s['session_features']['p99_us']} |",
            f"| `score_session(features, model)` | {s['score_session']['median_us']} | {s['score_session']['p99_us']} |",
            f"| both | {s['features_plus_score']['median_us']} | {s['features_plus_score']['p99_us']} |",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows of the analytics input (about)")
    parser.add_argument("--iterations", type=int, default=20_000, help="scoring calls")
    parser.add_argument("--driver-memory", default="6g", help="Spark driver memory for the analytics run")
    parser.add_argument("--skip-analytics", action="store_true")
    parser.add_argument("--skip-scoring", action="store_true")
    parser.add_argument("--no-record", action="store_true", help="print only; do not update the results file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S")

    results: dict = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results.update({
        "benchmark": "analytics job on synthetic data; purchase-model scoring latency",
        "command": "make bench  (or: .venv/bin/python -m bench.analytics)",
        "machine": machine(),
        "date": date.today().isoformat(),
    })  # fmt: skip
    if not args.skip_analytics:
        results["analytics"] = bench_analytics(args.rows, args.driver_memory)
    if not args.skip_scoring:
        results["scoring"] = bench_scoring(args.iterations)
    if not args.no_record:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2) + "\n")
        log.info("recorded %s", RESULTS)
    sys.stdout.write(markdown(results) + "\n")


if __name__ == "__main__":
    main()
