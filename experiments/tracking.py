"""MLflow tracking: every leaderboard, tuning trial and fit is a run.

A run carries its hyperparameters (params), its metrics, the dataset fingerprint and the seed (params), the
git commit and the versions of the packages that produced it (tags), and its files (artifacts). A leaderboard
is a parent run with one child run per model; a tuning session is a parent run with one child run per trial.

The tracking URI is, in order: the ``tracking_uri`` argument (``--tracking-uri``), ``MLFLOW_TRACKING_URI``,
then ``sqlite:///runs/mlflow.db`` in the working directory (the folder is created). Runs are written with
``MlflowClient`` directly (no fluent global state, no autologging, no system metrics), which keeps them fast.
"""

from __future__ import annotations

import logging
import math
import os
import re
import subprocess
from collections.abc import Iterable, Mapping
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from recsys.errors import UserError

DEFAULT_TRACKING_URI = "sqlite:///runs/mlflow.db"
DEFAULT_EXPERIMENT = "recsys"
#: packages whose versions every run records (absent ones are recorded as "not installed")
TRACKED_PACKAGES = ("recsys-pamela", "numpy", "scipy", "pandas", "scikit-learn", "torch", "open_clip_torch",
                    "implicit", "rectools-lightfm", "faiss-cpu", "optuna", "mlflow")  # fmt: skip
_PARENT_TAG = "mlflow.parentRunId"
_MAX_PARAM_CHARS = 6000


def resolve_tracking_uri(tracking_uri: str | None = None) -> str:
    """The tracking URI to use (argument, then $MLFLOW_TRACKING_URI, then a SQLite file under ./runs)."""
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///path`` URL (None for other URLs or in-memory SQLite)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def metric_key(*parts: Any) -> str:
    """An MLflow-safe metric or param name: ``ndcg@10`` -> ``ndcg_at_10``; other odd characters -> ``_``."""
    text = "_".join(str(p) for p in parts if p is not None and p != "")
    text = text.replace("@", "_at_")
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", text)


@lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the git checkout holding the package (with ``-dirty`` when modified), else "unknown"."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=5, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty and commit else (commit or "unknown")


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    """Installed versions of the packages in ``TRACKED_PACKAGES``."""
    out = {}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def provenance_tags() -> dict[str, str]:
    """Git commit and package versions as run tags."""
    commit = git_commit()
    tags = {"git_commit": commit, "mlflow.source.git.commit": commit.removesuffix("-dirty")}
    tags |= {f"version.{name}": version for name, version in package_versions().items()}
    return tags


def dataset_params(dataset, seed: int) -> dict[str, Any]:
    """What identifies the data and the protocol draw of a run."""
    return {
        "dataset": dataset.name,
        "dataset_fingerprint": dataset.fingerprint(),
        "simulated": bool(dataset.simulated),
        "image_features": dataset.feature_source or "none",
        # not "seed": models such as mf have a hyperparameter of that name
        "protocol_seed": seed,
    }


