"""Finding similar vectors (e.g. people with similar taste) with FAISS: exact, HNSW or IVF, CPU or GPU."""

from recsys.retrieval.evaluation import clustered_taste_vectors, tie_tolerant_recall
from recsys.retrieval.index import (
    EXACT_MAX_VECTORS,
    GPU_EXACT_MAX_VECTORS,
    IndexInputError,
    SearchResult,
    UnknownIdError,
    VectorIndex,
    default_nlist,
    gpu_available,
    vectors_fingerprint,
)
from recsys.retrieval.threads import configure_faiss_threads

__all__ = [
    "EXACT_MAX_VECTORS",
    "GPU_EXACT_MAX_VECTORS",
    "IndexInputError",
    "SearchResult",
    "UnknownIdError",
    "VectorIndex",
    "clustered_taste_vectors",
    "configure_faiss_threads",
    "default_nlist",
    "gpu_available",
    "tie_tolerant_recall",
    "vectors_fingerprint",
]
