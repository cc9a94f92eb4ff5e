"""The artifacts the API serves from, loaded into memory and swapped atomically while it serves.

`Registry.snapshot` is one immutable `Snapshot` holding the loaded version of
every artifact kind (candidates, ranker, purchase model, analytics). A request
reads the snapshot once and uses only that object, so it sees one consistent
set of versions from start to end. `Registry.refresh` (run every
API_ARTIFACT_POLL_SECONDS by `poll_forever`) follows each kind's ``LATEST``
pointer; when it moved, the new version is loaded *beside* the old one and a new
snapshot replaces the old in a single reference assignment. Requests in flight
keep the old snapshot until they finish; nothing is ever half-swapped. A
version that fails to load is logged, counted and skipped: the old one keeps
serving and `/ready` shows the error.

Memory: the candidates are kept as factors (users x f and items x f, float32)
plus sorted id arrays, with top lists only for the most recent users
(`CandidateSet.als_top`); October 2019's 3M users x 200 candidates would not
fit, its 3M x 64 factors take 0.8 GB. They are read batch
by batch into their final array (`_read_factors`), so loading peaks at the
file's bytes plus that array, not at three copies of the table.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import math
import mmap
import os
import shutil
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import lru_cache
from datetime import date, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from feature_store.artifacts import ArtifactNotFound, Artifacts, open_artifacts
from feature_store.settings import Settings
from services.api.recommend import category_mask, top_by_factors
from spark_jobs.candidates.catalogue import Catalogue
from spark_jobs.candidates.item_item import ItemNeighbours

log = logging.getLogger(__name__)

CANDIDATES = "candidates"
RANKER = "ranker"
PURCHASE_MODEL = "purchase_model"
ANALYTICS = "analytics"
#: Every artifact kind the API loads, in load order.
KINDS: tuple[str, ...] = (CANDIDATES, RANKER, PURCHASE_MODEL, ANALYTICS)
NEIGHBOUR_KINDS: tuple[str, ...] = ("also_viewed", "also_bought")


class ModelMismatch(RuntimeError):
    """A stored model does not fit this code (its feature list differs): the API refuses to start on it."""


# --------------------------------------------------------------------------- #
# Popular lists
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class PopularItems:
    product_ids: np.ndarray
    users: np.ndarray  #: distinct users behind each product (the ranking key)
    metric: np.ndarray  #: "purchase" or "view", per product (a short best-seller list is topped up with views)


class PopularLists:
    """`popular.parquet` in memory: best sellers / most viewed per (window, metric), overall and by category."""

    _CACHE_SIZE = 2048

    def __init__(self, table: pa.Table) -> None:
        self.windows: tuple[int, ...] = tuple(sorted(set(table["window_days"].to_pylist())))
        self.metrics: tuple[str, ...] = tuple(sorted(set(table["metric"].to_pylist())))
        self._lists: dict[tuple[int, str], dict[str, np.ndarray]] = {}
        for window in self.windows:
            for metric in self.metrics:
                part = table.filter(pc.and_(pc.equal(table["window_days"], window), pc.equal(table["metric"], metric)))
                self._lists[(window, metric)] = {
                    "category_id": pc.fill_null(part["category_id"], -1).to_numpy(),  # -1 = the global list
                    "category_code": np.asarray(part["category_code"].to_pylist(), dtype=object),
                    "product_id": part["product_id"].to_numpy(),
                    "users": part["users"].to_numpy(),
                    "events": part["events"].to_numpy(),
                }
        self._cache: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def default_window(self) -> int | None:
        return max(self.windows) if self.windows else None

    def _ranked(self, window: int, metric: str, category: str | None) -> tuple[np.ndarray, np.ndarray]:
        """(product ids, users) of one list: the global one, or every category under a prefix merged."""
        key = (window, metric, category)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        lists = self._lists.get((window, metric))
        if lists is None:
            result = (np.empty(0, np.int64), np.empty(0, np.int64))
        else:
            if category is None:
                rows = lists["category_id"] == -1
            elif category.isdigit():
                rows = lists["category_id"] == int(category)
            else:
                rows = (lists["category_id"] != -1) & category_mask(lists["category_code"], category)
            ids, users, events = lists["product_id"][rows], lists["users"][rows], lists["events"][rows]
            order = np.lexsort((ids, -events, -users))  # the job's order: users, events desc, then id
            ids, users = ids[order], users[order]
            _, first = np.unique(ids, return_index=True)  # a product listed under two categories counts once
            first = np.sort(first)
            result = (ids[first], users[first])
        if len(self._cache) >= self._CACHE_SIZE:
            self._cache.clear()
        self._cache[key] = result
        return result

    def top(
        self,
        *,
        category: str | None = None,
        window_days: int | None = None,
        metrics: tuple[str, ...] = ("purchase", "view"),
        k: int = 10,
        exclude: np.ndarray | None = None,
    ) -> PopularItems:
        """The `k` most popular products: the first metric's list, topped up from the next ones.

        `category`: a category code prefix (``electronics`` covers
        ``electronics.smartphone``) or a numeric category id; None = overall.
        """
        window = window_days if window_days is not None else self.default_window
        out_ids: list[np.ndarray] = []
        out_users: list[np.ndarray] = []
        out_metric: list[np.ndarray] = []
        taken = np.empty(0, np.int64) if exclude is None else np.asarray(exclude, np.int64)
        have = 0
        for metric in metrics:
            if window is None or have >= k:
                break
            ids, users = self._ranked(window, metric, category)
            fresh = ~np.isin(ids, taken)
            ids, users = ids[fresh][: k - have], users[fresh][: k - have]
            out_ids.append(ids)
            out_users.append(users)
            out_metric.append(np.full(len(ids), metric, dtype=object))
            taken = np.concatenate([taken, ids])
            have += len(ids)
        if not out_ids:
            return PopularItems(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, dtype=object))
        return PopularItems(np.concatenate(out_ids), np.concatenate(out_users), np.concatenate(out_metric))


# --------------------------------------------------------------------------- #
# Loaded artifact kinds
# --------------------------------------------------------------------------- #


def _streamed(path: Path) -> pq.ParquetFile:
    """A parquet file read through a 1 MB buffer: by default a whole column chunk of a row group is read
    and held at once (256 MB for 1M rows of 64 factors; the load's peak at October scale)."""
    return pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False)


