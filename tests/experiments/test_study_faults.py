"""A tampered or damaged study, a timeout that runs out, and workers that stop: one line and exit 2 (or an honest
report), and no MLflow tuning run left RUNNING by a worker that is gone."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time

import optuna
import pytest
from mlflow.tracking import MlflowClient

from experiments import tuning
from experiments.tracking import Tracker
from experiments.tuning import Objective, study_spec, tune, tuned_models
from recsys.cli import main
from recsys.errors import UserError


def _storage(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'optuna.db'}"


def made_study(dataset, storage: str, model: str, params: dict, distributions: dict, attrs: dict):
    """A study of ``model`` made for ``dataset`` under the default objective, with one completed trial."""
    study = optuna.create_study(storage=storage, study_name=f"recsys-{model}", direction="maximize")
    for key, value in study_spec(dataset, model, Objective(), 0).items():
        study.set_user_attr(key, value)
    trial = optuna.trial.create_trial(params=params, distributions=distributions, value=0.5, user_attrs=attrs)
    study.add_trial(trial)
    return study


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    return lines[0]


FACTORS = {"factors": optuna.distributions.IntDistribution(1, 10**9)}


@pytest.mark.parametrize(
    ("params", "attrs", "message"),
    [
        ({"factors": 8}, {"stop_epoch": "seven"}, "trial 0: stop_epoch is 'seven', not a number of epochs"),
        ({"factors": 8}, {"stop_epoch": 10**9}, "trial 0: stop_epoch is 1000000000, not a number of epochs"),
        ({"factors": 100_000_000}, {}, "trial 0: mf: factors must be <= 1024, got 100000000"),
    ],
    ids=["stop-epoch-string", "stop-epoch-huge", "factors-1e8"],
)
def test_a_tampered_best_trial_is_one_line(
    small_sim, small_sim_dir, tmp_path, capsys, params, attrs, message
):
    storage = _storage(tmp_path)
    made_study(small_sim, storage, "mf", params, FACTORS, attrs)
    with pytest.raises(UserError, match=f"study 'recsys-mf' {message}"):
        tuned_models(["mf"], small_sim, storage=storage)
    argv = ["leaderboard", "--tuned", "--models", "mf", "--data", str(small_sim_dir), "--storage", storage]
    assert main([*argv, "--no-tracking", "--out", str(tmp_path / "board")]) == 2
    assert message in one_error_line(capsys)
    assert not (tmp_path / "board").exists()


def _deepen(storage: str, table: str, key: str) -> None:
    """Replace one stored JSON attribute by a 30,000-deep list, as a hand-edited database would."""
    with sqlite3.connect(storage.removeprefix("sqlite:///")) as db:
        db.execute(f"UPDATE {table} SET value_json = ? WHERE key = ?", ("[" * 30_000 + "]" * 30_000, key))


@pytest.mark.parametrize(
    ("table", "key"),
    [("study_user_attributes", "dataset_fingerprint"), ("trial_user_attributes", "stop_epoch")],
)
def test_a_deep_study_attribute_is_one_line(small_sim, small_sim_dir, tmp_path, capsys, table, key):
    storage = _storage(tmp_path)
    made_study(small_sim, storage, "mf", {"factors": 8}, FACTORS, {"stop_epoch": 3})
    _deepen(storage, table, key)
    with pytest.raises(UserError, match="study 'recsys-mf'.*nested too deeply"):
        tuned_models(["mf"], small_sim, storage=storage)
    argv = [
        "tune",
        "mf",
        "--data",
        str(small_sim_dir),
        "--storage",
        storage,
        "--no-tracking",
        "--no-progress",
    ]
    assert main([*argv, "--trials", "1"]) == 2
    assert "nested too deeply" in one_error_line(capsys)


def test_tune_timeout_zero_is_refused_and_an_elapsed_timeout_is_reported(small_sim_dir, tmp_path, capsys):
    argv = ["tune", "ridge", "--data", str(small_sim_dir), "--storage", _storage(tmp_path), "--no-tracking"]
    argv += ["--no-progress"]
    assert main([*argv, "--timeout", "0"]) == 2
    assert one_error_line(capsys) == "error: --timeout must be a positive number of seconds, got 0"
    assert main([*argv, "--timeout", "1e-9"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("study recsys-ridge: 1 trials (0 of the 20 asked for ran in ")
    assert "no trial completed: the --timeout of 1e-09 s ran out with 1 trial(s) still waiting" in out
    assert "failed" not in out
    with pytest.raises(UserError, match="--timeout must be a positive number of seconds"):
        tune(None, "ridge", trials=1, timeout=0)


def test_the_parent_run_is_ended_when_a_session_fails_before_its_first_trial(tracking_db, small_sim, tmp_path,
                                                                             monkeypatch):  # fmt: skip
    def broken(*args, **kwargs):
        raise UserError("the evaluator cannot be built")

    monkeypatch.setattr(tuning, "Evaluator", broken)
    with pytest.raises(UserError, match="the evaluator cannot be built"):
        tune(small_sim, "ridge", trials=1, storage=_storage(tmp_path), study="broken", progress=False)
    runs = MlflowClient(tracking_db).search_runs(
        [Tracker().experiment_id], "tags.kind = 'tune' and tags.study = 'broken'"
    )
    assert [r.info.status for r in runs] == ["FAILED"]


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_runs_of_workers_that_are_gone_are_closed_and_live_ones_are_not(tracking_db, small_sim, tmp_path):
    import socket

    tracker = Tracker()
    host, now = socket.gethostname(), time.time()
    workers = {
        "dead here": {"worker_host": host, "worker_pid": _dead_pid(), "last_seen": now},
        "alive here": {"worker_host": host, "worker_pid": os.getpid(), "last_seen": now - 10**6},
        "silent elsewhere": {"worker_host": "elsewhere", "worker_pid": 1, "last_seen": now - 10**6},
        "recent elsewhere": {"worker_host": "elsewhere", "worker_pid": 1, "last_seen": now - 5},
        "other study": {"worker_host": host, "worker_pid": _dead_pid(), "last_seen": now},
    }
    runs = {
        label: tracker.start_run(
            label, tags={"kind": "tune", "study": "other" if "other" in label else "s"} | tags
        )
        for label, tags in workers.items()
    }
    tune(small_sim, "ridge", trials=1, storage=_storage(tmp_path), study="s", progress=False)
    status = {label: tracker.client.get_run(run).info.status for label, run in runs.items()}
    assert status == {
        "dead here": "KILLED",
        "alive here": "RUNNING",
        "silent elsewhere": "KILLED",
        "recent elsewhere": "RUNNING",
        "other study": "RUNNING",
    }
    for run in runs.values():
        tracker.end_if_running(run, "FINISHED")


#: a worker that tunes ridge with tracking and is killed (SIGKILL) right after its first trial completes
DIES_BETWEEN_TRIALS = textwrap.dedent(
    """
    import json, os, signal, sys

    import optuna.study._optimize as optimize

    from experiments import tuning
    from recsys.data import load_dataset

    cfg = json.loads(sys.argv[1])
    run_trial = optimize._run_trial

    def run_then_die(*args, **kwargs):
        trial = run_trial(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)

    optimize._run_trial = run_then_die
    tuning.tune(load_dataset(cfg["data"]), "ridge", trials=3, storage=cfg["storage"], study="between",
                tracking_uri=cfg["tracking_uri"], progress=False)
    """
)


@pytest.mark.slow
def test_a_worker_killed_between_trials_has_its_run_closed_by_the_next(small_sim, small_sim_dir, tmp_path):
    tracking_uri, storage = f"sqlite:///{tmp_path / 'mlflow.db'}", _storage(tmp_path)
    cfg = {"data": str(small_sim_dir), "storage": storage, "tracking_uri": tracking_uri}
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    worker = subprocess.run([sys.executable, "-c", DIES_BETWEEN_TRIALS, json.dumps(cfg)], env=env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert worker.returncode == -9, worker.stderr
    study = optuna.load_study(study_name="between", storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE]  # nothing left running
    tracker = Tracker(tracking_uri)
    (parent,) = tracker.running_runs(kind="tune", study="between")  # what the dead worker left behind
    tune(small_sim, "ridge", trials=1, storage=storage, study="between", tracking_uri=tracking_uri,
         progress=False)  # fmt: skip
    assert tracker.client.get_run(parent.info.run_id).info.status == "KILLED"
    assert tracker.running_runs(kind="tune") == []
