"""XGBoost models as artifacts: a booster with its manifest, and the feature-order check they share.

A trained model is only usable with the exact feature list, in the exact order,
that the code computes today: the manifest stores the list, and loading checks
it (DESIGN principle 1: the API refuses to start on a mismatch).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import xgboost as xgb

from feature_store.artifacts import Artifacts


class FeatureMismatch(ValueError):
    """The stored model was trained on another feature list than this code computes."""


def check_features(stored: Sequence[str], expected: Sequence[str], what: str) -> None:
    """Raise FeatureMismatch, saying what differs, unless `stored` is `expected` in the same order."""
    if tuple(stored) == tuple(expected):
        return
    missing = sorted(set(expected) - set(stored))
    extra = sorted(set(stored) - set(expected))
    raise FeatureMismatch(f"{what} was trained on other features (missing {missing}, unknown {extra}, or another "
                          "order): train it again")  # fmt: skip


def publish_booster(artifacts: Artifacts, kind: str, booster: xgb.Booster, manifest: Mapping[str, Any], *,
                    model_file: str, manifest_file: str) -> str:  # fmt: skip
    """The booster (XGBoost JSON) and its manifest as a new version of `kind`; returns the version."""
    with artifacts.new_version(kind) as version:
        version.put_bytes(model_file, bytes(booster.save_raw("json")))
        version.put_json(manifest_file, {**manifest, "kind": kind, "version": version.version})
    return version.version


def load_booster(artifacts: Artifacts, kind: str, version: str | None, *, model_file: str,
                 manifest_file: str) -> tuple[xgb.Booster, dict[str, Any], str]:  # fmt: skip
    """(booster, manifest, version) of `version` (default LATEST), one thread per prediction."""
    version = version or artifacts.latest(kind)
    manifest = artifacts.read_json(kind, manifest_file, version)
    booster = xgb.Booster()
    booster.load_model(bytearray(artifacts.read_bytes(kind, model_file, version)))
    booster.set_param({"nthread": 1})  # one request = one small matrix: threads only add latency
    return booster, manifest, version