class Tracker:
    """A thin wrapper around ``MlflowClient`` writing runs into one experiment."""

    def __init__(self, tracking_uri: str | None = None, experiment: str = DEFAULT_EXPERIMENT):
        os.environ.setdefault("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")
        os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
        for noisy in ("mlflow", "alembic"):  # table migrations on a new database log at INFO
            logging.getLogger(noisy).setLevel(logging.WARNING)
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        try:
            self.client = MlflowClient(tracking_uri=self.tracking_uri)
            self.experiment_id = self._experiment(experiment, MlflowException)
        except MlflowException as err:
            raise UserError(
                f"MLflow tracking at {self.tracking_uri} failed: {str(err).splitlines()[0]}"
            ) from None

    def _experiment(self, name: str, error: type[Exception]) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        db = sqlite_path(self.tracking_uri)
        # artifacts next to the database, not in whatever directory the command happens to run in
        location = (db.resolve().parent / "mlartifacts").as_uri() if db is not None else None
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except error:  # another worker created it first
            return self.client.get_experiment_by_name(name).experiment_id

    def start_run(self, run_name: str, *, parent_id: str | None = None, params: Mapping[str, Any] | None = None,
                  tags: Mapping[str, Any] | None = None) -> str:  # fmt: skip
        """Create a run (a child of ``parent_id`` if given) with provenance tags; returns its id."""
        all_tags = provenance_tags() | {k: str(v) for k, v in (tags or {}).items()}
        if parent_id is not None:
            all_tags[_PARENT_TAG] = parent_id
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=all_tags)
        if params:
            self.log_params(run.info.run_id, params)
        return run.info.run_id

    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(metric_key(k), str(v)[:_MAX_PARAM_CHARS]) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[start : start + 100])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float | None], step: int = 0) -> None:
        """Log finite metrics (NaN / None ones, e.g. an undefined correlation, are left out)."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(metric_key(k), float(v), now, step) for k, v in metrics.items()
                 if v is not None and math.isfinite(float(v))]  # fmt: skip
        for start in range(0, len(items), 1000):
            self.client.log_batch(run_id, metrics=items[start : start + 1000])

    def log_artifacts(self, run_id: str, files: Iterable[Path]) -> None:
        for path in files:
            self.client.log_artifact(run_id, str(path))

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_tag(run_id, key, str(value))

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)


def row_metrics(row, prefix: str = "") -> dict[str, float | None]:
    """One leaderboard row's metrics as ``{split}_{shots}_{metric}`` keys (seen splits have no shots part)."""
    out: dict[str, float | None] = {}
    for name, value in (row.metrics or {}).items():
        out[metric_key(prefix, row.split, row.shots, name)] = value
    out[metric_key(prefix, row.split, row.shots, "predict_seconds")] = row.predict_seconds
    return out


def log_leaderboard(board, files: Mapping[str, Path], *, tracking_uri: str | None = None,
                    run_name: str | None = None, tags: Mapping[str, Any] | None = None) -> str:  # fmt: skip
    """Log a leaderboard as a parent run (all metrics prefixed by model, the files as artifacts) with one
    child run per model (its hyperparameters, fit seconds and per-row metrics). Returns the parent run id."""
    tracker = Tracker(tracking_uri)
    models = list(dict.fromkeys(r.model for r in board.rows)) or list(board.params)
    params = dataset_params(board.dataset, board.seed) | {
        "shots": ",".join(map(str, board.shots)),
        "splits": ",".join(dict.fromkeys(r.split for r in board.rows)),
        "models": ",".join(models),
    }
    parent = tracker.start_run(run_name or f"leaderboard {board.dataset.name}", params=params,
                               tags={"kind": "leaderboard"} | dict(tags or {}))  # fmt: skip
    try:
        parent_metrics: dict[str, float | None] = {}
        for model in models:
            rows = [r for r in board.rows if r.model == model]
            child = tracker.start_run(
                model, parent_id=parent, params=dataset_params(board.dataset, board.seed) | board.params.get(model, {}),
                tags={"kind": "fit", "model": model},
            )  # fmt: skip
            metrics: dict[str, float | None] = {"fit_seconds": rows[0].fit_seconds if rows else None}
            for row in rows:
                metrics |= row_metrics(row)
                parent_metrics |= row_metrics(row, prefix=model)
                if row.status != "ok":
                    tracker.set_tags(
                        child, {metric_key(row.split, row.shots, "status"): f"{row.status}: {row.reason}"}
                    )
            tracker.log_metrics(child, metrics)
            tracker.end_run(child)
        tracker.log_metrics(parent, parent_metrics)
        tracker.log_artifacts(parent, [Path(p) for p in files.values()])
    except BaseException:
        tracker.end_run(parent, "FAILED")
        raise
    tracker.end_run(parent)
    return parent
