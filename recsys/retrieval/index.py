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
* CPU, more vectors than an HNSW graph should hold in memory: when HNSW's estimated size,
  n * (4 * d + 8 * hnsw_m) bytes, exceeds ``max_hnsw_bytes`` (default :data:`MAX_HNSW_BYTES`, 2 GiB:
  about 3.3 million 64-d vectors at M=48), ``kind="ivf_sq"``, below. A graph that large would also
  be slow to build on a few cores (a million vectors take about 80 s).
* GPU, at most :data:`GPU_EXACT_MAX_VECTORS` vectors: exact search on the GPU (a GPU scans a million
  vectors faster than a CPU walks a graph); more: ``IndexIVFFlat`` on the GPU.

``kind="ivf_sq"`` (never chosen on a GPU by ``"auto"``) is an inverted file over scalar-quantised codes,
``IndexIVFScalarQuantizer`` (8 bits per dimension by default, ``sq_bits``), encoding each vector's
residual from its list centroid, with an HNSW graph over the centroids as the coarse quantizer (FAISS's
advice for millions of vectors: it finds the lists to visit without scanning every centroid). Its
spherical k-means reads a sample of :data:`IVF_SQ_TRAINING_POINTS_PER_LIST` vectors per list, not all n,
and finds each one's nearest centroid through a graph too, so training stays a small part of the build
(10,000,000 simulated 64-d vectors on two busy cores: about 5 of 16 minutes, the rest adding them). With ``refine=True`` (the default) it is wrapped in ``IndexRefineFlat``: the
codes pick ``refine_factor`` times as many candidates as asked for, and the full vectors, kept beside
the codes, re-rank them, so the scores returned are exact similarities. Per vector it holds
4 * d (the vectors, with refine) + d * sq_bits / 8 (the codes) + 8 (the position in its list) bytes:
for 64 dims and 8 bits 328 bytes against HNSW's 640 at M=48; with ``refine=False`` 72 bytes, and
the scores returned are then similarities to the decoded codes, approximate (at most 0.005 off at
8 bits on 30,000 simulated 32-d taste vectors), as is the choice of neighbours.

FAISS has no GPU HNSW. ``kind="hnsw"`` with ``device="auto"`` therefore runs on the CPU even where a
GPU exists; with ``device="cuda"`` it also runs on the CPU and warns (``RuntimeWarning``). Ask for
``kind="ivf"``, ``kind="ivf_sq"`` or ``kind="exact"`` to search on the GPU. IVF indexes for the GPU are
trained on the CPU and then copied to the device. ``ivf_sq`` on a GPU (FAISS's
``GpuIndexIVFScalarQuantizer``) keeps its HNSW coarse quantizer and its refinement on the CPU, with a
CPU copy of the index for saving; that path has not been run on a GPU yet.

Every kind but ``ivf_sq`` with ``refine=False`` stores the full vectors, so the scores returned are
exact similarities of the neighbours found; only the choice of neighbours is approximate for HNSW and
the IVF kinds.

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
Kind = Literal["auto", "exact", "hnsw", "ivf", "ivf_sq"]
Device = Literal["auto", "cpu", "cuda"]

#: ``kind="auto"`` on the CPU searches exactly up to this many vectors, and builds HNSW above it.
EXACT_MAX_VECTORS = 50_000
#: ``kind="auto"`` on the CPU builds ``ivf_sq`` instead of HNSW when HNSW would take more bytes than this.
MAX_HNSW_BYTES = 2 * 1024**3
#: ``kind="auto"`` on a GPU searches exactly up to this many vectors, and builds IVF above it.
GPU_EXACT_MAX_VECTORS = 1_000_000
#: Lists an ``ivf_sq`` index visits per query unless ``nprobe`` is given.
IVF_SQ_NPROBE = 16
#: Candidates per neighbour that ``ivf_sq`` re-ranks with the full vectors unless ``refine_factor`` is given.
IVF_SQ_REFINE_FACTOR = 2.0
#: ``ivf_sq`` trains its lists and its scalar quantiser on about this many sampled vectors per list.
IVF_SQ_TRAINING_POINTS_PER_LIST = 50
#: Links per node of the HNSW graph over the ``ivf_sq`` list centroids (its coarse quantizer).
_IVF_SQ_QUANTIZER_M = 32
#: Candidate list size of that graph while adding vectors (each vector's list is looked up once), and the
#: least while searching (where it is at least twice nprobe).
_IVF_SQ_QUANTIZER_EF = 32
#: FAISS GPU indexes return at most this many neighbours per query, and probe at most this many lists.
GPU_MAX_K = 2048
#: FAISS warns when k-means gets fewer training points than this per IVF list.
_MIN_TRAINING_POINTS_PER_LIST = 39
#: Lists an ``ivf`` index visits per query unless ``nprobe`` is given.
_IVF_NPROBE = 32
#: Vectors added per step when building, so that progress can be shown.
_ADD_CHUNK = 100_000
#: FAISS refuses a saved ``IndexRefine`` whose k_factor is above this.
_MAX_REFINE_FACTOR = 1000

