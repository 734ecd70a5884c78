"""Hyperparameter search with Optuna, under the one evaluation protocol.

* The search space of a model is data (``experiments/spaces/<model>.toml``, see ``experiments.spaces``).
* Every trial fits on ``train`` and is measured on one validation split (``val_seen``, or ``val_unseen`` at k
  shots); test splits are never seen while tuning.
* Trial 0 of a new study is the model's defaults (enqueued only by the worker that created the study).
* The sampler is a seeded TPE whose random draws for trial n are seeded from ``(seed, n)``
  (``trial_seeded_sampler``). The storage hands out trial numbers, one per trial, so workers sharing a study
  never draw from the same random stream (they do not propose the same parameters), a resumed study does
  not replay the start-up draws of the previous invocation, and a study run by one worker is reproducible.
* A running trial beats a heartbeat into the storage every ``HEARTBEAT_INTERVAL`` seconds. A trial whose
  worker died (SIGKILL, a lost machine) stops beating: after ``GRACE_PERIOD`` seconds the next trial any
  worker starts marks it failed, ends its MLflow runs (the trial's and its worker's tuning run) as KILLED and
  enqueues its parameters again (``retry_of``; at most ``MAX_RETRIES`` times), so a resumed study retries it.
* Studies persist in a storage URL: a SQLite file under ``./runs`` by default; a PostgreSQL URL
  (``postgresql://user@host:port/db``, needs ``psycopg2-binary``) lets several workers share a study.
  Re-running the same command resumes the study and adds ``trials`` more.
* No pruning: every trial runs its fit to the end (the deep models stop early on their own validation loss).
* A study records the model, metric, split, shots, draws, protocol seed and dataset fingerprint it was made
  for; resuming it with different ones is an error (pass another ``--study`` name), and so is using it for a
  leaderboard on other data or under another protocol (``tuned_models``).
* Every trial records the epoch its validation split chose (``stop_epoch``, for models that stop early).
* A tuned leaderboard (``run_tuned_leaderboard``) fits every model as the trials did, under the one data policy:
  on train, stopping early and calibrating on val_seen. A tuned row then differs from an untuned one only in its
  hyperparameters (a study whose best trial is the defaults gives the untuned row exactly), and models without a
  study run at their defaults, labelled so.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import socket
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.spaces import SearchSpace, load_space
from experiments.tracking import Tracker, dataset_params, retry_first_use, sqlite_path
from recsys.data.dataset import Dataset, is_unseen_split
from recsys.errors import UserError
from recsys.evaluation.evaluator import DEFAULT_DRAWS, Evaluator
from recsys.evaluation.metrics import HIGHER_IS_BETTER
from recsys.files import check_depth
from recsys.models.params import SIZE_BOUNDS, MemoryEstimateError
from recsys.models.registry import create_model, model_class
from recsys.workspace import pid_alive

DEFAULT_STORAGE = "sqlite:///runs/optuna.db"
DEFAULT_STUDY_PREFIX = "recsys"
#: evaluation bootstrap resamples while tuning (the objective uses the point value, not the interval)
_TUNING_BOOTSTRAP = 50
#: seconds between a running trial's heartbeats, and without one after which the trial counts as dead
HEARTBEAT_INTERVAL = 10
GRACE_PERIOD = 30
#: times a dead worker's trial is enqueued again (a trial that keeps killing its worker is given up)
MAX_RETRIES = 2


class NoStudy(UserError):
    """A model has no study to take its hyperparameters from (none by that name, or none with a completed
    trial): a tuned leaderboard runs it at its defaults."""


class InvalidTrialParams(Exception):
    """A sampled combination the model rejects, at construction (e.g. dim not a multiple of heads) or with a
    ValueError from fit on this data: that trial is marked failed (reason in its ``invalid`` user attribute)
    and the study goes on."""


@contextlib.contextmanager
def reading_study(name: str):
    """Within the block, what Optuna parses from a study's storage (attributes, distributions: JSON) and cannot
    (nested too deeply, malformed: a tampered database) is one ``UserError`` naming the study."""
    try:
        yield
    except RecursionError:
        raise UserError(
            f"study {name!r}: a stored attribute is nested too deeply to read (a tampered study?); tune again "
            "under another --study name"
        ) from None
    except ValueError as err:  # json.JSONDecodeError and Optuna's own checks of stored distributions
        raise UserError(
            f"study {name!r}: its stored values are unreadable ({str(err).splitlines()[0][:200]}); tune again "
            "under another --study name"
        ) from None


def study_attrs(handle, name: str) -> dict[str, Any]:
    """The study's user attributes, each checked to nest at most ``MAX_JSON_DEPTH`` levels."""
    with reading_study(name):
        attrs = dict(handle.user_attrs)
    for key, value in attrs.items():
        check_depth(value, f"study {name!r} attribute {key}")
    return attrs


