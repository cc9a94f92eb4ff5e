"""ALS training time and peak memory: implicit vs Spark MLlib, on synthetic sparse matrices.

Each measurement runs in its own child process (this script with ``--child``),
which builds the matrix (power-law item popularity, log-normal user activity,
weights 1..8), trains, and reports its own ``ru_maxrss``; for Spark the JVM's
peak (``VmHWM`` of the driver JVM) is added, since it holds the real work.
Matrix generation is not timed. BLAS is limited to one thread; implicit uses
its own 2 threads; Spark runs ``local[2]``.

    .venv/bin/python -m bench.als_training                       # all scales, quality table too
    .venv/bin/python -m bench.als_training --runs implicit-1m,spark-1m --no-quality

Results: bench/results/als_training.json, and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from feature_store.settings import PROJECT_ROOT

log = logging.getLogger("bench.als")
RESULTS = PROJECT_ROOT / "bench" / "results" / "als_training.json"

#: name -> (engine, users, items, non-zeros)
SCALES: dict[str, tuple[str, int, int, int]] = {
    "implicit-1m": ("implicit", 100_000, 20_000, 1_000_000),
    "spark-1m": ("spark", 100_000, 20_000, 1_000_000),
    "implicit-10m": ("implicit", 1_000_000, 100_000, 10_000_000),
    "spark-10m": ("spark", 1_000_000, 100_000, 10_000_000),
    "implicit-october": ("implicit", 3_000_000, 167_000, 20_000_000),
    "implicit-october-10it": ("implicit", 3_000_000, 167_000, 20_000_000),
}
FACTORS, ITERATIONS, REGULARIZATION, ALPHA, THREADS = 64, 15, 0.05, 10.0, 2
#: runs that differ from the common parameters
ITERATIONS_OVERRIDE = {"implicit-october-10it": 10}


def synthetic_matrix(users: int, items: int, nnz: int, seed: int = 0):
    """A users x items CSR matrix with about `nnz` distinct cells: Zipf items, log-normal user activity."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    item_p = 1.0 / np.arange(1, items + 1) ** 0.9
    item_p /= item_p.sum()
    user_p = rng.lognormal(0.0, 1.0, users)
    user_p /= user_p.sum()
    rows, cols = np.empty(0, np.int64), np.empty(0, np.int64)
    draw = int(nnz * 1.3)
    while True:
        r = rng.choice(users, size=draw, p=user_p)
        c = rng.permutation(items)[rng.choice(items, size=draw, p=item_p)]  # popular items spread over ids
        keys = np.unique(np.concatenate([rows * items + cols, r * items + c]))
        if len(keys) >= nnz:
            keys = rng.choice(keys, size=nnz, replace=False)
            break
        rows, cols = keys // items, keys % items
        draw = int((nnz - len(keys)) * 1.5) + 1000
    rows, cols = keys // items, keys % items
    data = rng.integers(1, 9, size=nnz).astype(np.float32)
    return sp.csr_matrix((data, (rows, cols)), shape=(users, items), dtype=np.float32)


def _jvm_peak_kb(spark) -> int:
    try:
        pid = spark.sparkContext._gateway.proc.pid  # the driver JVM launched by pyspark
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except Exception as error:  # noqa: BLE001 - the figure is optional, say why it is missing
        log.warning("JVM peak RSS unavailable: %s", error)
    return 0


def child(name: str) -> dict:
    """Build the matrix, train once, report seconds and peak RSS (this process, plus the JVM for Spark)."""
    from spark_jobs.candidates.als_implicit import ALSParams, train_implicit

    engine, users, items, nnz = SCALES[name]
    iterations = ITERATIONS_OVERRIDE.get(name, ITERATIONS)
    t = time.perf_counter()
    matrix = synthetic_matrix(users, items, nnz)
    gen_seconds = time.perf_counter() - t
    params = ALSParams(factors=FACTORS, iterations=iterations, regularization=REGULARIZATION, alpha=ALPHA,
                       num_threads=THREADS)  # fmt: skip
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    jvm_kb = 0
    if engine == "implicit":
        model = train_implicit(matrix, params, progress=False)
        seconds = model.train_seconds
        # recommend for 10k users, as the API's batch path would
        from spark_jobs.candidates.als_implicit import recommend_top_n

        t = time.perf_counter()
        recommend_top_n(model, 200, users=np.arange(min(10_000, users)), progress=False, num_threads=THREADS)
        extra = {"top200_for_10k_users_seconds": round(time.perf_counter() - t, 2)}
    else:
        from feature_store.settings import Settings
        from spark_jobs.candidates.als_spark import train_spark
        from spark_jobs.candidates.interactions import Interactions
        from spark_jobs.session import spark_session

        inter = Interactions(matrix, np.arange(users, dtype=np.int64), np.arange(items, dtype=np.int64), frozenset(), None)
        spark = spark_session("bench-als", Settings(_env_file=None, spark_master="local[2]", spark_driver_memory="12g",
                                                    spark_shuffle_partitions=4))  # fmt: skip
        spark.sparkContext.setLogLevel("ERROR")
        t = time.perf_counter()
        model = train_spark(spark, inter, params)
        seconds = time.perf_counter() - t
        jvm_kb = _jvm_peak_kb(spark)
        spark.stop()
        extra = {"jvm_peak_rss_mb": round(jvm_kb / 1024)}
    self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "name": name, "engine": engine, "users": users, "items": items, "nnz": int(matrix.nnz),
        "factors": FACTORS, "iterations": iterations, "threads": THREADS,
        "train_seconds": round(seconds, 1),
        "seconds_per_iteration_per_million_nnz": round(seconds / iterations / (matrix.nnz / 1e6), 3),
        "matrix_generation_seconds": round(gen_seconds, 1),
        "python_peak_rss_mb": round(self_kb / 1024), "python_rss_before_training_mb": round(rss_before / 1024),
        "peak_rss_mb": round((self_kb + jvm_kb) / 1024),
        **extra,
    }  # fmt: skip


