"""One micro-batch's partial aggregates, in Arrow, for the online store's merges.

The stream collects each micro-batch to the driver once (it appends it to the lake
anyway) and aggregates it here with Arrow's C++ group-by: no Spark job, shuffle or
streaming state per feature group. Every partial is mergeable: the Redis scripts of
`feature_store.online` add it to what the earlier batches left, once per batch.

- `dedupe_batch`: one row per event id (the first one) within the batch;
- `pane_partials(events, group)`: per entity and *pane* (the ``slide``-long tumbling
  piece of time) of a sliding group; a pane is merged into each of the windows that
  contain it;
- `session_partials(events)`: per session, with its latest raw events;
- `bucket_counts(events, group)`: per entity and bucket of a tumbling group.

Columns follow the feature declarations (`feature_store.definitions`): one per
feature named like it; a mean is ``<name>__sum`` and ``<name>__n``; last-value
features share ``_order_t`` / ``_order_i``, the time and id of the entity's latest
event ("latest" is by (event_time, event_id), as in spark_jobs.features).
`spark_jobs.features.batch_features` is the reference these must add up to; the
stream test holds every key in Redis to it.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from feature_store.definitions import ACTIVITY_WEIGHTS, SESSION_FEATURES, Agg, Feature, FeatureGroup, Window
from feature_store.online import SESSION_EVENT_FIELDS, SESSION_EVENTS_KEPT, session_event_member

_LAST = pc.ScalarAggregateOptions(skip_nulls=False)
_VALID = pc.CountOptions(mode="only_valid")


def epoch_seconds(times: pa.ChunkedArray | pa.Array) -> pa.Array:
    """Timestamps (us, UTC) as float epoch seconds."""
    return pc.divide(pc.cast(pc.cast(times, pa.timestamp("us", tz="UTC")).cast(pa.int64()), pa.float64()), 1e6)


def dedupe_batch(events: pa.Table) -> pa.Table:
    """The first row of each event id, in the batch's order."""
    n = events.num_rows
    if n == 0:
        return events
    firsts = (
        pa.table({"event_id": events.column("event_id"), "_i": pa.array(np.arange(n, dtype=np.int64))})
        .group_by("event_id", use_threads=False)
        .aggregate([("_i", "min")])
        .column("_i_min")
    )
    if len(firsts) == n:
        return events
    return events.take(pc.take(firsts, pc.sort_indices(firsts)))


def in_order(events: pa.Table) -> pa.Table:
    """Events sorted by (event_time, event_id), with ``_t`` (epoch seconds): what the group-bys expect."""
    events = events.sort_by([("event_time", "ascending"), ("event_id", "ascending")])
    return events.append_column("_t", epoch_seconds(events.column("event_time")))


def _of_types(events: pa.Table, feature: Feature) -> pa.Array | None:
    if not feature.event_types:
        return None
    return pc.is_in(events.column("event_type"), value_set=pa.array([t.value for t in feature.event_types]))


def _activity(events: pa.Table) -> pa.Array:
    types = [t.value for t in ACTIVITY_WEIGHTS]
    weights = pa.array(list(ACTIVITY_WEIGHTS.values()), pa.float64())
    return pc.fill_null(pc.take(weights, pc.index_in(events.column("event_type"), value_set=pa.array(types))), 0.0)


def _columns(events: pa.Table, features: tuple[Feature, ...]) -> tuple[dict[str, pa.Array], list[tuple]]:
    """The input columns and the Arrow aggregations of each feature's partial."""
    inputs: dict[str, pa.Array] = {}
    aggs: list[tuple] = []
    ordered = False
    for f in features:
        only = _of_types(events, f)
        match f.agg:
            case Agg.COUNT:
                ones = pa.array(np.ones(events.num_rows, dtype=np.int64)) if only is None else pc.cast(only, pa.int64())
                inputs[f.name] = ones
                aggs.append((f.name, "sum", f.name))
            case Agg.COUNT_DISTINCT:
                values = events.column(f.column)
                inputs[f.name] = values if only is None else pc.if_else(only, values, None)
                aggs.append((f.name, "distinct", f.name, _VALID))
            case Agg.MEAN:
                values = events.column(f.column)
                inputs[f.name] = values if only is None else pc.if_else(only, values, None)
                aggs += [(f.name, "sum", f"{f.name}__sum"), (f.name, "count", f"{f.name}__n", _VALID)]
            case Agg.MAX:
                values = events.column(f.column)
                inputs[f.name] = values if only is None else pc.if_else(only, values, None)
                aggs.append((f.name, "max", f.name))
            case Agg.WEIGHTED_COUNT:
                inputs[f.name] = _activity(events)
                aggs.append((f.name, "sum", f.name))
            case Agg.FIRST_TIME:
                aggs.append(("_t", "min", f.name))
            case Agg.LAST_TIME:
                aggs.append(("_t", "max", f.name))
            case Agg.LAST_VALUE:
                inputs[f.name] = events.column(f.column)
                aggs.append((f.name, "last", f.name, _LAST))
                if not ordered:
                    aggs += [("_t", "last", "_order_t", _LAST), ("event_id", "last", "_order_i", _LAST)]
                    ordered = True
            case Agg.LAST_N | Agg.DERIVED:
                pass  # LAST_N: from the session's events zset; DERIVED: computed by the merge
            case _:
                raise ValueError(f"{f.name}: {f.agg} has no mergeable partial")
    return inputs, aggs


