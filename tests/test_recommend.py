"""Top-N recommendations: the core against a brute-force ranking of the model's own scores, then the facade, the
CLI and HTTP against the core."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from test_api import table_args, write_table

from recsys.api import Recommender
from recsys.cli import main
from recsys.data import References, load_dataset
from recsys.errors import UnknownId, UserError
from recsys.models.registry import create_model
from recsys.recommend import recommend
from recsys.retrieval.service import create_app


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return load_dataset(
        write_table(tmp_path_factory.mktemp("recommend") / "ratings.csv"), holdout="random:0.2"
    )


@pytest.fixture(scope="module")
def mf(plain):
    return create_model("mf", factors=4).fit(plain)


def brute_force(scores: np.ndarray, excluded: set[int], n: int) -> list[int]:
    """Image indices by score descending, then index ascending, leaving out ``excluded``: Python's sort."""
    candidates = [i for i in range(len(scores)) if i not in excluded]
    return sorted(candidates, key=lambda i: (-scores[i], i))[:n]


def test_recommend_is_the_top_of_the_models_scores_over_unrated_images(plain, mf):
    user = 3
    user_id = plain.user_ids[user]
    images = np.arange(plain.n_images)
    scores = mf.predict(np.full(plain.n_images, user), images)
    train = plain.ratings["train"]
    rated = set(train.image_idx[train.user_idx == user].tolist())
    got = recommend(mf, plain, user_id=user_id, n=7)
    assert [r["image_id"] for r in got] == plain.image_ids[brute_force(scores, rated, 7)].tolist()
    assert [r["rank"] for r in got] == list(range(1, 8))
    assert not any(r["rated"] for r in got)
    # every image, rated ones marked; n beyond the catalogue gives the whole catalogue
    everything = recommend(mf, plain, user_id=user_id, n=1000, include_rated=True)
    assert [r["image_id"] for r in everything] == plain.image_ids[brute_force(scores, set(), 1000)].tolist()
    assert {r["image_id"] for r in everything if r["rated"]} == set(plain.image_ids[sorted(rated)].tolist())
    assert len(recommend(mf, plain, user_id=user_id, n=1000)) == plain.n_images - len(rated)


def test_a_fit_on_more_splits_leaves_out_every_image_rated_in_it(plain):
    model = create_model("biases").fit(plain, "train+test_seen")
    user = int(plain.ratings["test_seen"].user_idx[0])
    rated = {
        int(i) for split in ("train", "test_seen") for u, i in zip(plain.ratings[split].user_idx,
        plain.ratings[split].image_idx, strict=True) if u == user
    }  # fmt: skip
    got = recommend(model, plain, user_id=plain.user_ids[user], n=1000)
    assert len(got) == plain.n_images - len(rated)
    assert not {plain.image_index(r["image_id"]) for r in got} & rated


def test_equal_scores_come_in_the_datas_order_of_images(plain):
    constant = create_model("global_mean").fit(plain)
    user = 0
    train = plain.ratings["train"]
    rated = set(train.image_idx[train.user_idx == user].tolist())
    got = recommend(constant, plain, user_id=plain.user_ids[user], n=5)
    assert [plain.image_index(r["image_id"]) for r in got] == [i for i in range(80) if i not in rated][:5]


def test_a_new_user_gets_the_top_of_predict_new_without_the_references(plain, mf):
    refs = References(-1, np.array([4, 9, 30]), np.array([5.0, 1.0, 4.0], np.float32))
    scores = mf.predict_new([refs], [np.arange(plain.n_images)])[0]
    got = recommend(mf, plain, references=refs, n=6)
    assert [plain.image_index(r["image_id"]) for r in got] == brute_force(scores, {4, 9, 30}, 6)
    with_refs = recommend(mf, plain, references=refs, n=80, include_rated=True)
    assert {plain.image_index(r["image_id"]) for r in with_refs if r["rated"]} == {4, 9, 30}


def test_bad_requests_are_one_line_errors(plain, mf, tmp_path):
    user = plain.user_ids[0]
    for n in (0, -3, 2.5, True):
        with pytest.raises(UserError, match="n must be a positive integer"):
            recommend(mf, plain, user_id=user, n=n)
    with pytest.raises(UnknownId, match="unknown user id 'nobody'"):
        recommend(mf, plain, user_id="nobody")
    with pytest.raises(UserError, match="exactly one"):
        recommend(mf, plain)
    new_users = load_dataset(write_table(tmp_path / "ratings.csv"), holdout="users:0.2")
    model = create_model("biases").fit(new_users)
    absent = new_users.user_ids[np.flatnonzero(~model.known_)[0]]
    with pytest.raises(
        UserError, match="not in the data biases was fitted on .train.; give their references"
    ):
        recommend(model, new_users, user_id=absent)


