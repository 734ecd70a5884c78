from __future__ import annotations

from dataclasses import replace

import numpy as np
import optuna
import pytest

from experiments import tuning
from experiments.spaces import Param, SearchSpace, load_space
from experiments.tuning import (
    Objective,
    best_params,
    run_tuned_leaderboard,
    study_name,
    tune,
    tuned_models,
)
from recsys.cli import main as recsys_main
from recsys.data.dataset import Ratings
from recsys.errors import UserError
from recsys.leaderboard import run_leaderboard
from recsys.models import create_model


def _storage(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'optuna.db'}"


def test_study_resumes_across_two_cli_invocations(tmp_path, small_sim_dir, capsys):
    storage = _storage(tmp_path)
    argv = [
        "tune",
        "ridge",
        "--data",
        str(small_sim_dir),
        "--storage",
        storage,
        "--no-tracking",
        "--no-progress",
    ]
    assert recsys_main([*argv, "--trials", "3"]) == 0
    assert recsys_main([*argv, "--trials", "2"]) == 0
    assert "study recsys-ridge: 5 trials" in capsys.readouterr().out
    study = optuna.load_study(study_name="recsys-ridge", storage=storage)
    assert len(study.trials) == 5
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert study.trials[0].params == load_space("ridge").default_point() == {"alpha": 3.0}
    assert study.trials[0].user_attrs["defaults"] is True
    assert sum(bool(t.user_attrs.get("defaults")) for t in study.trials) == 1  # defaults enqueued once
    # the resumed sampler is seeded differently: no replay of the first invocation's random draws
    alphas = [t.params["alpha"] for t in study.trials]
    assert len(set(alphas)) == 5
    assert study.user_attrs["split"] == "val_seen" and study.user_attrs["metric"] == "user_srocc"


def test_tuning_is_seeded(tmp_path, small_sim):
    a = tune(small_sim, "ridge", trials=3, storage=_storage(tmp_path / "a"), tracking=False, progress=False)
    b = tune(small_sim, "ridge", trials=3, storage=_storage(tmp_path / "b"), tracking=False, progress=False)
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    assert [t.value for t in a.trials] == pytest.approx([t.value for t in b.trials])


def test_unseen_split_and_resume_mismatch(tmp_path, small_sim):
    storage = _storage(tmp_path)
    objective = Objective(metric="rmse", split="val_unseen", shots=5)
    study = tune(small_sim, "user_ridge", trials=2, storage=storage, objective=objective, tracking=False,
                 progress=False)  # fmt: skip
    assert study.direction == optuna.study.StudyDirection.MINIMIZE
    assert study.user_attrs["shots"] == 5
    with pytest.raises(UserError, match="was made for split = 'val_unseen', not 'val_seen'"):
        tune(small_sim, "user_ridge", trials=1, storage=storage, objective=Objective(metric="rmse"),
             tracking=False, progress=False)  # fmt: skip


@pytest.mark.parametrize(
    ("objective", "message"),
    [
        (Objective(split="test_seen"), "validation splits only"),
        (Objective(metric="accuracy"), "unknown metric 'accuracy'"),
    ],
)
def test_bad_objectives_are_user_errors(tmp_path, small_sim, objective, message):
    with pytest.raises(UserError, match=message):
        tune(small_sim, "ridge", trials=1, storage=_storage(tmp_path), objective=objective, tracking=False)


def test_tuned_params_feed_the_leaderboard(tmp_path, small_sim):
    storage = _storage(tmp_path)
    for model in ("ridge", "metadata_mean"):
        tune(small_sim, model, trials=3, storage=storage, study=study_name(model, "exp"), tracking=False,
             progress=False)  # fmt: skip
    best = optuna.load_study(study_name="exp-ridge", storage=storage).best_trial.params
    assert best_params("ridge", storage, "exp-ridge") == best
    found = tuned_models(["ridge", "metadata_mean"], small_sim, storage=storage, study_prefix="exp")
    params = {model: tuned.params for model, tuned in found.items()}
    assert params["ridge"] == best and set(params["metadata_mean"]) == {"shrinkage"}
    board = run_tuned_leaderboard(small_sim, ["ridge"], shots=(10,), **_exp(storage))
    assert board.params["ridge"]["alpha"] == best["alpha"]
    assert {r.split for r in board.rows} == {"test_seen", "test_unseen"}
    assert all(r.tuned_study == "exp-ridge" and r.fit_split == "train" for r in board.rows)
    assert all(r.params_source == "study" for r in board.rows)
    assert board.tuned["ridge"]["study"] == "exp-ridge" and board.tuned["ridge"]["split"] == "val_seen"
    untuned: dict = {}
    found = tuned_models(
        ["ridge", "user_ridge"], small_sim, storage=storage, study_prefix="exp", untuned=untuned
    )
    assert set(found) == {"ridge"} and untuned["user_ridge"].startswith(
        "no study 'exp-user_ridge' for user_ridge"
    )


