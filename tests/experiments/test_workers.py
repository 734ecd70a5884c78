"""Several ``tune`` workers on one study, as separate processes, on SQLite and on PostgreSQL.

* parallel workers never propose the same parameters (each trial draws from its own seeded stream);
* a worker killed with SIGKILL leaves no RUNNING trial or MLflow run behind once the study is resumed: its
  trial is failed and retried, its runs are ended as KILLED;
* first runs on fresh stores (MLflow and Optuna, both creating their tables at once) all succeed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import optuna
import pytest

from experiments import tuning
from experiments.tracking import Tracker

#: a worker process: tune ridge on DATA with the settings in argv[1] (JSON); optionally it waits at a barrier
#: until every worker has set up its sampler, or hangs in its first trial's scoring (to be killed there)
WORKER = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path

    from experiments import tuning
    from recsys.data import load_dataset

    cfg = json.loads(sys.argv[1])
    tuning.HEARTBEAT_INTERVAL = 1
    if cfg.get("barrier"):
        barrier, setup = Path(cfg["barrier"]), tuning._TrialRunner.__init__

        def wait_for_all(self, *args, **kwargs):  # after the study is loaded and the sampler seeded
            setup(self, *args, **kwargs)
            (barrier / str(os.getpid())).touch()
            while len(list(barrier.iterdir())) < cfg["workers"]:
                time.sleep(0.02)

        tuning._TrialRunner.__init__ = wait_for_all
    if cfg.get("hang"):

        def hang(self, *args, **kwargs):
            Path(cfg["hang"]).touch()
            time.sleep(600)

        tuning._TrialRunner.score = hang
    tuning.tune(load_dataset(cfg["data"]), "ridge", trials=cfg["trials"], storage=cfg["storage"],
                study=cfg["study"], tracking_uri=cfg.get("tracking_uri"), tracking="tracking_uri" in cfg,
                progress=False)
    """
)


def _worker(**cfg) -> subprocess.Popen:
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, json.dumps(cfg, default=str)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _finish(proc: subprocess.Popen, timeout: float = 300) -> str:
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        proc.kill()
    return err


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request, tmp_path):
    """A new, empty Optuna storage: a SQLite file, or a new database on the session's PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'optuna.db'}"
    return _new_database(request.getfixturevalue("postgres_url"))


def _new_database(server_url: str) -> str:
    import sqlalchemy

    name = f"recsys_{uuid.uuid4().hex[:12]}"
    engine = sqlalchemy.create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    finally:
        engine.dispose()
    return server_url.rsplit("/", 1)[0] + f"/{name}"


def _running_runs(tracking_uri: str) -> list:
    tracker = Tracker(tracking_uri)
    runs = tracker.client.search_runs([tracker.experiment_id], max_results=1000)
    return [r for r in runs if r.info.status == "RUNNING"]


@pytest.mark.slow
def test_parallel_workers_never_propose_the_same_parameters(storage_url, small_sim, small_sim_dir, tmp_path):
    # the study exists; both workers load it and seed their samplers before either starts a trial
    tune_kwargs = {"storage": storage_url, "study": "workers", "tracking": False, "progress": False}
    tuning.tune(small_sim, "ridge", trials=1, **tune_kwargs)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # new: both workers create its tables at once
    workers = [
        _worker(
            data=small_sim_dir,
            storage=storage_url,
            study="workers",
            trials=5,
            barrier=barrier,
            workers=2,
            tracking_uri=tracking_uri,
        )
        for _ in range(2)
    ]
    for proc in workers:
        err = _finish(proc)
        assert proc.returncode == 0, err
    study = optuna.load_study(study_name="workers", storage=storage_url)
    assert len(study.trials) == 11
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert len({t.user_attrs["worker"] for t in study.trials[1:]}) == 2  # both took part
    proposed = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(proposed)) == len(proposed), proposed
    assert _running_runs(tracking_uri) == []


@pytest.mark.slow
def test_killed_worker_leaves_nothing_running(storage_url, small_sim, small_sim_dir, tmp_path, monkeypatch):
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    hung = tmp_path / "hung"
    worker = _worker(
        data=small_sim_dir,
        storage=storage_url,
        study="killed",
        trials=3,
        hang=hung,
        tracking_uri=tracking_uri,
    )
    try:
        deadline = time.monotonic() + 240
        while not hung.exists():
            assert worker.poll() is None, worker.communicate()[1]
            assert time.monotonic() < deadline, "the worker never reached its first trial"
            time.sleep(0.1)
        time.sleep(1.0)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=60)
    finally:
        worker.kill()
    assert worker.returncode == -signal.SIGKILL
    dead = optuna.load_study(study_name="killed", storage=storage_url).trials[0]
    assert dead.state == optuna.trial.TrialState.RUNNING
    assert {r.info.run_id for r in _running_runs(tracking_uri)} == {
        dead.user_attrs["mlflow_run_id"],
        dead.user_attrs["mlflow_parent_run_id"],
    }

    # resumed after the grace period: the dead trial is failed, its runs killed, its parameters retried
    monkeypatch.setattr(tuning, "GRACE_PERIOD", 2)
    monkeypatch.setattr(tuning, "HEARTBEAT_INTERVAL", 1)
    time.sleep(3.5)
    study = tuning.tune(
        small_sim,
        "ridge",
        trials=2,
        storage=storage_url,
        study="killed",
        tracking_uri=tracking_uri,
        progress=False,
    )
    states = [t.state for t in study.trials]
    assert optuna.trial.TrialState.RUNNING not in states
    assert states[0] == optuna.trial.TrialState.FAIL
    retry = [t for t in study.trials if t.user_attrs.get("retry_of") == 0]
    assert len(retry) == 1 and retry[0].state == optuna.trial.TrialState.COMPLETE
    assert retry[0].params == dead.params == {"alpha": 3.0}
    assert _running_runs(tracking_uri) == []
    client = Tracker(tracking_uri).client
    for key in ("mlflow_run_id", "mlflow_parent_run_id"):
        assert client.get_run(dead.user_attrs[key]).info.status == "KILLED"


FIRST_RUN = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path

    import optuna

    from experiments.tracking import Tracker
    from experiments.tuning import resolve_storage

    cfg = json.loads(sys.argv[1])
    barrier = Path(cfg["barrier"])
    (barrier / str(os.getpid())).touch()
    while len(list(barrier.iterdir())) < cfg["workers"]:
        time.sleep(0.01)
    tracker = Tracker(cfg["tracking_uri"])
    tracker.end_run(tracker.start_run("first run"))
    try:
        optuna.create_study(storage=resolve_storage(cfg["storage"]), study_name="first")
    except optuna.exceptions.DuplicatedStudyError:
        pass
    """
)


@pytest.mark.slow
def test_first_runs_on_new_stores_all_succeed(storage_url, tmp_path):
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    cfg = {"barrier": str(barrier), "workers": 3, "storage": storage_url}
    if storage_url.startswith("sqlite"):
        cfg["tracking_uri"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    else:
        cfg["tracking_uri"] = _new_database(storage_url)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", FIRST_RUN, json.dumps(cfg)], stderr=subprocess.PIPE, text=True, env=env
        )
        for _ in range(cfg["workers"])
    ]
    errors = [_finish(proc) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0], "\n".join(e[-600:] for e in errors)
    tracker = Tracker(cfg["tracking_uri"])
    assert len(tracker.client.search_runs([tracker.experiment_id])) == 3
