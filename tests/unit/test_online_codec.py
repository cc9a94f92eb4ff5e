"""The Redis codec: what a feature value looks like in the store, and back."""

from __future__ import annotations

import math

import pytest

from feature_store.definitions import SESSION_FEATURES, USER_2M, USER_PROFILE, Dtype
from feature_store.online import decode_features, decode_value, encode_features, encode_value, window_key, window_keys


@pytest.mark.parametrize(
    ("dtype", "value", "stored"),
    [
        (Dtype.INT, 3, "3"),
        (Dtype.FLOAT, 2.5, "2.5"),
        (Dtype.STRING, "electronics.smartphone", "electronics.smartphone"),
        (Dtype.INT_LIST, [3, 1, 2], "3,1,2"),
        (Dtype.JSON, {"123": 0.5, "7": 0.25}, '{"123":0.5,"7":0.25}'),
    ],
)
def test_round_trip(dtype: Dtype, value: object, stored: str) -> None:
    assert encode_value(dtype, value) == stored
    assert decode_value(dtype, stored) == value


def test_missing_values_are_not_stored() -> None:
    assert encode_value(Dtype.FLOAT, math.nan) is None
    fields = encode_features(USER_2M, {"events": 2, "mean_view_price": None})
    assert fields == {"events": "2"}
    decoded = decode_features(USER_2M, fields)
    assert decoded["events"] == 2 and decoded["mean_view_price"] is None


def test_json_keys_become_text() -> None:
    # ids are ints in memory, text in JSON: readers look them up by str(id)
    assert decode_value(Dtype.JSON, encode_value(Dtype.JSON, {42: 1.0})) == {"42": 1.0}


def test_keys_without_window() -> None:
    assert window_key(USER_PROFILE, 7) == "fs:v1:user_profile:7"
    assert window_key(SESSION_FEATURES, "abc") == "fs:v1:session:abc"
    assert window_key(USER_2M, 7, 1_600_000_020) == "fs:v1:user_2m:7:1600000020"


def test_window_keys_are_window_key_of_each_entity() -> None:
    for group, bucket in ((USER_2M, 1_600_000_020.0), (USER_PROFILE, None), (SESSION_FEATURES, None)):
        ids = [7, "s-1", 123456789]
        assert window_keys(group, ids, bucket) == [window_key(group, e, bucket) for e in ids]
