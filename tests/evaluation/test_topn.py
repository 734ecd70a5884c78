"""The top-N task: candidates by hand, metrics against a brute-force ranking, the leaderboard's rows and files."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from recsys.cli import main
from recsys.data.dataset import Dataset, Ratings
from recsys.errors import UserError
from recsys.evaluation.evaluator import Evaluator
from recsys.evaluation.topn import Popularity, TopNScorer, candidates, default_relevant_at
from recsys.leaderboard import run_leaderboard
from recsys.report import write_leaderboard


def ratings(rows) -> Ratings:
    users, images, scores = zip(*rows, strict=True) if rows else ((), (), ())
    return Ratings(np.array(users, np.int64), np.array(images, np.int64), np.array(scores, np.float32))


@pytest.fixture
def tiny() -> Dataset:
    """3 users, 6 images; user 2 has no test rating; user 1's only test rating is below 4."""
    return Dataset(
        name="tiny",
        simulated=False,
        pamela_semantics=False,
        user_ids=np.array(["a", "b", "c"], dtype=object),
        image_ids=np.array([f"i{i}" for i in range(6)], dtype=object),
        users=pd.DataFrame(index=range(3)),
        images=pd.DataFrame(index=range(6)),
        ratings={
            "train": ratings([(0, 0, 5), (0, 1, 2), (1, 0, 4), (1, 2, 3), (2, 3, 5)]),
            "val_seen": ratings([(0, 2, 3)]),
            "test_seen": ratings([(0, 4, 5), (0, 5, 2), (1, 1, 3)]),
        },
        score_range=(1.0, 5.0),
    )


def test_candidates_leave_out_train_and_val_seen_and_hold_the_test_scores(tiny):
    table = candidates(tiny, "test_seen")
    # user a rated 0, 1 (train) and 2 (val_seen): candidates 3, 4, 5; user b rated 0, 2: candidates 1, 3, 4, 5
    assert table.user_idx.tolist() == [0, 0, 0, 1, 1, 1, 1]
    assert table.image_idx.tolist() == [3, 4, 5, 1, 3, 4, 5]
    np.testing.assert_array_equal(table.score, [np.nan, 5, 2, 3, np.nan, np.nan, np.nan])
    assert default_relevant_at(tiny) == 4.0


class Fixed:
    """A stand-in model with a fixed score per image (the same for every user)."""

    name = "fixed"

    def __init__(self, scores):
        self.scores = np.asarray(scores, float)

    def predict(self, user_idx, image_idx):
        return self.scores[image_idx]


def test_rows_by_hand(tiny):
    evaluator = Evaluator(tiny, shots=(0,), scorer=TopNScorer(ks=(1, 2)), n_bootstrap=50)
    # user a: candidates 3, 4, 5 scored 0.9, 0.5, 0.7 -> ranking 3, 5, 4; relevant: 4 (rated 5 >= 4)
    row = evaluator.evaluate(Fixed([0, 0, 0, 0.9, 0.5, 0.7]), "test_seen")
    assert row.metrics == pytest.approx({"recall@1": 0.0, "ndcg@1": 0.0, "recall@2": 0.0, "ndcg@2": 0.0})
    # user b has no relevant image (its test rating 3 < 4): every user counted, one averaged
    assert row.n_users == 2 and row.metric_users == dict.fromkeys(row.metrics, 1)
    row = evaluator.evaluate(Fixed([0, 0, 0, 0.9, 0.8, 0.7]), "test_seen")  # ranking 3, 4, 5
    assert row.metrics == pytest.approx(
        {"recall@1": 0.0, "ndcg@1": 0.0, "recall@2": 1.0, "ndcg@2": 1 / math.log2(3)}
    )
    # a lower threshold makes b's 3 relevant; ties put a's relevant image after the irrelevant one
    evaluator = Evaluator(tiny, shots=(0,), scorer=TopNScorer(ks=(1,), relevant_at=3), n_bootstrap=50)
    row = evaluator.evaluate(Fixed(np.zeros(6)), "test_seen")
    assert row.metrics == {"recall@1": 0.0, "ndcg@1": 0.0} and row.metric_users["recall@1"] == 2
    # the predictions keep each user's top max(k) as ranked: one row per user here
    assert row.predictions.user_idx.tolist() == [0, 1]


class Peeker:
    """Scores every candidate by its held-out rating (0 when not held out): every relevant image comes first."""

    name = "peeker"

    def __init__(self, dataset: Dataset):
        held = dataset.ratings["test_seen"]
        self.table = {
            (int(u), int(i)): float(s)
            for u, i, s in zip(held.user_idx, held.image_idx, held.score, strict=True)
        }

    def predict(self, user_idx, image_idx):
        return np.array(
            [self.table.get((int(u), int(i)), 0.0) for u, i in zip(user_idx, image_idx, strict=True)]
        )


