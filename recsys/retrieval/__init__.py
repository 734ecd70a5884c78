"""Finding similar vectors (e.g. people with similar taste) with FAISS: exact, HNSW, IVF or compressed IVF
(scalar-quantised codes, ``ivf_sq``), CPU or GPU.

The index works on row positions; :mod:`recsys.retrieval.similar` maps them to the dataset's user and image ids.
"""

from recsys.retrieval.evaluation import clustered_taste_vectors, tie_tolerant_recall
from recsys.retrieval.index import (
    EXACT_MAX_VECTORS,
    GPU_EXACT_MAX_VECTORS,
    IVF_SQ_NPROBE,
    IVF_SQ_REFINE_FACTOR,
    MAX_HNSW_BYTES,
    IndexInputError,
    SearchResult,
    VectorIndex,
    default_nlist,
    gpu_available,
    hnsw_bytes,
    vectors_fingerprint,
)
from recsys.retrieval.index_io import load_index, save_index

__all__ = [
    "EXACT_MAX_VECTORS",
    "GPU_EXACT_MAX_VECTORS",
    "IVF_SQ_NPROBE",
    "IVF_SQ_REFINE_FACTOR",
    "MAX_HNSW_BYTES",
    "IndexInputError",
    "SearchResult",
    "VectorIndex",
    "clustered_taste_vectors",
    "default_nlist",
    "gpu_available",
    "hnsw_bytes",
    "load_index",
    "save_index",
    "tie_tolerant_recall",
    "vectors_fingerprint",
]
