"""`clickrec analytics`: the typer command (registered in services/cli.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def analytics_command(
    from_csv: Annotated[
        Optional[Path], typer.Option("--from-csv", help="Read this OpenCDP CSV instead of the lake.")
    ] = None,
    session: Annotated[
        Optional[str], typer.Option("--session", help="Print this session's journey (its events in order) and exit.")
    ] = None,
    min_support: Annotated[
        int, typer.Option(min=1, help="Minimum carts for a category or brand in the cart-conversion tables.")
    ] = 50,
    top_brands: Annotated[int, typer.Option(min=1, help="Brands kept per category.")] = 5,
    top_customers: Annotated[int, typer.Option(min=1, help="Customers kept in the top-spenders table.")] = 100,
) -> None:
    """Clickstream KPIs (funnel, cart abandonment, categories, brands, prime time, revenue, sessions).

    Removes repeated identical rows first, then writes one Parquet per KPI and a
    manifest.json as a new version of the "analytics" artifact; prints a summary.
    """
    from feature_store.settings import get_settings
    from spark_jobs.analytics import job
    from spark_jobs.session import spark_session

    if from_csv is not None and not from_csv.exists():
        typer.echo(f"error: no such file {from_csv}", err=True)
        raise typer.Exit(2)
    settings = get_settings()
    spark = spark_session("clickrec-analytics", settings)
    try:
        if session is not None:
            rows = job.journey(spark, settings, session, from_csv=from_csv).to_pylist()
            if not rows:
                typer.echo(f"no events for session {session}", err=True)
                raise typer.Exit(1)
            typer.echo(f"session {session} (user {rows[0]['user_id']}): {len(rows)} events, times in UTC")
            for r in rows:
                typer.echo(
                    f"  {r['step']:>3}  {r['event_time']:%Y-%m-%d %H:%M:%S}  +{r['seconds_since_start']:>7.0f}s  "
                    f"{r['event_type']:<16} product {r['product_id']:<10} {r['category_code'] or '-':<32} "
                    f"{r['brand'] or '-':<14} {r['price']:>9.2f}"
                )
            return
        options = job.AnalyticsOptions(min_support=min_support, top_brands=top_brands, top_customers=top_customers)
        result = job.run(spark, settings, from_csv=from_csv, options=options)
    finally:
        spark.stop()
    for line in job.summary_lines(result):
        typer.echo(line)
