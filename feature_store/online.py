"""The online store: clickrec's Redis layout, owned by this one module.

Writers (the streaming job) and readers (the API, tests, `clickrec features`)
both go through it; `feature_store/README.md` shows what `redis-cli` displays.

Keys (``v1`` is the layout version; ids are decimal, times epoch seconds):

    fs:v1:user_2m:<user_id>:<pane_start>        hash  a user's 20-s pane: partial aggregates
    fs:v1:user_2m:<user_id>:<pane_start>:<f>    set   the pane's values of a distinct count <f>
    fs:v1:user_2m:<user_id>:heavy               string the user had a pane of over 20 events lately
    fs:v1:product_2m:<product_id>:<pane_start>  hash  a product's 20-s pane (and its sets)
    fs:v1:product_2m:<product_id>:c:<window_end> hash a window combined by a reader, until a merge changes a pane
    fs:v1:product_2m:changes                    zset  products whose panes changed, by change number (the feed)
    fs:v1:product_2m:changes:seq                hash  the feed's latest change number and epoch
    fs:v1:product_1h:<product_id>:<hour_start>  hash  tumbling hour counters
    fs:v1:product_1d:<product_id>:<day_start>   hash  tumbling day counters
    fs:v1:session:<session_id>                  hash  the session so far
    fs:v1:session:<session_id>:products         set   its distinct products
    fs:v1:session:<session_id>:events           zset  its latest 200 raw events (JSON) by time
    fs:v1:user_profile:<user_id>                hash  the user's history (batch-materialized)
    fs:v1:seen:<event_id>                       string the event was processed (10 min)
    fs:v1:bot:<user_id>                         string flagged as a bot until it expires
    fs:v1:stream:<stage>                        hash  the latest micro-batch of the streaming job

Every feature hash holds the group's features (a missing field is a missing
value, never 0) plus ``_ts``, the epoch time it was written (freshness). Keys
expire `ttl` (from the definition) after their last write.

The two-minute sliding windows are stored as their panes (``slide`` long) and
combined when read (`read_many`, in one Lua call per 500 entities): the writer
merges each event into one pane instead of six windows. A product's combined window
is kept for the next reader until a merge into one of its panes deletes it
(`KEPT_COMBINED`), and its merges are logged in a change feed (`ChangesSince`): a reader
that caches windows learns which ones changed in the same round trip. Every merge (panes,
sessions, tumbling buckets) is a Lua script that records the last applied
``<query id>:<batch id>`` and skips a batch applied before: a re-run micro-batch
is not counted twice. `first_seen` drops an event id sent again in a later batch.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

import numpy as np
import pyarrow as pa
import redis

from feature_store.definitions import (
    BOT_RULE,
    GROUPS_BY_NAME,
    HEALTH_GLOBAL_RATE,
    HEALTH_PRIOR_VIEWS,
    PRODUCT_2M,
    SESSION_FEATURES,
    USER,
    USER_2M,
    USER_PROFILE,
    Agg,
    Dtype,
    FeatureGroup,
    Window,
)

PREFIX = "fs:v1"
#: Sliding groups whose windows are kept combined between merges (`<base>:c:<window end>`):
#: a product's window is read by every request that has the product among its candidates;
#: a user's only by that user's own requests, where keeping it would cost more than it saves.
KEPT_COMBINED: frozenset[str] = frozenset({PRODUCT_2M.name})
#: Where in a slide step a reader builds an entity's next window (see _READ_WINDOWS): from AHEAD_FROM
#: to AHEAD_FROM + AHEAD_SPAN of the step, spread by the entity's id modulo AHEAD_SPREAD.
AHEAD_FROM, AHEAD_SPAN, AHEAD_SPREAD = 0.25, 0.7, 97
#: Change-feed entries kept (merge calls): a reader further behind than that starts its cache over.
CHANGES_KEPT = 100_000
#: How long an event id is remembered to drop a second copy of the event (seconds of processing time).
DEDUP_TTL = 600
#: The latest raw events kept per session (`session_events`).
SESSION_EVENTS_KEPT = 200
#: The fields of a session event as `session_events` returns them (and the zset stores them, as JSON).
SESSION_EVENT_FIELDS = ("event_id", "event_time", "event_type", "product_id", "category_id", "price", "user_id",
                        "user_session")  # fmt: skip
# Rows per Lua call: a call blocks Redis, so a reader waits at most one call. A read costs about
# 5 us a row (200 products' two-minute windows: 0.94 ms), a merge 60-120 us (calls of 50 pane rows
# took 3-6 ms at the October-2019 scale), so merges go in calls of 20 rows (see _merge_in_calls).
_ROWS_PER_CALL = 500
_ROWS_PER_WRITE_CALL = 20
_IDS_PER_CALL = 20_000


@dataclass
class WritePace:
    """How a writer shares Redis with its readers: after each merge call it waits, so that its calls
    take at most `share` of Redis's time, until `seconds` after `started`; then it writes at full speed.

    A call blocks Redis, and a writer's calls back to back hold it (and a core) for most of a
    batch: the reads that arrive then wait behind them. With the bench's live writer (a batch
    of about 110 events a second) the API's p99 at 200 requests/s, in paired runs: 29.8 ms
    with calls back to back, 13.7 ms at share 0.25; in a second set 12.9 ms at 0.25, 9.6 ms at
    0.1 and 8.3 ms with the writer paused (bench/api_latency.md, "Where the tail comes from").

    With `expected` (the seconds of calls the batch is expected to make) the waits only use the
    slack: they spread the calls evenly over the time left, and a batch whose calls would not
    fit in it does not wait at all. Waiting first and writing back to back after the deadline
    would delay the features and leave the readers behind the same calls.
    """

    share: float = 0.1
    seconds: float = 0.8
    clock: Callable[[], float] = time.perf_counter
    sleep: Callable[[float], None] = time.sleep
    started: float | None = None  #: on `clock` (default: when made)
    expected: float | None = None  #: seconds of merge calls the batch is expected to make (None: unknown)
    worked: float = field(default=0.0, init=False)  #: seconds spent in calls so far

    def __post_init__(self) -> None:
        if not 0 < self.share <= 1:
            raise ValueError(f"share must be in (0, 1], not {self.share}")
        if self.started is None:
            self.started = self.clock()
        self._ratio = 1.0 / self.share - 1.0  # seconds of waiting per second of calls
        if self.expected is not None:
            left = self.started + self.seconds - self.clock()
            self._ratio = min(self._ratio, max(0.0, left / self.expected - 1.0) if self.expected > 0 else self._ratio)

    @property
    def waits(self) -> bool:
        """Whether this batch's calls earn any waiting."""
        return self._ratio > 0

    def wait_after(self, call_seconds: float, now: float) -> float:
        """Seconds to wait at `now` (on `clock`) after a merge call that took `call_seconds`."""
        assert self.started is not None
        return max(0.0, min(call_seconds * self._ratio, self.started + self.seconds - now))

    def call(self, function: Callable[[], Any]) -> Any:
        """`function()`, then the wait it earns."""
        called = self.clock()
        result = function()
        now = self.clock()
        self.worked += now - called
        wait = self.wait_after(now - called, now)
        if wait > 0:
            self.sleep(wait)
        return result


def _epoch(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value)


