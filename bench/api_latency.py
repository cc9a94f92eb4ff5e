"""API latency: /recommendations with 200 candidates reranked, beside /health and Feast, small and October scale.

Starts a private Redis on a free port, builds real artifacts on synthetic events
(a `candidates` version from `run_candidates`; a `ranker` version published with
`spark_jobs.ranker.model.publish`, its booster trained on random features with
the real FEATURES list: same trees, same serving cost, no Spark start-up), writes
the online features the way the stream does (`spark_jobs.stream.process_batch`
on live events, a micro-batch every second like the stream's trigger, each for a
slice of the products and users in turn, so each gets an event every `--live-cycle`
seconds (10 s; 100 s at October scale, 96 events a second, about six times October
2019's mean rate) and the two-minute windows stay current;
user profiles with `materialize_profiles`), and runs the API with `clickrec api`
in its own process (two workers at each scale). Then:

- load, from a separate process: closed loop from wrk (N keep-alive connections
  back to back: throughput and latency; wrk is C, so the server saturates before
  the client does) and open loop from a Python generator (aiohttp on uvloop; a fixed
  arrival rate, latency from each request's *scheduled* send time, so a slow
  server cannot hide its queue), on `/recommendations/{user}?k=10` and on
  `/health` of the same server, interleaved in each repetition;
- feature reads, in process: `spark_jobs.ranker.serving.read_inputs` (one user +
  200 products, one pipeline) against Feast's `get_online_features` reading the
  same values for the same entities from the same Redis (Feast runs in its own
  virtualenv, bench/.venv-feast, created with `pip install "feast[redis]"` on first use);
- October 2019 scale: a candidates artifact of 3M users x 167k products (random
  64-factor ALS tables, catalogue, 50 neighbours per product and kind, popular
  lists) written with the artifact writer; the API's RSS (peak and steady) and
  the same load.

Results go to bench/results/api_latency.json (medians over the repetitions) and
a Markdown table is printed.

    .venv/bin/python -m bench.api_latency                         # everything, 3 repetitions
    .venv/bin/python -m bench.api_latency --reps 1 --duration 10 --no-october --no-record
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from feature_store.artifacts import Artifacts, open_artifacts
from feature_store.definitions import USER_2M, USER_PROFILE, FeatureGroup
from bench.machine import machine
from feature_store.settings import PROJECT_ROOT, Settings
from tests.services import free_ports, private_redis

log = logging.getLogger("bench.api")
RESULTS = PROJECT_ROOT / "bench" / "results" / "api_latency.json"
CLICKREC = Path(sys.executable).parent / "clickrec"
FEAST_VENV = PROJECT_ROOT / "bench" / ".venv-feast"
FEAST_WORKER = PROJECT_ROOT / "bench" / "feast_online.py"
POOL = 200  #: candidates per request (the API_CANDIDATE_POOL default)


# --------------------------------------------------------------------------- #
# Processes: Redis, the API, CPU and memory of a pid
# --------------------------------------------------------------------------- #


def process_tree(pid: int) -> list[int]:
    """`pid` and all its descendants (uvicorn's supervisor and its workers), from /proc."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        parents.setdefault(ppid, []).append(int(stat.parent.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(parents.get(current, []))
    return tree


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its descendants (all threads), from /proc."""
    total = 0.0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def memory_mb(pid: int) -> dict[str, float]:
    """Memory of a process and its descendants, MB: resident now (VmRSS), the sum of their peaks (VmHWM),
    and the proportional set size (PSS: a page shared by two workers counts half in each)."""
    out = {"rss_mb": 0.0, "peak_rss_mb": 0.0, "pss_mb": 0.0, "processes": 0}
    for member in process_tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text().splitlines()
            rollup = Path(f"/proc/{member}/smaps_rollup").read_text().splitlines()
        except OSError:
            continue
        out["processes"] += 1
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                name, value = line.split(":")
                out[{"VmRSS": "rss_mb", "VmHWM": "peak_rss_mb"}[name]] += int(value.split()[0]) / 1024
        for line in rollup:
            if line.startswith("Pss:"):
                out["pss_mb"] += int(line.split()[1]) / 1024
    return {k: round(v, 1) for k, v in out.items()}


def get_json(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, None


@dataclass
class Api:
    """`clickrec api` in its own process group, on a free port."""

    settings: Settings
    log_path: Path
    workers: int = 1
    env: dict[str, str] = field(default_factory=dict)  #: more environment for the API (over the defaults)
    proc: subprocess.Popen | None = None
    port: int = 0
    startup_s: float = 0.0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 600.0) -> None:
        self.port = free_ports(1)[0]
        env = {
            **os.environ,
            "REDIS_URL": self.settings.redis_url,
            "ARTIFACTS_URL": self.settings.artifacts_url,
            "LAKE_URL": self.settings.lake_url,
            "KAFKA_BOOTSTRAP": self.settings.kafka_bootstrap,  # nothing listens: POST /events is not measured
            "LOG_LEVEL": "WARNING",  # no access log line per request
            "API_WORKERS": str(self.workers),
            "API_FACTOR_DIR": str(self.log_path.parent / "api-factors"),
            "API_COMPILED_DIR": str(self.log_path.parent / "api-compiled"),
            **self.env,
        }
        started = time.perf_counter()
        with self.log_path.open("ab") as log_file:
            self.proc = subprocess.Popen(
                [str(CLICKREC), "api", "--host", "127.0.0.1", "--port", str(self.port)],
                env=env, cwd=self.log_path.parent, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        answered: set[int] = set()  # worker pids seen: every worker must have loaded its artifacts
        while time.perf_counter() - started < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the API exited ({self.proc.returncode}); see {self.log_path}")
            try:
                status, body = get_json(self.base + "/health", 1.0)
                if status == 200:
                    answered.add(body["pid"])
                    if len(answered) >= self.workers:
                        self.startup_s = time.perf_counter() - started
                        return
                    continue  # a new connection may reach another worker
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the API did not answer within {timeout} s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


# --------------------------------------------------------------------------- #
# Artifacts
# --------------------------------------------------------------------------- #


def synthetic_events(directory: Path, users: int, days: int) -> pa.Table:
    from feature_store.lake import events_from_csv
    from producer.synth import SynthConfig, write_synthetic_csv

    path = directory / "clicks.csv"
    write_synthetic_csv(path, SynthConfig(users=users, days=days, seed=5), progress=False)
    return pa.concat_tables(events_from_csv(path))


def publish_random_ranker(artifacts: Artifacts, rounds: int, seed: int = 0) -> str:
    """An XGBoost LambdaMART booster on random features in FEATURES order, published as a `ranker` version.

    Trees of the real parameters (`XGBParams`) and `rounds` rounds, the most the real
    training keeps: scoring costs what a trained model's does.
    """
    import xgboost as xgb

    from spark_jobs.ranker import model as ranker_model
    from spark_jobs.ranker.features import FEATURES

    rng = np.random.default_rng(seed)
    queries, per = 100, POOL
    x = rng.normal(size=(queries * per, len(FEATURES))).astype(np.float32)
    x[rng.random(x.shape) < 0.2] = np.nan
    y = (x[:, 0] > 1.0).astype(np.float32) + rng.integers(0, 2, len(x)) * (rng.random(len(x)) < 0.1)
    dmatrix = xgb.DMatrix(x, label=y, qid=np.repeat(np.arange(queries), per), feature_names=list(FEATURES), missing=np.nan)
    params = ranker_model.XGBParams()
    booster = xgb.train(params.booster_params(), dmatrix, num_boost_round=rounds)
    model = ranker_model.RankerModel(booster=booster, params={**params.booster_params(), "num_boost_round": rounds},
                                     metrics={"note": "benchmark model: random features, no evaluation"})  # fmt: skip
    return ranker_model.publish(model, artifacts, {"source": "bench.api_latency (random features)"})


def copy_latest(source: Artifacts, target: Artifacts, kind: str) -> str:
    version = source.latest(kind)
    files = [k.split("/", 2)[2] for k in source.store.list(f"{kind}/{version}/")]
    with target.new_version(kind) as writer:
        for name in files:
            if name != "_COMPLETE":
                writer.put_bytes(name, source.read_bytes(kind, name, version))
    return writer.version


def write_october_candidates(artifacts: Artifacts, users: int, products: int, factors: int, neighbours: int,
                             seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """A `candidates` version at October-2019 scale with random ALS factors (no training), via the artifact writer.

    Per-user lists are not precomputed (the API scores factors on request):
    `user_candidates.parquet` is empty. Returns the bench users' factor rows and
    the item factors, for picking candidates.
    """
    from spark_jobs.candidates.als_implicit import FactorModel
    from spark_jobs.candidates.catalogue import CATALOGUE_SCHEMA
    from spark_jobs.candidates.job import FILES

    rng = np.random.default_rng(seed)
    user_ids = 512_000_000 + 3 * np.arange(users, dtype=np.int64)
    product_ids = 1_000_000 + 7 * np.arange(products, dtype=np.int64)
    user_factors = (rng.standard_normal((users, factors), dtype=np.float32) * np.float32(0.1))
    item_factors = (rng.standard_normal((products, factors), dtype=np.float32) * np.float32(0.1))
    categories = 1_000
    category_of = rng.integers(0, categories, products)
    codes = np.array([f"dept{c % 13}.cat{c}" for c in range(categories)], dtype=object)
    catalogue = pa.table({
        "product_id": product_ids,
        "category_id": 2_050_000_000_000_000_000 + category_of,
        "category_code": codes[category_of],
        "brand": [f"brand{b}" for b in rng.integers(0, 3_000, products)],
        "price": np.round(rng.lognormal(4, 1, products), 2),
        "views": rng.integers(1, 5_000, products), "carts": rng.integers(0, 200, products),
        "purchases": rng.integers(0, 100, products), "users": rng.integers(1, 3_000, products),
    }).cast(CATALOGUE_SCHEMA)  # fmt: skip
    parts = []
    for kind in ("also_viewed", "also_bought"):
        n = products * neighbours
        parts.append(pa.table({
            "product_id": np.repeat(product_ids, neighbours),
            "neighbour_id": product_ids[rng.integers(0, products, n)],
            "score": np.sort(rng.random((products, neighbours), dtype=np.float32), axis=1)[:, ::-1].ravel(),
            "rank": np.tile(np.arange(1, neighbours + 1, dtype=np.int32), products),
            "kind": pa.array([kind] * n, pa.string()),
        }))  # fmt: skip
    item_neighbours = pa.concat_tables(parts)
    popular_parts = []
    for window in (1, 7):
        for metric in ("purchase", "view"):
            top = 100
            cats = np.r_[-1, np.arange(categories)]
            cat = np.repeat(cats, top)
            popular_parts.append(pa.table({
                "window_days": pa.array(np.full(len(cat), window, np.int32)),
                "metric": pa.array([metric] * len(cat), pa.string()),
                "category_id": pa.array(np.where(cat < 0, 0, 2_050_000_000_000_000_000 + cat), mask=cat < 0),
                "category_code": pa.array([None if c < 0 else codes[c] for c in cat], pa.string()),
                "product_id": product_ids[rng.integers(0, products, len(cat))],
                "users": np.sort(rng.integers(1, 10_000, len(cat)))[::-1].copy(),
                "events": np.sort(rng.integers(1, 20_000, len(cat)))[::-1].copy(),
                "rank": pa.array(np.tile(np.arange(1, top + 1, dtype=np.int32), len(cats))),
            }))  # fmt: skip
    popular = pa.concat_tables(popular_parts)
    model = FactorModel(user_factors, item_factors)
    user_table, item_table = model.factor_tables()
    manifest = {
        "kind": "candidates", "engine": "random (bench.api_latency)", "source": "bench: October-2019 scale",
        "rows": {"users": users, "items": products, "user_candidates": 0, "popular": popular.num_rows,
                 "products": products, "item_neighbours": {"also_viewed": products * neighbours,
                                                           "also_bought": products * neighbours}},
        "parameters": {"als": {"factors": factors}, "top_n": POOL}, "files": list(FILES),
    }  # fmt: skip
    started = time.perf_counter()
    with artifacts.new_version("candidates") as version:
        version.put_table("user_candidates.parquet", pa.table({
            "user_id": pa.array([], pa.int64()), "product_id": pa.array([], pa.int64()),
            "score": pa.array([], pa.float32()), "rank": pa.array([], pa.int32())}))  # fmt: skip
        version.put_table("item_neighbours.parquet", item_neighbours)
        version.put_table("popular.parquet", popular)
        version.put_table("products.parquet", catalogue)
        version.put_table("user_index.parquet", pa.table({"user_index": pa.array(np.arange(users, dtype=np.int32)),
                                                          "user_id": user_ids}))  # fmt: skip
        version.put_table("item_index.parquet", pa.table({"item_index": pa.array(np.arange(products, dtype=np.int32)),
                                                          "product_id": product_ids}))  # fmt: skip
        version.put_table("user_factors.parquet", user_table)
        version.put_table("item_factors.parquet", item_table)
        version.put_json("manifest.json", manifest)
    sizes = {k.rsplit("/", 1)[1]: len(artifacts.store.get(k)) / 1e6 for k in artifacts.store.list(f"candidates/{version.version}/")
             if k.endswith(".parquet")}  # fmt: skip
    return {
        "version": version.version,
        "write_s": time.perf_counter() - started,
        "file_mb": {k: round(v, 1) for k, v in sizes.items()},
        "user_ids": user_ids,
        "user_factors": user_factors,
        "item_factors": item_factors,
        "product_ids": product_ids,
        "catalogue": catalogue,
    }


# --------------------------------------------------------------------------- #
# Online features, written the way the stream writes them
# --------------------------------------------------------------------------- #


@dataclass
class LiveFeatures:
    """Keeps every read of the bench users and their candidates a hit: live events through `process_batch`.

    Like the stream, it writes a micro-batch every `every` seconds; each covers one of
    `parts` slices of the products and users in turn, so every product and user gets an
    event every `every * parts` seconds.
    """

    settings: Settings
    users: list[int]
    products: np.ndarray
    catalogue: pa.Table  #: CATALOGUE_SCHEMA rows of `products`
    every: float = 1.0
    parts: int = 10
    batch: int = 0
    writes: list[float] = field(default_factory=list)
    spans: list[tuple[float, float]] = field(default_factory=list)  #: (start, end) wall time of each batch
    _stop: threading.Event = field(default_factory=threading.Event)
    _paused: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _cost: Any = field(default=None)  #: spark_jobs.stream.MergeCost (imported with Spark's module, on first write)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        from feature_store.lake import Lake
        from feature_store.online import OnlineStore

        self.store = OnlineStore.from_url(self.settings.redis_url)
        self.lake = Lake(self.settings.lake_url, self.settings)
        index = {int(p): i for i, p in enumerate(self.catalogue["product_id"].to_pylist())}
        rows = [index[int(p)] for p in self.products]
        self.info = {name: [self.catalogue[name][r].as_py() for r in rows]
                     for name in ("category_id", "category_code", "brand", "price")}  # fmt: skip
        self.rng = np.random.default_rng(1)

    def _events(self, at: float, spread: float, part: slice) -> pa.Table:
        from producer.schema import EVENT_SCHEMA

        n = len(self.products)
        times = at - self.rng.uniform(0, spread, n + len(self.users))
        # the crowd behind the product events: other users than the bench users, or those would pass
        # BOT_RULE's events-per-two-minutes limit and lose their personal answers
        users = 900_000_000 + self.rng.integers(0, 1_000_000, n)
        types = np.where(self.rng.random(n) < 0.1, "cart", "view")
        types[self.rng.random(n) < 0.03] = "purchase"
        rows = []
        for i, pid in list(enumerate(self.products.tolist()))[part]:
            rows.append({
                "event_time": datetime.fromtimestamp(times[i], timezone.utc), "event_type": str(types[i]),
                "product_id": pid, "category_id": self.info["category_id"][i],
                "category_code": self.info["category_code"][i], "brand": self.info["brand"][i],
                "price": self.info["price"][i] or 1.0, "user_id": int(users[i]), "user_session": f"s-{users[i]}",
                "event_id": f"bench-{self.batch}-{i}", "source": "live",
            })  # fmt: skip
        for j, user in list(enumerate(self.users))[part]:  # bench users touched a product just now: a two-minute window
            i = int(self.rng.integers(0, n))
            rows.append({
                "event_time": datetime.fromtimestamp(times[n + j], timezone.utc), "event_type": "view",
                "product_id": int(self.products[i]), "category_id": self.info["category_id"][i],
                "category_code": self.info["category_code"][i], "brand": self.info["brand"][i],
                "price": self.info["price"][i] or 1.0, "user_id": int(user), "user_session": f"s-{user}",
                "event_id": f"bench-{self.batch}-u{j}", "source": "live",
            })  # fmt: skip
        table = pa.Table.from_pylist(rows, schema=EVENT_SCHEMA)
        return table.append_column("ingest_time", pa.array([None] * table.num_rows, pa.timestamp("us", tz="UTC")))

    def write(self, at: float | None = None, spread: float = 5.0, part: slice = slice(None)) -> float:
        """One micro-batch of live events ending at `at` (default now) for the `part` of the products and
        users (default all), through the stream's own batch code."""
        from spark_jobs.stream import MergeCost, process_paced_batch

        with self._lock:
            started, wall = time.perf_counter(), time.time()
            self.batch += 1
            table = self._events(time.time() if at is None else at, spread, part)
            # paced as the stream paces a caught-up batch
            if self._cost is None:
                self._cost = MergeCost()
            process_paced_batch(table, self.batch, store=self.store, lake=self.lake, writer="bench-api",
                                settings=self.settings, trigger_seconds=self.every, lag=0.0, started=started, cost=self._cost)  # fmt: skip
            seconds = time.perf_counter() - started
            self.writes.append(seconds)
            self.spans.append((wall, wall + seconds))
            return seconds

    def seed(self) -> None:
        """Yesterday, the previous hour and now: every bucket the ranker reads exists."""
        now = time.time()
        self.write(now - 86_400, 60)
        self.write(now - 3_600, 60)
        self.write(now)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            if not self._paused.is_set():
                self.write(spread=self.every, part=slice(self.batch % self.parts, None, self.parts))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="live-features", daemon=True)
        self._thread.start()

    @contextmanager
    def paused(self) -> Iterator[None]:
        self.write()
        self._paused.set()
        try:
            yield
        finally:
            self._paused.clear()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def summary(self) -> dict[str, Any]:
        """Batches written, the median seconds one took (with its pacing waits), events per batch and second."""
        per_batch = math.ceil(len(self.products) / self.parts) + math.ceil(len(self.users) / self.parts)
        return {"batches": len(self.writes), "median_s": round(statistics.median(self.writes), 3) if self.writes else None,
                "every_s": self.every, "cycle_s": self.every * self.parts, "events_per_batch": per_batch,
                "events_per_s": round(per_batch / self.every, 1),
                "pace": {"redis_share": self.settings.stream_redis_share, "fraction": self.settings.stream_pace_fraction}}  # fmt: skip


