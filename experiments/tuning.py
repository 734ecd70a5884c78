"""Hyperparameter search with Optuna, under the one evaluation protocol.

* The search space of a model is data (``experiments/spaces/<model>.toml``, see ``experiments.spaces``).
* Every trial fits on ``train`` and is measured on one validation split (``val_seen``, or ``val_unseen`` at k
  shots); test splits are never seen while tuning.
* Trial 0 of a new study is the model's defaults (enqueued only by the worker that created the study).
* The sampler is a seeded TPE. Its seed is ``seed + number of trials already in the study``, so a resumed
  study is reproducible yet does not replay the random start-up draws of the previous invocation.
* Studies persist in a storage URL: a SQLite file under ``./runs`` by default; a PostgreSQL URL
  (``postgresql://user@host:port/db``, needs ``psycopg2-binary``) lets several workers share a study.
  Re-running the same command resumes the study and adds ``trials`` more.
* No pruning: every trial runs its fit to the end (the deep models stop early on their own validation loss).
* A study records the model, metric, split, shots and dataset fingerprint it was made for; resuming it with
  different ones is an error (pass another ``--study`` name).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.spaces import SearchSpace, load_space
from experiments.tracking import Tracker, dataset_params, sqlite_path
from recsys.data.dataset import Dataset, is_unseen_split
from recsys.errors import UserError
from recsys.evaluation.evaluator import Evaluator
from recsys.evaluation.metrics import HIGHER_IS_BETTER
from recsys.models.registry import create_model

DEFAULT_STORAGE = "sqlite:///runs/optuna.db"
DEFAULT_STUDY_PREFIX = "recsys"
#: evaluation bootstrap resamples while tuning (the objective uses the point value, not the interval)
_TUNING_BOOTSTRAP = 50


class InvalidTrialParams(Exception):
    """A sampled combination the model rejects, at construction (e.g. dim not a multiple of heads) or with a
    ValueError from fit on this data: that trial is marked failed (reason in its ``invalid`` user attribute)
    and the study goes on."""


def study_name(model: str, prefix: str = DEFAULT_STUDY_PREFIX) -> str:
    """The study of ``model`` under ``prefix``: ``{prefix}-{model}`` (what ``recsys study`` creates)."""
    return f"{prefix}-{model}"


def resolve_storage(storage: str | None = None):
    """An Optuna storage for ``storage`` (default: ``sqlite:///runs/optuna.db``; the folder is created)."""
    import optuna

    url = storage or DEFAULT_STORAGE
    db = sqlite_path(url)
    engine_kwargs: dict[str, Any] = {}
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs = {"connect_args": {"timeout": 60}}  # several local workers may write at once
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
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

    @property
    def direction(self) -> str:
        return "maximize" if HIGHER_IS_BETTER[self.metric] else "minimize"

    @property
    def task_shots(self) -> int | None:
        return self.shots if is_unseen_split(self.split) else None


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
        seed: sampler seed (offset by the number of trials already in the study) and protocol seed.
        tracking_uri / tracking: where MLflow runs go; ``tracking=False`` logs nothing.
        timeout: stop starting new trials after this many seconds.

    Returns the ``optuna.Study``.
    """
    import optuna

    if trials < 1:
        raise UserError(f"--trials must be at least 1, got {trials}")
    objective = objective or Objective()
    objective.check(dataset)
    space = load_space(model, spaces_dir)
    name = study or study_name(model)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = resolve_storage(storage)
    spec = {"model": model, "metric": objective.metric, "split": objective.split,
            "shots": objective.task_shots, "dataset_fingerprint": dataset.fingerprint()}  # fmt: skip
    try:
        handle = optuna.create_study(storage=store, study_name=name, direction=objective.direction)
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        handle = optuna.load_study(storage=store, study_name=name)
        created = False
    sampler_seed = seed + len(handle.trials)  # counted before trial 0 is enqueued
    if created:
        for key, value in spec.items():
            handle.set_user_attr(key, value)
        # trial 0 is the defaults; only the creator enqueues, so concurrent workers do not repeat it
        handle.enqueue_trial(space.default_point(), user_attrs={"defaults": True})
    else:
        _check_resumable(handle, spec, name, objective)
    handle.sampler = optuna.samplers.TPESampler(seed=sampler_seed)

    tracker = Tracker(tracking_uri) if tracking else None
    parent = None
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
                "trials": trials,
                "sampler": "TPE",
                "sampler_seed": sampler_seed,
            },  # fmt: skip
            tags={"kind": "tune", "model": model, "study": name},
        )
    evaluator = Evaluator(dataset, shots=[objective.shots], seed=seed, n_bootstrap=_TUNING_BOOTSTRAP)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    run = _TrialRunner(dataset, model, space, objective, evaluator, tracker, parent, worker, seed)
    status = "FAILED"
    try:
        handle.optimize(
            run, n_trials=trials, timeout=timeout, show_progress_bar=progress, catch=(InvalidTrialParams,)
        )
        status = "FINISHED"
    finally:
        if tracker is not None and parent is not None:
            done = [t for t in handle.trials if t.state == optuna.trial.TrialState.COMPLETE]
            if done:
                best = handle.best_trial
                tracker.log_metrics(parent, {"best_value": best.value, "trials_in_study": len(handle.trials)})
                tracker.set_tags(
                    parent, {"best_trial": best.number} | {f"best.{k}": v for k, v in best.params.items()}
                )
            tracker.end_run(parent, status)
    return handle


def _check_resumable(handle, spec: dict, name: str, objective: Objective) -> None:
    if handle.direction.name.lower() != objective.direction:
        raise UserError(f"study {name!r} is to {handle.direction.name.lower()}; {objective.metric} needs "
                        f"{objective.direction}: pass another --study name")  # fmt: skip
    stored = handle.user_attrs
    for key, value in spec.items():
        if key in stored and stored[key] != value:
            raise UserError(
                f"study {name!r} was made for {key} = {stored[key]!r}, not {value!r}; resume it with the same "
                "model, data, metric, split and shots, or pass another --study name"
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
        try:
            model = create_model(self.model, **params)
        except UserError as err:
            trial.set_user_attr("invalid", str(err))
            raise InvalidTrialParams(str(err)) from None
        run_id = None
        if self.tracker is not None:
            run_id = self.tracker.start_run(
                f"{self.model} trial {trial.number}", parent_id=self.parent,
                params=dataset_params(self.dataset, self.seed) | model.get_params(),
                tags={"kind": "trial", "model": self.model, "trial": trial.number, "worker": self.worker},
            )  # fmt: skip
        status = "FAILED"
        try:
            start = time.perf_counter()
            try:
                model.fit(self.dataset, "train")
            except ValueError as err:  # a combination this data cannot fit (e.g. no rating above a threshold)
                trial.set_user_attr("invalid", str(err))
                raise InvalidTrialParams(str(err)) from None
            fit_seconds = time.perf_counter() - start
            value = self.score(model, fit_seconds)
            trial.set_user_attr("fit_seconds", round(fit_seconds, 4))
            if self.tracker is not None:
                self.tracker.log_metrics(run_id, {self.objective.metric: value, "fit_seconds": fit_seconds})
            status = "FINISHED"
            return value
        finally:
            if self.tracker is not None:
                self.tracker.end_run(run_id, status)


# ---------------------------------------------------------------------- best parameters
def best_params(model: str, storage: str | None, study_name: str) -> dict[str, Any]:
    """The hyperparameters of the best completed trial of ``study_name`` (searched ones; the rest are defaults).

    Raises ``UserError`` naming the study when it is missing or has no completed trial.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = resolve_storage(storage)
    try:
        handle = optuna.load_study(study_name=study_name, storage=store)
    except KeyError:
        raise UserError(
            f"no study {study_name!r} for {model} in {_redact(storage or DEFAULT_STORAGE)}; "
            f"run `recsys tune {model} --study {study_name}` (or `recsys study`) first"
        ) from None
    stored_model = handle.user_attrs.get("model")
    if stored_model is not None and stored_model != model:
        raise UserError(f"study {study_name!r} tuned {stored_model}, not {model}")
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in handle.trials):
        raise UserError(f"study {study_name!r} has no completed trial; run `recsys tune {model}` again")
    return dict(handle.best_trial.params)


