"""Images a model cannot place (no training rating, no features or metadata) get the model's fallback, the
average image, instead of stopping the leaderboard; each row counts the predictions that used it."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from recsys.api import Recommender
from recsys.cli import main
from recsys.data import load_dataset
from recsys.evaluation.evaluator import Evaluator
from recsys.leaderboard import run_leaderboard
from recsys.models.registry import create_model

#: the models of a plain table (no features, no metadata); the others are skipped rows there
PLAIN_MODELS = ["global_mean", "biases", "mf", "als", "bpr", "lightfm", "item_knn", "user_knn"]


def write_split_table(path, seed=0):
    """A table with a split column in which items i30..i34 are rated only in test_seen and i35..i39 only by
    new users: 30 seen users rate 16 of i0..i29 in train, 2 more in val_seen, 3 in test_seen (one of them among
    i30..i34 for every third user); 8 new users rate 25 images each, two of them among i35..i39."""
    rng = np.random.default_rng(seed)
    taste, appeal = rng.normal(size=(38, 2)), rng.normal(size=(40, 2))

    def score(u, i):
        return int(np.clip(np.rint(3 + taste[u] @ appeal[i] + rng.normal(0, 0.3)), 1, 5))

    rows = []
    for u in range(30):
        items = rng.choice(30, 21, replace=False)
        test = [*items[18:], *([30 + u % 5] if u % 3 == 0 else [])]
        rows += [(f"u{u}", f"i{i}", score(u, i), "train") for i in items[:16]]
        rows += [(f"u{u}", f"i{i}", score(u, i), "val_seen") for i in items[16:18]]
        rows += [(f"u{u}", f"i{i}", score(u, i), "test_seen") for i in test]
    for u in range(30, 38):
        items = [*rng.choice(30, 23, replace=False), *rng.choice(np.arange(35, 40), 2, replace=False)]
        rows += [(f"u{u}", f"i{i}", score(u, i), "test_unseen") for i in items]
    pd.DataFrame(rows, columns=["user_id", "item_id", "score", "split"]).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return load_dataset(write_split_table(tmp_path_factory.mktemp("fallbacks") / "ratings.csv"))


def unplaced_queries(dataset, split):
    """Queries of ``split`` whose image has no training rating, counted from the table itself."""
    in_train = set(dataset.ratings["train"].image_idx.tolist())
    return sum(i not in in_train for i in dataset.ratings[split].image_idx.tolist())


@pytest.mark.parametrize("name", PLAIN_MODELS)
def test_every_plain_model_scores_and_counts_its_fallbacks(dataset, name):
    model = create_model(name).fit(dataset)
    evaluator = Evaluator(dataset, shots=(0, 5), draws=2, n_bootstrap=50)
    seen = evaluator.evaluate(model, "test_seen")
    assert seen.status == "ok" and np.isfinite(seen.predictions.prediction).all()
    assert unplaced_queries(dataset, "test_seen") == 10  # i30..i34, rated by every third seen user
    expected = 0 if name == "global_mean" else 10
    assert seen.fallback_predictions == expected
    assert seen.to_json()["fallback_predictions"] == seen.fallback_predictions
    for k in (0, 5):
        new = evaluator.evaluate(model, "test_unseen", k)
        assert new.status == "ok"
        queries = new.predictions.image_idx[new.predictions.draw == 0]
        in_train = np.isin(queries, dataset.ratings["train"].image_idx)
        assert new.fallback_predictions == (0 if name == "global_mean" else int((~in_train).sum()))


def test_the_fallback_is_the_average_image(dataset):
    """Scores are linear in the item parameters, so the average image's score is the mean of the user's scores
    of the placed images (als does not clip); biases scores it mu + b_u (the prior bias 0)."""
    als = create_model("als").fit(dataset)
    placed = np.flatnonzero(als.placeable(np.arange(dataset.n_images)))
    assert len(placed) == 30  # i0..i29
    user = dataset.user_index("u3")
    average = als.predict(np.full(len(placed), user), placed).mean()
    unplaced = [dataset.image_index(f"i{i}") for i in range(30, 40)]
    np.testing.assert_allclose(als.predict(np.full(10, user), unplaced), average, rtol=1e-10)
    biases = create_model("biases").fit(dataset)
    base = biases.baseline_
    expected = np.clip(base.mu + base.user_bias[user], *dataset.score_range)
    np.testing.assert_allclose(biases.predict(np.full(10, user), unplaced), expected)
    assert not biases.placeable(unplaced).any() and biases.placeable(placed).all()


def test_the_leaderboard_writes_every_row_and_the_fallbacks(dataset, tmp_path, capsys):
    board = run_leaderboard(dataset, PLAIN_MODELS, shots=(0, 5), draws=2, progress=False)
    assert {r.status for r in board.rows} == {"ok"}
    path = dataset.root / "ratings.csv"
    assert main(["leaderboard", "--data", str(path), "--models", "mf,als,ridge", "--shots", "0,5",
                 "--no-tracking", "--out", str(tmp_path / "out")]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "Fallbacks (predictions of images a model cannot place" in printed
    assert "test_seen: 10 of 100 (mf, als)" in printed
    rows = json.loads((tmp_path / "out" / "leaderboard.json").read_text())["rows"]
    counts = {(r["model"], r["split"], r["shots"]): r["fallback_predictions"] for r in rows}
    assert counts[("mf", "test_seen", None)] == 10 and counts[("ridge", "test_seen", None)] == 0
    assert {r["status"] for r in rows if r["model"] == "ridge"} == {"skipped"}
    markdown = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "test_seen: 10 of 100 (mf, als)" in markdown
    assert "fallback_predictions" in (tmp_path / "out" / "leaderboard.csv").read_text().splitlines()[0]


def test_a_piaa_file_whose_test_users_rate_images_nobody_else_did(tmp_path):
    """PIAA data with the PIAA protocol: the held-out users' images need not be in train."""
    rng = np.random.default_rng(1)
    lines = [f"W{w:03d}, farm{i}_1_2.jpg, {rng.integers(1, 6)}\n" for w in range(60)
             for i in rng.choice(3000, 110, replace=False)]  # fmt: skip
    root = tmp_path / "FLICKR-AES"
    root.mkdir()
    (root / "FLICKR-AES_image_labeled_by_each_worker.csv").write_text(
        "worker, imagePair, score\n" + "".join(lines)
    )
    out = tmp_path / "out"
    args = ["leaderboard", "--data", str(root), "--protocol", "piaa", "--models", "mf,als,item_knn"]
    assert main([*args, "--draws", "1", "--no-tracking", "--out", str(out)]) == 0
    rows = json.loads((out / "leaderboard.json").read_text())["rows"]
    assert {r["status"] for r in rows} == {"ok"}
    assert all(
        r["fallback_predictions"] > 0 for r in rows
    )  # about 14% of the images are in no training rating


def test_the_facade_names_an_unfitted_user_by_its_id(dataset):
    rec = Recommender(dataset).fit("mf")
    with pytest.raises(Exception, match="user 'u31' was not in the fit"):
        rec.predict(["u31"], ["i1"])
