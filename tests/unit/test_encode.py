"""encode_batch: the vectorized fast path plus the pydantic slow path never disagree with ClickEvent."""

from __future__ import annotations

import csv
import json
import math
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from producer.encode import EncodedBatch, encode_batch
from producer.events import CSV_COLUMNS, ClickEvent, EventSource, EventType, rejection_reason
from tests.builders import SAMPLE, csv_row


def row(**overrides: str) -> list[str]:
    return csv_row(**overrides)


def table_of(rows: list[list[str]]) -> pa.Table:
    return pa.table({c: pa.array([r[i] for r in rows], pa.string()) for i, c in enumerate(CSV_COLUMNS)})


def model(fields: list[str], source: EventSource = EventSource.REPLAY) -> ClickEvent | str:
    """What ClickEvent alone says of a row: the event, or the rejection reason."""
    try:
        return ClickEvent.from_csv_fields(fields, source=source)
    except (ValidationError, ValueError) as error:
        return rejection_reason(error)


def outcomes(batch: EncodedBatch) -> list[dict[str, Any] | tuple[str, str]]:
    """Per input row: the decoded JSON when accepted, else (raw text, reason); checks the batch's shape."""
    values = batch.values.to_pylist()
    keys = batch.keys.to_pylist()
    assert len(keys) == len(values) == len(batch.event_seconds)
    rejected = iter(batch.rejected)
    result: list[dict[str, Any] | tuple[str, str]] = []
    for key, value, seconds in zip(keys, values, batch.event_seconds):
        if value is None:
            assert key is None
            assert math.isnan(seconds)
            result.append(next(rejected))
        else:
            try:
                data = json.loads(value)
            except json.JSONDecodeError:
                pytest.fail(f"invalid JSON on the wire: {value!r}")
            assert key == str(data["user_id"])
            assert not math.isnan(seconds)
            result.append(data)
    assert next(rejected, None) is None, "more rejections than null values"
    assert batch.accepted == sum(isinstance(r, dict) for r in result)
    return result


def assert_agrees_with_model(
    rows: list[list[str]], source: EventSource = EventSource.REPLAY, shift: timedelta = timedelta(0)
) -> EncodedBatch:
    batch = encode_batch(table_of(rows), source=source, shift=shift)
    for fields, got, seconds in zip(rows, outcomes(batch), batch.event_seconds):
        expected = model(fields, source)
        if isinstance(expected, str):
            assert got == (",".join(fields), expected), f"row {fields!r} should be rejected"
        else:
            if shift:
                expected = expected.model_copy(update={"event_time": expected.event_time + shift})
            assert isinstance(got, dict), f"row {fields!r} was rejected: {got!r}"
            assert got == json.loads(expected.to_wire()), f"row {fields!r}"
            assert seconds == expected.event_time.timestamp()
    return batch


# ---------------------------------------------------------------- examples


def test_accepted_rows_equal_the_model_json() -> None:
    rows = [
        row(),
        row(brand="", category_code="", category_id="", user_session=""),
        row(event_type="purchase", price="0", product_id="0", user_id="1"),
        row(price="1234.5", category_id="0", event_time="2019-12-31 23:59:59 UTC"),
        row(price="10"),
        row(brand="ünï cødé 😀", category_code="a'b"),
        *(row(event_type=t.value) for t in EventType),
    ]
    batch = assert_agrees_with_model(rows)
    assert batch.accepted == len(rows) and batch.rejected == []


