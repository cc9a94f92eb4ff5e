"""ClickEvent: every validation rule of a CSV row, the event id and the wire format."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone

import pyarrow as pa
import pytest
from pydantic import ValidationError

from producer.events import (
    CSV_COLUMNS,
    ClickEvent,
    EventSource,
    EventType,
    event_id_for_row,
    new_event_id,
    rejection_reason,
)
from producer.schema import EVENT_SCHEMA, decode_wire
from tests.builders import csv_row

HEX16 = re.compile(r"^[0-9a-f]{16}$")


def row(**overrides: str) -> list[str]:
    return csv_row(**overrides)


def reason_for(fields: list[str]) -> str:
    """The rejection reason of a row the model must refuse."""
    with pytest.raises((ValidationError, ValueError)) as caught:
        ClickEvent.from_csv_fields(fields)
    return rejection_reason(caught.value)


def only_field(reason: str) -> str:
    """The field a one-error reason names (reasons read 'field: message')."""
    assert ";" not in reason, f"expected a single error, got {reason!r}"
    field, _, message = reason.partition(": ")
    assert message, f"reason without a message: {reason!r}"
    return field


def test_the_default_row_is_valid() -> None:
    event = ClickEvent.from_csv_fields(row())
    assert event.event_time == datetime(2019, 10, 1, tzinfo=timezone.utc)
    assert event.event_type is EventType.VIEW
    assert event.product_id == 44600062
    assert event.category_id == 2103807459595387724
    assert event.category_code == "appliances.environment.water_heater"
    assert event.brand == "shiseido"
    assert event.price == pytest.approx(35.79)
    assert event.user_id == 541312140
    assert event.user_session == "72d76fde-8bb3-4e00-8c23-a032dfed738c"
    assert event.source is EventSource.REPLAY


# ---------------------------------------------------------------- rejections


@pytest.mark.parametrize("column", ["product_id", "user_id"])
@pytest.mark.parametrize("value", ["", "   ", "\t"])
def test_missing_or_blank_required_id_is_rejected(column: str, value: str) -> None:
    reason = reason_for(row(**{column: value}))
    assert only_field(reason) == column
    assert "integer" in reason


@pytest.mark.parametrize("column", ["product_id", "user_id", "category_id"])
@pytest.mark.parametrize("value", ["abc", "1.5", "12a", "0x10", "1,000"])
def test_non_integer_id_is_rejected(column: str, value: str) -> None:
    reason = reason_for(row(**{column: value}))
    assert only_field(reason) == column
    assert "valid integer" in reason


@pytest.mark.parametrize("column", ["product_id", "user_id", "category_id"])
def test_negative_id_is_rejected(column: str) -> None:
    reason = reason_for(row(**{column: "-1"}))
    assert only_field(reason) == column
    assert "greater than or equal to 0" in reason


@pytest.mark.parametrize("column", ["product_id", "user_id", "category_id"])
def test_id_beyond_int64_is_rejected(column: str) -> None:
    reason = reason_for(row(**{column: str(2**63)}))
    assert only_field(reason) == column
    assert f"less than or equal to {2**63 - 1}" in reason


@pytest.mark.parametrize("column", ["product_id", "user_id", "category_id"])
def test_largest_int64_id_is_accepted(column: str) -> None:
    event = ClickEvent.from_csv_fields(row(**{column: str(2**63 - 1)}))
    assert getattr(event, column) == 2**63 - 1


@pytest.mark.parametrize("value", ["2019-10-01 00:00:00", "2019-10-01T00:00:00"])
def test_event_time_without_time_zone_is_rejected(value: str) -> None:
    reason = reason_for(row(event_time=value))
    assert only_field(reason) == "event_time"
    assert "time zone" in reason


@pytest.mark.parametrize("value", ["garbage", "", "yesterday", "2019/10/01 00:00:00 UTC", "01-10-2019 00:00:00 UTC"])
def test_garbage_event_time_is_rejected(value: str) -> None:
    reason = reason_for(row(event_time=value))
    assert only_field(reason) == "event_time"


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("2019-02-30 00:00:00 UTC", "day value"),
        ("2019-13-01 00:00:00 UTC", "month value"),
        ("2019-10-01 25:00:00 UTC", ""),
        ("2019-10-01 24:00:00 UTC", ""),
        ("2019-10-01 23:59:60 UTC", ""),
        ("0000-01-01 00:00:00 UTC", "year 0"),
    ],
)
def test_impossible_event_time_is_rejected(value: str, words: str) -> None:
    reason = reason_for(row(event_time=value))
    assert only_field(reason) == "event_time"
    assert words in reason


@pytest.mark.parametrize("value", ["click", "VIEW", "View", " view", "", "purchased"])
def test_unknown_event_type_is_rejected(value: str) -> None:
    reason = reason_for(row(event_type=value))
    assert only_field(reason) == "event_type"
    for known in EventType:
        assert f"'{known.value}'" in reason  # the reason lists what would be accepted


@pytest.mark.parametrize("value", ["-0.01", "-1"])
def test_negative_price_is_rejected(value: str) -> None:
    reason = reason_for(row(price=value))
    assert only_field(reason) == "price"
    assert "greater than or equal to 0" in reason


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "Infinity", "-inf"])
def test_non_finite_price_is_rejected(value: str) -> None:
    reason = reason_for(row(price=value))
    # nan and -inf already fail `ge=0`; +inf reaches the finiteness check.
    assert only_field(reason) == "price"


def test_infinite_price_reason_says_finite() -> None:
    assert "finite" in reason_for(row(price="inf"))


@pytest.mark.parametrize("value", ["", "abc", "1,5"])
def test_missing_or_non_numeric_price_is_rejected(value: str) -> None:
    reason = reason_for(row(price=value))
    assert only_field(reason) == "price"
    assert "number" in reason


@pytest.mark.parametrize("column", ["brand", "category_code", "user_session"])
def test_text_over_256_characters_is_rejected(column: str) -> None:
    reason = reason_for(row(**{column: "x" * 257}))
    assert only_field(reason) == column
    assert "256" in reason


@pytest.mark.parametrize("column", ["brand", "category_code", "user_session"])
def test_text_of_exactly_256_characters_is_accepted(column: str) -> None:
    assert getattr(ClickEvent.from_csv_fields(row(**{column: "é" * 256})), column) == "é" * 256


@pytest.mark.parametrize("count", [0, 1, 8, 10])
def test_wrong_column_count_is_rejected(count: int) -> None:
    fields = (row() * 2)[:count]
    with pytest.raises(ValueError) as caught:
        ClickEvent.from_csv_fields(fields)
    assert not isinstance(caught.value, ValidationError)
    assert rejection_reason(caught.value) == f"expected 9 columns, got {count}"


def test_every_bad_field_is_named_in_the_reason() -> None:
    reason = reason_for(row(product_id="x", price="-1", event_type="nope"))
    fields = [part.split(":")[0] for part in reason.split("; ")]
    assert sorted(fields) == ["event_type", "price", "product_id"]


def test_rejection_reason_of_a_plain_error_is_its_text() -> None:
    assert rejection_reason(RuntimeError("boom")) == "boom"


# ---------------------------------------------------------------- acceptances


@pytest.mark.parametrize("column", ["brand", "category_code", "category_id", "user_session"])
@pytest.mark.parametrize("value", ["", " ", "  \t "])
def test_blank_optional_fields_become_none(column: str, value: str) -> None:
    assert getattr(ClickEvent.from_csv_fields(row(**{column: value})), column) is None


def test_all_optional_fields_blank_at_once() -> None:
    event = ClickEvent.from_csv_fields(row(brand="", category_code="", category_id="", user_session=""))
    assert (event.brand, event.category_code, event.category_id, event.user_session) == (None, None, None, None)


@pytest.mark.parametrize("value", ["\u00a0", "\u3000", " \u2003 "])
def test_unicode_whitespace_only_text_becomes_none(value: str) -> None:
    assert ClickEvent.from_csv_fields(row(brand=value)).brand is None


def test_text_with_surrounding_spaces_is_kept_as_is() -> None:
    assert ClickEvent.from_csv_fields(row(brand=" a b ")).brand == " a b "


@pytest.mark.parametrize("event_type", list(EventType))
def test_every_event_type_is_accepted(event_type: EventType) -> None:
    event = ClickEvent.from_csv_fields(row(event_type=event_type.value))
    assert event.event_type is event_type


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2019-10-01 00:00:00 UTC", datetime(2019, 10, 1, 0, 0, 0, tzinfo=timezone.utc)),
        ("2019-12-31 23:59:59 UTC", datetime(2019, 12, 31, 23, 59, 59, tzinfo=timezone.utc)),
        ("2019-10-01T12:34:56Z", datetime(2019, 10, 1, 12, 34, 56, tzinfo=timezone.utc)),
        ("2019-10-01T02:00:00+02:00", datetime(2019, 10, 1, 0, 0, 0, tzinfo=timezone.utc)),
        ("2019-09-30T19:30:00-04:30", datetime(2019, 10, 1, 0, 0, 0, tzinfo=timezone.utc)),
        ("2019-10-01T00:00:00.250Z", datetime(2019, 10, 1, 0, 0, 0, 250000, tzinfo=timezone.utc)),
    ],
)
def test_event_time_formats_are_converted_to_utc(text: str, expected: datetime) -> None:
    event_time = ClickEvent.from_csv_fields(row(event_time=text)).event_time
    assert event_time == expected
    assert event_time.utcoffset().total_seconds() == 0  # type: ignore[union-attr]


@pytest.mark.parametrize(("text", "value"), [("0", 0.0), ("0.00", 0.0), ("10", 10.0), ("1e3", 1000.0), ("35.79", 35.79)])
def test_valid_prices(text: str, value: float) -> None:
    assert ClickEvent.from_csv_fields(row(price=text)).price == value


def test_ids_are_integers() -> None:
    event = ClickEvent.from_csv_fields(row(product_id="0", user_id="7", category_id="0"))
    assert (event.product_id, event.user_id, event.category_id) == (0, 7, 0)


# ---------------------------------------------------------------- event ids


def test_event_id_is_deterministic_for_a_row() -> None:
    first = ClickEvent.from_csv_fields(row())
    second = ClickEvent.from_csv_fields(row())
    assert first.event_id == second.event_id
    assert HEX16.match(first.event_id)
    assert first.event_id == event_id_for_row(row())


@pytest.mark.parametrize("column", CSV_COLUMNS)
def test_changing_any_field_changes_the_event_id(column: str) -> None:
    changed = {
        "event_time": "2019-10-01 00:00:01 UTC",
        "event_type": "cart",
        "product_id": "44600063",
        "category_id": "",
        "category_code": "",
        "brand": "other",
        "price": "35.80",
        "user_id": "541312141",
        "user_session": "",
    }[column]
    original = ClickEvent.from_csv_fields(row())
    other = ClickEvent.from_csv_fields(row(**{column: changed}))
    assert HEX16.match(other.event_id)
    assert other.event_id != original.event_id


def test_event_id_depends_on_the_raw_text_not_the_parsed_value() -> None:
    # "35.79" and "35.790" are the same price but different rows of the file.
    assert event_id_for_row(row(price="35.79")) != event_id_for_row(row(price="35.790"))


def test_event_id_does_not_depend_on_the_source() -> None:
    assert (
        ClickEvent.from_csv_fields(row(), source=EventSource.LIVE).event_id
        == ClickEvent.from_csv_fields(row(), source=EventSource.REPLAY).event_id
    )


def test_event_id_for_row_is_16_hex_digits() -> None:
    for fields in (row(), [""] * 9, ["ü"] * 9):
        assert HEX16.match(event_id_for_row(fields))


def test_live_events_get_random_ids() -> None:
    payload = {k: v for k, v in zip(CSV_COLUMNS, row())}
    ids = {ClickEvent(**payload).event_id for _ in range(50)}
    assert len(ids) == 50
    assert all(HEX16.match(i) for i in ids)
    assert ClickEvent(**payload).source is EventSource.LIVE
    assert all(HEX16.match(new_event_id()) for _ in range(10))


@pytest.mark.parametrize("bad", ["ABCDEF0123456789", "0123", "0123456789abcdefg", "xyz0123456789abc"])
def test_malformed_event_id_is_rejected(bad: str) -> None:
    payload = {k: v for k, v in zip(CSV_COLUMNS, row())}
    with pytest.raises(ValidationError) as caught:
        ClickEvent(**payload, event_id=bad)
    assert only_field(rejection_reason(caught.value)) == "event_id"


def test_unknown_fields_are_refused() -> None:
    payload = {k: v for k, v in zip(CSV_COLUMNS, row())}
    with pytest.raises(ValidationError) as caught:
        ClickEvent(**payload, color="red")
    assert "color" in rejection_reason(caught.value)


# ---------------------------------------------------------------- wire format


@pytest.mark.parametrize(
    "fields",
    [
        row(),
        row(brand="", category_code="", category_id="", user_session=""),
        row(event_type="remove_from_cart", price="0", brand='qu"ote\\back\nline', category_code="ünï.cødé 😀"),
        row(event_time="2019-10-01T02:00:00.5+02:00", product_id=str(2**63 - 1)),
    ],
)
def test_wire_round_trip(fields: list[str]) -> None:
    event = ClickEvent.from_csv_fields(fields)
    wire = event.to_wire()
    assert isinstance(wire, bytes)
    assert ClickEvent.from_wire(wire) == event
    assert ClickEvent.from_wire(wire.decode()) == event


def test_wire_json_fields() -> None:
    event = ClickEvent.from_csv_fields(row(brand="", event_time="2019-10-01T02:00:00+02:00"))
    data = json.loads(event.to_wire())
    assert set(data) == set(CSV_COLUMNS) | {"event_id", "source"}
    assert data["event_time"] in ("2019-10-01T00:00:00Z", "2019-10-01T00:00:00+00:00")
    assert data["event_type"] == "view"
    assert data["product_id"] == 44600062 and isinstance(data["product_id"], int)
    assert data["category_id"] == 2103807459595387724
    assert data["brand"] is None
    assert data["price"] == pytest.approx(35.79)
    assert data["user_id"] == 541312140
    assert data["event_id"] == event.event_id
    assert data["source"] == "replay"


def test_from_wire_rejects_invalid_json_values() -> None:
    data = json.loads(ClickEvent.from_csv_fields(row()).to_wire())
    data["price"] = -5
    with pytest.raises(ValidationError):
        ClickEvent.from_wire(json.dumps(data))


def test_kafka_key_is_the_user_id() -> None:
    event = ClickEvent.from_csv_fields(row(user_id="000123"))
    assert event.kafka_key == "123"
    assert ClickEvent.from_csv_fields(row(user_id="541312140")).kafka_key == "541312140"


# -- decode_wire: the stream's parser of the clicks topic ------------------------------------


def test_decode_wire_types_every_field_like_the_model() -> None:
    events = [ClickEvent.from_csv_fields(f) for f in (row(), row(brand="", price="0", user_id="7"))]
    table, index, rejected = decode_wire(pa.array([e.to_wire() for e in events], pa.binary()))
    assert rejected == [] and index.tolist() == [0, 1]
    assert table.schema == EVENT_SCHEMA
    for got, event in zip(table.to_pylist(), events):
        assert got == event.model_dump(mode="python") | {"event_type": event.event_type.value, "source": event.source.value}


def test_decode_wire_rejects_bad_values_with_reasons_and_keeps_the_rest_in_place() -> None:
    good = [ClickEvent.from_csv_fields(row(user_id=str(n))).to_wire() for n in range(1, 6)]
    extra_field = good[4][:-1] + b',"referrer": "ad"}'
    values = [good[0], None, b"not json", b"", b'{"event_type": "view"}', good[1], b"[1, 2]", good[2], extra_field]
    table, index, rejected = decode_wire(pa.array(values, pa.binary()))
    assert index.tolist() == [0, 5, 7, 8]  # where each decoded event came from
    assert table.column("user_id").to_pylist() == [1, 2, 3, 5]  # an unknown field is ignored
    assert [i for i, _ in rejected] == [1, 2, 3, 4, 6]
    reasons = dict(rejected)
    assert reasons[1] == "no value"
    assert all(reasons[i].startswith("not a click event") for i in (2, 3, 4, 6))
    assert "missing event_time" in reasons[4] and "user_id" in reasons[4]
    assert decode_wire(pa.array([], pa.binary()))[0].num_rows == 0
