"""Splits a user can see and reuse: the default holdout trains on most of a table, the header, leaderboard.md and
leaderboard.json say how the splits were made and how large they are, ``recsys data split`` writes them for other
tools; ``--fit-on all`` fits serving commands on every rating, so that every user is known."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from test_api import write_table

from recsys.cli import main
from recsys.data import load_dataset
from recsys.data.tables import Holdout, parse_table_holdout
from recsys.errors import UserError
from recsys.leaderboard import run_leaderboard
from recsys.report import format_table, to_markdown
from recsys.retrieval.service import create_app
from recsys.retrieval.similar import fitted_model_dir, load_or_fit


@pytest.fixture
def table(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return write_table(tmp_path / "ratings.csv")  # 60 users x 40 ratings


def test_the_default_holdout_trains_on_most_of_the_ratings(table):
    ds = load_dataset(table)
    sizes = ds.split_sizes()
    # 10% and 5% of the 60 users are new users; 10% and 5% of the other 51 users' 2,040 ratings are held out
    assert sizes["test_unseen"]["users"] == 6 and sizes["val_unseen"]["users"] == 3
    assert sizes["test_seen"]["ratings"] == 204 and sizes["val_seen"]["ratings"] == 102
    assert sizes["train"] == {"ratings": 1734, "users": 51, "images": 80}
    assert ds.splits_made_by == "holdout both:0.1,0.05 (the default), seed 0"
    old = load_dataset(table, holdout="both:0.2")  # one fraction: validation is F of what the test split left
    assert old.split_sizes()["test_unseen"]["users"] == 12 and old.split_sizes()["val_unseen"]["users"] == 10
    assert old.split_sizes()["train"]["ratings"] == 38 * 40 - 304 - 243  # 0.2 * 1520, 0.2 * 1216
    assert old.splits_made_by == "holdout both:0.2, seed 0"


def test_holdout_specs():
    assert parse_table_holdout("both:0.1,0.05") == Holdout("both", 0.1, 0.05)
    assert parse_table_holdout("random:0.2") == Holdout("random", 0.2, None)
    assert Holdout("users", 0.1, 0.05).counts(943, at_least_one=True) == (94, 47)
    assert Holdout("random", 0.2).counts(100) == (20, 16)
    for bad in ("both:0.3,0.3", "random:0.1,x", "both:0.1,0", "split:0.1"):
        with pytest.raises(UserError, match="--holdout"):
            parse_table_holdout(bad)


def test_the_splits_are_in_the_header_the_markdown_and_the_json(table):
    ds = load_dataset(table)
    board = run_leaderboard(ds, ["biases"], shots=(0, 5), draws=1, progress=False)
    line = (
        "holdout both:0.1,0.05 (the default), seed 0: train 1,734 (72%), val_seen 102 (4%), val_unseen 120 (5%, 3 "
        "users), test_seen 204 (8%), test_unseen 240 (10%, 6 users) of 2,400 ratings; models fit on train, 1,734 "
        "ratings (72%)"
    )
    assert f"splits: {line}" in format_table(board).splitlines()
    assert f"**Splits.** {line} (`splits` in leaderboard.json)." in to_markdown(board)
    splits = board.to_json()["splits"]
    assert splits["made_by"] == ds.splits_made_by and splits["fit_split"] == "train"
    assert splits["sizes"]["test_seen"]["ratings"] == 204 and splits["sizes"]["train"]["users"] == 51
    assert sum(s["ratings"] for s in splits["sizes"].values()) == 2400


def test_data_split_writes_a_table_that_gives_the_same_split(table, tmp_path, capsys):
    out = tmp_path / "split.csv"
    assert main(["data", "split", "--data", str(table), "--out", str(out)]) == 0
    assert "wrote 2,400 rows with their split" in capsys.readouterr().out
    written = pd.read_csv(out)
    assert list(written.columns) == ["user_id", "item_id", "score", "split"]
    assert written["score"].dtype == np.int64  # integral scores stay integers
    original, again = load_dataset(table), load_dataset(out)
    assert again.splits_made_by == "the table's split column"
    for split in original.splits:

        def rows(ds, split=split):
            r = ds.ratings[split]
            return set(zip(ds.user_ids[r.user_idx], ds.image_ids[r.image_idx], r.score.tolist(), strict=True))

        assert rows(again) == rows(original)
    assert main(["data", "split", "--data", str(table), "--out", str(out)]) == 2  # exists
    assert "--overwrite" in capsys.readouterr().err
    parquet = tmp_path / "split.parquet"
    assert (
        main(["data", "split", "--data", str(table), "--holdout", "random:0.2", "--out", str(parquet)]) == 0
    )
    assert set(pd.read_parquet(parquet)["split"]) == {"train", "val_seen", "test_seen"}
    assert main(["data", "split", "--data", str(table), "--out", str(tmp_path / "x.txt")]) == 2


def test_fit_on_all_knows_every_user(table, tmp_path, capsys):
    ds = load_dataset(table)
    new_user = str(ds.user_ids[ds.ratings["test_unseen"].user_idx[0]])
    workspace = tmp_path / "ws"
    common = ["--data", str(table), "--model", "mf", "--workspace", str(workspace)]
    assert main(["similar-users", *common, "--user", new_user, "--k", "3"]) == 2
    assert (
        "no training ratings" in capsys.readouterr().err and not workspace.exists()
    )  # nothing fitted for it
    assert main(["similar-users", *common, "--user", new_user, "--k", "3", "--fit-on", "all", "--json"]) == 0
    neighbours = json.loads(capsys.readouterr().out)
    assert len(neighbours) == 3 and new_user not in {n["user_id"] for n in neighbours}
    assert main(["similar-users", *common, "--user", "u1", "--k", "3", "--json"]) == 0  # fit on train
    capsys.readouterr()
    saved = sorted(p.name for p in (workspace / "models").iterdir())
    assert len(saved) == 2  # one model fitted on train, one on all: never taken for each other
    everything = ds.all_as_train()
    assert everything.split_sizes() == {"train": {"ratings": 2400, "users": 60, "images": 80}}
    assert fitted_model_dir(workspace, "mf", {}, everything, "all") != fitted_model_dir(
        workspace, "mf", {}, everything
    )
    model, similar = load_or_fit("mf", everything, workspace=workspace, fit_on="all", progress=False)
    assert model.known_.all()
    health = TestClient(create_app(model, everything, similar)).get("/health").json()
    assert health["users"] == 60
    candidates = tmp_path / "candidates.txt"
    candidates.write_text("i1\ni2\ni3\n")
    rank = ["rank", *common, "--user", new_user, "--images", str(candidates), "--json"]
    assert main(rank) == 2  # not fitted on train
    assert "was not fitted" in capsys.readouterr().err
    assert main([*rank, "--fit-on", "all"]) == 0
    ranking = json.loads(capsys.readouterr().out)
    assert [r["rank"] for r in ranking] == [1, 2, 3] and {r["image_id"] for r in ranking} == {
        "i1",
        "i2",
        "i3",
    }


def test_data_split_of_choices_keeps_each_choice_in_its_split(tmp_path, capsys):
    rng = np.random.default_rng(0)
    every_pair = [(a, b) for a in range(12) for b in range(a + 1, 12)]
    rows = []
    for u in range(40):
        for first, second in rng.permutation(every_pair)[:20]:
            rows.append((f"u{u}", f"i{first}", f"i{second}", rng.choice(["a", "b", "tie"])))
    pairs = tmp_path / "pairs.csv"
    pd.DataFrame(rows, columns=["user_id", "item_a", "item_b", "choice"]).to_csv(pairs, index=False)
    out = tmp_path / "pairs_split.csv"
    assert main(["data", "split", "--data", str(pairs), "--out", str(out)]) == 0
    capsys.readouterr()
    written = pd.read_csv(out)
    assert list(written.columns) == ["user_id", "item_a", "item_b", "choice", "split"]
    original, again = load_dataset(pairs), load_dataset(out)
    for split in original.choice_splits:

        def rows_of(ds, split=split):
            p = ds.choices[split]
            a, b = ds.image_ids[p.image_a], ds.image_ids[p.image_b]
            return set(zip(ds.user_ids[p.user_idx], a, b, p.choice.tolist(), strict=True))

        assert rows_of(again) == rows_of(original)
