"""``recsys leaderboard --tuned``: one refit path, ``experiments.tuning.run_tuned_leaderboard``."""

from __future__ import annotations

import json
from types import SimpleNamespace

import optuna
import pytest

from experiments import tuning
from recsys.cli import main


@pytest.fixture
def recorded(monkeypatch):
    """run_tuned_leaderboard with the studies and the leaderboard replaced by recorders."""
    calls: dict = {}

    def tuned_models(models, dataset, *, storage=None, study_prefix="recsys", seed=0, draws=5):
        calls["studied"], calls["protocol"] = list(models), (seed, draws)
        params = {"alpha": 1.5, "tuned": True}
        return {m: tuning.TunedModel(m, f"{study_prefix}-{m}", params, None) for m in models if m != "oracle"}

    def run_leaderboard(dataset, models, **kwargs):
        calls["models"], calls["kwargs"] = models, kwargs
        return "board"

    import recsys.leaderboard

    monkeypatch.setattr(tuning, "tuned_models", tuned_models)
    monkeypatch.setattr(recsys.leaderboard, "run_leaderboard", run_leaderboard)
    return calls


def test_refit_on_train_and_val_seen_with_overrides(recorded):
    dataset = SimpleNamespace(ratings={"train": 0, "val_seen": 0, "test_seen": 0}, ground_truth=object())
    board = tuning.run_tuned_leaderboard(
        dataset,
        ["ridge", "oracle"],
        params={"ridge": {"alpha": 7.0}, "other": {"x": 1}},
        splits=["test_seen"],
        shots=[5],
        seed=3,
        draws=2,
    )
    assert board == "board"
    assert recorded["studied"] == ["ridge", "oracle"] and recorded["protocol"] == (3, 2)
    assert recorded["models"] == ["ridge", "oracle"]
    kwargs = recorded["kwargs"]
    assert kwargs["fit_split"] == "train+val_seen"
    assert kwargs["params"] == {"ridge": {"alpha": 7.0, "tuned": True}, "oracle": {}}
    assert set(kwargs["tuned"]) == {"ridge"} and kwargs["tuned"]["ridge"]["study"] == "recsys-ridge"
    assert (kwargs["splits"], kwargs["shots"], kwargs["seed"], kwargs["draws"]) == (["test_seen"], [5], 3, 2)


def test_refit_on_train_without_val_seen(recorded):
    dataset = SimpleNamespace(ratings={"train": 0, "test_seen": 0}, ground_truth=None)
    tuning.run_tuned_leaderboard(dataset, ["ridge"])
    assert recorded["kwargs"]["fit_split"] == "train"


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
    argv = ["leaderboard", "--tuned", "--models", "ridge,metadata_mean,oracle", "--data", str(small_sim_dir),
            "--storage", storage, "--study-prefix", "cli", "--shots", "5", "--splits", "test_unseen",
            "--params", '{"metadata_mean": {"shrinkage": 3.5}}', "--out", str(out), "--no-tracking"]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    board = json.loads((out / "leaderboard.json").read_text())
    best = optuna.load_study(study_name="cli-ridge", storage=storage).best_trial.params
    assert board["params"]["ridge"]["alpha"] == best["alpha"]
    assert board["params"]["metadata_mean"]["shrinkage"] == 3.5  # --params override the study
    assert {r["model"] for r in board["rows"]} == {"ridge", "metadata_mean", "oracle"}
    assert main([*argv[:-1], "--study-prefix", "none", "--no-tracking", "--overwrite"]) == 2
    assert capsys.readouterr().err.startswith("error: no study 'none-ridge' for ridge")
