"""The Feast half of `bench.api_latency`: write the same feature values with Feast, time `get_online_features`.

Runs in its own interpreter (Feast is not a clickrec dependency: `bench.api_latency`
creates bench/.venv-feast with ``pip install "feast[redis]"`` on first use) and
imports nothing from clickrec. Input: a JSON file (argv[1]) with the Redis
address, the groups with their fields and dtypes, one user's and N products'
values, and the iterations; output: one JSON object on stdout.

A Feast repo is declared in code in a temporary directory (one entity per
clickrec entity, one feature view per clickrec group, a Redis online store on
the same server the API reads), the values are written with
`write_to_online_store`, then one `get_online_features` call reads one user plus
N products, as `read_inputs` does, `iterations` times.
"""

from __future__ import annotations

import json
import logging
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
from feast import Entity, FeatureStore, FeatureView, Field, FileSource, RepoConfig
from feast.infra.online_stores.redis import RedisOnlineStoreConfig
from feast.types import Array, Float64, Int64, String
from feast.value_type import ValueType

#: clickrec dtype -> (Feast type, value for a missing one: Feast rows carry a value per field).
DTYPES = {
    "int": (Int64, 0),
    "float": (Float64, 0.0),
    "timestamp": (Float64, 0.0),
    "string": (String, ""),
    "json": (String, "{}"),
    "int_list": (Array(Int64), []),
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="clickrec-feast-") as tmp:
        root = Path(tmp)
        now = datetime.now(timezone.utc)
        entities = {
            name: Entity(name=name, join_keys=[key], value_type=ValueType.INT64)
            for name, key in spec["entities"].items()
        }
        views, frames = [], {}
        for view, info in spec["views"].items():
            fields = [Field(name=f, dtype=DTYPES[d][0]) for f, d in info["fields"]]
            key = spec["entities"][info["entity"]]
            rows = []
            for entity_id, values in info["rows"]:
                row = {key: entity_id, "event_timestamp": now}
                for f, d in info["fields"]:
                    value = values.get(f) if values else None
                    row[f] = DTYPES[d][1] if value is None else (json.dumps(value) if d == "json" else value)
                rows.append(row)
            frame = pd.DataFrame(rows)
            source_path = root / f"{view}.parquet"
            frame.to_parquet(source_path)  # an offline source Feast requires; never read here
            frames[view] = frame
            views.append(FeatureView(
                name=view, entities=[entities[info["entity"]]], ttl=timedelta(days=30), schema=fields, online=True,
                source=FileSource(name=f"{view}_source", path=str(source_path), timestamp_field="event_timestamp"),
            ))  # fmt: skip
        config = RepoConfig(
            project="clickrec_bench",
            registry=str(root / "registry.db"),
            provider="local",
            online_store=RedisOnlineStoreConfig(connection_string=spec["redis"]),
            entity_key_serialization_version=3,
            repo_path=str(root),
        )
        store = FeatureStore(config=config)
        store.apply([*entities.values(), *views])
        started = time.perf_counter()
        for view, frame in frames.items():
            store.write_to_online_store(view, frame)
        write_s = time.perf_counter() - started

        features = [f"{view}:{f}" for view, info in spec["views"].items() for f, _ in info["fields"]]
        user_key, product_key = spec["entities"]["user"], spec["entities"]["product"]
        entity_rows = [{user_key: spec["user_id"], product_key: p} for p in spec["product_ids"]]

        def read() -> dict:
            return store.get_online_features(features=features, entity_rows=entity_rows, full_feature_names=True).to_dict()

        for _ in range(spec["warmup"]):
            result = read()
        times = []
        for _ in range(spec["iterations"]):
            t = time.perf_counter()
            result = read()
            times.append((time.perf_counter() - t) * 1000)
        # a read "hits" when Feast returned a value for the view's first field
        hits = {view: sum(v is not None for v in result[f"{view}__{info['fields'][0][0]}"])
                for view, info in spec["views"].items()}  # fmt: skip
        import feast

        print(json.dumps({
            "feast_version": feast.__version__,
            "iterations": len(times),
            "median_ms": statistics.median(times),
            "p99_ms": percentile(times, 99),
            "mean_ms": statistics.fmean(times),
            "rows": len(entity_rows),
            "features": len(features),
            "write_s": write_s,
            "first_field_non_null": hits,
        }))  # fmt: skip
        store.teardown()  # removes Feast's keys from Redis


if __name__ == "__main__":
    main()
