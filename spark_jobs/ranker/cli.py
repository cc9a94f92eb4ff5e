"""`clickrec train ranker` (a thin shell over job.py)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Optional

import typer


def ranker_command(
    from_csv: Annotated[Optional[Path], typer.Option("--from-csv", help="Read events from this click CSV instead of the lake.")] = None,
    train_periods: Annotated[int, typer.Option(min=1, help="Batch periods before the test period that produce training queries.")] = 4,
    cutoffs: Annotated[int, typer.Option(min=1, help="Cutoff times drawn per period (more = more queries, slower).")] = 24,
    horizon_minutes: Annotated[float, typer.Option(min=1.0, help="Labels: what the user does in the next N minutes.")] = 60.0,
    refresh_hours: Annotated[Optional[float], typer.Option(help="Batch cadence in hours (default: a day, or a quarter of shorter data).")] = None,
    active_minutes: Annotated[float, typer.Option(min=0.5, help="Query users: those with an event in the last N minutes before a cutoff.")] = 5.0,
    max_users: Annotated[int, typer.Option(min=1, help="At most N query users per cutoff.")] = 500,
    top_n: Annotated[int, typer.Option(min=10, help="ALS candidates reranked per query.")] = 200,
    rounds: Annotated[
        Optional[int], typer.Option(min=1, help="Most boosting rounds (default 100; early stopping picks fewer).")
    ] = None,
    materialize: Annotated[bool, typer.Option(help="Write the user profiles at the end of the data into Redis.")] = True,
    seed: Annotated[int, typer.Option(help="Random seed of the cutoffs and the session drop-out.")] = 0,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Train the XGBoost reranker (LambdaMART) on point-in-time queries and publish a `ranker` artifact version.

    At each batch period's start a candidate side (ALS, item-item, catalogue,
    profiles) is trained on the events before it; cutoffs inside the period
    become queries whose features are what the online store held at the cutoff,
    computed by the stream's own window functions. The last period is held out:
    the table compares the reranked list with the ALS order and popularity.
    """
    from feature_store.settings import get_settings
    from spark_jobs.candidates.job import CandidateParams
    from spark_jobs.ranker.dataset import DatasetParams
    from spark_jobs.ranker.job import RankerJobParams, format_metrics, train_ranker
    from spark_jobs.ranker.model import XGBParams

    if from_csv is not None and not from_csv.exists():
        raise typer.BadParameter(f"{from_csv} does not exist")
    params = RankerJobParams(
        dataset=DatasetParams(
            candidates=CandidateParams(top_n=top_n, progress=False),
            refresh=timedelta(hours=refresh_hours) if refresh_hours else None,
            train_periods=train_periods,
            cutoffs_per_period=cutoffs,
            horizon=timedelta(minutes=horizon_minutes),
            active_within=timedelta(minutes=active_minutes),
            max_users_per_cutoff=max_users,
            seed=seed,
        ),
        xgb=XGBParams(**({"num_boost_round": rounds} if rounds else {})),
        materialize_profiles=materialize,
        progress=progress,
    )
    try:
        result = train_ranker(get_settings(), params, from_csv=from_csv)
    except ValueError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"ranker version {result.version}: {result.metrics['train_queries']:,} training queries, "
               f"{result.metrics['test_queries']:,} held-out; {result.profiles_written:,} user profiles in Redis")  # fmt: skip
    typer.echo(format_metrics(result.metrics))
