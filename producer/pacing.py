"""Replay pacing and time rebasing: pure arithmetic with an injectable clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone


@dataclass
class Pacer:
    """Releases events at `speedup` times real time, keeping the gaps between them.

    The first event anchors the schedule: an event `d` seconds of event time after
    it is due `d / speedup` seconds of wall time after the anchor. Falling behind
    never makes later events wait longer (no drift accumulates).
    """

    speedup: float
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    _anchor: tuple[float, float] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if not self.speedup > 0:
            raise ValueError("speedup must be positive")

    def due_at(self, event_seconds: float) -> float:
        """Wall-clock time (of `clock`) at which an event is due."""
        if self._anchor is None:
            self._anchor = (event_seconds, self.clock())
        first_event, first_wall = self._anchor
        return first_wall + (event_seconds - first_event) / self.speedup

    def wait_for(self, event_seconds: float) -> float:
        """Sleep until the event is due; returns how long it slept."""
        delay = self.due_at(event_seconds) - self.clock()
        if delay > 0:
            self.sleep(delay)
            return delay
        return 0.0


def parse_when(value: str, now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> datetime:
    """`now` or an ISO 8601 instant (naive means UTC) as an aware UTC datetime."""
    if value.strip().lower() == "now":
        return now()
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace(" UTC", "+00:00"))
    except ValueError as error:
        raise ValueError(f"--rebase-time takes 'now' or an ISO 8601 time such as 2024-05-01T12:00:00Z, not {value!r}") from error
    return parsed.replace(tzinfo=timezone.utc) if parsed.tzinfo is None else parsed.astimezone(timezone.utc)


def rebase_shift(anchor_event: datetime, target: datetime) -> timedelta:
    """Whole-second shift that moves `anchor_event` to `target` (rounded down)."""
    return timedelta(seconds=int((target - anchor_event).total_seconds() // 1))