def test_plain_rows_take_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Well-formed OpenCDP rows must not need pydantic (that is the point of the fast path)."""
    expected = [json.loads(ClickEvent.from_csv_fields(r).to_wire()) for r in (row(), row(brand="", category_id=""))]

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("slow path used")

    monkeypatch.setattr(ClickEvent, "from_csv_fields", refuse)
    batch = encode_batch(table_of([row(), row(brand="", category_id="")]))
    assert outcomes(batch) == expected


@pytest.mark.parametrize(
    "overrides",
    [
        {"product_id": ""},
        {"user_id": "abc"},
        {"user_id": "-5"},
        {"product_id": str(2**63)},
        {"event_time": "2019-10-01 00:00:00"},
        {"event_time": "garbage"},
        {"event_type": "click"},
        {"price": "-1"},
        {"price": "nan"},
        {"price": "inf"},
        {"brand": "b" * 257},
    ],
)
def test_rejected_rows_carry_raw_text_and_the_model_reason(overrides: dict[str, str]) -> None:
    fields = row(**overrides)
    batch = encode_batch(table_of([fields]))
    assert batch.accepted == 0
    assert batch.values.to_pylist() == [None] and batch.keys.to_pylist() == [None]
    reason = model(fields)
    assert isinstance(reason, str)
    assert batch.rejected == [(",".join(fields), reason)]
    assert reason.split(":")[0] in overrides  # the reason names the bad field


@pytest.mark.parametrize(
    "overrides",
    [
        {"event_time": "2019-10-01T00:00:00Z"},
        {"event_time": "2019-10-01T02:00:00+02:00"},
        {"product_id": "007"},
        {"user_id": " 42 "},
        {"price": "1e3"},
        {"price": "35.7900000"},
        {"brand": 'say "hi"'},
        {"brand": "back\\slash"},
        {"category_code": "tab\there"},
        {"user_session": "   "},
        {"brand": "\u00a0"},
    ],
)
def test_unusual_but_valid_rows_are_accepted_like_the_model(overrides: dict[str, str]) -> None:
    fields = row(**overrides)
    assert isinstance(model(fields), ClickEvent)
    assert_agrees_with_model([fields])


def test_order_is_preserved_with_mixed_rows() -> None:
    rows = []
    for i in range(40):
        bad = {0: {"price": "-1"}, 1: {"event_type": "nope"}, 2: {"event_time": "2019-10-01T00:00:00Z"}}.get(i % 5, {})
        rows.append(row(user_id=str(1000 + i), product_id=str(i), **bad))
    batch = assert_agrees_with_model(rows)
    data = outcomes(batch)
    for i, item in enumerate(data):
        if i % 5 in (0, 1):
            assert isinstance(item, tuple) and f",{1000 + i}," in item[0]
        else:
            assert isinstance(item, dict) and item["user_id"] == 1000 + i and item["product_id"] == i
    assert len(batch.rejected) == 16
    assert batch.keys.to_pylist() == [None if i % 5 in (0, 1) else str(1000 + i) for i in range(40)]


def test_keys_are_user_ids() -> None:
    batch = encode_batch(table_of([row(user_id="5"), row(user_id="0042"), row(user_id="9223372036854775807")]))
    assert batch.keys.to_pylist() == ["5", "42", "9223372036854775807"]


@pytest.mark.parametrize("source", list(EventSource))
def test_source_is_written(source: EventSource) -> None:
    rows = [row(), row(event_time="2019-10-01T00:00:00Z")]  # fast and slow path
    batch = assert_agrees_with_model(rows, source=source)
    assert [d["source"] for d in outcomes(batch)] == [source.value] * 2  # type: ignore[index]


@pytest.mark.parametrize("shift", [timedelta(hours=1), timedelta(days=-3, seconds=7), timedelta(days=1700)])
def test_shift_moves_event_time_but_not_event_id(shift: timedelta) -> None:
    rows = [row(), row(event_time="2019-10-01T00:00:00Z"), row(event_time="2019-10-01 23:59:59 UTC")]
    plain = outcomes(encode_batch(table_of(rows)))
    moved = outcomes(assert_agrees_with_model(rows, shift=shift))
    for before, after in zip(plain, moved):
        assert isinstance(before, dict) and isinstance(after, dict)
        assert after["event_id"] == before["event_id"]
        a = ClickEvent.model_validate(after).event_time
        b = ClickEvent.model_validate(before).event_time
        assert a - b == shift
        assert {k: v for k, v in after.items() if k != "event_time"} == {
            k: v for k, v in before.items() if k != "event_time"
        }


def test_shift_moves_event_seconds() -> None:
    rows = [row(), row(event_time="2019-10-01T00:00:05Z")]
    base = encode_batch(table_of(rows)).event_seconds
    moved = encode_batch(table_of(rows), shift=timedelta(minutes=2)).event_seconds
    assert list(base) == [1569888000.0, 1569888005.0]
    assert list(moved - base) == [120.0, 120.0]


@pytest.mark.parametrize("shift", [timedelta(milliseconds=500), timedelta(seconds=1, microseconds=1), timedelta(microseconds=-1)])
def test_non_whole_second_shift_raises(shift: timedelta) -> None:
    with pytest.raises(ValueError, match="whole number of seconds"):
        encode_batch(table_of([row()]), shift=shift)


def test_empty_table() -> None:
    batch = encode_batch(table_of([]))
    assert batch.accepted == 0 and batch.rejected == [] and len(batch.values) == 0


def test_chunked_columns_are_accepted() -> None:
    rows = [row(user_id=str(i)) for i in range(6)]
    chunked = pa.concat_tables([table_of(rows[:3]), table_of(rows[3:])])
    assert chunked["user_id"].num_chunks == 2
    assert outcomes(encode_batch(chunked)) == outcomes(encode_batch(table_of(rows)))


@pytest.mark.parametrize(
    "event_time",
    [
        "2019-02-30 00:00:00 UTC",  # impossible day
        "2019-02-29 12:00:00 UTC",  # not a leap year
        "2019-13-01 00:00:00 UTC",  # month 13
        "2019-00-10 00:00:00 UTC",
        "2019-10-00 00:00:00 UTC",
        "2019-10-01 24:00:00 UTC",  # hour 24
        "2019-10-01 23:60:00 UTC",
        "2019-10-01 23:59:60 UTC",  # leap second
        "2019-10-01 23:59:61 UTC",
        "0000-01-01 00:00:00 UTC",  # year 0
    ],
)
def test_impossible_times_in_the_csv_layout_are_rejected_like_the_model(event_time: str) -> None:
    """These match the fast path's time pattern: it must not accept (or crash on) them."""
    fields = row(event_time=event_time)
    assert isinstance(model(fields), str)
    assert_agrees_with_model([fields, row()])


