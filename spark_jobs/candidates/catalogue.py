"""The product catalogue: what the data says about each product, for reasons, filters and ranker features.

The click files carry no product names; a product is known by its category,
brand and price as seen in its events. Each product gets its latest non-blank
category and brand, its latest price, and its view / cart / purchase counts and
distinct users over the whole data (bots are excluded by the caller).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from spark_jobs.candidates.lookup import index_in_sorted

CATALOGUE_SCHEMA = pa.schema([
    ("product_id", pa.int64()),
    ("category_id", pa.int64()),
    ("category_code", pa.string()),
    ("brand", pa.string()),
    ("price", pa.float64()),
    ("views", pa.int64()),
    ("carts", pa.int64()),
    ("purchases", pa.int64()),
    ("users", pa.int64()),
])  # fmt: skip


def _latest_valid(events: pa.Table, column: str) -> pa.Table:
    """product_id -> the column's value in the product's latest event where it is not null."""
    rows = events.select(["product_id", "event_time", column]).filter(pc.is_valid(events[column]))
    if column in ("category_code", "brand"):
        rows = rows.filter(pc.not_equal(rows[column], ""))
    rows = rows.sort_by([("product_id", "ascending"), ("event_time", "descending")])
    if rows.num_rows == 0:
        return pa.table({"product_id": pa.array([], pa.int64()), column: pa.array([], events.schema.field(column).type)})
    ids = rows["product_id"].to_numpy()
    first = pc.indices_nonzero(pa.array(ids[1:] != ids[:-1])).to_numpy() + 1
    take = np.r_[0, first]
    return rows.take(pa.array(take)).select(["product_id", column])


def product_catalogue(events: pa.Table) -> pa.Table:
    """One row per product in `events` (`CATALOGUE_SCHEMA`), sorted by product_id."""
    if events.num_rows == 0:
        return CATALOGUE_SCHEMA.empty_table()
    counts = events.select(["product_id", "user_id"]).group_by("product_id").aggregate(
        [("user_id", "count_distinct")]
    ).rename_columns(["product_id", "users"])
    for event_type, name in (("view", "views"), ("cart", "carts"), ("purchase", "purchases")):
        typed = events.filter(pc.equal(events["event_type"], event_type)).select(["product_id"])
        per = typed.group_by("product_id").aggregate([("product_id", "count")]).rename_columns(["product_id", name])
        counts = counts.join(per, "product_id", join_type="left outer")
        counts = counts.set_column(counts.schema.get_field_index(name), name, pc.fill_null(counts[name], 0))
    for column in ("category_id", "category_code", "brand", "price"):
        counts = counts.join(_latest_valid(events, column), "product_id", join_type="left outer")
    return counts.select(CATALOGUE_SCHEMA.names).cast(CATALOGUE_SCHEMA).sort_by("product_id")


class Catalogue:
    """The catalogue in memory, looked up by product id in bulk (numpy arrays sorted by product_id)."""

    def __init__(self, table: pa.Table) -> None:
        table = table.sort_by("product_id")
        self.product_ids: np.ndarray = table["product_id"].to_numpy()
        self.category_ids: np.ndarray = pc.fill_null(table["category_id"], -1).to_numpy()  # -1 = unknown
        self.category_codes: np.ndarray = np.asarray(table["category_code"].to_pylist(), dtype=object)
        self.brands: np.ndarray = np.asarray(table["brand"].to_pylist(), dtype=object)
        self.prices: np.ndarray = pc.fill_null(table["price"], np.nan).to_numpy()
        self.views: np.ndarray = table["views"].to_numpy()
        self.purchases: np.ndarray = table["purchases"].to_numpy()

    def __len__(self) -> int:
        return len(self.product_ids)

    def __contains__(self, product_id: object) -> bool:
        return bool(self.index_of(np.asarray([product_id], np.int64))[0] >= 0)

    def index_of(self, product_ids: np.ndarray) -> np.ndarray:
        """Row of each product id; -1 for products the catalogue does not know."""
        return index_in_sorted(self.product_ids, product_ids)

    def describe(self, product_id: int) -> dict | None:
        """category, brand and price of one product; None when unknown."""
        i = int(self.index_of(np.asarray([product_id]))[0])
        if i < 0:
            return None
        price = float(self.prices[i])
        return {
            "product_id": int(product_id),
            "category_id": int(self.category_ids[i]) if self.category_ids[i] >= 0 else None,
            "category_code": self.category_codes[i],
            "brand": self.brands[i],
            "price": None if np.isnan(price) else price,
        }