def pick_candidates(user_factors: np.ndarray, item_factors: np.ndarray, product_ids: np.ndarray) -> np.ndarray:
    """The API's ALS candidates of each user (top POOL by dot product), as product ids (users x POOL)."""
    from services.api.recommend import top_by_factors

    return np.vstack([product_ids[top_by_factors(v, item_factors, POOL)[0]] for v in user_factors])


def read_hits(store, users: list[int], candidates: np.ndarray, catalogue, neighbours) -> dict[str, float]:
    """Share of the ranker's reads that found a value, per group, for the bench users."""
    from spark_jobs.ranker.features import PRODUCT_READS
    from spark_jobs.ranker.serving import read_product_rows

    hits: dict[str, list[float]] = {}
    for user, cands in zip(users, candidates):
        ((user_2m,), (profile,)), rows = read_product_rows(
            store, cands.tolist(), time.time(), [(USER_2M, [user], None), (USER_PROFILE, [user], None)])
        hits.setdefault("user_2m", []).append(user_2m is not None)
        hits.setdefault("user_profile", []).append(profile is not None)
        for name, _, _ in PRODUCT_READS:
            found = getattr(rows, name)
            hits.setdefault(name, []).append(sum(r is not None for r in found) / len(found))
    return {k: round(float(np.mean(v)), 4) for k, v in hits.items()}


