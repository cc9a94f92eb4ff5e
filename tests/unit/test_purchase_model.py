"""The session purchase model: leak guards, hand-checked features, metrics, split, training, artifact round trip."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from feature_store.artifacts import Artifacts, LocalBlobStore
from feature_store.lake import load_events
from feature_store.settings import Settings
from producer.schema import EVENT_SCHEMA
from producer.synth import SynthConfig, write_synthetic_csv
from spark_jobs.boosters import FeatureMismatch
from spark_jobs.purchase_model import features as F
from spark_jobs.purchase_model import model as M
from spark_jobs.purchase_model.metrics import average_precision, classification_report, roc_auc

T0 = datetime(2019, 10, 5, 10, 0, tzinfo=timezone.utc)


def click(user: int, session: str, product: int, seconds: float, type: str = "view", price: float = 100.0, category: int | None = 7) -> dict:
    return {
        "event_time": T0 + timedelta(seconds=seconds), "event_type": type, "product_id": product, "category_id": category,
        "category_code": None, "brand": None, "price": price, "user_id": user, "user_session": session,
        "event_id": f"{abs(hash((user, session, product, seconds, type))) % 2**64:016x}", "source": "replay",
    }  # fmt: skip


def table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=EVENT_SCHEMA)


def session_rows(prefix: str = "s", user: int = 1, start: float = 0.0) -> list[dict]:
    """view p1, view p2, view p1 again, cart p1, view p3, purchase p1, view p4."""
    return [
        click(user, prefix, 1, start + 0, price=100.0),
        click(user, prefix, 2, start + 30, price=300.0, category=8),
        click(user, prefix, 1, start + 50, price=100.0),
        click(user, prefix, 1, start + 60, "cart", price=100.0),
        click(user, prefix, 3, start + 90, price=20.0),
        click(user, prefix, 1, start + 200, "purchase", price=100.0),
        click(user, prefix, 4, start + 230, price=50.0),
    ]


# --------------------------------------------------------------------------- #
# Hand-checked features
# --------------------------------------------------------------------------- #


def test_features_by_hand() -> None:
    f = F.session_features(session_rows()[:4], F.UserHistory(sessions=2, purchase_sessions=1, purchases=3, views=10, carts=4))
    # after view p1, view p2, view p1, cart p1 (10:01:00 UTC)
    expected = {
        "events_so_far": 4, "views": 3, "carts": 1, "removes": 0, "purchases_so_far": 0, "distinct_products": 2,
        "distinct_categories": 2, "max_views_one_product": 2, "duration_s": 60, "last_gap_s": 10,
        "mean_price_viewed": (100 + 300 + 100) / 3, "max_price_viewed": 300, "hour_utc": 10, "carted": 1,
        "cart_value": 100, "last_is_cart": 1, "events_since_last_cart": 0,
        "past_sessions": 2, "past_purchase_sessions": 1, "past_purchases": 3, "past_views": 10, "past_cart_rate": 0.4,
    }  # fmt: skip
    assert list(f) == list(F.FEATURES)
    assert f == pytest.approx(expected)


def test_first_event_and_unknown_history_are_nan_not_zero() -> None:
    f = F.session_features([click(1, "s", 1, 0, "cart")])
    assert math.isnan(f["last_gap_s"]) and math.isnan(f["mean_price_viewed"]) and math.isnan(f["max_price_viewed"])
    assert all(math.isnan(f[name]) for name in F.HISTORY_FEATURES)
    assert math.isnan(F.UserHistory(sessions=1).features()["past_cart_rate"])  # no past views


def test_session_features_accepts_unordered_text_times_and_drops_repeated_rows() -> None:
    rows = session_rows()[:4]
    as_text = [{**r, "event_time": r["event_time"].strftime("%Y-%m-%d %H:%M:%S UTC")} for r in rows]
    shuffled = [as_text[3], as_text[0], as_text[3], as_text[2], as_text[1]]  # the cart twice
    assert F.session_features(shuffled) == pytest.approx(F.session_features(rows), nan_ok=True)


def test_cart_before_a_same_second_purchase() -> None:
    rows = [click(1, "s", 1, 0), click(1, "s", 1, 5, "purchase"), click(1, "s", 1, 5, "cart")]
    ordered = F.order_session(rows)
    assert [e["event_type"] for e in ordered] == ["view", "cart", "purchase"]


# --------------------------------------------------------------------------- #
# Leakage guards
# --------------------------------------------------------------------------- #


def test_prefix_rows_ignore_every_later_event() -> None:
    rows = session_rows()
    full = F.prefix_feature_matrix(*F._arrays(F.order_session(rows)))
    rng = np.random.default_rng(0)
    for k in range(len(rows)):
        online = F.session_features(rows[: k + 1])
        assert [online[n] for n in F.SESSION_FEATURES] == pytest.approx(full[k].tolist(), nan_ok=True)
        # rewrite everything after k: other types (purchases), prices, products, and extra events
        later = [
            {**r, "event_type": "purchase", "price": float(rng.uniform(1, 5000)), "product_id": int(rng.integers(100, 200))}
            for r in rows[k + 1 :]
        ] + [click(1, "s", 999, 10_000, "purchase", price=9999.0)]
        mutated = F.prefix_feature_matrix(*F._arrays(F.order_session(rows[: k + 1] + later)))
        np.testing.assert_array_equal(mutated[: k + 1], full[: k + 1])


def test_a_purchase_is_never_an_input_of_its_own_prediction_point() -> None:
    rows = session_rows("s", start=0) + session_rows("t", user=2, start=5000)
    full = F.build_training_set(table(rows), max_points_per_session=None)
    s = full[full["user_session"] == "s"].set_index("point_index")
    purchase_at = 5  # the purchase of p1 is event 5 of session s
    # the point right before it is positive and carries no purchase among its inputs
    assert s.loc[purchase_at - 1, "label"] == 1
    assert s.loc[purchase_at - 1, "purchases_so_far"] == 0
    # the purchase's own point onwards: nothing purchased later -> label 0
    assert list(s["label"]) == [1, 1, 1, 1, 1, 0, 0]
    # drop the purchase and everything after it: the earlier points keep the same inputs
    cut = F.build_training_set(table(rows[:purchase_at] + rows[7:]), max_points_per_session=None)
    cut_s = cut[cut["user_session"] == "s"].set_index("point_index")
    cols = list(F.FEATURES)
    np.testing.assert_array_equal(cut_s.loc[: purchase_at - 1, cols].to_numpy(), s.loc[: purchase_at - 1, cols].to_numpy())


def test_training_rows_equal_the_online_features_of_the_prefix() -> None:
    rows = session_rows("a", user=1, start=0) + session_rows("b", user=1, start=3600) + session_rows("c", user=2, start=100)
    training = F.build_training_set(table(rows), max_points_per_session=None)
    frame = F.events_frame(table(rows))
    for row in training.itertuples(index=False):
        events = F.session_events(frame, row.user_session)
        history = {"a": F.UserHistory(), "c": F.UserHistory(), "b": F.UserHistory(sessions=1, purchase_sessions=1, purchases=1, views=5, carts=1)}
        online = F.session_features(events[: row.point_index + 1], history[row.user_session])
        assert [getattr(row, n) for n in F.FEATURES] == pytest.approx([online[n] for n in F.FEATURES], nan_ok=True)


def test_history_uses_only_events_before_the_session_start() -> None:
    first = session_rows("a", user=1, start=0)
    second = session_rows("b", user=1, start=3600)
    base = F.build_training_set(table(first + second), max_points_per_session=None)
    # the first session has no past even though it holds a purchase
    a = base[base["user_session"] == "a"]
    assert (a[["past_sessions", "past_purchases", "past_views"]].to_numpy() == 0).all()
    assert a["past_cart_rate"].isna().all()
    b = base[base["user_session"] == "b"]
    assert b[["past_sessions", "past_purchase_sessions", "past_purchases", "past_views", "past_cart_rate"]].iloc[0].tolist() == [1, 1, 1, 5, 0.2]
    # a later third session and extra events inside b change nothing in b's history
    extra = session_rows("c", user=1, start=7200) + [click(1, "b", 50, 3600 + 250, "purchase")]
    more = F.build_training_set(table(first + second + extra), max_points_per_session=None)
    b2 = more[more["user_session"] == "b"]
    hist = list(F.HISTORY_FEATURES)
    np.testing.assert_array_equal(b2[hist].to_numpy()[: len(b)], b[hist].to_numpy())


# --------------------------------------------------------------------------- #
# Metrics and split
# --------------------------------------------------------------------------- #


def test_metrics_against_hand_values() -> None:
    y, s = np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])
    # pairs (pos, neg): (0.35>0.1), (0.35<0.4), (0.8>0.1), (0.8>0.4) -> 3/4
    assert roc_auc(y, s) == pytest.approx(0.75)
    # ranked 0.8(+) 0.4(-) 0.35(+) 0.1(-): P@1 = 1 at R = .5, P@3 = 2/3 at R = 1 -> .5 + .5 * 2/3
    assert average_precision(y, s) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # ties count one half
    assert roc_auc(np.array([0, 1]), np.array([0.5, 0.5])) == pytest.approx(0.5)
    report = classification_report(np.array([0, 0, 0, 1]), np.array([0.1, 0.2, 0.6, 0.9]))
    assert report["accuracy"] == 0.75 and report["majority_accuracy"] == 0.75 and report["base_rate"] == 0.25


def test_temporal_split_by_days_keeps_sessions_on_one_side() -> None:
    rows = []
    for day in range(3):
        for i in range(4):
            rows += session_rows(f"d{day}s{i}", user=i, start=day * 86_400 + i * 3600)
    midnight = (datetime(2019, 10, 7, tzinfo=timezone.utc) - T0).total_seconds()
    rows += session_rows("late", user=9, start=midnight - 100)  # Oct 6 23:58:20 to Oct 7 00:02:10
    training = F.build_training_set(table(rows), max_points_per_session=None)
    train, test, split = M.temporal_split(training, test_days=1)
    assert split.cut == datetime(2019, 10, 7, tzinfo=timezone.utc).timestamp()
    assert (train["session_end"] < split.cut).all() and (test["session_start"] >= split.cut).all()
    assert set(train["user_session"]).isdisjoint(test["user_session"])
    assert "late" not in set(train["user_session"]) | set(test["user_session"])  # straddles the cut


# --------------------------------------------------------------------------- #
# Training on synthetic data, artifact round trip
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def synthetic_training_set(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("synth") / "clicks.csv"
    write_synthetic_csv(path, SynthConfig(users=3000, days=4, seed=11, duplicate_cart_share=0.05), progress=False)
    return F.build_training_set(load_events(Settings(_env_file=None), from_csv=path))


@pytest.fixture(scope="module")
def trained(synthetic_training_set) -> M.PurchaseModel:
    return M.train(synthetic_training_set)


def test_auc_on_synthetic_data_is_clearly_above_chance(trained: M.PurchaseModel) -> None:
    test = trained.metrics["test"]
    assert test["rows"] > 1000 and 0 < test["base_rate"] < 0.5
    assert test["auc"] > 0.6
    assert test["pr_auc"] > 1.5 * test["base_rate"]  # well above what a random ranking gets


def test_unknown_history_hides_whole_sessions_and_nothing_else(synthetic_training_set) -> None:
    rows = synthetic_training_set
    assert M.with_unknown_history(rows, 0.0) is rows
    masked = M.with_unknown_history(rows, 0.3, seed=1)
    history, session = list(F.HISTORY_FEATURES), list(F.SESSION_FEATURES)
    hidden = masked[history].isna().all(axis=1)
    by_session = hidden.groupby(masked["user_session"]).agg(["all", "any"])
    assert (by_session["all"] == by_session["any"]).all()  # a session loses all of its history or none
    assert 0.25 < by_session["all"].mean() < 0.35
    kept = ~hidden.to_numpy()
    np.testing.assert_array_equal(masked.loc[kept, history].to_numpy(), rows.loc[kept, history].to_numpy())
    np.testing.assert_array_equal(masked[session].to_numpy(), rows[session].to_numpy())


def test_a_user_without_a_profile_is_scored_by_a_learned_branch(trained: M.PurchaseModel) -> None:
    assert trained.params["unknown_history_share"] > 0
    unknown = trained.metrics["test_unknown_history"]
    assert unknown["rows"] == trained.metrics["test"]["rows"]
    assert unknown["auc"] > 0.6  # the session so far still tells a buyer from a browser


def test_model_artifact_round_trip(trained: M.PurchaseModel, synthetic_training_set, tmp_path: Path) -> None:
    artifacts = Artifacts(LocalBlobStore(tmp_path / "artifacts"))
    version = M.publish(trained, artifacts, {"source": "test"})
    loaded = M.load_model(artifacts)
    assert loaded.version == version and loaded.features == F.FEATURES
    assert loaded.metrics["test"]["auc"] == pytest.approx(trained.metrics["test"]["auc"])
    matrix = synthetic_training_set[list(F.FEATURES)].to_numpy(dtype=np.float32)[:500]
    np.testing.assert_allclose(loaded.predict(matrix), trained.predict(matrix), rtol=1e-6)
    features = F.session_features(session_rows()[:4], F.UserHistory(sessions=1, views=3, carts=1))
    p = M.score_session(features, loaded)
    assert 0.0 < p < 1.0 and p == pytest.approx(trained.score_session(features), rel=1e-6)
    meta = artifacts.read_json(M.ARTIFACT_KIND, M.META_FILE)
    assert meta["features"] == list(F.FEATURES) and meta["params"]["objective"] == "binary:logistic"


def test_a_model_with_another_feature_list_is_refused(trained: M.PurchaseModel, tmp_path: Path) -> None:
    artifacts = Artifacts(LocalBlobStore(tmp_path / "artifacts"))
    M.publish(trained, artifacts)
    version = artifacts.latest(M.ARTIFACT_KIND)
    meta = artifacts.read_json(M.ARTIFACT_KIND, M.META_FILE, version)
    meta["features"] = list(reversed(meta["features"]))
    artifacts.store.put(f"{M.ARTIFACT_KIND}/{version}/{M.META_FILE}", __import__("json").dumps(meta).encode())
    with pytest.raises(FeatureMismatch):
        M.load_model(artifacts)
    with pytest.raises(KeyError):
        F.feature_vector({"views": 1.0})
