"""Nearest-neighbour search over the rows of a matrix (taste vectors or any vectors), on FAISS.

``VectorIndex`` answers "which stored rows are most similar to these queries?" in one batched call. It
knows rows only by their position 0 .. n-1 in the matrix given to :meth:`VectorIndex.build`; turning
positions into user or image ids is the caller's job (:mod:`recsys.retrieval.similar` does it with the
``Dataset``, which owns the ids). Similarity is cosine (inner product of L2-normalised vectors) by
default, or the raw inner product. Under cosine a zero vector, stored or queried, has similarity 0 to
everything (it cannot be normalised, so it is left as it is).

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

Saving and loading: :mod:`recsys.retrieval.index_io`. FAISS threads are set once per process from
``RECSYS_FAISS_THREADS``, else ``OMP_NUM_THREADS``, else the cores this process may use
(:mod:`recsys.threads`).
"""

from __future__ import annotations

import hashlib
import math
import warnings
from typing import Any, Literal, NamedTuple

import numpy as np

from recsys.errors import UserError
from recsys.extras import LazyModule
from recsys.threads import ensure_faiss_threads_configured

#: FAISS, imported when an index is first built or loaded (the ``faiss`` extra)
faiss = LazyModule("faiss", "faiss", "the FAISS index (similar users and images)")

Metric = Literal["cosine", "inner_product"]
Kind = Literal["auto", "exact", "hnsw", "ivf"]
Device = Literal["auto", "cpu", "cuda"]

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

_METRICS = ("cosine", "inner_product")
_KINDS = ("auto", "exact", "hnsw", "ivf")
_DEVICES = ("auto", "cpu", "cuda")
#: The FAISS CPU index class of each built kind (all with METRIC_INNER_PRODUCT).
_FAISS_CLASSES = {"exact": "IndexFlat", "hnsw": "IndexHNSWFlat", "ivf": "IndexIVFFlat"}

_gpu_resources: Any = None


class IndexInputError(UserError, ValueError):
    """Vectors, positions, queries, ``k`` or a saved index that cannot be used; the message says which and why."""


class SearchResult(NamedTuple):
    """Neighbours of each query, most similar first.

    Attributes:
        positions: (n_queries, k) int64 row positions of the neighbours in the matrix given to
            :meth:`VectorIndex.build`, distinct along a row.
        scores: (n_queries, k) float32 similarities (cosine or inner product), non-increasing along a row.

    Every row is full: ``k`` is checked against the number of stored rows, and a row that an approximate
    index leaves short is searched again exhaustively, so no position is ever -1.
    """

    positions: np.ndarray
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


def resolve_device(device: Device) -> str:
    """Where ``device`` (``"auto"``, ``"cpu"`` or ``"cuda"``) searches on this machine: ``"cpu"`` or ``"cuda"``.

    Raises:
        IndexInputError: an unknown device, or ``"cuda"`` where FAISS sees no GPU.
    """
    _check_choice("device", device, _DEVICES)
    if device == "cpu":
        return "cpu"
    if gpu_available():
        return "cuda"
    if device == "cuda":
        support = "present" if hasattr(faiss, "StandardGpuResources") else "absent"
        raise IndexInputError(
            f"device='cuda' was requested but FAISS sees no GPU (faiss {faiss.__version__}: GPU support "
            f"{support}, {faiss.get_num_gpus()} GPUs); install faiss-gpu on a CUDA machine or use device='cpu'"
        )
    return "cpu"


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


