"""The Python facade on external ids: the README snippet runs as written on a plain generated table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recsys.api import Recommender
from recsys.errors import UnknownId, UserError


def readme_snippet() -> str:
    """The README's Python block that uses the facade, exactly as printed there."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    blocks = [b.split("```", 1)[0] for b in readme.split("```python\n")[1:]]
    found = [b for b in blocks if "from recsys.api import Recommender" in b]
    assert len(found) == 1, "the README has one Python block using recsys.api"
    return found[0]


def write_table(path, users=60, items=80, per_user=40, seed=0):
    """A plain table with string ids and a two-factor taste structure, scores 1..5."""
    rng = np.random.default_rng(seed)
    u_vec, i_vec = rng.normal(size=(users, 2)), rng.normal(size=(items, 2))
    rows = []
    for u in range(users):
        for i in rng.choice(items, per_user, replace=False):
            score = np.clip(np.rint(3 + 1.2 * u_vec[u] @ i_vec[i] + rng.normal(0, 0.3)), 1, 5)
            rows.append((f"u{u}", f"i{i}", int(score)))
    pd.DataFrame(rows, columns=["user_id", "item_id", "score"]).to_csv(path, index=False)
    return path


def table_args(dataset, workspace) -> list[str]:
    """The CLI arguments that load a table written by ``write_table`` (random holdout) into ``workspace``."""
    return [
        "--data",
        str(dataset.root / "ratings.csv"),
        "--holdout",
        "random:0.1",
        "--workspace",
        str(workspace),
    ]


@pytest.fixture
def table(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return write_table(tmp_path / "ratings.csv")


def test_readme_snippet_runs(table, capsys):
    exec(compile(readme_snippet(), "README", "exec"), {})
    out = capsys.readouterr().out
    assert "user_id" in out and "score" in out


def test_predict_on_external_ids(table):
    rec = Recommender.load_data(table).fit("biases")
    user = rec.known_users()[0]
    scores = rec.predict([user, user], ["i1", "i2"])
    assert scores.shape == (2,) and np.isfinite(scores).all()
    with pytest.raises(UnknownId, match="nope"):
        rec.predict(["nope"], ["i1"])
    with pytest.raises(UserError, match="aligned"):
        rec.predict([user], ["i1", "i2"])


def test_predict_new_follows_references(table):
    rec = Recommender.load_data(table).fit("mf", factors=4)
    ratings = pd.read_csv(table)
    items = [f"i{i}" for i in range(80)]
    # a new user who copies a person's 40 ratings is folded in to follow them (ids mapped, not shuffled)
    donor = ratings[ratings.user_id == ratings.groupby("user_id").score.std().idxmax()]
    refs = dict(zip(donor.item_id, donor.score.astype(float), strict=True))
    pred = rec.predict_new(references=refs, items=list(donor.item_id))
    assert pred.shape == (len(donor),)
    assert np.corrcoef(pred, donor.score)[0, 1] > 0.6
    flipped = {item: 6.0 - score for item, score in refs.items()}
    assert np.corrcoef(rec.predict_new(references=flipped, items=list(donor.item_id)), donor.score)[0, 1] < 0
    with pytest.raises(UserError, match="lie in"):
        rec.predict_new(references={"i1": 99}, items=items[:2])


def test_similar_users_by_id_and_references(table):
    rec = Recommender.load_data(table).fit("mf", factors=4)
    user = rec.known_users()[0]
    by_id = rec.similar_users(user_id=user, k=5)
    assert len(by_id) == 5 and user not in set(by_id.user_id)
    assert by_id.score.is_monotonic_decreasing and by_id.score.nunique() > 1
    by_refs = rec.similar_users(references={"i1": 5, "i2": 1, "i3": 4}, k=5)
    assert len(by_refs) == 5
    with pytest.raises(UserError, match="exactly one"):
        rec.similar_users(k=3)


def test_demographics_must_match_a_user(table, tmp_path):
    users = pd.DataFrame({"user_id": [f"u{u}" for u in range(60)], "gender": ["f", "m"] * 30})
    users.to_csv(tmp_path / "users.csv", index=False)
    rec = Recommender.load_data(table).fit("biases")
    both = rec.predict_new(references={"i1": 5}, items=["i2"], demographics={"gender": "f"})
    assert np.isfinite(both).all()
    only_demo = rec.predict_new(items=["i2", "i3"], demographics={"gender": "m"})
    assert only_demo.shape == (2,)
    with pytest.raises(UserError, match="no user"):
        rec.predict_new(items=["i2"], demographics={"gender": "x"})
    with pytest.raises(UserError, match="unknown demographic"):
        rec.predict_new(items=["i2"], demographics={"age": 3})


def test_fit_first(table):
    with pytest.raises(UserError, match="fit"):
        Recommender.load_data(table).predict(["u1"], ["i1"])


def test_evaluate_gives_the_leaderboard_metrics_and_rmse_by_hand(table):
    rec = Recommender.load_data(table, holdout="random:0.1").fit("mf", epochs=5)
    metrics = rec.evaluate("test_seen")
    ratings = rec.dataset.ratings["test_seen"]
    errors = rec.model.predict(ratings.user_idx, ratings.image_idx) - ratings.score
    assert metrics["rmse"] == pytest.approx(float(np.sqrt(np.mean(errors**2))), rel=1e-6)
    assert {"user_srocc", "pairwise_acc", "ndcg@10"} <= set(metrics)
    with pytest.raises(UserError, match="shots apply to unseen splits only"):
        rec.evaluate("test_seen", shots=5)


def test_save_and_load_give_the_same_predictions(table, tmp_path):
    rec = Recommender.load_data(table, holdout="random:0.1").fit("biases")
    saved = rec.save(tmp_path / "model")
    again = Recommender.load(saved, table, holdout="random:0.1")
    users, items = ["u1", "u2", "u3"], ["i4", "i5", "i6"]
    np.testing.assert_array_equal(again.predict(users, items), rec.predict(users, items))
    other = write_table(tmp_path / "other.csv", users=30, items=90, per_user=30, seed=1)
    with pytest.raises(UserError):  # saved for other data: other sizes
        Recommender.load(saved, other)
