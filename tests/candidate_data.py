"""Builders for the candidates / evaluation tests: typed event tables with planted structure."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa

from producer.schema import EVENT_SCHEMA

T0 = datetime(2019, 10, 1, tzinfo=timezone.utc)


def events(rows: list[dict]) -> pa.Table:
    """A typed event table from short dicts: user, product, at (datetime or seconds after T0), type, session, category."""
    cols: dict[str, list] = {name: [] for name in EVENT_SCHEMA.names}
    for n, row in enumerate(rows):
        at = row.get("at", 0)
        cols["event_time"].append(at if isinstance(at, datetime) else T0 + timedelta(seconds=at))
        cols["event_type"].append(row.get("type", "view"))
        cols["product_id"].append(row["product"])
        cols["category_id"].append(row.get("category", 1))
        cols["category_code"].append(row.get("category_code"))
        cols["brand"].append(None)
        cols["price"].append(1.0)
        cols["user_id"].append(row["user"])
        cols["user_session"].append(row.get("session", f"s-{row['user']}"))
        cols["event_id"].append(f"e{n}")
        cols["source"].append("replay")
    return pa.table(cols, schema=EVENT_SCHEMA)


def planted_clusters(
    *, groups: int = 10, users_per_group: int = 40, items_per_group: int = 30, popular_items: int = 20,
    per_user: int = 12, seed: int = 0,
) -> tuple[pa.Table, pa.Table]:
    """(train, test) events: each user group likes its own item cluster; everyone also views a few globally
    popular items. Test = two unseen items of the user's own cluster, one day after training.

    A model of the individual user (ALS, item-kNN) finds the cluster; popularity cannot.
    """
    rng = np.random.default_rng(seed)
    train, test = [], []
    for g in range(groups):
        cluster = 1_000 + g * items_per_group + np.arange(items_per_group)
        for u in range(users_per_group):
            user = 10_000 + g * users_per_group + u
            picks = rng.choice(cluster, size=per_user + 2, replace=False)
            for n, item in enumerate(picks[:per_user]):
                train.append({"user": user, "product": int(item), "at": 3600 * (n % 20) + u, "session": f"s{user}-{n // 4}"})
            for n in range(6):  # popular noise: heavy traffic on a few items
                item = int(rng.integers(0, popular_items)) + 1
                train.append({"user": user, "product": item, "at": 3600 * n + 7, "session": f"p{user}-{n}"})
            for item in picks[per_user:]:
                test.append({"user": user, "product": int(item), "at": 86_400 * 2 + u, "session": f"t{user}"})
    return events(train), events(test)


def recall_of(model, interactions, test: pa.Table, k: int = 20) -> float:
    """Recall@k of `model`'s top-k (seen items excluded) against the users' `test` items."""
    from spark_jobs.candidates.als_implicit import recommend_top_n
    from spark_jobs.evaluation.metrics import evaluate_lists

    truth: dict[int, set] = {}
    for row in test.to_pylist():
        truth.setdefault(row["user_id"], set()).add(row["product_id"])
    users = interactions.user_index(list(truth))
    u, i, _ = recommend_top_n(model, k, seen=interactions.matrix, users=users, progress=False, num_threads=1)
    lists = {int(x): [] for x in users}
    for uu, ii in zip(u.tolist(), interactions.item_ids[i].tolist()):
        lists[uu].append(ii)
    return evaluate_lists([lists[int(x)] for x in users], list(truth.values()), k)[f"recall@{k}"]
