"""Golden tests of the analytics KPIs on a small hand-checked input.

The input (built with `click`) after dedup, times UTC:

    session a, user 1: 2019-10-05 10:00:00 view p10 | 10:00:10 cart p10 (written twice) | 10:01:00 purchase p10
    session b, user 1: 2019-10-06 21:00:00 view p20 | 21:00:05 cart p20 | 21:00:30 view p30      (cart abandoned)
    session c, user 2: 2019-10-05 21:30:00 view p30 | 21:30:20 cart p30 | 21:31:40 purchase p30 + purchase p40
    session d, user 3: 2019-11-02 03:00:00 view p10 | 03:00:40 view p20
    session e, user 3: 2019-11-02 03:30:00 view p50 | 03:30:30 purchase p50

    products: p10 smartphone/apple 500, p20 notebook/lenovo 300, p30 smartphone/samsung 200,
              p40 smartphone/samsung 100, p50 washer/bosch 1000
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from pyspark.sql import DataFrame, SparkSession

from spark_jobs.analytics import kpis
from spark_jobs.schema import EVENT_SPARK_SCHEMA

PHONE, NOTEBOOK, WASHER = "electronics.smartphone", "computers.notebook", "appliances.kitchen.washer"
PRODUCTS = {
    10: (PHONE, "apple", 500.0),
    20: (NOTEBOOK, "lenovo", 300.0),
    30: (PHONE, "samsung", 200.0),
    40: (PHONE, "samsung", 100.0),
    50: (WASHER, "bosch", 1000.0),
}


def at(text: str, plus: float = 0) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc) + timedelta(seconds=plus)


def click(user: int, session: str, product: int, when: datetime, type: str = "view") -> dict:
    """One event row with the product's catalog fields filled in."""
    category, brand, price = PRODUCTS[product]
    return {
        "event_time": when, "event_type": type, "product_id": product, "category_id": 1000 + product,
        "category_code": category, "brand": brand, "price": price, "user_id": user, "user_session": session,
        "event_id": f"{hash((user, session, product, when, type)) & (2**64 - 1):016x}", "source": "replay",
    }  # fmt: skip


def golden_rows() -> list[dict]:
    a, b, c = at("2019-10-05 10:00:00"), at("2019-10-06 21:00:00"), at("2019-10-05 21:30:00")
    d, e = at("2019-11-02 03:00:00"), at("2019-11-02 03:30:00")
    return [
        click(1, "a", 10, a),
        click(1, "a", 10, a + timedelta(seconds=10), "cart"),
        click(1, "a", 10, a + timedelta(seconds=10), "cart"),  # the repeated row
        click(1, "a", 10, a + timedelta(seconds=60), "purchase"),
        click(1, "b", 20, b),
        click(1, "b", 20, b + timedelta(seconds=5), "cart"),
        click(1, "b", 30, b + timedelta(seconds=30)),
        click(2, "c", 30, c),
        click(2, "c", 30, c + timedelta(seconds=20), "cart"),
        click(2, "c", 30, c + timedelta(seconds=100), "purchase"),
        click(2, "c", 40, c + timedelta(seconds=100), "purchase"),
        click(3, "d", 10, d),
        click(3, "d", 20, d + timedelta(seconds=40)),
        click(3, "e", 50, e),
        click(3, "e", 50, e + timedelta(seconds=30), "purchase"),
    ]


@pytest.fixture(scope="module")
def raw(spark: SparkSession) -> DataFrame:
    return spark.createDataFrame(golden_rows(), EVENT_SPARK_SCHEMA)


@pytest.fixture(scope="module")
def events(raw: DataFrame) -> DataFrame:
    return kpis.dedup_events(raw).cache()


def rows(df: DataFrame) -> list[dict]:
    return [r.asDict() for r in df.collect()]


def test_dedup_removes_only_the_repeated_row(raw: DataFrame, events: DataFrame) -> None:
    assert raw.count() == 15
    assert events.count() == 14
    # the cart of session a is kept once
    assert events.where("user_session = 'a' AND event_type = 'cart'").count() == 1