_METRICS = ("cosine", "inner_product")
_KINDS = ("auto", "exact", "hnsw", "ivf", "ivf_sq")
#: ``sq_bits`` of ``ivf_sq`` and the name of the FAISS scalar quantiser of each (16: half-precision floats).
_SQ_TYPES = {4: "QT_4bit", 6: "QT_6bit", 8: "QT_8bit", 16: "QT_fp16"}
_DEVICES = ("auto", "cpu", "cuda")
#: The FAISS CPU index class of each built kind (all with METRIC_INNER_PRODUCT); ``ivf_sq`` with refine is
#: an ``IndexRefineFlat`` around it.
_FAISS_CLASSES = {
    "exact": "IndexFlat",
    "hnsw": "IndexHNSWFlat",
    "ivf": "IndexIVFFlat",
    "ivf_sq": "IndexIVFScalarQuantizer",
}

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


def _check_refine_factor(value: Any) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float | np.integer | np.floating)
        or not math.isfinite(value)
        or not 1 <= value <= _MAX_REFINE_FACTOR
    ):
        raise IndexInputError(f"refine_factor must be a number from 1 to {_MAX_REFINE_FACTOR}, got {value!r}")


def hnsw_bytes(n_vectors: int, dim: int, hnsw_m: int) -> int:
    """Estimated memory of an ``IndexHNSWFlat``: per vector, 4 * d bytes of vector and 2 * M links of 4 bytes.

    The upper layers and FAISS's bookkeeping add about 16 bytes more per vector, left out (a saved 64-d
    index at M=48 holds 656 bytes per vector against 640 here); ``kind="auto"`` compares this estimate with
    ``max_hnsw_bytes``.
    """
    return n_vectors * (4 * dim + 8 * hnsw_m)


