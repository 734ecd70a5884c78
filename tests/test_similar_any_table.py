"""Similar users on a plain table (no features, no metadata): non-degenerate taste vectors, zero vectors,
and a new user served from a references file."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from test_api import table_args, write_table

from recsys.cli import main
from recsys.data import load_dataset
from recsys.errors import UserError
from recsys.models.registry import create_model
from recsys.retrieval.similar import SimilarUsers

TASTE_MODELS = ("mf", "als", "bpr", "lightfm", "user_knn")


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    path = write_table(tmp_path_factory.mktemp("plain") / "ratings.csv", users=80, items=100, per_user=40)
    table = pd.read_csv(path)
    # one user whose every rating is the same: no taste signal for any model
    flat = pd.DataFrame({"user_id": "flat", "item_id": [f"i{i}" for i in range(40)], "score": 3})
    pd.concat([table, flat]).to_csv(path, index=False)
    return load_dataset(path, holdout="random:0.1")


@pytest.mark.parametrize("name", TASTE_MODELS)
def test_taste_vectors_have_rank_and_spread(plain, name):
    model = create_model(name).fit(plain)
    vectors = model.user_vectors()[plain.train_users()]
    nonzero = vectors[np.abs(vectors).sum(axis=1) > 0]
    assert len(nonzero) >= 0.9 * len(vectors)
    singular = np.linalg.svd(nonzero, compute_uv=False)
    assert singular[1] / singular[0] > 0.1  # not rank-1 (every neighbour would have similarity 1)
    unit = nonzero / np.linalg.norm(nonzero, axis=1, keepdims=True)
    cosines = (unit @ unit.T)[np.triu_indices(len(unit), 1)]
    assert cosines.std() > 0.05 and cosines.min() < 0.5
    similar = SimilarUsers(model, plain)
    user = plain.user_ids[plain.train_users()[np.flatnonzero(np.abs(vectors).sum(axis=1) > 0)[0]]]
    scores = [n["score"] for n in similar.by_user(user, k=10)]
    assert max(scores) < 0.999 or min(scores) < 0.9  # not 1.000 for every neighbour
    assert len(set(np.round(scores, 4))) > 1


@pytest.mark.parametrize("name", TASTE_MODELS)
def test_zero_vectors_are_a_clear_error_not_a_ranking(plain, name):
    model = create_model(name).fit(plain)
    similar = SimilarUsers(model, plain)
    flat_vector = model.user_vectors()[plain.user_index("flat")]
    if np.any(flat_vector):
        assert len(similar.by_user("flat", k=3)) == 3
    else:
        with pytest.raises(UserError, match="zero taste vector"):
            similar.by_user("flat", k=3)
    flat_refs = (["i1", "i2", "i3"], [3.0, 3.0, 3.0])
    try:
        rows = similar.by_references(*flat_refs, k=3)
    except UserError as err:
        assert "no taste signal" in str(err)
    else:
        assert len(rows) == 3 and all(np.isfinite(r["score"]) for r in rows)


def test_similar_users_cli_serves_a_new_user_from_references(plain, tmp_path, capsys):
    refs = tmp_path / "refs.csv"
    pd.DataFrame({"item_id": ["i1", "i2", "i3", "i4"], "score": [5, 1, 4, 2]}).to_csv(refs, index=False)
    table = plain.root / "ratings.csv"
    common = ["--data", str(table), "--holdout", "random:0.1", "--model", "mf", "--workspace", str(tmp_path)]
    assert main(["similar-users", *common, "--references", str(refs), "--k", "3", "--json"]) == 0
    printed = capsys.readouterr().out
    rows = json.loads(printed[printed.index("[") :])
    assert len(rows) == 3 and rows[0]["score"] >= rows[-1]["score"]
    assert main(["similar-users", *common, "--k", "3"]) == 2  # neither --user nor --references
    assert "exactly one of --user" in capsys.readouterr().err
    pd.DataFrame({"item": ["i1"], "score": [5]}).to_csv(refs, index=False)
    assert main(["similar-users", *common, "--references", str(refs)]) == 2
    assert "item_id" in capsys.readouterr().err


def test_a_model_without_taste_vectors_suggests_one_that_runs_on_any_table(plain):
    with pytest.raises(UserError, match="mf"):
        SimilarUsers(create_model("biases").fit(plain), plain)


def test_similar_users_default_model_follows_the_data(plain, tmp_path, capsys):
    """Without --model: mf on a table without features (user_ridge would need them); --params needs --model."""
    from recsys.retrieval.similar import default_taste_model

    assert default_taste_model(plain) == "mf"
    common = table_args(plain, tmp_path)
    assert main(["similar-users", *common, "--user", "u1", "--k", "3"]) == 0
    assert "fitting mf" in capsys.readouterr().out
    assert main(["similar-users", *common, "--user", "u1", "--params", '{"factors": 4}']) == 2
    assert "--params needs --model" in capsys.readouterr().err
