"""`clickrec evaluate`: run both protocols, print one aligned table, store the metrics as an artifact."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any

from feature_store.artifacts import open_artifacts
from feature_store.lake import load_events
from feature_store.settings import Settings
from spark_jobs.candidates.job import CandidateParams
from spark_jobs.evaluation.sessions import REFERENCE_FIGURES, SessionResult, evaluate_sessions
from spark_jobs.evaluation.temporal import MODELS, TemporalResult, evaluate_temporal

log = logging.getLogger(__name__)

KIND = "evaluation"


@dataclass(frozen=True)
class Report:
    text: str
    metrics: dict[str, Any]
    version: str | None = None


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Plain-text table: numbers right-aligned, text left-aligned."""
    cells = [[str(h) for h in header]] + [[f"{v:.4f}" if isinstance(v, float) else str(v) for v in r] for r in rows]
    numeric = [all(isinstance(r[i], (int, float)) or str(r[i]).replace(".", "", 1).isdigit() or r[i] == "-"
                   for r in rows) for i in range(len(header))]  # fmt: skip
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = []
    for n, row in enumerate(cells):
        lines.append("  ".join(c.rjust(w) if numeric[i] else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def ranker_section(manifest: dict[str, Any]) -> str:
    """The latest ranker's held-out table (its own protocol: queries at cutoffs inside the test period)."""
    test = manifest["metrics"]["test"]
    line = manifest["timeline"]
    rows = [(name, test[name]["ndcg@10"], test[name]["recall@20"], test[name]["hr@10"], test[name]["queries"])
            for name in ("reranked", "als", "popular")]  # fmt: skip
    return (
        f"Reranker (ranker version in the artifact store), held out from {line['test_start']}: "
        f"(user, cutoff) queries inside the test period, relevant = what the user touched in the next "
        f"{manifest['dataset']['horizon'] / 60:.0f} min; reranked NDCG@10 = {test['reranked']['ndcg_vs_als']:.2f}x the ALS order\n"
        + _table(["order", "NDCG@10", "Recall@20", "HR@10", "queries"], rows)
    )


def format_report(
    temporal: TemporalResult | None, sessions: Sequence[SessionResult], source: str, ranker: dict[str, Any] | None = None
) -> str:
    parts = []
    if temporal is not None:
        k = temporal.k
        parts.append(
            f"Temporal split on {source}: train before {temporal.test_day}, test on {temporal.test_day}\n"
            f"{temporal.users_evaluated:,} users with history evaluated ({temporal.train_users:,} train users, "
            f"{temporal.train_items:,} items, {temporal.mean_relevant:.1f} relevant items per user on average)"
        )
        rows = [(s.model, s.metrics[f"recall@{k}"], s.metrics[f"ndcg@{k}"], s.metrics[f"map@{k}"],
                 s.metrics[f"hit_rate@{k}"], s.metrics[f"coverage@{k}"], f"{s.train_seconds:.1f}", s.note)
                for s in temporal.scores]  # fmt: skip
        parts.append(_table(["model", f"Recall@{k}", f"NDCG@{k}", f"MAP@{k}", f"HR@{k}", f"Coverage@{k}", "seconds", "note"], rows))
    if sessions:
        rows = []
        for r in sessions:
            for model, m in r.scores.items():
                rows.append((model, r.dataset, r.test_sessions, m["ndcg@20"], m["hr@20"], r.split))
        for name, ndcg, hr in REFERENCE_FIGURES:
            rows.append((f"{name} [published]", "whole 2019-Oct (42M events): different scale", "-", ndcg, hr, "T4Rec paper"))
        parts.append("Next item in a session (Transformers4Rec protocol: last item, full catalogue)")
        parts.append(_table(["model", "data", "sessions", "NDCG@20", "HR@20", "split"], rows))
    if ranker is not None:
        parts.append(ranker_section(ranker))
    return "\n\n".join(parts)


def latest_ranker(settings: Settings, source: str) -> dict[str, Any] | None:
    """The latest ranker's manifest when it was trained on the same `source` (else None)."""
    from feature_store.artifacts import ArtifactNotFound

    try:
        manifest = open_artifacts(settings).read_json("ranker", "manifest.json")
    except ArtifactNotFound:
        return None
    return manifest if manifest.get("source") == source else None


def run_evaluation(
    settings: Settings,
    *,
    from_csv: Path | None = None,
    test_day: date | None = None,
    k: int = 20,
    models: Sequence[str] = MODELS,
    sessions_csv: Path | None = None,
    bot_user_ids: Sequence[int] = (),
    params: CandidateParams = CandidateParams(progress=False),
    store: bool = True,
    progress: bool = False,
) -> Report:
    """Evaluate on `from_csv` (or the lake); also the session protocol on `sessions_csv` if given."""
    started = time.perf_counter()
    events = load_events(settings, from_csv=from_csv)
    if events.num_rows == 0:
        raise ValueError(f"no events in {from_csv or settings.lake_url}")
    source = from_csv.name if from_csv else settings.lake_url
    spark = None

    def spark_factory():
        nonlocal spark
        if spark is None:
            from spark_jobs.session import spark_session

            spark = spark_session("clickrec-evaluate", settings)
        return spark

    try:
        temporal = evaluate_temporal(events, test_day, models=models, k=k, params=params,
                                     bot_user_ids=bot_user_ids, spark_factory=spark_factory)  # fmt: skip
    finally:
        if spark is not None:
            spark.stop()
    sessions = [evaluate_sessions(events, source)]
    if sessions_csv is not None:
        if not sessions_csv.exists():
            raise ValueError(f"{sessions_csv} does not exist")
        sessions.append(evaluate_sessions(load_events(settings, from_csv=sessions_csv), sessions_csv.name))
    ranker = latest_ranker(settings, str(from_csv or settings.lake_url))
    text = format_report(temporal, sessions, source, ranker)
    metrics: dict[str, Any] = {
        "kind": KIND,
        "source": str(from_csv or settings.lake_url),
        "temporal": {
            **{key: value for key, value in asdict(temporal).items() if key != "scores"},
            "test_day": temporal.test_day.isoformat(),
            "models": {s.model: {**s.metrics, "seconds": s.train_seconds, "note": s.note} for s in temporal.scores},
        },
        "sessions": [asdict(s) for s in sessions],
        "ranker": {"version": ranker.get("version"), "test": ranker["metrics"]["test"]} if ranker else None,
        "published_reference": {
            "note": "Transformers4Rec paper, whole October 2019 (different scale; not comparable)",
            "figures": {name: {"ndcg@20": ndcg, "hr@20": hr} for name, ndcg, hr in REFERENCE_FIGURES},
        },
        "parameters": {"k": k, "als": asdict(params.als), "item_item": asdict(params.item_item),
                       "half_life_days": params.interactions.half_life_days,
                       "weights": dict(params.interactions.weights)},  # fmt: skip
        "seconds": round(time.perf_counter() - started, 2),
        "table": text,
    }
    version = None
    if store:
        with open_artifacts(settings).new_version(KIND) as writer:
            writer.put_bytes("report.txt", text.encode())
            writer.put_json("manifest.json", metrics)
        version = writer.version
    return Report(text, metrics, version)
