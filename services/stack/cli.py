"""`clickrec stack up|down|status`: the native stack from the command line."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import typer

from feature_store.settings import get_settings
from services.stack import native
from services.stack.processes import ProcessError

logger = logging.getLogger(__name__)

stack_app = typer.Typer(
    help="The native stack (broker, Redis, S3 endpoint) as local processes; logs and PIDs in RUN_DIR.",
    no_args_is_help=True,
)


def format_table(rows: Sequence[native.ServiceStatus]) -> str:
    """A plain-text table: service, state, pid, endpoint, health and what was done."""
    header = ("SERVICE", "STATE", "PID", "ENDPOINT", "HEALTHY", "NOTE")
    body = [
        (r.name, r.state, str(r.pid or "-"), r.endpoint, "yes" if r.healthy else "no", r.action) for r in rows
    ]
    widths = [max(len(row[i]) for row in (header, *body)) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in (header, *body))


@stack_app.command()
def up(timeout: float = typer.Option(60.0, help="Seconds to wait for every service to become healthy.")) -> None:
    """Start what is not running, wait until healthy, create topics and bucket."""
    settings = get_settings()
    try:
        rows = native.up(settings, timeout=timeout)
    except (native.StackError, ProcessError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(format_table(rows))


@stack_app.command()
def down() -> None:
    """Stop the processes `stack up` started (by their recorded PIDs)."""
    typer.echo(format_table(native.down(get_settings())))


@stack_app.command()
def status() -> None:
    """Show each service's state; exit code 1 when one has crashed."""
    rows = native.status(get_settings())
    typer.echo(format_table(rows))
    crashed = [r for r in rows if r.state == "crashed"]
    for r in crashed:
        typer.echo(f"\n{r.name} crashed: {r.detail}", err=True)
    if crashed:
        raise typer.Exit(1)
