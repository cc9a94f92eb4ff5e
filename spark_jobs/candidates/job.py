"""`clickrec train candidates`: events -> interactions -> ALS, item-item, popular -> one artifact version.

The job reads the events (a CSV, or the lake), builds the weighted interactions
once (bots out), trains ALS with the chosen engine, scores per-user top-N
lists, computes item-to-item neighbours and popular lists, and writes them all
under a new version of kind ``candidates``; ``LATEST`` moves only when every
file is written. The ALS factors and the index mappings are stored too, so the
API can score any known user on request when per-user lists are too big to
precompute (October 2019 has 3M users).

Files of a version:

| file | columns |
| --- | --- |
| user_candidates.parquet | user_id, product_id, score, rank |
| item_neighbours.parquet | product_id, neighbour_id, score, rank, kind (also_viewed / also_bought) |
| popular.parquet | window_days, metric, category_id (null = all), category_code, product_id, users, events, rank |
| products.parquet | product_id, category_id, category_code, brand, price (latest), views, carts, purchases, users |
| user_index.parquet / item_index.parquet | user_index -> user_id / item_index -> product_id |
| user_factors.parquet / item_factors.parquet | index, factors (fixed-size list of float32) |
| manifest.json | data range, parameters, engine, row counts, metrics, timings |
"""

from __future__ import annotations

import dataclasses
import logging
import platform
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from feature_store.artifacts import Artifacts, open_artifacts
from feature_store.lake import load_events
from feature_store.settings import Settings
from spark_jobs.candidates.catalogue import product_catalogue
from spark_jobs.candidates.als_implicit import ALSParams, FactorModel, recommend_top_n, train_implicit
from spark_jobs.candidates.interactions import InteractionParams, Interactions, build_interactions
from spark_jobs.candidates.item_item import ItemItemParams, item_neighbours
from spark_jobs.candidates.popular import PopularParams, popular_lists

log = logging.getLogger(__name__)

Engine = Literal["implicit", "spark"]
ENGINES: tuple[str, ...] = ("implicit", "spark")
KIND = "candidates"

FILES = (
    "user_candidates.parquet",
    "item_neighbours.parquet",
    "popular.parquet",
    "products.parquet",
    "user_index.parquet",
    "item_index.parquet",
    "user_factors.parquet",
    "item_factors.parquet",
    "manifest.json",
)


@dataclass(frozen=True)
class CandidateParams:
    """Every knob of the candidates job (the CLI exposes the common ones)."""

    engine: Engine = "implicit"
    top_n: int = 200  #: candidates per user
    exclude_seen: bool = False  #: drop items the user already interacted with (re-buys and re-views are common)
    max_user_lists: int | None = None  #: precompute lists for at most this many users (most engaged first); None = all
    interactions: InteractionParams = field(default_factory=InteractionParams)
    als: ALSParams = field(default_factory=ALSParams)
    item_item: ItemItemParams = field(default_factory=ItemItemParams)
    popular: PopularParams = field(default_factory=PopularParams)
    progress: bool = True

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}")
        if self.top_n < 1:
            raise ValueError("top_n must be >= 1")


@dataclass(frozen=True, eq=False)
class CandidateResult:
    version: str
    manifest: dict[str, Any]


def train_factors(interactions: Interactions, params: CandidateParams, settings: Settings, spark=None) -> FactorModel:
    """Train ALS with the chosen engine (a Spark session is opened from the settings when none is given)."""
    if params.engine == "implicit":
        return train_implicit(interactions.matrix, params.als, progress=params.progress)
    from spark_jobs.candidates.als_spark import train_spark

    if spark is not None:
        return train_spark(spark, interactions, params.als)
    from spark_jobs.session import spark_session

    session = spark_session("clickrec-candidates", settings)
    try:
        return train_spark(session, interactions, params.als)
    finally:
        session.stop()


def user_candidates_table(
    interactions: Interactions, model: FactorModel, params: CandidateParams
) -> tuple[pa.Table, float]:
    """Per-user top-N (user_id, product_id, score, rank) and the seconds it took."""
    started = time.perf_counter()
    users = None
    if params.max_user_lists is not None and params.max_user_lists < interactions.shape[0]:
        engagement = np.asarray(interactions.matrix.sum(axis=1)).ravel()
        users = np.sort(np.argsort(-engagement, kind="stable")[: params.max_user_lists])
    seen = interactions.matrix if params.exclude_seen else None
    u, i, s = recommend_top_n(model, params.top_n, seen=seen, users=users, num_threads=params.als.num_threads,
                              progress=params.progress)  # fmt: skip
    starts = np.r_[0, np.flatnonzero(np.diff(u)) + 1] if len(u) else np.empty(0, np.int64)
    rank = np.arange(len(u)) - np.repeat(starts, np.diff(np.r_[starts, len(u)])) + 1 if len(u) else np.empty(0)
    table = pa.table({
        "user_id": pa.array(interactions.user_ids[u]),
        "product_id": pa.array(interactions.item_ids[i]),
        "score": pa.array(s, pa.float32()),
        "rank": pa.array(rank.astype(np.int32)),
    })  # fmt: skip
    return table, time.perf_counter() - started


def _data_range(events: pa.Table) -> dict[str, Any]:
    if events.num_rows == 0:
        return {"events": 0, "start": None, "end": None}
    bounds = pc.min_max(events["event_time"]).as_py()
    return {"events": events.num_rows, "start": bounds["min"].isoformat(), "end": bounds["max"].isoformat()}


