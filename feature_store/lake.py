"""The offline store ("lake"): every accepted click event as Parquet, partitioned by event date.

The streaming job appends each micro-batch (`Lake.write_batch`); the batch jobs
read it back (`Lake.read`) or, instead, decode a CSV directly (`events_from_csv`,
the same readers and validation as the replay). The back-end is chosen by URL:
``file:///path`` or ``s3://bucket/prefix`` (MinIO, or the native S3 endpoint).

Layout: ``<lake>/events/event_date=YYYY-MM-DD/batch-<id>-<n>.parquet``. A
micro-batch that Spark re-runs after a crash rewrites the same file names, so
the lake never holds an event twice.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.json as pajson

from feature_store.settings import Settings
from producer.encode import encode_batch
from producer.readers import read_batches
from producer.schema import EVENT_SCHEMA

log = logging.getLogger(__name__)

PARTITIONING = ds.partitioning(pa.schema([("event_date", pa.string())]), flavor="hive")


def filesystem_for(url: str, settings: Settings) -> tuple[pafs.FileSystem, str]:
    """An Arrow filesystem and base path for a ``file://`` or ``s3://`` URL."""
    parts = urlsplit(url)
    if parts.scheme in ("", "file"):
        path = Path(parts.path if parts.scheme else url)
        path.mkdir(parents=True, exist_ok=True)
        return pafs.LocalFileSystem(), str(path)
    if parts.scheme == "s3":
        endpoint = urlsplit(settings.s3_endpoint_url)
        filesystem = pafs.S3FileSystem(
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            region=settings.s3_region,
            endpoint_override=endpoint.netloc,
            scheme=endpoint.scheme or "http",
        )
        return filesystem, f"{parts.netloc}{parts.path}".rstrip("/")
    raise ValueError(f"unsupported URL {url!r}: use file:///path or s3://bucket/prefix")


def decode_json_events(values: pa.Array) -> pa.Table:
    """Wire JSON strings (nulls skipped) -> a typed table with `EVENT_SCHEMA`."""
    values = pc.drop_null(values)
    if len(values) == 0:
        return EVENT_SCHEMA.empty_table()
    data = "\n".join(values.to_pylist()).encode()
    options = pajson.ParseOptions(explicit_schema=EVENT_SCHEMA, unexpected_field_behavior="error")
    table = pajson.read_json(io.BytesIO(data), parse_options=options)
    return table.select(EVENT_SCHEMA.names).cast(EVENT_SCHEMA)


def events_from_csv(path: Path, *, fmt: str = "auto") -> Iterator[pa.Table]:
    """Typed event batches from a click CSV; invalid rows are skipped (and counted in the log)."""
    rejected = 0
    for batch in read_batches(path, fmt=fmt):
        encoded = encode_batch(batch.table)
        rejected += len(batch.malformed) + len(encoded.rejected)
        yield decode_json_events(encoded.values)
    if rejected:
        log.warning("%s: skipped %d rows that are not valid events (clickrec replay sends them to the DLQ)", path, rejected)


def with_event_date(table: pa.Table) -> pa.Table:
    """Add the partition column: the UTC date of each event as YYYY-MM-DD."""
    dates = pc.strftime(table["event_time"], format="%Y-%m-%d")
    return table.append_column("event_date", dates)


class Lake:
    """Parquet events by date, on a local directory or an S3 bucket."""

    def __init__(self, url: str, settings: Settings) -> None:
        self.url = url
        self._fs, base = filesystem_for(url, settings)
        self._root = f"{base}/events"

    def write_batch(self, table: pa.Table, batch_id: int) -> int:
        """Write one micro-batch (idempotent per `batch_id`); returns the rows written.

        Files are written under ``_staging/`` (which readers skip: a leading ``_``)
        and moved into place whole, so a reader never meets a half-written file.
        """
        if table.num_rows == 0:
            return 0
        table = table.select(EVENT_SCHEMA.names).cast(EVENT_SCHEMA)
        staging = f"{self._root}/_staging"  # one writer (the stream's query) at a time
        written: list[str] = []
        ds.write_dataset(
            with_event_date(table),
            staging,
            filesystem=self._fs,
            format="parquet",
            partitioning=PARTITIONING,
            basename_template=f"batch-{batch_id:012d}-{{i}}.parquet",
            existing_data_behavior="overwrite_or_ignore",
            file_visitor=lambda written_file: written.append(written_file.path),
        )
        for path in written:
            target = self._root + path[len(staging) :]
            self._fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
            self._fs.move(path, target)
        self._fs.delete_dir(staging)
        return table.num_rows

    def dataset(self) -> ds.Dataset:
        return ds.dataset(self._root, filesystem=self._fs, format="parquet", partitioning=PARTITIONING)

    def read(self, start: datetime | None = None, end: datetime | None = None) -> pa.Table:
        """Every event with ``start <= event_time < end`` (either bound optional), typed."""
        try:
            dataset = self.dataset()
        except FileNotFoundError:
            return EVENT_SCHEMA.empty_table()
        condition = None
        if start is not None:
            condition = ds.field("event_time") >= pa.scalar(start, pa.timestamp("us", tz="UTC"))
        if end is not None:
            upper = ds.field("event_time") < pa.scalar(end, pa.timestamp("us", tz="UTC"))
            condition = upper if condition is None else condition & upper
        return dataset.to_table(columns=EVENT_SCHEMA.names, filter=condition).cast(EVENT_SCHEMA)


def load_events(settings: Settings, *, from_csv: Path | None = None) -> pa.Table:
    """All events for a batch job: from a CSV when given, else from the lake."""
    if from_csv is not None:
        return pa.concat_tables(events_from_csv(from_csv))
    return Lake(settings.lake_url, settings).read()