# --------------------------------------------------------------------------- #
# Load generator (its own process: `--loadgen SPEC`)
# --------------------------------------------------------------------------- #


#: Open loop: requests outstanding at most; past it, a due request is not sent and counts as an error.
MAX_IN_FLIGHT = 256
#: Open loop: client sessions the requests take turns on (each keeps its own connections), like the many
#: clients behind a real API. One session would send nearly everything over one or two keep-alive
#: connections, and those land on one worker.
OPEN_LOOP_CLIENTS = 16


async def _load(spec: dict[str, Any]) -> dict[str, Any]:
    """An open loop at `level` req/s (the closed loops come from wrk).

    aiohttp rather than httpx: on these two cores the client's CPU is taken from the
    server, and httpx spent about 1.5 ms of CPU per request (more as its pool grew).
    Request i goes out on client i % OPEN_LOOP_CLIENTS.
    """
    import aiohttp

    paths, level = spec["paths"], spec["level"]
    warmup, duration = spec["warmup"], spec["duration"]
    latencies: list[float] = []
    sent_at: list[float] = []  #: wall-clock due time of each of `latencies`
    wall_offset = time.time() - time.perf_counter()
    errors: dict[str, int] = {}
    sources: dict[str, int] = {}
    counter = {"n": 0, "in_flight": 0}
    # past 5 s a request counts as an error (a timeout), so an overloaded phase ends soon after its duration
    timeout = aiohttp.ClientTimeout(total=5.0)
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(aiohttp.ClientSession(
                spec["base"], connector=aiohttp.TCPConnector(limit=MAX_IN_FLIGHT // OPEN_LOOP_CLIENTS), timeout=timeout))
            for _ in range(OPEN_LOOP_CLIENTS)
        ]  # fmt: skip

        async def one(client: aiohttp.ClientSession, path: str, start: float, measured: bool) -> None:
            counter["in_flight"] += 1
            try:
                async with client.get(path) as response:
                    status = response.status
                    body = await response.read()
                if status == 200 and spec["check_source"] and counter["n"] % 50 == 0:
                    source = json.loads(body).get("source", "?")
                    sources[source] = sources.get(source, 0) + 1
                counter["n"] += 1
            except (aiohttp.ClientError, asyncio.TimeoutError) as error:
                status = type(error).__name__
            finally:
                counter["in_flight"] -= 1
            done = time.perf_counter()
            if measured:
                if status == 200:
                    latencies.append(done - start)
                    sent_at.append(start + wall_offset)
                else:
                    errors[str(status)] = errors.get(str(status), 0) + 1

        t0 = time.perf_counter() + 0.05
        measure_from = t0 + warmup
        late: list[float] = []
        # open loop: request i is due at t0 + i / rate, whatever happened to the ones before
        tasks = []
        total = int((warmup + duration) * level)
        for i in range(total):
            due = t0 + i / level
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            late.append(time.perf_counter() - due)
            if counter["in_flight"] >= MAX_IN_FLIGHT:
                # The server is far behind: sending more would only make the client the bottleneck. Count it.
                if due >= measure_from:
                    errors["not sent: overloaded"] = errors.get("not sent: overloaded", 0) + 1
                continue
            client = clients[i % OPEN_LOOP_CLIENTS]
            tasks.append(asyncio.create_task(one(client, paths[i % len(paths)], due, due >= measure_from)))
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - t0
    lat = np.asarray(latencies) * 1000
    pct = (lambda q: float(np.percentile(lat, q))) if len(lat) else (lambda q: float("nan"))
    return {
        "completed": len(lat),
        "sent_at": sent_at, "latencies_ms": lat.tolist(),
        "errors": errors,
        "throughput_rps": len(lat) / duration,
        "p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99), "max_ms": float(lat.max()) if len(lat) else float("nan"),
        "send_late_p99_ms": float(np.percentile(late, 99) * 1000) if late else None,
        "sources_sampled": sources,
        "wall_s": wall,
    }  # fmt: skip


def loadgen_main(spec_json: str) -> None:
    spec = json.loads(spec_json)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    before = resource.getrusage(resource.RUSAGE_SELF)
    result = asyncio.run(_load(spec))
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result["client_cpu_pct"] = 100 * cpu / result["wall_s"]
    print(json.dumps(result))


def drain(api: Api, timeout: float = 120.0) -> None:
    """Wait until the server is idle again (an overloaded phase leaves a backlog the next one must not inherit)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        try:
            get_json(api.base + "/health", 10.0)
        except OSError:
            pass
        if time.perf_counter() - started < 0.02:
            time.sleep(1.0)  # and once more after a pause: the backlog is gone, not between two requests
            started = time.perf_counter()
            get_json(api.base + "/health", 10.0)
            if time.perf_counter() - started < 0.02:
                return
        time.sleep(0.5)
    log.warning("the API did not become idle within %.0f s", timeout)


#: wrk's Lua: cycle through the paths, and print the summary as one JSON line when done.
WRK_SCRIPT = """
local paths, i = {%s}, 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i %% #paths) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('{"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p90_us": %%d, "p99_us": %%d, ' ..
    '"max_us": %%d, "connect": %%d, "read": %%d, "write": %%d, "status": %%d, "timeout": %%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def wrk_path() -> str:
    """wrk, the C load generator (`make bench` installs it); a clear error when it is missing."""
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit("wrk is not installed: run `make bench-deps` (or `apt-get install wrk`); "
                         "it drives the closed-loop phases, a Python client tops out near 500 req/s")  # fmt: skip
    return path


def _wrk(spec: dict[str, Any], tmp: Path, seconds: float) -> dict[str, Any]:
    """A closed loop from wrk for `seconds`: one thread, `level` keep-alive connections, cycling the paths."""
    script = tmp / "wrk-paths.lua"
    script.write_text(WRK_SCRIPT % ", ".join(json.dumps(p) for p in spec["paths"]))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([wrk_path(), "-t1", f"-c{spec['level']}", f"-d{max(1, round(seconds))}s", "--timeout", "5s",
                          "-s", str(script), spec["base"]], capture_output=True, text=True, check=True)  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    stats = json.loads(next(line for line in out.stdout.splitlines() if line.startswith('{"requests"')))
    wall = stats["duration_us"] / 1e6
    answered = stats["requests"] - stats["status"]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "completed": answered, "errors": {k: stats[k] for k in ("connect", "read", "write", "status", "timeout") if stats[k]},
        "throughput_rps": answered / wall, "p50_ms": stats["p50_us"] / 1e3, "p90_ms": stats["p90_us"] / 1e3,
        "p99_ms": stats["p99_us"] / 1e3, "max_ms": stats["max_us"] / 1e3, "send_late_p99_ms": None,
        "sources_sampled": {}, "wall_s": wall, "client_cpu_pct": 100 * cpu / wall, "client": "wrk",
    }  # fmt: skip


def by_writer_phase(sent_at: Sequence[float], latencies_ms: Sequence[float],
                    spans: Sequence[tuple[float, float]]) -> dict[str, dict[str, float | None]]:
    """Latency of the requests sent while the live writer was writing a batch (inside one of `spans`) and of
    the others: each part's share of the requests and its p50 and p99. On two shared cores the writer's
    Redis merges are where the open loop's tail comes from; this shows how much."""
    sent, lat = np.asarray(sent_at, float), np.asarray(latencies_ms, float)
    starts, ends = (np.asarray(x, float) for x in (zip(*spans) if spans else ((), ())))
    order = np.argsort(starts)
    latest = np.searchsorted(starts[order], sent, side="right") - 1  # the latest batch started before each send
    during = (latest >= 0) & (sent < ends[order][np.maximum(latest, 0)]) if len(starts) else np.zeros(len(sent), bool)
    parts = {}
    for name, mask in (("during_write", during), ("between_writes", ~during)):
        part = lat[mask]
        parts[name] = {"share": float(mask.mean()) if len(lat) else None,
                       "p50_ms": float(np.percentile(part, 50)) if len(part) else None,
                       "p99_ms": float(np.percentile(part, 99)) if len(part) else None}  # fmt: skip
    return parts


def run_load(api: Api, redis_pid: int, *, endpoint: str, paths: list[str], mode: str, level: int, duration: float,
             warmup: float, live: LiveFeatures | None = None) -> dict[str, Any]:  # fmt: skip
    """One phase. Closed loops come from wrk (in C: the server saturates, not the client);
    open loops from the Python generator, which times each request from its scheduled send
    (and, with `live`, splits them by whether the live writer was writing a batch then)."""
    spec = {"base": api.base, "paths": paths, "mode": mode, "level": level, "duration": duration, "warmup": warmup,
            "check_source": endpoint == "recommendations"}  # fmt: skip
    drain(api)
    if mode == "closed":
        _wrk(spec, api.log_path.parent, warmup)
    api_cpu, redis_cpu, started = cpu_seconds(api.proc.pid), cpu_seconds(redis_pid), time.perf_counter()
    if mode == "closed":
        result = _wrk(spec, api.log_path.parent, duration)
    else:
        out = subprocess.run([sys.executable, "-m", "bench.api_latency", "--loadgen", json.dumps(spec)],
                             capture_output=True, text=True, check=True, cwd=PROJECT_ROOT)  # fmt: skip
        result = {**json.loads(out.stdout.strip().splitlines()[-1]), "client": "python (aiohttp, uvloop)"}
        sent_at, latencies_ms = result.pop("sent_at"), result.pop("latencies_ms")
        if live is not None:
            result["writer_phase"] = by_writer_phase(sent_at, latencies_ms, list(live.spans))
    wall = time.perf_counter() - started
    result["api_cpu_pct"] = 100 * (cpu_seconds(api.proc.pid) - api_cpu) / wall
    result["redis_cpu_pct"] = 100 * (cpu_seconds(redis_pid) - redis_cpu) / wall
    result.update(endpoint=endpoint, mode=mode, level=level, **memory_mb(api.proc.pid))
    log.info("%-15s %-6s %4d: %6.0f req/s  p50 %6.1f ms  p99 %7.1f ms  errors %s  client CPU %3.0f%%  API CPU %3.0f%%",
             endpoint, mode, level, result["throughput_rps"], result["p50_ms"], result["p99_ms"], result["errors"] or 0,
             result["client_cpu_pct"], result["api_cpu_pct"])  # fmt: skip
    if phase := result.get("writer_phase"):
        during, between = phase["during_write"], phase["between_writes"]
        log.info("%30s sent while the live writer wrote (%.0f%%): p99 %s ms; the others: p99 %s ms", "",
                 100 * (during["share"] or 0), _ms(during["p99_ms"]), _ms(between["p99_ms"]))  # fmt: skip
    return result


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def load_phases(api: Api, redis_pid: int, users: list[int], *, closed: list[int], rates: list[int],
                health_closed: list[int], health_rates: list[int], duration: float, warmup: float,
                reps: int, live: LiveFeatures | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Every phase `reps` times, interleaved (recommendations and /health side by side in each repetition)."""
    rec_paths = [f"/recommendations/{u}?k=10" for u in users]
    plan = ([("recommendations", rec_paths, "closed", c) for c in closed]
            + [("health", ["/health"], "closed", c) for c in health_closed]
            + [("recommendations", rec_paths, "open", r) for r in rates]
            + [("health", ["/health"], "open", r) for r in health_rates])  # fmt: skip
    runs = []
    for rep in range(reps):
        for endpoint, paths, mode, level in plan:
            result = run_load(api, redis_pid, endpoint=endpoint, paths=paths, mode=mode, level=level,
                              duration=duration, warmup=warmup, live=live)  # fmt: skip
            runs.append({**result, "rep": rep + 1})
    return runs


def _median_of(values: Iterator[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Median over repetitions of each (endpoint, mode, level)."""
    groups: dict[tuple, list[dict]] = {}
    for run in runs:
        groups.setdefault((run["endpoint"], run["mode"], run["level"]), []).append(run)
    rows = []
    for (endpoint, mode, level), items in groups.items():
        med = lambda key: statistics.median(r[key] for r in items)  # noqa: E731
        rows.append({
            "endpoint": endpoint, "mode": mode, "level": level, "reps": len(items),
            "throughput_rps": med("throughput_rps"), "p50_ms": med("p50_ms"), "p90_ms": med("p90_ms"),
            "p99_ms": med("p99_ms"), "max_ms": max(r["max_ms"] for r in items),
            "errors": sum(sum(r["errors"].values()) for r in items), "client": items[0]["client"],
            "client_cpu_pct": med("client_cpu_pct"), "api_cpu_pct": med("api_cpu_pct"),
            "redis_cpu_pct": med("redis_cpu_pct"),
            "sources_sampled": {k: sum(r["sources_sampled"].get(k, 0) for r in items)
                                for k in {s for r in items for s in r["sources_sampled"]}},
        })  # fmt: skip
        phases = [r["writer_phase"] for r in items if r.get("writer_phase")]
        if phases:
            rows[-1]["writer_phase"] = {part: {key: _median_of(p[part][key] for p in phases) for key in ("share", "p50_ms", "p99_ms")}
                                        for part in ("during_write", "between_writes")}  # fmt: skip
    return rows


# --------------------------------------------------------------------------- #
# Feature reads: read_inputs against Feast
# --------------------------------------------------------------------------- #


def feast_python(explicit: str | None) -> Path:
    """The Feast interpreter: --feast-python, else bench/.venv-feast (created with pip on first use)."""
    if explicit:
        return Path(explicit)
    python = FEAST_VENV / "bin" / "python"
    ok = python.exists() and subprocess.run([str(python), "-c", "import feast"], capture_output=True).returncode == 0
    if not ok:
        log.info("creating %s with pip install \"feast[redis]\" (first use; a few minutes)", FEAST_VENV)
        subprocess.run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", str(FEAST_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "feast[redis]"], check=True)
    return python


def _jsonable(values: dict | None) -> dict | None:
    return None if values is None else {k: v for k, v in values.items() if k != "_ts"}


def feature_reads(settings: Settings, live: LiveFeatures, user: int, candidates: np.ndarray, catalogue, neighbours,
                  iterations: int, warmup: int, python: Path, work: Path) -> dict[str, Any]:  # fmt: skip
    """`read_inputs` (no product cache) for one user + POOL products, then Feast reading the same values,
    `iterations` times each."""
    from feature_store.online import OnlineStore
    from spark_jobs.ranker.features import PRODUCT_READS
    from spark_jobs.ranker.serving import read_inputs

    store = OnlineStore.from_url(settings.redis_url)
    scores = np.zeros(len(candidates), np.float32)

    def ours():
        return read_inputs(store, user_id=user, session_id=None, candidates=candidates, als_scores=scores,
                           at=time.time(), catalogue=catalogue, neighbours=neighbours)  # fmt: skip

    with live.paused():
        for _ in range(warmup):
            inputs = ours()
        times = []
        for _ in range(iterations):
            t = time.perf_counter()
            inputs = ours()
            times.append((time.perf_counter() - t) * 1000)
    ours_result = {"iterations": iterations, "median_ms": statistics.median(times),
                   "p99_ms": float(np.percentile(times, 99)), "mean_ms": statistics.fmean(times),
                   "keys": 2 + 5 * len(candidates)}  # fmt: skip

    def fields(group: FeatureGroup) -> list[list[str]]:
        return [[f.name, f.dtype.value] for f in group.features]

    ids = [int(p) for p in candidates]
    views: dict[str, Any] = {
        "user_2m": {"entity": "user", "fields": fields(USER_2M), "rows": [[user, _jsonable(inputs.user_2m)]]},
        "user_profile": {"entity": "user", "fields": fields(USER_PROFILE), "rows": [[user, _jsonable(inputs.profile)]]},
    }
    with live.paused():
        at = time.time()
        for name, group, back in PRODUCT_READS:  # the values Feast is loaded with
            views[name] = {"entity": "product", "fields": fields(group),
                           "rows": [[p, _jsonable(v)] for p, v in zip(ids, store.read_many(group, ids, at - back))]}  # fmt: skip
    spec = {"redis": f"127.0.0.1:{settings.redis_url.rsplit(':', 1)[1].split('/')[0]},db=0",
            "entities": {"user": "user_id", "product": "product_id"}, "views": views, "user_id": user,
            "product_ids": ids, "iterations": iterations, "warmup": warmup}  # fmt: skip
    spec_path = work / "feast_spec.json"
    spec_path.write_text(json.dumps(spec))
    with live.paused():
        out = subprocess.run([str(python), str(FEAST_WORKER), str(spec_path)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"the Feast worker failed:\n{out.stderr[-3000:]}")
    feast_result = json.loads(out.stdout.strip().splitlines()[-1])
    result = {"ours": ours_result, "feast": feast_result,
              "feast_over_ours_median": feast_result["median_ms"] / ours_result["median_ms"]}  # fmt: skip
    log.info("feature read, 1 user + %d products: read_inputs median %.2f ms p99 %.2f; Feast %s median %.2f ms p99 %.2f",
             len(ids), ours_result["median_ms"], ours_result["p99_ms"], feast_result["feast_version"],
             feast_result["median_ms"], feast_result["p99_ms"])  # fmt: skip
    return result


# --------------------------------------------------------------------------- #
# The run
# --------------------------------------------------------------------------- #


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def small_scale(args, tmp: Path, settings: Settings, redis_pid: int, python: Path | None) -> dict[str, Any]:
    from feature_store.online import OnlineStore
    from services.api.registry import CandidateSet
    from spark_jobs.candidates.als_implicit import ALSParams
    from spark_jobs.candidates.job import CandidateParams, run_candidates
    from spark_jobs.ranker.job import materialize_profiles

    artifacts = open_artifacts(settings)
    started = time.perf_counter()
    events = synthetic_events(tmp, args.users, args.days)
    candidates = run_candidates(events, artifacts, settings, CandidateParams(als=ALSParams(), progress=False),
                                source="bench.api_latency").version  # fmt: skip
    ranker = publish_random_ranker(artifacts, args.ranker_rounds)
    profiles = materialize_profiles(settings, events)
    cands = CandidateSet.load(artifacts, candidates)
    store = OnlineStore.from_url(settings.redis_url)
    # bench users: known to ALS, none of their POOL candidates bought (so all POOL are reranked)
    rng = np.random.default_rng(3)
    users, lists = [], []
    for u in rng.permutation(cands.user_ids).tolist():
        profile = store.read(USER_PROFILE, u)
        ids = pick_candidates(cands.user_vector(u)[None, :], cands.item_factors, cands.item_product_ids)[0]
        if profile is None or len(ids) < POOL or set(profile.get("bought_products") or []) & set(ids.tolist()):
            continue
        users.append(int(u))
        lists.append(ids)
        if len(users) == args.bench_users:
            break
    lists = np.vstack(lists)
    catalogue_table = artifacts.read_table("candidates", "products.parquet", candidates)
    live = LiveFeatures(settings, users, np.unique(lists), catalogue_table, every=args.refresh,
                        parts=max(1, round(args.live_cycle / args.refresh)))
    live.seed()
    setup_s = time.perf_counter() - started
    neighbours = cands.neighbours["also_viewed"]
    result: dict[str, Any] = {
        "events": events.num_rows, "users": len(cands.user_ids), "products": len(cands.item_product_ids),
        "candidates_version": candidates, "ranker_version": ranker, "profiles_written": profiles,
        "bench_users": len(users), "live_products": len(live.products), "setup_s": round(setup_s, 1),
    }  # fmt: skip
    live.start()
    api = Api(settings, tmp / "api-small.log", workers=args.workers)
    try:
        result["hits_before"] = read_hits(store, users[:20], lists[:20], cands.catalogue, neighbours)
        api.start()
        result["api_startup_s"] = round(api.startup_s, 2)
        result["memory_after_start"] = memory_mb(api.proc.pid)
        status, body = get_json(f"{api.base}/recommendations/{users[0]}?k=10")
        result["sample_response"] = {"status": status, "source": body and body["source"],
                                     "fallbacks": body and body["fallbacks"], "items": body and len(body["items"]),
                                     "model_version": body and body["model_version"]}  # fmt: skip
        sources = [get_json(f"{api.base}/recommendations/{u}?k=10")[1]["source"] for u in users]
        result["sources_all_users"] = {s: sources.count(s) for s in set(sources)}
        result["loads"] = load_phases(api, redis_pid, users, closed=args.closed, rates=args.rates,
                                      health_closed=args.health_closed, health_rates=args.health_rates,
                                      duration=args.duration, warmup=args.warmup, reps=args.reps, live=live)  # fmt: skip
        result["summary"] = summarise(result["loads"])
        result["memory_after_load"] = memory_mb(api.proc.pid)
        result["hits_after"] = read_hits(store, users[:20], lists[:20], cands.catalogue, neighbours)
    finally:
        api.stop()
    if python is not None:
        result["feature_read"] = feature_reads(settings, live, users[0], lists[0], cands.catalogue, neighbours,
                                               args.feature_iterations, 50, python, tmp)  # fmt: skip
    live.stop()
    result["live_writes"] = live.summary()
    return result


def october_scale(args, tmp: Path, settings: Settings, redis_pid: int) -> dict[str, Any]:
    from feature_store.online import OnlineStore
    from spark_jobs.candidates.catalogue import Catalogue
    import scipy.sparse as sp

    from spark_jobs.candidates.item_item import ItemNeighbours

    oct_settings = settings.model_copy(update={"artifacts_url": f"file://{tmp / 'october-artifacts'}",
                                               "lake_url": f"file://{tmp / 'october-lake'}"})  # fmt: skip
    artifacts = open_artifacts(oct_settings)
    started = time.perf_counter()
    built = write_october_candidates(artifacts, args.october_users, args.october_products, 64, args.october_neighbours)
    copy_latest(open_artifacts(settings), artifacts, "ranker")
    rng = np.random.default_rng(4)
    rows = np.sort(rng.choice(args.october_users, args.october_bench_users, replace=False))
    users = built["user_ids"][rows].tolist()
    lists = pick_candidates(built["user_factors"][rows], built["item_factors"], built["product_ids"])
    catalogue_table = built["catalogue"]
    del built  # the driver's copy of the factors
    store = OnlineStore.from_url(settings.redis_url)
    store.client.flushdb()
    now = time.time()
    profiles = []
    for u, ids in zip(users, lists):
        seen = rng.choice(ids, 20, replace=False).tolist()
        profiles.append({
            "entity_id": u, "as_of": now - 3_600, "events": 120, "views": 110, "carts": 6, "purchases": 4, "sessions": 9,
            "purchase_sessions": 2, "mean_price": 80.0,
            "category_shares": {str(c): 0.1 for c in catalogue_table["category_id"].take(pa.array(rng.integers(0, len(catalogue_table), 5))).to_pylist()},
            "brand_shares": {f"brand{b}": 0.1 for b in rng.integers(0, 3_000, 5)},
            "product_last_seen": {str(p): now - 7_200 for p in seen}, "category_last_seen": {},
            "bought_products": [],
        })  # fmt: skip
    store.write_entities(USER_PROFILE, profiles)
    products = np.unique(lists)
    live = LiveFeatures(oct_settings, users, products,
                        catalogue_table.take(pa.array(np.searchsorted(catalogue_table["product_id"].to_numpy(), products))),
                        every=args.refresh, parts=max(1, round(args.october_live_cycle / args.refresh)))  # fmt: skip
    live.seed()
    result: dict[str, Any] = {
        "users": args.october_users, "products": args.october_products, "factors": 64,
        "neighbours_per_product_and_kind": args.october_neighbours, "candidates_version": built_version(artifacts),
        "bench_users": len(users), "live_products": len(products), "setup_s": round(time.perf_counter() - started, 1),
    }  # fmt: skip
    live.start()
    api = Api(oct_settings, tmp / "api-october.log", workers=args.october_workers)
    try:
        api.start()
        result["api_startup_s"] = round(api.startup_s, 2)
        result["memory_after_start"] = memory_mb(api.proc.pid)
        sources = [get_json(f"{api.base}/recommendations/{u}?k=10")[1]["source"] for u in users]
        result["sources_all_users"] = {s: sources.count(s) for s in set(sources)}
        cat = Catalogue(catalogue_table)
        nb = ItemNeighbours(similarity=sp.csr_matrix((1, 1), dtype=np.float32),
                            item_ids=np.asarray([0], np.int64), kind="also_viewed")  # not read by read_inputs' Redis reads
        result["hits"] = read_hits(store, users[:10], lists[:10], cat, nb)
        result["loads"] = load_phases(api, redis_pid, users, closed=args.october_closed, rates=args.october_rates,
                                      health_closed=[], health_rates=[], duration=args.duration, warmup=args.warmup,
                                      reps=args.october_reps, live=live)  # fmt: skip
        result["summary"] = summarise(result["loads"])
        result["memory_after_load"] = memory_mb(api.proc.pid)
    finally:
        api.stop()
        live.stop()
    result["live_writes"] = live.summary()
    return result


def built_version(artifacts: Artifacts) -> str:
    return artifacts.latest("candidates")


def print_table(result: dict[str, Any]) -> None:
    for scale in ("small", "october"):
        part = result.get(scale)
        if not part:
            continue
        print(f"\n{scale}: {part['users']:,} users x {part['products']:,} products")
        print("| endpoint | load | req/s | p50 ms | p90 ms | p99 ms | errors | client CPU | API CPU | Redis CPU |")
        print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for row in part["summary"]:
            load = f"closed, {row['level']} clients" if row["mode"] == "closed" else f"open, {row['level']} req/s"
            print(f"| {row['endpoint']} | {load} | {row['throughput_rps']:,.0f} | {row['p50_ms']:.1f} | {row['p90_ms']:.1f} "
                  f"| {row['p99_ms']:.1f} | {row['errors']} | {row['client_cpu_pct']:.0f}% | {row['api_cpu_pct']:.0f}% "
                  f"| {row['redis_cpu_pct']:.0f}% |")  # fmt: skip
        for row in part["summary"]:
            if phase := row.get("writer_phase"):
                during, between = phase["during_write"], phase["between_writes"]
                print(f"{row['endpoint']} at {row['level']} req/s: p99 {_ms(during['p99_ms'])} ms for the "
                      f"{100 * (during['share'] or 0):.0f}% sent while the live writer wrote a batch, "
                      f"{_ms(between['p99_ms'])} ms for the others")  # fmt: skip
        print(f"answered by: {part['sources_all_users']}; read hits: {part.get('hits_after') or part.get('hits')}")
        mem = part["memory_after_load"]
        print(f"API RSS after load {mem['rss_mb']:,.0f} MB, peak {mem['peak_rss_mb']:,.0f} MB; start-up {part['api_startup_s']} s")
    reads = result.get("small", {}).get("feature_read")
    if reads:
        print(f"\nfeature read, 1 user + {POOL} products: read_inputs median {reads['ours']['median_ms']:.2f} ms, "
              f"p99 {reads['ours']['p99_ms']:.2f} ms; Feast {reads['feast']['feast_version']} median "
              f"{reads['feast']['median_ms']:.2f} ms, p99 {reads['feast']['p99_ms']:.2f} ms")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loadgen", help=argparse.SUPPRESS)  # the load generator's own process
    parser.add_argument("--workers", type=int, default=2, help="API worker processes at small scale (API_WORKERS)")
    parser.add_argument("--users", type=int, default=2_000, help="synthetic users (small scale)")
    parser.add_argument("--days", type=int, default=3, help="synthetic days (small scale)")
    parser.add_argument("--bench-users", type=int, default=100, help="users the load cycles through")
    parser.add_argument("--ranker-rounds", type=int, help="boosting rounds of the benchmark ranker (default: XGBParams')")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per load phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each phase")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of every small-scale phase (medians recorded)")
    parser.add_argument("--closed", type=int, nargs="+", default=[1, 4, 16], help="closed-loop clients, /recommendations")
    parser.add_argument("--rates", type=int, nargs="+", default=[20, 50, 200], help="open-loop req/s, /recommendations")
    parser.add_argument("--health-closed", type=int, nargs="+", default=[16], help="closed-loop clients, /health")
    parser.add_argument("--health-rates", type=int, nargs="+", default=[200], help="open-loop req/s, /health")
    parser.add_argument("--refresh", type=float, default=1.0, help="seconds between live-feature batches (the stream's trigger)")
    parser.add_argument("--live-cycle", type=float, default=10.0,
                        help="small scale: seconds in which every candidate product and bench user gets one live event "
                             "(under the two-minute window, so every read finds a current window)")
    parser.add_argument("--october-live-cycle", type=float, default=100.0,
                        help="the same at October scale (10,000 candidate products: 100 s is 96 events a second, about "
                             "six times October 2019's mean of 15.8; 10 s, the earlier setting, was 60 times)")
    parser.add_argument("--feature-iterations", type=int, default=1_000, help="reads timed per side (ours, Feast)")
    parser.add_argument("--feast-python", help="a Python with feast[redis] (default: bench/.venv-feast, created on first use)")
    parser.add_argument("--no-feast", action="store_true", help="skip the Feast comparison")
    parser.add_argument("--no-october", action="store_true", help="skip the October-2019-scale part")
    parser.add_argument("--october-workers", type=int, default=2,
                        help="API workers at October scale (each loads the artifacts; two peak at 1.9 GB together)")
    parser.add_argument("--october-users", type=int, default=3_000_000)
    parser.add_argument("--october-products", type=int, default=167_000)
    parser.add_argument("--october-neighbours", type=int, default=50, help="neighbours per product and kind")
    parser.add_argument("--october-bench-users", type=int, default=50)
    parser.add_argument("--october-closed", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--october-rates", type=int, nargs="+", default=[200])
    parser.add_argument("--october-reps", type=int, default=1)
    parser.add_argument("--no-record", action="store_true", help="print only; do not write the results file")
    args = parser.parse_args()
    if args.loadgen:
        loadgen_main(args.loadgen)
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `finally` blocks stop what we started
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("implicit", "spark_jobs", "feature_store", "services"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from spark_jobs.ranker.model import XGBParams

    xgb_params = XGBParams()
    args.ranker_rounds = args.ranker_rounds or xgb_params.num_boost_round
    python = None if args.no_feast else feast_python(args.feast_python)
    result: dict[str, Any] = {
        "benchmark": "GET /recommendations (ALS top 200 -> XGBoost rerank) beside GET /health and Feast reads",
        "command": " ".join([".venv/bin/python -m bench.api_latency", *sys.argv[1:]]),
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "loadavg_start": loadavg(),
        "setup": {
            "server": f"clickrec api (uvicorn, {args.workers} worker process(es) at small scale and "
                      f"{args.october_workers} at October scale, each on its own SO_REUSEPORT socket, "
                      "uvloop + httptools), LOG_LEVEL=WARNING, "
                      "user factors memory-mapped (API_FACTOR_DIR)",
            "client": "separate process: closed loop wrk (1 thread, keep-alive); open loop aiohttp on uvloop "
                      f"({OPEN_LOOP_CLIENTS} client sessions in turn), "
                      "timed from the scheduled send",
            "ranker": f"XGBoost rank:ndcg, depth {xgb_params.max_depth}, {args.ranker_rounds} rounds, trained on random "
                      "features (FEATURES order) "
                      "and published with spark_jobs.ranker.model.publish",
            "online_features": f"spark_jobs.stream.process_batch on live events every {args.refresh:g} s, paced as the "
                               "stream paces a caught-up batch (STREAM_REDIS_SHARE, STREAM_PACE_FRACTION), each batch "
                               "for a slice of the products and users in turn: each gets an event every "
                               f"{args.live_cycle:g} s ({args.october_live_cycle:g} s at October scale), so every "
                               "candidate and bench user has current windows; profiles via materialize_profiles",
            "request": "/recommendations/{user}?k=10, no session_id; pool 200 ALS candidates, none bought, all reranked",
        },
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="clickrec-bench-api-") as tmp_name:
        tmp = Path(tmp_name)
        with private_redis(tmp) as server:
            settings, redis_pid = server.settings, server.pid
            result["small"] = small_scale(args, tmp, settings, redis_pid, python)
            result["loadavg_after_small"] = loadavg()
            if not args.no_october:
                result["october"] = october_scale(args, tmp, settings, redis_pid)
    result["loadavg_end"] = loadavg()
    print_table(result)
    if not args.no_record:
        RESULTS.write_text(json.dumps(result, indent=2, default=str) + "\n")
        log.info("recorded in %s", RESULTS.relative_to(PROJECT_ROOT))


if __name__ == "__main__":
    main()
