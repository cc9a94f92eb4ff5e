"""Streaming readers for the click CSV files, in bounded memory.

A file (plain, ``.gz`` or ``.zip``; LF or CRLF; with or without a header row) is
read in blocks of whole lines and each block is parsed by Arrow into a table of
*strings* in the canonical OpenCDP column order (`CSV_COLUMNS`). Nothing is
validated here: `producer.encode` decides what is a good event. Rows with the
wrong number of columns cannot become a table row; they come back as
`MalformedRow`s so that the replay sends them to the dead-letter topic.

Two layouts are known:

- ``opencdp``: the REES46 / OpenCDP "eCommerce behavior data from multi category
  store" files (`CSV_COLUMNS`);
- ``electronics``: the "purchase history from electronics store" file
  (``event_time,order_id,product_id,category_id,category_code,brand,price,user_id``):
  every row is a purchase, the order id becomes the session id.
"""

from __future__ import annotations

import gzip
import io
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from producer.events import CSV_COLUMNS, EventType

#: Bytes per parsed block: big enough for Arrow to be efficient, small enough for flat memory.
DEFAULT_BLOCK_BYTES = 8 << 20


@dataclass(frozen=True)
class CsvFormat:
    """A CSV layout and how to turn it into the canonical OpenCDP columns."""

    name: str
    columns: tuple[str, ...]
    to_canonical: Callable[[pa.Table], pa.Table]


def _opencdp_to_canonical(table: pa.Table) -> pa.Table:
    return table


def _electronics_to_canonical(table: pa.Table) -> pa.Table:
    n = table.num_rows
    purchase = pa.array([EventType.PURCHASE.value] * n, pa.string()) if n else pa.array([], pa.string())
    order = table["order_id"]
    session = pc.if_else(pc.equal(order, ""), "", pc.binary_join_element_wise("order-", order, ""))
    columns = {
        "event_time": table["event_time"],
        "event_type": purchase,
        "product_id": table["product_id"],
        "category_id": table["category_id"],
        "category_code": table["category_code"],
        "brand": table["brand"],
        "price": table["price"],
        "user_id": table["user_id"],
        "user_session": session,
    }
    return pa.table([columns[c] for c in CSV_COLUMNS], names=list(CSV_COLUMNS))


FORMATS: dict[str, CsvFormat] = {
    "opencdp": CsvFormat("opencdp", CSV_COLUMNS, _opencdp_to_canonical),
    "electronics": CsvFormat(
        "electronics",
        ("event_time", "order_id", "product_id", "category_id", "category_code", "brand", "price", "user_id"),
        _electronics_to_canonical,
    ),
}


@dataclass(frozen=True)
class MalformedRow:
    """A line that is not a row of the expected layout (e.g. a truncated last line)."""

    text: str
    reason: str


@dataclass
class RawBatch:
    """One parsed block: good-shaped rows as strings, plus the lines that were not rows."""

    table: pa.Table  # string columns in CSV_COLUMNS order
    malformed: list[MalformedRow] = field(default_factory=list)

    @property
    def rows_read(self) -> int:
        return self.table.num_rows + len(self.malformed)


