"""Binary-classification metrics as small pure numpy functions (scikit-learn is not a dependency)."""

from __future__ import annotations

import numpy as np


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties count one half); NaN with a single class."""
    y = np.asarray(y).astype(bool)
    score = np.asarray(score, dtype=float)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    sorted_scores = score[order]
    ranks = np.empty(len(score))
    # average ranks over ties (1-based)
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def average_precision(y: np.ndarray, score: np.ndarray) -> float:
    """PR-AUC as average precision: sum over distinct thresholds of (R_n - R_(n-1)) * P_n."""
    y = np.asarray(y).astype(bool)
    score = np.asarray(score, dtype=float)
    pos = int(y.sum())
    if pos == 0:
        return float("nan")
    order = np.argsort(-score, kind="mergesort")
    s, t = score[order], y[order]
    tp = np.cumsum(t)
    # keep the last index of each run of equal scores: one threshold per distinct score
    last = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp_at, n_at = tp[last], last + 1
    precision = tp_at / n_at
    recall = tp_at / pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def log_loss(y: np.ndarray, p: np.ndarray, eps: float = 1e-15) -> float:
    y = np.asarray(y, dtype=float)
    p = np.clip(np.asarray(p, dtype=float), eps, 1 - eps)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def classification_report(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """AUC, PR-AUC, accuracy at `threshold`, and the baselines: base rate and majority-class accuracy."""
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=float)
    base_rate = float(y.mean()) if len(y) else float("nan")
    predicted = (p >= threshold).astype(int)
    tp = int(((predicted == 1) & (y == 1)).sum())
    return {
        "rows": int(len(y)),
        "positives": int(y.sum()),
        "base_rate": base_rate,
        "auc": roc_auc(y, p),
        "pr_auc": average_precision(y, p),
        "accuracy": float((predicted == y).mean()) if len(y) else float("nan"),
        "majority_accuracy": max(base_rate, 1 - base_rate),
        "precision_at_threshold": tp / int(predicted.sum()) if predicted.sum() else float("nan"),
        "recall_at_threshold": tp / int(y.sum()) if y.sum() else float("nan"),
        "threshold": threshold,
        "log_loss": log_loss(y, p),
    }