def test_metrics_match_a_brute_force_ranking_on_a_simulation(small_sim):
    scorer = TopNScorer(ks=(5, 20))
    evaluator = Evaluator(small_sim, shots=(0,), scorer=scorer, n_bootstrap=50)
    popularity = Popularity(small_sim)
    row = evaluator.evaluate(popularity, "test_seen")
    train, val = small_sim.ratings["train"], small_sim.ratings["val_seen"]
    counts = np.bincount(train.image_idx, minlength=small_sim.n_images)
    held = small_sim.ratings["test_seen"]
    expected: dict[str, list[float]] = {m: [] for m in row.metrics}
    for user in np.unique(held.user_idx):
        rated = set(train.image_idx[train.user_idx == user]) | set(val.image_idx[val.user_idx == user])
        liked = set(held.image_idx[(held.user_idx == user) & (held.score >= 4)].tolist())
        if not liked:
            continue
        pool = [i for i in range(small_sim.n_images) if i not in rated]
        ranked = sorted(pool, key=lambda i: (-counts[i], i in liked))
        for k in (5, 20):
            hits = [i in liked for i in ranked[:k]]
            expected[f"recall@{k}"].append(sum(hits) / len(liked))
            ideal = sum(1 / math.log2(j + 2) for j in range(min(k, len(liked))))
            expected[f"ndcg@{k}"].append(sum(1 / math.log2(j + 2) for j, h in enumerate(hits) if h) / ideal)
    assert row.metrics == pytest.approx({m: np.mean(v) for m, v in expected.items()})
    assert row.metric_users == {m: len(v) for m, v in expected.items()}
    lo, hi = row.ci95["recall@5"]
    assert lo <= row.metrics["recall@5"] <= hi
    # a scorer that knows the held-out ratings puts every relevant image first: ndcg 1, recall min(k, R) / R
    perfect = evaluator.evaluate(Peeker(small_sim), "test_seen")
    assert perfect.metrics["ndcg@5"] == pytest.approx(1.0) and perfect.metrics["ndcg@20"] == pytest.approx(
        1.0
    )
    relevant = [((held.user_idx == u) & (held.score >= 4)).sum() for u in np.unique(held.user_idx)]
    assert perfect.metrics["recall@5"] == pytest.approx(np.mean([min(5, r) / r for r in relevant if r]))


def test_the_topn_leaderboard(small_sim, tmp_path):
    board = run_leaderboard(
        small_sim, ["biases", "global_mean"], task="topn", topn_ks=(10,), progress=False, jobs=1
    )
    assert [(r.model, r.split) for r in board.rows] == [
        ("biases", "test_seen"), ("global_mean", "test_seen"), ("popularity", "test_seen")
    ]  # fmt: skip
    constant = board.rows[1]  # equal scores rank every relevant image last: nothing found
    assert constant.metrics == {"recall@10": 0.0, "ndcg@10": 0.0}
    assert board.rows[0].metrics["ndcg@10"] > 0 and board.shots == ()
    paths = write_leaderboard(board, tmp_path / "board")
    saved = json.loads(paths["json"].read_text())
    assert saved["task"] == "topn" and saved["topn"]["relevant_at"] == 4.0
    assert saved["rows"][2]["model"] == "popularity" and set(saved["rows"][0]["metrics"]) == {
        "recall@10",
        "ndcg@10",
    }
    table = pd.read_csv(paths["csv"])
    assert {"recall@10", "ndcg@10", "recall@10_lo", "ndcg@10_hi"} <= set(table.columns)
    markdown = paths["md"].read_text()
    assert "top-N task" in markdown and "| popularity |" in markdown
    with pytest.raises(UserError, match="seen users .test_seen, val_seen., not test_unseen"):
        run_leaderboard(small_sim, ["biases"], task="topn", splits=["test_unseen"], progress=False)
    with pytest.raises(UserError, match="--task topn has none"):
        run_leaderboard(small_sim, ["biases"], task="topn", references="uncertainty", progress=False)
    with pytest.raises(UserError, match="unknown task 'ranking'"):
        run_leaderboard(small_sim, ["biases"], task="ranking", progress=False)
    with pytest.raises(UserError, match="cut-offs must be positive integers"):
        run_leaderboard(small_sim, ["biases"], task="topn", topn_ks=(0,), progress=False)


def test_a_model_that_cannot_score_every_candidate_is_unsupported(tiny):
    class Partial(Fixed):
        def predict(self, user_idx, image_idx):
            raise UserError("partial: image i5 has no training ratings")

    row = Evaluator(tiny, shots=(0,), scorer=TopNScorer()).evaluate(Partial(np.zeros(6)), "test_seen")
    assert row.status == "unsupported" and row.reason.endswith("partial: image i5 has no training ratings")


def test_leaderboard_command_task_topn(tmp_path, capsys):
    from test_api import write_table

    table = write_table(tmp_path / "ratings.csv")
    out = tmp_path / "board"
    common = ["leaderboard", "--data", str(table), "--models", "biases", "--no-tracking"]
    assert (
        main([*common, "--holdout", "random:0.2", "--task", "topn", "--topn-k", "5", "--out", str(out)]) == 0
    )
    printed = capsys.readouterr().out
    assert "recall@5" in printed and "popularity" in printed
    saved = json.loads((out / "leaderboard.json").read_text())
    assert [r["model"] for r in saved["rows"]] == ["biases", "popularity"] and saved["topn"]["ks"] == [5]
    assert main([*common, "--holdout", "users:0.2", "--task", "topn", "--out", str(tmp_path / "b2")]) == 2
    assert "lacks (it has train, val_unseen, test_unseen)" in capsys.readouterr().err