@contextmanager
def open_binary(path: Path) -> Iterator[BinaryIO]:
    """Open a plain, gzip or zip (first member) file for streaming reads."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file (pass the path of an OpenCDP CSV, .csv.gz or .zip)")
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as stream:
            yield stream  # type: ignore[misc]
    elif path.suffix == ".zip":
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.namelist() if not m.endswith("/")]
            if not members:
                raise ValueError(f"{path}: the zip archive is empty")
            with archive.open(members[0]) as stream:
                yield stream  # type: ignore[misc]
    else:
        with open(path, "rb") as stream:
            yield stream


def iter_line_blocks(stream: BinaryIO, block_bytes: int = DEFAULT_BLOCK_BYTES) -> Iterator[bytes]:
    """Yield blocks of whole lines; the last block may lack its trailing newline."""
    carry = b""
    while True:
        chunk = stream.read(block_bytes)
        if not chunk:
            break
        data = carry + chunk
        cut = data.rfind(b"\n")
        if cut < 0:
            carry = data
            continue
        carry = data[cut + 1 :]
        yield data[: cut + 1]
    if carry.strip():
        yield carry


def _nth_line_end(block: bytes, n: int) -> int:
    """Offset just after the n-th newline of `block` (n >= 1), or len(block) if fewer."""
    ends = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10)
    return int(ends[n - 1]) + 1 if n <= len(ends) else len(block)


def _count_lines(block: bytes) -> int:
    return block.count(b"\n") + (0 if block.endswith(b"\n") else 1)


def detect_format(first_line: str) -> tuple[CsvFormat, bool]:
    """Which layout a file has, and whether `first_line` is its header row."""
    names = [c.strip().strip('"').lower() for c in first_line.strip().split(",")]
    for fmt in FORMATS.values():
        if tuple(names) == fmt.columns:
            return fmt, True
    by_width = {len(f.columns): f for f in FORMATS.values()}
    if len(names) in by_width:
        return by_width[len(names)], False
    raise ValueError(
        f"cannot tell the CSV layout from its first line ({len(names)} columns): expected "
        + " or ".join(f"{f.name} ({','.join(f.columns)})" for f in FORMATS.values())
    )


def parse_block(block: bytes, fmt: CsvFormat) -> RawBatch:
    """Parse one block of whole lines into canonical string columns (pure)."""
    malformed: list[MalformedRow] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        malformed.append(
            MalformedRow(
                text=(row.text or "").rstrip("\r\n"),
                reason=f"expected {row.expected_columns} columns, got {row.actual_columns}",
            )
        )
        return "skip"

    table = pacsv.read_csv(
        pa.py_buffer(block),
        read_options=pacsv.ReadOptions(column_names=list(fmt.columns), use_threads=False, block_size=len(block) + 1),
        parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
        convert_options=pacsv.ConvertOptions(
            column_types={c: pa.string() for c in fmt.columns},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    return RawBatch(table=fmt.to_canonical(table).combine_chunks(), malformed=malformed)


def read_batches(
    path: Path,
    *,
    fmt: str = "auto",
    skip: int = 0,
    limit: int | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    on_bytes: Callable[[int], None] | None = None,
) -> Iterator[RawBatch]:
    """Stream `path` as `RawBatch`es of at most about `block_bytes` each.

    `skip` and `limit` count data lines (the header is not a data line).
    `on_bytes` is told how many input bytes each block consumed (progress bars).
    """
    with open_binary(path) as stream:
        blocks = iter_line_blocks(stream, block_bytes)
        first = next(blocks, None)
        if first is None:
            return
        first_line = first.split(b"\n", 1)[0].decode("utf-8", errors="replace")
        detected, has_header = detect_format(first_line)
        layout = detected if fmt == "auto" else FORMATS[fmt]
        if has_header:
            header_end = _nth_line_end(first, 1)
            if on_bytes:
                on_bytes(header_end)
            first = first[header_end:]
        to_skip, remaining = skip, limit

        def blocks_with_first() -> Iterator[bytes]:
            if first:
                yield first
            yield from blocks

        for block in blocks_with_first():
            if on_bytes:
                on_bytes(len(block))
            if to_skip:
                lines = _count_lines(block)
                if lines <= to_skip:
                    to_skip -= lines
                    continue
                block = block[_nth_line_end(block, to_skip) :]
                to_skip = 0
            if remaining is not None:
                if remaining <= 0:
                    return
                lines = _count_lines(block)
                if lines > remaining:
                    block = block[: _nth_line_end(block, remaining)]
                remaining -= min(lines, remaining)
            if block.strip():
                yield parse_block(block, layout)


def iter_text_lines(path: Path) -> Iterator[str]:
    """Decoded lines of a (possibly compressed) file; for tests and small tools."""
    with open_binary(path) as stream:
        yield from io.TextIOWrapper(stream, encoding="utf-8", newline=None)
