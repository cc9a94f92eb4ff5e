"""Versioned artifacts (candidates, models, analytics) in an object store chosen by URL.

Two layers:

- `BlobStore`: put / get / list / delete bytes under keys. `LocalBlobStore` for
  ``file:///path``, `S3BlobStore` for ``s3://bucket/prefix`` (MinIO under Docker,
  the native S3 endpoint here). One contract test suite runs against both.
- `Artifacts`: the version protocol on top. A job writes every file of a new
  version under ``<kind>/<version>/``, then the pointer ``<kind>/LATEST`` moves
  to it, last. A crash between files leaves ``LATEST`` on the old, complete
  version; readers only ever follow ``LATEST``. Old versions are pruned by a
  retention count.

    artifacts = Artifacts(open_blob_store(settings.artifacts_url, settings))
    with artifacts.new_version("candidates") as version:
        version.put_table("user_candidates.parquet", table)
        version.put_json("manifest.json", {...})
    artifacts.read_table("candidates", "user_candidates.parquet")  # from LATEST
"""

from __future__ import annotations

import io
import json
import logging
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.parquet as pq

from feature_store.settings import Settings

log = logging.getLogger(__name__)


class ArtifactNotFound(KeyError):
    """No such artifact key (or no version of that kind yet)."""


class BlobStore(Protocol):
    """The minimal object-store interface the version protocol needs."""

    def put(self, key: str, data: bytes) -> None: ...
    def get(self, key: str) -> bytes: ...  # raises ArtifactNotFound
    def list(self, prefix: str) -> list[str]: ...  # keys under prefix, sorted
    def delete(self, key: str) -> None: ...
    # the blob as a local file while the context lasts (raises ArtifactNotFound): readers that
    # stream a large file (e.g. parquet batch by batch) never hold all of its bytes in memory
    def local_file(self, key: str) -> AbstractContextManager[Path]: ...