class VectorIndex:
    """Exact or approximate nearest-neighbour search over the rows of a matrix, by row position.

    Build with ``VectorIndex(**params).build(vectors)``; search with :meth:`search` (any query vectors)
    or :meth:`search_positions` (stored rows as queries, never returning the query's own row). Save and
    load with :func:`recsys.retrieval.index_io.save_index` / :func:`~recsys.retrieval.index_io.load_index`.

    Args:
        metric: ``"cosine"`` (vectors and queries are L2-normalised; a zero vector has similarity 0 to
            everything) or ``"inner_product"`` (raw dot products, e.g. when a vector's norm carries meaning).
        kind: ``"auto"`` (by size and device, see the module docstring), ``"exact"`` (``IndexFlatIP``),
            ``"hnsw"`` (``IndexHNSWFlat``) or ``"ivf"`` (``IndexIVFFlat``).
        device: ``"auto"`` (a GPU when FAISS has GPU support and sees a CUDA device, else the CPU),
            ``"cpu"`` or ``"cuda"`` (an IndexInputError without a usable GPU).
        exact_max_vectors: with ``kind="auto"`` on the CPU, the largest size searched exactly.
        hnsw_m: HNSW links per node (M); more gives higher recall, slower builds and more memory.
        ef_construction: HNSW candidate list size while building.
        ef_search: HNSW candidate list size while searching (raised to the number of results asked for).
        nlist: IVF list count; ``None`` uses :func:`default_nlist` (about 4 * sqrt(n)).
        nprobe: IVF lists visited per query (capped at ``nlist``).
        seed: seed of the IVF k-means training.

    Attributes set by :meth:`build` (or by loading):
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
        self._host_vectors: np.ndarray | None = None  # GPU indexes only: the stored (prepared) vectors

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
        """True once the index holds vectors (built, or loaded)."""
        return self._index is not None

    def __len__(self) -> int:
        return 0 if self._index is None else int(self._index.ntotal)

    @property
    def faiss_index(self) -> Any:
        """The underlying FAISS index (for benchmarks and diagnostics; searching it bypasses the checks)."""
        self._check_built()
        return self._index

    def cpu_faiss_index(self) -> Any:
        """The FAISS index on the CPU: the live one, or a CPU copy of a GPU index (what is saved)."""
        self._check_built()
        return faiss.index_gpu_to_cpu(self._index) if self.device_ == "cuda" else self._index

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

    def build(self, vectors: np.ndarray, *, progress: bool = False) -> VectorIndex:
        """Index the rows of ``vectors`` under their positions 0 .. n-1; returns self.

        Args:
            vectors: (n, d) finite real array, one row per item (for example a user's taste vector);
                all-zero rows are allowed under both metrics.
            progress: show a progress bar while vectors are added.

        Raises:
            IndexInputError: (a ValueError) bad shape, NaN or infinite values, or a GPU requested where
                there is none.
        """
        array = self._prepare_vectors(vectors, what="vectors")
        n_vectors, dim = array.shape
        fingerprint = vectors_fingerprint(array)
        if self.metric == "cosine":
            array = array.copy()
            faiss.normalize_L2(array)  # leaves zero rows as they are
        ensure_faiss_threads_configured()
        device = self._resolve_device()
        kind = self._resolve_kind(n_vectors, device)
        device = self._device_for_kind(kind, device)
        cpu_index = self._new_cpu_index(kind, n_vectors, dim)
        if kind == "ivf":
            cpu_index.train(array)
        self._add_in_chunks(cpu_index, array, progress=progress)
        if kind == "ivf":
            cpu_index.make_direct_map()  # lets search_positions reconstruct stored vectors
        self._install(cpu_index, kind=kind, device=device, fingerprint=fingerprint)
        return self

    @classmethod
    def from_faiss(
        cls, cpu_index: Any, *, params: dict[str, Any], kind: str, fingerprint: str, device: Device = "auto"
    ) -> VectorIndex:
        """Wrap a filled FAISS CPU index (as read from a file by :mod:`recsys.retrieval.index_io`).

        Args:
            cpu_index: an ``IndexFlat``, ``IndexHNSWFlat`` or ``IndexIVFFlat`` with the inner-product
                metric, holding the prepared (for cosine: normalised) vectors.
            params: the constructor parameters it was built with (:meth:`get_params`); ``device`` replaces
                the saved device.
            kind: ``"exact"``, ``"hnsw"`` or ``"ivf"``, as built.
            fingerprint: :func:`vectors_fingerprint` of the vectors it was built from.
            device: where to search; HNSW always runs on the CPU.

        Raises:
            IndexInputError: unknown parameters or kind, or a FAISS index that is not of that kind.
        """
        try:
            index = cls(**{**params, "device": device})
        except TypeError as error:
            raise IndexInputError(f"unknown index parameters ({error})") from None
        if kind not in _FAISS_CLASSES:
            raise IndexInputError(f"unknown index kind {kind!r}; expected one of 'exact', 'hnsw', 'ivf'")
        expected = getattr(faiss, _FAISS_CLASSES[kind])
        if not isinstance(cpu_index, expected) or cpu_index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise IndexInputError(
                f"the FAISS index is {type(cpu_index).__name__} (metric {cpu_index.metric_type}), "
                f"not the inner-product {expected.__name__} of a {kind!r} index"
            )
        if kind == "ivf" and cpu_index.direct_map.type == faiss.DirectMap.NoMap:
            cpu_index.make_direct_map()
        ensure_faiss_threads_configured()
        resolved = index._device_for_kind(kind, index._resolve_device(), action="loading")
        index._install(cpu_index, kind=kind, device=resolved, fingerprint=fingerprint)
        return index

    def _resolve_device(self) -> str:
        return resolve_device(self.device)

    def _resolve_kind(self, n_vectors: int, device: str) -> str:
        if self.kind != "auto":
            return self.kind
        if device == "cuda":
            return "exact" if n_vectors <= GPU_EXACT_MAX_VECTORS else "ivf"
        return "exact" if n_vectors <= self.exact_max_vectors else "hnsw"

    def _device_for_kind(self, kind: str, device: str, *, action: str = "building") -> str:
        """HNSW runs on the CPU (FAISS has no GPU HNSW); warn when the GPU was asked for explicitly."""
        if kind != "hnsw" or device != "cuda":
            return device
        if self.device == "cuda":
            warnings.warn(
                f"FAISS has no GPU HNSW index: {action} HNSW on the CPU; "
                "use kind='ivf' or kind='exact' to search on the GPU",
                RuntimeWarning,
                stacklevel=3,
            )
        return "cpu"

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

    def _install(self, cpu_index: Any, *, kind: str, device: str, fingerprint: str) -> None:
        """Make ``cpu_index`` (already filled) the live index, on ``device``."""
        if device == "cuda":
            self._host_vectors = cpu_index.reconstruct_n(0, cpu_index.ntotal)
            self._index = faiss.index_cpu_to_gpu(_shared_gpu_resources(), 0, cpu_index)
        else:
            self._host_vectors = None
            self._index = cpu_index
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

    def search(self, queries: np.ndarray, k: int, exclude: np.ndarray | None = None) -> SearchResult:
        """The ``k`` stored rows most similar to each query, most similar first.

        Args:
            queries: (n_queries, d) finite real array; a single query is a batch of one, ``q[None, :]``.
            k: neighbours per query, 1 <= k <= n minus the most positions excluded from any one query.
            exclude: ``None``, or integer positions never to return, one row per query: shape
                (n_queries,) for one position each, or (n_queries, e) for up to e each; -1 excludes nothing
                (padding), and repeats count once.

        Returns:
            :class:`SearchResult` with ``positions`` and ``scores`` of shape (n_queries, k).

        Raises:
            IndexInputError: (a ValueError) wrong shape or dimension, NaN/inf, ``k`` out of range, or an
                ``exclude`` of the wrong shape or type or with a position outside 0 .. n-1.
        """
        self._check_built()
        prepared = self._prepare_queries(queries)
        excluded, n_excluded = self._prepare_exclude(exclude, len(prepared))
        return self._search_rows(prepared, k, excluded, n_excluded)

    def search_positions(self, positions: np.ndarray, k: int) -> SearchResult:
        """The ``k`` stored rows most similar to the stored rows at ``positions``, each excluding itself.

        Args:
            positions: (n_queries,) integer row positions ("users similar to the user in row p").
            k: neighbours per query, 1 <= k <= n - 1.

        Returns:
            :class:`SearchResult` with ``positions`` and ``scores`` of shape (n_queries, k); row i never
            contains ``positions[i]`` (an identical twin in another row may come first, with score 1).

        Raises:
            IndexInputError: (a ValueError) ``positions`` empty, not 1-D integers or outside 0 .. n-1, or
                ``k`` out of range.
        """
        self._check_built()
        rows = self._prepare_positions(positions)
        self._check_k(k, n_excluded=1)
        if self._host_vectors is not None:
            queries = self._host_vectors[rows]
        else:
            queries = self._index.reconstruct_batch(rows)
        return self._search_rows(queries, k, rows[:, None], 1)

    def _search_rows(
        self, queries: np.ndarray, k: int, excluded: np.ndarray | None, n_excluded: int
    ) -> SearchResult:
        """Search prepared queries; (n_queries, k) positions and scores with the excluded rows removed.

        ``excluded`` is (n_queries, e) positions to drop, padded with -1, at most ``n_excluded`` valid
        ones per row. We fetch k + n_excluded neighbours so that k remain after dropping; rows an
        approximate index still leaves short are searched again exhaustively.
        """
        self._check_k(k, n_excluded=n_excluded)
        fetch = k + n_excluded
        scores, positions = self._index.search(queries, fetch)
        if excluded is None and positions[:, -1].min() >= 0:
            return SearchResult(positions, scores)  # fast path: nothing to drop, nothing missing
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
        return SearchResult(
            np.take_along_axis(positions, order, axis=1), np.take_along_axis(scores, order, axis=1)
        )

    @staticmethod
    def _keep_mask(positions: np.ndarray, excluded: np.ndarray | None) -> np.ndarray:
        keep = positions >= 0
        if excluded is not None and excluded.shape[1] <= 4:
            # Few positions per query (the usual "not the user themself"): compare directly.
            keep &= ~(positions[:, :, None] == excluded[:, None, :]).any(axis=2)
        elif excluded is not None:
            # Compare (row, position) pairs as single integers: linear memory for any number excluded.
            n_positions = int(max(positions.max(initial=0), excluded.max(initial=0))) + 2
            rows = np.arange(len(positions), dtype=np.int64)[:, None]
            found_keys = rows * n_positions + positions
            excluded_keys = (rows * n_positions + excluded)[excluded >= 0]
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
                "the index is empty: call build(vectors) or recsys.retrieval.index_io.load_index(path) first"
            )

    def _check_k(self, k: Any, *, n_excluded: int) -> None:
        if isinstance(k, bool) or not isinstance(k, int | np.integer):
            raise IndexInputError(f"k must be an integer, got {k!r}")
        largest = len(self) - n_excluded
        if k < 1 or k > largest:
            reason = f" after excluding up to {n_excluded} position(s) per query" if n_excluded else ""
            raise IndexInputError(
                f"k={k} is out of range: the index holds {len(self)} vectors, so k must be between 1 and "
                f"{largest}{reason}"
            )
        if self.device_ == "cuda" and k + n_excluded > GPU_MAX_K:
            raise IndexInputError(f"GPU indexes return at most {GPU_MAX_K} neighbours; k={k} is too large")

    @staticmethod
    def _prepare_vectors(vectors: Any, *, what: str) -> np.ndarray:
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
            if np.may_share_memory(array, original):
                array = array.copy()  # normalise a copy, never the caller's array
            faiss.normalize_L2(array)
        return array

    def _check_in_range(self, array: np.ndarray, what: str) -> None:
        bad = (array < 0) | (array >= len(self))
        if bad.any():
            value = int(array[np.unravel_index(np.argmax(bad), array.shape)])
            raise IndexInputError(
                f"{what} holds position {value}, but the index holds {len(self)} vectors (positions 0 .. "
                f"{len(self) - 1})"
            )

    def _prepare_positions(self, positions: Any) -> np.ndarray:
        """(n_queries,) int64 stored row positions, checked for shape, type and range."""
        array = np.asarray(positions)
        if array.ndim != 1:
            raise IndexInputError(
                f"positions must be a one-dimensional array of row positions, got shape {array.shape}; "
                "pass one position as [p]"
            )
        if len(array) == 0:
            raise IndexInputError("positions is empty: pass at least one stored row position")
        if array.dtype.kind not in "iu":
            raise IndexInputError(f"positions must be integers, got dtype {array.dtype}")
        array = array.astype(np.int64, copy=False)
        self._check_in_range(array, "positions")
        return array

    def _prepare_exclude(self, exclude: Any, n_queries: int) -> tuple[np.ndarray | None, int]:
        """(n_queries, e) positions to exclude, -1 padded and each repeat made -1, and the most valid per row."""
        if exclude is None:
            return None, 0
        try:
            array = np.asarray(exclude)
        except ValueError:  # ragged nested lists
            raise IndexInputError(
                "exclude rows have different lengths; give one row per query, all of one length, "
                "padded with -1"
            ) from None
        if array.ndim not in (1, 2) or len(array) != n_queries:
            raise IndexInputError(
                f"exclude has shape {array.shape} for {n_queries} queries; give one row per query: "
                "(n_queries,) or (n_queries, e) positions, -1 for none"
            )
        if array.size == 0:
            return None, 0
        if array.dtype.kind not in "iu":
            raise IndexInputError(
                f"exclude must hold integer positions (-1 for none), got dtype {array.dtype}"
            )
        array = array.astype(np.int64).reshape(n_queries, -1)
        self._check_in_range(array[array != -1], "exclude")
        array = np.sort(array, axis=1)
        array[:, 1:][array[:, 1:] == array[:, :-1]] = -1  # a position excluded twice counts once
        n_excluded = int((array >= 0).sum(axis=1).max())
        return (array, n_excluded) if n_excluded else (None, 0)
