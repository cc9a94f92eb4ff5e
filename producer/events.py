"""The click event: the single source of clickrec's event schema.

Everything else derives from `ClickEvent`: the CSV row parser (`from_csv_fields`),
the vectorized replay encoder (checked against this model in tests), the Kafka
wire format (`to_wire`), the API's request model and the Spark schema. Change a
field here and every one of them follows.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from enum import StrEnum
from typing import Annotated, Any

import xxhash
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator


class EventType(StrEnum):
    """What the shopper did. The first four come from the OpenCDP files; the rest from the live shop."""

    VIEW = "view"
    CART = "cart"
    REMOVE_FROM_CART = "remove_from_cart"
    PURCHASE = "purchase"
    LIKE = "like"
    WISHLIST = "wishlist"
    SAVE_FOR_LATER = "save_for_later"


class EventSource(StrEnum):
    """Where an event entered the system."""

    REPLAY = "replay"  # a CSV row replayed by `clickrec replay`
    LIVE = "live"  # a click from the web shop or `POST /events`


#: Column order of the OpenCDP / REES46 "eCommerce behavior data" CSV files.
CSV_COLUMNS: tuple[str, ...] = (
    "event_time",
    "event_type",
    "product_id",
    "category_id",
    "category_code",
    "brand",
    "price",
    "user_id",
    "user_session",
)

#: The OpenCDP timestamp layout, e.g. ``2019-10-01 00:00:00 UTC``.
CSV_TIME_FORMAT = "%Y-%m-%d %H:%M:%S UTC"


def _blank_to_none(value: Any) -> Any:
    if isinstance(value, str) and value.strip() == "":
        return None
    return value


def _parse_time(value: Any) -> Any:
    """Accept the CSV layout (``... UTC``) besides ISO 8601; naive values are refused."""
    if isinstance(value, str) and value.endswith(" UTC"):
        return value[: -len(" UTC")] + "+00:00"
    return value


OptionalText = Annotated[Annotated[str, Field(max_length=256)] | None, BeforeValidator(_blank_to_none)]
RequiredId = Annotated[int, Field(ge=0, le=2**63 - 1)]
OptionalId = Annotated[RequiredId | None, BeforeValidator(_blank_to_none)]


#: Bytes of an event id (shown as twice as many hex digits): one XXH3-64 hash.
EVENT_ID_BYTES = 8


def event_id_for_row(fields: Sequence[str]) -> str:
    """Deterministic id of a CSV row: the same row replayed twice gets the same id.

    The id is the XXH3-64 hash (a fixed, specified algorithm) of the row's nine fields (comma-joined, as they appear in
    the file), so it does not depend on the file name, the line number, or a
    `--rebase-time` shift. Identical rows (the real October file repeats some cart
    rows at the same second) share an id on purpose: downstream they are one event.
    """
    return f"{xxhash.xxh3_64_intdigest(','.join(fields).encode()):016x}"


def new_event_id() -> str:
    """A fresh id for a live event (same width as the CSV ids)."""
    return uuid.uuid4().hex[: 2 * EVENT_ID_BYTES]


class ClickEvent(BaseModel):
    """One click, as it travels on the `clicks` topic (JSON, key = user_id)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)

    event_time: Annotated[datetime, BeforeValidator(_parse_time)] = Field(
        description="When the shopper acted, in UTC (ISO 8601 or the CSV's 'YYYY-MM-DD HH:MM:SS UTC')."
    )
    event_type: EventType = Field(description="view, cart, remove_from_cart, purchase, like, wishlist, save_for_later.")
    product_id: RequiredId = Field(description="The product acted on.")
    category_id: OptionalId = Field(None, description="The product's category id.")
    category_code: OptionalText = Field(None, description="Dotted category path, e.g. electronics.smartphone.")
    brand: OptionalText = Field(None, description="Brand name, lower case in the source data.")
    price: float = Field(ge=0, description="Price in the shop's currency (USD in the OpenCDP files).")
    user_id: RequiredId = Field(description="The shopper; also the Kafka key, so a user's events stay in order.")
    user_session: OptionalText = Field(None, description="Session id; a user's visit.")
    event_id: str = Field(
        default_factory=new_event_id,
        pattern=r"^[0-9a-f]{16}$",
        description="16 hex digits; deterministic for a CSV row, random for a live click.",
    )
    source: EventSource = Field(EventSource.LIVE, description="replay or live.")

    @field_validator("event_time")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("event_time needs a time zone (e.g. a trailing 'Z' or ' UTC')")
        return value.astimezone(timezone.utc)

    @field_validator("price")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("price must be a finite number")
        return value

    @classmethod
    def from_csv_fields(cls, fields: Sequence[str], source: EventSource = EventSource.REPLAY) -> ClickEvent:
        """Validate one OpenCDP row (nine strings in `CSV_COLUMNS` order).

        Raises `pydantic.ValidationError` (its message names every bad field) or
        `ValueError` when the row has the wrong number of columns.
        """
        if len(fields) != len(CSV_COLUMNS):
            raise ValueError(f"expected {len(CSV_COLUMNS)} columns, got {len(fields)}")
        values: dict[str, Any] = dict(zip(CSV_COLUMNS, fields))
        return cls(**values, event_id=event_id_for_row(fields), source=source)

    @property
    def kafka_key(self) -> str:
        return str(self.user_id)

    def to_wire(self) -> bytes:
        """The JSON value put on the `clicks` topic."""
        return self.model_dump_json().encode()

    @classmethod
    def from_wire(cls, value: bytes | str) -> ClickEvent:
        return cls.model_validate_json(value)


def rejection_reason(error: Exception) -> str:
    """A one-line, human-readable reason for a rejected row (what the DLQ records)."""
    errors = getattr(error, "errors", None)
    if callable(errors):
        parts = []
        for item in errors():
            where = ".".join(str(p) for p in item.get("loc", ())) or "row"
            parts.append(f"{where}: {item.get('msg')}")
        return "; ".join(parts)
    return str(error)
