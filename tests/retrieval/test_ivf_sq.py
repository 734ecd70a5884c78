"""The compressed kind ``ivf_sq``: recall and scores against brute force, the automatic choice, persistence."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest

from recsys.retrieval import (
    MAX_HNSW_BYTES,
    IndexInputError,
    VectorIndex,
    clustered_taste_vectors,
    hnsw_bytes,
    load_index,
    save_index,
    tie_tolerant_recall,
)
from recsys.retrieval.index_io import FORMAT_VERSION, sidecar_path

N_USERS = 30_000
N_QUERIES = 1_000
DIM = 32


def unit_rows(array: np.ndarray) -> np.ndarray:
    return array / np.linalg.norm(array, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def users() -> np.ndarray:
    return clustered_taste_vectors(N_USERS, DIM, seed=21)


@pytest.fixture(scope="module")
def truth(users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Query rows and their exact top-10 similarities, the query itself left out, by numpy."""
    rows = np.random.default_rng(22).choice(N_USERS, N_QUERIES, replace=False)
    similarities = users[rows].astype(np.float64) @ users.astype(np.float64).T
    similarities[np.arange(N_QUERIES), rows] = -np.inf
    return rows, -np.sort(-similarities, axis=1)[:, :10]


def recomputed(users: np.ndarray, rows: np.ndarray, positions: np.ndarray) -> np.ndarray:
    return np.einsum("qd,qkd->qk", users[rows].astype(np.float64), users[positions].astype(np.float64))


@pytest.fixture(scope="module")
def refined(users: np.ndarray) -> VectorIndex:
    return VectorIndex(kind="ivf_sq").build(users)


@pytest.fixture(scope="module")
def codes_only(users: np.ndarray) -> VectorIndex:
    return VectorIndex(kind="ivf_sq", refine=False).build(users)


def test_refined_recall_is_high_and_scores_are_exact(refined: VectorIndex, users, truth) -> None:
    rows, exact = truth
    found = refined.search_positions(rows, 10)

    true_scores = recomputed(users, rows, found.positions)
    assert refined.kind_ == "ivf_sq" and refined.scores_are_exact
    np.testing.assert_allclose(found.scores, true_scores, atol=1e-5)
    assert (np.diff(found.scores, axis=1) <= 0).all()  # most similar first
    assert not (found.positions == rows[:, None]).any()
    assert all(len(set(row)) == 10 for row in found.positions.tolist())
    assert tie_tolerant_recall(true_scores, exact) >= 0.97


def test_unrefined_scores_are_approximate_and_recall_lower(
    codes_only: VectorIndex, refined: VectorIndex, users, truth
) -> None:
    rows, exact = truth
    found = codes_only.search_positions(rows, 10)

    true_scores = recomputed(users, rows, found.positions)
    error = np.abs(found.scores - true_scores)
    assert not codes_only.scores_are_exact
    assert 1e-5 < error.max() < 0.02  # similarities to the 8-bit codes: close, not exact
    assert not (found.positions == rows[:, None]).any()
    recall = tie_tolerant_recall(true_scores, exact)
    refined_recall = tie_tolerant_recall(
        recomputed(users, rows, refined.search_positions(rows, 10).positions), exact
    )
    assert 0.85 <= recall <= refined_recall


def test_more_candidates_and_lists_do_not_lower_recall(users, truth) -> None:
    rows, exact = truth
    index = VectorIndex(kind="ivf_sq", nprobe=2, refine_factor=1).build(users)

    def recall() -> float:
        return tie_tolerant_recall(recomputed(users, rows, index.search_positions(rows, 10).positions), exact)

    narrow = recall()
    index.set_search_params(refine_factor=4)
    assert index.faiss_index.k_factor == 4
    wider = recall()
    index.set_search_params(nprobe=64)
    assert faiss.downcast_index(index.faiss_index.base_index).nprobe == 64
    widest = recall()
    assert narrow <= wider <= widest and widest >= 0.99 and narrow < widest