@pytest.mark.parametrize("event_time", ["2020-02-29 12:00:00 UTC", "0001-01-01 00:00:00 UTC", "9999-12-31 23:59:59 UTC"])
def test_edge_times_that_exist_are_accepted(event_time: str) -> None:
    fields = row(event_time=event_time)
    assert isinstance(model(fields), ClickEvent)
    assert_agrees_with_model([fields])


# ---------------------------------------------------------------- property: fast + slow == model

# Values at the edges of what the fast path's patterns admit, per column kind.
EDGE_TIMES = [
    "2019-10-01 24:00:00 UTC",
    "2019-02-30 00:00:00 UTC",
    "2019-02-29 00:00:00 UTC",
    "2020-02-29 00:00:00 UTC",
    "2019-04-31 00:00:00 UTC",
    "0000-01-01 00:00:00 UTC",
    "0001-01-01 00:00:00 UTC",
    "9999-12-31 23:59:59 UTC",
    "2019-10-01 23:59:60 UTC",
    "2019-10-01 23:60:00 UTC",
    "2019-10-01 00:00:00.5 UTC",
    "2019-10-01T00:00:00.123456Z",
    "2019-10-01T00:00:00Z",
    "2019-10-01T03:00:00+03:00",
    "2019-10-01 00:00:00",
    "2019-10-01 00:00:00 utc",
    "2019-10-01 00:00:00 UTC ",
    " 2019-10-01 00:00:00 UTC",
    "2019-10-01  00:00:00 UTC",
    "1569888000",
    "2019",
    "",
    "２０１９-10-01 00:00:00 UTC",
]
EDGE_TYPES = ["VIEW", " view", "view ", "", "click", "purchase\x00", "remove-from-cart", "like", "save_for_later"]
EDGE_IDS = [
    "", " ", "0", "00", "007", "-0", "-1", "+5", " 5", "5 ", "1_000", "1.0", "1e3", "٣", "９", "0x1F",
    str(2**63 - 1), str(2**63), str(9 * 10**18), str(8999999999999999999), str(10**19), "1" * 30,
]  # fmt: skip
EDGE_TEXT = [
    "", " ", "\t", "\u00a0", "\u3000", "\u2028", "\u200b", "\x1c", "\x85", "\x00", "\x1f", "\x7f",
    '"', 'a"b', "\\", "a\\nb", "a\nb", "\r", "'", ",", "é", "😀", " x ", "null", "{}", "\\u0041",
    "x" * 256, "x" * 257, "é" * 256, "😀" * 257, '"' * 10,
]  # fmt: skip
EDGE_PRICES = [
    "", "nan", "NaN", "inf", "-inf", "Infinity", "-0", "-0.0", "0", "0.0", "0.0000001", "0.000001", "00.5", "01",
    ".5", "5.", "1e3", "1E-2", " 1.5", "1.5 ", "1,5", "123456789012.123456", "999999999999.999999",
    "1234567890123", "1" * 40, "0.1234567", "+1", "1_0", "1.7976931348623157e309", "-5.00", "35.790",
]  # fmt: skip
EDGES = {
    "event_time": EDGE_TIMES,
    "event_type": EDGE_TYPES,
    "product_id": EDGE_IDS,
    "category_id": EDGE_IDS,
    "category_code": EDGE_TEXT,
    "brand": EDGE_TEXT,
    "price": EDGE_PRICES,
    "user_id": EDGE_IDS,
    "user_session": EDGE_TEXT,
}


