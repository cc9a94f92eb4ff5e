"""Typed table schemas of the click event, derived from `ClickEvent` (never written by hand).

`EVENT_SCHEMA` is the Arrow schema of a decoded event (the lake's Parquet files,
the batch jobs' input); `spark_jobs.schema` derives the Spark `StructType` from
it. Add a field to `ClickEvent` and both follow. `decode_wire` turns the clicks
topic's JSON values into such a table (the stream's parser).
"""

from __future__ import annotations

import types
import typing
from datetime import datetime
from enum import Enum

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson
from pydantic.fields import FieldInfo

from producer.events import ClickEvent


def _base_type(annotation: object) -> tuple[type, bool]:
    """The Python type under Optional[...] / Annotated[...] and whether None is allowed."""
    nullable = False
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            nullable = nullable or len(args) < len(typing.get_args(annotation))
            annotation = args[0]
        else:
            return annotation, nullable  # type: ignore[return-value]


def _arrow_type(python_type: type) -> pa.DataType:
    if isinstance(python_type, type) and issubclass(python_type, Enum):
        return pa.string()
    if python_type is datetime:
        return pa.timestamp("us", tz="UTC")
    if python_type is bool:
        return pa.bool_()
    if python_type is int:
        return pa.int64()
    if python_type is float:
        return pa.float64()
    if python_type is str:
        return pa.string()
    raise TypeError(f"no Arrow type for {python_type!r}: extend producer/schema.py")


def _field(name: str, info: FieldInfo) -> pa.Field:
    python_type, nullable = _base_type(info.annotation)
    return pa.field(name, _arrow_type(python_type), nullable=nullable)


#: The decoded click event as an Arrow schema, field for field in `ClickEvent` order.
EVENT_SCHEMA: pa.Schema = pa.schema([_field(name, info) for name, info in ClickEvent.model_fields.items()])


#: What the JSON parser reads: every field nullable, so a value that lacks a required field is
#: rejected with a reason after parsing; fields the schema does not know are ignored.
_PARSE_OPTIONS = pajson.ParseOptions(
    explicit_schema=pa.schema([f.with_nullable(True) for f in EVENT_SCHEMA]), unexpected_field_behavior="ignore"
)
_REQUIRED = [f.name for f in EVENT_SCHEMA if not f.nullable]


def _lines(values: pa.Array) -> pa.Buffer:
    """Non-null values, each followed by a newline, as one buffer (no Python loop)."""
    joined = pc.binary_join_element_wise(values, pa.scalar(b"", pa.binary()), pa.scalar(b"\n", pa.binary()))
    offsets = np.frombuffer(joined.buffers()[1], dtype=np.int32)[joined.offset : joined.offset + len(joined) + 1]
    return joined.buffers()[2][int(offsets[0]) : int(offsets[-1])]


def _parse(values: pa.Array, first: int, rejected: list[tuple[int, str]]) -> list[tuple[pa.Table, int]]:
    """(table, index of its first value) pieces; a block that does not parse line for line is halved."""
    try:
        table = pajson.read_json(pa.BufferReader(_lines(values)), parse_options=_PARSE_OPTIONS)
        if table.num_rows == len(values):
            return [(table, first)]
        error = "not one JSON object on one line"
    except pa.ArrowInvalid as invalid:
        error = str(invalid).splitlines()[0]
    if len(values) == 1:
        rejected.append((first, f"not a click event: {error}"))
        return []
    half = len(values) // 2
    return _parse(values[:half], first, rejected) + _parse(values[half:], first + half, rejected)


def decode_wire(values: pa.Array) -> tuple[pa.Table, np.ndarray, list[tuple[int, str]]]:
    """The clicks topic's JSON values -> (events with `EVENT_SCHEMA`, the index of each one's value, rejects).

    One multi-threaded Arrow parse for a clean batch; a batch with bad values is halved
    until they stand alone (a few extra parses per bad value). A reject is ``(index,
    reason)``: a null value, one that is not a JSON event object, or one without a
    required field.
    """
    values = values.cast(pa.binary())
    valid = pc.is_valid(values).to_numpy(zero_copy_only=False)
    present = np.flatnonzero(valid)
    rejected = [(int(i), "no value") for i in np.flatnonzero(~valid)]
    among_present: list[tuple[int, str]] = []
    pieces = _parse(values.filter(pa.array(valid)), 0, among_present) if len(present) else []
    rejected += [(int(present[i]), reason) for i, reason in among_present]
    if not pieces:
        return EVENT_SCHEMA.empty_table(), np.empty(0, dtype=np.int64), sorted(rejected)
    table = pa.concat_tables(table for table, _ in pieces)
    index = np.concatenate([present[first : first + table.num_rows] for table, first in pieces])
    complete = np.logical_and.reduce([pc.is_valid(table.column(name)).to_numpy(zero_copy_only=False) for name in _REQUIRED])
    if not complete.all():
        for row in np.flatnonzero(~complete):
            missing = [name for name in _REQUIRED if not table.column(name)[int(row)].is_valid]
            rejected.append((int(index[row]), f"not a click event: missing {', '.join(missing)}"))
        table, index = table.filter(pa.array(complete)), index[complete]
    return table.select(EVENT_SCHEMA.names).cast(EVENT_SCHEMA), index, sorted(rejected)
