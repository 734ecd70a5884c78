"""Similar users: neighbours share the simulator's true taste group; explanations, persistence (the HTTP API:
test_service.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys.cli import main
from recsys.errors import UserError
from recsys.models import create_model
from recsys.retrieval import IndexInputError, VectorIndex
from recsys.retrieval.similar import (
    USER_INDEX_FILE,
    SimilarImages,
    SimilarUsers,
    explain_pair,
    fitted_model_dir,
    load_or_fit,
    taste_of,
)


@pytest.fixture(scope="module")
def fitted(small_sim):
    model = create_model("user_ridge").fit(small_sim)
    return model, SimilarUsers(model, small_sim)


def test_neighbours_share_true_taste_groups_more_than_chance(small_sim, small_sim_dir, fitted):
    _, similar = fitted
    truth = pd.read_csv(small_sim_dir / "simulation" / "users.csv").set_index("participant_id")["taste_group"]
    users = small_sim.user_ids[small_sim.train_users()]
    same, base = [], []
    for user in users:
        neighbours = [n["user_id"] for n in similar.by_user(user, 5)]
        assert user not in neighbours
        same.append(np.mean([truth[n] == truth[user] for n in neighbours]))
        base.append(np.mean([truth[o] == truth[user] for o in users if o != user]))
    assert np.mean(same) > np.mean(base) + 0.1


def test_exact_scores_equal_brute_force_cosine(small_sim, fitted):
    model, similar = fitted
    vectors = model.user_vectors()[small_sim.train_users()].astype(float)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    user = small_sim.train_users()[0]
    got = similar.by_user(small_sim.user_ids[user], 5)
    cos = vectors @ vectors[0]
    cos[0] = -np.inf
    expected = np.sort(cos)[::-1][:5]
    np.testing.assert_allclose([n["score"] for n in got], expected, rtol=1e-4, atol=1e-5)


def test_query_by_references_finds_the_user_itself(small_sim, fitted):
    """A fitted user's own ratings as references fold in to their own vector: they come out first."""
    _, similar = fitted
    train = small_sim.ratings["train"]
    user = small_sim.train_users()[3]
    mask = train.user_idx == user
    got = similar.by_references(small_sim.image_ids[train.image_idx[mask]].tolist(), train.score[mask], k=3)
    assert got[0]["user_id"] == small_sim.user_ids[user]
    assert got[0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_explanations_by_hand(small_sim):
    images = np.flatnonzero(small_sim.images["group"].to_numpy() == small_sim.images["group"].iloc[0])[:4]
    other = np.flatnonzero(small_sim.images["group"].to_numpy() != small_sim.images["group"].iloc[0])[:4]
    idx = np.concatenate([images, other])
    a = taste_of(small_sim, idx, np.array([5, 5, 5, 5, 1, 1, 1, 1.0]), ["group"])
    b = taste_of(small_sim, idx, np.array([4, 5, 4, 5, 2, 1, 2, 1.0]), ["group"])
    explained = explain_pair(a, b)
    assert explained["shared_group"] == [small_sim.images["group"].iloc[0]]
    assert explained["co_rated"] == 8
    assert explained["agreement"] == pytest.approx(
        np.corrcoef([5, 5, 5, 5, 1, 1, 1, 1], [4, 5, 4, 5, 2, 1, 2, 1])[0, 1], abs=1e-4
    )


def test_bad_queries(small_sim, fitted):
    _, similar = fitted
    user = small_sim.user_ids[small_sim.train_users()[0]]
    with pytest.raises(UserError, match="k must be between"):
        similar.by_user(user, 0)
    with pytest.raises(UserError, match="unknown user"):
        similar.by_user("nobody", 3)
    unseen = small_sim.user_ids[small_sim.ratings["test_unseen"].user_idx[0]]
    with pytest.raises(UserError, match="no training ratings"):
        similar.by_user(unseen, 3)
    with pytest.raises(UserError, match="no taste vectors"):
        SimilarUsers(create_model("ridge").fit(small_sim), small_sim)


def test_persistence_round_trip_without_refitting(small_sim, tmp_path, monkeypatch):
    model, first = load_or_fit("user_ridge", small_sim, workspace=tmp_path, progress=False)
    user = small_sim.user_ids[small_sim.train_users()[1]]
    expected = first.by_user(user, 4)
    monkeypatch.setattr(type(model), "fit", lambda *a, **k: pytest.fail("refitted instead of loading"))
    _, again = load_or_fit("user_ridge", small_sim, workspace=tmp_path, progress=False)
    assert again.by_user(user, 4) == expected


def test_an_index_over_other_vectors_is_refused(small_sim, fitted):
    model, similar = fitted
    n_users = len(small_sim.train_users())
    other = np.random.default_rng(0).standard_normal((n_users, model.user_vectors().shape[1]))
    with pytest.raises(IndexInputError, match="was not built from the taste vectors"):
        SimilarUsers(model, small_sim, index=VectorIndex().build(other))
    with pytest.raises(IndexInputError, match="was not built from the taste vectors"):
        SimilarUsers(model, small_sim, index=VectorIndex().build(other[:-1]))
    user = small_sim.user_ids[small_sim.train_users()[0]]
    assert SimilarUsers(model, small_sim, index=similar.index).by_user(user, 3) == similar.by_user(user, 3)


def test_load_or_fit_refits_a_broken_saved_model(small_sim, tmp_path, capsys):
    model, first = load_or_fit("user_ridge", small_sim, workspace=tmp_path, progress=False)
    user = small_sim.user_ids[small_sim.train_users()[2]]
    expected = first.by_user(user, 4)
    directory = fitted_model_dir(tmp_path, "user_ridge", model.get_params(), small_sim)
    (directory / "config.json").write_text("{not json")
    capsys.readouterr()

    _, again = load_or_fit("user_ridge", small_sim, workspace=tmp_path, progress=False)

    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"saved model in {directory} is unusable (")
    assert err[0].endswith("); refitting")
    assert again.by_user(user, 4) == expected
    _, third = load_or_fit("user_ridge", small_sim, workspace=tmp_path, progress=False)  # saved again
    assert capsys.readouterr().err == "" and third.by_user(user, 4) == expected


