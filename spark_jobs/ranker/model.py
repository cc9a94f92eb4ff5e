"""The XGBoost ranker: LambdaMART on the point-in-time queries, its evaluation, its artifact.

One query per (cutoff, user); XGBoost's ``rank:ndcg`` objective learns to put
the candidates the user went on to buy, cart or view first. The held-out
evaluation compares three orders of the same test queries: the reranked ALS
candidates, the plain ALS order, and the most viewed products of the day
before (popularity); NDCG@10 and Recall@20 against everything the user touched
in the horizon (candidate or not), as `spark_jobs.evaluation.metrics` defines.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

from feature_store.artifacts import Artifacts
from spark_jobs.boosters import CompiledPredictor, DensePredictor, check_features, fast_predictor, load_booster, publish_booster
from spark_jobs.evaluation.metrics import evaluate_lists
from spark_jobs.ranker.dataset import Query
from spark_jobs.ranker.features import FEATURES

log = logging.getLogger(__name__)

KIND = "ranker"
MODEL_FILE = "model.json"
MANIFEST_FILE = "manifest.json"


@dataclass(frozen=True)
class XGBParams:
    """LambdaMART's settings. The trees' size is a serving cost: every request scores its 200 candidates
    through all of them. 100 rounds of depth 4 at eta 0.2 rank at least as well as 300 of depth 6 at eta 0.08 on
    both held-out sets (README, "Held-out quality") and score 200 rows in a third of the time."""

    objective: str = "rank:ndcg"
    num_boost_round: int = 100
    early_stopping_rounds: int = 30
    max_depth: int = 4
    eta: float = 0.2
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    min_child_weight: float = 1.0
    lambdarank_pair_method: str = "topk"
    lambdarank_num_pair_per_sample: int = 10
    validation_share: float = 0.2  #: the latest training queries, for early stopping
    nthread: int = 2
    seed: int = 0

    def booster_params(self) -> dict[str, Any]:
        return {
            "objective": self.objective, "eval_metric": "ndcg@10", "max_depth": self.max_depth, "eta": self.eta,
            "subsample": self.subsample, "colsample_bytree": self.colsample_bytree,
            "min_child_weight": self.min_child_weight, "lambdarank_pair_method": self.lambdarank_pair_method,
            "lambdarank_num_pair_per_sample": self.lambdarank_num_pair_per_sample, "tree_method": "hist",
            "nthread": self.nthread, "seed": self.seed,
        }  # fmt: skip


@dataclass(eq=False)
class RankerModel:
    booster: xgb.Booster
    features: tuple[str, ...] = FEATURES
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    version: str | None = None

    def __post_init__(self) -> None:
        check_features(self.features, FEATURES, f"ranker {self.version or ''} (`clickrec train ranker`)")
        self._predict: Callable[[np.ndarray], np.ndarray] = DensePredictor(self.booster)

    @property
    def compiled(self) -> bool:
        """True when scoring runs through the trees compiled to C (see `compile_trees`)."""
        return isinstance(self._predict, CompiledPredictor)

    def compile_trees(self, directory: Path) -> None:
        """From now on, score with the trees compiled to C in `directory` (`boosters.CompiledPredictor`),
        or on with XGBoost's predictor when they cannot be built (logged)."""
        self._predict = fast_predictor(self.booster, directory)

    def score(self, matrix: np.ndarray) -> np.ndarray:
        """One score per row of a `candidate_features` matrix (higher = better)."""
        if not len(matrix):
            return np.empty(0, np.float32)
        return self._predict(matrix)


def _matrix(queries: Sequence[Query]) -> xgb.DMatrix:
    x = np.vstack([q.features for q in queries])
    y = np.concatenate([q.grades for q in queries]).astype(np.float32)
    qid = np.concatenate([np.full(len(q.candidates), i) for i, q in enumerate(queries)])
    return xgb.DMatrix(x, label=y, qid=qid, feature_names=list(FEATURES), missing=np.nan)