def tuned_params(
    models, *, storage: str | None = None, study_prefix: str = DEFAULT_STUDY_PREFIX
) -> dict[str, dict]:
    """Best parameters per model from the studies ``{study_prefix}-{model}`` (for ``leaderboard --tuned``)."""
    return {model: best_params(model, storage, study_name(model, study_prefix)) for model in models}


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
    progress: bool = True,
    **options,
):
    """Refit every model with its best study parameters on train+val_seen and evaluate once on the test splits.

    ``models``: names or groups (default: every model, as ``recsys leaderboard``); the oracle has no study and
    runs with its defaults. ``params`` override the tuned values per model (``{"ridge": {"alpha": 10}}``).
    The fit split is ``train+val_seen``, or ``train`` where the dataset has no ``val_seen``; val_unseen users
    are never in a fit, so the unseen protocol stays intact. Other ``options`` go to ``run_leaderboard``.
    """
    from recsys.leaderboard import DEFAULT_SPLITS, default_models, run_leaderboard
    from recsys.models.registry import expand_models

    models = expand_models(models) if models else default_models(dataset)  # unknown names fail first
    tuned = tuned_params([m for m in models if m != "oracle"], storage=storage, study_prefix=study_prefix)
    overrides = params or {}
    merged = {name: tuned.get(name, {}) | overrides.get(name, {}) for name in models}
    fit_split = "+".join(s for s in ("train", "val_seen") if s in dataset.ratings)
    return run_leaderboard(
        dataset,
        models,
        splits=DEFAULT_SPLITS if splits is None else splits,
        shots=shots,
        seed=seed,
        params=merged,
        fit_split=fit_split,
        progress=progress,
        **options,
    )
