"""VectorIndex: exact search against numpy, ANN recall against exact search, exclusion, errors, persistence."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from recsys.errors import UserError
from recsys.retrieval import (
    EXACT_MAX_VECTORS,
    IndexInputError,
    SearchResult,
    VectorIndex,
    clustered_taste_vectors,
    gpu_available,
    load_index,
    save_index,
    tie_tolerant_recall,
    vectors_fingerprint,
)
from recsys.retrieval.index_io import FORMAT_VERSION, sidecar_path

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
    index = VectorIndex(metric=metric, kind="exact").build(small_vectors)
    database = unit_rows(small_vectors) if metric == "cosine" else small_vectors
    queries = np.random.default_rng(4).standard_normal((40, DIM)).astype(np.float32)
    queries = np.vstack([queries, small_vectors[[11]]])  # a query with tied neighbours (rows 10, 11, 12)
    normalised_queries = unit_rows(queries) if metric == "cosine" else queries

    found = index.search(queries, 7)
    _, expected_scores = brute_force(database, normalised_queries, 7)

    assert isinstance(found, SearchResult)
    assert found.positions.shape == found.scores.shape == (41, 7)
    assert found.positions.dtype == np.int64 and found.scores.dtype == np.float32
    # Ties may come in any order, so compare the scores, then check every position really has its score.
    np.testing.assert_allclose(found.scores, expected_scores, rtol=0, atol=1e-4)
    np.testing.assert_allclose(
        true_scores(database, normalised_queries, found.positions), found.scores, atol=1e-4
    )
    assert {10, 11, 12} <= set(found.positions[-1, :3].tolist())
    assert all(len(set(row)) == 7 for row in found.positions.tolist())


def test_knn_usage_inner_product_with_zero_rows_matches_brute_force() -> None:
    """The call UserKNN makes: inner product, exact, float32 taste vectors of which some are all zeros."""
    rng = np.random.default_rng(8)
    vectors = unit_rows(rng.standard_normal((50, DIM))).astype(np.float32)
    vectors[[3, 17]] = 0.0  # users whose taste carries no signal
    queries = np.vstack([vectors[:5], np.zeros((1, DIM), np.float32)])

    positions, scores = VectorIndex(metric="inner_product", kind="exact").build(vectors).search(queries, 10)

    _, expected = brute_force(vectors, queries, 10)
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    np.testing.assert_allclose(true_scores(vectors, queries, positions), scores, atol=1e-5)
    assert (positions[[0, 1, 2, 4], 0] == [0, 1, 2, 4]).all()  # a unit vector is its own best match
    np.testing.assert_array_equal(scores[5], 0.0)  # a zero query scores 0 against everything


def test_cosine_zero_vectors_have_similarity_zero_to_everything(small_vectors: np.ndarray) -> None:
    vectors = small_vectors[:20].copy()
    vectors[5] = 0.0
    index = VectorIndex(kind="exact").build(vectors)
    everything = index.search(np.zeros((1, DIM), np.float32), 20)
    np.testing.assert_array_equal(everything.scores, 0.0)
    assert sorted(everything.positions[0].tolist()) == list(range(20))
    by_row = index.search_positions([5], 19)
    np.testing.assert_array_equal(by_row.scores, 0.0)
    found = index.search(vectors[:4], 19)  # the zero row scores exactly 0 for any query
    for row in range(4):
        np.testing.assert_array_equal(found.scores[row][found.positions[row] == 5], 0.0)


def test_cosine_does_not_modify_the_callers_arrays(small_vectors: np.ndarray) -> None:
    vectors = small_vectors.copy()
    queries = vectors[:5].copy()
    index = VectorIndex(kind="exact").build(vectors)
    index.search(queries, 3)
    index.search_positions([0, 1], 3)
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
        ({"kind": "ivf_sq"}, "ivf_sq"),  # refined: exact scores
    ],
)
def test_recall_at_10_on_clustered_users(
    clustered: np.ndarray, clustered_truth: tuple[np.ndarray, np.ndarray], params: dict, expected_kind: str
) -> None:
    query_rows, exact_scores = clustered_truth
    index = VectorIndex(device="cpu", **params).build(clustered)
    assert index.kind_ == expected_kind

    found = index.search_positions(query_rows, 10)

    assert not (found.positions == query_rows[:, None]).any()
    assert all(len(set(row)) == 10 for row in found.positions.tolist())
    recomputed = true_scores(clustered, clustered[query_rows], found.positions)
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

    found = index.search_positions(np.arange(30), k)
    expected = exact.search_positions(np.arange(30), k)

    np.testing.assert_allclose(found.scores, expected.scores, atol=1e-5)
    assert not (found.positions == np.arange(30)[:, None]).any()
    assert all(len(set(row)) == k for row in found.positions.tolist())
    assert (found.positions >= 0).all()


def test_set_search_params_changes_a_built_index() -> None:
    vectors = clustered_taste_vectors(2_000, DIM, seed=1)
    index = VectorIndex(kind="hnsw", ef_search=16).build(vectors).set_search_params(ef_search=80)
    assert index.ef_search == 80 and index.faiss_index.hnsw.efSearch == 80
    ivf = VectorIndex(kind="ivf", nlist=20).build(vectors).set_search_params(nprobe=500)
    assert ivf.faiss_index.nprobe == 20  # capped at nlist


# ---------------------------------------------------------------- exclusion and search by position


@pytest.mark.parametrize("kind", ["exact", "hnsw", "ivf", "ivf_sq"])
def test_search_positions_never_returns_the_query_even_with_identical_twins(
    small_vectors: np.ndarray, kind: str
) -> None:
    index = VectorIndex(kind=kind, nlist=4).build(small_vectors)

    found = index.search_positions([11, 10, 5], 5)

    for query, row in zip([11, 10, 5], found.positions.tolist(), strict=True):
        assert query not in row
    assert {10, 12} <= set(found.positions[0, :2].tolist())  # row 11's twins come first, with score 1
    np.testing.assert_allclose(found.scores[0, :2], 1.0, atol=1e-5)


def test_search_positions_accepts_every_position_and_k_up_to_n_minus_one(small_vectors: np.ndarray) -> None:
    index = VectorIndex(kind="exact").build(small_vectors[:20])
    found = index.search_positions(np.arange(20, dtype=np.uint16), 19)  # any integer dtype
    assert found.positions.shape == (20, 19)
    for query, row in enumerate(found.positions.tolist()):
        assert sorted(row) == [i for i in range(20) if i != query]


def test_search_exclude_per_query(small_vectors: np.ndarray) -> None:
    index = VectorIndex(kind="exact").build(small_vectors)
    queries = small_vectors[[11, 11, 11, 40]]
    plain = index.search(queries[:1], 6).positions[0].tolist()

    found = index.search(queries, 3, exclude=[[11, -1], [11, 10], [-1, -1], [40, 40]])

    assert 11 not in found.positions[0]
    assert not {10, 11} & set(found.positions[1].tolist())
    assert found.positions[2].tolist() == plain[:3]
    assert 40 not in found.positions[3]
    assert found.positions[1].tolist() == [value for value in plain if value not in (10, 11)][:3]
    one_each = index.search(queries, 3, exclude=np.array([11, 11, -1, 40]))  # (n_queries,): one each
    np.testing.assert_array_equal(one_each.positions[[0, 2, 3]], found.positions[[0, 2, 3]])
    # k may reach n minus the excluded positions, a repeat counting once
    assert index.search(queries[3:], 299, exclude=[[40, 40]]).positions.shape == (1, 299)


def test_search_exclude_many_per_query_matches_brute_force() -> None:
    rng = np.random.default_rng(6)
    vectors = rng.standard_normal((300, DIM)).astype(np.float32)  # no ties
    index = VectorIndex(kind="exact").build(vectors)
    queries = rng.standard_normal((5, DIM)).astype(np.float32)
    order, _ = brute_force(unit_rows(vectors), unit_rows(queries), 40)
    exclude = order[:, :30]  # the 30 best of each query, more than the direct comparison handles

    found = index.search(queries, 10, exclude=exclude)

    np.testing.assert_array_equal(found.positions, order[:, 30:40])


# ---------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def built(small_vectors: np.ndarray) -> VectorIndex:
    return VectorIndex(kind="exact").build(small_vectors)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda index: index.search(np.zeros((2, DIM + 1), np.float32) + 1, 3), "dimension 17"),
        (lambda index: index.search(np.ones(DIM, np.float32), 3), r"v\[None, :\]"),
        (lambda index: index.search(np.full((1, DIM), np.nan, np.float32), 3), "NaN"),
        (lambda index: index.search(np.full((1, DIM), np.inf, np.float32), 3), "NaN or infinity"),
        (lambda index: index.search(np.ones((1, DIM), np.float32), 0), "k=0"),
        (lambda index: index.search(np.ones((1, DIM), np.float32), 301), "between 1 and 300"),
        (lambda index: index.search(np.ones((1, DIM), np.float32), 2.5), "integer"),
        (lambda index: index.search(np.ones((2, DIM), np.float32), 3, exclude=[1]), "one row per query"),
        (
            lambda index: index.search(np.ones((2, DIM), np.float32), 3, exclude=[[1], [2, 3]]),
            "padded with -1",
        ),
        (lambda index: index.search(np.ones((1, DIM), np.float32), 3, exclude=[300]), "position 300"),
        (lambda index: index.search(np.ones((1, DIM), np.float32), 3, exclude=[-2]), "position -2"),
        (lambda index: index.search(np.ones((1, DIM), np.float32), 3, exclude=[1.0]), "integer positions"),
        (
            lambda index: index.search(np.ones((1, DIM), np.float32), 300, exclude=[1]),
            "between 1 and 299",
        ),
        (lambda index: index.search_positions([1], 300), "between 1 and 299"),
        (lambda index: index.search_positions([1], -1), "k=-1"),
        (lambda index: index.search_positions(1, 3), r"\[p\]"),
        (lambda index: index.search_positions([], 3), "at least one"),
        (lambda index: index.search_positions([300], 3), "position 300.*positions 0 .. 299"),
        (lambda index: index.search_positions([-1], 3), "position -1"),
        (lambda index: index.search_positions([1.0], 3), "integers"),
        (lambda index: index.search_positions([True], 3), "integers"),
    ],
)
def test_bad_queries_raise_value_errors_with_clear_messages(built: VectorIndex, call, message: str) -> None:
    with pytest.raises(ValueError, match=message) as raised:
        call(built)
    assert isinstance(raised.value, IndexInputError) and isinstance(raised.value, UserError)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("vectors", "message"),
    [
        (np.ones((3, 4, 2)), "2-D"),
        (np.ones((0, 4)), "at least one row"),
        (np.array([["a", "b"]]), "real numbers"),
        (np.array([[1.0, np.nan], [1.0, 2.0]]), "row 0 contains NaN"),
        (np.array([[1.0, 2.0], [np.inf, 2.0]]), "row 1 contains NaN or infinity"),
    ],
)
def test_bad_vectors_raise_value_errors(vectors, message: str) -> None:
    with pytest.raises(IndexInputError, match=message):
        VectorIndex().build(vectors)


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
        ({"max_hnsw_bytes": 0}, "max_hnsw_bytes must be a positive integer"),
        ({"sq_bits": 7}, "sq_bits must be one of 4, 6, 8 or 16, got 7"),
        ({"sq_bits": True}, "sq_bits must be one of"),
        ({"refine": "yes"}, "refine must be True or False"),
        ({"refine_factor": 0.5}, "refine_factor must be a number from 1 to 1000, got 0.5"),
        ({"refine_factor": float("nan")}, "refine_factor must be a number"),
        ({"refine_factor": "2"}, "refine_factor must be a number"),
    ],
)
def test_bad_parameters_raise_value_errors(params: dict, message: str) -> None:
    with pytest.raises(IndexInputError, match=message) as raised:
        VectorIndex(**params)
    assert isinstance(raised.value, ValueError) and "\n" not in str(raised.value)


def test_ivf_with_more_lists_than_vectors_is_rejected() -> None:
    with pytest.raises(ValueError, match="nlist=50 is larger than the 10 vectors"):
        VectorIndex(kind="ivf", nlist=50).build(np.random.default_rng(0).standard_normal((10, 4)))


def test_searching_an_unbuilt_index_says_what_to_do() -> None:
    with pytest.raises(ValueError, match="call build"):
        VectorIndex().search(np.ones((1, 4)), 1)
    with pytest.raises(ValueError, match="call build"):
        save_index(VectorIndex(), "never-written.faiss")


# ---------------------------------------------------------------- persistence


@pytest.mark.parametrize(
    ("kind", "refine"), [("exact", True), ("hnsw", True), ("ivf", True), ("ivf_sq", True), ("ivf_sq", False)]
)
def test_save_load_round_trip_gives_identical_results_without_rebuilding(
    tmp_path, monkeypatch, clustered: np.ndarray, kind: str, refine: bool
) -> None:
    vectors = clustered[:3_000]
    index = VectorIndex(kind=kind, ef_search=48, nprobe=8, refine=refine, refine_factor=3).build(vectors)
    queries = clustered[3_000:3_200]
    before = index.search(queries, 10)
    before_by_position = index.search_positions(np.arange(50), 10)

    path = save_index(index, tmp_path / "users.faiss")

    def no_rebuild(*args, **kwargs):
        raise AssertionError("load must not rebuild the index")

    monkeypatch.setattr(VectorIndex, "build", no_rebuild)
    monkeypatch.setattr(VectorIndex, "_new_cpu_index", no_rebuild)
    monkeypatch.setattr(VectorIndex, "_add_in_chunks", no_rebuild)
    loaded = load_index(path, device="cpu")

    after = loaded.search(queries, 10)
    after_by_position = loaded.search_positions(np.arange(50), 10)
    np.testing.assert_array_equal(after.positions, before.positions)
    np.testing.assert_array_equal(after.scores, before.scores)
    np.testing.assert_array_equal(after_by_position.positions, before_by_position.positions)
    assert loaded.kind_ == kind and loaded.get_params() == {**index.get_params(), "device": "cpu"}
    assert loaded.scores_are_exact == index.scores_are_exact == (refine or kind != "ivf_sq")
    assert loaded.fingerprint_ == index.fingerprint_ == vectors_fingerprint(vectors)
    assert len(loaded) == 3_000
    assert sorted(os.listdir(tmp_path)) == ["users.faiss", "users.faiss.json"]  # no temporary files left


def test_sidecar_records_what_the_index_is(tmp_path, small_vectors: np.ndarray) -> None:
    index = VectorIndex(metric="inner_product", kind="exact").build(small_vectors[:5])
    save_index(index, tmp_path / "x.faiss")
    sidecar = json.loads((tmp_path / "x.faiss.json").read_text())
    assert sidecar["format_version"] == FORMAT_VERSION and "ids" not in sidecar
    assert sidecar["metric"] == "inner_product" and sidecar["kind"] == "exact"
    assert sidecar["dimension"] == DIM and sidecar["n_vectors"] == 5
    assert sidecar["vectors_sha256"] == vectors_fingerprint(small_vectors[:5])
    assert sidecar["params"]["hnsw_m"] == index.hnsw_m
    loaded = load_index(tmp_path / "x.faiss")
    assert loaded.metric == "inner_product"
    assert loaded.search_positions([0], 2).positions.dtype == np.int64


def test_load_refuses_a_mismatched_or_missing_pair(tmp_path, small_vectors: np.ndarray) -> None:
    save_index(VectorIndex(kind="exact").build(small_vectors[:5]), tmp_path / "a.faiss")
    save_index(VectorIndex(kind="exact").build(small_vectors[:6]), tmp_path / "b.faiss")
    os.replace(tmp_path / "b.faiss", tmp_path / "a.faiss")  # index file from another save
    with pytest.raises(IndexInputError, match="does not match the checksum"):
        load_index(tmp_path / "a.faiss")
    with pytest.raises(IndexInputError, match="b.faiss: no such file"):
        load_index(tmp_path / "b.faiss")


def _rewrite_sidecar(path, **changes) -> None:
    sidecar = sidecar_path(path)
    sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), **changes}))


def _truncate_index(path) -> None:
    path.write_bytes(path.read_bytes()[:-40])


def _corrupt_index_with_matching_checksum(path) -> None:
    import hashlib

    data = bytearray(path.read_bytes())
    data[:4] = b"XXXX"  # FAISS's fourcc header
    path.write_bytes(bytes(data))
    _rewrite_sidecar(path, index_file_sha256=hashlib.sha256(bytes(data)).hexdigest())


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda path: _rewrite_sidecar(path, format_version=FORMAT_VERSION + 1),
            "newer than this suite reads",
        ),
        (lambda path: _rewrite_sidecar(path, format_version=1), "format version 1 is no longer read"),
        (lambda path: _rewrite_sidecar(path, format_version="2"), "unknown index format version"),
        (lambda path: _rewrite_sidecar(path, format="pickle"), "not a VectorIndex sidecar"),
        (lambda path: _rewrite_sidecar(path, kind="hnsw"), "not the inner-product IndexHNSWFlat"),
        (lambda path: _rewrite_sidecar(path, n_vectors=7), "sidecar says 7 x 16"),
        (lambda path: _rewrite_sidecar(path, params={"colour": "red"}), "unknown index parameters"),
        (lambda path: _drop_field(path), "incomplete sidecar"),
        (_truncate_index, "does not match the checksum"),
        (_corrupt_index_with_matching_checksum, "FAISS cannot read the index file"),
        (
            lambda path: sidecar_path(path).write_text('{"format": "recsys.retrieval.Vec'),
            "not a readable JSON",
        ),
        (lambda path: sidecar_path(path).write_bytes(b"\xff\xfe\x00"), "not a readable JSON"),
    ],
)
def test_a_corrupt_truncated_or_newer_saved_index_is_an_index_input_error(
    tmp_path, small_vectors: np.ndarray, damage, message: str
) -> None:
    path = save_index(VectorIndex(kind="exact").build(small_vectors[:6]), tmp_path / "x.faiss")
    damage(path)
    with pytest.raises(IndexInputError, match=message) as raised:
        load_index(path)
    assert isinstance(raised.value, UserError)
    assert "\n" not in str(raised.value) and "x.faiss" in str(raised.value)


def _drop_field(path) -> None:
    sidecar = sidecar_path(path)
    metadata = json.loads(sidecar.read_text())
    del metadata["vectors_sha256"]
    sidecar.write_text(json.dumps(metadata))


def test_saved_files_hold_no_pickle(tmp_path, small_vectors: np.ndarray) -> None:
    path = save_index(VectorIndex(kind="hnsw").build(small_vectors), tmp_path / "x.faiss")
    for file in (path, sidecar_path(path)):
        assert not file.read_bytes().startswith(b"\x80")  # a pickle stream's PROTO opcode
    json.loads(sidecar_path(path).read_text())


# ---------------------------------------------------------------- devices


@pytest.mark.skipif(gpu_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_a_clear_value_error(tmp_path, small_vectors: np.ndarray) -> None:
    with pytest.raises(ValueError, match="device='cuda' was requested but FAISS sees no GPU"):
        VectorIndex(device="cuda").build(small_vectors)
    index = VectorIndex(device="auto").build(small_vectors)
    assert index.device_ == "cpu"
    path = save_index(index, tmp_path / "x.faiss")
    with pytest.raises(IndexInputError, match="device='cuda' was requested"):
        load_index(path, device="cuda")


@pytest.mark.skipif(not gpu_available(), reason="needs the FAISS GPU build and a CUDA device")
@pytest.mark.parametrize("kind", ["exact", "ivf"])
def test_gpu_results_match_cpu(tmp_path, clustered: np.ndarray, kind: str) -> None:
    vectors = clustered[:5_000]
    cpu = VectorIndex(kind=kind, device="cpu", nprobe=64).build(vectors)
    gpu = VectorIndex(kind=kind, device="cuda", nprobe=64).build(vectors)
    assert gpu.device_ == "cuda"
    queries = clustered[5_000:5_500]
    np.testing.assert_allclose(gpu.search(queries, 10).scores, cpu.search(queries, 10).scores, atol=1e-4)
    by_position = gpu.search_positions(np.arange(100), 10)
    assert not (by_position.positions == np.arange(100)[:, None]).any()
    excluded = gpu.search(queries[:3], 10, exclude=np.arange(3 * 40).reshape(3, 40))
    assert not np.isin(excluded.positions, np.arange(120)).any()
    reloaded = load_index(save_index(gpu, tmp_path / "gpu.faiss"), device="cpu")
    np.testing.assert_allclose(reloaded.search(queries, 10).scores, cpu.search(queries, 10).scores, atol=1e-4)
    on_gpu = load_index(tmp_path / "gpu.faiss", device="cuda")
    assert on_gpu.device_ == "cuda"
    np.testing.assert_allclose(on_gpu.search(queries, 10).scores, cpu.search(queries, 10).scores, atol=1e-4)


@pytest.mark.skipif(not gpu_available(), reason="needs the FAISS GPU build and a CUDA device")
def test_hnsw_asked_for_on_cuda_runs_on_the_cpu_with_a_warning(tmp_path, small_vectors: np.ndarray) -> None:
    with pytest.warns(RuntimeWarning, match="no GPU HNSW"):
        index = VectorIndex(kind="hnsw", device="cuda").build(small_vectors)
    assert index.device_ == "cpu"
    path = save_index(index, tmp_path / "h.faiss")
    with pytest.warns(RuntimeWarning, match="no GPU HNSW"):
        assert load_index(path, device="cuda").device_ == "cpu"


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
