"""The online store: clickrec's Redis layout, owned by this one module.

Writers (the streaming job) and readers (the API, tests, `clickrec features`)
both go through it; `feature_store/README.md` shows what `redis-cli` displays.

Keys (``v1`` is the layout version; ids are decimal, times epoch seconds):

    fs:v1:user_2m:<user_id>:<window_end>        hash  one sliding window of a user
    fs:v1:product_2m:<product_id>:<window_end>  hash  one sliding window of a product
    fs:v1:product_1h:<product_id>:<hour_start>  hash  tumbling hour counters
    fs:v1:product_1d:<product_id>:<day_start>   hash  tumbling day counters
    fs:v1:session:<session_id>                  hash  the session so far
    fs:v1:session:<session_id>:products         set   its distinct products
    fs:v1:session:<session_id>:recent           zset  its latest events (event_id:product_id by time)
    fs:v1:user_profile:<user_id>                hash  the user's history (batch-materialized)
    fs:v1:bot:<user_id>                         string flagged as a bot until it expires
    fs:v1:stream:<query>                        hash  the latest micro-batch of a streaming query

Every feature hash holds the group's features (a missing field is a missing
value, never 0) plus ``_ts``, the epoch time it was written (freshness). Keys
expire `ttl` (from the definition) after their last write.

Window hashes are written whole (HSET of the window's full totals), so a
re-run micro-batch writes the same values again: idempotent. Session and
tumbling hashes are merged from per-batch partials by Lua scripts that record
the last applied ``<query id>:<batch id>`` and skip a batch applied before: a
re-run micro-batch is not counted twice.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import redis

from feature_store.definitions import (
    BOT_RULE,
    GROUPS_BY_NAME,
    SESSION_FEATURES,
    Dtype,
    FeatureGroup,
    Window,
)

PREFIX = "fs:v1"


def _epoch(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value)


def window_key(group: FeatureGroup, entity_id: Any, bucket: Any | None = None) -> str:
    """The hash key of an entity's features in `group` (`bucket`: window end or start, epoch s)."""
    if group.window in (Window.SESSION, Window.BATCH):
        return f"{PREFIX}:{group.name}:{entity_id}"
    return f"{PREFIX}:{group.name}:{entity_id}:{int(_epoch(bucket))}"


def session_keys(session_id: str) -> tuple[str, str, str]:
    base = window_key(SESSION_FEATURES, session_id)
    return base, f"{base}:products", f"{base}:recent"


def bot_key(user_id: Any) -> str:
    return f"{PREFIX}:bot:{user_id}"


def stream_key(query: str) -> str:
    return f"{PREFIX}:stream:{query}"


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
    text = {(k.decode() if isinstance(k, bytes) else k): v for k, v in mapping.items()}
    values = {f.name: decode_value(f.dtype, text.get(f.name)) for f in group.features}
    if "_ts" in text:
        values["_ts"] = float(text["_ts"].decode() if isinstance(text["_ts"], bytes) else text["_ts"])
    return values


# Merge a tumbling bucket's per-batch counts: skip a batch already applied.
_MERGE_COUNTS = """
local applied = redis.call('HGET', KEYS[1], '_batch')
if applied then
  local q, b = string.match(applied, '^(.*):(%d+)$')
  if q == ARGV[1] and tonumber(b) >= tonumber(ARGV[2]) then return 0 end
end
for i = 5, #ARGV, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[1], '_batch', ARGV[1] .. ':' .. ARGV[2], '_ts', ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

# Merge a session's per-batch partials (see SESSION_FEATURES): counts add up,
# products go to a set, the latest events to a zset ordered by (time, event id).
_MERGE_SESSION = """
local h, products, recent = KEYS[1], KEYS[2], KEYS[3]
local applied = redis.call('HGET', h, '_batch')
if applied then
  local q, b = string.match(applied, '^(.*):(%d+)$')
  if q == ARGV[1] and tonumber(b) >= tonumber(ARGV[2]) then return 0 end
end
local ttl, now = ARGV[3], ARGV[4]
local events, carts, first_t, last_t = ARGV[5], ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8])
local user_t, user_i, user_v, n = tonumber(ARGV[9]), ARGV[10], ARGV[11], tonumber(ARGV[12])
local n_products = tonumber(ARGV[13])
redis.call('HINCRBY', h, 'events', events)
local total_carts = redis.call('HINCRBY', h, 'carts', carts)
local old_first = tonumber(redis.call('HGET', h, 'first_event_time') or first_t)
local old_last = tonumber(redis.call('HGET', h, 'last_event_time') or last_t)
first_t = math.min(first_t, old_first)
last_t = math.max(last_t, old_last)
local old_user_t = tonumber(redis.call('HGET', h, '_user_t') or '-1')
local old_user_i = redis.call('HGET', h, '_user_i') or ''
if user_t > old_user_t or (user_t == old_user_t and user_i > old_user_i) then
  redis.call('HSET', h, 'user_id', user_v, '_user_t', ARGV[9], '_user_i', user_i)