def test_dedup_keeps_rows_that_differ_in_one_key(spark: SparkSession) -> None:
    base = click(1, "a", 10, at("2019-10-05 10:00:00"), "cart")
    rows_in = [base, {**base, "price": 501.0}, {**base, "user_session": "z"}, {**base, "event_type": "view"}, dict(base)]
    df = spark.createDataFrame(rows_in, EVENT_SPARK_SCHEMA)
    assert kpis.dedup_events(df).count() == 4


def test_event_counts(events: DataFrame) -> None:
    # views a1 b2 c1 d2 e1 = 7; carts a b c = 3; purchases a1 c2 e1 = 4; 14 in all
    got = {r["event_type"]: (r["events"], r["share"]) for r in rows(kpis.event_counts(events))}
    assert got == {"view": (7, 7 / 14), "cart": (3, 3 / 14), "purchase": (4, 4 / 14)}


def test_funnel(events: DataFrame) -> None:
    got = {r["level"]: r for r in rows(kpis.funnel(events))}
    # users: 1, 2, 3 viewed; 1, 2 carted; 1, 2, 3 purchased (3 bought without a cart)
    assert got["users"] == {
        "level": "users", "entities": 3, "viewed": 3, "carted": 2, "purchased": 3,
        "cart_rate": 2 / 3, "purchase_rate": 3 / 2, "conversion": 1.0,
    }  # fmt: skip
    # sessions: a..e viewed (5); a, b, c carted (3); a, c, e purchased (3)
    assert got["sessions"] == {
        "level": "sessions", "entities": 5, "viewed": 5, "carted": 3, "purchased": 3,
        "cart_rate": 3 / 5, "purchase_rate": 1.0, "conversion": 3 / 5,
    }  # fmt: skip


def test_cart_conversion_by_category_with_min_support(events: DataFrame) -> None:
    # carts (session, product): (a, p10) phone bought, (b, p20) notebook abandoned, (c, p30) phone bought
    got = rows(kpis.cart_conversion(events, "category_code", min_support=1))
    assert got == [
        {"category_code": PHONE, "carts": 2, "converted": 2, "conversion_rate": 1.0, "abandonment_rate": 0.0},
        {"category_code": NOTEBOOK, "carts": 1, "converted": 0, "conversion_rate": 0.0, "abandonment_rate": 1.0},
    ]
    # with min_support 2 the one-cart notebook group is left out
    assert [r["category_code"] for r in rows(kpis.cart_conversion(events, "category_code", min_support=2))] == [PHONE]


def test_cart_conversion_by_brand(events: DataFrame) -> None:
    got = {r["brand"]: (r["carts"], r["converted"], r["abandonment_rate"]) for r in rows(kpis.cart_conversion(events, "brand", 1))}
    assert got == {"apple": (1, 1, 0.0), "lenovo": (1, 0, 1.0), "samsung": (1, 1, 0.0)}
    with pytest.raises(ValueError):
        kpis.cart_conversion(events, "user_id")


def test_categories_rank_by_purchases_and_revenue(events: DataFrame) -> None:
    # phone: p10 500 + p30 200 + p40 100 = 800 over 3 purchases by users 1 and 2; washer: p50 1000, 1 purchase
    assert rows(kpis.categories(events)) == [
        {"category_code": WASHER, "purchases": 1, "revenue": 1000.0, "buyers": 1, "rank_by_purchases": 2, "rank_by_revenue": 1},
        {"category_code": PHONE, "purchases": 3, "revenue": 800.0, "buyers": 2, "rank_by_purchases": 1, "rank_by_revenue": 2},
    ]


def test_top_brands_within_each_category(events: DataFrame) -> None:
    # phone: apple 500 (1 purchase) before samsung 300 (2 purchases); washer: bosch 1000
    assert rows(kpis.top_brands_by_category(events, k=5)) == [
        {"category_code": WASHER, "rank": 1, "brand": "bosch", "purchases": 1, "revenue": 1000.0},
        {"category_code": PHONE, "rank": 1, "brand": "apple", "purchases": 1, "revenue": 500.0},
        {"category_code": PHONE, "rank": 2, "brand": "samsung", "purchases": 2, "revenue": 300.0},
    ]
    assert [r["brand"] for r in rows(kpis.top_brands_by_category(events, k=1))] == ["bosch", "apple"]