class LocalBlobStore:
    """Blobs as files under a directory (writes are atomic: temp file + rename)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"artifact key {key!r} escapes the store")
        return path

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise ArtifactNotFound(key) from None

    @contextmanager
    def local_file(self, key: str) -> Iterator[Path]:
        path = self._path(key)
        if not path.is_file():
            raise ArtifactNotFound(key)
        yield path  # already one

    def list(self, prefix: str) -> list[str]:
        base = self.root.resolve()
        keys = [
            str(p.relative_to(base))
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        ]
        return sorted(k for k in keys if k.startswith(prefix))

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)


class S3BlobStore:
    """Blobs in an S3 bucket under a prefix, through the MinIO SDK."""

    def __init__(self, bucket: str, prefix: str, settings: Settings) -> None:
        from minio import Minio

        endpoint = urlsplit(settings.s3_endpoint_url)
        self.client = Minio(
            endpoint.netloc,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            region=settings.s3_region,
            secure=endpoint.scheme == "https",
        )
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if not self.client.bucket_exists(bucket):
            self.client.make_bucket(bucket)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(self.bucket, self._key(key), io.BytesIO(data), len(data))

    def get(self, key: str) -> bytes:
        from minio.error import S3Error

        try:
            response = self.client.get_object(self.bucket, self._key(key))
        except S3Error as error:
            if error.code in ("NoSuchKey", "NoSuchObject"):
                raise ArtifactNotFound(key) from None
            raise
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    @contextmanager
    def local_file(self, key: str) -> Iterator[Path]:
        """Downloaded (streamed to disk) into a temporary directory, removed afterwards."""
        from minio.error import S3Error

        with tempfile.TemporaryDirectory(prefix="clickrec-artifact-") as directory:
            path = Path(directory) / Path(key).name
            try:
                self.client.fget_object(self.bucket, self._key(key), str(path))
            except S3Error as error:
                if error.code in ("NoSuchKey", "NoSuchObject"):
                    raise ArtifactNotFound(key) from None
                raise
            yield path

    def list(self, prefix: str) -> list[str]:
        strip = len(self.prefix) + 1 if self.prefix else 0
        objects = self.client.list_objects(self.bucket, prefix=self._key(prefix), recursive=True)
        return sorted(o.object_name[strip:] for o in objects)

    def delete(self, key: str) -> None:
        self.client.remove_object(self.bucket, self._key(key))


def open_blob_store(url: str, settings: Settings) -> BlobStore:
    """`file:///path` -> LocalBlobStore; `s3://bucket/prefix` -> S3BlobStore."""
    parts = urlsplit(url)
    if parts.scheme in ("", "file"):
        return LocalBlobStore(Path(parts.path if parts.scheme else url))
    if parts.scheme == "s3":
        return S3BlobStore(parts.netloc, parts.path, settings)
    raise ValueError(f"unsupported ARTIFACTS_URL {url!r}: use file:///path or s3://bucket/prefix")


def new_version_id(now: datetime | None = None) -> str:
    """Sortable and unique: UTC time to the microsecond plus a random suffix."""
    now = now or datetime.now(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(2)


class VersionWriter:
    """Writes the files of one version; `Artifacts.new_version` publishes it."""

    def __init__(self, store: BlobStore, kind: str, version: str) -> None:
        self.store, self.kind, self.version = store, kind, version
        self.files: list[str] = []

    def put_bytes(self, name: str, data: bytes) -> None:
        self.store.put(f"{self.kind}/{self.version}/{name}", data)
        self.files.append(name)

    def put_json(self, name: str, value: Any) -> None:
        self.put_bytes(name, json.dumps(value, indent=2, default=str).encode())

    def put_table(self, name: str, table: pa.Table) -> None:
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        self.put_bytes(name, sink.getvalue())


class Artifacts:
    """The version protocol over a `BlobStore` (see the module docstring)."""

    def __init__(self, store: BlobStore, retention: int = 5) -> None:
        self.store = store
        self.retention = retention

    @contextmanager
    def new_version(self, kind: str) -> Iterator[VersionWriter]:
        """Write a new version; on a clean exit move `LATEST` to it (last) and prune old ones."""
        writer = VersionWriter(self.store, kind, new_version_id())
        yield writer
        writer.put_json("_COMPLETE", {"files": writer.files, "written_at": datetime.now(timezone.utc).isoformat()})
        self.store.put(f"{kind}/LATEST", writer.version.encode())
        log.info("published %s version %s (%d files)", kind, writer.version, len(writer.files))
        self.prune(kind)

    def latest(self, kind: str) -> str:
        """The version `LATEST` points to; raises ArtifactNotFound when there is none."""
        return self.store.get(f"{kind}/LATEST").decode().strip()

    def versions(self, kind: str) -> list[str]:
        """Complete versions of `kind`, oldest first."""
        done = [k for k in self.store.list(f"{kind}/") if k.endswith("/_COMPLETE")]
        return sorted(k.split("/")[1] for k in done)

    def read_bytes(self, kind: str, name: str, version: str | None = None) -> bytes:
        return self.store.get(f"{kind}/{version or self.latest(kind)}/{name}")

    def local_file(self, kind: str, name: str, version: str | None = None) -> AbstractContextManager[Path]:
        """A version's file on local disk while the context lasts (see `BlobStore.local_file`)."""
        return self.store.local_file(f"{kind}/{version or self.latest(kind)}/{name}")

    def read_json(self, kind: str, name: str, version: str | None = None) -> Any:
        return json.loads(self.read_bytes(kind, name, version))

    def read_table(self, kind: str, name: str, version: str | None = None) -> pa.Table:
        return pq.read_table(io.BytesIO(self.read_bytes(kind, name, version)))

    def prune(self, kind: str, *, stale_after: timedelta = timedelta(hours=6)) -> list[str]:
        """Delete all but the newest `retention` complete versions (never the LATEST one).

        An incomplete version may still be in the middle of being written by
        another job (started before the version just published), so it is only
        removed, as a crashed leftover, once its id is older than `stale_after`.
        """
        complete = self.versions(kind)
        keep = set(complete[-self.retention :]) | {self.latest(kind)}
        newest, done = max(keep), set(complete)
        stale = new_version_id(datetime.now(timezone.utc) - stale_after)
        removed = []
        for key in self.store.list(f"{kind}/"):
            parts = key.split("/")
            if len(parts) < 3 or parts[1] in keep or parts[1] >= newest:
                continue
            if parts[1] not in done and parts[1] >= stale:
                continue  # possibly still being written
            self.store.delete(key)
            removed.append(parts[1])
        return sorted(set(removed))


def open_artifacts(settings: Settings) -> Artifacts:
    """The artifact store the settings point at."""
    return Artifacts(open_blob_store(settings.artifacts_url, settings), retention=settings.artifact_retention)