def _params_dict(params: CandidateParams) -> dict[str, Any]:
    out = dataclasses.asdict(params)
    out["interactions"]["weights"] = dict(params.interactions.weights)
    out.pop("progress", None)
    return out


def run_candidates(
    events: pa.Table,
    artifacts: Artifacts,
    settings: Settings,
    params: CandidateParams = CandidateParams(),
    *,
    bot_user_ids: Iterable[int] = (),
    source: str = "lake",
    spark=None,
) -> CandidateResult:
    """Compute everything from `events` and publish one `candidates` version; returns its id and manifest."""
    timings: dict[str, float] = {}

    def timed(name: str, started: float) -> None:
        timings[name] = round(time.perf_counter() - started, 3)
        log.info("%s: %.1f s", name, timings[name])

    t0 = time.perf_counter()
    interactions = build_interactions(events, params.interactions, bot_user_ids=bot_user_ids)
    timed("interactions", t0)
    if interactions.nnz == 0:
        raise ValueError("no interactions left after weighting and bot exclusion: nothing to train on")
    humans = events
    if interactions.bots:
        humans = events.filter(pc.invert(pc.is_in(events["user_id"], value_set=pa.array(sorted(interactions.bots), pa.int64()))))

    t = time.perf_counter()
    model = train_factors(interactions, params, settings, spark)
    timed("als_train", t)
    user_table, top_seconds = user_candidates_table(interactions, model, params)
    timings["top_n"] = round(top_seconds, 3)

    t = time.perf_counter()
    viewed = item_neighbours(humans, "also_viewed", params.item_item, progress=params.progress)
    bought = item_neighbours(humans, "also_bought", params.item_item, progress=params.progress)
    neighbours = pa.concat_tables([viewed.to_table(), bought.to_table()])
    timed("item_item", t)

    t = time.perf_counter()
    popular = popular_lists(humans, params.popular)
    catalogue = product_catalogue(humans)
    timed("popular", t)

    users_map, items_map = interactions.mapping_tables()
    user_factors, item_factors = model.factor_tables()
    listed_items = pc.count_distinct(user_table["product_id"]).as_py() if user_table.num_rows else 0
    manifest: dict[str, Any] = {
        "kind": KIND,
        "engine": params.engine,
        "source": source,
        "data": _data_range(events),
        "parameters": _params_dict(params),
        "rows": {
            "interactions": interactions.nnz,
            "users": interactions.shape[0],
            "items": interactions.shape[1],
            "bots_excluded": len(interactions.bots),
            "user_candidates": user_table.num_rows,
            "users_with_lists": pc.count_distinct(user_table["user_id"]).as_py()
            if user_table.num_rows else 0,
            "item_neighbours": {"also_viewed": viewed.similarity.nnz, "also_bought": bought.similarity.nnz},
            "popular": popular.num_rows,
            "products": catalogue.num_rows,
        },
        "metrics": {
            "candidate_catalogue_coverage": round(listed_items / max(interactions.shape[1], 1), 4),
            "interaction_density": round(interactions.nnz / max(interactions.shape[0] * interactions.shape[1], 1), 6),
            "items_with_neighbours": int((np.diff(viewed.similarity.indptr) > 0).sum()) if viewed.similarity.shape[0] else 0,
        },
        "timings_seconds": timings,
        "host": {"python": platform.python_version(), "machine": platform.machine()},
        "files": list(FILES),
    }
    t = time.perf_counter()
    with artifacts.new_version(KIND) as version:
        version.put_table("user_candidates.parquet", user_table)
        version.put_table("item_neighbours.parquet", neighbours)
        version.put_table("popular.parquet", popular)
        version.put_table("products.parquet", catalogue)
        version.put_table("user_index.parquet", users_map)
        version.put_table("item_index.parquet", items_map)
        version.put_table("user_factors.parquet", user_factors)
        version.put_table("item_factors.parquet", item_factors)
        timings["write"] = round(time.perf_counter() - t, 3)
        timings["total"] = round(time.perf_counter() - t0, 3)
        version.put_json("manifest.json", manifest)
    log.info("candidates version %s: %d user rows, %d neighbour rows, %d popular rows (engine %s, %.1f s)",
             version.version, user_table.num_rows, neighbours.num_rows, popular.num_rows, params.engine,
             timings["total"])  # fmt: skip
    return CandidateResult(version.version, manifest)


def train_candidates(
    settings: Settings,
    params: CandidateParams = CandidateParams(),
    *,
    from_csv: Path | None = None,
    bot_user_ids: Iterable[int] = (),
    spark=None,
) -> CandidateResult:
    """Load events (CSV or lake) and run the job against the settings' artifact store."""
    t = time.perf_counter()
    events = load_events(settings, from_csv=from_csv)
    log.info("loaded %d events from %s in %.1f s", events.num_rows, from_csv or settings.lake_url,
             time.perf_counter() - t)  # fmt: skip
    if events.num_rows == 0:
        raise ValueError(f"no events in {from_csv or settings.lake_url}")
    return run_candidates(events, open_artifacts(settings), settings, params, bot_user_ids=bot_user_ids,
                          source=str(from_csv) if from_csv else settings.lake_url, spark=spark)  # fmt: skip
