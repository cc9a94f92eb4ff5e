"""One contract suite for every `BlobStore` and the version protocol on top of it.

Parametrized over `LocalBlobStore` (a tmp dir) and `S3BlobStore` against the
real S3 endpoint of the `stack` fixture (MinIO under Docker, moto natively).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pyarrow as pa
import pytest

from feature_store.artifacts import ArtifactNotFound, Artifacts, BlobStore, LocalBlobStore, S3BlobStore, open_blob_store


class Boom(RuntimeError):
    pass


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    if request.param == "local":
        return LocalBlobStore(tmp_path / "blobs")
    settings = request.getfixturevalue("stack")
    # a fresh prefix per test: tests never see each other's keys
    store = open_blob_store(f"s3://{settings.s3_bucket}/contract-{uuid.uuid4().hex[:8]}", settings)
    assert isinstance(store, S3BlobStore)
    return store


# --- BlobStore -----------------------------------------------------------------


def test_put_get_round_trip(store: BlobStore) -> None:
    store.put("a/b/c.bin", b"\x00\x01payload")
    assert store.get("a/b/c.bin") == b"\x00\x01payload"
    store.put("a/b/c.bin", b"v2")  # overwrite
    assert store.get("a/b/c.bin") == b"v2"
    store.put("empty", b"")
    assert store.get("empty") == b""


def test_missing_key_raises_artifact_not_found(store: BlobStore) -> None:
    with pytest.raises(ArtifactNotFound):
        store.get("no/such/key")
    assert issubclass(ArtifactNotFound, KeyError)


def test_local_file_holds_the_blob_while_the_context_lasts(store: BlobStore) -> None:
    payload = bytes(range(256)) * 4096  # 1 MB
    store.put("k/v1/big.bin", payload)
    with store.local_file("k/v1/big.bin") as path:
        assert path.read_bytes() == payload
    if isinstance(store, S3BlobStore):
        assert not path.exists() and not path.parent.exists()  # the download is cleaned up
    assert store.get("k/v1/big.bin") == payload  # the blob itself stays
    with pytest.raises(ArtifactNotFound):
        with store.local_file("no/such/key"):
            pass


def test_list_is_sorted_and_prefix_scoped(store: BlobStore) -> None:
    for key in ("k2/x", "k1/b", "k1/a", "k10/z", "other"):
        store.put(key, key.encode())
    assert store.list("k1/") == ["k1/a", "k1/b"]
    assert store.list("k1") == ["k1/a", "k1/b", "k10/z"]
    assert store.list("") == ["k1/a", "k1/b", "k10/z", "k2/x", "other"]
    assert store.list("nothing/") == []


def test_delete(store: BlobStore) -> None:
    store.put("d/1", b"1")
    store.put("d/2", b"2")
    store.delete("d/1")
    assert store.list("d/") == ["d/2"]
    with pytest.raises(ArtifactNotFound):
        store.get("d/1")
    store.delete("d/1")  # deleting a missing key is not an error


# --- version protocol -------------------------------------------------------------


def test_no_version_yet(store: BlobStore) -> None:
    artifacts = Artifacts(store)
    with pytest.raises(ArtifactNotFound):
        artifacts.latest("candidates")
    with pytest.raises(ArtifactNotFound):
        artifacts.read_json("candidates", "manifest.json")
    assert artifacts.versions("candidates") == []


def test_latest_moves_only_after_every_file(store: BlobStore) -> None:
    artifacts = Artifacts(store)
    table = pa.table({"user_id": [1, 2], "score": [0.5, 0.25]})
    with artifacts.new_version("candidates") as first:
        first.put_table("t.parquet", table)
        first.put_json("manifest.json", {"n": 1})
    assert artifacts.latest("candidates") == first.version
    with artifacts.new_version("candidates") as second:
        second.put_json("manifest.json", {"n": 2})
        # mid-write: the new files exist, LATEST still names the old, complete version
        assert artifacts.latest("candidates") == first.version
        assert artifacts.read_json("candidates", "manifest.json") == {"n": 1}
        assert artifacts.versions("candidates") == [first.version]
        second.put_table("t.parquet", table.slice(0, 1))
    assert artifacts.latest("candidates") == second.version
    assert artifacts.read_json("candidates", "manifest.json") == {"n": 2}
    assert artifacts.read_table("candidates", "t.parquet").num_rows == 1
    assert artifacts.read_table("candidates", "t.parquet", version=first.version).equals(table)
    assert artifacts.versions("candidates") == [first.version, second.version]
    done = artifacts.read_json("candidates", "_COMPLETE")
    assert sorted(done["files"]) == ["manifest.json", "t.parquet"]


def test_crash_inside_new_version_leaves_latest_on_the_old_version(store: BlobStore) -> None:
    artifacts = Artifacts(store)
    with artifacts.new_version("models") as good:
        good.put_json("manifest.json", {"ok": True})
    with pytest.raises(Boom):
        with artifacts.new_version("models") as bad:
            bad.put_json("manifest.json", {"ok": False})
            raise Boom("the job died half way")
    assert artifacts.latest("models") == good.version
    assert artifacts.read_json("models", "manifest.json") == {"ok": True}
    assert artifacts.versions("models") == [good.version]  # the crashed one is not complete
    with pytest.raises(ArtifactNotFound):
        store.get(f"models/{bad.version}/_COMPLETE")


def test_retention_prunes_old_complete_versions_never_latest(store: BlobStore) -> None:
    artifacts = Artifacts(store, retention=2)
    made = []
    for n in range(4):
        with artifacts.new_version("pop") as v:
            v.put_json("manifest.json", {"n": n})
        made.append(v.version)
    assert artifacts.versions("pop") == made[-2:]
    assert not [k for k in store.list("pop/") if made[0] in k or made[1] in k]
    assert artifacts.latest("pop") == made[-1]

    # an operator rolls LATEST back to the older version, then retention shrinks to 1: LATEST survives
    store.put("pop/LATEST", made[2].encode())
    removed = Artifacts(store, retention=1).prune("pop")
    assert removed == []
    assert artifacts.versions("pop") == made[2:]
    assert artifacts.read_json("pop", "manifest.json") == {"n": 2}
    store.put("pop/LATEST", made[3].encode())
    assert Artifacts(store, retention=1).prune("pop") == [made[2]]
    assert artifacts.versions("pop") == [made[3]]


def test_kinds_are_independent(store: BlobStore) -> None:
    artifacts = Artifacts(store, retention=1)
    with artifacts.new_version("a") as va:
        va.put_json("m.json", {"kind": "a"})
    for _ in range(2):
        with artifacts.new_version("ab") as vb:
            vb.put_json("m.json", {"kind": "ab"})
    assert artifacts.latest("a") == va.version
    assert artifacts.read_json("a", "m.json") == {"kind": "a"}
    assert artifacts.versions("a") == [va.version]


def test_a_slower_concurrent_writer_keeps_its_files(store: BlobStore) -> None:
    """Job A starts, job B starts later and publishes first (and prunes): A's half-written version survives."""
    artifacts = Artifacts(store, retention=1)
    with artifacts.new_version("cands") as slow:
        slow.put_json("part-1.json", {"job": "A"})
        with artifacts.new_version("cands") as fast:
            fast.put_json("part-1.json", {"job": "B"})
        assert artifacts.latest("cands") == fast.version
        slow.put_json("part-2.json", {"job": "A"})
    assert artifacts.latest("cands") == slow.version
    assert artifacts.read_json("cands", "part-1.json") == {"job": "A"}
    assert artifacts.read_json("cands", "part-2.json") == {"job": "A"}


def test_crashed_leftovers_are_pruned_once_stale(store: BlobStore) -> None:
    from datetime import datetime, timedelta, timezone

    from feature_store.artifacts import new_version_id

    artifacts = Artifacts(store, retention=1)
    old = new_version_id(datetime.now(timezone.utc) - timedelta(days=2))
    store.put(f"cands/{old}/part-1.json", b"{}")  # a job that died two days ago
    with artifacts.new_version("cands") as v:
        v.put_json("m.json", {})
    assert store.list(f"cands/{old}/") == []
    assert artifacts.latest("cands") == v.version