end
local i = 14
for _ = 1, n_products do redis.call('SADD', products, ARGV[i]); i = i + 1 end
while i < #ARGV do redis.call('ZADD', recent, ARGV[i], ARGV[i + 1]); i = i + 2 end
redis.call('ZREMRANGEBYRANK', recent, 0, -(n + 1))
local latest = redis.call('ZRANGE', recent, 0, -1)
local ids = {}
for j, member in ipairs(latest) do ids[j] = string.match(member, ':(.*)$') end
redis.call('HSET', h,
  'first_event_time', string.format('%.17g', first_t), 'last_event_time', string.format('%.17g', last_t),
  'duration', string.format('%.17g', last_t - first_t), 'has_cart', (total_carts > 0) and 1 or 0,
  'distinct_products', redis.call('SCARD', products), 'recent_products', table.concat(ids, ','),
  '_batch', ARGV[1] .. ':' .. ARGV[2], '_ts', now)
redis.call('EXPIRE', h, ttl); redis.call('EXPIRE', products, ttl); redis.call('EXPIRE', recent, ttl)
return 1
"""


class OnlineStore:
    """Reads and writes clickrec's features in Redis (see the module docstring)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._merge_counts = client.register_script(_MERGE_COUNTS)
        self._merge_session = client.register_script(_MERGE_SESSION)

    @classmethod
    def from_url(cls, url: str) -> OnlineStore:
        return cls(redis.Redis.from_url(url))

    # --- writes (the streaming job) ---------------------------------------------

    def write_windows(self, group: FeatureGroup, rows: Iterable[Mapping[str, Any]], now: float | None = None) -> int:
        """HSET the full totals of each updated window (idempotent); returns the keys written."""
        now = time.time() if now is None else now
        ttl = int(group.ttl.total_seconds())
        bucket_field = "window_end" if group.window is Window.SLIDING else "window_start"
        written = 0
        with self.client.pipeline(transaction=False) as pipe:
            for row in rows:
                key = window_key(group, row["entity_id"], row[bucket_field])
                fields = encode_features(group, row)
                missing = [name for name in group.names if name not in fields]
                if missing:  # a value that became missing must not keep an older total's value
                    pipe.hdel(key, *missing)
                pipe.hset(key, mapping={**fields, "_ts": repr(now)})
                pipe.expire(key, ttl)
                written += 1
            pipe.execute()
        return written

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

    def merge_counts(
        self, group: FeatureGroup, rows: Iterable[Mapping[str, Any]], writer: str, batch_id: int, now: float | None = None
    ) -> int:
        """Add one batch's per-bucket counts of a tumbling group, once per (writer, batch)."""
        now = time.time() if now is None else now
        ttl = int(group.ttl.total_seconds())
        counted = 0
        with self.client.pipeline(transaction=False) as pipe:
            for row in rows:
                pairs = [x for f in group.features for x in (f.name, int(row[f.name] or 0))]
                self._merge_counts(
                    keys=[window_key(group, row["entity_id"], row["window_start"])],
                    args=[writer, batch_id, ttl, repr(now), *pairs],
                    client=pipe,
                )
                counted += 1
            pipe.execute()
        return counted

    def merge_sessions(self, rows: Iterable[Mapping[str, Any]], writer: str, batch_id: int, now: float | None = None) -> int:
        """Merge one batch's per-session partials, once per (writer, batch)."""
        now = time.time() if now is None else now
        group = SESSION_FEATURES
        ttl = int(group.ttl.total_seconds())
        n = group.feature("recent_products").n
        merged = 0
        with self.client.pipeline(transaction=False) as pipe:
            for row in rows:
                user = row["user_id"]
                products = list(row["distinct_products"])
                recent = sorted(row["recent_products"], key=lambda item: (item["t"], item["i"]))[-n:]
                args: list[Any] = [
                    writer, batch_id, ttl, repr(now), row["events"], row["carts"],
                    repr(row["first_event_time"]), repr(row["last_event_time"]),
                    repr(user["t"]), user["i"], user["v"], n, len(products), *products,
                ]  # fmt: skip
                for item in recent:
                    args += [repr(item["t"]), f"{item['i']}:{item['v']}"]
                self._merge_session(keys=list(session_keys(row["entity_id"])), args=args, client=pipe)
                merged += 1
            pipe.execute()
        return merged

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
        at = time.time() if at is None else at
        bucket = None if group.window in (Window.SESSION, Window.BATCH) else bucket_for_read(group, at)
        with self.client.pipeline(transaction=False) as pipe:
            for entity_id in entity_ids:
                pipe.hgetall(window_key(group, entity_id, bucket))
            raw = pipe.execute()
        return [decode_features(group, mapping) if mapping else None for mapping in raw]

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
