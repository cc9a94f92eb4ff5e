"""XGBoost models as artifacts: a booster with its manifest, and the feature-order check they share.

A trained model is only usable with the exact feature list, in the exact order,
that the code computes today: the manifest stores the list, and loading checks
it (DESIGN principle 1: the API refuses to start on a mismatch).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import json
import logging
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xgboost as xgb

try:  # XGBoost's own C library and call checker, as its Python package loaded them
    from xgboost.core import _LIB, _check_call, _ProxyDMatrix, c_bst_ulong
except ImportError:  # another layout: DensePredictor falls back to inplace_predict
    _LIB = None

from feature_store.artifacts import Artifacts

log = logging.getLogger(__name__)


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


class DensePredictor:
    """`booster.inplace_predict(matrix)` for float32 matrices, without most of its fixed cost per call.

    On the request path a prediction is one small matrix (200 candidates, or one
    session), and XGBoost's Python wrapper spent more on each call than the trees did:
    it re-checks the input type against pandas, polars, arrow and cudf, builds a class
    to wrap the output, and has the library create a fresh proxy matrix (reading the
    cgroup CPU quota files each time). Measured: 250 against 64 µs for one row, 615
    against 414 µs for 200 rows of 100 trees. This calls the same C function
    (`XGBoosterPredictFromDense`, what `inplace_predict` calls for numpy input) with
    arguments encoded once and one proxy matrix per thread (a proxy holds the input of
    one call: never shared between threads). The values are the same as
    `inplace_predict`'s (tested), and without the C entry points it is `inplace_predict`.
    """

    #: inplace_predict's arguments for plain values over every tree
    _ARGS = json.dumps({"type": 0, "training": False, "iteration_begin": 0, "iteration_end": 0,
                        "missing": float("nan"), "strict_shape": False, "cache_id": 0}).encode()  # fmt: skip

    def __init__(self, booster: xgb.Booster) -> None:
        self.booster = booster
        self._local = threading.local()

    def __call__(self, matrix: np.ndarray) -> np.ndarray:
        """One float32 prediction per row of `matrix` (rows x features; NaN is missing), a new array."""
        matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        if _LIB is None or matrix.ndim != 2 or not len(matrix):
            return np.asarray(self.booster.inplace_predict(matrix, validate_features=False), np.float32).copy()
        proxy = getattr(self._local, "proxy", None)
        if proxy is None:
            proxy = self._local.proxy = _ProxyDMatrix()
        interface = json.dumps({"data": [matrix.ctypes.data, True], "shape": list(matrix.shape), "typestr": "<f4",
                                "version": 3}).encode()  # fmt: skip
        shape, dims = ctypes.POINTER(c_bst_ulong)(), c_bst_ulong()
        out = ctypes.POINTER(ctypes.c_float)()
        _check_call(_LIB.XGBoosterPredictFromDense(self.booster.handle, interface, self._ARGS, proxy.handle,
                                                   ctypes.byref(shape), ctypes.byref(dims), ctypes.byref(out)))  # fmt: skip
        out_shape = tuple(int(shape[i]) for i in range(dims.value))
        # the library's buffer is reused by the thread's next prediction: copied out
        return np.ctypeslib.as_array(out, out_shape).copy()


class CompiledPredictor:
    """The booster's trees compiled to C (Treelite reads them, TL2cgen writes and builds the code): the same
    predictions as `DensePredictor`, in less time.

    XGBoost walks its trees as data; the compiled library has each tree as nested
    comparisons in machine code. Measured on the ranker's trees (100 of depth 4)
    scoring 200 rows: 347 against 500 us per call, and 13-14% less CPU per API
    request (README, the API benchmark). `build` makes the library once per model in
    a directory (named by a hash of the model and of the compiler's versions: the
    API's workers and its restarts reuse it) and checks it against XGBoost before it
    serves. Needs a C compiler (gcc) where the model is loaded.
    """

    #: -O1: as fast as -O2 and -O3 on these trees (measured), in half the build time of -O2
    _OPTIONS = ("-O1", "-fPIC")

    def __init__(self, library: Path) -> None:
        import tl2cgen

        self.library = library
        self._tl2cgen = tl2cgen
        self._predictor = tl2cgen.Predictor(str(library), nthread=1)  # one request = one small matrix
        self._lock = threading.Lock()  # one predictor object: calls take turns (uncontended on the event loop)

    @classmethod
    def build(cls, booster: xgb.Booster, directory: Path) -> CompiledPredictor:
        """The compiled `booster`, built in `directory` unless an earlier build is there; raises if it cannot be built
        (no compiler, no TL2cgen) or predicts differently from XGBoost."""
        import tl2cgen
        import treelite

        model_json = bytes(booster.save_raw("json"))
        key = hashlib.sha256(b"\0".join([model_json, tl2cgen.__version__.encode(), treelite.__version__.encode(),
                                          " ".join(cls._OPTIONS).encode()])).hexdigest()[:20]  # fmt: skip
        library = Path(directory) / f"trees-{key}.so"
        library.parent.mkdir(parents=True, exist_ok=True)
        with open(library.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # the API's workers load the same model at once: one builds, the rest wait
            if not library.exists():
                with tempfile.TemporaryDirectory(dir=library.parent) as scratch, _without_build_notes():
                    built = Path(scratch) / library.name
                    tl2cgen.export_lib(treelite.frontend.from_xgboost(booster), toolchain="gcc", libpath=str(built),
                                       nthread=1, options=list(cls._OPTIONS))  # fmt: skip
                    built.replace(library)  # whole or not at all, should the process die meanwhile
                log.info("compiled the trees to %s", library)
        predictor = cls(library)
        predictor.check(booster)
        return predictor

    def check(self, booster: xgb.Booster, rows: int = 500) -> None:
        """Raise ValueError unless this library predicts what XGBoost does on a probe of varied values and gaps."""
        rng = np.random.default_rng(0)
        probe = rng.normal(size=(rows, booster.num_features())) * rng.choice([0.1, 1.0, 100.0, 1e4], size=(rows, 1))
        probe[rng.random(probe.shape) < 0.2] = np.nan
        probe = probe.astype(np.float32)
        expected = booster.inplace_predict(probe, validate_features=False)
        got = self(probe)
        if got.shape != expected.shape or not np.allclose(got, expected, rtol=1e-5, atol=1e-5):
            raise ValueError(f"{self.library} predicts differently from XGBoost (largest difference "
                             f"{np.nanmax(np.abs(got - expected)) if got.shape == expected.shape else got.shape})")  # fmt: skip

    def __call__(self, matrix: np.ndarray) -> np.ndarray:
        """One float32 prediction per row of `matrix` (rows x features; NaN is missing), a new array."""
        matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        data = self._tl2cgen.DMatrix(matrix, dtype="float32", missing=np.nan)
        with self._lock:
            out = self._predictor.predict(data)
        return np.asarray(out, np.float32).reshape(len(matrix))


def fast_predictor(booster: xgb.Booster, compiled_dir: Path | None) -> Callable[[np.ndarray], np.ndarray]:
    """The compiled trees (`CompiledPredictor`) when `compiled_dir` is given and they build, else `DensePredictor`."""
    if compiled_dir is not None:
        try:
            return CompiledPredictor.build(booster, compiled_dir)
        except Exception as error:  # no gcc, no TL2cgen, a failed check: slower, not broken
            log.warning("scoring with XGBoost's own predictor: compiling the trees failed (%s: %s); "
                        "install gcc to compile them, or set API_COMPILED_DIR= (empty) to skip this",
                        type(error).__name__, (str(error).strip().splitlines() or [""])[-1])  # fmt: skip
    return DensePredictor(booster)


#: What every build writes: TL2cgen's note on source files, and its own copy of Treelite's (older than the
#: one that reads XGBoost's model) note on versions
_BUILD_NOTES = ("Parallel compilation", "originated from a newer Treelite version", "Currently running Treelite version",
                "The model checkpoint was generated from Treelite version")  # fmt: skip


@contextlib.contextmanager
def _without_build_notes() -> Iterator[None]:
    """Run a TL2cgen build without its `_BUILD_NOTES` on the terminal (some come from C++, not Python).

    Both output descriptors go to a file meanwhile, so that anything else written in
    those seconds, by C or by another thread, is copied back out afterwards.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            kept = [line for line in sink.read().decode(errors="replace").splitlines(keepends=True)
                    if not any(note in line for note in _BUILD_NOTES)]  # fmt: skip
            sys.stderr.write("".join(kept))
