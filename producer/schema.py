"""Typed table schemas of the click event, derived from `ClickEvent` (never written by hand).

`EVENT_SCHEMA` is the Arrow schema of a decoded event (the lake's Parquet files,
the batch jobs' input); `spark_jobs.schema` derives the Spark `StructType` from
it. Add a field to `ClickEvent` and both follow.
"""

from __future__ import annotations

import types
import typing
from datetime import datetime
from enum import Enum

import pyarrow as pa
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
