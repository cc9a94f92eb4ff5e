"""Small builders and shared paths that keep tests short."""

from __future__ import annotations

from pathlib import Path

import pytest

from producer.events import CSV_COLUMNS

#: `../shared/data` beside the repository: the real samples (third-party data, never committed).
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SAMPLE = SHARED_DATA / "opencdp-2019-Oct-head.csv"
needs_sample = pytest.mark.skipif(
    not SAMPLE.exists(), reason=f"the real OpenCDP sample is not at {SAMPLE} (it ships beside the repo in CI only)"
)

#: A valid OpenCDP row (the first row of the October 2019 file, with a category code).
GOOD_ROW = {
    "event_time": "2019-10-01 00:00:00 UTC",
    "event_type": "view",
    "product_id": "44600062",
    "category_id": "2103807459595387724",
    "category_code": "appliances.environment.water_heater",
    "brand": "shiseido",
    "price": "35.79",
    "user_id": "541312140",
    "user_session": "72d76fde-8bb3-4e00-8c23-a032dfed738c",
}


def csv_row(**overrides: str) -> list[str]:
    """The nine CSV strings of a valid row, with some fields replaced."""
    unknown = set(overrides) - set(CSV_COLUMNS)
    assert not unknown, f"not CSV columns: {unknown}"
    values = {**GOOD_ROW, **overrides}
    return [values[c] for c in CSV_COLUMNS]
