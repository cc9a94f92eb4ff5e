"""The `clickrec train ...` sub-app and the `clickrec evaluate` command (thin shells over job.py / evaluation)."""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path
from typing import Annotated, Optional

import typer

log = logging.getLogger(__name__)

train_app = typer.Typer(help="Batch training jobs that write versioned artifacts.", no_args_is_help=True)


def _read_ids(path: Path | None) -> list[int]:
    if path is None:
        return []
    return [int(line.split(",")[0]) for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


@train_app.command("candidates")
def candidates_command(
    engine: Annotated[str, typer.Option(help="ALS engine: implicit (fast, CPU) or spark (MLlib, runs on SPARK_MASTER).")] = "implicit",
    from_csv: Annotated[Optional[Path], typer.Option("--from-csv", help="Read events from this click CSV instead of the lake.")] = None,
    top_n: Annotated[int, typer.Option(min=1, help="Candidates per user.")] = 200,
    factors: Annotated[int, typer.Option(min=1, help="ALS latent factors.")] = 64,
    iterations: Annotated[int, typer.Option(min=1, help="ALS iterations.")] = 10,
    regularization: Annotated[float, typer.Option(min=0.0, help="ALS L2 regularization.")] = 0.05,
    alpha: Annotated[float, typer.Option(min=0.0, help="Confidence = 1 + alpha * weight.")] = 10.0,
    threads: Annotated[int, typer.Option(min=0, help="implicit's threads (0 = all cores); BLAS stays at 1.")] = 2,
    half_life_days: Annotated[float, typer.Option(min=0.0, help="Recency half-life in days (0 = no decay).")] = 7.0,
    view_weight: Annotated[float, typer.Option(min=0.0, help="Weight of a view.")] = 1.0,
    cart_weight: Annotated[float, typer.Option(min=0.0, help="Weight of a cart.")] = 4.0,
    purchase_weight: Annotated[float, typer.Option(min=0.0, help="Weight of a purchase.")] = 8.0,
    like_weight: Annotated[float, typer.Option(min=0.0, help="Weight of a like / wishlist / save-for-later.")] = 2.0,
    bot_rate: Annotated[float, typer.Option(min=0.0, help="Bots: more than N events per minute in a 2-minute window (0 = off).")] = 15.0,
    bot_ids: Annotated[Optional[Path], typer.Option(help="File with user ids to exclude as bots, one per line.")] = None,
    neighbours: Annotated[int, typer.Option(min=1, help="Item-item neighbours kept per item.")] = 100,
    exclude_seen: Annotated[bool, typer.Option(help="Drop items the user already interacted with from their list.")] = False,
    max_user_lists: Annotated[Optional[int], typer.Option(min=1, help="Precompute lists for at most N users (factors cover the rest).")] = None,
    seed: Annotated[int, typer.Option(help="Random seed of ALS.")] = 42,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Train candidate generators and publish them as a new `candidates` artifact version.

    Writes per-user top-N lists, ALS factors and id mappings, item-item
    neighbours (also viewed / also bought) and popular lists, plus manifest.json.
    """
    from feature_store.settings import get_settings
    from spark_jobs.candidates.als_implicit import ALSParams
    from spark_jobs.candidates.bots import BotRule
    from spark_jobs.candidates.interactions import InteractionParams
    from spark_jobs.candidates.item_item import ItemItemParams
    from spark_jobs.candidates.job import ENGINES, CandidateParams, train_candidates

    if engine not in ENGINES:
        raise typer.BadParameter(f"--engine takes one of {', '.join(ENGINES)}")
    if from_csv is not None and not from_csv.exists():
        raise typer.BadParameter(f"{from_csv} does not exist")
    weights = {"view": view_weight, "cart": cart_weight, "purchase": purchase_weight,
               "like": like_weight, "wishlist": like_weight, "save_for_later": like_weight}  # fmt: skip
    params = CandidateParams(
        engine=engine,  # type: ignore[arg-type]
        top_n=top_n,
        exclude_seen=exclude_seen,
        max_user_lists=max_user_lists,
        interactions=InteractionParams.with_weights(
            weights, half_life_days=half_life_days or None, bot_rule=BotRule(bot_rate) if bot_rate > 0 else None
        ),
        als=ALSParams(factors=factors, iterations=iterations, regularization=regularization, alpha=alpha,
                      seed=seed, num_threads=threads),  # fmt: skip
        item_item=ItemItemParams(top_k=neighbours),
        progress=progress,
    )
    try:
        result = train_candidates(get_settings(), params, from_csv=from_csv, bot_user_ids=_read_ids(bot_ids))
    except ValueError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    rows, timings = result.manifest["rows"], result.manifest["timings_seconds"]
    typer.echo(
        f"candidates version {result.version} ({engine}): {rows['users']:,} users x {rows['items']:,} items, "
        f"{rows['interactions']:,} interactions, {rows['bots_excluded']} bots excluded; "
        f"{rows['user_candidates']:,} user candidates, ALS {timings['als_train']:.1f} s, total {timings['total']:.1f} s"
    )


def evaluate_command(
    from_csv: Annotated[Optional[Path], typer.Option("--from-csv", help="Read events from this click CSV instead of the lake.")] = None,
    test_day: Annotated[Optional[str], typer.Option(help="Test day YYYY-MM-DD (default: the last full day of the data).")] = None,
    k: Annotated[int, typer.Option(min=1, help="Cut-off of the ranking metrics.")] = 20,
    engines: Annotated[str, typer.Option(help="Models to compare, comma-separated: popular,history,item_knn,implicit,spark.")] = "popular,history,item_knn,implicit,spark",
    sessions_csv: Annotated[
        Optional[Path], typer.Option(help="Also run the session protocol on this CSV, e.g. the real OpenCDP sample (../shared/data/opencdp-2019-Oct-head.csv).")
    ] = None,
    bot_ids: Annotated[Optional[Path], typer.Option(help="File with user ids to exclude as bots, one per line.")] = None,
    store: Annotated[bool, typer.Option(help="Store the metrics as a new `evaluation` artifact version.")] = True,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = False,
) -> None:
    """Offline evaluation: temporal split (train before day D, test on D) and next-item in sessions; prints one table."""
    from feature_store.settings import get_settings
    from spark_jobs.evaluation.report import run_evaluation

    day = None
    if test_day:
        try:
            day = date.fromisoformat(test_day)
        except ValueError:
            raise typer.BadParameter("--test-day takes a date like 2019-10-07") from None
    models = tuple(m.strip() for m in engines.split(",") if m.strip())
    try:
        report = run_evaluation(get_settings(), from_csv=from_csv, test_day=day, k=k, models=models,
                                sessions_csv=sessions_csv, bot_user_ids=_read_ids(bot_ids), store=store,
                                progress=progress)  # fmt: skip
    except ValueError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    typer.echo(report.text)
