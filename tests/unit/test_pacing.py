"""Replay pacing and time rebasing, with a fake clock (no real sleeps)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from producer.events import CSV_COLUMNS
from producer.pacing import Pacer, parse_when, rebase_shift
from producer.replay import ReplayOptions, compute_shift, event_time_bounds

UTC = timezone.utc


class FakeClock:
    """A monotonic clock that only moves when slept on or told to (`work`)."""

    def __init__(self, start: float = 1000.0, oversleep: float = 0.0) -> None:
        self.now = start
        self.oversleep = oversleep  # extra seconds every sleep takes, like a real, late wake-up
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0, "the pacer should never ask for a zero or negative sleep"
        self.sleeps.append(seconds)
        self.now += seconds + self.oversleep

    def work(self, seconds: float) -> None:
        self.now += seconds


def release_times(pacer: Pacer, clock: FakeClock, events: list[float], work: float = 0.0) -> list[float]:
    """Wall times (relative to the first release) at which each event is released."""
    released = []
    for event in events:
        pacer.wait_for(event)
        released.append(clock.now)
        clock.work(work)
    return [t - released[0] for t in released]


def make(speedup: float, clock: FakeClock) -> Pacer:
    return Pacer(speedup, clock=clock, sleep=clock.sleep)


# ---------------------------------------------------------------- Pacer


def test_real_time_reproduces_the_gaps() -> None:
    clock = FakeClock()
    events = [1_569_888_000.0, 1_569_888_001.0, 1_569_888_003.5, 1_569_888_003.5, 1_569_888_010.0]
    got = release_times(make(1, clock), clock, events)
    assert got == pytest.approx([e - events[0] for e in events])
    assert clock.sleeps == pytest.approx([1.0, 2.5, 6.5])  # equal times: no sleep at all


def test_speedup_60_divides_the_gaps() -> None:
    clock = FakeClock()
    events = [0.0, 60.0, 120.0, 3600.0, 3630.0]
    got = release_times(make(60, clock), clock, events)
    assert got == pytest.approx([0.0, 1.0, 2.0, 60.0, 60.5])


def test_fractional_speedup_stretches_the_gaps() -> None:
    clock = FakeClock()
    assert release_times(make(0.5, clock), clock, [0.0, 1.0, 3.0]) == pytest.approx([0.0, 2.0, 6.0])


def test_the_first_event_is_released_at_once() -> None:
    clock = FakeClock()
    pacer = make(10, clock)
    assert pacer.wait_for(1_569_888_000.0) == 0.0
    assert clock.sleeps == []
    assert pacer.due_at(1_569_888_000.0) == clock.now


def test_wait_for_returns_the_time_slept() -> None:
    clock = FakeClock()
    pacer = make(2, clock)
    pacer.wait_for(100.0)
    assert pacer.wait_for(104.0) == pytest.approx(2.0)
    clock.work(0.5)
    assert pacer.wait_for(106.0) == pytest.approx(0.5)


def test_falling_behind_does_not_accumulate_drift() -> None:
    clock = FakeClock()
    pacer = make(1, clock)
    pacer.wait_for(0.0)
    clock.work(2.5)  # a slow publish: events 1 and 2 are already late
    assert pacer.wait_for(1.0) == 0.0
    assert pacer.wait_for(2.0) == 0.0
    start = clock.now - 2.5
    # Event 3 is due 3 s after the anchor, not 3 s after the late releases.
    assert pacer.wait_for(3.0) == pytest.approx(0.5)
    assert clock.now - start == pytest.approx(3.0)
    pacer.wait_for(10.0)
    assert clock.now - start == pytest.approx(10.0)


def test_late_wake_ups_do_not_add_up() -> None:
    clock = FakeClock(oversleep=0.01)
    events = [float(i) for i in range(200)]
    got = release_times(make(1, clock), clock, events, work=0.001)
    lateness = [g - e for g, e in zip(got, events)]
    # Each release is late by at most one wake-up delay plus the work in between, never by the sum of them.
    assert max(lateness) <= 0.011 + 1e-9
    assert got[-1] == pytest.approx(199.0, abs=0.02)


def test_out_of_order_events_are_released_at_once() -> None:
    clock = FakeClock()
    pacer = make(1, clock)
    pacer.wait_for(100.0)
    pacer.wait_for(105.0)
    assert pacer.wait_for(103.0) == 0.0  # already due
    assert clock.sleeps == pytest.approx([5.0])


@pytest.mark.parametrize("speedup", [0, -1, -0.5, math.nan])
def test_speedup_must_be_positive(speedup: float) -> None:
    with pytest.raises(ValueError, match="speedup must be positive"):
        Pacer(speedup, clock=FakeClock(), sleep=FakeClock().sleep)


# ---------------------------------------------------------------- parse_when


def test_now_uses_the_injected_clock() -> None:
    fixed = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    for text in ("now", "NOW", " Now "):
        assert parse_when(text, now=lambda: fixed) == fixed


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T12:00:00Z", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T14:30:00+02:30", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T07:00:00-05:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T12:00:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),  # naive means UTC
        ("2024-05-01 12:00:00", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01 12:00:00 UTC", datetime(2024, 5, 1, 12, tzinfo=UTC)),
        ("2024-05-01T12:00:00.250Z", datetime(2024, 5, 1, 12, 0, 0, 250000, tzinfo=UTC)),
        ("2024-05-01", datetime(2024, 5, 1, tzinfo=UTC)),
        ("  2024-05-01T12:00:00Z  ", datetime(2024, 5, 1, 12, tzinfo=UTC)),
    ],
)
def test_parse_when_iso(text: str, expected: datetime) -> None:
    def fail() -> datetime:
        raise AssertionError("'now' should not be consulted")

    parsed = parse_when(text, now=fail)
    assert parsed == expected
    assert parsed.tzinfo is not None and parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", ["yesterday", "", "2024-13-01T00:00:00Z", "01/05/2024", "2024-05-01T25:00:00", "nowish"])
def test_parse_when_rejects_bad_values_naming_the_option(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_when(text, now=lambda: datetime(2024, 1, 1, tzinfo=UTC))
    message = str(caught.value)
    assert "--rebase-time" in message
    assert repr(text) in message  # says which value was wrong


# ---------------------------------------------------------------- rebase_shift


@pytest.mark.parametrize(
    ("gap", "expected"),
    [
        (timedelta(seconds=10), timedelta(seconds=10)),
        (timedelta(seconds=10, milliseconds=700), timedelta(seconds=10)),
        (timedelta(seconds=10, microseconds=1), timedelta(seconds=10)),
        (timedelta(seconds=-0.3), timedelta(seconds=-1)),
        (timedelta(seconds=-10, milliseconds=-500), timedelta(seconds=-11)),
        (timedelta(0), timedelta(0)),
        (timedelta(days=1700, seconds=3, microseconds=999999), timedelta(days=1700, seconds=3)),
    ],
)
def test_rebase_shift_rounds_down_to_whole_seconds(gap: timedelta, expected: timedelta) -> None:
    anchor = datetime(2019, 10, 1, tzinfo=UTC)
    assert rebase_shift(anchor, anchor + gap) == expected


@given(
    st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
    st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)),
)
def test_rebase_shift_is_the_floor_of_the_gap(anchor: datetime, target: datetime) -> None:
    shift = rebase_shift(anchor, target)
    assert shift % timedelta(seconds=1) == timedelta(0)
    assert anchor + shift <= target < anchor + shift + timedelta(seconds=1)


# ---------------------------------------------------------------- compute_shift

FIRST = datetime(2019, 10, 1, 0, 0, 0, tzinfo=UTC)
TARGET = "2024-05-01T12:00:00Z"
TARGET_TIME = datetime(2024, 5, 1, 12, tzinfo=UTC)


def csv_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


@pytest.fixture
def clicks(tmp_path: Path) -> Path:
    """Ten rows, one a minute from FIRST, after a row whose time is garbage; sorted like the real files."""
    lines = [",".join(CSV_COLUMNS), "not a time,view,1,,,,1.00,1,s"]
    for i in range(10):
        lines.append(f"{csv_time(FIRST + timedelta(minutes=i))},view,{i},,,,1.00,{i},s{i}")
    path = tmp_path / "clicks.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


LAST = FIRST + timedelta(minutes=9)


def test_no_rebase_time_means_no_shift(clicks: Path) -> None:
    assert compute_shift(clicks, ReplayOptions()) == timedelta(0)


def test_anchor_end_maps_the_last_event_to_the_target(clicks: Path) -> None:
    shift = compute_shift(clicks, ReplayOptions(rebase_time=TARGET, rebase_anchor="end"))
    assert LAST + shift == TARGET_TIME


def test_anchor_start_maps_the_first_event_to_the_target(clicks: Path) -> None:
    shift = compute_shift(clicks, ReplayOptions(rebase_time=TARGET, rebase_anchor="start"))
    assert FIRST + shift == TARGET_TIME


@pytest.mark.parametrize("speedup", [1.0, 60.0])
def test_auto_anchors_the_start_of_a_paced_replay(clicks: Path, speedup: float) -> None:
    shift = compute_shift(clicks, ReplayOptions(rebase_time=TARGET, speedup=speedup))
    assert FIRST + shift == TARGET_TIME


def test_auto_anchors_the_end_of_an_unpaced_replay(clicks: Path) -> None:
    shift = compute_shift(clicks, ReplayOptions(rebase_time=TARGET))
    assert LAST + shift == TARGET_TIME


def test_shift_is_whole_seconds_below_a_fractional_target(clicks: Path) -> None:
    shift = compute_shift(clicks, ReplayOptions(rebase_time="2024-05-01T12:00:00.900Z", rebase_anchor="end"))
    assert shift % timedelta(seconds=1) == timedelta(0)
    assert LAST + shift == TARGET_TIME  # rounded down, so never in the target's future


def test_bounds_honour_skip_and_limit(clicks: Path) -> None:
    # Data line 0 is the garbage row; lines 3..6 are the minutes 2..5.
    options = ReplayOptions(rebase_time=TARGET, rebase_anchor="end", skip=3, limit=4)
    assert event_time_bounds(clicks, options, first_only=False) == (
        FIRST + timedelta(minutes=2),
        FIRST + timedelta(minutes=5),
    )
    assert FIRST + timedelta(minutes=5) + compute_shift(clicks, options) == TARGET_TIME
    start = ReplayOptions(rebase_time=TARGET, rebase_anchor="start", skip=3, limit=4)
    assert FIRST + timedelta(minutes=2) + compute_shift(clicks, start) == TARGET_TIME


def test_bounds_span_the_whole_file(clicks: Path) -> None:
    assert event_time_bounds(clicks, ReplayOptions(), first_only=False) == (FIRST, LAST)


def test_bounds_are_aware_utc(clicks: Path) -> None:
    low, high = event_time_bounds(clicks, ReplayOptions(), first_only=True)
    assert low.utcoffset() == high.utcoffset() == timedelta(0)
    assert low == FIRST


def test_no_valid_time_raises(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(",".join(CSV_COLUMNS) + "\ngarbage,view,1,,,,1.00,1,s\n")
    with pytest.raises(ValueError, match="no row with a valid event_time"):
        compute_shift(path, ReplayOptions(rebase_time=TARGET))


def test_bad_rebase_time_names_the_option(clicks: Path) -> None:
    with pytest.raises(ValueError, match="--rebase-time"):
        compute_shift(clicks, ReplayOptions(rebase_time="soon"))
