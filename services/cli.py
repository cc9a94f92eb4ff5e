"""`clickrec`: the command line of the stack.

Each subcommand is a thin shell over a function in producer/, spark_jobs/ or
services/; `clickrec COMMAND --help` explains its options.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from feature_store.settings import get_settings

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


from services.stack.cli import stack_app  # noqa: E402

app.add_typer(stack_app, name="stack")
