"""Ranking a person's candidate images: the order of the model's own scores, by the core, the CLI and HTTP."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from test_api import table_args, write_table

from recsys.cli import main
from recsys.data import References, load_dataset
from recsys.errors import UserError
from recsys.models.registry import create_model
from recsys.ranking import rank_images
from recsys.retrieval.service import create_app


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    return load_dataset(write_table(tmp_path_factory.mktemp("rank") / "ratings.csv"), holdout="random:0.1")


@pytest.fixture(scope="module")
def mf(plain):
    return create_model("mf", factors=4).fit(plain)


CANDIDATES = ["i3", "i17", "i40", "i8", "i61"]


def test_ranking_is_the_order_of_the_models_scores(plain, mf):
    user = plain.user_ids[np.flatnonzero(mf.known_)[0]]
    ranking = rank_images(mf, plain, CANDIDATES, user_id=user)
    images = np.array([plain.image_index(i) for i in CANDIDATES])
    scores = mf.predict(np.full(len(images), plain.user_index(user)), images)
    assert [r["image_id"] for r in ranking] == [CANDIDATES[i] for i in np.argsort(-scores, kind="stable")]
    assert [r["rank"] for r in ranking] == [1, 2, 3, 4, 5]
    assert all(a["score"] >= b["score"] for a, b in zip(ranking, ranking[1:], strict=False))
    refs = References(-1, images[:2], np.array([5.0, 1.0], np.float32))
    new = rank_images(mf, plain, CANDIDATES[2:], references=refs)
    expected = mf.predict_new([refs], [images[2:]])[0]
    assert [r["score"] for r in new] == sorted(expected.tolist(), reverse=True)
    with pytest.raises(UserError, match="exactly one"):
        rank_images(mf, plain, CANDIDATES, user_id=user, references=refs)
    with pytest.raises(UserError, match="twice"):
        rank_images(mf, plain, ["i3", "i3"], user_id=user)


def test_rank_command(plain, tmp_path, capsys):
    ids = tmp_path / "candidates.txt"
    ids.write_text("\n".join(CANDIDATES) + "\n")
    refs = tmp_path / "refs.csv"
    pd.DataFrame({"item_id": ["i1", "i2", "i5"], "score": [5, 1, 4]}).to_csv(refs, index=False)
    common = table_args(plain, tmp_path)
    args = ["rank", *common, "--model", "mf", "--images", str(ids), "--json"]
    assert main([*args, "--references", str(refs)]) == 0
    printed = capsys.readouterr().out
    ranking = json.loads(printed[printed.index("[") :])
    assert sorted(r["image_id"] for r in ranking) == sorted(CANDIDATES)
    assert [r["score"] for r in ranking] == sorted((r["score"] for r in ranking), reverse=True)
    # a model without taste vectors ranks too (rank needs no user index)
    knn = ["rank", *common, "--model", "item_knn", "--images", str(ids), "--references", str(refs), "--json"]
    assert main(knn) == 0
    printed = capsys.readouterr().out
    assert len(json.loads(printed[printed.index("[") :])) == len(CANDIDATES)
    assert main([*args]) == 2  # neither --user nor --references
    assert "exactly one of --user" in capsys.readouterr().err
    ids.write_text("i3\nnot-an-image\n")
    assert main([*args, "--references", str(refs)]) == 2
    assert "not-an-image" in capsys.readouterr().err
    ids.write_text("\n\n")
    assert main([*args, "--references", str(refs)]) == 2  # refused before any fit
    assert "no candidate image ids" in capsys.readouterr().err


def test_post_rank(plain, mf):
    from recsys.retrieval.similar import SimilarUsers

    client = TestClient(create_app(mf, plain, SimilarUsers(mf, plain)))
    user = str(plain.user_ids[np.flatnonzero(mf.known_)[0]])
    body = client.post("/rank", json={"user_id": user, "image_ids": CANDIDATES})
    assert body.status_code == 200
    ranking = body.json()["ranking"]
    scores = client.post("/score", json={"user_id": user, "image_ids": CANDIDATES}).json()["scores"]
    by_score = sorted(scores, key=lambda s: -s["score"])
    assert [r["image_id"] for r in ranking] == [s["image_id"] for s in by_score]
    refs = [{"image_id": "i1", "score": 5}, {"image_id": "i2", "score": 1}]
    assert client.post("/rank", json={"references": refs, "image_ids": CANDIDATES}).status_code == 200
    assert client.post("/rank", json={"image_ids": CANDIDATES}).status_code == 422
    assert client.post("/rank", json={"user_id": user, "image_ids": ["nope"]}).status_code == 404
