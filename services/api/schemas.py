"""Request and response models of the HTTP API (the request model of POST /events is `ClickEvent`)."""

from __future__ import annotations

import os

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Discriminator, Field, Tag

from producer.events import ClickEvent
from services.api.recommend import Source

#: Most events one POST /events request may carry.
MAX_EVENTS_PER_REQUEST = 10_000


def _one_or_many(value: Any) -> str:
    return "events" if isinstance(value, list) else "event"


#: The body of POST /events: one event, or a list of them. The callable discriminator
#: validates only the matching shape, so a 422 names the real problems and not "is not a list".
EventsBody = Annotated[
    Union[
        Annotated[ClickEvent, Tag("event")],
        Annotated[list[ClickEvent], Field(min_length=1, max_length=MAX_EVENTS_PER_REQUEST), Tag("events")],
    ],
    Discriminator(_one_or_many),
]


class EventsAccepted(BaseModel):
    accepted: int = Field(description="Events the broker acknowledged.")
    topic: str = Field(description="The topic they went to.")


class ErrorBody(BaseModel):
    error: str = Field(description="A stable error code, e.g. artifact_missing, unknown_product.")
    detail: str = Field(description="What went wrong and what to do about it.")


class ProductInfo(BaseModel):
    product_id: int
    category_id: int | None = None
    category_code: str | None = None
    brand: str | None = None
    price: float | None = None


class RecommendedItem(BaseModel):
    product_id: int
    score: float = Field(description="The answering source's score (higher is better; not comparable across sources).")
    category_code: str | None = None
    brand: str | None = None
    price: float | None = None
    reason: str = Field(description="Why this item, in a few words.")


class Fallback(BaseModel):
    source: Source
    reason: str = Field(description="Why the source did not answer: no_artifact, online_store_down, bot, ...")


class Recommendations(BaseModel):
    user_id: int
    session_id: str | None
    category: str | None
    source: Source = Field(description="The source of the fallback chain that answered.")
    items: list[RecommendedItem]
    fallbacks: list[Fallback] = Field(description="Sources tried before the one that answered, with the reason.")
    candidates_version: str | None
    model_version: str | None = Field(description="The ranker version, when the ranker answered.")


class SimilarItem(BaseModel):
    product_id: int
    score: float = Field(description="Cosine similarity of session co-occurrence.")
    category_code: str | None = None
    brand: str | None = None
    price: float | None = None


class SimilarProducts(BaseModel):
    product: ProductInfo
    kind: Literal["also_viewed", "also_bought"]
    items: list[SimilarItem]
    candidates_version: str


class PopularItem(BaseModel):
    product_id: int
    rank: int
    users: int = Field(description="Distinct users who bought (or viewed) it in the window.")
    category_code: str | None = None
    brand: str | None = None
    price: float | None = None


class PopularProducts(BaseModel):
    category: str | None
    metric: Literal["purchase", "view"]
    window_days: int
    items: list[PopularItem]
    candidates_version: str


class FeatureGroupValues(BaseModel):
    group: str
    key: str = Field(description="The Redis key read.")
    written_at: float | None = Field(description="`_ts`: when the group was last written (epoch seconds).")
    age_s: float | None = Field(description="Seconds since `written_at`.")
    features: dict[str, Any] = Field(description="Feature -> value; null = missing (the ranker sees NaN).")


class UserFeatures(BaseModel):
    user_id: int
    session_id: str | None
    at: float = Field(description="The read time (epoch seconds): which sliding window was read.")
    bot: bool = Field(description="Flagged as a bot by the streaming job (gets non-personalised answers).")
    in_candidates: bool | None = Field(description="ALS knows the user (null: no candidates artifact).")
    groups: dict[str, FeatureGroupValues | None] = Field(
        description="user_2m, user_profile and (with session_id) session; null when the store holds nothing."
    )


class PurchaseProbability(BaseModel):
    session_id: str
    user_id: int | None
    probability: float = Field(ge=0, le=1, description="P(the session holds a purchase after its latest event).")
    events: int = Field(description="Session events scored (after removing repeated rows).")
    history_known: bool = Field(description="The user's history came from the user_profile group.")
    model_version: str
    features: dict[str, float | None] = Field(description="The model's input (null = missing).")