def _read_factors(artifacts: Artifacts, version: str, name: str, index_name: str, out_dir: Path | None = None) -> np.ndarray:
    """A factor table (`index`, fixed-size list `factors`) straight into one (rows, f) float32 array.

    Batch by batch from the file on disk: never its bytes, the whole table, a sorted
    copy and a float copy at once (4 x 0.77 GB for October's 3M users x 64 factors).
    With `out_dir` the array is a memory-mapped ``.npy`` file there (see `_mapped`).
    """

    def read(allocate: Callable[[tuple[int, int]], np.ndarray]) -> np.ndarray:
        # from a local file: the artifact's bytes (0.8 GB at October scale) are never all in memory
        with artifacts.local_file(CANDIDATES, name, version) as path, _streamed(path) as parquet:
            width = parquet.schema_arrow.field("factors").type.list_size
            out = allocate((parquet.metadata.num_rows, width))
            batches = parquet.iter_batches(batch_size=65_536, columns=[index_name, "factors"])
            for n, batch in enumerate(batches, start=1):
                rows = batch.column(index_name).to_numpy()
                out[rows] = batch.column("factors").flatten().to_numpy().reshape(-1, width)
                if isinstance(out, np.memmap) and n % 4 == 0:
                    # Written pages of a file mapping count as this process's memory until dropped:
                    # write them out and drop them, or the load would peak at the file's whole size.
                    out.flush()
                    out._mmap.madvise(mmap.MADV_DONTNEED)
        return out

    if out_dir is None:
        return read(lambda shape: np.empty(shape, np.float32))
    return _mapped(out_dir / version / f"{Path(name).stem}.npy", read)


