"""How the stream's writer shares Redis with the API: `WritePace` and `batch_pace`, with a fake clock."""

from __future__ import annotations

import time

import pytest

from feature_store.online import OnlineStore, WritePace
from feature_store.settings import Settings
from spark_jobs.stream import MergeCost, batch_pace


class FakeClock:
    """A clock that moves only when slept on or when a fake Redis call takes time."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def test_each_call_earns_a_wait_that_keeps_the_writer_to_its_share() -> None:
    clock = FakeClock()
    pace = WritePace(share=0.25, seconds=10.0, clock=clock, sleep=clock.sleep)

    def call() -> str:
        clock.now += 0.002
        return "reply"

    assert pace.call(call) == "reply"
    assert clock.sleeps == [pytest.approx(0.006)]  # 2 ms of Redis, then 6 ms for the readers: a quarter
    pace.call(call)
    assert clock.sleeps == [pytest.approx(0.006)] * 2


def test_waiting_stops_at_the_deadline_and_a_full_share_never_waits() -> None:
    pace = WritePace(share=0.1, seconds=0.05, started=10.0)
    assert pace.wait_after(0.001, 10.0) == pytest.approx(0.009)
    assert pace.wait_after(0.1, 10.03) == pytest.approx(0.02)  # what is left of 50 ms
    assert pace.wait_after(0.001, 10.06) == 0.0  # past it: full speed
    assert WritePace(share=1.0).wait_after(0.5, 0.0) == 0.0
    with pytest.raises(ValueError, match="share"):
        WritePace(share=0.0)


def test_merges_wait_between_their_calls_until_the_budget_is_spent() -> None:
    clock = FakeClock()
    pace = WritePace(share=0.2, seconds=0.1, clock=clock, sleep=clock.sleep)
    calls: list[list] = []

    def script(args: list) -> int:  # one Lua call: 10 ms of Redis
        calls.append(args)
        clock.now += 0.01
        return len(args) - 1

    rows = 5 * 20  # _ROWS_PER_WRITE_CALL rows a call
    replies = OnlineStore._merge_in_calls(script, ["header"], rows, lambda args, r: args.append(r), pace)
    assert [first for first, _ in replies] == [0, 20, 40, 60, 80]
    assert [reply for _, reply in replies] == [20] * 5
    assert [arg for args in calls for arg in args[1:]] == list(range(rows))  # every row once, in order
    # 10 ms of Redis earns 40 ms of waiting, until 100 ms after the start
    assert clock.sleeps == [pytest.approx(0.04), pytest.approx(0.04)]


def test_no_pace_means_no_waiting() -> None:
    calls = []
    OnlineStore._merge_in_calls(lambda args: calls.append(args) or 0, [], 45, lambda args, r: args.append(r))
    assert len(calls) == 3


@pytest.mark.parametrize(
    ("share", "fraction", "lag", "paced"),
    [
        (0.1, 0.8, 0.8, True),  # caught up
        (0.1, 0.5, 2.9, True),  # within an interval plus the waiting window (2.0 + 1.0 s)
        (0.1, 0.5, 3.1, False),  # past it: the previous batch ran over, full speed
        (0.1, 0.8, 3.5, True),  # a wider waiting window tolerates more lag (2.0 + 1.6 s) ...
        (0.1, 0.8, 4.5, False),  # ... but not more
        (0.1, 0.8, None, True),  # no ingest times: taken as live
        (0.1, 0.0, 0.5, False),  # pacing off
        (1.0, 0.8, 0.5, False),  # all of Redis's time: nothing to wait for
    ],
)
def test_a_batch_is_paced_within_its_trigger_interval_only_while_the_stream_is_caught_up(
    share: float, fraction: float, lag: float | None, paced: bool
) -> None:
    settings = Settings(_env_file=None, stream_redis_share=share, stream_pace_fraction=fraction)
    pace = batch_pace(settings, 2.0, lag, started=50.0)
    assert (pace is not None) == paced
    if pace is not None:
        assert (pace.share, pace.started, pace.started + pace.seconds) == (share, 50.0, pytest.approx(50.0 + 2.0 * fraction))


def test_expected_calls_are_spread_evenly_over_the_time_left() -> None:
    clock = FakeClock()
    # 40 ms of calls expected in a 100-ms window: 60 ms of waiting to share among them (ratio 1.5)
    pace = WritePace(share=0.1, seconds=0.1, clock=clock, sleep=clock.sleep, expected=0.04)
    calls: list[list] = []

    def script(args: list) -> int:
        calls.append(args)
        clock.now += 0.01
        return 0

    OnlineStore._merge_in_calls(script, [], 4 * 20, lambda args, r: args.append(r), pace)
    assert clock.sleeps == [pytest.approx(0.015)] * 4
    assert clock.now == pytest.approx(100.1)  # the last call ends its wait at the deadline, no later
    assert pace.worked == pytest.approx(0.04)


def test_a_batch_whose_calls_would_not_fit_does_not_wait_at_all() -> None:
    pace = WritePace(share=0.1, seconds=0.5, started=10.0, clock=lambda: 10.2, expected=0.4)  # 0.3 s left
    assert not pace.waits
    assert pace.wait_after(0.01, 10.25) == 0.0
    # small enough: the share decides, not the slack
    assert WritePace(share=0.1, seconds=0.5, started=10.0, clock=lambda: 10.0, expected=0.01).wait_after(0.001, 10.0) == (
        pytest.approx(0.009)
    )


def test_merge_cost_expects_the_smoothed_cost_per_event() -> None:
    cost = MergeCost(weight=0.5)
    assert cost.expect(100) is None  # nothing seen yet
    cost.observe(100, 0.02)
    assert cost.expect(50) == pytest.approx(0.01)
    cost.observe(0, 5.0)  # an empty batch says nothing
    cost.observe(100, 0.04)
    assert cost.expect(100) == pytest.approx(0.03)


def test_batch_pace_leaves_a_batch_that_would_not_fit_at_full_speed() -> None:
    settings = Settings(_env_file=None, stream_redis_share=0.1, stream_pace_fraction=0.5)
    assert batch_pace(settings, 1.0, 1.0, started=time.perf_counter(), expected=0.01) is not None
    assert batch_pace(settings, 1.0, 1.0, started=time.perf_counter(), expected=0.6) is None