def test_load_or_fit_rebuilds_a_broken_index_without_refitting(small_sim, tmp_path, monkeypatch, capsys):
    model, first = load_or_fit("user_ridge", small_sim, workspace=tmp_path, progress=False)
    user = small_sim.user_ids[small_sim.train_users()[5]]
    expected = first.by_user(user, 4)
    directory = fitted_model_dir(tmp_path, "user_ridge", model.get_params(), small_sim)
    index_file = directory / USER_INDEX_FILE
    index_file.write_bytes(index_file.read_bytes()[:-10])  # truncated
    monkeypatch.setattr(type(model), "fit", lambda *a, **k: pytest.fail("refitted instead of loading"))
    capsys.readouterr()

    _, again = load_or_fit("user_ridge", small_sim, workspace=tmp_path, progress=False)

    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "saved user index" in err[0] and "checksum" in err[0]
    assert err[0].endswith("; rebuilding")
    assert again.by_user(user, 4) == expected
    index_file.unlink()  # a missing index is rebuilt quietly
    _, third = load_or_fit("user_ridge", small_sim, workspace=tmp_path, progress=False)
    assert capsys.readouterr().err == "" and index_file.is_file()
    assert third.by_user(user, 4) == expected


def test_similar_images(small_sim):
    got = SimilarImages(small_sim).by_image(small_sim.image_ids[0], 3)
    assert len(got) == 3 and small_sim.image_ids[0] not in [g["image_id"] for g in got]
    f = small_sim.image_features / np.linalg.norm(small_sim.image_features, axis=1, keepdims=True)
    cos = f @ f[0]
    cos[0] = -np.inf
    assert got[0]["image_id"] == small_sim.image_ids[int(np.argmax(cos))]


def test_cli_json(small_sim, small_sim_dir, tmp_path, capsys):
    import json

    user = small_sim.user_ids[small_sim.train_users()[0]]
    argv = ["similar-users", "--data", str(small_sim_dir), "--user", user, "--k", "4", "--json"]
    assert main([*argv, "--workspace", str(tmp_path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [set(n) >= {"user_id", "score"} for n in out] == [True] * 4
    assert [n["score"] for n in out] == sorted((n["score"] for n in out), reverse=True)
    assert user not in [n["user_id"] for n in out]
