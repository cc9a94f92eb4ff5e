"""The Spark schema of the click event, derived from the Arrow one (itself from `ClickEvent`)."""

from __future__ import annotations

import pyarrow as pa
from pyspark.sql import types as T

from producer.schema import EVENT_SCHEMA


def _spark_type(arrow_type: pa.DataType) -> T.DataType:
    if pa.types.is_timestamp(arrow_type):
        return T.TimestampType()
    if pa.types.is_int64(arrow_type):
        return T.LongType()
    if pa.types.is_int32(arrow_type):
        return T.IntegerType()
    if pa.types.is_floating(arrow_type):
        return T.DoubleType()
    if pa.types.is_boolean(arrow_type):
        return T.BooleanType()
    if pa.types.is_string(arrow_type):
        return T.StringType()
    raise TypeError(f"no Spark type for {arrow_type}: extend spark_jobs/schema.py")


def spark_schema(schema: pa.Schema = EVENT_SCHEMA) -> T.StructType:
    """A Spark `StructType` with the same fields, types and nullability as `schema`."""
    return T.StructType([T.StructField(f.name, _spark_type(f.type), f.nullable) for f in schema])


#: The click event as Spark sees it.
EVENT_SPARK_SCHEMA: T.StructType = spark_schema()