def test_every_edge_value_agrees_with_the_model() -> None:
    """Deterministic companion of the property test: each edge value in each column, in one batch."""
    edge_rows = [row(**{column: value}) for column, values in EDGES.items() for value in values]
    batch = assert_agrees_with_model(edge_rows)
    # The list is worth something only if it holds both kinds of rows.
    assert 0 < batch.accepted < len(edge_rows)


WEIRD_CHARS = st.characters(blacklist_categories=("Cs",))
SPICY_CHARS = st.sampled_from(list('"\\\'\x00\x01\x1f\x7f\x85\xa0\u2028\u3000\u200b\t\n\r ,é😀0-.eE+_'))
ANY_TEXT = st.text(st.one_of(WEIRD_CHARS, SPICY_CHARS), max_size=12)


def digits(min_size: int, max_size: int) -> st.SearchStrategy[str]:
    return st.text(st.sampled_from("0123456789"), min_size=min_size, max_size=max_size)


@st.composite
def csv_times(draw: st.DrawFn, valid: bool) -> str:
    if valid:
        moment = datetime(1, 1, 1) + timedelta(seconds=draw(st.integers(0, 315537897599)))  # to 9999-12-31 23:59:59
        year, month, day = moment.year, moment.month, moment.day
        hour, minute, second = moment.hour, moment.minute, moment.second
    else:
        # Each part near or past its limits (day 31 of a 30-day month, second 60, year 0, ...).
        year = draw(st.one_of(st.sampled_from([0, 1, 1900, 2000, 2019, 2020, 9999]), st.integers(0, 9999)))
        month = draw(st.one_of(st.sampled_from([0, 1, 2, 4, 12, 13]), st.integers(0, 99)))
        day = draw(st.one_of(st.sampled_from([0, 1, 28, 29, 30, 31, 32]), st.integers(0, 99)))
        hour = draw(st.one_of(st.sampled_from([0, 23, 24, 25]), st.integers(0, 99)))
        minute = draw(st.one_of(st.sampled_from([0, 59, 60, 61]), st.integers(0, 99)))
        second = draw(st.one_of(st.sampled_from([0, 59, 60, 61]), st.integers(0, 99)))
    text = f"{year:04d}-{month:02d}-{day:02d} {hour:02d}:{minute:02d}:{second:02d}"
    if valid:
        return text + " UTC"
    # Mostly the CSV layout (the fast path's pattern), sometimes ISO or odd suffixes.
    suffix = draw(st.sampled_from([" UTC"] * 6 + ["Z", "+00:00", "", " utc", " UTC ", "+05:30"]))
    sep = draw(st.sampled_from([" "] * 4 + ["T"]))
    return text.replace(" ", sep, 1) + suffix


VALID_PRICE = st.one_of(
    st.integers(0, 10**6).map(str),
    st.builds(lambda a, b: f"{a}.{b:02d}", st.integers(0, 99999), st.integers(0, 99)),
)
VALID = {
    "event_time": csv_times(valid=True),
    "event_type": st.sampled_from([e.value for e in EventType]),
    "product_id": st.integers(0, 2**63 - 1).map(str),
    "category_id": st.one_of(st.just(""), st.integers(0, 2**63 - 1).map(str)),
    "category_code": st.one_of(
        st.just(""),
        st.lists(st.sampled_from(["electronics", "smartphone", "kitchen", "x_y"]), min_size=1, max_size=4).map(
            ".".join
        ),
    ),
    "brand": st.one_of(st.just(""), st.text(st.characters(min_codepoint=0x20, max_codepoint=0x2FF), max_size=20)),
    "price": VALID_PRICE,
    "user_id": st.integers(0, 2**63 - 1).map(str),
    "user_session": st.one_of(st.just(""), st.uuids().map(str)),
}