def trial_record(trial, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(params, user attributes) of a trial read from storage, each attribute depth-checked."""
    with reading_study(name):
        params, attrs = dict(trial.params), dict(trial.user_attrs)
    for key, value in attrs.items():
        check_depth(value, f"study {name!r} trial {trial.number} attribute {key}")
    return params, attrs


def checked_stop_epoch(value: Any, name: str, trial: int) -> int | None:
    """A trial's ``stop_epoch`` attribute: None, or a whole number of epochs within the models' bound."""
    if value is None:
        return None
    high = SIZE_BOUNDS["epochs"][1]
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or value != int(value)
        or not 1 <= value <= high
    ):
        raise UserError(
            f"study {name!r} trial {trial}: stop_epoch is {value!r}, not a number of epochs from 1 to {high} "
            "(a tampered study?); tune again under another --study-prefix"
        )
    return int(value)


def study_name(model: str, prefix: str = DEFAULT_STUDY_PREFIX) -> str:
    """The study of ``model`` under ``prefix``: ``{prefix}-{model}`` (what ``recsys study`` creates)."""
    return f"{prefix}-{model}"


def resolve_storage(storage: str | None = None, *, on_stale_trial=None):
    """An Optuna storage for ``storage`` (default: ``sqlite:///runs/optuna.db``; the folder is created).

    With ``on_stale_trial`` (a callback ``(study, frozen_trial)``) running trials beat a heartbeat, and a
    trial without one for ``GRACE_PERIOD`` seconds is failed and handed to the callback. The first use of a
    new database (creating its tables) is safe when several workers start at once.
    """
    import optuna

    url = storage or DEFAULT_STORAGE
    db = sqlite_path(url)
    engine_kwargs: dict[str, Any] = {}
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}  # several local workers may write at once
    heartbeat: dict[str, Any] = {}
    if on_stale_trial is not None:
        # Optuna 4.9 renamed failed_trial_callback
        takes = inspect.signature(optuna.storages.RDBStorage).parameters
        callback = next(k for k in ("heartbeat_stale_trial_callback", "failed_trial_callback") if k in takes)
        heartbeat = {
            "heartbeat_interval": HEARTBEAT_INTERVAL,
            "grace_period": GRACE_PERIOD,
            callback: on_stale_trial,
        }

    def open_storage():
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since 2.9
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **heartbeat)

    try:
        return retry_first_use(open_storage, url)
    except ModuleNotFoundError as err:
        raise UserError(
            f"storage {_redact(url)} needs the {err.name} package: pip install psycopg2-binary"
        ) from None
    except Exception as err:  # sqlalchemy errors: bad URL, server down, auth
        raise UserError(f"cannot open Optuna storage {_redact(url)}: {str(err).splitlines()[0]}") from None


def _redact(url: str) -> str:
    """The URL without a password (it is printed and logged)."""
    head, sep, tail = url.partition("://")
    if sep and "@" in tail:
        creds, _, host = tail.rpartition("@")
        user = creds.split(":", 1)[0]
        return f"{head}://{user}:***@{host}" if ":" in creds else url
    return url


def suggest(trial, space: SearchSpace) -> dict[str, Any]:
    """The point of ``space`` Optuna proposes for ``trial`` (enqueued values, e.g. the defaults, come back)."""
    params: dict[str, Any] = {}
    for name, p in space.params.items():
        if p.type == "categorical":
            params[name] = trial.suggest_categorical(name, list(p.choices))
        elif p.type == "int":
            params[name] = trial.suggest_int(name, p.low, p.high, log=p.log, step=p.step or 1)
        else:
            params[name] = trial.suggest_float(name, p.low, p.high, log=p.log)
    return params


@dataclass(frozen=True)
class Objective:
    """What a study optimises: ``metric`` on ``split`` (at ``shots`` for unseen splits) after fitting on train."""

    metric: str = "user_srocc"
    split: str = "val_seen"
    shots: int = 10
    draws: int = DEFAULT_DRAWS

    def check(self, dataset: Dataset) -> None:
        if self.metric not in HIGHER_IS_BETTER:
            raise UserError(f"unknown metric {self.metric!r}; choose one of {', '.join(HIGHER_IS_BETTER)}")
        if not self.split.startswith("val"):
            raise UserError(
                f"tuning measures validation splits only (val_seen, val_unseen), not {self.split!r}; "
                "test splits are for the final leaderboard"
            )
        if self.split not in dataset.ratings:
            raise UserError(f"{dataset.name} has no split {self.split!r}; it has {', '.join(dataset.splits)}")
        if self.shots < 0:
            raise UserError(f"--shots must be non-negative, got {self.shots}")
        if self.draws < 1:
            raise UserError(f"--draws must be at least 1, got {self.draws}")

    @property
    def direction(self) -> str:
        return "maximize" if HIGHER_IS_BETTER[self.metric] else "minimize"

    @property
    def task_shots(self) -> int | None:
        return self.shots if is_unseen_split(self.split) else None

    @property
    def task_draws(self) -> int | None:
        """Reference draws, which matter on unseen splits only."""
        return self.draws if is_unseen_split(self.split) else None


def tune(
    dataset: Dataset,
    model: str,
    *,
    trials: int,
    storage: str | None = None,
    study: str | None = None,
    objective: Objective | None = None,
    seed: int = 0,
    tracking_uri: str | None = None,
    tracking: bool = True,
    spaces_dir: Path | None = None,
    timeout: float | None = None,
    progress: bool = True,
):
    """Run ``trials`` more trials of the study of ``model`` (created if new, resumed otherwise).

    Args:
        dataset: the data; the model fits on ``train`` and is scored on ``objective.split``.
        model: a registered model name; its space is ``experiments/spaces/<model>.toml``.
        trials: number of trials this call adds.
        storage: Optuna storage URL (default ``sqlite:///runs/optuna.db``).
        study: study name (default ``study_name(model)``).
        objective: metric, validation split and shots.
        seed: protocol seed, and the sampler's (trial n draws from a stream seeded with (seed, n)).
        tracking_uri / tracking: where MLflow runs go; ``tracking=False`` logs nothing.
        timeout: stop starting new trials after this many seconds.

    Returns the ``optuna.Study``.
    """
    import optuna

    if trials < 1:
        raise UserError(f"--trials must be at least 1, got {trials}")
    if timeout is not None and not timeout > 0:
        raise UserError(f"--timeout must be a positive number of seconds, got {timeout:g}")
    objective = objective or Objective()
    objective.check(dataset)
    space = load_space(model, spaces_dir)
    name = study or study_name(model)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    stale = StaleTrials()
    store = resolve_storage(storage, on_stale_trial=stale)
    spec = study_spec(dataset, model, objective, seed)
    try:
        handle = optuna.create_study(storage=store, study_name=name, direction=objective.direction)
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        handle = optuna.load_study(storage=store, study_name=name)
        created = False
    if created:
        for key, value in spec.items():
            handle.set_user_attr(key, value)
        # trial 0 is the defaults; only the creator enqueues, so concurrent workers do not repeat it
        handle.enqueue_trial(space.default_point(), user_attrs={"defaults": True})
    else:
        _check_resumable(handle, spec, name, objective)
    handle.sampler = trial_seeded_sampler(seed)

    tracker = Tracker(tracking_uri) if tracking else None
    stale.tracker = tracker  # a dead worker's runs are ended in the store this worker logs to
    if tracker is not None:
        close_dead_parents(tracker, handle, name)
    parent = None
    status = "FAILED"
    try:  # from here on every exit ends the parent run: FINISHED, FAILED, or KILLED on an interrupt
        if tracker is not None:
            parent = tracker.start_run(
                f"tune {model}",
                params=dataset_params(dataset, seed)
                | {
                    "model": model,
                    "study": name,
                    "metric": objective.metric,
                    "split": objective.split,
                    "shots": objective.task_shots,
                    "draws": objective.task_draws,
                    "trials": trials,
                    "sampler": "TPE, seeded per trial from (seed, trial number)",
                    "sampler_seed": seed,
                },
                tags={"kind": "tune", "model": model, "study": name} | worker_tags(),
            )
        evaluator = Evaluator(
            dataset, shots=[objective.shots], seed=seed, n_bootstrap=_TUNING_BOOTSTRAP, draws=objective.draws
        )
        worker = f"{socket.gethostname()}:{os.getpid()}"
        run = _TrialRunner(dataset, model, space, objective, evaluator, tracker, parent, worker, seed)
        handle.optimize(
            run, n_trials=trials, timeout=timeout, show_progress_bar=progress, catch=(InvalidTrialParams,)
        )
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if tracker is not None and parent is not None:
            try:
                _log_best(tracker, parent, handle, name)
            finally:
                tracker.end_run(parent, status)
    return handle


def _log_best(tracker: Tracker, parent: str, handle, name: str) -> None:
    """The study's best trial so far as metrics and tags of the worker's parent run."""
    import optuna

    with reading_study(name):
        trials = handle.trials
        if not any(t.state == optuna.trial.TrialState.COMPLETE for t in trials):
            return
        best = handle.best_trial
    tracker.log_metrics(parent, {"best_value": best.value, "trials_in_study": len(trials)})
    tracker.set_tags(parent, {"best_trial": best.number} | {f"best.{k}": v for k, v in best.params.items()})


# ---------------------------------------------------------------------- workers that died between trials
#: seconds without a sign of life after which a tuning run of a worker on another machine counts as dead
PARENT_GRACE_PERIOD = 10 * GRACE_PERIOD


def worker_tags() -> dict[str, Any]:
    """Who runs a tuning session, and when it was last seen (updated at each trial): tags of its parent run."""
    return {
        "worker_host": socket.gethostname(),
        "worker_pid": os.getpid(),
        "last_seen": round(time.time(), 3),
    }


def close_dead_parents(tracker: Tracker, handle, name: str) -> list[str]:
    """End as KILLED the RUNNING tuning runs of study ``name`` whose worker died between trials (a trial that
    dies is found by its heartbeat, ``StaleTrials``; between trials nothing beats). A worker on this machine is
    dead when its process is gone; one on another machine when it has no running trial and was last seen more
    than ``PARENT_GRACE_PERIOD`` seconds ago. Returns the ended run ids."""
    import optuna

    host, now = socket.gethostname(), time.time()
    with reading_study(name):
        running = {
            str(t.user_attrs.get("mlflow_parent_run_id"))
            for t in handle.trials
            if t.state == optuna.trial.TrialState.RUNNING
        }
    ended = []
    for run in tracker.running_runs(kind="tune", study=name):
        tags = run.data.tags
        try:
            pid, last_seen = int(tags.get("worker_pid", "")), float(tags.get("last_seen", ""))
        except ValueError:
            continue  # a run of an older version: no way to tell
        if tags.get("worker_host") == host:
            dead = not pid_alive(pid)
        else:
            dead = run.info.run_id not in running and now - last_seen > PARENT_GRACE_PERIOD
        if dead and tracker.end_if_running(run.info.run_id, "KILLED"):
            ended.append(run.info.run_id)
    return ended


def study_spec(dataset: Dataset, model: str, objective: Objective, seed: int) -> dict[str, Any]:
    """What a study was made for: model, objective, protocol (draws on unseen splits, seed) and data."""
    return {
        "model": model,
        "metric": objective.metric,
        "split": objective.split,
        "shots": objective.task_shots,
        "draws": objective.task_draws,
        "protocol_seed": seed,
        "dataset_fingerprint": dataset.fingerprint(),
    }


def _check_resumable(handle, spec: dict, name: str, objective: Objective) -> None:
    if handle.direction.name.lower() != objective.direction:
        raise UserError(
            f"study {name!r} is to {handle.direction.name.lower()}; {objective.metric} needs "
            f"{objective.direction}: pass another --study name"
        )
    stored = study_attrs(handle, name)
    for key, value in spec.items():
        if key in stored and stored[key] != value:
            raise UserError(
                f"study {name!r} was made for {key} = {stored[key]!r}, not {value!r}; resume it with the same "
                "model, data, metric, split, shots, draws and seed, or pass another --study name"
            )


def trial_seed(seed: int, number: int) -> int:
    """The seed of trial ``number``'s random draws in a study tuned with ``seed``."""
    import numpy as np

    return int(np.random.SeedSequence([seed, number]).generate_state(1)[0])


@functools.cache
def _trial_seeded_sampler_class() -> type:
    import optuna  # imported on first use: `recsys --help` does not pay for it

    class TrialSeededSampler(optuna.samplers.BaseSampler):
        """Optuna's TPE, made afresh for each trial with the seed ``trial_seed(seed, trial.number)``."""

        def __init__(self, seed: int = 0) -> None:
            self.seed = seed
            self._tpe = optuna.samplers.TPESampler(seed=seed)

        def before_trial(self, study, trial) -> None:
            self._tpe = optuna.samplers.TPESampler(seed=trial_seed(self.seed, trial.number))
            self._tpe.before_trial(study, trial)

        def infer_relative_search_space(self, study, trial):
            return self._tpe.infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self._tpe.sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self._tpe.sample_independent(study, trial, param_name, param_distribution)

        def after_trial(self, study, trial, state, values) -> None:
            self._tpe.after_trial(study, trial, state, values)

        def reseed_rng(self) -> None:
            self._tpe.reseed_rng()

    return TrialSeededSampler


def trial_seeded_sampler(seed: int = 0):
    """An Optuna TPE sampler whose draws for trial n are seeded with ``trial_seed(seed, n)``.

    The storage hands every trial its own number, so two workers on one study never share a random stream
    (they do not propose the same parameters), and trial n of a study draws the same numbers however many
    workers and invocations ran the trials before it.
    """
    return _trial_seeded_sampler_class()(seed)


class StaleTrials:
    """What happens to a trial whose worker stopped beating (Optuna has just marked it failed): its MLflow
    runs (the trial's and its worker's tuning run) are ended as KILLED in ``tracker``'s store, and its
    parameters are enqueued again (user attribute ``retry_of``), at most ``MAX_RETRIES`` times over."""

    def __init__(self, tracker: Tracker | None = None) -> None:
        self.tracker = tracker

    def __call__(self, study, trial) -> None:
        import optuna

        if self.tracker is not None:
            for key in ("mlflow_run_id", "mlflow_parent_run_id"):
                run_id = trial.user_attrs.get(key)
                if run_id:
                    self.tracker.end_if_running(str(run_id), "KILLED")
        history = [*trial.system_attrs.get("retry_history", []), trial.number]
        if len(history) > MAX_RETRIES:
            return
        study.add_trial(
            optuna.trial.create_trial(
                state=optuna.trial.TrialState.WAITING,
                params=trial.params,
                distributions=trial.distributions,
                user_attrs={"retry_of": trial.number},
                system_attrs={"failed_trial": trial.number, "retry_history": history},
            )
        )


class _TrialRunner:
    """The objective: build the model from the trial, fit on train, score on the validation split."""

    def __init__(self, dataset, model, space, objective, evaluator, tracker, parent, worker, seed):
        self.dataset, self.model, self.space, self.objective = dataset, model, space, objective
        self.evaluator, self.tracker, self.parent, self.worker, self.seed = (
            evaluator,
            tracker,
            parent,
            worker,
            seed,
        )

    def score(self, fitted, fit_seconds: float = 0.0) -> float:
        result = self.evaluator.evaluate(
            fitted, self.objective.split, self.objective.task_shots, fit_seconds=fit_seconds
        )
        if result.metrics is None:
            raise UserError(
                f"{self.model} cannot be tuned on {self.objective.split}: {result.status} ({result.reason})"
            )
        return float(result.metrics[self.objective.metric])

    def __call__(self, trial) -> float:
        params = suggest(trial, self.space)
        trial.set_user_attr("worker", self.worker)
        if self.parent is not None:  # so that a worker that dies can have its runs ended (StaleTrials)
            trial.set_user_attr("mlflow_parent_run_id", self.parent)
            self.tracker.set_tags(self.parent, {"last_seen": round(time.time(), 3)})
        try:
            model = create_model(self.model, **params)
        except UserError as err:
            trial.set_user_attr("invalid", str(err))
            raise InvalidTrialParams(str(err)) from None
        run_id = None
        if self.tracker is not None:
            run_id = self.tracker.start_run(
                f"{self.model} trial {trial.number}",
                parent_id=self.parent,
                params=dataset_params(self.dataset, self.seed) | model.get_params(),
                tags={"kind": "trial", "model": self.model, "trial": trial.number, "worker": self.worker},
            )
            trial.set_user_attr("mlflow_run_id", run_id)
        status = "FAILED"
        try:
            start = time.perf_counter()
            try:
                model.fit(self.dataset, "train")
            except (ValueError, MemoryEstimateError) as err:  # a combination this data cannot fit (e.g. no
                # rating above a threshold, or too large for the memory available)
                trial.set_user_attr("invalid", str(err))
                raise InvalidTrialParams(str(err)) from None
            fit_seconds = time.perf_counter() - start
            value = self.score(model, fit_seconds)
            trial.set_user_attr("fit_seconds", round(fit_seconds, 4))
            stop_epoch = stopping_epoch(model)
            if stop_epoch is not None:  # the epochs val_seen chose (recorded; a tuned fit stops there again)
                trial.set_user_attr("stop_epoch", stop_epoch)
            if self.tracker is not None:
                self.tracker.log_metrics(run_id, {self.objective.metric: value, "fit_seconds": fit_seconds})
            status = "FINISHED"
            return value
        finally:
            if self.tracker is not None:
                self.tracker.end_run(run_id, status)


def stopping_epoch(model) -> int | None:
    """The epochs a fitted model's validation split chose, for models that stop early (None for the rest)."""
    method = getattr(model, "stopping_epoch", None)
    return method() if callable(method) else None


# ---------------------------------------------------------------------- best parameters
def _load_study(model: str, storage: str | None, study_name: str):
    """The study ``study_name`` of ``model`` with at least one completed trial, or a ``UserError`` naming it."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = resolve_storage(storage)
    try:
        with reading_study(study_name):
            handle = optuna.load_study(study_name=study_name, storage=store)
    except KeyError:
        raise NoStudy(
            f"no study {study_name!r} for {model} in {_redact(storage or DEFAULT_STORAGE)}; "
            f"run `recsys tune {model} --study {study_name}` (or `recsys study`) first"
        ) from None
    stored_model = study_attrs(handle, study_name).get("model")
    if stored_model is not None and stored_model != model:
        raise UserError(f"study {study_name!r} tuned {stored_model}, not {model}")
    with reading_study(study_name):
        completed = any(t.state == optuna.trial.TrialState.COMPLETE for t in handle.trials)
    if not completed:
        raise NoStudy(f"study {study_name!r} has no completed trial; run `recsys tune {model}` again")
    return handle


def best_trial(handle, model: str, name: str):
    """(trial number, params, user attributes) of the study's best completed trial, its params validated as
    the model's hyperparameters (a tampered study is refused like a bad --params)."""
    with reading_study(name):
        best = handle.best_trial
    params, attrs = trial_record(best, name)
    try:
        create_model(model, **params)
    except UserError as err:
        raise UserError(
            f"study {name!r} trial {best.number}: {err}; tune again under another --study-prefix"
        ) from None
    return best.number, params, attrs


def best_params(model: str, storage: str | None, study_name: str) -> dict[str, Any]:
    """The hyperparameters of the best completed trial of ``study_name`` (searched ones; the rest are defaults).

    Raises ``UserError`` naming the study when it is missing or has no completed trial.
    """
    _, params, _ = best_trial(_load_study(model, storage, study_name), model, study_name)
    return params


@dataclass(frozen=True)
class TunedModel:
    """A model's best trial, checked against the data and protocol of the leaderboard that uses it.

    ``params`` are the best trial's searched values (the others stay at their defaults); ``stop_epoch`` is the
    epoch its validation split chose, recorded (the tuned fit stops on val_seen again, as the trial did).
    """

    model: str
    study: str
    params: dict[str, Any]
    stop_epoch: int | None
    spec: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """What a leaderboard keeps about the study (leaderboard.json ``tuned``)."""
        return {"study": self.study, "params": self.params, "stop_epoch": self.stop_epoch} | self.spec


def needs_study(model: str) -> bool:
    """Models without hyperparameters (global_mean, the oracle) have nothing to tune and need no study."""
    return bool(model_class(model).param_names())


def tuned_models(
    models,
    dataset: Dataset,
    *,
    storage: str | None = None,
    study_prefix: str = DEFAULT_STUDY_PREFIX,
    seed: int = 0,
    draws: int = DEFAULT_DRAWS,
    untuned: dict[str, str] | None = None,
) -> dict[str, TunedModel]:
    """The best trial of the study ``{study_prefix}-{model}`` of each model that has hyperparameters and a study.

    A model without hyperparameters, without a study or whose study has no completed trial is left out, and
    ``untuned`` (when given) gets why: model -> one line.

    A study is refused, naming both values, when it was made on other data (dataset fingerprint), with another
    protocol seed, another number of draws (on an unseen split), or for another split or shots than the first
    study: every tuned row must have been tuned for the same objective on the same data.
    """
    out: dict[str, TunedModel] = {}
    objective: dict[str, Any] | None = None
    first = ""
    for model in models:
        if not needs_study(model):
            if untuned is not None:
                untuned[model] = "no hyperparameters to tune"
            continue
        name = study_name(model, study_prefix)
        try:
            handle = _load_study(model, storage, name)
        except NoStudy as err:
            if untuned is not None:
                untuned[model] = str(err)
            continue
        stored = study_attrs(handle, name)
        wanted: dict[str, Any] = {"dataset_fingerprint": dataset.fingerprint(), "protocol_seed": seed}
        if is_unseen_split(str(stored.get("split", ""))):
            wanted["draws"] = draws
        if objective is None:
            objective, first = {"split": stored.get("split"), "shots": stored.get("shots")}, name
        for key, value in (wanted | objective).items():
            if key not in stored:
                raise UserError(
                    f"study {name!r} does not record its {key} (made by an older version); tune again under "
                    "a new --study-prefix"
                )
            if stored[key] != value:
                source = f"study {first!r}" if key in objective else "this leaderboard"
                raise UserError(
                    f"study {name!r} was made with {key} = {stored[key]!r} but {source} has {value!r}; tune on "
                    "the same data and protocol (--data, --seed, --draws, --split, --shots) or pass another "
                    "--study-prefix"
                )
        number, params, attrs = best_trial(handle, model, name)
        # recorded only: the tuned fit stops on val_seen again, as the trial did
        stop_epoch = checked_stop_epoch(attrs.get("stop_epoch"), name, number)
        spec = {k: stored.get(k) for k in ("metric", "split", "shots", "draws", "protocol_seed")}
        out[model] = TunedModel(model, name, params, stop_epoch, spec)
    return out


def run_tuned_leaderboard(
    dataset: Dataset,
    models=None,
    *,
    storage: str | None = None,
    study_prefix: str = DEFAULT_STUDY_PREFIX,
    params: dict[str, dict] | None = None,
    splits=None,
    shots=(0, 10),
    seed: int = 0,
    draws: int = DEFAULT_DRAWS,
    progress: bool = True,
    **options,
):
    """Fit every model that has a study with its best trial's hyperparameters, the others at their defaults, all
    on the same splits as an untuned leaderboard, and evaluate once on the test splits.

    ``models``: names or groups (default: every model, as ``recsys leaderboard``). Every model fits as the
    study's trials did, under the one data policy (train, stopping early and calibrating on val_seen), so a tuned
    row differs from an untuned one only in its hyperparameters. A model without a study (or with no completed
    trial) or without hyperparameters runs at its defaults: its rows are marked ``defaults`` and the board's
    ``defaults`` says why (a line is printed for each model that has hyperparameters); an error when no model to
    tune has a study. A study made on other data or under another protocol is refused (``tuned_models``).
    ``params`` override the tuned or default values per model (``{"ridge": {"alpha": 10}}``). Tuned rows carry
    their study's name. Other ``options`` go to ``run_leaderboard``.
    """
    from recsys.leaderboard import default_models, run_leaderboard
    from recsys.models.base import DATA_POLICY
    from recsys.models.registry import expand_models

    models = expand_models(models) if models else default_models(dataset)  # unknown names fail first
    untuned: dict[str, str] = {}
    found = tuned_models(
        models, dataset, storage=storage, study_prefix=study_prefix, seed=seed, draws=draws, untuned=untuned
    )
    studied = [m for m in models if needs_study(m)]
    if studied and not found:
        raise UserError(
            f"--tuned found no study for any of {', '.join(studied)} ({untuned[studied[0]]}); run `recsys study` "
            "or `recsys tune MODEL` first, or leave out --tuned"
        )
    for model in studied:
        if model in untuned:
            print(f"{model}: {untuned[model]}; it runs at its defaults", file=sys.stderr)
    overrides = params or {}
    merged = {
        name: (found[name].params if name in found else {}) | overrides.get(name, {}) for name in models
    }
    return run_leaderboard(
        dataset,
        models,
        splits=splits,  # None: the test splits the dataset has
        shots=shots,
        seed=seed,
        draws=draws,
        params=merged,
        fit_split=DATA_POLICY.fit_split,
        tuned={name: tuned.record() for name, tuned in found.items()},
        defaults=untuned,
        progress=progress,
        **options,
    )
