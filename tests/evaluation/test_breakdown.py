"""Breakdowns by user group and image group against hand computations, scipy and brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import stats
from test_api import write_table

from recsys.data import load_dataset
from recsys.evaluation import breakdown as bd
from recsys.evaluation.evaluator import Predictions, Result
from recsys.evaluation.metrics import bootstrap_ci
from recsys.leaderboard import run_leaderboard
from recsys.report import write_leaderboard


def result(per_user: dict, predictions: Predictions | None = None) -> Result:
    return Result("m", "test_seen", None, len(per_user), 0, {"user_srocc": 0.0}, None, 0.0, 0.0,
                  per_user={"user_srocc": per_user}, predictions=predictions)  # fmt: skip


def test_user_group_means_match_a_hand_groupby():
    rng = np.random.default_rng(0)
    n = 60
    nations = list("ABCDEFGH")  # 8 nationalities, A most common ... H least
    users = pd.DataFrame(
        {
            "age": rng.integers(16, 70, n),
            "gender": rng.choice(["f", "m"], n),
            "nationality": np.repeat(nations, [14, 11, 9, 8, 7, 5, 4, 2]),
        }
    )
    values = rng.uniform(-0.2, 0.9, n)
    row = result(dict(enumerate(values)))
    found = pd.DataFrame(bd.demographic_breakdown(row, bd.user_groupings(users), seed=3))
    frame = users.assign(value=values)
    age = frame["age"]
    frame["age_bin"] = np.select(
        [age < 18, age < 25, age < 35, age < 45, age < 55], ["<18", "18-24", "25-34", "35-44", "45-54"], "55+"
    )
    frame["nation"] = frame["nationality"].where(frame["nationality"].isin(list("ABCDEF")), "other")
    for dimension, column in (("age", "age_bin"), ("gender", "gender"), ("nationality", "nation")):
        hand = frame.groupby(column)["value"].agg(["mean", "size"])
        mine = found[found["dimension"] == dimension].set_index("group")
        assert set(mine.index) == set(hand.index)
        assert np.allclose(mine.loc[hand.index, "user_srocc"], hand["mean"])
        assert (mine.loc[hand.index, "n_users"] == hand["size"]).all()
        for group in hand.index:
            lo, hi = bootstrap_ci(frame.loc[frame[column] == group, "value"].to_numpy(), seed=3)
            assert mine.loc[group, "ci_low"] == lo and mine.loc[group, "ci_high"] == hi
    assert found.loc[found["group"] == "other", "n_users"].item() == 6  # G and H pooled
    # ages that are not years of age: quartile bins of about a quarter of the users each, labelled by the
    # lowest and highest age in each (not by the quantile edges, 199.999-298.75)
    months = bd.age_groups(pd.Series(np.arange(200, 600, 5)))
    assert len(months.levels) == 4 and np.bincount(months.codes).tolist() == [20, 20, 20, 20]
    assert months.levels == ("200-295", "300-395", "400-495", "500-595")
    # MovieLens-100k's ages (7 to 73) are years of age: the fixed bins, the children under 18
    movielens = bd.age_groups(pd.Series([7, 13, 18, 24, 25, 40, 73]))
    assert movielens.levels[:2] == ("<18", "18-24")
    assert [movielens.levels[c] for c in movielens.codes] == [
        "<18",
        "<18",
        "18-24",
        "18-24",
        "25-34",
        "35-44",
        "55+",
    ]


def test_per_category_srocc_is_scipy_on_the_users_subset_averaged_over_draws():
    rng = np.random.default_rng(1)
    image_type = np.array([0, 1] * 15)  # 30 images of two types
    rows = []
    for draw in (0, 1):
        for user in range(4):
            images = rng.choice(30, 12 if user < 3 else 5, replace=False)
            for image in images:
                rows.append((user, image, float(rng.integers(1, 6)), float(rng.normal()), draw))
    user, image, score, pred, draw = map(np.array, zip(*rows, strict=True))
    score[(user == 2) & (image_type[image] == 0) & (draw == 0)] = 3.0  # constant truth: skipped in that draw
    p = Predictions(user, image, score, pred, draw)
    table = bd.category_srocc(result({}, p), image_type).set_index(["user", "level"])["value"]
    expected = {}
    for (u, level), part in pd.DataFrame(
        {"u": user, "level": image_type[image], "s": score, "p": pred, "d": draw}
    ).groupby(["u", "level"]):
        per_draw = [
            stats.spearmanr(d["s"], d["p"])[0]
            for _, d in part.groupby("d")
            if len(d) >= bd.MIN_CATEGORY_QUERIES and d["s"].nunique() > 1
        ]
        if per_draw:
            expected[(u, level)] = np.mean(per_draw)
    assert set(table.index) == set(expected)
    assert all(table[key] == pytest.approx(value) for key, value in expected.items())


def test_largest_gap_is_the_brute_force_maximum_over_pairs():
    rng = np.random.default_rng(2)
    for _ in range(50):
        k = rng.integers(1, 8)
        means = rng.uniform(0, 1, k)
        half = rng.uniform(0.01, 0.2, k)
        groups = pd.DataFrame(
            {
                "dimension": "d",
                "group": [f"g{i}" for i in range(k - 1)] + [rng.choice(["other", f"g{k}"])],
                "n_users": rng.integers(2, 12, k),
                "user_srocc": means,
                "ci_low": means - half,
                "ci_high": means + half,
            }
        )
        eligible = groups[(groups["n_users"] >= 5) & (groups["group"] != "other")]
        pairs = list(itertools.permutations(eligible.itertuples(), 2))
        gap = bd.largest_gap(groups)
        if not pairs:
            assert gap is None
            continue
        high, low = max(pairs, key=lambda pair: pair[0].user_srocc - pair[1].user_srocc)
        assert gap["gap"] == pytest.approx(high.user_srocc - low.user_srocc)
        assert (gap["high"], gap["low"]) == (high.group, low.group)
        assert gap["separated"] == (low.ci_high < high.ci_low)


def test_the_gap_flagged_is_the_largest_separated_one_else_the_largest():
    def lines(dimension, means, half):
        return pd.DataFrame(
            {
                "model": "m",
                "dimension": dimension,
                "group": ["a", "b"],
                "n_users": [10, 10],
                "user_srocc": means,
                "ci_low": np.subtract(means, half),
                "ci_high": np.add(means, half),
            }
        )

    wide = lines("style", [0.2, 0.7], 0.3)  # gap 0.5, intervals overlap
    narrow = lines("age", [0.5, 0.6], 0.01)  # gap 0.1, intervals apart
    assert bd.gaps(pd.concat([wide, narrow]))["m"]["dimension"] == "age"
    assert bd.gaps(wide)["m"]["gap"] == pytest.approx(0.5)  # no separated gap: the largest


def test_leaderboard_writes_the_breakdown(small_sim, tmp_path):
    board = run_leaderboard(small_sim, ["global_mean", "ridge"], shots=(0, 5), draws=2, progress=False)
    paths = write_leaderboard(board, tmp_path / "set")
    table = pd.read_csv(paths["breakdown_csv"], dtype={"run_id": str})
    assert list(table.columns) == [*("run_id", "dataset", "simulated"), *bd.COLUMNS]
    assert set(table["run_id"]) == {board.run_id} and table["simulated"].all()
    assert set(table["dimension"]) == set(bd.all_dimensions())
    assert {(s, k) for s, k in zip(table["split"], table["shots"].fillna(-1), strict=True)} == {
        ("test_seen", -1),
        ("test_unseen", 0),
        ("test_unseen", 5),
    }
    ridge = next(r for r in board.rows if r.model == "ridge" and r.split == "test_seen")
    age = table[(table["model"] == "ridge") & (table["split"] == "test_seen") & (table["dimension"] == "age")]
    assert age["n_users"].sum() == ridge.metric_users["user_srocc"]  # every user has an age
    overall = (age["user_srocc"] * age["n_users"]).sum() / age["n_users"].sum()
    assert overall == pytest.approx(ridge.metrics["user_srocc"])
    assert Image.open(paths["breakdown_png"]).text["run_id"] == board.run_id
    markdown = paths["md"].read_text()
    assert "## Breakdowns" in markdown and "| ridge | " in markdown and "Not broken down" not in markdown


def test_a_plain_table_states_the_missing_dimensions(tmp_path, monkeypatch):
    monkeypatch.setenv("RECSYS_HOME", str(tmp_path / "home"))
    ds = load_dataset(write_table(tmp_path / "ratings.csv"), holdout="random:0.2")
    board = run_leaderboard(ds, ["biases"], progress=False)
    paths = write_leaderboard(board, tmp_path / "set")
    assert "breakdown_csv" not in paths and not (tmp_path / "set" / "breakdown.png").exists()
    assert (
        f"Not broken down: the data have none of {', '.join(bd.all_dimensions())}." in paths["md"].read_text()
    )
