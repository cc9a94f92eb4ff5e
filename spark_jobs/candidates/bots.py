"""Bot detection by event rate: one rule, shared by the batch jobs and the streaming job.

The rule: a user is a bot when, in any tumbling two-minute window (aligned to
the epoch, exactly the windows `F.window(event_time, "2 minutes")` builds in
the streaming job), they fire more than ``max_events_per_minute * 2`` events.
Humans browse seconds to minutes apart; scrapers and load scripts fire an event
every second or two.

`window_start` and `exceeds` are the two pure pieces the streaming job reuses
(it counts per user and window itself); `detect_bots` applies them to a batch
of events in Arrow / numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


@dataclass(frozen=True)
class BotRule:
    """Users above `max_events_per_minute` in any `window_seconds` tumbling window are bots."""

    max_events_per_minute: float = 15.0
    window_seconds: int = 120

    def __post_init__(self) -> None:
        if self.max_events_per_minute <= 0 or self.window_seconds <= 0:
            raise ValueError("max_events_per_minute and window_seconds must be > 0")

    @property
    def max_events_per_window(self) -> float:
        """The count a user may reach in one window and still be human."""
        return self.max_events_per_minute * self.window_seconds / 60.0

    def window_start(self, epoch_seconds: np.ndarray) -> np.ndarray:
        """Start (epoch seconds) of the tumbling window each timestamp falls in."""
        seconds = np.asarray(epoch_seconds, dtype=np.int64)
        return seconds - np.mod(seconds, self.window_seconds)

    def exceeds(self, events_in_window: np.ndarray | int) -> np.ndarray | bool:
        """True where a per-user window count is a bot's."""
        return np.asarray(events_in_window) > self.max_events_per_window


def max_window_counts(user_ids: np.ndarray, epoch_seconds: np.ndarray, rule: BotRule) -> dict[int, int]:
    """Per user, the largest number of events in one window (pure numpy)."""
    users = np.asarray(user_ids, dtype=np.int64)
    if len(users) == 0:
        return {}
    windows = rule.window_start(epoch_seconds)
    pairs = np.stack([users, windows], axis=1)
    keys, counts = np.unique(pairs, axis=0, return_counts=True)
    order = np.lexsort((counts, keys[:, 0]))  # by user, then count ascending
    keys, counts = keys[order], counts[order]
    last = np.r_[keys[1:, 0] != keys[:-1, 0], True]  # the last row per user holds its max
    return dict(zip(keys[last, 0].tolist(), counts[last].tolist()))


def detect_bots(events: pa.Table, rule: BotRule = BotRule()) -> frozenset[int]:
    """User ids whose event rate breaks `rule` in at least one window."""
    if events.num_rows == 0:
        return frozenset()
    users = events["user_id"].to_numpy()
    seconds = pc.cast(pc.cast(events["event_time"], pa.timestamp("s", tz="UTC")), pa.int64()).to_numpy()
    peaks = max_window_counts(users, seconds, rule)
    return frozenset(u for u, count in peaks.items() if rule.exceeds(count))
