"""`clickrec`: the command line of the stack.

Each subcommand is a thin shell over a function in producer/, spark_jobs/ or
services/; `clickrec COMMAND --help` explains its options.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from feature_store.settings import Settings, get_settings
from services.stack.cli import stack_app
from spark_jobs.candidates.cli import evaluate_command, train_app

log = logging.getLogger("clickrec")

app = typer.Typer(
    name="clickrec",
    help=(
        "clickrec: a local-first clickstream recommendation stack.\n\n"
        "Typical session: `clickrec stack up` (or `make up`), `clickrec synth -o clicks.csv`, "
        "`clickrec replay clicks.csv --rebase-time now`, `clickrec peek`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


@app.callback()
def _main(
    log_level: Annotated[
        Optional[str], typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR (default: LOG_LEVEL setting).")
    ] = None,
) -> None:
    setup_logging((log_level or get_settings().log_level).upper())


app.add_typer(stack_app, name="stack")


def _publisher(settings: Settings):
    from producer.publisher import Publisher
    from producer.topics import ensure_topics

    ensure_topics(settings.kafka_bootstrap, {settings.clicks_topic: settings.topic_partitions, settings.dlq_topic: 1})
    return Publisher.from_settings(settings)


@app.command()
def replay(
    file: Annotated[Path, typer.Argument(help="An OpenCDP/REES46 CSV (.csv, .csv.gz or .zip), or the electronics-store purchase file.")],
    speedup: Annotated[
        Optional[float],
        typer.Option(help="Replay in real time scaled by N, keeping the gaps between events (default: as fast as possible)."),
    ] = None,
    rebase_time: Annotated[
        Optional[str],
        typer.Option(
            help="Shift event times so the replay lands at this instant: 'now' or ISO 8601. "
            "Unpaced, the LAST replayed row lands there (all events in the recent past); "
            "with --speedup, the FIRST row does and the rest follow in real time."
        ),
    ] = None,
    rebase_anchor: Annotated[
        str, typer.Option(help="Which end of the replay --rebase-time anchors: auto, start or end.")
    ] = "auto",
    limit: Annotated[Optional[int], typer.Option(min=0, help="Replay at most N data rows.")] = None,
    skip: Annotated[int, typer.Option(min=0, help="Skip the first N data rows.")] = 0,
    fmt: Annotated[str, typer.Option("--format", help="auto, opencdp or electronics.")] = "auto",
    progress: Annotated[bool, typer.Option(help="Show a progress bar with events/s.")] = True,
) -> None:
    """Publish a click CSV to the clicks topic (key = user_id); bad rows go to the DLQ with a reason.

    Ends with a summary (rows read = published + rejected). Ctrl-C stops early,
    flushes what was read, and still prints the summary.
    """
    from producer.replay import ReplayOptions, replay as run_replay

    if rebase_anchor not in ("auto", "start", "end"):
        raise typer.BadParameter("--rebase-anchor takes auto, start or end")
    if fmt not in ("auto", "opencdp", "electronics"):
        raise typer.BadParameter("--format takes auto, opencdp or electronics")
    settings = get_settings()
    options = ReplayOptions(
        speedup=speedup, rebase_time=rebase_time, rebase_anchor=rebase_anchor,  # type: ignore[arg-type]
        skip=skip, limit=limit, fmt=fmt, progress=progress,
    )  # fmt: skip
    try:
        summary = run_replay(file, _publisher(settings), options)
    except (FileNotFoundError, ValueError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    typer.echo(summary.describe())
    typer.echo(f"topic {settings.clicks_topic} on {settings.kafka_bootstrap}; dead letters in {settings.dlq_topic}")
    if summary.interrupted:
        raise typer.Exit(130)


@app.command()
def synth(
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the CSV (OpenCDP schema).")],
    users: Annotated[int, typer.Option(min=10, help="Number of shoppers.")] = 10_000,
    days: Annotated[int, typer.Option(min=1, help="Days of clicks, from --start.")] = 7,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed writes the same file.")] = 42,
    start: Annotated[str, typer.Option(help="First day, YYYY-MM-DD.")] = "2019-10-01",
    progress: Annotated[bool, typer.Option(help="Show a progress bar with rows/s.")] = True,
) -> None:
    """Write a synthetic click CSV in the exact OpenCDP schema, with learnable structure.

    Power-law product popularity, a category tree with brands and price tiers,
    users with persistent taste who return over several days, a view -> cart ->
    purchase funnel near the real rates, a daily rhythm and a few bots.
    """
    from datetime import date

    from producer.synth import SynthConfig, write_synthetic_csv

    try:
        first_day = date.fromisoformat(start)
    except ValueError:
        raise typer.BadParameter("--start takes a date like 2019-10-01") from None
    summary = write_synthetic_csv(output, SynthConfig(users=users, days=days, seed=seed, start=first_day), progress)
    shares = ", ".join(f"{kind} {summary.share(kind):.2%}" for kind in summary.event_counts)
    typer.echo(
        f"wrote {output}: {summary.rows:,} rows, {summary.users:,} users, {summary.sessions:,} sessions, "
        f"{summary.products:,} products, {summary.bots} bots ({shares})"
    )


@app.command()
def peek(
    n: Annotated[int, typer.Option("-n", min=1, help="How many of the newest messages to show.")] = 5,
    dlq: Annotated[bool, typer.Option("--dlq", help="Show the dead-letter topic instead of the clicks.")] = False,
) -> None:
    """Show the newest messages of the clicks topic (or the DLQ) and how many it holds."""
    from producer.topics import read_topic

    settings = get_settings()
    topic = settings.dlq_topic if dlq else settings.clicks_topic
    records = read_topic(settings.kafka_bootstrap, topic, timeout=60)
    newest = sorted(records, key=lambda r: (r.timestamp_ms or 0, r.partition, r.offset))[-n:]
    typer.echo(f"{topic}: {len(records):,} messages")
    for record in newest:
        key = record.key.decode() if record.key else "-"
        typer.echo(f"  p{record.partition}@{record.offset} key={key} {record.value.decode() if record.value else ''}")


@app.command()
def up(
    timeout: Annotated[float, typer.Option(help="Seconds to wait for every service to become healthy.")] = 90.0,
) -> None:
    """Bring up the native stack; on an empty stack, generate and replay demo data (DEMO_DATA)."""
    from services.stack import bootstrap

    settings = get_settings()
    try:
        report = bootstrap.up(settings, timeout=timeout)
    except bootstrap.StackError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(report)


@app.command()
def down() -> None:
    """Stop everything `clickrec up` started (the API and the streaming job, then the services), by PID."""
    from services.stack import bootstrap, native

    settings = get_settings()
    rows = bootstrap.stop_apps(settings) + native.down(settings)
    from services.stack.cli import format_table

    typer.echo(format_table(rows))


@app.command()
def status() -> None:
    """Each service and job of the native stack: state, PID, endpoint, health (a crashed one too)."""
    from services.stack import bootstrap, native
    from services.stack.cli import format_table

    settings = get_settings()
    rows = native.status(settings) + bootstrap.app_status(settings)
    typer.echo(format_table(rows))
    if any(r.state == "crashed" for r in rows):
        raise typer.Exit(1)


@app.command()
def stream(
    trigger_seconds: Annotated[float, typer.Option(help="Micro-batch trigger interval.")] = 1.0,
    max_rows_per_batch: Annotated[int, typer.Option(min=1, help="Admission control: rows per micro-batch.")] = 500_000,
) -> None:
    """Run the Spark Structured Streaming job: clicks -> two-minute windows, sessions, counters -> Redis; events -> lake.

    Checkpoints live in CHECKPOINT_DIR: a restart resumes where it stopped,
    losing nothing and counting nothing twice. A query that fails (Redis or the
    broker away) starts again from its checkpoint after 1, 2, 4 ... 60 s, up to
    STREAM_MAX_RESTARTS times in ten minutes. Ctrl-C stops it.
    """
    from spark_jobs.stream import StreamOptions, run

    run(get_settings(), StreamOptions(trigger_seconds=trigger_seconds, max_rows_per_batch=max_rows_per_batch))


@app.command()
def api(
    host: Annotated[Optional[str], typer.Option(help="Interface to bind (default: the API_HOST setting).")] = None,
    port: Annotated[
        Optional[int], typer.Option(min=1, max=65535, help="Port to listen on (default: the API_PORT setting).")
    ] = None,
) -> None:
    """Serve the HTTP API (FastAPI under uvicorn): recommendations, similar and popular products, POST /events,
    purchase probability, analytics, /ready and /metrics. Interactive docs at http://HOST:PORT/docs.

    It loads the latest artifacts at start and picks up new versions every
    API_ARTIFACT_POLL_SECONDS without a restart. API_WORKERS processes serve
    (they share the memory-mapped user factors). Ctrl-C (or SIGTERM) stops it.
    """
    from services.api.server import serve

    settings = get_settings()
    serve(settings, host or settings.api_host, port or settings.api_port)


@app.command()
def seed() -> None:
    """Generate and replay the demo dataset, only if the clicks topic is empty and DEMO_DATA is on."""
    from producer.topics import ensure_topics
    from services.stack import bootstrap

    settings = get_settings()
    ensure_topics(settings.kafka_bootstrap, {settings.clicks_topic: settings.topic_partitions, settings.dlq_topic: 1})
    typer.echo(bootstrap.seed_if_empty(settings))

from spark_jobs.analytics.cli import analytics_command  # noqa: E402

app.command("analytics")(analytics_command)


app.add_typer(train_app, name="train")
from spark_jobs.purchase_model.cli import purchase_model_command  # noqa: E402

train_app.command("purchase-model")(purchase_model_command)
from spark_jobs.ranker.cli import ranker_command  # noqa: E402

train_app.command("ranker")(ranker_command)


@train_app.command("all")
def train_all_command(
    from_csv: Annotated[Optional[Path], typer.Option("--from-csv", help="Read events from this click CSV instead of the lake.")] = None,
    only_missing: Annotated[bool, typer.Option(help="Skip the jobs whose artifact already has a version.")] = False,
    wait_for_lake: Annotated[
        bool, typer.Option(help="First wait until the lake holds the clicks topic's events (the stream writes it).")
    ] = False,
) -> None:
    """Every batch job in order: candidates, ranker (+ user profiles into Redis), purchase model, analytics.

    Each publishes a new artifact version; a failed job is reported and the
    rest still run. `make up` runs this with --only-missing on a fresh stack.
    """
    from feature_store.settings import get_settings
    from spark_jobs.pipeline import STEPS, missing_steps, train_all

    settings = get_settings()
    steps = tuple(missing_steps(settings)) if only_missing else STEPS
    if not steps:
        typer.echo("every artifact has a version: nothing to train")
        return
    if wait_for_lake and from_csv is None:
        from services.stack.bootstrap import wait_for_lake as wait

        typer.echo(f"the lake holds {wait(settings):,} events")
    results = train_all(settings, from_csv=from_csv, steps=steps,
                        report=lambda r: typer.echo(f"{r.step:<15} {'ok' if r.ok else 'FAILED':<7} {r.seconds:6.1f} s  {r.detail}"))  # fmt: skip
    if not all(r.ok for r in results):
        raise typer.Exit(1)
app.command("evaluate")(evaluate_command)