ID_WEIRD = st.one_of(
    st.sampled_from(EDGE_IDS),
    digits(1, 22),  # leading zeros, huge numbers
    st.integers(0, 10**6).map(lambda n: f"0{n}"),
    st.integers(2**63 - 10**18, 2**63 + 10**18).map(str),  # around the int64 limit, 19 digits
    st.integers(-(2**64), 2**64).map(str),
    ANY_TEXT,
)
TEXT_WEIRD = st.one_of(
    st.sampled_from(EDGE_TEXT),
    ANY_TEXT,
    # Around the 256-character limit, cheaply: a short piece repeated.
    st.tuples(st.text(WEIRD_CHARS, min_size=1, max_size=3), st.integers(250, 260)).map(lambda t: (t[0] * 260)[: t[1]]),
)
WEIRD = {
    "event_time": st.one_of(st.sampled_from(EDGE_TIMES), csv_times(valid=False), csv_times(valid=False), ANY_TEXT),
    "event_type": st.one_of(st.sampled_from(EDGE_TYPES), ANY_TEXT),
    "product_id": ID_WEIRD,
    "category_id": ID_WEIRD,
    "category_code": TEXT_WEIRD,
    "brand": TEXT_WEIRD,
    "price": st.one_of(
        st.sampled_from(EDGE_PRICES),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        VALID_PRICE.map(lambda p: f"-{p}"),
        VALID_PRICE.map(lambda p: f"0{p}"),
        st.builds(lambda a, b: f"{a}.{b}", digits(1, 14), digits(1, 8)),
        ANY_TEXT,
    ),
    "user_id": ID_WEIRD,
    "user_session": TEXT_WEIRD,
}


@st.composite
def rows(draw: st.DrawFn) -> list[str]:
    """A valid row with up to three fields swapped for weird (possibly still valid) values."""
    values = {c: draw(VALID[c]) for c in CSV_COLUMNS}
    for column in draw(st.sets(st.sampled_from(CSV_COLUMNS), max_size=3)):
        values[column] = draw(WEIRD[column])
    return [values[c] for c in CSV_COLUMNS]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(rows(), min_size=1, max_size=10), st.sampled_from(list(EventSource)))
def test_fast_and_slow_paths_agree_with_the_model(batch_rows: list[list[str]], source: EventSource) -> None:
    assert_agrees_with_model(batch_rows, source=source)


@settings(max_examples=60, deadline=None)
@given(st.lists(rows(), min_size=1, max_size=6), st.integers(-(10**9), 10**9))
def test_shifted_batches_agree_with_the_shifted_model(batch_rows: list[list[str]], seconds: int) -> None:
    # Keep shifted times inside what a datetime can hold: only rows of the last decades.
    batch_rows = [r for r in batch_rows if r[0][:2] in ("19", "20")]
    assert_agrees_with_model(batch_rows, shift=timedelta(seconds=seconds))


# ---------------------------------------------------------------- the real sample


def test_real_sample_is_accepted_and_equals_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    if not SAMPLE.exists():
        pytest.skip(f"real sample not found: {SAMPLE} (the shared data folder is absent)")
    with SAMPLE.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        assert next(reader) == list(CSV_COLUMNS)
        sample = list(reader)
    assert len(sample) == 17_434
    expected = [json.loads(ClickEvent.from_csv_fields(r).to_wire()) for r in sample]

    slow_calls = 0
    model_from_csv = ClickEvent.from_csv_fields

    def counting(fields: list[str], source: EventSource = EventSource.REPLAY) -> ClickEvent:
        nonlocal slow_calls
        slow_calls += 1
        return model_from_csv(fields, source=source)

    monkeypatch.setattr(ClickEvent, "from_csv_fields", counting)
    batch = encode_batch(table_of(sample))
    assert batch.rejected == []
    assert outcomes(batch) == expected
    assert slow_calls == 0, "rows of the real file should all take the fast path"