def window_key(group: FeatureGroup, entity_id: Any, bucket: Any | None = None) -> str:
    """The hash key of an entity's features in `group` (`bucket`: window end or start, epoch s)."""
    if group.window in (Window.SESSION, Window.BATCH):
        return f"{PREFIX}:{group.name}:{entity_id}"
    return f"{PREFIX}:{group.name}:{entity_id}:{int(_epoch(bucket))}"


def window_keys(group: FeatureGroup, entity_ids: Iterable[Any], bucket: Any | None = None) -> list[str]:
    """`window_key` of many entities of one group and bucket (the key's shape formatted once)."""
    head, tail = window_key(group, "\0", bucket).split("\0")
    return [f"{head}{e}{tail}" for e in entity_ids]


def session_keys(session_id: str) -> tuple[str, str, str]:
    """The session's hash, its distinct products (set) and its latest events (zset)."""
    base = window_key(SESSION_FEATURES, session_id)
    return base, f"{base}:products", f"{base}:events"


def seen_key(event_id: str) -> str:
    return f"{PREFIX}:seen:{event_id}"


def session_event_member(event: Mapping[str, Any]) -> str:
    """A session event as the zset member: JSON, event id first (ties in time sort by event id)."""
    values = {name: event[name] for name in SESSION_EVENT_FIELDS}
    values["event_time"] = _epoch(values["event_time"])
    return json.dumps(values, separators=(",", ":"))


def bot_key(user_id: Any) -> str:
    return f"{PREFIX}:bot:{user_id}"


def stream_key(query: str) -> str:
    return f"{PREFIX}:stream:{query}"


def changes_key(group: FeatureGroup) -> str:
    """The change feed of a group kept combined (`KEPT_COMBINED`); its counter is at `<key>:seq`."""
    return f"{PREFIX}:{group.name}:changes"


def ahead_points(entity_ids: Any) -> np.ndarray:
    """Per (numeric) entity id, the point of a slide step (0-1) from which a reader of the entity's
    sliding window also builds its next window (`_READ_WINDOWS`)."""
    return AHEAD_FROM + AHEAD_SPAN * (np.asarray(entity_ids, np.int64) % AHEAD_SPREAD) / (AHEAD_SPREAD - 1)


def bucket_for_read(group: FeatureGroup, at: float) -> int:
    """Which window a reader at epoch time `at` reads (see feature_store.definitions).

    Sliding: the window ending at the first slide boundary after `at`.
    Tumbling: the bucket that contains `at`.
    """
    if group.window is Window.SLIDING:
        slide = group.slide.total_seconds()
        return int(math.floor(at / slide) * slide + slide)
    length = group.length.total_seconds()
    return int(math.floor(at / length) * length)


