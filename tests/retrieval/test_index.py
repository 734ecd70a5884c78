"""VectorIndex: exact search against numpy, ANN recall against exact search, exclusion, errors, persistence."""

from __future__ import annotations

import json
import os

import faiss
import numpy as np
import pytest

from recsys.errors import UnknownId, UserError
from recsys.retrieval import (
    EXACT_MAX_VECTORS,
    IndexInputError,
    UnknownIdError,
    VectorIndex,
    clustered_taste_vectors,
    configure_faiss_threads,
    gpu_available,
    tie_tolerant_recall,
    vectors_fingerprint,
)
from recsys.retrieval.threads import THREADS_ENV_VAR

DIM = 16
RECALL_USERS = 20_000
RECALL_QUERIES = 2_000


def unit_rows(array: np.ndarray) -> np.ndarray:
    return array / np.linalg.norm(array, axis=1, keepdims=True)


def brute_force(database: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by numpy: (positions, scores), each (n_queries, k), best first."""
    similarities = queries.astype(np.float64) @ database.astype(np.float64).T
    top = np.argpartition(-similarities, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(
        top, np.argsort(-np.take_along_axis(similarities, top, axis=1), axis=1), axis=1
    )
    return order, np.take_along_axis(similarities, order, axis=1)


def true_scores(database: np.ndarray, queries: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Similarity of each query to each returned row, recomputed from the vectors."""
    return np.einsum("qd,qkd->qk", queries.astype(np.float64), database[positions].astype(np.float64))


@pytest.fixture(scope="module")
def small_vectors() -> np.ndarray:
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((300, DIM)).astype(np.float32)
    vectors[10] = vectors[11]  # exact ties: two users with identical taste
    vectors[12] = vectors[11]
    return vectors


@pytest.fixture(scope="module")
def clustered() -> np.ndarray:
    return clustered_taste_vectors(RECALL_USERS, 64, seed=11)


@pytest.fixture(scope="module")
def clustered_truth(clustered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Query rows and their exact top-10 scores excluding themselves."""
    query_rows = np.random.default_rng(5).choice(RECALL_USERS, RECALL_QUERIES, replace=False)
    positions, scores = brute_force(clustered, clustered[query_rows], 11)
    # Drop the query itself wherever exact search put it (ties can move it off column 0).
    not_self = positions != query_rows[:, None]
    exact = np.stack([row[mask][:10] for row, mask in zip(scores, not_self, strict=True)])
    return query_rows, exact


# ---------------------------------------------------------------- exact search


@pytest.mark.parametrize("metric", ["cosine", "inner_product"])
def test_exact_search_matches_numpy_brute_force(small_vectors: np.ndarray, metric: str) -> None:
    index = VectorIndex(metric=metric, kind="exact").build(small_vectors, [f"u{i}" for i in range(300)])
    database = unit_rows(small_vectors) if metric == "cosine" else small_vectors
    queries = np.random.default_rng(4).standard_normal((40, DIM)).astype(np.float32)
    queries = np.vstack([queries, small_vectors[[11]]])  # a query with tied neighbours (rows 10, 11, 12)
    normalised_queries = unit_rows(queries) if metric == "cosine" else queries

    found = index.search(queries, 7)
    _, expected_scores = brute_force(database, normalised_queries, 7)

    assert found.ids.shape == found.scores.shape == (41, 7)
    assert found.scores.dtype == np.float32
    # Ties may come in any order, so compare the scores, then check every id really has its score.
    np.testing.assert_allclose(found.scores, expected_scores, rtol=0, atol=1e-4)
    positions = np.vectorize(lambda value: int(value[1:]))(found.ids)
    np.testing.assert_allclose(true_scores(database, normalised_queries, positions), found.scores, atol=1e-4)
    assert {"u10", "u11", "u12"} <= set(found.ids[-1, :3])
    assert all(len(set(row)) == 7 for row in found.ids)


def test_cosine_does_not_modify_the_callers_arrays(small_vectors: np.ndarray) -> None:
    vectors = small_vectors.copy()
    queries = vectors[:5].copy()
    index = VectorIndex(kind="exact").build(vectors)
    index.search(queries, 3)
    index.search_ids([0, 1], 3)
    np.testing.assert_array_equal(vectors, small_vectors)
    np.testing.assert_array_equal(queries, small_vectors[:5])


def test_auto_chooses_exact_for_small_sets_and_hnsw_above_the_threshold(small_vectors: np.ndarray) -> None:
    assert VectorIndex(device="cpu").build(small_vectors).kind_ == "exact"
    assert VectorIndex(device="cpu", exact_max_vectors=299).build(small_vectors).kind_ == "hnsw"
    assert EXACT_MAX_VECTORS >= RECALL_USERS  # so the recall tests below force the ANN kinds


# ---------------------------------------------------------------- approximate search


@pytest.mark.parametrize(
    ("params", "expected_kind"),
    [
        ({}, "exact"),  # what auto chooses at 20k users
        ({"exact_max_vectors": 10_000}, "hnsw"),  # auto above its threshold
        ({"kind": "hnsw"}, "hnsw"),
        ({"kind": "ivf"}, "ivf"),
    ],
)
def test_recall_at_10_on_clustered_users(
    clustered: np.ndarray, clustered_truth: tuple[np.ndarray, np.ndarray], params: dict, expected_kind: str
) -> None:
    query_rows, exact_scores = clustered_truth
    index = VectorIndex(device="cpu", **params).build(clustered)
    assert index.kind_ == expected_kind

    found = index.search_ids(query_rows, 10)

    assert not (found.ids == query_rows[:, None]).any()
    assert all(len(set(row)) == 10 for row in found.ids.tolist())
    recomputed = true_scores(clustered, clustered[query_rows], found.ids)
    np.testing.assert_allclose(recomputed, found.scores, atol=1e-4)  # scores are exact similarities
    recall = tie_tolerant_recall(recomputed, exact_scores)
    assert recall >= (1.0 if expected_kind == "exact" else 0.95), f"{expected_kind} recall@10 {recall:.4f}"


def test_ivf_rows_left_short_are_searched_exhaustively() -> None:
    vectors = clustered_taste_vectors(2_000, DIM, n_clusters=20, seed=2)
    # 50 lists, one probed: no list holds k + 1 vectors, so every row comes back short and is redone.
    index = VectorIndex(kind="ivf", nlist=50, nprobe=1).build(vectors)
    invlists = index.faiss_index.invlists
    k = max(invlists.list_size(i) for i in range(50)) + 5
    exact = VectorIndex(kind="exact").build(vectors)

    found = index.search_ids(np.arange(30), k)
    expected = exact.search_ids(np.arange(30), k)

    np.testing.assert_allclose(found.scores, expected.scores, atol=1e-5)
    assert not (found.ids == np.arange(30)[:, None]).any()
    assert all(len(set(row)) == k for row in found.ids.tolist())


def test_set_search_params_changes_a_built_index() -> None:
    vectors = clustered_taste_vectors(2_000, DIM, seed=1)
    index = VectorIndex(kind="hnsw", ef_search=16).build(vectors).set_search_params(ef_search=80)
    assert index.ef_search == 80 and index.faiss_index.hnsw.efSearch == 80
    ivf = VectorIndex(kind="ivf", nlist=20).build(vectors).set_search_params(nprobe=500)
    assert ivf.faiss_index.nprobe == 20  # capped at nlist


# ---------------------------------------------------------------- exclusion and search by id


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivf"])
def test_search_ids_never_returns_the_query_even_with_identical_twins(
    small_vectors: np.ndarray, kind: str
) -> None:
    ids = [f"u{i}" for i in range(300)]
    index = VectorIndex(kind=kind, nlist=4).build(small_vectors, ids)

    found = index.search_ids(["u11", "u10", "u5"], 5)

    for query, row in zip(["u11", "u10", "u5"], found.ids.tolist(), strict=True):
        assert query not in row
    assert {"u10", "u12"} <= set(found.ids[0, :2])  # u11's twins come first, with score 1
    np.testing.assert_allclose(found.scores[0, :2], 1.0, atol=1e-5)


def test_search_ids_accepts_every_id_and_k_up_to_n_minus_one(small_vectors: np.ndarray) -> None:
    index = VectorIndex(kind="exact").build(small_vectors[:20], list(range(100, 120)))
    found = index.search_ids(np.arange(100, 120), 19)
    assert found.ids.shape == (20, 19)
    for query, row in zip(range(100, 120), found.ids.tolist(), strict=True):
        assert sorted(row) == [i for i in range(100, 120) if i != query]


def test_search_exclude_ids_per_query(small_vectors: np.ndarray) -> None:
    index = VectorIndex(kind="exact").build(small_vectors, [f"u{i}" for i in range(300)])
    queries = small_vectors[[11, 11, 11, 40]]
    plain = index.search(queries[:1], 6).ids[0].tolist()

    found = index.search(queries, 3, exclude_ids=["u11", ["u11", "u10"], None, {"u40"}])

    assert "u11" not in found.ids[0]
    assert not {"u10", "u11"} & set(found.ids[1])
    assert found.ids[2].tolist() == plain[:3]
    assert "u40" not in found.ids[3]
    assert found.ids[1].tolist() == [value for value in plain if value not in ("u10", "u11")][:3]


# ---------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def built(small_vectors: np.ndarray) -> VectorIndex:
    return VectorIndex(kind="exact").build(small_vectors, [f"u{i}" for i in range(300)])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda index: index.search(np.zeros((2, DIM + 1), np.float32) + 1, 3), "dimension 17"),
        (lambda index: index.search(np.ones(DIM, np.float32), 3), r"v\[None, :\]"),
        (lambda index: index.search(np.full((1, DIM), np.nan, np.float32), 3), "NaN"),
        (lambda index: index.search(np.full((1, DIM), np.inf, np.float32), 3), "NaN or infinity"),
        (lambda index: index.search(np.zeros((1, DIM), np.float32), 3), "all zeros"),
        (lambda index: index.search(np.ones((1, DIM), np.float32), 0), "k=0"),
        (lambda index: index.search(np.ones((1, DIM), np.float32), 301), "between 1 and 300"),
        (lambda index: index.search(np.ones((1, DIM), np.float32), 2.5), "integer"),
        (
            lambda index: index.search(np.ones((2, DIM), np.float32), 3, exclude_ids=["u1"]),
            "one entry per query",
        ),
        (
            lambda index: index.search(np.ones((1, DIM), np.float32), 300, exclude_ids=["u1"]),
            "between 1 and 299",
        ),
        (lambda index: index.search_ids(["u1"], 300), "between 1 and 299"),
        (lambda index: index.search_ids(["u1"], -1), "k=-1"),
        (lambda index: index.search_ids("u1", 3), r"\[id\]"),
        (lambda index: index.search_ids([], 3), "at least one stored id"),
    ],
)
def test_bad_queries_raise_value_errors_with_clear_messages(built: VectorIndex, call, message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        call(built)
    assert isinstance(raised.value, IndexInputError) and isinstance(raised.value, UserError)


@pytest.mark.parametrize(
    "call",
    [
        lambda index: index.search_ids(["u1", "nobody"], 3),
        lambda index: index.search_ids([1], 3),  # the ids are strings
        lambda index: index.search(np.ones((1, DIM), np.float32), 3, exclude_ids=["nobody"]),
    ],
)
def test_unknown_ids_raise_key_errors(built: VectorIndex, call) -> None:
    with pytest.raises(KeyError, match="not in the index") as raised:
        call(built)
    assert isinstance(raised.value, UnknownIdError) and isinstance(raised.value, UnknownId)
    assert "not in the index" in str(raised.value) and not str(raised.value).startswith("'")


@pytest.mark.parametrize(
    ("vectors", "ids", "message"),
    [
        (np.ones((3, 4, 2)), None, "2-D"),
        (np.ones((0, 4)), None, "at least one row"),
        (np.array([["a", "b"]]), None, "real numbers"),
        (np.array([[1.0, np.nan], [1.0, 2.0]]), None, "row 0 contains NaN"),
        (np.array([[1.0, 2.0], [np.inf, 2.0]]), None, "row 1 contains NaN or infinity"),
        (np.array([[1.0, 2.0], [0.0, 0.0]]), ["a", "b"], "row 1 \\(id 'b'\\) is all zeros"),
        (np.ones((3, 2)), ["a", "b", "a"], "duplicates: 'a' at rows 0 and 2"),
        (np.ones((3, 2)), [1, 2, 1], "duplicates: 1 at rows 0 and 2"),
        (np.ones((3, 2)), ["a", "b"], "2 ids for 3 vectors"),
        (np.ones((2, 2)), ["a", 1], "all strings or all integers"),
        (np.ones((2, 2)), [1.5, 2.5], "all strings or all integers"),
    ],
)
def test_bad_vectors_and_ids_raise_value_errors(vectors, ids, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VectorIndex().build(vectors, ids)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"kind": "annoy"}, "kind must be one of"),
        ({"metric": "l2"}, "metric must be one of"),
        ({"device": "gpu"}, "device must be one of"),
        ({"hnsw_m": 0}, "hnsw_m must be a positive integer"),
        ({"ef_search": 1.5}, "ef_search must be a positive integer"),
        ({"nlist": -3}, "nlist must be a positive integer"),
        ({"nprobe": True}, "nprobe must be a positive integer"),
    ],
)
def test_bad_parameters_raise_value_errors(params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VectorIndex(**params)


def test_ivf_with_more_lists_than_vectors_is_rejected() -> None:
    with pytest.raises(ValueError, match="nlist=50 is larger than the 10 vectors"):
        VectorIndex(kind="ivf", nlist=50).build(np.random.default_rng(0).standard_normal((10, 4)))


def test_searching_an_unbuilt_index_says_what_to_do() -> None:
    with pytest.raises(ValueError, match="call build"):
        VectorIndex().search(np.ones((1, 4)), 1)


def test_integer_ids_of_any_numpy_type(small_vectors: np.ndarray) -> None:
    index = VectorIndex().build(small_vectors[:10], np.arange(10, 20, dtype=np.uint16))
    found = index.search_ids([np.int32(12), 13], 2)
    assert found.ids.dtype == np.int64
    assert 12 in index and 99 not in index and "12" not in index


# ---------------------------------------------------------------- persistence


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivf"])
def test_save_load_round_trip_gives_identical_results_without_rebuilding(
    tmp_path, monkeypatch, clustered: np.ndarray, kind: str
) -> None:
    vectors = clustered[:3_000]
    ids = [f"user-{i}" for i in range(3_000)]
    index = VectorIndex(kind=kind, ef_search=48, nprobe=8).build(vectors, ids)
    queries = clustered[3_000:3_200]
    before = index.search(queries, 10)
    before_by_id = index.search_ids(ids[:50], 10)

    path = index.save(tmp_path / "users.faiss")

    def no_rebuild(*args, **kwargs):
        raise AssertionError("load must not rebuild the index")

    monkeypatch.setattr(VectorIndex, "build", no_rebuild)
    monkeypatch.setattr(VectorIndex, "_new_cpu_index", no_rebuild)
    monkeypatch.setattr(VectorIndex, "_add_in_chunks", no_rebuild)
    loaded = VectorIndex.load(path, device="cpu")

    after = loaded.search(queries, 10)
    after_by_id = loaded.search_ids(ids[:50], 10)
    np.testing.assert_array_equal(after.ids, before.ids)
    np.testing.assert_array_equal(after.scores, before.scores)
    np.testing.assert_array_equal(after_by_id.ids, before_by_id.ids)
    assert loaded.kind_ == kind and loaded.get_params() == {**index.get_params(), "device": "cpu"}
    assert loaded.fingerprint_ == index.fingerprint_ == vectors_fingerprint(vectors)
    assert list(loaded.ids) == ids
    assert sorted(os.listdir(tmp_path)) == ["users.faiss", "users.faiss.json"]  # no temporary files left


def test_sidecar_records_what_the_index_is(tmp_path, small_vectors: np.ndarray) -> None:
    index = VectorIndex(metric="inner_product", kind="exact").build(small_vectors[:5], [7, 8, 9, 10, 11])
    index.save(tmp_path / "x.faiss")
    sidecar = json.loads((tmp_path / "x.faiss.json").read_text())
    assert sidecar["ids"] == [7, 8, 9, 10, 11] and sidecar["id_type"] == "int"
    assert sidecar["metric"] == "inner_product" and sidecar["kind"] == "exact"
    assert sidecar["dimension"] == DIM and sidecar["n_vectors"] == 5
    assert sidecar["vectors_sha256"] == vectors_fingerprint(small_vectors[:5])
    assert sidecar["params"]["hnsw_m"] == index.hnsw_m
    loaded = VectorIndex.load(tmp_path / "x.faiss")
    assert loaded.search_ids([7], 2).ids.dtype == np.int64


def test_load_refuses_a_mismatched_or_missing_pair(tmp_path, small_vectors: np.ndarray) -> None:
    VectorIndex(kind="exact").build(small_vectors[:5]).save(tmp_path / "a.faiss")
    VectorIndex(kind="exact").build(small_vectors[:6]).save(tmp_path / "b.faiss")
    os.replace(tmp_path / "b.faiss", tmp_path / "a.faiss")  # index file from another save
    with pytest.raises(ValueError, match="does not match its sidecar"):
        VectorIndex.load(tmp_path / "a.faiss")
    with pytest.raises(FileNotFoundError, match="b.faiss"):
        VectorIndex.load(tmp_path / "b.faiss")
    (tmp_path / "c.faiss").write_bytes(b"")
    (tmp_path / "c.faiss.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a readable JSON sidecar"):
        VectorIndex.load(tmp_path / "c.faiss")


# ---------------------------------------------------------------- devices and threads


@pytest.mark.skipif(gpu_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_a_clear_value_error(small_vectors: np.ndarray) -> None:
    with pytest.raises(ValueError, match="device='cuda' was requested but FAISS sees no GPU"):
        VectorIndex(device="cuda").build(small_vectors)
    assert VectorIndex(device="auto").build(small_vectors).device_ == "cpu"


@pytest.mark.skipif(not gpu_available(), reason="needs the FAISS GPU build and a CUDA device")
@pytest.mark.parametrize("kind", ["exact", "ivf"])
def test_gpu_results_match_cpu(tmp_path, clustered: np.ndarray, kind: str) -> None:
    vectors = clustered[:5_000]
    cpu = VectorIndex(kind=kind, device="cpu", nprobe=64).build(vectors)
    gpu = VectorIndex(kind=kind, device="cuda", nprobe=64).build(vectors)
    assert gpu.device_ == "cuda"
    queries = clustered[5_000:5_500]
    np.testing.assert_allclose(gpu.search(queries, 10).scores, cpu.search(queries, 10).scores, atol=1e-4)
    by_id = gpu.search_ids(np.arange(100), 10)
    assert not (by_id.ids == np.arange(100)[:, None]).any()
    reloaded = VectorIndex.load(gpu.save(tmp_path / "gpu.faiss"), device="cpu")
    np.testing.assert_allclose(reloaded.search(queries, 10).scores, cpu.search(queries, 10).scores, atol=1e-4)


@pytest.mark.skipif(not gpu_available(), reason="needs the FAISS GPU build and a CUDA device")
def test_hnsw_asked_for_on_cuda_runs_on_the_cpu_with_a_warning(small_vectors: np.ndarray) -> None:
    with pytest.warns(RuntimeWarning, match="no GPU HNSW"):
        index = VectorIndex(kind="hnsw", device="cuda").build(small_vectors)
    assert index.device_ == "cpu"


def test_thread_count_comes_from_the_environment(monkeypatch) -> None:
    previous = faiss.omp_get_max_threads()
    try:
        monkeypatch.setenv(THREADS_ENV_VAR, "1")
        assert configure_faiss_threads() == 1 and faiss.omp_get_max_threads() == 1
        monkeypatch.setenv(THREADS_ENV_VAR, "many")
        with pytest.raises(ValueError, match="RECSYS_FAISS_THREADS"):
            configure_faiss_threads()
        with pytest.raises(ValueError, match="positive integer"):
            configure_faiss_threads(0)
    finally:
        configure_faiss_threads(previous)


# ---------------------------------------------------------------- the recall measure itself


def test_tie_tolerant_recall_by_hand() -> None:
    exact = np.array([[0.9, 0.8, 0.7], [0.5, 0.5, 0.5]])
    # Row 0: 0.9 and 0.7 found, 0.6 is a miss. Row 1: all ties with the 3rd exact score count.
    found = np.array([[0.9, 0.7, 0.6], [0.5, 0.5 - 1e-7, -np.inf]])
    assert tie_tolerant_recall(found, exact) == pytest.approx(4 / 6)
    assert tie_tolerant_recall(exact, exact) == 1.0
    assert tie_tolerant_recall(found, exact, epsilon=0.11) == pytest.approx(5 / 6)
    with pytest.raises(ValueError, match="same"):
        tie_tolerant_recall(found[:, :2], exact)


def test_clustered_taste_vectors_are_seeded_unit_vectors() -> None:
    first = clustered_taste_vectors(500, 8, seed=4)
    assert first.shape == (500, 8) and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(first, clustered_taste_vectors(500, 8, seed=4))
    assert not np.array_equal(first, clustered_taste_vectors(500, 8, seed=5))