def _group(
    keys: dict[str, pa.Array], events: pa.Table, features: tuple[Feature, ...], extra: dict[str, pa.Array] | None = None
) -> pa.Table:
    """Group by `keys`; each feature's partial, plus the list of each `extra` column as ``_<name>``."""
    inputs, aggs = _columns(events, features)
    for name, values in (extra or {}).items():
        inputs[name] = values
        aggs.append((name, "list", f"_{name}"))
    table = pa.table({**keys, **inputs, "_t": events.column("_t"), "event_id": events.column("event_id")})
    grouped = table.group_by(list(keys), use_threads=False).aggregate(
        [(column, fn, *options) for column, fn, _, *options in aggs]
    )
    # Arrow names the outputs `<column>_<function>`: name them after the partials.
    produced = [f"{column}_{fn}" for column, fn, *_ in aggs]
    return grouped.select(list(keys) + produced).rename_columns(list(keys) + [name for _, _, name, *_ in aggs])


def pane_partials(events: pa.Table, group: FeatureGroup, since: float = 0.0) -> pa.Table:
    """Per (entity_id, pane_start) partials of a sliding group, from `in_order` events.

    Only the panes that belong to a window ending at or after `since` (epoch s).
    """
    if group.window is not Window.SLIDING:
        raise ValueError(f"{group.name} is not a sliding group")
    slide, length = group.slide.total_seconds(), group.length.total_seconds()
    panes = pc.cast(pc.multiply(pc.floor(pc.divide(events.column("_t"), slide)), slide), pa.int64())
    recent = pc.greater_equal(pc.add(panes, length), since)
    events, panes = events.filter(recent), panes.filter(recent)
    keys = {"entity_id": events.column(group.entity.join_key), "pane_start": panes}
    return _group(keys, events, group.features)


def bucket_counts(events: pa.Table, group: FeatureGroup, since: float = 0.0) -> pa.Table:
    """Per (entity_id, window_start) counts of a tumbling group, for buckets ending at or after `since`."""
    if group.window is not Window.TUMBLING:
        raise ValueError(f"{group.name} is not a tumbling group")
    length = group.length.total_seconds()
    starts = pc.cast(pc.multiply(pc.floor(pc.divide(events.column("_t"), length)), length), pa.int64())
    recent = pc.greater_equal(pc.add(starts, length), since)
    events, starts = events.filter(recent), starts.filter(recent)
    return _group({"entity_id": events.column(group.entity.join_key), "window_start": starts}, events, group.features)


def session_partials(events: pa.Table, since: float = 0.0) -> pa.Table:
    """Per session partials of SESSION_FEATURES from `in_order` events, with the session's latest
    events as ``_event_t`` (epoch s) and ``_event_m`` (`feature_store.online.session_event_member`).

    Only sessions whose latest event in this batch is at or after `since`.
    """
    group = SESSION_FEATURES
    events = events.filter(pc.is_valid(events.column("user_session")))
    last = (
        pa.table({"s": events.column("user_session"), "_t": events.column("_t")})
        .group_by("s", use_threads=False)
        .aggregate([("_t", "max")])
    )
    wanted = last.filter(pc.greater_equal(last.column("_t_max"), since)).column("s")
    if len(wanted) < len(last):
        events = events.filter(pc.is_in(events.column("user_session"), value_set=wanted))
    extra = {"event_t": events.column("_t"), "event_m": pa.array(_members(events), pa.string())}
    sessions = _group({"entity_id": events.column("user_session")}, events, group.features, extra)
    if sessions.num_rows and pc.max(pc.list_value_length(sessions.column("_event_t"))).as_py() > SESSION_EVENTS_KEPT:
        sessions = _keep_latest(sessions)
    return sessions


def _members(events: pa.Table) -> list[str]:
    columns = [events.column("_t" if name == "event_time" else name).to_pylist() for name in SESSION_EVENT_FIELDS]
    return [session_event_member(dict(zip(SESSION_EVENT_FIELDS, values))) for values in zip(*columns)]


def _keep_latest(sessions: pa.Table) -> pa.Table:
    """Only the SESSION_EVENTS_KEPT latest events of each session (the zset keeps no more)."""
    times, members = [], []
    for t, m in zip(sessions.column("_event_t").to_pylist(), sessions.column("_event_m").to_pylist()):
        pairs = sorted(zip(t, m))[-SESSION_EVENTS_KEPT:]
        times.append([p[0] for p in pairs])
        members.append([p[1] for p in pairs])
    sessions = sessions.set_column(sessions.schema.get_field_index("_event_t"), "_event_t", pa.array(times))
    return sessions.set_column(sessions.schema.get_field_index("_event_m"), "_event_m", pa.array(members))


def lake_rows(events: pa.Table) -> pa.Table:
    """The batch without the helper columns (what the lake stores)."""
    return events.drop_columns([c for c in ("_t", "ingest_time") if c in events.column_names])
