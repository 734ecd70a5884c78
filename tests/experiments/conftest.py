"""MLflow goes to one temporary SQLite database per test session (made once: its migrations take seconds)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tracking_db(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(autouse=True)
def _tracking_env(tracking_db, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_db)
    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")
    monkeypatch.setenv("GIT_PYTHON_REFRESH", "quiet")
