"""MLflow tracking: every leaderboard, tuning trial and fit is a run.

A run carries its hyperparameters (params), its metrics, the dataset fingerprint and the seed (params), the
git commit and the versions of the packages that produced it (tags), and its files (artifacts). A leaderboard
is a parent run with one child run per model; a tuning session is a parent run with one child run per trial.

The tracking URI is, in order: the ``tracking_uri`` argument (``--tracking-uri``), ``MLFLOW_TRACKING_URI``,
then ``sqlite:///runs/mlflow.db`` in the working directory (the folder is created). Runs are written with
``MlflowClient`` directly (no fluent global state, no autologging, no system metrics), which keeps them fast.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
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


#: the PostgreSQL advisory lock that workers hold while they create or migrate a database's tables
_PG_FIRST_USE_LOCK = 0x7265637379730001


def _has_flock() -> bool:
    try:
        import fcntl  # noqa: F401
    except ImportError:  # Windows
        return False
    return True


def _is_postgresql(uri: str) -> bool:
    return uri.startswith(("postgresql:", "postgresql+"))


@contextlib.contextmanager
def first_use_lock(uri: str) -> Iterator[None]:
    """Let one process at a time create or migrate the tables of the store at ``uri``. A SQLite database
    ``DB`` is locked through ``DB.lock`` beside it (``flock``: the processes of this machine), a PostgreSQL
    database with an advisory lock (those of every machine); other stores are not locked."""
    db = sqlite_path(uri)
    if db is not None and _has_flock():
        import fcntl

        db.parent.mkdir(parents=True, exist_ok=True)
        with open(db.with_name(db.name + ".lock"), "a") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    elif _is_postgresql(uri):
        import sqlalchemy

        engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect() as conn:  # an advisory lock lasts as long as its session
                key = {"key": _PG_FIRST_USE_LOCK}
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), key)
                try:
                    yield
                finally:
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), key)
        finally:
            engine.dispose()
    else:
        yield


def retry_first_use(open_store: Callable[[], Any], uri: str, *, attempts: int = 5, wait: float = 1.0) -> Any:
    """``open_store()`` under ``first_use_lock(uri)``. A store that cannot be locked is tried up to
    ``attempts`` times, ``wait``, 2 x ``wait``, ... seconds apart: a database whose tables another worker is
    creating right now (a first run on a new database) is usable once that worker is done. The last error is
    raised."""
    if (sqlite_path(uri) is not None and _has_flock()) or _is_postgresql(uri):
        attempts = 1  # locked: an error is not a race, and trying again would only delay it
    for attempt in range(1, attempts + 1):
        try:
            with first_use_lock(uri):
                return open_store()
        except ImportError:  # a missing driver does not come back
            raise
        except Exception:
            if attempt == attempts:
                raise
            time.sleep(wait * attempt)
    raise AssertionError("unreachable")


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

        def open_store() -> str:
            self.client = MlflowClient(tracking_uri=self.tracking_uri)
            return self._experiment(experiment, MlflowException)

        try:
            # the first use creates and migrates the tables: one process at a time, retried
            self.experiment_id = retry_first_use(open_store, self.tracking_uri)
        except Exception as err:  # sqlalchemy and alembic errors too: a bad URL, a server down, a lost race
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

    def running_runs(self, **tags: str) -> list:
        """The RUNNING runs of the experiment whose tags have the given values (compared here, not in an MLflow
        filter string, which has no way to quote every value)."""
        found, token = [], None
        while True:
            page = self.client.search_runs(
                [self.experiment_id], "attributes.status = 'RUNNING'", max_results=1000, page_token=token
            )
            found += [run for run in page if all(run.data.tags.get(k) == v for k, v in tags.items())]
            token = page.token
            if not token:
                return found

    def end_if_running(self, run_id: str, status: str = "KILLED") -> bool:
        """End a run that is still RUNNING (one whose process died) as ``status``; False if it was not
        running or is not in this tracking store."""
        from mlflow.exceptions import MlflowException

        try:
            if self.client.get_run(run_id).info.status != "RUNNING":
                return False
            self.client.set_terminated(run_id, status=status)
        except MlflowException:  # deleted, or logged to another store
            return False
        return True


def row_metrics(row, prefix: str = "") -> dict[str, float | None]:
    """One leaderboard row's metrics as ``{split}_{shots}_{metric}`` keys (seen splits have no shots part)."""
    out: dict[str, float | None] = {}
    for name, value in (row.metrics or {}).items():
        out[metric_key(prefix, row.split, row.shots, name)] = value
    out[metric_key(prefix, row.split, row.shots, "predict_seconds")] = row.predict_seconds
    return out


def log_leaderboard(
    board,
    files: Mapping[str, Path],
    *,
    tracking_uri: str | None = None,
    run_name: str | None = None,
    tags: Mapping[str, Any] | None = None,
) -> str:
    """Log a leaderboard as a parent run (all metrics prefixed by model, the files as artifacts) with one
    child run per model (its hyperparameters, fit seconds, per-row metrics, and whether and from which study it
    was tuned). The leaderboard's own ``run_id`` (in its files) is a parameter of both. Returns the parent run
    id."""
    tracker = Tracker(tracking_uri)
    models = list(dict.fromkeys(r.model for r in board.rows)) or list(board.params)
    protocol = {
        "leaderboard_run_id": board.run_id,
        "draws": board.draws,
        "fit_split": board.fit_split,
    }
    params = (
        dataset_params(board.dataset, board.seed)
        | protocol
        | {
            "shots": ",".join(map(str, board.shots)),
            "splits": ",".join(dict.fromkeys(r.split for r in board.rows)),
            "models": ",".join(models),
            "tuned_models": ",".join(board.tuned) or "none",
        }
    )
    parent = tracker.start_run(
        run_name or f"leaderboard {board.dataset.name}",
        params=params,
        tags={"kind": "leaderboard", "leaderboard_run_id": board.run_id} | dict(tags or {}),
    )
    try:
        parent_metrics: dict[str, float | None] = {}
        for model in models:
            rows = [r for r in board.rows if r.model == model]
            study = board.tuned.get(model, {}).get("study")
            validation = next((r.validation_split for r in rows if r.validation_split), None)
            child = tracker.start_run(
                model,
                parent_id=parent,
                params=dataset_params(board.dataset, board.seed)
                | protocol
                | {"validation_split": validation or "none", "tuned_study": study or "none"}
                | board.params.get(model, {}),
                tags={"kind": "fit", "model": model, "tuned": str(study is not None).lower()}
                | ({"study": study} if study else {})
                | ({"params_source": rows[0].params_source} if rows and rows[0].params_source else {}),
            )
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
    except KeyboardInterrupt:
        tracker.end_run(parent, "KILLED")
        raise
    except BaseException:
        tracker.end_run(parent, "FAILED")
        raise
    tracker.end_run(parent)
    return parent
