"""Train, evaluate, store, load and score the session purchase-probability model.

- `temporal_split`: train on sessions that *ended* before the cut, test on sessions
  that *started* at or after it (no session on both sides). The cut is the UTC
  midnight `test_days` before the last day when the data spans two or more days;
  for shorter data (the 3-hour real sample) it is the time by which
  `1 - test_share` of the sessions had started.
- `train`: XGBoost `binary:logistic`; early stopping on the latest
  `valid_share` of the *training* sessions (the test side is never looked at
  before the final evaluation); 10% of the fitting sessions train without
  their history, the case of a user the API has no profile for.
- `publish` / `load_model`: artifact kind ``purchase_model``: ``model.json``
  (the booster), ``model_meta.json`` (ordered feature list, params, metrics,
  split). `load_model` refuses a model whose feature list differs from `FEATURES`.
- `score_session(features, model)`: the request path (one dict -> one probability).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import xgboost as xgb

from feature_store.artifacts import Artifacts
from spark_jobs.boosters import DensePredictor, check_features, load_booster, publish_booster
from spark_jobs.purchase_model.features import FEATURES, HISTORY_FEATURES, feature_vector
from spark_jobs.purchase_model.metrics import classification_report

log = logging.getLogger(__name__)

ARTIFACT_KIND = "purchase_model"
MODEL_FILE = "model.json"
META_FILE = "model_meta.json"
DAY = 86_400.0

DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "binary:logistic",
    "eval_metric": ["aucpr", "auc"],
    "tree_method": "hist",
    "max_depth": 6,
    "eta": 0.08,
    "min_child_weight": 5,
    "subsample": 0.9,
    "colsample_bytree": 0.9,
    "lambda": 1.0,
    "nthread": 1,  # measured: 2 threads were 13x slower on a busy 2-core machine (OpenMP spinning)
    "seed": 0,
}


@dataclass(frozen=True)
class Split:
    cut: float  # unix seconds
    rule: str

    def describe(self) -> dict[str, Any]:
        return {"cut": datetime.fromtimestamp(self.cut, timezone.utc).isoformat(), "rule": self.rule}


def temporal_split(rows: pd.DataFrame, *, test_days: int = 1, test_share: float = 0.25) -> tuple[pd.DataFrame, pd.DataFrame, Split]:
    """(train, test, split): train = sessions ending before the cut, test = sessions starting at/after it."""
    first, last = float(rows["session_start"].min()), float(rows["session_start"].max())
    first_day, last_day = math.floor(first / DAY), math.floor(last / DAY)
    if last_day - first_day >= test_days:
        cut = (last_day - test_days + 1) * DAY
        rule = f"the last {test_days} UTC day(s) are the test set"
    else:
        starts = np.sort(rows.drop_duplicates("user_session")["session_start"].to_numpy())
        cut = float(starts[int(len(starts) * (1 - test_share))])
        rule = f"data spans less than {test_days + 1} days: the last {test_share:.0%} of sessions (by start) are the test set"
    train = rows[rows["session_end"] < cut]
    test = rows[rows["session_start"] >= cut]
    return train, test, Split(cut, rule)


@dataclass
class PurchaseModel:
    """A trained booster with its feature order; `score_session` is the request path."""

    booster: xgb.Booster
    features: tuple[str, ...] = FEATURES
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    version: str | None = None

    def __post_init__(self) -> None:
        check_features(self.features, FEATURES, f"purchase model {self.version or ''} (`clickrec train purchase-model`)")
        self.booster.set_param({"nthread": 1})  # one request = one small row: threads only add latency
        self._predict = DensePredictor(self.booster)

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        return self._predict(np.atleast_2d(matrix))

    def score_session(self, features: Mapping[str, float]) -> float:
        """P(the session holds a purchase after this point) for one feature dict (`FEATURES` names)."""
        return float(self.predict(feature_vector(features))[0])


def score_session(features: Mapping[str, float], model: PurchaseModel) -> float:
    """The purchase probability of one session prefix (features from `session_features`)."""
    return model.score_session(features)


def _matrix(rows: pd.DataFrame) -> np.ndarray:
    return rows[list(FEATURES)].to_numpy(dtype=np.float32)


def with_unknown_history(rows: pd.DataFrame, share: float, seed: int = 0) -> pd.DataFrame:
    """`rows` with the history features of a random `share` of sessions (all or none of a session's rows) made NaN.

    The API scores a user without a `user_profile` with unknown (NaN) history. A
    model that never saw NaN history sends it down a branch it never learned;
    training on some sessions without their history teaches it that case (the
    ranker drops sessions the same way).
    """
    if share <= 0 or rows.empty:
        return rows
    sessions = rows["user_session"].unique()
    hidden = sessions[np.random.default_rng(seed).random(len(sessions)) < share]
    out = rows.copy()
    out.loc[out["user_session"].isin(hidden), list(HISTORY_FEATURES)] = np.nan
    return out


def train(
    rows: pd.DataFrame,
    *,
    params: Mapping[str, Any] | None = None,
    rounds: int = 400,
    early_stopping: int = 30,
    test_days: int = 1,
    valid_share: float = 0.15,
    unknown_history_share: float = 0.1,
) -> PurchaseModel:
    """Split in time, fit, evaluate on the held-out later sessions; metrics land in `model.metrics`.

    A share of the fitting sessions lose their history (`with_unknown_history`);
    the test metrics are reported with every history known and with none.
    """
    started = time.perf_counter()
    params = {**DEFAULT_PARAMS, **(params or {})}
    train_rows, test_rows, split = temporal_split(rows, test_days=test_days)
    if train_rows.empty or test_rows.empty:
        raise ValueError("not enough data for a temporal split (need sessions before and after the cut)")
    # validation for early stopping: the latest sessions of the training side
    fit_rows, valid_rows, _ = temporal_split(train_rows, test_days=10**6, test_share=valid_share)
    if fit_rows.empty or valid_rows.empty or valid_rows["label"].nunique() < 2:
        fit_rows, valid_rows = train_rows, None
    fit_rows = with_unknown_history(fit_rows, unknown_history_share, seed=int(params.get("seed", 0)))
    dfit = xgb.DMatrix(_matrix(fit_rows), label=fit_rows["label"].to_numpy(), feature_names=list(FEATURES))
    evals = [(dfit, "train")]
    if valid_rows is not None:
        dvalid = xgb.DMatrix(_matrix(valid_rows), label=valid_rows["label"].to_numpy(), feature_names=list(FEATURES))
        evals.append((dvalid, "valid"))
    booster = xgb.train(
        params, dfit, num_boost_round=rounds, evals=evals, verbose_eval=False,
        early_stopping_rounds=early_stopping if valid_rows is not None else None,
    )  # fmt: skip
    if valid_rows is not None and booster.best_iteration is not None:
        booster = booster[: booster.best_iteration + 1]
    p_test = booster.inplace_predict(_matrix(test_rows))
    p_train = booster.inplace_predict(_matrix(train_rows))
    y_test, y_train = test_rows["label"].to_numpy(), train_rows["label"].to_numpy()
    test_report = classification_report(y_test, p_test)
    # users the API knows no profile for: the same test rows with no history at all
    unknown = booster.inplace_predict(_matrix(with_unknown_history(test_rows, 1.0)))
    # a one-rule reference: "the session has carted something" as the score
    carted_auc = classification_report(y_test, test_rows["carted"].to_numpy())["auc"]
    gain = booster.get_score(importance_type="gain")
    metrics = {
        "split": split.describe(),
        "test": test_report,
        "test_unknown_history": classification_report(y_test, unknown),
        "train": classification_report(y_train, p_train),
        "test_sessions": int(test_rows["user_session"].nunique()),
        "train_sessions": int(train_rows["user_session"].nunique()),
        "rounds": int(booster.num_boosted_rounds()),
        "reference_auc_carted_so_far": carted_auc,
        "feature_gain": dict(sorted(gain.items(), key=lambda kv: -kv[1])),
        "train_seconds": time.perf_counter() - started,
    }
    log.info(
        "purchase model: test AUC %.4f, PR-AUC %.4f, accuracy %.4f vs majority %.4f (base rate %.4f) on %d rows",
        test_report["auc"], test_report["pr_auc"], test_report["accuracy"], test_report["majority_accuracy"],
        test_report["base_rate"], test_report["rows"],
    )  # fmt: skip
    stored_params = {**params, "num_boost_round": rounds, "early_stopping_rounds": early_stopping,
                     "unknown_history_share": unknown_history_share}  # fmt: skip
    return PurchaseModel(booster=booster, params=stored_params, metrics=metrics)


def publish(model: PurchaseModel, artifacts: Artifacts, extra: Mapping[str, Any] | None = None) -> str:
    """Write the booster JSON and its metadata as a new ``purchase_model`` version."""
    meta = {
        "features": list(model.features),
        "params": model.params,
        "metrics": model.metrics,
        "label": "1 when the session holds a purchase event after the prediction point (the point = right after event k)",
        "created_at": datetime.now(timezone.utc).isoformat(),
        **(extra or {}),
    }
    model.version = publish_booster(artifacts, ARTIFACT_KIND, model.booster, meta, model_file=MODEL_FILE,
                                    manifest_file=META_FILE)  # fmt: skip
    return model.version


def load_model(artifacts: Artifacts, version: str | None = None) -> PurchaseModel:
    """The model of `version` (default LATEST); raises FeatureMismatch when its features are not `FEATURES`."""
    booster, meta, version = load_booster(artifacts, ARTIFACT_KIND, version, model_file=MODEL_FILE, manifest_file=META_FILE)
    return PurchaseModel(
        booster=booster, features=tuple(meta["features"]), params=meta["params"], metrics=meta["metrics"], version=version
    )