def train(queries: Sequence[Query], params: XGBParams = XGBParams()) -> RankerModel:
    """LambdaMART on the training queries (ordered by cutoff); the latest share validates early stopping."""
    if len(queries) < 2:
        raise ValueError("the ranker needs at least two training queries with a positive candidate")
    ordered = sorted(queries, key=lambda q: (q.cutoff, q.user_id))
    n_valid = max(1, int(len(ordered) * params.validation_share))
    fit, valid = ordered[:-n_valid], ordered[-n_valid:]
    dfit, dvalid = _matrix(fit or valid), _matrix(valid)
    booster = xgb.train(
        params.booster_params(), dfit, num_boost_round=params.num_boost_round,
        evals=[(dvalid, "valid")], early_stopping_rounds=params.early_stopping_rounds, verbose_eval=False,
    )  # fmt: skip
    rounds, best = booster.best_iteration + 1, float(booster.best_score)
    booster = booster[:rounds]
    log.info("ranker: %d rounds on %d queries (%d candidate rows), validation NDCG@10 %.4f",
             rounds, len(fit), sum(len(q.candidates) for q in fit), best)  # fmt: skip
    return RankerModel(booster=booster, params={**params.booster_params(), "num_boost_round": rounds})


def reranked(model: RankerModel, query: Query) -> list[int]:
    scores = model.score(query.features)
    order = np.lexsort((np.arange(len(scores)), -scores))  # ties keep the ALS order
    return query.candidates[order].tolist()


def evaluate(model: RankerModel, queries: Sequence[Query], *, k: int = 10, recall_k: int = 20) -> dict[str, dict[str, float]]:
    """NDCG@k and Recall@recall_k (plus HR@k, MAP@k) of the reranked, ALS and popular orders on `queries`."""
    if not queries:
        raise ValueError("no test queries: the test period has no active known user with a next interaction")
    relevant = [q.relevant for q in queries]
    orders = {
        "reranked": [reranked(model, q) for q in queries],
        "als": [q.candidates.tolist() for q in queries],
        "popular": [q.popular for q in queries],
    }
    out = {}
    for name, lists in orders.items():
        at_k = evaluate_lists(lists, relevant, k)
        at_recall = evaluate_lists(lists, relevant, recall_k)
        out[name] = {f"ndcg@{k}": at_k[f"ndcg@{k}"], f"hr@{k}": at_k[f"hit_rate@{k}"], f"map@{k}": at_k[f"map@{k}"],
                     f"recall@{recall_k}": at_recall[f"recall@{recall_k}"], "queries": len(lists)}  # fmt: skip
    als = out["als"][f"ndcg@{k}"]
    out["reranked"]["ndcg_vs_als"] = out["reranked"][f"ndcg@{k}"] / als if als > 0 else float("nan")
    return out


def feature_importance(model: RankerModel, top: int = 10) -> list[tuple[str, float]]:
    gains = model.booster.get_score(importance_type="total_gain")
    return sorted(((name, round(float(v), 2)) for name, v in gains.items()), key=lambda x: -x[1])[:top]


def publish(model: RankerModel, artifacts: Artifacts, extra: Mapping[str, Any] | None = None) -> str:
    """Write the booster and its manifest (ordered features, parameters, metrics) as a new ``ranker`` version."""
    manifest = {
        "features": list(model.features),
        "params": model.params,
        "metrics": model.metrics,
        "label": "purchase 3 > cart 2 > other interaction 1 > nothing 0, within the horizon after the cutoff",
        "created_at": datetime.now(UTC).isoformat(),
        **(extra or {}),
    }
    model.version = publish_booster(artifacts, KIND, model.booster, manifest, model_file=MODEL_FILE,
                                    manifest_file=MANIFEST_FILE)  # fmt: skip
    return model.version


def load(artifacts: Artifacts, version: str | None = None, *, compiled_dir: Path | None = None) -> RankerModel:
    """The ranker of `version` (default LATEST); FeatureMismatch when it was trained on other features.
    With `compiled_dir`, it scores with its trees compiled to C there (`RankerModel.compile_trees`)."""
    booster, manifest, version = load_booster(artifacts, KIND, version, model_file=MODEL_FILE, manifest_file=MANIFEST_FILE)
    model = RankerModel(booster=booster, features=tuple(manifest["features"]), params=manifest["params"],
                        metrics=manifest["metrics"], version=version)  # fmt: skip
    if compiled_dir is not None:
        model.compile_trees(compiled_dir)
    return model
