"""`clickrec train purchase-model`: the typer command (registered in services/cli.py)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

log = logging.getLogger(__name__)


def purchase_model_command(
    from_csv: Annotated[
        Optional[Path], typer.Option("--from-csv", help="Read this OpenCDP CSV instead of the lake.")
    ] = None,
    test_days: Annotated[int, typer.Option(min=1, help="Latest UTC days held out as the test set.")] = 1,
    max_points: Annotated[
        int, typer.Option(min=1, help="Prediction points sampled per session at most (long sessions).")
    ] = 20,
    rounds: Annotated[int, typer.Option(min=1, help="Boosting rounds at most (early stopping on a time-ordered validation slice).")] = 400,
) -> None:
    """Train the session purchase-probability model (XGBoost) with a temporal split; publish it with its metrics.

    One row per prediction point inside a session: the inputs are the session's
    events up to the point and the user's history before the session; the label
    is whether the session holds a purchase after the point.
    """
    from feature_store.artifacts import open_artifacts
    from feature_store.lake import load_events
    from feature_store.settings import get_settings
    from spark_jobs.purchase_model.features import build_training_set
    from spark_jobs.purchase_model.model import publish, train

    if from_csv is not None and not from_csv.exists():
        typer.echo(f"error: no such file {from_csv}", err=True)
        raise typer.Exit(2)
    settings = get_settings()
    started = time.perf_counter()
    table = load_events(settings, from_csv=from_csv)
    rows = build_training_set(table, max_points_per_session=max_points)
    build_s = time.perf_counter() - started
    log.info("training set: %d prediction points from %d events in %.1f s", len(rows), table.num_rows, build_s)
    try:
        model = train(rows, rounds=rounds, test_days=test_days)
    except ValueError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    source = str(from_csv) if from_csv else settings.lake_url
    version = publish(model, open_artifacts(settings), {"source": source, "events": table.num_rows, "points": len(rows), "max_points_per_session": max_points})
    m, t = model.metrics, model.metrics["test"]
    typer.echo(f"split: {m['split']['rule']} (cut {m['split']['cut']})")
    typer.echo(f"train {m['train_sessions']:,} sessions / {m['train']['rows']:,} points; test {m['test_sessions']:,} sessions / {t['rows']:,} points")
    typer.echo(
        f"test: AUC {t['auc']:.4f}  PR-AUC {t['pr_auc']:.4f} (base rate {t['base_rate']:.4f})  "
        f"accuracy {t['accuracy']:.4f} vs majority-class {t['majority_accuracy']:.4f}  log-loss {t['log_loss']:.4f}"
    )
    typer.echo(f"reference: AUC of 'carted so far' alone {m['reference_auc_carted_so_far']:.4f}; {m['rounds']} rounds")
    typer.echo(f"artifact purchase_model/{version}")
