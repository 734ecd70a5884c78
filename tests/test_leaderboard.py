"""The leaderboard and its files: draws, the k-curve on fixed queries, predictions, provenance, the data policy."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from experiments.reported import reported_table_markdown
from recsys.cli import main
from recsys.data.dataset import Ratings
from recsys.errors import UserError
from recsys.leaderboard import run_leaderboard
from recsys.models import create_model
from recsys.report import format_table, to_markdown, write_leaderboard

PREDICTION_COLUMNS = (
    "run_id dataset simulated model tuned_study split shots draw user_id image_id score prediction"
)


@pytest.fixture(scope="module")
def curve_board(small_sim, tmp_path_factory):
    board = run_leaderboard(
        small_sim, ["global_mean", "user_ridge", "mf"], shots=(0, 2, 5), draws=2, progress=False
    )
    return board, write_leaderboard(board, tmp_path_factory.mktemp("board"))


def test_a_k_curve_scores_the_same_users_on_the_same_queries_at_every_k(curve_board):
    board, paths = curve_board
    assert {"curve_csv", "curve_png", "predictions"} <= set(paths)
    curve = pd.read_csv(paths["curve_csv"])
    assert set(curve["shots"]) == {0, 2, 5} and set(curve["metric"]) == {"user_srocc", "pairwise_acc"}
    assert curve["n_queries"].nunique() == 1 and curve["n_users"].nunique() == 1
    predictions = pd.read_parquet(paths["predictions"])
    unseen = predictions[(predictions["split"] == "test_unseen") & (predictions["model"] == "user_ridge")]
    keys = {
        k: set(map(tuple, part[["draw", "user_id", "image_id"]].to_numpy().tolist()))
        for k, part in unseen.groupby("shots")
    }
    assert keys[0] == keys[2] == keys[5] and len(keys[0]) == len(unseen) // 3
    assert set(unseen["draw"]) == {0, 1}


def test_predictions_file_holds_every_scored_query_with_provenance(curve_board, small_sim):
    board, paths = curve_board
    predictions = pd.read_parquet(paths["predictions"])
    assert list(predictions.columns) == PREDICTION_COLUMNS.split()
    assert (predictions["run_id"] == board.run_id).all() and (predictions["dataset"] == small_sim.name).all()
    assert predictions["simulated"].all()
    seen = predictions[(predictions["split"] == "test_seen") & (predictions["model"] == "user_ridge")]
    assert seen["shots"].isna().all() and seen["draw"].isna().all()
    r = small_sim.ratings["test_seen"]
    assert len(seen) == len(r)
    refit = create_model("user_ridge").fit(small_sim)  # an independent refit predicts the same
    np.testing.assert_allclose(seen["prediction"].to_numpy(), refit.predict(r.user_idx, r.image_idx))
    np.testing.assert_allclose(seen["score"].to_numpy(), r.score)


def test_every_per_row_file_carries_run_dataset_and_simulated(curve_board, small_sim):
    board, paths = curve_board
    for key in ("csv", "per_user", "curve_csv"):
        table = pd.read_csv(paths[key])
        assert list(table.columns[:3]) == ["run_id", "dataset", "simulated"], key
        assert (table["run_id"] == board.run_id).all() and (table["dataset"] == small_sim.name).all()
        assert table["simulated"].all()
    saved = json.loads(paths["json"].read_text())
    assert saved["run_id"] == board.run_id and saved["protocol"]["draws"] == 2


def test_the_data_policy_is_recorded_per_row_and_stated(curve_board):
    board, paths = curve_board
    rows = json.loads(paths["json"].read_text())["rows"]
    policy = {(r["model"], r["fit_split"], r["validation_split"]) for r in rows}
    # mf stops early on val_seen; the ridge and the mean use train only
    assert policy == {
        ("global_mean", "train", None),
        ("user_ridge", "train", None),
        ("mf", "train", "val_seen"),
    }
    markdown = paths["md"].read_text()
    assert "**Data policy.** Every model fits on train" in markdown and "uses val_seen" in markdown


def test_intervals_are_shown_as_lo_hi_not_plus_minus(curve_board):
    board, paths = curve_board
    row = next(r for r in board.rows if r.model == "user_ridge" and r.split == "test_seen")
    lo, hi = row.ci95["user_srocc"]
    expected = f"{row.metrics['user_srocc']:.3f} [{lo:.3f}, {hi:.3f}]"
    assert expected in paths["md"].read_text() and expected in format_table(board)
    assert "±" not in paths["md"].read_text() + format_table(board)


def test_users_column_counts_the_users_user_srocc_averaged(small_sim):
    """A test_seen user with one score on every query has nothing to rank: left out of user_srocc, and the
    users column says so."""
    r = small_sim.ratings["test_seen"]
    flat = r.score.copy()
    flat[r.user_idx == r.user_idx[0]] = 3.0
    ds = replace(small_sim, ratings=small_sim.ratings | {"test_seen": Ratings(r.user_idx, r.image_idx, flat)})
    board = run_leaderboard(ds, ["ridge"], splits=["test_seen"], progress=False)
    row = board.rows[0]
    n_users = len(np.unique(r.user_idx))
    assert row.n_users == n_users and row.metric_users["user_srocc"] == n_users - 1
    assert f"| ridge | {n_users - 1} |" in to_markdown(board)


def test_two_k_values_draw_no_curve(small_sim, tmp_path):
    board = run_leaderboard(small_sim, ["global_mean"], shots=(0, 5), draws=1, progress=False)
    paths = write_leaderboard(board, tmp_path)
    assert "curve_png" not in paths and not (tmp_path / "curve.png").exists()


def test_as_reported_appears_for_pamela_data_only_and_cites_no_file(small_sim_dir, tmp_path):
    users, items = np.repeat(np.arange(12), 20), np.tile(np.arange(20), 12)
    table = pd.DataFrame({"user_id": users, "item_id": items, "score": (users + items) % 5 + 1.0})
    table.to_csv(tmp_path / "ratings.csv", index=False)
    common = ["--models", "global_mean", "--no-tracking", "--shots", "0", "--draws", "1"]
    argv = ["leaderboard", "--data", str(tmp_path / "ratings.csv"), "--splits", "test_seen"]
    assert main([*argv, "--out", str(tmp_path / "table"), *common]) == 0
    assert "As reported" not in (tmp_path / "table" / "leaderboard.md").read_text()
    assert (
        main(["leaderboard", "--data", str(small_sim_dir), "--out", str(tmp_path / "pamela"), *common]) == 0
    )
    assert "As reported" in (tmp_path / "pamela" / "leaderboard.md").read_text()
    reported = reported_table_markdown()
    for source in ("2511.00609", "2508.08220", "2407.07176", "ECCV 2024", "ICLR 2025"):
        assert source in reported
    assert ".md" not in reported and "ANCHORS" not in reported


def test_worker_processes_give_the_serial_rows(small_sim):
    """--jobs 2 fits models in two spawned processes: every row (metrics, intervals, predictions) is the one the
    serial run gives, in the same order; auto stays serial on a run too small to pay for the workers.

    This process runs BLAS on two threads (as it does by default on two cores), the workers on one: the
    predictions are equal to the last bit only because every fit runs single-threaded in both."""
    from threadpoolctl import threadpool_limits

    from recsys.leaderboard import resolve_jobs

    models = ["ridge", "mf", "item_knn"]
    with threadpool_limits(2, "blas"):
        serial = run_leaderboard(small_sim, models, draws=2, jobs=1, progress=False)
    parallel = run_leaderboard(small_sim, models, draws=2, jobs=2, progress=False)
    assert [(r.model, r.split, r.shots) for r in parallel.rows] == [
        (r.model, r.split, r.shots) for r in serial.rows
    ]
    for a, b in zip(serial.rows, parallel.rows, strict=True):
        assert a.metrics == b.metrics and a.ci95 == b.ci95
        np.testing.assert_array_equal(a.predictions.prediction, b.predictions.prediction)
    assert resolve_jobs("auto", small_sim, "train", len(models)) == 1
    with pytest.raises(UserError, match="--jobs"):
        resolve_jobs(0, small_sim, "train", 3)


def test_auto_jobs_stay_in_one_process_when_the_features_are_too_large_to_copy(monkeypatch):
    from types import SimpleNamespace

    from recsys import leaderboard

    monkeypatch.setattr(leaderboard, "available_cores", lambda: 2)
    many = {"train": np.zeros(30_000)}  # only their length is read
    small = SimpleNamespace(ratings=many, choices={}, image_features=np.zeros((10, 4), np.float16))
    assert leaderboard.resolve_jobs("auto", small, "train", 4) == 2
    assert leaderboard.resolve_jobs("auto", small, "train", 3) == 1  # too few models to pay for workers
    monkeypatch.setattr(leaderboard, "AUTO_JOBS_MAX_FEATURE_BYTES", 79)  # the features are 10 x 4 x 2 bytes
    assert leaderboard.resolve_jobs("auto", small, "train", 4) == 1
    assert leaderboard.resolve_jobs(2, small, "train", 4) == 2  # asked for: as asked
