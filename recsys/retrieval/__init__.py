"""Finding similar vectors (e.g. people with similar taste) with FAISS: exact, HNSW or IVF, CPU or GPU.

The index works on row positions; :mod:`recsys.retrieval.similar` maps them to the dataset's user and image ids.
"""

from recsys.retrieval.evaluation import clustered_taste_vectors, tie_tolerant_recall
from recsys.retrieval.index import (
    EXACT_MAX_VECTORS,
    GPU_EXACT_MAX_VECTORS,
    IndexInputError,
    SearchResult,
    VectorIndex,
    default_nlist,
    gpu_available,
    vectors_fingerprint,
)
from recsys.retrieval.index_io import load_index, save_index

__all__ = [
    "EXACT_MAX_VECTORS",
    "GPU_EXACT_MAX_VECTORS",
    "IndexInputError",
    "SearchResult",
    "VectorIndex",
    "clustered_taste_vectors",
    "default_nlist",
    "gpu_available",
    "load_index",
    "save_index",
    "tie_tolerant_recall",
    "vectors_fingerprint",
]
