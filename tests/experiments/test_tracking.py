from __future__ import annotations

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from experiments.reported import reported_table_markdown
from experiments.tracking import git_commit, log_leaderboard, metric_key, resolve_tracking_uri
from experiments.tuning import tune
from recsys.leaderboard import run_leaderboard
from recsys.report import write_leaderboard


def test_metric_keys_are_mlflow_safe():
    assert metric_key("test_unseen", 10, "ndcg@10") == "test_unseen_10_ndcg_at_10"
    assert metric_key("test_seen", None, "user_srocc") == "test_seen_user_srocc"
    assert metric_key("ridge", "val:seen", "a+b") == "ridge_val_seen_a_b"


def test_tracking_uri_order(tracking_db, monkeypatch, tmp_path):
    assert resolve_tracking_uri() == tracking_db
    assert resolve_tracking_uri("sqlite:///other.db") == "sqlite:///other.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.chdir(tmp_path)
    assert resolve_tracking_uri() == "sqlite:///runs/mlflow.db"
    assert (tmp_path / "runs").is_dir()


def _runs(tracking_db, filter_string):
    mlflow.set_tracking_uri(tracking_db)
    return mlflow.search_runs(experiment_names=["recsys"], filter_string=filter_string, output_format="list")


def test_leaderboard_is_a_parent_run_with_a_child_per_model(tracking_db, small_sim, tmp_path):
    board = run_leaderboard(small_sim, ["ridge", "metadata_mean"], shots=(10,), progress=False)
    files = write_leaderboard(board, tmp_path / "board")
    parent_id = log_leaderboard(board, files, run_name="lb-test")
    client = MlflowClient(tracking_db)
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["dataset_fingerprint"] == small_sim.fingerprint()
    assert parent.data.params["protocol_seed"] == "0"
    assert parent.data.tags["git_commit"] == git_commit() != ""
    assert parent.data.tags["version.numpy"] == __import__("numpy").__version__
    assert parent.data.tags["version.optuna"] not in ("", "not installed")
    assert "ridge_test_unseen_10_ndcg_at_10" in parent.data.metrics
    artifacts = {a.path for a in client.list_artifacts(parent_id)}
    assert {"leaderboard.md", "leaderboard.json", "leaderboard.csv", "leaderboard.png"} <= artifacts
    children = _runs(tracking_db, f"tags.mlflow.parentRunId = '{parent_id}'")
    by_name = {r.info.run_name: r for r in children}
    assert set(by_name) == {"ridge", "metadata_mean"}
    ridge = by_name["ridge"].data
    assert ridge.params["alpha"] == "3.0" and ridge.params["dataset_fingerprint"] == small_sim.fingerprint()
    row = next(r for r in board.rows if r.model == "ridge" and r.split == "test_seen")
    assert ridge.metrics["test_seen_user_srocc"] == pytest.approx(row.metrics["user_srocc"])
    assert ridge.metrics["fit_seconds"] >= 0
    assert "test_unseen_10_pairwise_acc" in ridge.metrics


def test_tuned_rows_are_marked_in_mlflow(tracking_db, small_sim, tmp_path):
    tuned = {"ridge": {"study": "exp-ridge", "params": {"alpha": 3.0}, "stop_epoch": None}}
    board = run_leaderboard(small_sim, ["ridge", "mf"], shots=(0,), draws=1, tuned=tuned, progress=False)
    parent_id = log_leaderboard(board, write_leaderboard(board, tmp_path / "board"), run_name="lb-tuned")
    parent = MlflowClient(tracking_db).get_run(parent_id).data
    assert parent.params["leaderboard_run_id"] == board.run_id and parent.params["draws"] == "1"
    assert parent.params["tuned_models"] == "ridge"
    children = {
        r.info.run_name: r.data for r in _runs(tracking_db, f"tags.mlflow.parentRunId = '{parent_id}'")
    }
    assert children["ridge"].tags["tuned"] == "true" and children["ridge"].tags["study"] == "exp-ridge"
    assert children["ridge"].params["tuned_study"] == "exp-ridge"
    assert children["mf"].tags["tuned"] == "false" and children["mf"].params["validation_split"] == "val_seen"


def test_every_tuning_trial_is_a_child_run(tracking_db, small_sim, tmp_path):
    study = tune(small_sim, "ridge", trials=2, storage=f"sqlite:///{tmp_path / 'o.db'}", study="tracked",
                 progress=False)  # fmt: skip
    parents = _runs(tracking_db, "tags.kind = 'tune' and tags.study = 'tracked'")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.data.metrics["best_value"] == pytest.approx(study.best_value)
    assert parent.data.params["sampler_seed"] == "0"
    trials = _runs(tracking_db, f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert len(trials) == 2
    values = sorted(r.data.metrics["user_srocc"] for r in trials)
    assert values == pytest.approx(sorted(t.value for t in study.trials))
    assert {r.data.params["alpha"] for r in trials} == {str(t.params["alpha"]) for t in study.trials}
    assert all("version.mlflow" in r.data.tags and "git_commit" in r.data.tags for r in trials)


def test_reported_table_is_separate_and_sourced():
    text = reported_table_markdown()
    assert text.startswith("## As reported (not measured here)")
    assert "arXiv 2511.00609" in text and "| ViPer (8B) | Pick-a-Pic |" in text
    assert "| task-vector PIAA | FLICKR-AES | user SROCC | 100-shot | 0.748 |" in text
    assert "**" not in text  # nothing is marked best
