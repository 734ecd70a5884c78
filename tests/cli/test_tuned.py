"""``recsys leaderboard --tuned``: one refit path, ``experiments.tuning.run_tuned_leaderboard``."""

from __future__ import annotations

import json
from types import SimpleNamespace

import optuna
import pandas as pd
import pytest

from experiments import tuning
from recsys.cli import main
from recsys.models.registry import create_model


@pytest.fixture
def recorded(monkeypatch):
    """run_tuned_leaderboard with the studies and the leaderboard replaced by recorders."""
    calls: dict = {}

    def tuned_models(models, dataset, *, storage=None, study_prefix="recsys", seed=0, draws=5, untuned=None):
        calls["studied"], calls["protocol"] = list(models), (seed, draws)
        params = {"alpha": 1.5, "tuned": True}
        untuned |= {m: "no study" for m in models if m in ("oracle", "biases")}
        return {
            m: tuning.TunedModel(m, f"{study_prefix}-{m}", params, None) for m in models if m not in untuned
        }

    def run_leaderboard(dataset, models, **kwargs):
        calls["models"], calls["kwargs"] = models, kwargs
        return "board"

    import recsys.leaderboard

    monkeypatch.setattr(tuning, "tuned_models", tuned_models)
    monkeypatch.setattr(recsys.leaderboard, "run_leaderboard", run_leaderboard)
    return calls


def test_tuned_fits_where_untuned_does_with_overrides(recorded, capsys):
    dataset = SimpleNamespace(ratings={"train": 0, "val_seen": 0, "test_seen": 0}, ground_truth=object())
    board = tuning.run_tuned_leaderboard(
        dataset,
        ["ridge", "biases", "oracle"],
        params={"ridge": {"alpha": 7.0}, "other": {"x": 1}},
        splits=["test_seen"],
        shots=[5],
        seed=3,
        draws=2,
    )
    assert board == "board"
    assert recorded["studied"] == ["ridge", "biases", "oracle"] and recorded["protocol"] == (3, 2)
    assert recorded["models"] == ["ridge", "biases", "oracle"]
    kwargs = recorded["kwargs"]
    assert kwargs["fit_split"] == "train"  # as without --tuned (DATA_POLICY), never train+val_seen
    assert kwargs["params"] == {"ridge": {"alpha": 7.0, "tuned": True}, "biases": {}, "oracle": {}}
    assert set(kwargs["tuned"]) == {"ridge"} and kwargs["tuned"]["ridge"]["study"] == "recsys-ridge"
    assert kwargs["defaults"] == {"biases": "no study", "oracle": "no study"}
    assert (kwargs["splits"], kwargs["shots"], kwargs["seed"], kwargs["draws"]) == (["test_seen"], [5], 3, 2)
    # a line for the model that has hyperparameters but no study (the oracle has none to tune)
    assert capsys.readouterr().err == "biases: no study; it runs at its defaults\n"


def test_leaderboard_tuned_command(small_sim, small_sim_dir, tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    for model in ("ridge", "metadata_mean"):
        tuning.tune(
            small_sim,
            model,
            trials=2,
            storage=storage,
            study=tuning.study_name(model, "cli"),
            tracking=False,
            progress=False,
        )
    out = tmp_path / "board"
    argv = ["leaderboard", "--tuned", "--models", "ridge,metadata_mean,biases,oracle", "--data", str(small_sim_dir),
            "--storage", storage, "--study-prefix", "cli", "--shots", "5", "--splits", "test_unseen",
            "--params", '{"metadata_mean": {"shrinkage": 3.5}}', "--out", str(out), "--no-tracking"]  # fmt: skip
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert (
        "biases: no study 'cli-biases' for biases" in captured.err and "runs at its defaults" in captured.err
    )
    board = json.loads((out / "leaderboard.json").read_text())
    best = optuna.load_study(study_name="cli-ridge", storage=storage).best_trial.params
    assert board["params"]["ridge"]["alpha"] == best["alpha"]
    assert board["params"]["metadata_mean"]["shrinkage"] == 3.5  # --params override the study
    assert board["params"]["biases"] == create_model("biases").get_params()  # no study: the defaults
    sources = {r["model"]: (r["params_source"], r["tuned_study"], r["fit_split"]) for r in board["rows"]}
    assert sources == {
        "ridge": ("study", "cli-ridge", "train"),
        "metadata_mean": ("study", "cli-metadata_mean", "train"),
        "biases": ("defaults", None, "train"),
        "oracle": ("defaults", None, "train"),
    }
    assert set(board["defaults"]) == {"biases", "oracle"} and board["data_policy"]["fit_split"] == "train"
    assert "Tuned and untuned rows fit alike" in board["data_policy"]["statement"]
    # every output marks the rows: terminal, Markdown, CSV
    assert "biases (defaults)" in captured.out and "ridge (tuned)" in captured.out
    markdown = (out / "leaderboard.md").read_text()
    assert "| biases (defaults) |" in markdown and "Rows marked **(defaults)**" in markdown
    assert "defaults" in set(pd.read_csv(out / "leaderboard.csv")["params_source"])
    # no study for any model to tune: an error, not a silently untuned board
    assert main([*argv[:-1], "--study-prefix", "none", "--no-tracking", "--overwrite"]) == 2
    assert capsys.readouterr().err.startswith(
        "error: --tuned found no study for any of ridge, metadata_mean, biases"
    )
