"""Binary-classification metrics (scikit-learn's), with the baselines every figure is read against."""

from __future__ import annotations

import numpy as np
from sklearn import metrics


def roc_auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (ties count one half); NaN with a single class, where it is undefined."""
    y = np.asarray(y).astype(int)
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(metrics.roc_auc_score(y, score))


def average_precision(y: np.ndarray, score: np.ndarray) -> float:
    """PR-AUC as average precision: sum over thresholds of (R_n - R_(n-1)) * P_n; NaN without positives."""
    y = np.asarray(y).astype(int)
    if not y.any():
        return float("nan")
    return float(metrics.average_precision_score(y, score))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean binary cross-entropy; NaN for no rows."""
    if len(y) == 0:
        return float("nan")
    return float(metrics.log_loss(np.asarray(y).astype(int), np.asarray(p, dtype=float), labels=[0, 1]))


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
        "accuracy": float(metrics.accuracy_score(y, predicted)) if len(y) else float("nan"),
        "majority_accuracy": max(base_rate, 1 - base_rate),
        "precision_at_threshold": tp / int(predicted.sum()) if predicted.sum() else float("nan"),
        "recall_at_threshold": tp / int(y.sum()) if y.sum() else float("nan"),
        "threshold": threshold,
        "log_loss": log_loss(y, p),
    }