def test_the_facade_recommends_on_external_ids(plain, mf):
    rec = Recommender(plain, mf)
    user = plain.user_ids[3]
    table = rec.recommend(user, n=7)
    assert list(table.columns) == ["rank", "item_id", "score", "rated"]
    assert table.to_dict("records") == [
        {"rank": r["rank"], "item_id": r["image_id"], "score": r["score"], "rated": r["rated"]}
        for r in recommend(mf, plain, user_id=user, n=7)
    ]
    new = rec.recommend(references={"i4": 5, "i9": 1}, n=80)
    assert len(new) == 78 and not {"i4", "i9"} & set(new.item_id)
    with pytest.raises(UserError, match="exactly one"):
        rec.recommend()


def test_recommend_command(plain, tmp_path, capsys):
    common = table_args(plain, tmp_path)
    data = load_dataset(plain.root / "ratings.csv", holdout="random:0.1")  # what table_args loads
    user = str(data.user_ids[3])
    model = ["--model", "mf", "--params", '{"factors": 4}']
    assert main(["recommend", *common, *model, "--user", user, "--n", "7", "--json"]) == 0
    printed = capsys.readouterr().out
    rows = json.loads(printed[printed.index("[") :])
    refit = create_model("mf", factors=4).fit(data)
    assert rows == json.loads(json.dumps(recommend(refit, data, user_id=user, n=7)))
    # the saved model is reused; plain text marks the rated images
    assert main(["recommend", *common, *model, "--user", user, "--n", "80", "--include-rated"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    train = data.ratings["train"]
    assert len(lines) == 80 and sum(line.endswith("(rated)") for line in lines) == (train.user_idx == 3).sum()
    refs = tmp_path / "refs.csv"
    pd.DataFrame({"item_id": ["i4", "i9"], "score": [5, 1]}).to_csv(refs, index=False)
    assert main(["recommend", *common, *model, "--references", str(refs), "--n", "3", "--json"]) == 0
    printed = capsys.readouterr().out
    assert [r["rank"] for r in json.loads(printed[printed.index("[") :])] == [1, 2, 3]
    assert main(["recommend", *common, "--user", "nobody"]) == 2
    assert capsys.readouterr().err.startswith("error: unknown user id 'nobody'")
    assert main(["recommend", *common, "--user", user, "--references", str(refs)]) == 2
    assert "exactly one of --user" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["recommend", *common, "--user", user, "--n", "0"])
    assert exit_.value.code == 2 and "expected a positive integer, got '0'" in capsys.readouterr().err


def test_get_recommend(plain, mf, tmp_path):
    from recsys.retrieval.similar import SimilarUsers

    client = TestClient(create_app(mf, plain, SimilarUsers(mf, plain)))
    user = str(plain.user_ids[3])
    response = client.get(f"/users/{user}/recommend", params={"n": 7})
    assert response.status_code == 200
    body = response.json()
    assert body["model"] == "mf" and body["user_id"] == user
    assert body["recommendations"] == recommend(mf, plain, user_id=user, n=7)
    default = client.get(f"/users/{user}/recommend").json()["recommendations"]
    assert len(default) == 10 and not any(r["rated"] for r in default)
    rated = client.get(f"/users/{user}/recommend", params={"n": 80, "include_rated": "true"}).json()
    assert len(rated["recommendations"]) == 80
    for n, status in ((0, 422), (1001, 422), ("x", 422)):
        response = client.get(f"/users/{user}/recommend", params={"n": n})
        assert response.status_code == status and "\n" not in response.json()["detail"]
    assert client.get("/users/nobody/recommend").status_code == 404
    new_users = load_dataset(write_table(tmp_path / "ratings.csv"), holdout="users:0.2")
    model = create_model("biases").fit(new_users)
    absent = str(new_users.user_ids[np.flatnonzero(~model.known_)[0]])
    similar = SimilarUsers(create_model("mf", factors=2).fit(new_users), new_users)
    served = TestClient(create_app(model, new_users, similar))
    response = served.get(f"/users/{absent}/recommend")
    assert response.status_code == 404 and "was not fitted" in response.json()["detail"]


def test_integer_ids_come_back_as_integers(tmp_path):
    """On a table with integer ids (MovieLens's u.data), the service answers with the data's own ids: 196, not
    "196", for the user asked about, the recommended images and the similar users."""
    from recsys.retrieval.similar import SimilarUsers

    text = write_table(tmp_path / "text.csv")
    table = pd.read_csv(text)
    table["user_id"] = table["user_id"].str[1:].astype(int) + 100
    table["item_id"] = table["item_id"].str[1:].astype(int) + 1000
    table.to_csv(tmp_path / "ratings.csv", index=False)
    data = load_dataset(tmp_path / "ratings.csv", holdout="random:0.2")
    assert data.user_ids.dtype.kind in "iu"
    model = create_model("mf", factors=4).fit(data)
    client = TestClient(create_app(model, data, SimilarUsers(model, data)))
    body = client.get("/users/103/recommend", params={"n": 3}).json()
    assert body["user_id"] == 103
    assert all(isinstance(r["image_id"], int) and r["image_id"] >= 1000 for r in body["recommendations"])
    neighbours = client.get("/users/103/similar", params={"k": 4}).json()
    assert len(neighbours) == 4
    assert all(isinstance(n["user_id"], int) and n["user_id"] >= 100 for n in neighbours)
    assert 103 not in [n["user_id"] for n in neighbours]