def test_fewer_bits_need_more_candidates(users, truth) -> None:
    rows, exact = truth
    four_bits = VectorIndex(kind="ivf_sq", sq_bits=4, refine=False).build(users)
    four_refined = VectorIndex(kind="ivf_sq", sq_bits=4, refine_factor=8).build(users)
    assert four_bits.faiss_index.code_size == DIM // 2  # 4 bits a dimension

    coarse = tie_tolerant_recall(
        recomputed(users, rows, four_bits.search_positions(rows, 10).positions), exact
    )
    rescued = tie_tolerant_recall(
        recomputed(users, rows, four_refined.search_positions(rows, 10).positions), exact
    )
    assert coarse < 0.9 < 0.97 <= rescued


def test_rows_left_short_are_searched_exhaustively() -> None:
    vectors = clustered_taste_vectors(2_000, 16, n_clusters=20, seed=2)
    # 50 lists, one visited: no list holds enough candidates, so every row is searched again in full.
    for refine in (True, False):
        index = VectorIndex(kind="ivf_sq", nlist=50, nprobe=1, refine=refine).build(vectors)
        ivf = faiss.downcast_index(index.faiss_index.base_index) if refine else index.faiss_index
        k = max(ivf.invlists.list_size(i) for i in range(50)) + 5
        found = index.search_positions(np.arange(30), k)
        expected = VectorIndex(kind="exact").build(vectors).search_positions(np.arange(30), k)

        atol = 1e-5 if refine else 0.02  # without refine: exhaustive over the decoded codes
        np.testing.assert_allclose(found.scores, expected.scores, atol=atol)
        assert not (found.positions == np.arange(30)[:, None]).any()
        assert all(len(set(row)) == k for row in found.positions.tolist())


def test_inner_product_metric_matches_brute_force_on_unnormalised_vectors() -> None:
    rng = np.random.default_rng(9)
    vectors = (clustered_taste_vectors(5_000, 16, seed=9) * rng.uniform(0.5, 2.0, (5_000, 1))).astype(
        np.float32
    )
    queries = rng.standard_normal((50, 16)).astype(np.float32)
    index = VectorIndex(metric="inner_product", kind="ivf_sq", nprobe=200).build(vectors)

    found = index.search(queries, 5)

    expected = -np.sort(-(queries.astype(np.float64) @ vectors.T.astype(np.float64)), axis=1)[:, :5]
    np.testing.assert_allclose(found.scores, expected, atol=1e-4)


def test_building_leaves_the_callers_array_unchanged(users: np.ndarray) -> None:
    vectors = users[:3_000] * 3.0  # not unit length: cosine normalises a copy, chunk by chunk
    before = vectors.copy()
    index = VectorIndex(kind="ivf_sq").build(vectors)
    np.testing.assert_array_equal(vectors, before)
    found = index.search(vectors[:5], 1)
    np.testing.assert_allclose(found.scores[:, 0], 1.0, atol=1e-5)  # each finds itself, at cosine 1


# ---------------------------------------------------------------- the automatic choice


def test_auto_builds_ivf_sq_when_hnsw_would_exceed_its_memory_budget() -> None:
    vectors = clustered_taste_vectors(400, 16, seed=3)
    graph_bytes = hnsw_bytes(400, 16, 48)
    assert graph_bytes == 400 * (4 * 16 + 8 * 48)

    at_budget = VectorIndex(device="cpu", exact_max_vectors=100, max_hnsw_bytes=graph_bytes).build(vectors)
    over_budget = VectorIndex(device="cpu", exact_max_vectors=100, max_hnsw_bytes=graph_bytes - 1).build(
        vectors
    )
    fewer_links = VectorIndex(device="cpu", exact_max_vectors=100, max_hnsw_bytes=graph_bytes - 1, hnsw_m=8)

    assert at_budget.kind_ == "hnsw" and over_budget.kind_ == "ivf_sq"
    assert fewer_links.build(vectors).kind_ == "hnsw"  # a smaller graph fits again
    assert VectorIndex(device="cpu", max_hnsw_bytes=1).build(vectors).kind_ == "exact"  # small sets: exact