class KpiTable(BaseModel):
    name: str = Field(description="The KPI table (the artifact file without .parquet).")
    rows: list[dict[str, Any]]


class AnalyticsAnswer(BaseModel):
    version: str = Field(description="The analytics artifact version.")
    data_range: dict[str, Any] | None = None
    tables: list[KpiTable]


class JourneyStep(BaseModel):
    step: int
    event_time: str
    seconds_since_start: float
    event_type: str
    product_id: int
    category_code: str | None = None
    brand: str | None = None
    price: float | None = None
    user_id: int | None = None


class Journey(BaseModel):
    session_id: str
    source: Literal["online_store", "lake"] = Field(description="Where the events came from.")
    steps: list[JourneyStep]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    pid: int = Field(default_factory=os.getpid, description="The worker process that answered (API_WORKERS may run several).")


class Readiness(BaseModel):
    status: Literal["ready", "degraded", "unavailable"] = Field(
        description="ready: everything answers; degraded: serving, some dependency down; unavailable: cannot serve."
    )
    serving: bool
    checks: dict[str, dict[str, Any]]
    artifacts: dict[str, dict[str, Any]]


class ProductCard(ProductInfo):
    name: str = Field(description='A display name made of brand, category and id, e.g. "Samsung smartphone #1002099".')
    views: int = Field(description="Views of the product in the candidates' data.")
    purchases: int = Field(description="Purchases of the product in the candidates' data.")


class ProductList(BaseModel):
    category: str | None
    q: str | None
    total: int = Field(description="Products that match (before `offset` and `k`).")
    offset: int
    items: list[ProductCard] = Field(description="Most purchased first, then most viewed, then by id.")
    candidates_version: str


class CategoryCount(BaseModel):
    category_code: str
    products: int = Field(description="Products of the catalogue in this exact category.")
    purchases: int = Field(description="Their purchases in the candidates' data.")


class Categories(BaseModel):
    categories: list[CategoryCount] = Field(description="Every category code, most products first.")
    uncategorised: int = Field(description="Products without a category code.")
    candidates_version: str


class StreamQueryStats(BaseModel):
    batch_id: int | None = None
    input_rows: int | None = None
    duration_s: float | None = None
    lag_s: float | None = Field(None, description="Seconds from the batch's oldest broker timestamp to its write.")
    written_at: float | None = None
    age_s: float | None = Field(None, description="Seconds since the batch was written.")


class TrendingProduct(ProductInfo):
    name: str
    views: int
    carts: int
    purchases: int
    distinct_users: int
    activity: float = Field(description="Views, carts and purchases weighted like the `activity` feature (ACTIVITY_WEIGHTS).")


class GroupFreshness(BaseModel):
    group: str
    entities: int = Field(description="Entities with a current window.")
    newest_write_age_s: float | None = Field(description="Seconds since the newest write of the group (`_ts`).")


class ArtifactState(BaseModel):
    version: str | None
    latest: str | None
    loaded_at: float | None
    error: str | None


class LiveSummary(BaseModel):
    at: float = Field(description="When the summary was computed (epoch seconds).")
    events_per_s: float | None = Field(description="Events per second over the current two-minute user windows.")
    events_2m: int = Field(description="Events in the current two-minute user windows.")
    active_users_2m: int = Field(description="Users with an event in the last two minutes.")
    scan_truncated: bool = Field(description="True when the key scan stopped at its cap (the counts are lower bounds).")
    stream: dict[str, StreamQueryStats] = Field(description="The latest micro-batch of each streaming stage.")
    heartbeat_age_s: float | None = Field(description="Seconds since the streaming job's last heartbeat (null: never).")
    trending: list[TrendingProduct] = Field(description="The most active products of the last two minutes.")
    freshness: list[GroupFreshness]
    artifacts: dict[str, ArtifactState]
    offline_metrics: dict[str, Any] = Field(description="Per artifact kind, the evaluation its job stored with it.")
    online_store_error: str | None = Field(None, description="Why the live figures are empty (Redis down), if so.")
