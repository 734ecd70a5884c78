"""Nearest-neighbour search over taste vectors (or any vectors) with external ids, on FAISS.

``VectorIndex`` answers "which stored vectors are most similar to these queries?" in one batched call.
Similarity is cosine (inner product of L2-normalised vectors) by default, or the raw inner product.

Which FAISS index is built (``kind="auto"``):

* CPU, at most ``exact_max_vectors`` vectors (default :data:`EXACT_MAX_VECTORS`, 50,000): exact search,
  ``IndexFlatIP``. It is never wrong, and at 50,000 x 64 it still answers about 22,000 batched
  queries/s on two cores.
* CPU, more vectors: HNSW graph, ``IndexHNSWFlat`` with ``METRIC_INNER_PRODUCT`` (M=48,
  efConstruction=80, efSearch=32). On 1,000,000 simulated 64-d taste vectors on two cores
  (``benchmarks/retrieval.py``): recall@10 0.975 at about 24,000 queries/s, built in about 80 s;
  0.969 at about 20,000 queries/s when the per-user noise is isotropic (the hard case).
  ``kind="ivf"`` (``IndexIVFFlat``, nlist about 4 * sqrt(n), nprobe 32) is the alternative: on the
  same vectors 1.000 and 0.996 at about 14,500 queries/s, built in 35-50 s with half the memory, but
  its recall hinges on nprobe (0.936 on the isotropic vectors at nprobe 16) and it must be trained.
  HNSW is the automatic choice because it needs no training and keeps its recall with fewer knobs.
* GPU, at most :data:`GPU_EXACT_MAX_VECTORS` vectors: exact search on the GPU (a GPU scans a million
  vectors faster than a CPU walks a graph); more: ``IndexIVFFlat`` on the GPU.

FAISS has no GPU HNSW. ``kind="hnsw"`` with ``device="auto"`` therefore runs on the CPU even where a
GPU exists; with ``device="cuda"`` it also runs on the CPU and warns (``RuntimeWarning``). Ask for
``kind="ivf"`` or ``kind="exact"`` to search on the GPU. IVF indexes for the GPU are trained on the CPU
and then copied to the device.

Every kind stores the full vectors (no compression), so the scores returned are exact similarities
of the neighbours found; only the choice of neighbours is approximate for HNSW and IVF.

FAISS threads are set once per process from ``RECSYS_FAISS_THREADS``, else ``OMP_NUM_THREADS``, else
the cores this process may use (:mod:`recsys.retrieval.threads`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import uuid
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, NamedTuple

import faiss
import numpy as np

from recsys.errors import UnknownId, UserError
from recsys.retrieval.threads import ensure_faiss_threads_configured

Metric = Literal["cosine", "inner_product"]
Kind = Literal["auto", "exact", "hnsw", "ivf"]
Device = Literal["auto", "cpu", "cuda"]
ExternalId = int | str

#: ``kind="auto"`` on the CPU searches exactly up to this many vectors, and builds HNSW above it.
EXACT_MAX_VECTORS = 50_000
#: ``kind="auto"`` on a GPU searches exactly up to this many vectors, and builds IVF above it.
GPU_EXACT_MAX_VECTORS = 1_000_000
#: FAISS GPU indexes return at most this many neighbours per query, and probe at most this many lists.
GPU_MAX_K = 2048
#: FAISS warns when k-means gets fewer training points than this per IVF list.
_MIN_TRAINING_POINTS_PER_LIST = 39
#: Vectors added per step when building, so that progress can be shown.
_ADD_CHUNK = 100_000

SIDECAR_SUFFIX = ".json"
_SIDECAR_FORMAT = "recsys.retrieval.VectorIndex"
_SIDECAR_VERSION = 1

_METRICS = ("cosine", "inner_product")
_KINDS = ("auto", "exact", "hnsw", "ivf")
_DEVICES = ("auto", "cpu", "cuda")

_gpu_resources: Any = None


class IndexInputError(UserError, ValueError):
    """Vectors, ids, queries, ``k`` or a saved index that cannot be used; the message says which and why."""


class UnknownIdError(UnknownId, KeyError):
    """An id that is not stored in the index (a KeyError, and the suite's ``UnknownId``)."""

    def __str__(self) -> str:  # KeyError would otherwise print the message in quotes
        return str(self.args[0]) if self.args else ""


class SearchResult(NamedTuple):
    """Neighbours of each query, most similar first.

    Attributes:
        ids: (n_queries, k) external ids of the neighbours; int64 for integer ids, str for string ids.
        scores: (n_queries, k) float32 similarities (cosine or inner product), non-increasing along a row.
    """

    ids: np.ndarray
    scores: np.ndarray


def gpu_available() -> bool:
    """True when the FAISS build has GPU support and sees at least one CUDA device."""
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _shared_gpu_resources() -> Any:
    """One ``StandardGpuResources`` per process: each holds scratch memory on the device."""
    global _gpu_resources
    if _gpu_resources is None:
        _gpu_resources = faiss.StandardGpuResources()
    return _gpu_resources


def vectors_fingerprint(vectors: np.ndarray) -> str:
    """SHA-256 of the vectors as C-ordered float32, with their shape.

    Args:
        vectors: (n, d) array, as passed to :meth:`VectorIndex.build`.

    Returns:
        A hex digest; compare it with :attr:`VectorIndex.fingerprint_` to tell whether an index was
        built from these vectors (for example, from the current model's taste vectors).
    """
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    digest = hashlib.sha256(f"float32:{array.shape}".encode())
    digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_positive_int(name: str, value: Any, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise IndexInputError(f"{name} must be a positive integer, got {value!r}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise IndexInputError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def default_nlist(n_vectors: int) -> int:
    """IVF list count for ``n_vectors``: about 4 * sqrt(n), but at least 39 training points per list."""
    target = round(4 * math.sqrt(n_vectors))
    return max(1, min(target, n_vectors // _MIN_TRAINING_POINTS_PER_LIST))


def _normalise_ids(ids: Iterable[Any] | None, n_vectors: int) -> np.ndarray:
    """Return ids as a 1-D int64 or str array of length ``n_vectors``, checked for type and duplicates."""
    if ids is None:
        return np.arange(n_vectors, dtype=np.int64)
    if isinstance(ids, str | bytes):
        raise IndexInputError("ids must be a sequence with one id per vector row, not a single string")
    array = ids if isinstance(ids, np.ndarray) else np.asarray(list(ids), dtype=object)
    if array.ndim != 1:
        raise IndexInputError(f"ids must be one-dimensional, got shape {array.shape}")
    if len(array) != n_vectors:
        raise IndexInputError(
            f"got {len(array)} ids for {n_vectors} vectors; pass exactly one id per vector row"
        )
    if array.dtype.kind in "iu":
        array = array.astype(np.int64)
    elif array.dtype.kind == "U":
        array = array.astype(str)
    elif array.dtype.kind == "O" and all(isinstance(value, str) for value in array):
        array = array.astype(str)
    elif array.dtype.kind == "O" and all(
        isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_) for value in array
    ):
        array = array.astype(np.int64)
    else:
        raise IndexInputError(
            f"ids must be all strings or all integers, got {sorted({type(value).__name__ for value in array.tolist()})}"
        )
    values = array.tolist()
    if len(set(values)) != len(values):
        first_row: dict[ExternalId, int] = {}
        for row, value in enumerate(values):
            if value in first_row:
                raise IndexInputError(
                    f"ids contain duplicates: {value!r} at rows {first_row[value]} and {row}; "
                    "every vector needs a distinct id"
                )
            first_row[value] = row
    return array


class VectorIndex:
    """Exact or approximate nearest-neighbour search over vectors with external ids.

    Build with ``VectorIndex(**params).build(vectors, ids)``; search with :meth:`search` (any query
    vectors) or :meth:`search_ids` (stored vectors by id, never returning the query itself).

    Args:
        metric: ``"cosine"`` (vectors and queries are L2-normalised; zero vectors are rejected) or
            ``"inner_product"`` (raw dot products, e.g. when a vector's norm carries meaning).
        kind: ``"auto"`` (by size and device, see the module docstring), ``"exact"`` (``IndexFlatIP``),
            ``"hnsw"`` (``IndexHNSWFlat``) or ``"ivf"`` (``IndexIVFFlat``).
        device: ``"auto"`` (a GPU when FAISS has GPU support and sees a CUDA device, else the CPU),
            ``"cpu"`` or ``"cuda"`` (a ValueError without a usable GPU).
        exact_max_vectors: with ``kind="auto"`` on the CPU, the largest size searched exactly.
        hnsw_m: HNSW links per node (M); more gives higher recall, slower builds and more memory.
        ef_construction: HNSW candidate list size while building.
        ef_search: HNSW candidate list size while searching (raised to the number of results asked for).
        nlist: IVF list count; ``None`` uses :func:`default_nlist` (about 4 * sqrt(n)).
        nprobe: IVF lists visited per query (capped at ``nlist``).
        seed: seed of the IVF k-means training.

    Attributes set by :meth:`build` or :meth:`load`:
        kind_: the kind built (``"exact"``, ``"hnsw"`` or ``"ivf"``).
        device_: where searches run (``"cpu"`` or ``"cuda"``).
        dim_: vector dimension d.
        fingerprint_: :func:`vectors_fingerprint` of the vectors the index was built from.
    """

    def __init__(
        self,
        *,
        metric: Metric = "cosine",
        kind: Kind = "auto",
        device: Device = "auto",
        exact_max_vectors: int = EXACT_MAX_VECTORS,
        hnsw_m: int = 48,
        ef_construction: int = 80,
        ef_search: int = 32,
        nlist: int | None = None,
        nprobe: int = 32,
        seed: int = 0,
    ) -> None:
        _check_choice("metric", metric, _METRICS)
        _check_choice("kind", kind, _KINDS)
        _check_choice("device", device, _DEVICES)
        _check_positive_int("exact_max_vectors", exact_max_vectors)
        _check_positive_int("hnsw_m", hnsw_m)
        _check_positive_int("ef_construction", ef_construction)
        _check_positive_int("ef_search", ef_search)
        _check_positive_int("nlist", nlist, allow_none=True)
        _check_positive_int("nprobe", nprobe)
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
            raise IndexInputError(f"seed must be an integer, got {seed!r}")
        self.metric = metric
        self.kind = kind
        self.device = device
        self.exact_max_vectors = exact_max_vectors
        self.hnsw_m = hnsw_m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.nlist = nlist
        self.nprobe = nprobe
        self.seed = seed
        self._index: Any = None
        self._ids: np.ndarray | None = None
        # Ids sorted, with their row positions: vectorised lookups, and far less memory than a dict.
        self._sorted_ids: np.ndarray | None = None
        self._sorted_positions: np.ndarray | None = None
        self._host_vectors: np.ndarray | None = None  # GPU indexes only: stored vectors for search_ids

    # ------------------------------------------------------------------ parameters and state

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters, unchanged (as in scikit-learn)."""
        return {
            "metric": self.metric,
            "kind": self.kind,
            "device": self.device,
            "exact_max_vectors": self.exact_max_vectors,
            "hnsw_m": self.hnsw_m,
            "ef_construction": self.ef_construction,
            "ef_search": self.ef_search,
            "nlist": self.nlist,
            "nprobe": self.nprobe,
            "seed": self.seed,
        }

    def __repr__(self) -> str:
        params = ", ".join(f"{key}={value!r}" for key, value in self.get_params().items())
        built = f", built: {self.kind_} on {self.device_}, {len(self)} x {self.dim_}" if self.is_built else ""
        return f"VectorIndex({params}{built})"

    @property
    def is_built(self) -> bool:
        """True once :meth:`build` or :meth:`load` has run."""
        return self._index is not None

    def __len__(self) -> int:
        return 0 if self._ids is None else len(self._ids)

    @property
    def ids(self) -> np.ndarray:
        """(n,) stored external ids, in the row order of the vectors given to :meth:`build` (read-only)."""
        self._check_built()
        view = self._ids.view()
        view.flags.writeable = False
        return view

    @property
    def faiss_index(self) -> Any:
        """The underlying FAISS index (for benchmarks and diagnostics; searching it bypasses the checks)."""
        self._check_built()
        return self._index

    def __contains__(self, external_id: object) -> bool:
        return self._is_stored(external_id)

    def set_search_params(self, *, ef_search: int | None = None, nprobe: int | None = None) -> VectorIndex:
        """Change the speed/recall trade-off of a built index without rebuilding it; returns self."""
        _check_positive_int("ef_search", ef_search, allow_none=True)
        _check_positive_int("nprobe", nprobe, allow_none=True)
        if ef_search is not None:
            self.ef_search = ef_search
        if nprobe is not None:
            self.nprobe = nprobe
        if self.is_built:
            self._apply_search_params()
        return self

    # ------------------------------------------------------------------ building

    def build(
        self,
        vectors: np.ndarray,
        ids: Sequence[ExternalId] | np.ndarray | None = None,
        *,
        progress: bool = False,
    ) -> VectorIndex:
        """Index ``vectors`` under ``ids``; returns self.

        Args:
            vectors: (n, d) finite real array, one row per item (for example a user's taste vector).
            ids: n distinct external ids, all strings or all integers; ``None`` uses 0 .. n-1.
            progress: show a progress bar while vectors are added.

        Raises:
            IndexInputError: (a ValueError) bad shape, NaN or infinite values, zero vectors under the
                cosine metric, wrong or duplicate ids, or a GPU requested where there is none.
        """
        array = self._prepare_vectors(vectors, what="vectors")
        n_vectors, dim = array.shape
        external_ids = _normalise_ids(ids, n_vectors)
        if self.metric == "cosine":
            self._check_nonzero(array, external_ids, what="vectors")
        fingerprint = vectors_fingerprint(array)
        if self.metric == "cosine":
            array = array.copy()
            faiss.normalize_L2(array)
        ensure_faiss_threads_configured()
        device = self._resolve_device()
        kind = self._resolve_kind(n_vectors, device)
        if kind == "hnsw" and device == "cuda":
            if self.device == "cuda":
                warnings.warn(
                    "FAISS has no GPU HNSW index: building HNSW on the CPU; "
                    "use kind='ivf' or kind='exact' to search on the GPU",
                    RuntimeWarning,
                    stacklevel=2,
                )
            device = "cpu"
        cpu_index = self._new_cpu_index(kind, n_vectors, dim)
        if kind == "ivf":
            cpu_index.train(array)
        self._add_in_chunks(cpu_index, array, progress=progress)
        if kind == "ivf":
            cpu_index.make_direct_map()  # lets search_ids reconstruct stored vectors by position
        self._install(cpu_index, external_ids, kind=kind, device=device, fingerprint=fingerprint)
        return self

    def _resolve_device(self) -> str:
        if self.device == "cpu":
            return "cpu"
        if gpu_available():
            return "cuda"
        if self.device == "cuda":
            raise IndexInputError(
                "device='cuda' was requested but FAISS sees no GPU "
                f"(faiss {faiss.__version__}: GPU support {'present' if hasattr(faiss, 'StandardGpuResources') else 'absent'}, "
                f"{faiss.get_num_gpus()} GPUs); install faiss-gpu on a CUDA machine or use device='cpu'"
            )
        return "cpu"

    def _resolve_kind(self, n_vectors: int, device: str) -> str:
        if self.kind != "auto":
            return self.kind
        if device == "cuda":
            return "exact" if n_vectors <= GPU_EXACT_MAX_VECTORS else "ivf"
        return "exact" if n_vectors <= self.exact_max_vectors else "hnsw"

    def _new_cpu_index(self, kind: str, n_vectors: int, dim: int) -> Any:
        if kind == "exact":
            return faiss.IndexFlatIP(dim)
        if kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = self.ef_construction
            return index
        nlist = self.nlist if self.nlist is not None else default_nlist(n_vectors)
        if nlist > n_vectors:
            raise IndexInputError(
                f"nlist={nlist} is larger than the {n_vectors} vectors; use nlist <= {n_vectors}"
            )
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = int(self.seed)
        return index

    @staticmethod
    def _add_in_chunks(index: Any, array: np.ndarray, *, progress: bool) -> None:
        starts = range(0, len(array), _ADD_CHUNK)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="indexing vectors", unit="chunk")
        for start in starts:
            index.add(array[start : start + _ADD_CHUNK])

    def _install(
        self, cpu_index: Any, external_ids: np.ndarray, *, kind: str, device: str, fingerprint: str
    ) -> None:
        """Make ``cpu_index`` (already filled) the live index, on ``device``."""
        if device == "cuda":
            self._host_vectors = cpu_index.reconstruct_n(0, cpu_index.ntotal)
            self._index = faiss.index_cpu_to_gpu(_shared_gpu_resources(), 0, cpu_index)
        else:
            self._host_vectors = None
            self._index = cpu_index
        self._ids = external_ids
        self._sorted_positions = np.argsort(external_ids, kind="stable")
        self._sorted_ids = external_ids[self._sorted_positions]
        self.kind_ = kind
        self.device_ = device
        self.dim_ = int(cpu_index.d)
        self.fingerprint_ = fingerprint
        self._nlist_ = int(cpu_index.nlist) if kind == "ivf" else 0
        self._apply_search_params()

    def _apply_search_params(self) -> None:
        if self.kind_ == "hnsw":
            self._index.hnsw.efSearch = int(self.ef_search)
        elif self.kind_ == "ivf":
            largest = self._nlist_ if self.device_ == "cpu" else min(self._nlist_, GPU_MAX_K)
            nprobe = min(int(self.nprobe), largest)
            if self.device_ == "cuda":
                faiss.GpuParameterSpace().set_index_parameter(self._index, "nprobe", nprobe)
            else:
                self._index.nprobe = nprobe

    # ------------------------------------------------------------------ searching

    def search(self, queries: np.ndarray, k: int, exclude_ids: Sequence[Any] | None = None) -> SearchResult:
        """The ``k`` stored vectors most similar to each query, most similar first.

        Args:
            queries: (n_queries, d) finite real array; a single query is a batch of one, ``q[None, :]``.
            k: neighbours per query, 1 <= k <= n minus the most ids excluded from any one query.
            exclude_ids: ``None``, or one entry per query: ``None``, one stored id, or a list/tuple/set
                of stored ids never to return for that query (e.g. the user the query stands for).

        Returns:
            :class:`SearchResult` with ``ids`` and ``scores`` of shape (n_queries, k).

        Raises:
            IndexInputError: (a ValueError) wrong shape or dimension, NaN/inf, a zero query under the
                cosine metric, ``k`` out of range, or ``exclude_ids`` of the wrong length.
            UnknownIdError: (a KeyError) an id in ``exclude_ids`` that is not stored.
        """
        self._check_built()
        prepared = self._prepare_queries(queries)
        excluded = self._excluded_positions(exclude_ids, len(prepared))
        positions, scores = self._search_positions(prepared, k, excluded)
        return SearchResult(self._ids[positions], scores)

    def search_ids(self, ids: Sequence[ExternalId] | np.ndarray, k: int) -> SearchResult:
        """The ``k`` stored vectors most similar to the stored vectors of ``ids``, each excluding itself.

        Args:
            ids: n_queries stored ids ("users similar to user X").
            k: neighbours per query, 1 <= k <= n - 1.

        Returns:
            :class:`SearchResult` with ``ids`` and ``scores`` of shape (n_queries, k); row i never
            contains ``ids[i]``.

        Raises:
            UnknownIdError: (a KeyError) an id that is not stored.
            IndexInputError: (a ValueError) ``k`` out of range.
        """
        self._check_built()
        query_positions = self._positions_of(ids)
        if len(query_positions) == 0:
            raise IndexInputError("ids is empty: pass at least one stored id")
        excluded = query_positions[:, None]
        self._check_k(k, n_excluded=1)
        if self._host_vectors is not None:
            queries = self._host_vectors[query_positions]
        else:
            queries = self._index.reconstruct_batch(query_positions)
        positions, scores = self._search_positions(queries, k, excluded)
        return SearchResult(self._ids[positions], scores)

    def _search_positions(
        self, queries: np.ndarray, k: int, excluded: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Search prepared queries; return (n_queries, k) row positions and scores, excluded rows removed.

        ``excluded`` is (n_queries, e) positions to drop, padded with -1. We fetch k + e neighbours so
        that k remain after dropping; rows an approximate index still leaves short are searched again
        exhaustively.
        """
        n_excluded = 0 if excluded is None else excluded.shape[1]
        self._check_k(k, n_excluded=n_excluded)
        fetch = k + n_excluded
        scores, positions = self._index.search(queries, fetch)
        if n_excluded == 0 and positions[:, -1].min() >= 0:
            return positions, scores  # fast path: nothing to drop, nothing missing
        keep = self._keep_mask(positions, excluded)
        short = np.flatnonzero(keep.sum(axis=1) < k)
        if len(short):
            retry_scores, retry_positions = self._search_exhaustively(queries[short], fetch)
            scores[short], positions[short] = retry_scores, retry_positions
            keep[short] = self._keep_mask(retry_positions, None if excluded is None else excluded[short])
            if (keep[short].sum(axis=1) < k).any():
                raise RuntimeError(
                    f"the {self.kind_} index returned fewer than k={k} neighbours even when searched exhaustively"
                )
        # Stable sort puts kept entries first in their original (most similar first) order.
        order = np.argsort(~keep, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(positions, order, axis=1), np.take_along_axis(scores, order, axis=1)

    @staticmethod
    def _keep_mask(positions: np.ndarray, excluded: np.ndarray | None) -> np.ndarray:
        keep = positions >= 0
        if excluded is not None and excluded.shape[1] <= 4:
            # Few ids per query (the usual "not the user themself"): compare directly.
            keep &= ~(positions[:, :, None] == excluded[:, None, :]).any(axis=2)
        elif excluded is not None:
            # Compare (row, position) pairs as single integers: linear memory for any number excluded.
            n_positions = int(max(positions.max(initial=0), excluded.max(initial=0))) + 2
            rows = np.arange(len(positions), dtype=np.int64)[:, None]
            found_keys = rows * n_positions + positions
            valid_excluded = excluded >= 0
            excluded_keys = (rows * n_positions + excluded)[valid_excluded]
            keep &= ~np.isin(found_keys, excluded_keys)
        return keep

    def _search_exhaustively(self, queries: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact search, for the rare rows an approximate index leaves short."""
        if self.device_ == "cuda":
            return faiss.knn(queries, self._host_vectors, fetch, metric=faiss.METRIC_INNER_PRODUCT)
        if self.kind_ == "hnsw":
            return faiss.downcast_index(self._index.storage).search(queries, fetch)
        if self.kind_ == "ivf":
            return self._index.search(queries, fetch, params=faiss.SearchParametersIVF(nprobe=self._nlist_))
        return self._index.search(queries, fetch)

    # ------------------------------------------------------------------ validation helpers

    def _check_built(self) -> None:
        if self._index is None:
            raise IndexInputError(
                "the index is empty: call build(vectors, ids) or VectorIndex.load(path) first"
            )

    def _check_k(self, k: Any, *, n_excluded: int) -> None:
        if isinstance(k, bool) or not isinstance(k, int | np.integer):
            raise IndexInputError(f"k must be an integer, got {k!r}")
        largest = len(self) - n_excluded
        if k < 1 or k > largest:
            reason = f" after excluding up to {n_excluded} id(s) per query" if n_excluded else ""
            raise IndexInputError(
                f"k={k} is out of range: the index holds {len(self)} vectors, so k must be between 1 and "
                f"{largest}{reason}"
            )
        if self.device_ == "cuda" and k + n_excluded > GPU_MAX_K:
            raise IndexInputError(f"GPU indexes return at most {GPU_MAX_K} neighbours; k={k} is too large")

    def _prepare_vectors(self, vectors: Any, *, what: str) -> np.ndarray:
        """(n, d) float32 C-ordered copy-or-view of ``vectors``, checked for shape and finiteness."""
        array = np.asarray(vectors)
        if array.ndim != 2:
            hint = "; pass a single vector as v[None, :]" if array.ndim == 1 else ""
            raise IndexInputError(f"{what} must be a 2-D (n, d) array, got shape {array.shape}{hint}")
        if array.dtype.kind not in "fiu":
            raise IndexInputError(f"{what} must be real numbers, got dtype {array.dtype}")
        if array.shape[0] == 0 or array.shape[1] == 0:
            raise IndexInputError(
                f"{what} must have at least one row and one column, got shape {array.shape}"
            )
        array = np.ascontiguousarray(array, dtype=np.float32)
        finite_rows = np.isfinite(array).all(axis=1)
        if not finite_rows.all():
            row = int(np.argmin(finite_rows))
            raise IndexInputError(
                f"{what} row {row} contains NaN or infinity (float32); every vector must be finite"
            )
        return array

    def _prepare_queries(self, queries: Any) -> np.ndarray:
        original = np.asarray(queries)
        array = self._prepare_vectors(original, what="queries")
        if array.shape[1] != self.dim_:
            raise IndexInputError(
                f"queries have dimension {array.shape[1]} but the index holds {self.dim_}-dimensional vectors"
            )
        if self.metric == "cosine":
            self._check_nonzero(array, None, what="queries")
            if np.may_share_memory(array, original):
                array = array.copy()  # normalise a copy, never the caller's array
            faiss.normalize_L2(array)
        return array

    @staticmethod
    def _check_nonzero(array: np.ndarray, external_ids: np.ndarray | None, *, what: str) -> None:
        zero_rows = np.flatnonzero(~np.any(array != 0, axis=1))
        if len(zero_rows):
            row = int(zero_rows[0])
            label = f" (id {external_ids[row].item()!r})" if external_ids is not None else ""
            raise IndexInputError(
                f"{what} row {row}{label} is all zeros: cosine similarity is undefined for it; "
                "drop it or use metric='inner_product'"
            )

    def _positions_of(self, ids: Sequence[Any] | np.ndarray) -> np.ndarray:
        """(len(ids),) int64 row positions of stored ids; UnknownIdError names the first unknown one."""
        if isinstance(ids, str | bytes) or (isinstance(ids, np.ndarray) and ids.ndim != 1):
            raise IndexInputError("ids must be a one-dimensional sequence of stored ids; pass one id as [id]")
        if not isinstance(ids, np.ndarray):
            try:
                ids = list(ids)
            except TypeError:
                raise IndexInputError(
                    "ids must be a one-dimensional sequence of stored ids; pass one id as [id]"
                ) from None
        if len(ids) == 0:
            return np.empty(0, dtype=np.int64)
        try:
            query = np.asarray(ids) if not isinstance(ids, np.ndarray) else ids
        except ValueError:
            query = np.asarray(ids, dtype=object)
        string_ids = self._ids.dtype.kind == "U"
        if (
            query.ndim != 1
            or query.dtype.kind != ("U" if string_ids else "i")
            and not (not string_ids and query.dtype.kind == "u")
        ):
            self._raise_unknown(ids, matches=np.zeros(len(ids), dtype=bool))
        query = query.astype(str if string_ids else np.int64, copy=False)
        slots = np.minimum(np.searchsorted(self._sorted_ids, query), len(self._sorted_ids) - 1)
        matches = self._sorted_ids[slots] == query
        if not matches.all():
            self._raise_unknown(ids, matches=matches)
        return self._sorted_positions[slots]

    def _raise_unknown(self, ids: Sequence[Any] | np.ndarray, *, matches: np.ndarray) -> None:
        missing = ids[int(np.argmin(matches))]
        if isinstance(missing, np.generic):
            missing = missing.item()
        raise UnknownIdError(
            f"id {missing!r} is not in the index ({len(self)} ids of type {self._id_type()})"
        )

    def _is_stored(self, key: object) -> bool:
        try:
            self._positions_of([key])
        except (UnknownIdError, IndexInputError):
            return False
        return True

    def _id_type(self) -> str:
        return "str" if self._ids is not None and self._ids.dtype.kind == "U" else "int"

    def _excluded_positions(self, exclude_ids: Sequence[Any] | None, n_queries: int) -> np.ndarray | None:
        """(n_queries, e) positions to exclude per query, padded with -1; None when nothing is excluded."""
        if exclude_ids is None:
            return None
        try:
            if isinstance(exclude_ids, str | bytes):
                raise TypeError
            entries = list(exclude_ids)
        except TypeError:
            raise IndexInputError(
                "exclude_ids must have one entry per query (None, an id, or a list of ids)"
            ) from None
        if len(entries) != n_queries:
            raise IndexInputError(
                f"exclude_ids has {len(entries)} entries for {n_queries} queries; give one entry per query"
            )
        per_query: list[list[int]] = []
        for entry in entries:
            if entry is None:
                group: list[Any] = []
            elif isinstance(entry, list | tuple | set | frozenset | np.ndarray):
                group = list(entry.tolist() if isinstance(entry, np.ndarray) else entry)
            else:
                group = [entry]
            per_query.append(sorted(set(self._positions_of(group).tolist())) if group else [])
        width = max((len(group) for group in per_query), default=0)
        if width == 0:
            return None
        excluded = np.full((n_queries, width), -1, dtype=np.int64)
        for row, group in enumerate(per_query):
            excluded[row, : len(group)] = group
        return excluded

    # ------------------------------------------------------------------ persistence

    @staticmethod
    def sidecar_path(path: str | os.PathLike[str]) -> Path:
        """Where the JSON sidecar of an index saved at ``path`` lives: ``path`` + ``.json``."""
        path = Path(path)
        return path.with_name(path.name + SIDECAR_SUFFIX)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the FAISS index to ``path`` and its JSON sidecar to ``path.json``, each atomically.

        The sidecar (ids, metric, kind, parameters, dimension, vector fingerprint and the SHA-256 of
        the index file) is written last, so a reader never pairs it with another save's index file.
        GPU indexes are copied to the CPU first; the file loads on either device.

        Returns:
            ``path`` as a Path.
        """
        self._check_built()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        cpu_index = faiss.index_gpu_to_cpu(self._index) if self.device_ == "cuda" else self._index
        token = f".tmp-{os.getpid()}-{uuid.uuid4().hex}"
        index_tmp = path.with_name(path.name + token)
        sidecar = self.sidecar_path(path)
        sidecar_tmp = sidecar.with_name(sidecar.name + token)
        try:
            faiss.write_index(cpu_index, str(index_tmp))
            _fsync(index_tmp)
            metadata = {
                "format": _SIDECAR_FORMAT,
                "format_version": _SIDECAR_VERSION,
                "faiss_version": faiss.__version__,
                "metric": self.metric,
                "kind": self.kind_,
                "params": self.get_params(),
                "dimension": self.dim_,
                "n_vectors": len(self),
                "id_type": self._id_type(),
                "ids": self._ids.tolist(),
                "vectors_sha256": self.fingerprint_,
                "index_file": path.name,
                "index_file_sha256": _file_sha256(index_tmp),
            }
            with sidecar_tmp.open("w", encoding="utf-8") as handle:
                json.dump(metadata, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(index_tmp, path)
            os.replace(sidecar_tmp, sidecar)
        finally:
            for leftover in (index_tmp, sidecar_tmp):
                leftover.unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, device: Device = "auto") -> VectorIndex:
        """Read an index written by :meth:`save`; nothing is rebuilt or retrained.

        Args:
            path: the index file given to :meth:`save` (the sidecar is ``path.json``).
            device: ``"auto"``, ``"cpu"`` or ``"cuda"``; HNSW always loads on the CPU.

        Raises:
            FileNotFoundError: the index file or its sidecar is missing.
            IndexInputError: (a ValueError) the sidecar is unreadable or does not match the index file.
        """
        path = Path(path)
        sidecar = cls.sidecar_path(path)
        for required in (path, sidecar):
            if not required.is_file():
                raise FileNotFoundError(
                    f"{required}: no such file; save the index with VectorIndex.save first"
                )
        try:
            metadata = json.loads(sidecar.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise IndexInputError(
                f"{sidecar}: not a readable JSON sidecar ({error}); save the index again"
            ) from None
        if not isinstance(metadata, dict) or metadata.get("format") != _SIDECAR_FORMAT:
            raise IndexInputError(f"{sidecar}: not a VectorIndex sidecar; save the index again")
        if metadata.get("format_version") != _SIDECAR_VERSION:
            raise IndexInputError(
                f"{sidecar}: sidecar format version {metadata.get('format_version')!r}, expected {_SIDECAR_VERSION}; "
                "save the index again with this version of the suite"
            )
        try:
            expected_sha256 = metadata["index_file_sha256"]
            kind = metadata["kind"]
            dimension = metadata["dimension"]
            stored_ids = metadata["ids"]
            id_type = metadata["id_type"]
            fingerprint = metadata["vectors_sha256"]
            index = cls(**{**metadata["params"], "device": device})
        except (KeyError, TypeError) as error:
            raise IndexInputError(
                f"{sidecar}: incomplete or unknown sidecar fields ({error}); save the index again"
            ) from None
        if kind not in ("exact", "hnsw", "ivf") or id_type not in ("int", "str"):
            raise IndexInputError(
                f"{sidecar}: unknown kind {kind!r} or id type {id_type!r}; save the index again"
            )
        if _file_sha256(path) != expected_sha256:
            raise IndexInputError(
                f"{path}: the index file does not match its sidecar {sidecar.name} "
                "(changed or written by another save); save the index again"
            )
        ensure_faiss_threads_configured()
        cpu_index = faiss.read_index(str(path))
        if cpu_index.d != dimension or cpu_index.ntotal != len(stored_ids):
            raise IndexInputError(
                f"{path}: index holds {cpu_index.ntotal} x {cpu_index.d} vectors but the sidecar lists "
                f"{len(stored_ids)} ids of dimension {dimension}; save the index again"
            )
        resolved_device = index._resolve_device()
        if kind == "hnsw" and resolved_device == "cuda":
            if device == "cuda":
                warnings.warn(
                    "FAISS has no GPU HNSW index: loading HNSW on the CPU", RuntimeWarning, stacklevel=2
                )
            resolved_device = "cpu"
        external_ids = np.asarray(stored_ids, dtype=str if id_type == "str" else np.int64)
        index._install(cpu_index, external_ids, kind=kind, device=resolved_device, fingerprint=fingerprint)
        return index


def _fsync(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())