def test_default_budget_keeps_hnsw_at_a_million_64_d_vectors_and_compresses_ten_million() -> None:
    assert hnsw_bytes(1_000_000, 64, 48) <= MAX_HNSW_BYTES < hnsw_bytes(10_000_000, 64, 48)


# ---------------------------------------------------------------- persistence and errors


def test_sidecar_of_an_ivf_sq_index(tmp_path, users: np.ndarray) -> None:
    index = VectorIndex(kind="ivf_sq", sq_bits=6, refine_factor=3).build(users[:2_000])
    path = save_index(index, tmp_path / "users.faiss")
    sidecar = json.loads(sidecar_path(path).read_text())
    assert sidecar["format_version"] == FORMAT_VERSION == 3 and sidecar["kind"] == "ivf_sq"
    assert sidecar["params"]["sq_bits"] == 6 and sidecar["params"]["refine"] is True
    assert sidecar["params"]["refine_factor"] == 3.0
    loaded = load_index(path)
    assert loaded.faiss_index.k_factor == 3.0
    assert faiss.downcast_index(loaded.faiss_index.base_index).sq.qtype == faiss.ScalarQuantizer.QT_6bit


def test_a_version_2_sidecar_still_loads(tmp_path, users: np.ndarray) -> None:
    index = VectorIndex(kind="hnsw").build(users[:500])
    path = save_index(index, tmp_path / "old.faiss")
    sidecar = sidecar_path(path)
    metadata = json.loads(sidecar.read_text())
    for name in ("max_hnsw_bytes", "sq_bits", "refine", "refine_factor"):
        del metadata["params"][name]
    metadata["params"]["nprobe"] = 32  # version 2 stored the IVF default as a number
    sidecar.write_text(json.dumps({**metadata, "format_version": 2}))

    loaded = load_index(path)

    assert loaded.kind_ == "hnsw" and loaded.sq_bits == 8 and loaded.nprobe == 32
    np.testing.assert_array_equal(
        loaded.search_positions([0, 1], 5).positions, index.search_positions([0, 1], 5).positions
    )


@pytest.mark.parametrize(
    ("saved", "params", "message"),
    [
        ({"kind": "exact"}, {"kind": "ivf_sq"}, "IndexFlat.*not the IndexRefineFlat of an 'ivf_sq' index"),
        ({"kind": "ivf_sq", "refine": False}, {"kind": "ivf_sq", "refine": True}, "not the IndexRefineFlat"),
        ({"kind": "ivf_sq"}, {"kind": "ivf_sq", "refine": False}, "IndexRefineFlat.*not the inner-product"),
        ({"kind": "ivf_sq"}, {"kind": "ivf"}, "not the inner-product IndexIVFFlat"),
    ],
)
def test_a_sidecar_that_does_not_match_its_index_is_refused(
    tmp_path, users: np.ndarray, saved: dict, params: dict, message: str
) -> None:
    path = save_index(VectorIndex(**saved).build(users[:1_000]), tmp_path / "x.faiss")
    sidecar = sidecar_path(path)
    metadata = json.loads(sidecar.read_text())
    metadata["kind"] = params["kind"]
    metadata["params"].update(params)
    sidecar.write_text(json.dumps(metadata))
    with pytest.raises(IndexInputError, match=message) as raised:
        load_index(path)
    assert "\n" not in str(raised.value) and "x.faiss" in str(raised.value)


def test_bad_refine_factor_on_a_built_index_is_one_line(refined: VectorIndex) -> None:
    with pytest.raises(
        IndexInputError, match="refine_factor must be a number from 1 to 1000, got 0"
    ) as raised:
        refined.set_search_params(refine_factor=0)
    assert "\n" not in str(raised.value)
    assert refined.refine_factor == 2.0  # unchanged


def test_a_nan_after_the_first_chunk_is_found() -> None:
    vectors = np.ones((100_003, 2), np.float32)
    vectors[100_001, 1] = np.nan
    with pytest.raises(IndexInputError, match="row 100001 contains NaN"):
        VectorIndex(kind="ivf_sq").build(vectors)
