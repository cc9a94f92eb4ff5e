from datetime import UTC, datetime, timedelta

import pyarrow as pa

from producer.schema import EVENT_SCHEMA
from spark_jobs.candidates.catalogue import CATALOGUE_SCHEMA, Catalogue, product_catalogue

T0 = datetime(2019, 10, 1, tzinfo=UTC)


def _events(rows: list[dict]) -> pa.Table:
    full = []
    for i, row in enumerate(rows):
        base = {name: None for name in EVENT_SCHEMA.names}
        base.update(event_time=T0 + timedelta(seconds=i), user_session="s", event_id=f"e{i}")
        base.update(row)
        full.append(base)
    return pa.Table.from_pylist(full, schema=EVENT_SCHEMA)


def test_latest_non_blank_metadata_and_counts() -> None:
    events = _events([
        dict(event_type="view", product_id=1, category_id=10, category_code="a.b", brand="acme", price=5.0, user_id=1),
        dict(event_type="cart", product_id=1, category_id=10, category_code="", brand=None, price=6.0, user_id=2),
        dict(event_type="view", product_id=1, category_id=10, category_code=None, brand="", price=7.0, user_id=2),
        dict(event_type="purchase", product_id=2, category_id=None, category_code=None, brand=None, price=1.0, user_id=1),
    ])  # fmt: skip
    rows = {r["product_id"]: r for r in product_catalogue(events).to_pylist()}
    assert rows[1] == dict(product_id=1, category_id=10, category_code="a.b", brand="acme", price=7.0,
                           views=2, carts=1, purchases=0, users=2)  # fmt: skip
    assert rows[2]["category_code"] is None and rows[2]["brand"] is None and rows[2]["purchases"] == 1


def test_empty_events_give_empty_catalogue() -> None:
    assert product_catalogue(EVENT_SCHEMA.empty_table()).schema == CATALOGUE_SCHEMA


def test_lookup_in_memory() -> None:
    events = _events([
        dict(event_type="view", product_id=5, category_id=10, category_code="a.b", brand="acme", price=5.0, user_id=1),
        dict(event_type="view", product_id=3, category_id=None, category_code=None, brand=None, price=2.0, user_id=1),
    ])  # fmt: skip
    catalogue = Catalogue(product_catalogue(events))
    assert catalogue.index_of([3, 4, 5]).tolist() == [0, -1, 1]
    assert 5 in catalogue and 4 not in catalogue and len(catalogue) == 2
    assert catalogue.describe(5) == dict(product_id=5, category_id=10, category_code="a.b", brand="acme", price=5.0)
    assert catalogue.describe(3)["category_id"] is None and catalogue.describe(4) is None