def test_a_study_records_its_protocol(tmp_path, small_sim):
    objective = Objective(split="val_unseen", shots=5, draws=2)
    quiet = {"tracking": False, "progress": False}
    study = tune(
        small_sim, "ridge", trials=1, storage=_storage(tmp_path), objective=objective, seed=3, **quiet
    )
    attrs = study.user_attrs
    assert (attrs["split"], attrs["shots"], attrs["draws"], attrs["protocol_seed"]) == ("val_unseen", 5, 2, 3)
    assert attrs["dataset_fingerprint"] == small_sim.fingerprint()


def _exp(storage: str) -> dict:
    """Arguments of a quiet tuned leaderboard over the studies named exp-MODEL."""
    return {"storage": storage, "study_prefix": "exp", "progress": False}


def _other_data(dataset):
    """The same data with one training score changed: another fingerprint."""
    r = dataset.ratings["train"]
    score = r.score.copy()
    score[0] = 5.0 if score[0] != 5.0 else 1.0
    return replace(dataset, ratings=dataset.ratings | {"train": Ratings(r.user_idx, r.image_idx, score)})


def test_tuned_refuses_a_study_made_on_other_data_or_under_another_protocol(tmp_path, small_sim):
    storage = _storage(tmp_path)
    quiet = {"tracking": False, "progress": False}
    tune(small_sim, "ridge", trials=1, storage=storage, study="exp-ridge", **quiet)
    other = _other_data(small_sim)
    message = (
        f"dataset_fingerprint = '{small_sim.fingerprint()}' but this leaderboard has '{other.fingerprint()}'"
    )
    with pytest.raises(UserError, match=message):
        run_tuned_leaderboard(other, ["ridge"], **_exp(storage))
    with pytest.raises(UserError, match="protocol_seed = 0 but this leaderboard has 1"):
        run_tuned_leaderboard(small_sim, ["ridge"], seed=1, **_exp(storage))
    # draws matter for a study tuned on an unseen split
    unseen = Objective(split="val_unseen", shots=5, draws=2)
    tune(
        small_sim,
        "user_ridge",
        trials=1,
        storage=storage,
        study="unseen-user_ridge",
        objective=unseen,
        **quiet,
    )
    with pytest.raises(UserError, match="draws = 2 but this leaderboard has 5"):
        tuned_models(["user_ridge"], small_sim, storage=storage, study_prefix="unseen")
    # every tuned model was tuned for the same split and shots
    tune(small_sim, "ridge", trials=1, storage=storage, study="unseen-ridge", **quiet)
    with pytest.raises(UserError, match="split = 'val_seen' but study 'unseen-user_ridge' has 'val_unseen'"):
        tuned_models(["user_ridge", "ridge"], small_sim, storage=storage, study_prefix="unseen", draws=2)


def test_models_without_hyperparameters_need_no_study(tmp_path, small_sim):
    storage = _storage(tmp_path)
    tune(small_sim, "ridge", trials=1, storage=storage, study="exp-ridge", tracking=False, progress=False)
    models = ["global_mean", "ridge", "oracle"]
    board = run_tuned_leaderboard(small_sim, models, shots=(0,), draws=1, **_exp(storage))
    assert set(board.tuned) == {"ridge"}
    studies = {r.model: (r.tuned_study, r.params_source) for r in board.rows}
    assert studies == {
        "global_mean": (None, "defaults"), "ridge": ("exp-ridge", "study"), "oracle": (None, "defaults")
    }  # fmt: skip
    assert board.defaults == dict.fromkeys(("global_mean", "oracle"), "no hyperparameters to tune")


