"""Checking approximate search against exact search, and simulated taste vectors to check it on.

Both are used by ``tests/retrieval`` and ``benchmarks/retrieval.py``.
"""

from __future__ import annotations

import numpy as np

#: Scores within this much of the k-th exact score count as ties (float32 inner products of unit vectors).
DEFAULT_TIE_EPSILON = 1e-5


def tie_tolerant_recall(
    found_scores: np.ndarray, exact_scores: np.ndarray, *, epsilon: float = DEFAULT_TIE_EPSILON
) -> float:
    """Recall@k of approximate neighbours, counting ties with the k-th exact neighbour as correct.

    A found neighbour is correct when its true similarity to the query is at least the k-th exact
    similarity minus ``epsilon``. Unlike intersecting id sets, this does not penalise an index for
    returning a different one of several equally similar vectors (the idea behind FAISS's
    ``contrib.evaluation`` checks).

    Args:
        found_scores: (n_queries, k) true similarities of the neighbours an index returned, each
            neighbour distinct (recompute them from the vectors rather than trusting the index);
            use ``-inf`` for a missing neighbour.
        exact_scores: (n_queries, k) exact top-k similarities, best first (k-th in the last column).
        epsilon: tolerance for float rounding, >= 0.

    Returns:
        Fraction of the n_queries * k found neighbours that are correct, in [0, 1].

    Raises:
        ValueError: shapes differ or are not 2-D, or epsilon is negative.
    """
    found = np.asarray(found_scores, dtype=np.float64)
    exact = np.asarray(exact_scores, dtype=np.float64)
    if found.ndim != 2 or found.shape != exact.shape:
        raise ValueError(
            f"found_scores {found.shape} and exact_scores {exact.shape} must be the same (n_queries, k)"
        )
    if epsilon < 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}")
    if found.size == 0:
        raise ValueError("need at least one query and k >= 1")
    kth_exact = exact[:, -1:]
    return float(np.mean(found >= kth_exact - epsilon))


def clustered_taste_vectors(
    n_users: int,
    dim: int,
    *,
    n_clusters: int = 300,
    noise: float = 0.5,
    spectrum_decay: float = 0.5,
    seed: int = 0,
) -> np.ndarray:
    """Simulated unit-norm taste vectors: users gather around a few hundred taste groups.

    Each group has a random unit centre; group sizes are uneven (Dirichlet(2) shares). A user is
    their group's centre plus noise, then L2-normalised. The noise is anisotropic, as in learned
    embeddings: in a random orthonormal basis, direction j has standard deviation proportional to
    (1 + j) ** -spectrum_decay, and the total noise norm is about ``noise`` (the centre's norm is 1).

    Args:
        n_users: number of vectors n.
        dim: dimension d.
        n_clusters: number of taste groups.
        noise: expected norm of a user's deviation from the group centre.
        spectrum_decay: 0 gives isotropic noise (hardest for approximate search); larger values
            concentrate the noise in fewer directions.
        seed: random seed; the same arguments always give the same vectors.

    Returns:
        (n_users, dim) float32 array of unit vectors.
    """
    if n_users < 1 or dim < 1 or n_clusters < 1:
        raise ValueError(f"n_users, dim and n_clusters must be >= 1, got {n_users}, {dim}, {n_clusters}")
    if noise < 0 or spectrum_decay < 0:
        raise ValueError(f"noise and spectrum_decay must be >= 0, got {noise}, {spectrum_decay}")
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    shares = rng.dirichlet(np.full(n_clusters, 2.0))
    groups = rng.choice(n_clusters, size=n_users, p=shares)
    scale = (1.0 + np.arange(dim)) ** -spectrum_decay
    scale *= noise / np.linalg.norm(scale)  # E|noise|^2 = sum(scale^2) = noise^2
    basis = np.linalg.qr(rng.standard_normal((dim, dim)))[0]
    mixing = (scale[:, None] * basis.T).astype(np.float32)  # rows: scaled basis directions
    vectors = np.empty((n_users, dim), dtype=np.float32)
    chunk = 131_072  # bounds the temporary noise array
    for start in range(0, n_users, chunk):
        stop = min(start + chunk, n_users)
        deviation = rng.standard_normal((stop - start, dim), dtype=np.float32) @ mixing
        vectors[start:stop] = centres[groups[start:stop]] + deviation
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors
