"""Feature definitions: every online feature of clickrec, declared once.

Each `FeatureGroup` names its entity, its time window and TTL, and its features
with their dtypes and how they aggregate events. Everything else reads these
declarations: the streaming job builds its Spark aggregations from them
(`spark_jobs.features`), the Redis codec its keys and field names
(`feature_store.online`), the batch recomputation and the ranker's training set
the same columns, and the API the vector it feeds the model.

What "the last two minutes" means
---------------------------------
The two-minute groups are *sliding* windows of `window` = 2 min that start every
`slide` seconds. At a read time t the reader takes the window that ends at the
first slide boundary after t, ``b = ceil(t / slide) * slide``: it holds the
events with ``b - 2 min <= event_time < b``, i.e. everything up to now, and the
last ``2 min - (b - t)`` of history: between ``2 min - slide`` and 2 min. With the
default 20 s slide, "the last two minutes" is the last 100 to 120 seconds. An
entity with no event in that span has no such window: its features are missing.
(The online store keeps a window as its six ``slide``-long panes and combines them
when it is read: the same values, see feature_store/README.md.)

Sessions are aggregated over the whole session (no window). Long-horizon product
counters are tumbling UTC hours and days; the reader takes the current and the
previous bucket ("this hour so far", "the previous full hour").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum

from producer.events import EventType


@dataclass(frozen=True, kw_only=True)
class Entity:
    """What features describe; `join_key` is the event field that identifies it."""

    name: str
    join_key: str


USER = Entity(name="user", join_key="user_id")
SESSION = Entity(name="session", join_key="user_session")
PRODUCT = Entity(name="product", join_key="product_id")


class Dtype(StrEnum):
    INT = "int"
    FLOAT = "float"
    STRING = "string"
    TIMESTAMP = "timestamp"  # epoch seconds (float) in the store
    INT_LIST = "int_list"  # comma-separated in the store
    JSON = "json"  # a small mapping (id -> number), JSON text in the store


class Agg(StrEnum):
    """How a feature aggregates the events of its window (see spark_jobs.features)."""

    COUNT = "count"  # events (of `event_types`, if given)
    COUNT_DISTINCT = "count_distinct"  # distinct values of `column` (of `event_types`)
    MEAN = "mean"  # mean of `column` over `event_types`
    MAX = "max"  # max of `column` over `event_types`
    WEIGHTED_COUNT = "weighted_count"  # sum of ACTIVITY_WEIGHTS[event_type]
    FIRST_TIME = "first_time"  # earliest event_time
    LAST_TIME = "last_time"  # latest event_time
    LAST_VALUE = "last_value"  # `column` of the latest event (ties: largest event_id)
    LAST_N = "last_n"  # the last `n` values of `column`, oldest first
    DERIVED = "derived"  # computed from other features of the group (see `formula`)


@dataclass(frozen=True, kw_only=True)
class Feature:
    name: str
    dtype: Dtype
    agg: Agg
    description: str
    column: str | None = None
    event_types: tuple[EventType, ...] | None = None
    n: int | None = None
    formula: str | None = None  # for DERIVED: a named formula in spark_jobs.features


class Window(StrEnum):
    SLIDING = "sliding"
    SESSION = "session"  # the whole session, no window
    TUMBLING = "tumbling"
    BATCH = "batch"  # one key per entity, written by a batch job (no window)


@dataclass(frozen=True, kw_only=True)
class FeatureGroup:
    name: str
    entity: Entity
    window: Window
    length: timedelta | None  # window length (sliding / tumbling)
    slide: timedelta | None  # sliding windows only
    ttl: timedelta  # how long Redis keeps a key after its last write
    features: tuple[Feature, ...]
    description: str = ""

    def feature(self, name: str) -> Feature:
        for item in self.features:
            if item.name == name:
                return item
        raise KeyError(f"{self.name} has no feature {name!r}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)


#: Weight of each event type in the "total activity" feature (like AWS's feature-store reference).
ACTIVITY_WEIGHTS: dict[EventType, float] = {
    EventType.VIEW: 1.0,
    EventType.LIKE: 2.0,
    EventType.WISHLIST: 2.0,
    EventType.SAVE_FOR_LATER: 2.0,
    EventType.CART: 4.0,
    EventType.REMOVE_FROM_CART: -2.0,
    EventType.PURCHASE: 8.0,
}

#: Prior strength (in views) of the product health index: its conversion rate is
#: smoothed towards the global rate as if the product had this many extra views
#: at the global rate. 1 view + 1 cart stays near the global rate; 1,000 views +
#: 300 carts keeps its own.
HEALTH_PRIOR_VIEWS = 50.0
#: The global (carts + purchases) / views rate the index shrinks towards; about the
#: October 2019 rate (2.2% carts + 1.75% purchases over 96% views).
HEALTH_GLOBAL_RATE = 0.041

V, C, R, P = EventType.VIEW, EventType.CART, EventType.REMOVE_FROM_CART, EventType.PURCHASE
TWO_MINUTES = timedelta(minutes=2)
DEFAULT_SLIDE = timedelta(seconds=20)


def _count(name: str, types: tuple[EventType, ...] | None, what: str) -> Feature:
    return Feature(name=name, dtype=Dtype.INT, agg=Agg.COUNT, event_types=types, description=what)


USER_2M = FeatureGroup(
    name="user_2m",
    entity=USER,
    window=Window.SLIDING,
    length=TWO_MINUTES,
    slide=DEFAULT_SLIDE,
    ttl=TWO_MINUTES + DEFAULT_SLIDE + timedelta(minutes=1),
    description="What the user did in the last two minutes.",
    features=(
        _count("events", None, "events of any type"),
        _count("views", (V,), "product views"),
        _count("carts", (C,), "add-to-cart events"),
        _count("removes", (R,), "remove-from-cart events"),
        _count("purchases", (P,), "purchases"),
        Feature(name="distinct_products", dtype=Dtype.INT, agg=Agg.COUNT_DISTINCT, column="product_id",
                description="distinct products touched"),
        Feature(name="distinct_categories", dtype=Dtype.INT, agg=Agg.COUNT_DISTINCT, column="category_id",
                description="distinct categories touched"),
        Feature(name="mean_view_price", dtype=Dtype.FLOAT, agg=Agg.MEAN, column="price", event_types=(V,),
                description="mean price of the viewed products"),
        Feature(name="max_view_price", dtype=Dtype.FLOAT, agg=Agg.MAX, column="price", event_types=(V,),
                description="highest price viewed"),
        Feature(name="activity", dtype=Dtype.FLOAT, agg=Agg.WEIGHTED_COUNT,
                description="total activity: events weighted by type (ACTIVITY_WEIGHTS)"),
        Feature(name="last_event_time", dtype=Dtype.TIMESTAMP, agg=Agg.LAST_TIME, description="latest event"),
        Feature(name="last_category", dtype=Dtype.STRING, agg=Agg.LAST_VALUE, column="category_code",
                description="category code of the latest event (missing when blank)"),
        Feature(name="last_brand", dtype=Dtype.STRING, agg=Agg.LAST_VALUE, column="brand",
                description="brand of the latest event (missing when blank)"),
    ),
)  # fmt: skip

PRODUCT_2M = FeatureGroup(
    name="product_2m",
    entity=PRODUCT,
    window=Window.SLIDING,
    length=TWO_MINUTES,
    slide=DEFAULT_SLIDE,
    ttl=TWO_MINUTES + DEFAULT_SLIDE + timedelta(minutes=1),
    description="How the product did in the last two minutes.",
    features=(
        _count("views", (V,), "views"),
        _count("carts", (C,), "add-to-cart events"),
        _count("purchases", (P,), "purchases"),
        Feature(name="distinct_users", dtype=Dtype.INT, agg=Agg.COUNT_DISTINCT, column="user_id",
                description="distinct users who touched it"),
        Feature(name="health", dtype=Dtype.FLOAT, agg=Agg.DERIVED, formula="health",
                description="(carts + purchases + prior * global rate) / (views + prior): "
                            "conversion smoothed towards the global rate"),
    ),
)  # fmt: skip

SESSION_FEATURES = FeatureGroup(
    name="session",
    entity=SESSION,
    window=Window.SESSION,
    length=None,
    slide=None,
    ttl=timedelta(hours=2),
    description="The session so far (kept two hours after its last event).",
    features=(
        _count("events", None, "events so far"),
        _count("carts", (C,), "add-to-cart events so far"),
        Feature(name="distinct_products", dtype=Dtype.INT, agg=Agg.COUNT_DISTINCT, column="product_id",
                description="distinct products so far"),
        Feature(name="first_event_time", dtype=Dtype.TIMESTAMP, agg=Agg.FIRST_TIME, description="session start"),
        Feature(name="last_event_time", dtype=Dtype.TIMESTAMP, agg=Agg.LAST_TIME, description="latest event"),
        Feature(name="duration", dtype=Dtype.FLOAT, agg=Agg.DERIVED, formula="duration",
                description="seconds from the first to the latest event"),
        Feature(name="recent_products", dtype=Dtype.INT_LIST, agg=Agg.LAST_N, column="product_id", n=5,
                description="the last 5 product ids, oldest first"),
        Feature(name="has_cart", dtype=Dtype.INT, agg=Agg.DERIVED, formula="has_cart",
                description="1 when the session has carted something"),
        Feature(name="user_id", dtype=Dtype.INT, agg=Agg.LAST_VALUE, column="user_id",
                description="the session's user"),
    ),
)  # fmt: skip


def _product_counts() -> tuple[Feature, ...]:
    return (
        _count("views", (V,), "views"),
        _count("carts", (C,), "add-to-cart events"),
        _count("purchases", (P,), "purchases"),
    )


PRODUCT_1H = FeatureGroup(
    name="product_1h",
    entity=PRODUCT,
    window=Window.TUMBLING,
    length=timedelta(hours=1),
    slide=None,
    ttl=timedelta(hours=3),
    description="Product counters per UTC hour (the ranker reads this hour and the previous one).",
    features=_product_counts(),
)

PRODUCT_1D = FeatureGroup(
    name="product_1d",
    entity=PRODUCT,
    window=Window.TUMBLING,
    length=timedelta(days=1),
    slide=None,
    ttl=timedelta(days=2, hours=1),
    description="Product counters per UTC day (the ranker reads today and yesterday).",
    features=_product_counts(),
)

USER_PROFILE = FeatureGroup(
    name="user_profile",
    entity=USER,
    window=Window.BATCH,
    length=None,
    slide=None,
    ttl=timedelta(days=30),
    description="The user's history before the last batch run (`clickrec train ranker` materializes it): "
                "the long-term tastes the two-minute windows cannot see.",
    features=(
        Feature(name="as_of", dtype=Dtype.TIMESTAMP, agg=Agg.LAST_TIME,
                description="the end of the history this profile summarises"),
        _count("events", None, "events in the history"),
        _count("views", (V,), "views in the history"),
        _count("carts", (C,), "add-to-cart events in the history"),
        _count("purchases", (P,), "purchases in the history"),
        Feature(name="sessions", dtype=Dtype.INT, agg=Agg.COUNT_DISTINCT, column="user_session",
                description="sessions in the history"),
        Feature(name="purchase_sessions", dtype=Dtype.INT, agg=Agg.DERIVED, formula="purchase_sessions",
                description="sessions with a purchase"),
        Feature(name="mean_price", dtype=Dtype.FLOAT, agg=Agg.MEAN, column="price",
                description="mean price of the products the user touched: their usual price level"),
        Feature(name="category_shares", dtype=Dtype.JSON, agg=Agg.DERIVED, formula="shares",
                column="category_id", n=20,
                description="category_id -> share of the user's weighted activity (top 20)"),
        Feature(name="brand_shares", dtype=Dtype.JSON, agg=Agg.DERIVED, formula="shares", column="brand", n=20,
                description="brand -> share of the user's weighted activity (top 20)"),
        Feature(name="product_last_seen", dtype=Dtype.JSON, agg=Agg.DERIVED, formula="last_seen",
                column="product_id", n=50,
                description="product_id -> epoch of the user's latest event on it (latest 50)"),
        Feature(name="category_last_seen", dtype=Dtype.JSON, agg=Agg.DERIVED, formula="last_seen",
                column="category_id", n=50,
                description="category_id -> epoch of the user's latest event in it (latest 50)"),
        Feature(name="bought_products", dtype=Dtype.INT_LIST, agg=Agg.LAST_N, column="product_id",
                event_types=(P,), n=20,
                description="the last 20 distinct products purchased, oldest first"),
    ),
)  # fmt: skip

#: Every group the streaming job writes, in the order it writes them.
GROUPS: tuple[FeatureGroup, ...] = (USER_2M, PRODUCT_2M, SESSION_FEATURES, PRODUCT_1H, PRODUCT_1D)
#: Groups a batch job materializes into the online store.
BATCH_GROUPS: tuple[FeatureGroup, ...] = (USER_PROFILE,)
GROUPS_BY_NAME: dict[str, FeatureGroup] = {g.name: g for g in GROUPS + BATCH_GROUPS}


@dataclass(frozen=True, kw_only=True)
class BotRule:
    """Users above `max_events` in one two-minute window are flagged as bots for `flag_ttl`."""

    max_events: int = 120  # one event a second for two minutes: no human browses like that
    flag_ttl: timedelta = field(default=timedelta(days=1))


BOT_RULE = BotRule()