def test_a_study_whose_best_trial_is_the_defaults_gives_the_untuned_rows_exactly(tmp_path, small_sim):
    """Tuned and untuned rows fit on the same splits: a tuned gain can only come from the hyperparameters."""
    storage = _storage(tmp_path)
    study = tune(small_sim, "mf", trials=1, storage=storage, study="exp-mf", tracking=False, progress=False)
    assert study.best_trial.user_attrs["defaults"]  # trial 0: the defaults
    stop = study.best_trial.user_attrs["stop_epoch"]
    assert stop < create_model("mf").epochs  # mf stopped early on val_seen, and stops there again below
    protocol = {"shots": (0, 10), "draws": 2, "jobs": 1}
    tuned = run_tuned_leaderboard(small_sim, ["mf"], **protocol, **_exp(storage))
    untuned = run_leaderboard(small_sim, ["mf"], **protocol, progress=False)
    assert tuned.params == untuned.params and tuned.tuned["mf"]["stop_epoch"] == stop
    assert len(tuned.rows) == len(untuned.rows) == 3
    for a, b in zip(tuned.rows, untuned.rows, strict=True):
        assert (a.tuned_study, a.params_source, b.tuned_study, b.params_source) == (
            "exp-mf",
            "study",
            None,
            None,
        )
        assert (a.split, a.shots, a.fit_split, a.validation_split) == (b.split, b.shots, "train", "val_seen")
        assert a.metrics == b.metrics and a.ci95 == b.ci95
        np.testing.assert_array_equal(a.predictions.prediction, b.predictions.prediction)


def test_study_command_gives_every_model_the_same_budget(tmp_path, small_sim_dir, capsys):
    storage = _storage(tmp_path)
    argv = ["study", "--models", "ridge,metadata_mean", "--trials", "2", "--data", str(small_sim_dir),
            "--storage", storage, "--study-prefix", "cmp", "--no-tracking", "--no-progress", "--json"]  # fmt: skip
    assert recsys_main(argv) == 0
    out = capsys.readouterr().out
    for model in ("ridge", "metadata_mean"):
        assert len(optuna.load_study(study_name=f"cmp-{model}", storage=storage).trials) == 2
    assert '"trials_total": 2' in out


def test_cli_user_errors_exit_2(tmp_path, small_sim_dir, capsys):
    argv = [
        "tune",
        "no_such_model",
        "--data",
        str(small_sim_dir),
        "--storage",
        _storage(tmp_path),
        "--no-tracking",
    ]
    assert recsys_main(argv) == 2
    assert capsys.readouterr().err.startswith("error: unknown model 'no_such_model'")


class _StandIn:
    """A stand-in model around a ridge, to make a fit fail on purpose."""

    name = "stand_in"

    def __init__(self, *, alpha=3.0):
        from recsys.models.baselines import Ridge

        self.inner = Ridge(alpha=alpha)

    def get_params(self):
        return {"alpha": self.inner.alpha}

    def fit(self, dataset, split="train"):
        self.inner.fit(dataset, split)
        return self

    def predict(self, user_idx, image_idx):
        return self.inner.predict(user_idx, image_idx)


class _FailingFit(_StandIn):
    def fit(self, dataset, split="train"):
        if self.inner.alpha != 3.0:
            raise ValueError("no training score reaches like_threshold")
        return super().fit(dataset, split)


def test_a_value_error_in_fit_fails_the_trial_not_the_study(tmp_path, small_sim, monkeypatch):
    space = SearchSpace("failing", tmp_path / "failing.toml",
                        {"alpha": Param("alpha", "float", 0.1, 100.0, log=True)}, {"alpha": 3.0})  # fmt: skip
    monkeypatch.setattr(tuning, "load_space", lambda name, spaces_dir=None: space)
    monkeypatch.setattr(tuning, "create_model", lambda name, **params: _FailingFit(**params))
    study = tune(small_sim, "ridge", trials=3, storage=_storage(tmp_path), study="failing", tracking=False,
                 progress=False)  # fmt: skip
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE] + [optuna.trial.TrialState.FAIL] * 2
    assert "like_threshold" in study.trials[1].user_attrs["invalid"]
    assert best_params("ridge", _storage(tmp_path), "failing") == {"alpha": 3.0}
