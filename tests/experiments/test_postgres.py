"""Two workers share one study through a real PostgreSQL server (``postgres_url`` in conftest.py; skipped
where none can be started)."""

from __future__ import annotations

import socket
import subprocess
import sys

import optuna
import pytest


@pytest.mark.slow
def test_two_workers_share_one_study(postgres_url, small_sim, small_sim_dir):
    from experiments.tuning import tune

    # this process creates the study (and enqueues the defaults) ...
    tune(small_sim, "ridge", trials=2, storage=postgres_url, study="shared", tracking=False, progress=False)
    # ... then a second process and this one work on it at the same time
    # one protocol seed for both (a study refuses another); each trial's sampler is seeded by its number
    argv = [
        sys.executable,
        "-m",
        "recsys.cli",
        "tune",
        "ridge",
        "--data",
        str(small_sim_dir),
        "--storage",
        postgres_url,
        "--study",
        "shared",
        "--trials",
        "3",
        "--no-tracking",
        "--no-progress",
    ]
    other = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        tune(
            small_sim, "ridge", trials=3, storage=postgres_url, study="shared", tracking=False, progress=False
        )
        _, err = other.communicate(timeout=300)
    finally:
        other.kill()
    assert other.returncode == 0, err
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    assert len(study.trials) == 8
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    workers = {t.user_attrs["worker"] for t in study.trials}
    assert (
        len(workers) == 2 and f"{socket.gethostname()}:{other.pid}" in workers
    )  # both processes' trials landed
    assert study.trials[0].params == {"alpha": 3.0}
    assert sum(bool(t.user_attrs.get("defaults")) for t in study.trials) == 1
