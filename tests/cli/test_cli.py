"""The command line end to end on a small simulation."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from recsys.cli import main


@pytest.mark.slow
def test_simulate_then_leaderboard(tmp_path, capsys):
    data = tmp_path / "sim"
    assert main(["data", "simulate", "--out", str(data), "--users", "40", "--images", "300",
                 "--ratings-per-user", "80", "--image-size", "24", "--feature-dim", "32"]) == 0  # fmt: skip
    assert "SIMULATED" in capsys.readouterr().out
    assert main(["data", "validate", str(data)]) == 0
    out = tmp_path / "board"
    assert main(["leaderboard", "--data", str(data), "--out", str(out), "--shots", "0,5", "--models", "baselines",
                 "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "SIMULATED" in printed and "user_ridge" in printed
    board = json.loads((out / "leaderboard.json").read_text())
    assert board["dataset"]["simulated"] is True
    assert {k: board["protocol"][k] for k in ("seed", "shots", "draws")} == {
        "seed": 0,
        "shots": [0, 5],
        "draws": 5,
    }
    models = {r["model"] for r in board["rows"]}
    assert models == {"global_mean", "metadata_mean", "ridge", "user_ridge", "oracle"}
    row = next(
        r
        for r in board["rows"]
        if r["model"] == "user_ridge" and r["split"] == "test_unseen" and r["shots"] == 5
    )
    best_of_n = {f"best_of_n_{m}@{n}" for m in ("uplift", "hit", "true_uplift") for n in (2, 4, 8)}
    assert (
        set(row["metrics"])
        == {"rmse", "mae", "plcc", "srocc", "user_srocc", "pairwise_acc", "ndcg@10"} | best_of_n
    )
    assert row["ci95"]["user_srocc"][0] <= row["metrics"]["user_srocc"] <= row["ci95"]["user_srocc"][1]
    seen = next(r for r in board["rows"] if r["split"] == "test_seen")
    assert seen["shots"] is None
    for ext in ("csv", "md", "png"):
        assert (out / f"leaderboard.{ext}").stat().st_size > 0
    markdown = (out / "leaderboard.md").read_text()
    assert "Simulated data" in markdown and "As reported" in markdown
    assert "tracked as MLflow run" in printed


def test_unknown_model_and_split_are_one_line_errors(small_sim_dir, tmp_path, capsys):
    assert (
        main(["leaderboard", "--data", str(small_sim_dir), "--models", "nope", "--out", str(tmp_path)]) == 2
    )
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert (
        main(["leaderboard", "--data", str(small_sim_dir), "--splits", "test_x", "--out", str(tmp_path)]) == 2
    )
    assert "no split(s) test_x" in capsys.readouterr().err


def test_installed_entry_point_exits_2_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "recsys.cli", "data", "validate", str(tmp_path / "missing")],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