def _mapped(path: Path, read: Callable[[Callable[[tuple[int, int]], np.ndarray]], np.ndarray]) -> np.ndarray:
    """A read-only memory map of the float32 array at `path`; if missing, `read` writes it first
    (given an allocator of a file-backed array): a worker that finds the file never reads the artifact.

    Every API worker maps the same file, so the kernel keeps one copy of the pages
    for all of them, and only the rows requests touch are resident at all. Workers
    starting together take turns on a lock: the first writes, the rest map.
    Directories of older versions are removed (a worker still serving one keeps
    its mapping: unlinking a mapped file does not unmap it).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            scratch = path.with_suffix(f".{os.getpid()}.tmp")
            written = read(lambda shape: np.lib.format.open_memmap(scratch, mode="w+", dtype=np.float32, shape=shape))
            written.flush()
            del written
            os.replace(scratch, path)
        for old in path.parent.parent.iterdir():
            if old.is_dir() and old.name < path.parent.name:
                shutil.rmtree(old, ignore_errors=True)
    mapped = np.load(path, mmap_mode="r")
    mapped._mmap.madvise(mmap.MADV_RANDOM)  # one row per request: read-ahead would only pull in neighbours
    return mapped


def _read_neighbours(artifacts: Artifacts, version: str) -> dict[str, ItemNeighbours]:
    """Each kind's neighbours, in two passes over the file, batch by batch: the item ids, then each pair as two
    int32 positions and a float32 score (12 bytes; never an Arrow table of the whole file, nor int64 ids of
    every pair: the load's peak at October scale, 16.7M pairs)."""
    columns = ["product_id", "neighbour_id", "score", "kind"]
    with artifacts.local_file(CANDIDATES, "item_neighbours.parquet", version) as path, _streamed(path) as parquet:

        def by_kind() -> Iterator[tuple[str, pa.RecordBatch]]:
            for batch in parquet.iter_batches(batch_size=1 << 20, columns=columns):
                for kind in NEIGHBOUR_KINDS:
                    yield kind, batch.filter(pc.equal(batch.column("kind"), kind))

        seen: dict[str, list[np.ndarray]] = {kind: [np.empty(0, np.int64)] for kind in NEIGHBOUR_KINDS}
        for kind, rows in by_kind():
            seen[kind] += [np.unique(rows.column("product_id").to_numpy()), np.unique(rows.column("neighbour_id").to_numpy())]
        item_ids = {kind: np.unique(np.concatenate(ids)) for kind, ids in seen.items()}
        pairs: dict[str, list[tuple[np.ndarray, ...]]] = {kind: [] for kind in NEIGHBOUR_KINDS}
        for kind, rows in by_kind():
            ids = item_ids[kind]
            pairs[kind].append((np.searchsorted(ids, rows.column("product_id").to_numpy()).astype(np.int32),
                                np.searchsorted(ids, rows.column("neighbour_id").to_numpy()).astype(np.int32),
                                rows.column("score").to_numpy().astype(np.float32)))  # fmt: skip
    out = {}
    for kind in NEIGHBOUR_KINDS:
        parts = pairs.pop(kind) or [(np.empty(0, np.int32), np.empty(0, np.int32), np.empty(0, np.float32))]
        out[kind] = ItemNeighbours.from_positions(item_ids[kind], *(np.concatenate(c) for c in zip(*parts)), kind)
        del parts
    return out


class AlsTop(NamedTuple):
    """A user's best ALS items, best first (read-only arrays)."""

    ids: np.ndarray  #: product ids
    scores: np.ndarray  #: ALS scores (float32)
    catalogue_rows: np.ndarray  #: each product's catalogue row (-1: not in it), so requests need no lookup


@dataclass(frozen=True, eq=False)
class CandidateSet:
    """One `candidates` version in memory: ALS factors, catalogue, neighbours, popular lists."""

    version: str
    manifest: dict[str, Any]
    user_ids: np.ndarray  #: sorted user ids (int64)
    user_rows: np.ndarray  #: row of `user_factors` for each of `user_ids`
    user_factors: np.ndarray  #: (users, f) float32
    item_product_ids: np.ndarray  #: row of `item_factors` -> product id
    item_factors: np.ndarray  #: (items, f) float32
    catalogue: Catalogue
    neighbours: dict[str, ItemNeighbours]
    popular: PopularLists
    category_codes: dict[int, str] = field(default_factory=dict)  #: category_id -> code (where known)
    recent_users: int = 0  #: users whose ALS top lists are kept (see `als_top`); 0: none

    def __post_init__(self) -> None:
        # Per-user lists for every user do not fit the memory budget at the October-2019 scale (3M users);
        # a shopper asks many times in a session, so the lists of the most recent users are kept.
        me = weakref.proxy(self)  # the cache must not keep a swapped-out version (and its factors) alive

        def top(user_id: int, n: int) -> AlsTop | None:
            return CandidateSet._als_top(me, user_id, n)

        object.__setattr__(self, "_recent_tops", lru_cache(maxsize=self.recent_users)(top) if self.recent_users else top)
        # each item's catalogue row, found once: a request's lookup of 200 ids among the October-2019
        # scale's 167k products took 70-280 us
        object.__setattr__(self, "_item_catalogue_rows", self.catalogue.index_of(self.item_product_ids))

    @classmethod
    def load(cls, artifacts: Artifacts, version: str, factor_dir: Path | None = None, recent_users: int = 0) -> CandidateSet:
        """One version into memory; with `factor_dir`, the user factors are a memory-mapped file there."""

        def table(name: str) -> pa.Table:
            return artifacts.read_table(CANDIDATES, name, version)

        # neighbours first: their transient copies then do not stack on the factors' peak
        neighbours = _read_neighbours(artifacts, version)
        pa.default_memory_pool().release_unused()
        user_factors = _read_factors(artifacts, version, "user_factors.parquet", "user_index", factor_dir)
        item_factors = _read_factors(artifacts, version, "item_factors.parquet", "item_index")
        users = table("user_index.parquet").sort_by("user_index")["user_id"].to_numpy()
        items = table("item_index.parquet").sort_by("item_index")["product_id"].to_numpy()
        if len(users) != len(user_factors) or len(items) != len(item_factors):
            raise ValueError(f"candidates {version}: index and factor tables disagree in length")
        order = np.argsort(users, kind="stable")
        catalogue = Catalogue(table("products.parquet"))
        known = catalogue.category_ids >= 0
        codes = {
            int(c): str(code)
            for c, code in zip(catalogue.category_ids[known], catalogue.category_codes[known])
            if code
        }
        loaded = cls(
            version=version,
            manifest=artifacts.read_json(CANDIDATES, "manifest.json", version),
            user_ids=users[order].astype(np.int64),
            user_rows=order,
            user_factors=user_factors,
            item_product_ids=items.astype(np.int64),
            item_factors=item_factors,
            catalogue=catalogue,
            neighbours=neighbours,
            popular=PopularLists(table("popular.parquet")),
            category_codes=codes,
            recent_users=recent_users,
        )
        pa.default_memory_pool().release_unused()  # Arrow's allocator keeps freed pages otherwise (GBs at October scale)
        return loaded

    def user_vector(self, user_id: int) -> np.ndarray | None:
        """The user's ALS factors; None for a user ALS never saw."""
        if not len(self.user_ids):
            return None
        pos = int(np.searchsorted(self.user_ids, user_id))
        if pos >= len(self.user_ids) or self.user_ids[pos] != user_id:
            return None
        return self.user_factors[self.user_rows[pos]]

    def als_top(self, user_id: int, n: int) -> AlsTop | None:
        """The user's `n` best items, best first; None for a user ALS never saw.

        Scoring every item costs a pass over the item factors (about 3 ms for 167k items);
        the lists of the `recent_users` latest users are kept, read-only.
        """
        return self._recent_tops(int(user_id), int(n))  # type: ignore[attr-defined]

    def _als_top(self, user_id: int, n: int) -> AlsTop | None:
        vector = self.user_vector(user_id)
        if vector is None:
            return None
        rows, scores = top_by_factors(vector, self.item_factors, n)
        top = AlsTop(self.item_product_ids[rows], scores.astype(np.float32), self._item_catalogue_rows[rows])  # type: ignore[attr-defined]
        for array in top:
            array.setflags(write=False)
        return top

    def describe(self, product_id: int) -> dict[str, Any] | None:
        return self.catalogue.describe(product_id)

    def describe_many(self, product_ids: np.ndarray) -> list[dict[str, Any] | None]:
        """Catalogue info for many products in one lookup (None where unknown)."""
        rows = self.catalogue.index_of(np.asarray(product_ids, np.int64))
        cat = self.catalogue
        out: list[dict[str, Any] | None] = []
        for pid, row in zip(np.asarray(product_ids).tolist(), rows.tolist()):
            if row < 0:
                out.append(None)
                continue
            price = float(cat.prices[row])
            out.append({
                "product_id": int(pid),
                "category_id": int(cat.category_ids[row]) if cat.category_ids[row] >= 0 else None,
                "category_code": cat.category_codes[row],
                "brand": cat.brands[row],
                "price": None if math.isnan(price) else price,
            })  # fmt: skip
        return out

    def category_codes_of(self, product_ids: np.ndarray) -> list[str | None]:
        rows = self.catalogue.index_of(np.asarray(product_ids, np.int64))
        return [self.catalogue.category_codes[r] if r >= 0 else None for r in rows.tolist()]


def json_safe(value: Any) -> Any:
    """A value JSON can carry: NaN / inf -> None, dates -> ISO text, numpy scalars -> Python."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return json_safe(value.item())
    return value


@dataclass(frozen=True, eq=False)
class AnalyticsSet:
    """One `analytics` version: its manifest and every KPI table as JSON-ready records."""

    version: str
    manifest: dict[str, Any]
    tables: dict[str, list[dict[str, Any]]]

    @classmethod
    def load(cls, artifacts: Artifacts, version: str) -> AnalyticsSet:
        manifest = artifacts.read_json(ANALYTICS, "manifest.json", version)
        tables = {}
        for file_name in manifest.get("tables", {}):
            name = file_name.removesuffix(".parquet")
            tables[name] = json_safe(artifacts.read_table(ANALYTICS, file_name, version).to_pylist())
        return cls(version=version, manifest=json_safe(manifest), tables=tables)

    def table(self, name: str) -> list[dict[str, Any]]:
        return self.tables.get(name, [])


def _load_ranker(artifacts: Artifacts, version: str, settings: Settings) -> Any:
    from spark_jobs.boosters import FeatureMismatch
    from spark_jobs.ranker.serving import Ranker

    try:
        return Ranker.load(artifacts, version, product_cache_seconds=settings.api_product_cache_seconds,
                           product_cache_long_seconds=settings.api_product_cache_long_seconds,
                           product_cache_long_rows=settings.api_product_cache_long_rows,
                           compiled_dir=settings.api_compiled_dir)  # fmt: skip
    except FeatureMismatch as error:
        raise ModelMismatch(f"ranker {version}: {error}") from error


def _load_purchase_model(artifacts: Artifacts, version: str, settings: Settings) -> Any:
    from spark_jobs.boosters import FeatureMismatch
    from spark_jobs.purchase_model.model import load_model

    try:
        return load_model(artifacts, version)
    except FeatureMismatch as error:
        raise ModelMismatch(f"purchase_model {version}: {error}") from error


#: kind -> loader(artifacts, version, settings): the object the snapshot holds.
LOADERS: dict[str, Callable[[Artifacts, str, Settings], Any]] = {
    CANDIDATES: lambda artifacts, version, settings: CandidateSet.load(
        artifacts, version, settings.api_factor_dir, settings.api_recent_users
    ),
    RANKER: _load_ranker,
    PURCHASE_MODEL: _load_purchase_model,
    ANALYTICS: lambda artifacts, version, settings: AnalyticsSet.load(artifacts, version),
}


@dataclass(frozen=True, eq=False)
class Snapshot:
    """The loaded version of each artifact kind (None where there is none yet). Never mutated."""

    candidates: CandidateSet | None = None
    ranker: Any | None = None
    purchase_model: Any | None = None
    analytics: AnalyticsSet | None = None
    versions: dict[str, str | None] = field(default_factory=lambda: dict.fromkeys(KINDS))


@dataclass
class KindStatus:
    """What the registry knows about one kind (shown by /ready)."""

    loaded: str | None = None  #: the version in the current snapshot
    latest: str | None = None  #: where LATEST pointed at the last check
    loaded_at: float | None = None
    error: str | None = None  #: why the latest version is not loaded (None when it is, or when there is none)


class Registry:
    """Loads the latest artifact versions and swaps them in atomically (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        *,
        artifacts: Artifacts | None = None,
        on_load: Callable[[str, str], None] | None = None,
        on_swap: Callable[[], None] | None = None,
    ) -> None:
        self._settings = settings
        self._artifacts = artifacts
        self._on_load = on_load or (lambda kind, outcome: None)
        self._on_swap = on_swap or (lambda: None)
        self._snapshot = Snapshot()
        self._lock = threading.Lock()  # one refresh at a time (poller and explicit calls)
        self.status: dict[str, KindStatus] = {kind: KindStatus() for kind in KINDS}
        self.store_error: str | None = None
        self.last_check: float | None = None

    @property
    def snapshot(self) -> Snapshot:
        """The current snapshot: read it once per request."""
        return self._snapshot

    def artifacts(self) -> Artifacts:
        """The artifact store (opened on first use: an S3 store checks its bucket when opened)."""
        if self._artifacts is None:
            self._artifacts = open_artifacts(self._settings)
        return self._artifacts

    def refresh(self, *, strict: bool = False) -> dict[str, str | None]:
        """Load every kind whose LATEST moved, then swap the snapshot once; returns the loaded versions.

        `strict` (at start-up): a model that does not fit this code raises
        `ModelMismatch` instead of being skipped, so the API refuses to start.
        """
        with self._lock:
            try:
                artifacts = self.artifacts()
            except Exception as error:  # the store itself is unreachable: keep serving what is loaded
                self.store_error = f"{type(error).__name__}: {error}"
                log.warning("artifact store unreachable: %s", self.store_error)
                return dict(self._snapshot.versions)
            updates: dict[str, Any] = {}
            store_error = None
            for kind in KINDS:
                status = self.status[kind]
                try:
                    latest = artifacts.latest(kind)
                except ArtifactNotFound:
                    latest = None
                except Exception as error:
                    store_error = f"{type(error).__name__}: {error}"
                    continue
                status.latest = latest
                if latest is None or latest == status.loaded:
                    if latest == status.loaded:
                        status.error = None
                    continue
                started = time.perf_counter()
                try:
                    updates[kind] = LOADERS[kind](artifacts, latest, self._settings)
                except ModelMismatch as error:
                    if strict:
                        raise
                    self._failed(kind, latest, error)
                    continue
                except ArtifactNotFound as error:  # incomplete / pruned under us, or no serving code yet
                    self._failed(kind, latest, error)
                    continue
                except Exception as error:
                    self._failed(kind, latest, error)
                    continue
                status.loaded, status.loaded_at, status.error = latest, time.time(), None
                self._on_load(kind, "loaded")
                log.info("loaded %s version %s in %.2f s", kind, latest, time.perf_counter() - started)
            self.store_error = store_error
            self.last_check = time.time()
            if updates:
                versions = {**self._snapshot.versions, **{kind: self.status[kind].loaded for kind in updates}}
                self._snapshot = replace(self._snapshot, **updates, versions=versions)  # the atomic swap
                self._on_swap()
            return dict(self._snapshot.versions)

    def _failed(self, kind: str, version: str, error: BaseException) -> None:
        self.status[kind].error = f"version {version}: {type(error).__name__}: {error}"
        self._on_load(kind, "failed")
        log.error("could not load %s version %s (still serving %s): %s", kind, version,
                  self.status[kind].loaded or "nothing", error, exc_info=not isinstance(error, ArtifactNotFound))  # fmt: skip

    async def poll_forever(self, interval: float) -> None:
        """Refresh every `interval` seconds until cancelled (loading runs in a worker thread)."""
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.refresh)
            except Exception:  # never let the poller die: the next round tries again
                log.exception("artifact refresh failed")