def run_child(name: str, timeout: float) -> dict:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    started = time.perf_counter()
    # Own process group: on a timeout the child AND its Spark JVM (a grandchild) are stopped together.
    proc = subprocess.Popen([sys.executable, "-m", "bench.als_training", "--child", name], env=env, cwd=PROJECT_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
        out = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        engine, users, items, nnz = SCALES[name]
        return {"name": name, "engine": engine, "users": users, "items": items, "nnz": nnz,
                "status": f"not finished within {timeout / 60:.0f} min (stopped)"}  # fmt: skip
    if out.returncode != 0:
        return {"name": name, "status": f"failed (exit {out.returncode})", "stderr_tail": out.stderr[-2000:]}
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["status"] = "ok"
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    return result


def quality(users: int, days: int) -> dict:
    """The temporal evaluation on synthetic data with the generator defaults (both engines and baselines)."""
    import tempfile

    from feature_store.settings import Settings
    from producer.synth import SynthConfig, write_synthetic_csv
    from spark_jobs.evaluation.report import run_evaluation

    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "synth.csv"
        write_synthetic_csv(csv, SynthConfig(users=users, days=days, seed=42), progress=False)
        settings = Settings(_env_file=None, artifacts_url=f"file://{tmp}/artifacts", lake_url=f"file://{tmp}/lake",
                            spark_master="local[2]")  # fmt: skip
        report = run_evaluation(settings, from_csv=csv, store=False)
    return {"users": users, "days": days, "table": report.text,
            "temporal": report.metrics["temporal"], "sessions": report.metrics["sessions"]}  # fmt: skip


def markdown(runs: list[dict]) -> str:
    lines = ["| run | engine | users x items | non-zeros | iterations | train (s) | s / iteration / 1M nnz | peak RSS (MB) | status |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]  # fmt: skip
    for r in runs:
        lines.append(
            f"| {r['name']} | {r.get('engine', '')} | {r.get('users', 0):,} x {r.get('items', 0):,} | {r.get('nnz', 0):,} | "
            f"{r.get('iterations', ITERATIONS_OVERRIDE.get(r['name'], ITERATIONS))} | "
            f"{r.get('train_seconds', '-')} | {r.get('seconds_per_iteration_per_million_nnz', '-')} | "
            f"{r.get('peak_rss_mb', '-')} | {r['status']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--runs", default=",".join(SCALES), help="comma-separated subset of " + ", ".join(SCALES))
    parser.add_argument("--spark-timeout-min", type=float, default=15.0)
    parser.add_argument("--timeout-min", type=float, default=30.0)
    parser.add_argument("--quality", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--quality-users", type=int, default=20_000)
    parser.add_argument("--quality-days", type=int, default=7)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", stream=sys.stderr)
    if args.child:
        print(json.dumps(child(args.child)))
        return

    previous = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    runs = {r["name"]: r for r in previous.get("runs", [])}
    for name in [n.strip() for n in args.runs.split(",") if n.strip()]:
        timeout = 60 * (args.spark_timeout_min if SCALES[name][0] == "spark" else args.timeout_min)
        log.info("running %s (timeout %.0f min)", name, timeout / 60)
        runs[name] = run_child(name, timeout)
        runs[name]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        log.info("%s: %s", name, runs[name])
    result = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "parameters": {"factors": FACTORS, "iterations": ITERATIONS, "regularization": REGULARIZATION,
                       "alpha": ALPHA, "implicit_threads": THREADS, "blas_threads": 1, "spark_master": "local[2]"},
        "runs": [runs[n] for n in SCALES if n in runs],
        "quality": previous.get("quality"),
        "command": "python -m bench.als_training " + " ".join(sys.argv[1:]),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }  # fmt: skip
    if args.quality:
        log.info("quality: evaluate on %d users x %d days", args.quality_users, args.quality_days)
        result["quality"] = quality(args.quality_users, args.quality_days)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result["runs"]))
    if result.get("quality"):
        print()
        print(result["quality"]["table"])


if __name__ == "__main__":
    main()