def test_purchases_by_hour_and_day_in_utc(events: DataFrame) -> None:
    # purchases at 10:01 (a, 500), 21:31:40 twice (c, 300), 03:30:30 (e, 1000)
    assert rows(kpis.purchases_by_hour(events)) == [
        {"hour": 3, "purchases": 1, "revenue": 1000.0, "share": 0.25, "time_zone": "UTC"},
        {"hour": 10, "purchases": 1, "revenue": 500.0, "share": 0.25, "time_zone": "UTC"},
        {"hour": 21, "purchases": 2, "revenue": 300.0, "share": 0.5, "time_zone": "UTC"},
    ]
    # days: Nov 2 (e) and Oct 5 (a, c)
    assert rows(kpis.purchases_by_day_of_month(events)) == [
        {"day": 2, "purchases": 1, "revenue": 1000.0, "share": 0.25, "time_zone": "UTC"},
        {"day": 5, "purchases": 3, "revenue": 800.0, "share": 0.75, "time_zone": "UTC"},
    ]


def test_time_buckets_refuse_a_non_utc_session(spark: SparkSession, events: DataFrame) -> None:
    spark.conf.set("spark.sql.session.timeZone", "Europe/Moscow")
    try:
        with pytest.raises(ValueError, match="UTC"):
            kpis.purchases_by_hour(events)
    finally:
        spark.conf.set("spark.sql.session.timeZone", "UTC")


def test_revenue_trends(events: DataFrame) -> None:
    assert rows(kpis.revenue_daily(events)) == [
        {"date": "2019-10-05", "purchases": 3, "revenue": 800.0, "buyers": 2, "time_zone": "UTC"},
        {"date": "2019-11-02", "purchases": 1, "revenue": 1000.0, "buyers": 1, "time_zone": "UTC"},
    ]
    assert rows(kpis.revenue_monthly(events)) == [
        {"month": "2019-10", "purchases": 3, "revenue": 800.0, "buyers": 2, "time_zone": "UTC"},
        {"month": "2019-11", "purchases": 1, "revenue": 1000.0, "buyers": 1, "time_zone": "UTC"},
    ]


def test_top_customers(events: DataFrame) -> None:
    # spend: user 3 1000, user 1 500, user 2 300 (2 purchases in one session)
    assert rows(kpis.top_customers(events, k=3)) == [
        {"rank": 1, "user_id": 3, "purchases": 1, "spend": 1000.0, "sessions": 1},
        {"rank": 2, "user_id": 1, "purchases": 1, "spend": 500.0, "sessions": 1},
        {"rank": 3, "user_id": 2, "purchases": 2, "spend": 300.0, "sessions": 1},
    ]
    assert [r["user_id"] for r in rows(kpis.top_customers(events, k=1))] == [3]


def test_session_stats(events: DataFrame) -> None:
    # lengths a 60, b 30, c 100, d 40, e 30 -> mean 52, median 40; events 3 3 4 2 2 -> 2.8;
    # sessions with a purchase a 3, c 4, e 2 -> 3.0
    assert rows(kpis.session_stats(events)) == [
        {"sessions": 5, "mean_length_s": 52.0, "median_length_s": 40.0, "mean_events": 2.8, "mean_events_with_purchase": 3.0}
    ]


def test_session_journey_in_order(events: DataFrame) -> None:
    got = rows(kpis.session_journey(events, "c"))
    # same-second purchases keep product order; steps count from 1
    assert [(r["step"], r["seconds_since_start"], r["event_type"], r["product_id"]) for r in got] == [
        (1, 0.0, "view", 30),
        (2, 20.0, "cart", 30),
        (3, 100.0, "purchase", 30),
        (4, 100.0, "purchase", 40),
    ]
    assert kpis.session_journey(events, "no-such-session").count() == 0


def test_session_journey_puts_cart_before_a_same_second_purchase(spark: SparkSession) -> None:
    t = at("2019-10-05 10:00:00")
    df = spark.createDataFrame([click(1, "s", 10, t, "purchase"), click(1, "s", 10, t, "cart"), click(1, "s", 10, t)], EVENT_SPARK_SCHEMA)
    assert [r["event_type"] for r in rows(kpis.session_journey(df, "s"))] == ["view", "cart", "purchase"]
