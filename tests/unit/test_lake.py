"""The lake: a batch appears whole or not at all, and writing a batch twice keeps one copy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from feature_store.lake import Lake
from feature_store.settings import Settings
from producer.schema import EVENT_SCHEMA

T0 = datetime(2019, 10, 1, 23, 59, tzinfo=UTC)


def _events(n: int) -> pa.Table:
    rows = [dict(event_time=T0 + timedelta(seconds=30 * i), event_type="view", product_id=i, category_id=None,
                 category_code=None, brand=None, price=1.0, user_id=7, user_session="s", event_id=f"{i:016x}",
                 source="replay") for i in range(n)]  # fmt: skip
    return pa.Table.from_pylist(rows, schema=EVENT_SCHEMA)


def test_batches_land_whole_by_date_and_a_rewrite_keeps_one_copy(tmp_path: Path) -> None:
    lake = Lake(f"file://{tmp_path}", Settings(_env_file=None))
    assert lake.write_batch(_events(4), 1) == 4  # two events on each side of midnight
    assert lake.write_batch(_events(4), 1) == 4  # the same micro-batch again (a re-run)
    assert lake.read().num_rows == 4
    days = sorted(p.name for p in (tmp_path / "events").iterdir())
    assert days == ["event_date=2019-10-01", "event_date=2019-10-02"]  # nothing left in staging
    assert lake.read(start=T0 + timedelta(seconds=60)).num_rows == 2