def encode_value(dtype: Dtype, value: Any) -> str | None:
    """A feature value as Redis stores it; None (missing) is not stored at all."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    match dtype:
        case Dtype.INT:
            return str(int(value))
        case Dtype.FLOAT:
            return repr(float(value))
        case Dtype.TIMESTAMP:
            return repr(_epoch(value))
        case Dtype.STRING:
            return str(value)
        case Dtype.INT_LIST:
            return ",".join(str(int(v)) for v in value)
        case Dtype.JSON:
            return json.dumps({str(k): v for k, v in value.items()}, separators=(",", ":"))
    raise ValueError(f"unknown dtype {dtype}")


def decode_value(dtype: Dtype, raw: str | bytes | None) -> Any:
    if raw is None:
        return None
    text = raw.decode() if isinstance(raw, bytes) else raw
    match dtype:
        case Dtype.INT:
            return int(text)
        case Dtype.FLOAT | Dtype.TIMESTAMP:
            return float(text)
        case Dtype.STRING:
            return text
        case Dtype.INT_LIST:
            return [int(v) for v in text.split(",")] if text else []
        case Dtype.JSON:
            return json.loads(text)
    raise ValueError(f"unknown dtype {dtype}")


def encode_features(group: FeatureGroup, row: Mapping[str, Any]) -> dict[str, str]:
    """The hash fields of one feature row (missing values left out)."""
    fields = {}
    for feature in group.features:
        encoded = encode_value(feature.dtype, row.get(feature.name))
        if encoded is not None:
            fields[feature.name] = encoded
    return fields


def decode_features(group: FeatureGroup, mapping: Mapping[Any, Any]) -> dict[str, Any]:
    """Feature name -> value (None when missing), plus `_ts` (write time) when present."""
    if mapping and isinstance(next(iter(mapping)), bytes):
        return _decode_raw(group, mapping)
    values = {f.name: decode_value(f.dtype, mapping.get(f.name)) for f in group.features}
    if "_ts" in mapping:
        values["_ts"] = float(mapping["_ts"])
    return values


#: Per group, (name, name as bytes, converter of the raw bytes) for each feature: Redis replies decode
#: with one C-level call per value (int() and float() read bytes) instead of a text copy of the hash.
_RAW_DECODERS: dict[str, tuple[tuple[str, bytes, Callable[[bytes], Any]], ...]] = {}
_RAW_CONVERTERS: dict[Dtype, Callable[[bytes], Any]] = {Dtype.INT: int, Dtype.FLOAT: float, Dtype.TIMESTAMP: float}


def _decode_raw(group: FeatureGroup, mapping: Mapping[bytes, bytes]) -> dict[str, Any]:
    plan = _RAW_DECODERS.get(group.name)
    if plan is None:
        plan = _RAW_DECODERS[group.name] = tuple(
            (f.name, f.name.encode(), _RAW_CONVERTERS.get(f.dtype) or (lambda raw, dtype=f.dtype: decode_value(dtype, raw)))
            for f in group.features
        )  # fmt: skip
    get = mapping.get
    values = {name: None if (raw := get(key)) is None else convert(raw) for name, key, convert in plan}
    if (stamp := get(b"_ts")) is not None:
        values["_ts"] = float(stamp)
    return values


Encoder = Callable[[Mapping[str, list], int, list], None]


def _base_key(group: FeatureGroup, entity_id: Any) -> str:
    return f"{PREFIX}:{group.name}:{entity_id}"


def _panes_per_window(group: FeatureGroup) -> tuple[int, int]:
    """(slide seconds, panes in a window) of a sliding group."""
    slide = int(group.slide.total_seconds())
    panes = int(group.length.total_seconds()) // slide
    if panes * slide != group.length.total_seconds() or not 1 <= panes <= 9:
        raise ValueError(f"{group.name}: the window must be 1 to 9 slides long")
    return slide, panes


def _window_spec(group: FeatureGroup) -> tuple[str, list[Encoder]]:
    """The merge script's spec of a sliding group and how to append a partial row's values.

    The partial columns (spark_jobs.partials): one per feature, ``<name>__sum`` and
    ``<name>__n`` for a mean, and ``_order_t`` / ``_order_i`` (the latest event's time
    and id) shared by the last-value features.
    """
    tokens: list[str] = []
    encoders: list[Encoder] = []
    derived: list[str] = []

    def plain(name: str, text: Callable[[Any], str]) -> Encoder:
        return lambda c, r, args: args.append(text(c[name][r]))

    for f in group.features:
        name = f.name
        match f.agg:
            case Agg.COUNT:
                tokens.append(f"c:{name}")
                encoders.append(plain(name, lambda v: str(int(v or 0))))
            case Agg.WEIGHTED_COUNT:
                tokens.append(f"s:{name}")
                encoders.append(plain(name, lambda v: repr(float(v or 0.0))))
            case Agg.COUNT_DISTINCT:
                tokens.append(f"d:{name}")
                encoders.append(lambda c, r, args, name=name: args.extend([len(c[name][r]), *c[name][r]]))
            case Agg.MEAN:
                tokens.append(f"m:{name}")
                encoders.append(
                    lambda c, r, args, name=name: args.extend([repr(float(c[f"{name}__sum"][r] or 0.0)), c[f"{name}__n"][r]])
                )
            case Agg.MAX | Agg.LAST_TIME:
                tokens.append(f"{'x' if f.agg is Agg.MAX else 't'}:{name}")
                encoders.append(plain(name, lambda v: "" if v is None else repr(float(v))))
            case Agg.LAST_VALUE:
                if not any(t.startswith("o:") for t in tokens):
                    tokens.append("o:last")
                    encoders.append(lambda c, r, args: args.extend([repr(c["_order_t"][r]), c["_order_i"][r]]))
                tokens.append(f"l:{name}")
                encoders.append(plain(name, lambda v: "" if v is None else f"={v}"))
            case Agg.DERIVED if f.formula == "health":
                derived.append(f"h:{name}:{HEALTH_PRIOR_VIEWS!r}:{HEALTH_GLOBAL_RATE!r}")
            case _:
                raise ValueError(f"{group.name}.{name}: {f.agg} cannot be merged into sliding windows")
    return " ".join(tokens + derived), encoders



def _read_windows_source(group: FeatureGroup) -> str:
    """`_READ_WINDOWS` for one sliding group: its slide, panes per window and spec compiled in as Lua tables."""
    slide, panes = _panes_per_window(group)
    fields = ["_ts", "_last_t", "_last_i"]  # the positions `_READ_WINDOWS` reads them at

    def position(name: str) -> int:
        if name not in fields:
            fields.append(name)
        return fields.index(name) + 1  # Lua counts from 1

    entries = []
    for token in _window_spec(group)[0].split():
        kind, name, *params = token.split(":")
        entry: dict[str, Any] = {"kind": kind, "name": name}
        if kind == "m":
            entry |= {"sum": position(f"_{name}_sum"), "n": position(f"_{name}_n")}
        elif kind == "h":
            entry |= {"prior": float(params[0]), "rate": float(params[1])}
        elif kind not in ("d", "o"):
            entry["at"] = position(name)
        entries.append(entry)
    table = lambda items: "{" + ", ".join(items) + "}"  # noqa: E731
    spec = table(table(f"{key} = {json.dumps(value)}" for key, value in entry.items()) for entry in entries)
    replacements = {"__SLIDE__": str(slide), "__PANES__": str(panes), "__FIELDS__": table(map(json.dumps, fields)),
                    "__SPEC__": spec}  # fmt: skip
    source = _READ_WINDOWS
    for placeholder, value in replacements.items():
        source = source.replace(placeholder, value)
    return source


# Every merge below is guarded: a hash remembers in `_batch` the last
# `<writer>:<batch id>` applied to it and a batch is never applied twice (a micro-batch
# that Spark re-runs after a crash finds its own id there). Scripts take many rows per
# call; keys are built from the entity's base key (single Redis node, not Cluster).

# Add one batch's counts to tumbling buckets. ARGV: writer, batch, ttl, now, names, then
# per row: key and one count per name.
_MERGE_COUNTS = """
local writer, batch, ttl, now = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local tag = writer .. ':' .. ARGV[2]
local names, fields = {}, {'_batch'}
for name in string.gmatch(ARGV[5], '%S+') do
  names[#names + 1] = name
  fields[#fields + 1] = name
end
local merged, i = 0, 6
while i <= #ARGV do
  local key = ARGV[i]
  -- one read and one write per bucket (not a call per counter: Redis calls are most of a merge's time)
  local old = redis.call('HMGET', key, unpack(fields))
  local skip = false
  if old[1] then
    local q, b = string.match(old[1], '^(.*):(%d+)$')
    skip = q == writer and tonumber(b) >= batch
  end
  if not skip then
    local values = {'_batch', tag, '_ts', now}
    for j, name in ipairs(names) do
      values[#values + 1] = name
      values[#values + 1] = string.format('%d', tonumber(old[j + 1] or '0') + tonumber(ARGV[i + j]))
    end
    redis.call('HSET', key, unpack(values))
    redis.call('EXPIRE', key, ttl)
    merged = merged + 1
  end
  i = i + 1 + #names
end
return merged
"""

# Merge one batch's per-pane partials of a sliding group into the pane hashes.
# ARGV: writer, batch, ttl, now, slide, windows, bot field, bot limit, spec, combined (1: the
# group's windows are kept combined, see _READ_WINDOWS: delete those holding the pane), then per row:
# the entity's base key, the pane start and the partial values in spec order.
# The spec is `kind:name` tokens: c count, s float sum, d distinct values (n, v1..vn, kept
# in the set `<pane key>:<name>`), m mean (sum, n: kept as `_<name>_sum`, `_<name>_n`),
# x max ('' = none), t latest time, o order of the latest event (time, event id) followed
# by l values of that event ('=' .. value, or '' when missing); h (derived) is for reads.
# With a bot field, after a merge the script sums it over the `windows` windows that
# contain the pane and returns the row numbers where one exceeds `bot limit`.
_MERGE_PANES = """
local writer, batch, ttl, now = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local slide, nwin = tonumber(ARGV[5]), tonumber(ARGV[6])
local bot_field, bot_limit = ARGV[7], tonumber(ARGV[8])
local tag = writer .. ':' .. ARGV[2]
local spec = {}
for token in string.gmatch(ARGV[9], '%S+') do
  local parts = {}
  for part in string.gmatch(token, '[^:]+') do parts[#parts + 1] = part end
  spec[#spec + 1] = parts
end
local function fmt(x) return string.format('%.17g', x) end
local combined = ARGV[10] == '1'
local bots, i, row = {}, 11, 0
local changed = {}  -- ids of the merged entities, for the change feed of a kept group
while i <= #ARGV do
  row = row + 1
  local base, pane = ARGV[i], tonumber(ARGV[i + 1])
  local key = base .. ':' .. ARGV[i + 1]
  i = i + 2
  local vals = {}
  for k, f in ipairs(spec) do
    local kind = f[1]
    if kind == 'd' then
      local n, set = tonumber(ARGV[i]), {}
      for j = 1, n do set[j] = ARGV[i + j] end
      vals[k] = set
      i = i + n + 1
    elseif kind == 'm' or kind == 'o' then
      vals[k] = {ARGV[i], ARGV[i + 1]}
      i = i + 2
    elseif kind ~= 'h' then
      vals[k] = ARGV[i]
      i = i + 1
    end
  end
  local flat = redis.call('HGETALL', key)
  local old = {}
  for j = 1, #flat, 2 do old[flat[j]] = flat[j + 1] end
  local skip = false
  if old['_batch'] then
    local q, b = string.match(old['_batch'], '^(.*):(%d+)$')
    skip = q == writer and tonumber(b) >= batch
  end
  if not skip then
    local new, gone, newer = {}, {}, false
    for k, f in ipairs(spec) do
      local kind, name, v = f[1], f[2], vals[k]
      if kind == 'c' then
        new[name] = string.format('%d', tonumber(old[name] or '0') + tonumber(v))
      elseif kind == 's' then
        new[name] = fmt(tonumber(old[name] or '0') + tonumber(v))
      elseif kind == 'd' then
        if #v > 0 then
          local set = key .. ':' .. name
          for j = 1, #v, 1000 do redis.call('SADD', set, unpack(v, j, math.min(j + 999, #v))) end
          redis.call('EXPIRE', set, ttl)
        end
      elseif kind == 'm' then
        if tonumber(v[2]) > 0 then
          new['_' .. name .. '_sum'] = fmt(tonumber(old['_' .. name .. '_sum'] or '0') + tonumber(v[1]))
          new['_' .. name .. '_n'] = string.format('%d', tonumber(old['_' .. name .. '_n'] or '0') + tonumber(v[2]))
        end
      elseif kind == 'x' or kind == 't' then
        if v ~= '' and (not old[name] or tonumber(v) > tonumber(old[name])) then new[name] = v end
      elseif kind == 'o' then
        local ot, oi = old['_last_t'], old['_last_i']
        local t = tonumber(v[1])
        newer = (not ot) or t > tonumber(ot) or (t == tonumber(ot) and v[2] > oi)
        if newer then
          new['_last_t'] = v[1]
          new['_last_i'] = v[2]
        end
      elseif kind == 'l' then
        if newer then
          if v == '' then gone[#gone + 1] = name else new[name] = string.sub(v, 2) end
        end
      end
    end
    new['_batch'], new['_ts'] = tag, now
    local fields = {}
    for name, value in pairs(new) do
      fields[#fields + 1] = name
      fields[#fields + 1] = value
    end
    if #gone > 0 then redis.call('HDEL', key, unpack(gone)) end
    redis.call('HSET', key, unpack(fields))
    redis.call('EXPIRE', key, ttl)
    -- the combined windows that hold this pane (see _READ_WINDOWS) are out of date
    if combined then
      changed[#changed + 1] = string.match(base, '[^:]+$')
      local stale = {}
      for k = 1, nwin do stale[k] = base .. ':c:' .. string.format('%d', pane + slide * k) end
      redis.call('DEL', unpack(stale))
    end
    -- Over the limit in a window of nwin panes means a pane with more than limit / nwin:
    -- such a pane leaves a marker, and windows are summed only near one.
    local heavy = base .. ':heavy'
    if bot_field ~= '' and tonumber(new[bot_field] or old[bot_field] or '0') * nwin > bot_limit then
      redis.call('SET', heavy, '1', 'EX', ttl)
    end
    if bot_field ~= '' and redis.call('EXISTS', heavy) == 1 then
      local counts = {}
      for k = 1 - nwin, nwin - 1 do
        counts[k] = tonumber(redis.call('HGET', base .. ':' .. string.format('%d', pane + slide * k), bot_field) or '0')
      end
      for w = 0, nwin - 1 do
        local total = 0
        for k = w - nwin + 1, w do total = total + counts[k] end
        if total > bot_limit then
          bots[#bots + 1] = row
          break
        end
      end
    end
  end
end
-- One change number per call for every entity it merged; a feed that lost its hash (a flushed
-- Redis) starts a new epoch, which tells readers to start over.
if #changed > 0 then
  local feed = string.match(ARGV[11], '^(.*):[^:]+$') .. ':changes'
  local seq = redis.call('HINCRBY', feed .. ':seq', 'seq', 1)
  redis.call('HSETNX', feed .. ':seq', 'epoch', now)
  local members = {}
  for j, id in ipairs(changed) do
    members[2 * j - 1] = seq
    members[2 * j] = id
  end
  redis.call('ZADD', feed, unpack(members))
  redis.call('ZREMRANGEBYSCORE', feed, '-inf', '(' .. (seq - CHANGES_KEPT))
end
return bots
""".replace("CHANGES_KEPT", str(CHANGES_KEPT))

# The sliding windows ending at `end` of many entities of one group, each combined from its
# panes (see _MERGE_PANES for the spec; `_read_windows_source` compiles in the group's). ARGV:
# end, keep, at (the reader's time), then base keys. Returns per entity a flat field/value
# list (empty when no pane has events).
# With keep = 1 a combined window is kept at `<base>:c:<end>` (`_empty` when no pane has
# events) until a merge into one of its panes deletes it: the next reader of the window
# reads one hash instead of combining its panes again. Every window changes at each slide
# boundary, so a reader also builds the NEXT window of an entity once `at` has passed a
# point of the slide set per entity by its id (`ahead_points`: 25% to 95% of it): otherwise the first reads
# after every boundary would combine every entity at once (at the October-2019 scale,
# 10,000 products: about 50 reads of 3-11 ms each in one second, stalling every reader).
# The next window holds the current panes but the oldest, and the one starting at `end`;
# a merge into any of them deletes it, as for the current window. The current window's
# `_next` field says the next one was built (readers ignore fields they do not know).
# With keep = 2 each entity's reply is {window} before its point and {window, next window}
# from it on (`ReadAhead`): a reader that caches windows then needs none at the boundary.
_READ_WINDOWS = """
local wend, keep, with_next = tonumber(ARGV[1]), ARGV[2] ~= '0', ARGV[2] == '2'
local slide, nwin = __SLIDE__, __PANES__
local phase = (tonumber(ARGV[3]) - (wend - slide)) / slide
-- The group's spec, compiled in by `_read_windows_source` (parsing it on every call was a
-- tenth of a user's read): `fields` are the pane fields read, one HMGET per pane, values
-- found by position (`_ts`, `_last_t`, `_last_i` first); `spec` has per feature its kind
-- (see _MERGE_PANES), name and the positions of its fields.
local fields = __FIELDS__
local spec = __SPEC__
local function fmt(x) return string.format('%.17g', x) end

-- the flat field/value list of the window of `base` ending at `ending`; `seen` caches pane values
local function combine(base, ending, seen)
  local panes, n = {}, 0
  for w = 1, nwin do
    local key = base .. ':' .. (ending - slide * w)  -- whole seconds: written as integers
    local h = seen[key]
    if h == nil then
      h = redis.call('HMGET', key, unpack(fields))
      if h[1] then h.key = key else h = false end  -- every pane has `_ts`
      seen[key] = h
    end
    if h then
      n = n + 1
      panes[n] = h
    end
  end
  local result = {}
  if n == 0 then return result end
  local latest, latest_t, ts = nil, nil, 0
  for p = 1, n do
    local h = panes[p]
    if h[2] then
      local t = tonumber(h[2])
      if not latest or t > latest_t or (t == latest_t and h[3] > latest[3]) then latest, latest_t = h, t end
    end
    local t = tonumber(h[1])
    if t > ts then ts = t end
  end
  local values, r = {}, 0
  for i = 1, #spec do
    local f = spec[i]
    local kind, name, at = f.kind, f.name, f.at
    local value = nil
    if kind == 'c' or kind == 's' then
      local total = 0
      for p = 1, n do total = total + (tonumber(panes[p][at]) or 0) end
      value = (kind == 'c') and string.format('%d', total) or fmt(total)
      values[name] = total
    elseif kind == 'd' then
      local keys = {}
      for p = 1, n do keys[p] = panes[p].key .. ':' .. name end
      value = tostring(#redis.call('SUNION', unpack(keys)))
    elseif kind == 'm' then
      local total, count, sum_at, n_at = 0, 0, f.sum, f.n
      for p = 1, n do
        local h = panes[p]
        total = total + (tonumber(h[sum_at]) or 0)
        count = count + (tonumber(h[n_at]) or 0)
      end
      if count > 0 then value = fmt(total / count) end
    elseif kind == 'x' or kind == 't' then
      local best, best_value = nil, nil
      for p = 1, n do
        local raw = panes[p][at]
        if raw then
          local x = tonumber(raw)
          if not best or x > best_value then best, best_value = raw, x end
        end
      end
      value = best
    elseif kind == 'l' then
      if latest and latest[at] then value = latest[at] end
    elseif kind == 'h' then
      value = fmt((values['carts'] + values['purchases'] + f.prior * f.rate) / (values['views'] + f.prior))
    end
    if value then
      result[r + 1], result[r + 2] = name, value
      r = r + 2
    end
  end
  result[r + 1], result[r + 2] = '_ts', fmt(ts)
  return result
end

local function kept(base, ending, result)
  local key = base .. ':c:' .. string.format('%d', ending)
  if #result > 0 then redis.call('HSET', key, unpack(result)) else redis.call('HSET', key, '_empty', '1') end
  redis.call('EXPIRE', key, slide * nwin)
end

-- a kept window's flat field/value list (`_empty`: {}), nil when it is not kept
local function read_kept(key)
  local flat = redis.call('HGETALL', key)
  if #flat == 0 then return nil end
  if flat[1] == '_empty' then return {} end
  return flat
end

local out = {}
for e = 4, #ARGV do
  local base, seen = ARGV[e], {}
  local key = base .. ':c:' .. string.format('%d', wend)
  local cached = keep and redis.call('HGETALL', key) or {}
  local ahead = false  -- the next window was built (and `_next` set) since this one was kept
  local row
  if #cached > 0 then
    -- fields come back in the order they were set (a small hash): `_empty` first, `_next` last
    ahead = cached[#cached - 1] == '_next'
    if cached[1] == '_empty' then row = {} else row = cached end
  else
    row = combine(base, wend, seen)
    if keep then kept(base, wend, row) end
  end
  local following = nil
  -- the entity's point of the slide, from its id (`ahead_points`)
  if keep and (with_next or not ahead) and phase >= AHEAD_FROM then
    local id = tonumber(string.match(base, '[^:]+$')) or 0
    if phase >= AHEAD_FROM + AHEAD_SPAN * (id % AHEAD_SPREAD) / (AHEAD_SPREAD - 1) then
      -- built before, unless a merge into the pane starting at `end` has deleted it since
      if ahead then following = read_kept(base .. ':c:' .. string.format('%d', wend + slide)) end
      if following == nil then
        following = combine(base, wend + slide, seen)
        kept(base, wend + slide, following)
        if not ahead then redis.call('HSET', key, '_next', '1') end
      end
    end
  end
  if with_next then out[#out + 1] = following and {row, following} or {row} else out[#out + 1] = row end
end
return out
"""
for _name, _value in (("AHEAD_FROM", AHEAD_FROM), ("AHEAD_SPAN", AHEAD_SPAN), ("AHEAD_SPREAD", AHEAD_SPREAD)):
    _READ_WINDOWS = _READ_WINDOWS.replace(_name, repr(_value))

# HGETALL of many keys in one call (ARGV: the keys): one reply instead of one command per
# key, which is most of the client's cost when a request reads hundreds of small hashes.
_READ_HASHES = """
local out = {}
for i = 1, #ARGV do out[i] = redis.call('HGETALL', ARGV[i]) end
return out
"""

# The change feed of a kept group (see _MERGE_PANES) after a reader's position. ARGV: the feed
# key, the reader's epoch and change number. Returns the feed's epoch ('' before any change)
# and latest change number, then, when the epochs match, (entity id, change number) pairs
# of the entities changed since: one atomic read, so nothing falls between the two.
_READ_CHANGES = """
local meta = redis.call('HMGET', ARGV[1] .. ':seq', 'epoch', 'seq')
local out = {meta[1] or '', meta[2] or '0'}
if meta[1] and meta[1] == ARGV[2] then
  local changes = redis.call('ZRANGEBYSCORE', ARGV[1], '(' .. ARGV[3], '+inf', 'WITHSCORES')
  for i = 1, #changes do out[#out + 1] = changes[i] end
end
return out
"""

# Merge one batch's per-session partials. ARGV: writer, batch, ttl, now, n (recent
# products), keep (events kept), then per row: the session's hash key, events, carts,
# first and last event time, the latest event's (time, event id, user id), the number of
# distinct products and the products, the number of events and (score, member) pairs.
# Counts add up, products go to a set, events to a zset ordered by (time, event id)
# trimmed to the latest `keep`; `recent_products` is read back from that zset.
_MERGE_SESSIONS = """
local writer, batch, ttl, now = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local n, keep = tonumber(ARGV[5]), tonumber(ARGV[6])
local tag = writer .. ':' .. ARGV[2]
local function fmt(x) return string.format('%.17g', x) end
local merged, i = 0, 7
while i <= #ARGV do
  local h = ARGV[i]
  local products, events = h .. ':products', h .. ':events'
  local n_products = tonumber(ARGV[i + 8])
  local n_events = tonumber(ARGV[i + 9 + n_products])
  local next_row = i + 10 + n_products + 2 * n_events
  local old = redis.call('HMGET', h, '_batch', 'first_event_time', 'last_event_time', '_user_t', '_user_i', 'events',
                         'carts')
  local skip = false
  if old[1] then
    local q, b = string.match(old[1], '^(.*):(%d+)$')
    skip = q == writer and tonumber(b) >= batch
  end
  if not skip then
    local total_carts = tonumber(old[7] or '0') + tonumber(ARGV[i + 2])
    local first_t, last_t = tonumber(ARGV[i + 3]), tonumber(ARGV[i + 4])
    if old[2] then first_t = math.min(first_t, tonumber(old[2])) end
    if old[3] then last_t = math.max(last_t, tonumber(old[3])) end
    -- every field in one HSET at the end (Redis calls are most of a merge's time)
    local values = {'events', string.format('%d', tonumber(old[6] or '0') + tonumber(ARGV[i + 1])),
                    'carts', string.format('%d', total_carts)}
    local user_t, user_i = tonumber(ARGV[i + 5]), ARGV[i + 6]
    local old_user_t = tonumber(old[4] or '-1')
    if user_t > old_user_t or (user_t == old_user_t and user_i > (old[5] or '')) then
      for _, v in ipairs({'user_id', ARGV[i + 7], '_user_t', ARGV[i + 5], '_user_i', user_i}) do values[#values + 1] = v end
    end
    local j = i + 9
    for start = j, j + n_products - 1, 1000 do
      redis.call('SADD', products, unpack(ARGV, start, math.min(start + 999, j + n_products - 1)))
    end
    j = j + n_products + 1
    for start = j, next_row - 1, 1000 do
      redis.call('ZADD', events, unpack(ARGV, start, math.min(start + 999, next_row - 1)))
    end
    redis.call('ZREMRANGEBYRANK', events, 0, -(keep + 1))
    local ids = {}
    for k, member in ipairs(redis.call('ZRANGE', events, -n, -1)) do
      ids[k] = string.match(member, '"product_id":(%d+)')
    end
    for _, v in ipairs({
      'first_event_time', fmt(first_t), 'last_event_time', fmt(last_t), 'duration', fmt(last_t - first_t),
      'has_cart', (total_carts > 0) and 1 or 0, 'distinct_products', redis.call('SCARD', products),
      'recent_products', table.concat(ids, ','), '_batch', tag, '_ts', now}) do values[#values + 1] = v end
    redis.call('HSET', h, unpack(values))
    redis.call('EXPIRE', h, ttl)
    redis.call('EXPIRE', products, ttl)
    redis.call('EXPIRE', events, ttl)
    merged = merged + 1
  end
  i = next_row
end
return merged
"""

# Which events of a batch were seen before: `SET <seen key> <writer>:<batch> NX EX ttl` per
# event id. A key holding this very batch's tag is the batch's own first attempt (a re-run):
# not a duplicate. ARGV: tag, ttl, key prefix, the ids one per line (one argument: far less
# client work than one argument per id). Returns the 0-based positions of the duplicates.
_FIRST_SEEN = """
local tag, ttl, prefix, dups, i = ARGV[1], ARGV[2], ARGV[3], {}, 0
for id in string.gmatch(ARGV[4], '[^\\n]+') do
  local key = prefix .. id
  if not redis.call('SET', key, tag, 'NX', 'EX', ttl) then
    if redis.call('GET', key) ~= tag then dups[#dups + 1] = i end
  end
  i = i + 1
end
return dups
"""


@dataclass(frozen=True)
class FeedPosition:
    """How far a reader has read a change feed: the feed's epoch ('' before any change) and change number."""

    epoch: str = ""
    seq: int = 0


@dataclass(frozen=True)
class ChangesSince:
    """A request for `read_groups`: which entities of a kept group changed after `since` (the change feed).

    Its reply is a `Changes`. Queued before the group's own reads in the same round trip,
    it makes a reader's cache exact: every change it does not report is in those reads.
    """

    group: FeatureGroup
    since: FeedPosition


@dataclass(frozen=True)
class Changes:
    """The reply to `ChangesSince`: the entities changed after `since`, and the feed's position `now`.

    `complete` is False when the feed cannot tell: a new epoch (Redis lost the feed, or
    the reader never read it) or a reader so far behind that the entries it missed were
    trimmed (`CHANGES_KEPT`). Then every cached window of the group must be read again.
    """

    since: FeedPosition
    now: FeedPosition
    entity_ids: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        return self.now.epoch == self.since.epoch and self.since.seq >= self.now.seq - CHANGES_KEPT


@dataclass(frozen=True)
class ReadAhead:
    """A request for `read_groups`: the windows of a kept group (`KEPT_COMBINED`) as of `at`, like
    `(group, entity_ids, at)`, and the next window of each entity past its point of the slide step
    (`ahead_points`): the read that has Redis build that window anyway returns it.

    Its reply is an `AheadRows`. A reader caching the windows needs none at the next slide
    boundary: the next window is the one read then, until a merge changes it (`ChangesSince`).
    """

    group: FeatureGroup
    entity_ids: Sequence[Any]
    at: float | None = None


@dataclass(frozen=True)
class AheadRows:
    """The reply to `ReadAhead`: a row per entity, as `read_groups` returns them, and `following`, the
    next window's row of the entities past their point (by position; None: no events in it)."""

    rows: list
    following: dict[int, Any]


#: What `read_groups` reads: (group, entity ids, at: None for now), or a change feed.
Request = tuple[FeatureGroup, Sequence[Any], float | None] | ChangesSince | ReadAhead


@dataclass(frozen=True)
class Shopper:
    """What the store holds about one user and their session (`OnlineStore.read_shopper`)."""

    bot: bool = False
    profile: dict[str, Any] | None = None
    user_2m: dict[str, Any] | None = None
    session: dict[str, Any] | None = None
    session_events: list[dict[str, Any]] = field(default_factory=list)


class OnlineStore:
    """Reads and writes clickrec's features in Redis (see the module docstring)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._merge_counts = client.register_script(_MERGE_COUNTS)
        self._merge_panes = client.register_script(_MERGE_PANES)
        self._window_readers: dict[str, tuple[FeatureGroup, Any]] = {}  # by group name, see `_window_reader`
        self._read_hashes = client.register_script(_READ_HASHES)
        self._read_changes = client.register_script(_READ_CHANGES)
        self._merge_sessions = client.register_script(_MERGE_SESSIONS)
        self._first_seen = client.register_script(_FIRST_SEEN)

    @classmethod
    def from_url(cls, url: str) -> OnlineStore:
        return cls(redis.Redis.from_url(url))

    # --- writes (the streaming job) ---------------------------------------------

    def write_entities(self, group: FeatureGroup, rows: Iterable[Mapping[str, Any]], now: float | None = None) -> int:
        """Replace the whole hash of each entity of a batch group (one key per entity, no window)."""
        if group.window is not Window.BATCH:
            raise ValueError(f"{group.name} is not a batch group")
        now = time.time() if now is None else now
        ttl = int(group.ttl.total_seconds())
        written = 0
        with self.client.pipeline(transaction=False) as pipe:
            for row in rows:
                key = window_key(group, row["entity_id"])
                pipe.delete(key)
                pipe.hset(key, mapping={**encode_features(group, row), "_ts": repr(now)})
                pipe.expire(key, ttl)
                written += 1
                if written % 5_000 == 0:  # bound the pipeline's memory on millions of users
                    pipe.execute()
            pipe.execute()
        return written

    def first_seen(self, event_ids: Sequence[str], writer: str, batch_id: int) -> list[bool]:
        """Which of a batch's (distinct) event ids are new: False for an id seen in an earlier batch.

        Each id is remembered for DEDUP_TTL seconds with the batch that first had it, so a
        batch that Spark re-runs after a crash finds its own ids and keeps them.
        """
        keep = [True] * len(event_ids)
        tag = f"{writer[:8]}:{batch_id}"
        if any(not e or "\n" in e for e in event_ids):
            raise ValueError("event ids must be non-empty and on one line")
        with self.client.pipeline(transaction=False) as pipe:
            starts = range(0, len(event_ids), _IDS_PER_CALL)
            for start in starts:
                ids = "\n".join(event_ids[start : start + _IDS_PER_CALL])
                self._first_seen(args=[tag, DEDUP_TTL, seen_key(""), ids], client=pipe)
            for start, dups in zip(starts, pipe.execute()):
                for position in dups:
                    keep[start + position] = False
        return keep

    @staticmethod
    def _merge_in_calls(script: Any, header: list[Any], rows: int, append_row: Callable[[list[Any], int], None],
                        pace: WritePace | None = None) -> list[tuple[int, Any]]:  # fmt: skip
        """Run a merge `script` over `rows` rows (`append_row(args, r)` adds row r's arguments after `header`),
        _ROWS_PER_WRITE_CALL rows a call, waiting after each call as `pace` says; (first row, reply) per call.

        Each call is its own round trip, not one pipeline: Redis reads a pipeline 16 KB at a
        time and runs what it read back to back, so a reader would wait behind several calls.
        Measured with the bench's October-2019-scale live writer (973 events a second) and
        a client PINGing Redis: the slowest PING in 1,000 waited 15 ms behind 500-row calls
        in one pipeline, 8-10 ms behind 50-row calls in one pipeline, 5-6 ms behind 50-row
        calls one by one; the writer's batches took 15% longer. Calls of 20 rows (8 alternating
        15-s runs): the slowest PING in 1,000 waited 3.9 ms against 6.1 ms behind 50-row calls,
        the writer's batches as long (51 against 51-53 ms); 10 rows: 3.2 ms, batches 18% longer.
        """
        replies = []
        for first in range(0, rows, _ROWS_PER_WRITE_CALL):
            args = list(header)
            for r in range(first, min(first + _ROWS_PER_WRITE_CALL, rows)):
                append_row(args, r)
            replies.append((first, script(args=args) if pace is None else pace.call(partial(script, args=args))))
        return replies

    def merge_panes(
        self, group: FeatureGroup, panes: pa.Table, writer: str, batch_id: int, now: float | None = None,
        pace: WritePace | None = None,
    ) -> tuple[int, list[Any]]:
        """Merge one batch's per-pane partials of a sliding group (spark_jobs.partials), once per (writer, batch).

        Returns the panes written and, for a user group, the users now over BOT_RULE in
        one of the windows that contain a merged pane.
        """
        now = time.time() if now is None else now
        slide, windows = _panes_per_window(group)
        spec, encoders = _window_spec(group)
        bot_field, bot_limit = ("events", BOT_RULE.max_events) if group.entity is USER else ("", 0)
        header = [writer, batch_id, int(group.ttl.total_seconds()), repr(now), slide, windows, bot_field, bot_limit, spec,
                  int(group.name in KEPT_COMBINED)]  # fmt: skip
        columns = {name: panes.column(name).to_pylist() for name in panes.column_names}
        entities, starts = columns["entity_id"], columns["pane_start"]

        def append_row(args: list[Any], r: int) -> None:
            args += [_base_key(group, entities[r]), int(starts[r])]
            for encode in encoders:
                encode(columns, r, args)

        results = self._merge_in_calls(self._merge_panes, header, panes.num_rows, append_row, pace)
        bots = sorted({entities[first + row - 1] for first, rows in results for row in rows})
        return panes.num_rows, bots

    def merge_counts(
        self, group: FeatureGroup, buckets: pa.Table, writer: str, batch_id: int, now: float | None = None,
        pace: WritePace | None = None,
    ) -> int:
        """Add one batch's per-bucket counts of a tumbling group, once per (writer, batch)."""
        now = time.time() if now is None else now
        header = [writer, batch_id, int(group.ttl.total_seconds()), repr(now), " ".join(group.names)]
        entities, starts = buckets.column("entity_id").to_pylist(), buckets.column("window_start").to_pylist()
        counts = [buckets.column(name).to_pylist() for name in group.names]

        def append_row(args: list[Any], r: int) -> None:
            args.append(window_key(group, entities[r], starts[r]))
            args += [int(c[r] or 0) for c in counts]

        replies = self._merge_in_calls(self._merge_counts, header, buckets.num_rows, append_row, pace)
        return sum(merged for _, merged in replies)

    def merge_sessions(
        self, sessions: pa.Table, writer: str, batch_id: int, now: float | None = None, pace: WritePace | None = None
    ) -> int:
        """Merge one batch's per-session partials (spark_jobs.partials), once per (writer, batch)."""
        now = time.time() if now is None else now
        group = SESSION_FEATURES
        header = [writer, batch_id, int(group.ttl.total_seconds()), repr(now), group.feature("recent_products").n,
                  SESSION_EVENTS_KEPT]  # fmt: skip
        c = {name: sessions.column(name).to_pylist() for name in sessions.column_names}

        def append_row(args: list[Any], r: int) -> None:
            products, times, members = c["distinct_products"][r], c["_event_t"][r], c["_event_m"][r]
            args += [
                window_key(group, c["entity_id"][r]), c["events"][r], c["carts"][r],
                repr(c["first_event_time"][r]), repr(c["last_event_time"][r]),
                repr(c["_order_t"][r]), c["_order_i"][r], c["user_id"][r], len(products), *products,
                len(members),
            ]  # fmt: skip
            for t, member in zip(times, members):
                args += [repr(t), member]

        replies = self._merge_in_calls(self._merge_sessions, header, sessions.num_rows, append_row, pace)
        return sum(merged for _, merged in replies)

    def flag_bots(self, user_ids: Iterable[Any]) -> int:
        """Flag users as bots for BOT_RULE.flag_ttl (re-flagging extends it)."""
        ttl = int(BOT_RULE.flag_ttl.total_seconds())
        flagged = 0
        with self.client.pipeline(transaction=False) as pipe:
            for user_id in user_ids:
                pipe.set(bot_key(user_id), "1", ex=ttl)
                flagged += 1
            pipe.execute()
        return flagged

    def beat(self, process: str, ttl: int = 60) -> None:
        """A long-running process says it is alive (health checks read `heartbeat`)."""
        self.client.set(f"{PREFIX}:heartbeat:{process}", repr(time.time()), ex=ttl)

    def heartbeat(self, process: str) -> float | None:
        raw = self.client.get(f"{PREFIX}:heartbeat:{process}")
        return float(raw) if raw else None

    def record_batch(self, query: str, stats: Mapping[str, Any]) -> None:
        """Freshness of a streaming query: its latest micro-batch (rows, duration, lag)."""
        self.client.hset(stream_key(query), mapping={k: str(v) for k, v in stats.items()})

    # --- reads (the API) ------------------------------------------------------------

    def read(self, group: FeatureGroup, entity_id: Any, at: float | None = None) -> dict[str, Any] | None:
        """The features of one entity as of `at` (default now); None when it has none."""
        return self.read_many(group, [entity_id], at)[0]

    def read_many(self, group: FeatureGroup, entity_ids: Sequence[Any], at: float | None = None) -> list[dict[str, Any] | None]:
        """Like `read` for many entities in one round trip."""
        return self.read_groups([(group, entity_ids, at)])[0]

    def read_groups(self, requests: Sequence[Request], *, raw: bool = False) -> list:
        """Several `read_many(group, ids, at)` in ONE round trip (the ranker's request path).

        Each reply is a list of rows, a `Changes` for a `ChangesSince` request, or an
        `AheadRows` for a `ReadAhead` request.

        Each group's keys go to Redis in script calls of up to 500 entities (sliding
        windows are combined from their panes there): a few replies instead of one
        command per key. `raw`: each row as Redis holds it, feature names and values as
        bytes (`decode_features` turns one into what `read_many` returns); for callers
        that only want numbers, which numpy reads from the bytes directly.
        """
        queued, replies = self._run_reads(lambda pipe: self._queue_reads(pipe, requests))
        return self._decode_reads(replies, queued, raw)

    def read_shopper(self, user_id: Any, session_id: str | None, at: float | None = None) -> Shopper:
        """Everything the API knows about a user and their session, in ONE round trip."""
        return self.read_shopper_and(user_id, session_id, at)[0]

    def read_shopper_and(
        self, user_id: Any, session_id: str | None, at: float | None = None,
        extra: Sequence[Request] = (),
    ) -> tuple[Shopper, list]:  # fmt: skip
        """`read_shopper`, and the `extra` reads in the same round trip (rows as Redis holds them, like
        `read_groups(extra, raw=True)`): the API reads its candidates' stale product rows this way."""
        requests = [(USER_PROFILE, [user_id], at), (USER_2M, [user_id], at),
                    (SESSION_FEATURES, [session_id] if session_id else [], at)]  # fmt: skip

        def queue(pipe: Any) -> tuple[list, list]:
            pipe.exists(bot_key(user_id))
            if session_id:
                pipe.zrange(session_keys(session_id)[2], 0, -1)
            return self._queue_reads(pipe, requests), self._queue_reads(pipe, extra)

        (queued, queued_extra), replies = self._run_reads(queue)
        events = [json.loads(member) for member in replies[1]] if session_id else []
        first = 2 if session_id else 1
        last = first + sum(calls for _, calls, _ in queued)
        (profile,), (user_2m,), session = self._decode_reads(replies[first:last], queued)
        shopper = Shopper(bot=bool(replies[0]), profile=profile, user_2m=user_2m,
                          session=session[0] if session else None, session_events=events)  # fmt: skip
        return shopper, self._decode_reads(replies[last:], queued_extra, raw=True)

    def _run_reads(self, queue: Callable[[Any], Any]) -> tuple[Any, list]:
        """Execute a pipeline of reads that `queue` fills; (what `queue` returned, the replies).

        The read scripts are called by SHA alone: a registered script in a pipeline costs a
        SCRIPT EXISTS round trip on every execute, a third of a warm request's Redis time.
        When Redis has lost them (restarted, SCRIPT FLUSH) they are loaded and the reads run again.
        """
        for attempt in (1, 2):
            with self.client.pipeline(transaction=False) as pipe:
                queued = queue(pipe)
                try:
                    return queued, pipe.execute()
                except redis.exceptions.NoScriptError:
                    if attempt == 2:
                        raise
                    readers = [script for _, script in self._window_readers.values()]
                    for script in (*readers, self._read_hashes, self._read_changes):
                        self.client.script_load(script.script)
        raise AssertionError("unreachable")

    def _window_reader(self, group: FeatureGroup) -> Any:
        """The registered `_READ_WINDOWS` script of a sliding group (built once per group: every API
        request reads one; kept by name, as hashing the frozen group alone takes 3 µs)."""
        cached = self._window_readers.get(group.name)
        if cached is None or cached[0] is not group:
            cached = self._window_readers[group.name] = (group, self.client.register_script(_read_windows_source(group)))
        return cached[1]

    def _queue_reads(self, pipe: Any, requests: Sequence[Request]) -> list:
        """Queue the script calls of `read_groups` on `pipe`; returns what `_decode_reads` needs."""
        now = time.time()
        queued: list[tuple[FeatureGroup, int, bool] | ChangesSince] = []  # (group, script calls queued, ahead)
        for request in requests:
            if isinstance(request, ChangesSince):
                since = request.since
                pipe.evalsha(self._read_changes.sha, 0, changes_key(request.group), since.epoch, since.seq)
                queued.append(request)
                continue
            ahead = isinstance(request, ReadAhead)
            if ahead:
                group, entity_ids, at = request.group, request.entity_ids, request.at
                if group.name not in KEPT_COMBINED:
                    raise ValueError(f"ReadAhead reads a group kept combined ({sorted(KEPT_COMBINED)}), not {group.name}")
            else:
                group, entity_ids, at = request
            at = now if at is None else at
            keep = 2 if ahead else int(group.name in KEPT_COMBINED)
            calls = 0
            for first in range(0, len(entity_ids), _ROWS_PER_CALL):
                chunk = entity_ids[first : first + _ROWS_PER_CALL]
                if group.window is Window.SLIDING:
                    keys = [_base_key(group, e) for e in chunk]
                    pipe.evalsha(self._window_reader(group).sha, 0, bucket_for_read(group, at), keep, repr(at), *keys)
                else:
                    bucket = None if group.window in (Window.SESSION, Window.BATCH) else bucket_for_read(group, at)
                    pipe.evalsha(self._read_hashes.sha, 0, *window_keys(group, chunk, bucket))
                calls += 1
            queued.append((group, calls, ahead))
        return queued

    @staticmethod
    def _decode_reads(replies: Sequence[Any], queued: list, raw: bool = False) -> list:
        out: list = []
        position = 0
        for entry in queued:
            if isinstance(entry, ChangesSince):
                epoch, seq, *pairs = replies[position]
                position += 1
                out.append(Changes(entry.since, FeedPosition(epoch.decode(), int(seq)),
                                   tuple(member.decode() for member in pairs[::2])))  # fmt: skip
                continue
            group, calls, ahead = entry
            flats = [flat for reply in replies[position : position + calls] for flat in reply]
            position += calls
            if ahead:  # per entity [window] or [window, next window]
                rows = OnlineStore._decode_rows(group, [pair[0] for pair in flats], raw)
                nexts = [i for i, pair in enumerate(flats) if len(pair) == 2]
                following = OnlineStore._decode_rows(group, [flats[i][1] for i in nexts], raw)
                out.append(AheadRows(rows, dict(zip(nexts, following))))
            else:
                out.append(OnlineStore._decode_rows(group, flats, raw))
        return out

    @staticmethod
    def _decode_rows(group: FeatureGroup, flats: Sequence[list], raw: bool) -> list:
        """Rows from the scripts' flat field/value lists (None: empty), raw (bytes) or decoded."""
        if raw:
            return [dict(zip(f[::2], f[1::2])) if f else None for f in flats]
        return [decode_features(group, dict(zip(f[::2], f[1::2]))) if f else None for f in flats]

    def session_events(self, session_id: str) -> list[dict[str, Any]]:
        """The session's latest raw events (at most SESSION_EVENTS_KEPT), oldest first.

        Each is a dict of SESSION_EVENT_FIELDS (event_time in epoch seconds; category_id
        None when unknown). An empty list when the session is unknown or expired.
        """
        members = self.client.zrange(session_keys(session_id)[2], 0, -1)
        return [json.loads(member) for member in members]

    def some_entities(self, group: FeatureGroup, limit: int = 1) -> list[str]:
        """Up to `limit` entity ids that have a key in a session or batch group (examples, e.g. for `make up`)."""
        if group.window not in (Window.SESSION, Window.BATCH):
            raise ValueError(f"{group.name} is keyed by window; ask for a session or batch group")
        found: list[str] = []
        for key in self.client.scan_iter(f"{PREFIX}:{group.name}:*", count=1000):
            entity = key.decode().split(":")[3]
            if entity not in found and ":" not in key.decode()[len(f"{PREFIX}:{group.name}:") :]:
                found.append(entity)
            if len(found) >= limit:
                break
        return found

    def is_bot(self, user_id: Any) -> bool:
        return bool(self.client.exists(bot_key(user_id)))

    def stream_stats(self, query: str) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.client.hgetall(stream_key(query)).items()}


def group(name: str) -> FeatureGroup:
    """A feature group by name (KeyError lists the known ones)."""
    try:
        return GROUPS_BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown feature group {name!r}; known: {', '.join(GROUPS_BY_NAME)}") from None