def default_nlist(n_vectors: int) -> int:
    """IVF list count for ``n_vectors``: about 4 * sqrt(n), but at least 39 training points per list."""
    target = round(4 * math.sqrt(n_vectors))
    return max(1, min(target, n_vectors // _MIN_TRAINING_POINTS_PER_LIST))


def _reserve_flat_storage(kind: str, index: Any, n_vectors: int) -> None:
    """Allocate the full vectors' storage of an empty index once, before it is filled in chunks.

    FAISS appends each chunk to a growing array, which doubles its allocation: when it moves, old and new
    copies coexist (for 10 million 64-d vectors the peak was 0.7 GiB above the final 2.4 GiB). Resizing
    to the final size and back to zero keeps the allocation (a vector never shrinks its capacity), so the
    adds that follow never move it.
    """
    if kind == "exact":
        flat = index
    elif kind == "hnsw":
        flat = faiss.downcast_index(index.storage)
    elif kind == "ivf_sq" and isinstance(index, faiss.IndexRefine):
        flat = faiss.downcast_index(index.refine_index)
    else:
        return
    flat.codes.resize(n_vectors * flat.code_size)
    flat.codes.resize(0)


def _ivf_of(index: Any) -> Any:
    """The IVF index itself: ``index``, or the base of an ``IndexRefine`` (an ``ivf_sq`` with refine)."""
    if isinstance(index, faiss.IndexRefine):
        return faiss.downcast_index(index.base_index)
    return index


def _set_quantizer_ef_search(index: Any, ef_search: int) -> None:
    """Set the candidate list size of the HNSW graph over an ``ivf_sq`` index's list centroids.

    A graph quantizer (as built) on the CPU or beside a GPU index; an index read from elsewhere with a
    flat quantizer has nothing to set.
    """
    quantizer = faiss.downcast_index(_ivf_of(index).quantizer)
    if isinstance(quantizer, faiss.IndexHNSW):
        quantizer.hnsw.efSearch = int(ef_search)


class VectorIndex:
    """Exact or approximate nearest-neighbour search over the rows of a matrix, by row position.

    Build with ``VectorIndex(**params).build(vectors)``; search with :meth:`search` (any query vectors)
    or :meth:`search_positions` (stored rows as queries, never returning the query's own row). Save and
    load with :func:`recsys.retrieval.index_io.save_index` / :func:`~recsys.retrieval.index_io.load_index`.

    Args:
        metric: ``"cosine"`` (vectors and queries are L2-normalised; a zero vector has similarity 0 to
            everything) or ``"inner_product"`` (raw dot products, e.g. when a vector's norm carries meaning).
        kind: ``"auto"`` (by size and device, see the module docstring), ``"exact"`` (``IndexFlatIP``),
            ``"hnsw"`` (``IndexHNSWFlat``), ``"ivf"`` (``IndexIVFFlat``) or ``"ivf_sq"``
            (``IndexIVFScalarQuantizer``, with ``IndexRefineFlat`` when ``refine``).
        device: ``"auto"`` (a GPU when FAISS has GPU support and sees a CUDA device, else the CPU),
            ``"cpu"`` or ``"cuda"`` (an IndexInputError without a usable GPU).
        exact_max_vectors: with ``kind="auto"`` on the CPU, the largest size searched exactly.
        max_hnsw_bytes: with ``kind="auto"`` on the CPU, the largest estimated HNSW size, n * (4 * d +
            8 * hnsw_m) bytes; above it ``ivf_sq`` is built.
        hnsw_m: HNSW links per node (M); more gives higher recall, slower builds and more memory.
        ef_construction: HNSW candidate list size while building.
        ef_search: HNSW candidate list size while searching (raised to the number of results asked for).
        nlist: IVF list count (both IVF kinds); ``None`` uses :func:`default_nlist` (about 4 * sqrt(n)).
        nprobe: IVF lists visited per query (capped at ``nlist``); ``None``: 32 for ``ivf``,
            :data:`IVF_SQ_NPROBE` for ``ivf_sq``.
        sq_bits: ``ivf_sq`` code size per dimension: 8 (default), 6 or 4 bits, or 16 (half-precision
            floats); fewer bits need a larger ``refine_factor`` for the same recall.
        refine: ``ivf_sq`` keeps the full vectors and re-ranks candidates with them (exact scores);
            False keeps the codes only (72 instead of 328 bytes per 64-d vector at 8 bits, approximate
            scores).
        refine_factor: with ``refine``, how many times k candidates the codes pick for re-ranking (>= 1).
        seed: seed of the IVF k-means training (and of the ``ivf_sq`` training sample).

    Attributes set by :meth:`build` (or by loading):
        kind_: the kind built (``"exact"``, ``"hnsw"``, ``"ivf"`` or ``"ivf_sq"``).
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
        max_hnsw_bytes: int = MAX_HNSW_BYTES,
        hnsw_m: int = 48,
        ef_construction: int = 80,
        ef_search: int = 32,
        nlist: int | None = None,
        nprobe: int | None = None,
        sq_bits: int = 8,
        refine: bool = True,
        refine_factor: float = IVF_SQ_REFINE_FACTOR,
        seed: int = 0,
    ) -> None:
        _check_choice("metric", metric, _METRICS)
        _check_choice("kind", kind, _KINDS)
        _check_choice("device", device, _DEVICES)
        _check_positive_int("exact_max_vectors", exact_max_vectors)
        _check_positive_int("max_hnsw_bytes", max_hnsw_bytes)
        _check_positive_int("hnsw_m", hnsw_m)
        _check_positive_int("ef_construction", ef_construction)
        _check_positive_int("ef_search", ef_search)
        _check_positive_int("nlist", nlist, allow_none=True)
        _check_positive_int("nprobe", nprobe, allow_none=True)
        if isinstance(sq_bits, bool) or sq_bits not in _SQ_TYPES:
            raise IndexInputError(f"sq_bits must be one of 4, 6, 8 or 16, got {sq_bits!r}")
        if not isinstance(refine, bool | np.bool_):
            raise IndexInputError(f"refine must be True or False, got {refine!r}")
        _check_refine_factor(refine_factor)
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
            raise IndexInputError(f"seed must be an integer, got {seed!r}")
        self.metric = metric
        self.kind = kind
        self.device = device
        self.exact_max_vectors = exact_max_vectors
        self.max_hnsw_bytes = max_hnsw_bytes
        self.hnsw_m = hnsw_m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.nlist = nlist
        self.nprobe = nprobe
        self.sq_bits = int(sq_bits)
        self.refine = bool(refine)
        self.refine_factor = float(refine_factor)
        self.seed = seed
        self._index: Any = None
        self._host_vectors: np.ndarray | None = None  # GPU indexes only: the stored (prepared) vectors
        self._cpu_index: Any = None  # GPU ivf_sq only: the CPU index it was copied from (what is saved)

    # ------------------------------------------------------------------ parameters and state

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters, unchanged (as in scikit-learn)."""
        return {
            "metric": self.metric,
            "kind": self.kind,
            "device": self.device,
            "exact_max_vectors": self.exact_max_vectors,
            "max_hnsw_bytes": self.max_hnsw_bytes,
            "hnsw_m": self.hnsw_m,
            "ef_construction": self.ef_construction,
            "ef_search": self.ef_search,
            "nlist": self.nlist,
            "nprobe": self.nprobe,
            "sq_bits": self.sq_bits,
            "refine": self.refine,
            "refine_factor": self.refine_factor,
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
        if self._cpu_index is not None:
            return self._cpu_index
        return faiss.index_gpu_to_cpu(self._index) if self.device_ == "cuda" else self._index

    @property
    def scores_are_exact(self) -> bool:
        """True when the scores returned are exact similarities (every kind but ``ivf_sq`` without refine)."""
        self._check_built()
        return not (self.kind_ == "ivf_sq" and not self.refine)

    def set_search_params(
        self,
        *,
        ef_search: int | None = None,
        nprobe: int | None = None,
        refine_factor: float | None = None,
    ) -> VectorIndex:
        """Change the speed/recall trade-off of a built index without rebuilding it; returns self."""
        _check_positive_int("ef_search", ef_search, allow_none=True)
        _check_positive_int("nprobe", nprobe, allow_none=True)
        if refine_factor is not None:
            _check_refine_factor(refine_factor)
        if ef_search is not None:
            self.ef_search = ef_search
        if nprobe is not None:
            self.nprobe = nprobe
        if refine_factor is not None:
            self.refine_factor = float(refine_factor)
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
        ensure_faiss_threads_configured()
        device = self._resolve_device()
        kind = self._resolve_kind(n_vectors, dim, device)
        device = self._device_for_kind(kind, device)
        cpu_index = self._new_cpu_index(kind, n_vectors, dim)
        if kind == "ivf":
            cpu_index.train(self._normalised(array))
        elif kind == "ivf_sq":
            self._train_ivf_sq(cpu_index, self._normalised(self._training_sample(array, cpu_index)))
            _set_quantizer_ef_search(cpu_index, _IVF_SQ_QUANTIZER_EF)
        _reserve_flat_storage(kind, cpu_index, n_vectors)
        self._add_in_chunks(cpu_index, array, progress=progress)
        if kind == "ivf" or (kind == "ivf_sq" and not self.refine):
            _ivf_of(cpu_index).make_direct_map()  # lets search_positions reconstruct stored vectors
        self._install(cpu_index, kind=kind, device=device, fingerprint=fingerprint)
        return self

    def _normalised(self, array: np.ndarray) -> np.ndarray:
        """``array`` as the index stores it: an L2-normalised copy under cosine (zero rows left as they are)."""
        if self.metric != "cosine":
            return array
        array = array.copy()
        faiss.normalize_L2(array)
        return array

    @staticmethod
    def _train_ivf_sq(cpu_index: Any, sample: np.ndarray) -> None:
        """Spherical k-means for the lists, each point's nearest centroid found through an HNSW graph.

        Exact assignment costs n * nlist * d per iteration; the graph makes tens of thousands of lists
        affordable on a few cores. It is rebuilt over the centroids in every iteration and dropped after;
        the final centroids then fill the coarse quantizer's own graph.
        """
        ivf = _ivf_of(cpu_index)
        assigner = faiss.IndexHNSWFlat(ivf.d, _IVF_SQ_QUANTIZER_M)  # L2: k-means' own distance
        ivf.clustering_index = assigner
        try:
            cpu_index.train(sample)
        finally:
            ivf.clustering_index = None

    def _training_sample(self, array: np.ndarray, cpu_index: Any) -> np.ndarray:
        """About IVF_SQ_TRAINING_POINTS_PER_LIST rows per list, drawn with ``seed`` (all rows if fewer)."""
        size = _ivf_of(cpu_index).nlist * IVF_SQ_TRAINING_POINTS_PER_LIST
        if size >= len(array):
            return array
        rows = np.random.default_rng(int(self.seed)).choice(len(array), size=size, replace=False)
        return array[np.sort(rows)]

    @classmethod
    def from_faiss(
        cls, cpu_index: Any, *, params: dict[str, Any], kind: str, fingerprint: str, device: Device = "auto"
    ) -> VectorIndex:
        """Wrap a filled FAISS CPU index (as read from a file by :mod:`recsys.retrieval.index_io`).

        Args:
            cpu_index: an ``IndexFlat``, ``IndexHNSWFlat``, ``IndexIVFFlat`` or ``IndexIVFScalarQuantizer``
                (in an ``IndexRefineFlat`` when ``params["refine"]``) with the inner-product metric,
                holding the prepared (for cosine: normalised) vectors.
            params: the constructor parameters it was built with (:meth:`get_params`); ``device`` replaces
                the saved device.
            kind: ``"exact"``, ``"hnsw"``, ``"ivf"`` or ``"ivf_sq"``, as built.
            fingerprint: :func:`vectors_fingerprint` of the vectors it was built from.
            device: where to search; HNSW always runs on the CPU.

        Raises:
            IndexInputError: unknown parameters or kind, or a FAISS index that is not of that kind.
        """
        try:
            index = cls(**{**params, "device": device})
        except TypeError as error:
            raise IndexInputError(f"unknown index parameters ({error})") from None
        expected = getattr(faiss, _FAISS_CLASSES[kind]) if kind in _FAISS_CLASSES else None
        if expected is None:
            raise IndexInputError(
                f"unknown index kind {kind!r}; expected one of 'exact', 'hnsw', 'ivf', 'ivf_sq'"
            )
        inner = cpu_index
        if kind == "ivf_sq" and index.refine:
            if not isinstance(cpu_index, faiss.IndexRefineFlat):
                raise IndexInputError(
                    f"the FAISS index is {type(cpu_index).__name__}, not the IndexRefineFlat of an "
                    "'ivf_sq' index with refine"
                )
            inner = faiss.downcast_index(cpu_index.base_index)
        if not isinstance(inner, expected) or inner.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise IndexInputError(
                f"the FAISS index is {type(inner).__name__} (metric {inner.metric_type}), "
                f"not the inner-product {expected.__name__} of a {kind!r} index"
            )
        if kind in ("ivf", "ivf_sq") and not (kind == "ivf_sq" and index.refine):
            if inner.direct_map.type == faiss.DirectMap.NoMap:
                inner.make_direct_map()
        ensure_faiss_threads_configured()
        resolved = index._device_for_kind(kind, index._resolve_device(), action="loading")
        index._install(cpu_index, kind=kind, device=resolved, fingerprint=fingerprint)
        return index

    def _resolve_device(self) -> str:
        return resolve_device(self.device)

    def _resolve_kind(self, n_vectors: int, dim: int, device: str) -> str:
        if self.kind != "auto":
            return self.kind
        if device == "cuda":
            return "exact" if n_vectors <= GPU_EXACT_MAX_VECTORS else "ivf"
        if n_vectors <= self.exact_max_vectors:
            return "exact"
        return "hnsw" if hnsw_bytes(n_vectors, dim, self.hnsw_m) <= self.max_hnsw_bytes else "ivf_sq"

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
        if kind == "ivf":
            quantizer = faiss.IndexFlatIP(dim)
            index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = int(self.seed)
            return index
        quantizer = faiss.IndexHNSWFlat(dim, _IVF_SQ_QUANTIZER_M, faiss.METRIC_INNER_PRODUCT)
        ivf = faiss.IndexIVFScalarQuantizer(
            quantizer,
            dim,
            nlist,
            getattr(faiss.ScalarQuantizer, _SQ_TYPES[self.sq_bits]),
            faiss.METRIC_INNER_PRODUCT,
            True,
        )
        ivf.cp.seed = int(self.seed)
        ivf.cp.spherical = True  # unit centroids: the nearest by L2 is the most similar by inner product
        return faiss.IndexRefineFlat(ivf) if self.refine else ivf

    def _add_in_chunks(self, index: Any, array: np.ndarray, *, progress: bool) -> None:
        """Add the rows in chunks, each normalised under cosine (so no full normalised copy is held)."""
        starts = range(0, len(array), _ADD_CHUNK)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc="indexing vectors", unit="chunk")
        for start in starts:
            index.add(self._normalised(array[start : start + _ADD_CHUNK]))

    def _install(self, cpu_index: Any, *, kind: str, device: str, fingerprint: str) -> None:
        """Make ``cpu_index`` (already filled) the live index, on ``device``."""
        self._cpu_index = None
        if device == "cuda" and kind == "ivf_sq":
            self._install_ivf_sq_on_gpu(cpu_index)
        elif device == "cuda":
            self._host_vectors = cpu_index.reconstruct_n(0, cpu_index.ntotal)
            self._index = faiss.index_cpu_to_gpu(_shared_gpu_resources(), 0, cpu_index)
        else:
            self._host_vectors = None
            self._index = cpu_index
        self.kind_ = kind
        self.device_ = device
        self.dim_ = int(cpu_index.d)
        self.fingerprint_ = fingerprint
        self._nlist_ = int(_ivf_of(cpu_index).nlist) if kind in ("ivf", "ivf_sq") else 0
        self._apply_search_params()

    def _install_ivf_sq_on_gpu(self, cpu_index: Any) -> None:
        """The IVF scan on the GPU; the HNSW coarse quantizer and the refinement stay on the CPU.

        FAISS has no GPU HNSW (``allowCpuCoarseQuantizer`` keeps the graph on the CPU) and its
        ``IndexRefineFlat`` re-ranks with a CPU ``IndexFlat``, so a generic ``IndexRefine`` joins the GPU
        scan to the CPU vectors. Not yet run on a GPU.
        """
        options = faiss.GpuClonerOptions()
        options.allowCpuCoarseQuantizer = True
        gpu_ivf = faiss.index_cpu_to_gpu(_shared_gpu_resources(), 0, _ivf_of(cpu_index), options)
        if self.refine:
            flat = faiss.downcast_index(cpu_index.refine_index)
            self._host_vectors = faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * flat.d).reshape(
                flat.ntotal, flat.d
            )
            live = faiss.IndexRefine(gpu_ivf, flat)
            live.referenced_objects = [gpu_ivf, flat, cpu_index]  # keep the parts alive with the wrapper
        else:
            self._host_vectors = cpu_index.reconstruct_n(0, cpu_index.ntotal)
            live = gpu_ivf
        self._index = live
        self._cpu_index = cpu_index

    def _apply_search_params(self) -> None:
        if self.kind_ == "hnsw":
            self._index.hnsw.efSearch = int(self.ef_search)
        elif self.kind_ in ("ivf", "ivf_sq"):
            largest = self._nlist_ if self.device_ == "cpu" else min(self._nlist_, GPU_MAX_K)
            nprobe = min(self._nprobe(), largest)
            ivf = _ivf_of(self._index)
            if self.device_ == "cuda":
                faiss.GpuParameterSpace().set_index_parameter(ivf, "nprobe", nprobe)
            else:
                ivf.nprobe = nprobe
            if self.kind_ == "ivf_sq":
                # The graph must return nprobe lists; a wider candidate list finds the nearest ones.
                _set_quantizer_ef_search(ivf, max(2 * nprobe, _IVF_SQ_QUANTIZER_EF))
                if self.refine:
                    self._index.k_factor = self.refine_factor

    def _nprobe(self) -> int:
        """``nprobe``, or the built kind's default when it is None."""
        if self.nprobe is not None:
            return int(self.nprobe)
        return IVF_SQ_NPROBE if self.kind_ == "ivf_sq" else _IVF_NPROBE

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
        """Exact search (on the decoded codes for ``ivf_sq`` without refine), for the rare rows an
        approximate index leaves short."""
        if self.device_ == "cuda":
            return faiss.knn(queries, self._host_vectors, fetch, metric=faiss.METRIC_INNER_PRODUCT)
        if self.kind_ == "hnsw":
            return faiss.downcast_index(self._index.storage).search(queries, fetch)
        if self.kind_ == "ivf_sq" and self.refine:
            return faiss.downcast_index(self._index.refine_index).search(queries, fetch)
        if self.kind_ in ("ivf", "ivf_sq"):
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
        if self.device_ == "cuda" and self.kind_ == "ivf_sq" and self.refine:
            candidates = int((k + n_excluded) * self.refine_factor)
            if candidates > GPU_MAX_K:
                raise IndexInputError(
                    f"k={k} needs {candidates} candidates at refine_factor={self.refine_factor:g}, but GPU "
                    f"indexes return at most {GPU_MAX_K}; lower k or refine_factor"
                )

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
        # In chunks: a boolean copy of ten million rows would take as much memory as a quarter of them.
        finite_rows = np.concatenate(
            [
                np.isfinite(array[start : start + _ADD_CHUNK]).all(axis=1)
                for start in range(0, len(array), _ADD_CHUNK)
            ]
        )
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
