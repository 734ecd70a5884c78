"""Your own rating table, tried as a new user would: zero flags, both settings, skipped models, --columns."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from test_api import write_table

from recsys.cli import main
from recsys.data import load_dataset
from recsys.data.tables import parse_columns
from recsys.errors import UserError
from recsys.leaderboard import run_leaderboard


@pytest.fixture
def table(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RECSYS_HOME", str(tmp_path / "home"))
    return write_table(tmp_path / "ratings.csv")


def test_default_holdout_makes_both_settings(table):
    ds = load_dataset(table)
    assert ds.splits == ["train", "val_seen", "val_unseen", "test_seen", "test_unseen"]
    train = set(ds.ratings["train"].user_idx.tolist())
    unseen = set(ds.ratings["test_unseen"].user_idx.tolist()) | set(
        ds.ratings["val_unseen"].user_idx.tolist()
    )
    assert not unseen & train  # new users have no training rating
    assert set(ds.ratings["test_seen"].user_idx.tolist()) <= train  # seen users do
    assert len(set(ds.ratings["test_unseen"].user_idx.tolist())) == 6  # 10% of 60 users
    again = load_dataset(table)
    assert np.array_equal(again.ratings["test_seen"].image_idx, ds.ratings["test_seen"].image_idx)
    other = load_dataset(table, seed=1)
    assert not np.array_equal(other.ratings["test_unseen"].user_idx, ds.ratings["test_unseen"].user_idx)


def test_leaderboard_evaluates_existing_splits_and_skips_models_without_features(table):
    ds = load_dataset(table, holdout="users:0.2")
    board = run_leaderboard(ds, ["global_mean", "ridge", "mf"], shots=(0, 5), progress=False)
    assert {r.split for r in board.rows} == {"test_unseen"}  # no test_seen in a users: holdout
    ridge = [r for r in board.rows if r.model == "ridge"]
    assert len(ridge) == 2 and all(r.status == "skipped" and r.metrics is None for r in ridge)
    assert "image features" in ridge[0].reason
    mf = [r for r in board.rows if r.model == "mf"]
    assert all(r.status == "ok" and r.metrics for r in mf)
    with pytest.raises(UserError, match="no split.*test_seen"):  # asked for explicitly: still an error
        run_leaderboard(ds, ["global_mean"], splits=["test_seen"], progress=False)


def test_zero_flag_leaderboard_on_a_plain_table(table, capsys):
    assert main(["leaderboard", "--data", str(table)]) == 0
    printed = capsys.readouterr().out
    assert "test_seen" in printed and "test_unseen" in printed and "skipped" in printed
    target = printed.split("wrote run ")[1].split(" to ")[1].split(":")[0]
    rows = json.loads((table.parent / target / "leaderboard.json").read_text())["rows"]
    ok = {(r["model"], r["split"]) for r in rows if r["status"] == "ok"}
    assert ("mf", "test_seen") in ok and ("mf", "test_unseen") in ok
    assert {r["status"] for r in rows if r["model"] == "two_tower"} == {"skipped"}


def test_columns_map_a_table_with_its_own_names(table, tmp_path, capsys):
    own = tmp_path / "own" / "movies.csv"
    own.parent.mkdir()
    pd.read_csv(table).rename(columns={"user_id": "uid", "item_id": "movie", "score": "rating"}).to_csv(
        own, index=False
    )
    pd.DataFrame({"uid": ["u1", "u2"], "age": [30, 40]}).to_csv(own.parent / "users.csv", index=False)
    with pytest.raises(UserError, match="lacks column"):
        load_dataset(own)
    ds = load_dataset(own, columns="user=uid,item=movie,score=rating")
    assert ds.n_users == 60 and ds.users.loc[ds.user_index("u2"), "age"] == 40
    assert main(["leaderboard", "--data", str(own), "--columns", "user=uid,item=movie,score=rating",
                 "--models", "biases", "--out", str(tmp_path / "b")]) == 0  # fmt: skip
    assert "biases" in capsys.readouterr().out
    with pytest.raises(UserError, match="lacks"):
        load_dataset(own, columns="user=uid,item=film,score=rating")
    for bad in ("who=uid", "user", "user=a,item=a"):
        with pytest.raises(UserError, match="--columns"):
            parse_columns(bad)


def test_tuned_leaderboard_scores_the_splits_that_exist(table, tmp_path):
    """The tuned refit, like the plain leaderboard, evaluates the test splits the table has (here test_seen
    only, from a random holdout), instead of failing on the missing test_unseen."""
    from experiments.tuning import run_tuned_leaderboard

    ds = load_dataset(table, holdout="random:0.2")
    assert "test_unseen" not in ds.splits
    board = run_tuned_leaderboard(
        ds, ["global_mean"], storage=f"sqlite:///{tmp_path / 'studies.db'}", progress=False
    )
    assert {r.split for r in board.rows} == {"test_seen"}
