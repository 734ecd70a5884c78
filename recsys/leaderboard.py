"""The leaderboard: fit each model once under the one data policy, score it with the one evaluator on every split."""

from __future__ import annotations

import multiprocessing
import time
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from recsys.data.dataset import Dataset
from recsys.errors import UserError
from recsys.evaluation.evaluator import DEFAULT_DRAWS, Evaluator, Result
from recsys.models.base import DATA_POLICY
from recsys.models.registry import GROUPS, create_model, expand_models, preset_of
from recsys.threads import available_cores, limit_process_threads, threads_per_job

DEFAULT_SPLITS = ("test_seen", "test_unseen")
#: worker processes of a leaderboard by default (capped at the cores available)
DEFAULT_JOBS = 2
#: rough relative cost (fit and scoring, seconds on the full-size simulation) of the costliest models: the
#: parallel run starts them first so that no worker is left with a long fit at the end
COST_HINT = {"pref_tokens": 8.0, "two_tower": 7.0, "user_knn": 5.0, "lightfm": 5.0, "profile": 2.0, "mf": 2.0}


def new_run_id() -> str:
    """A short random id that ties a leaderboard's files (json, csv, per-user, predictions) together."""
    return uuid.uuid4().hex[:12]


@dataclass
class Leaderboard:
    """Rows of results plus what is needed to reproduce them.

    ``tuned`` maps each tuned model to its study (name, objective and stopping epoch); ``fit_split`` is the split
    every model fitted on (``train``, or ``train+val_seen`` for a tuned refit).
    """

    dataset: Dataset
    seed: int
    shots: tuple[int, ...]
    draws: int = DEFAULT_DRAWS
    fit_split: str = DATA_POLICY.fit_split
    rows: list[Result] = field(default_factory=list)
    params: dict[str, dict] = field(default_factory=dict)
    tuned: dict[str, dict] = field(default_factory=dict)
    run_id: str = field(default_factory=new_run_id)

    def provenance(self) -> dict:
        """Run id, dataset name and simulated flag: the columns every per-row file carries."""
        return {
            "run_id": self.run_id,
            "dataset": self.dataset.name,
            "simulated": bool(self.dataset.simulated),
        }

    def to_json(self) -> dict:
        return {
            "run_id": self.run_id,
            "dataset": {
                "name": self.dataset.name,
                "simulated": self.dataset.simulated,
                "fingerprint": self.dataset.fingerprint(),
                "image_features": self.dataset.feature_source,
            },
            "protocol": {
                "seed": self.seed,
                "shots": list(self.shots),
                "draws": self.draws,
                "queries": "the same for every k: all but max(shots) ratings of each new user, per draw",
            },
            "data_policy": {
                "fit_split": self.fit_split,
                "validation_split": None if "val_seen" in self.fit_split else DATA_POLICY.validation_split,
                "statement": DATA_POLICY.describe(),
            },
            "params": self.params,
            "tuned": self.tuned,
            "rows": [r.to_json() for r in self.rows],
        }


def default_models(dataset: Dataset) -> list[str]:
    """Every registered model (baselines, classical, deep, ablations), the oracle only where a ground truth exists."""
    return [m for m in GROUPS["all"] if m != "oracle" or dataset.ground_truth is not None]


def skipped_rows(
    evaluator: Evaluator, model: str, splits: Sequence[str], reason: str, fit_split: str
) -> list[Result]:
    """One ``skipped`` row (no metrics, the reason) per split and k for a model that could not fit the data."""
    context = {"fit_seconds": 0.0, "fit_split": fit_split, "validation_split": None}
    return [
        evaluator._failed(model, split, k, "skipped", reason, context)
        for split in splits
        for k in evaluator.tasks(split)
    ]


def run_leaderboard(
    dataset: Dataset,
    models: Sequence[str] | None = None,
    *,
    splits: Sequence[str] | None = None,
    shots: Sequence[int] = (0, 10),
    seed: int = 0,
    draws: int = DEFAULT_DRAWS,
    params: dict[str, dict] | None = None,
    fit_split: str = DATA_POLICY.fit_split,
    tuned: Mapping[str, dict] | None = None,
    progress: bool = True,
    jobs: int | None = None,
) -> Leaderboard:
    """Fit every model on ``fit_split`` (validating, where a model does, on the policy's validation split) and
    evaluate it on ``splits`` with ``draws`` reference draws per new user.

    ``splits=None`` evaluates those of ``DEFAULT_SPLITS`` the dataset has (an error if it has neither); an
    explicitly requested split the dataset lacks is an error naming the splits it has. A model that cannot fit
    these data (no image features, no metadata: a ``UserError`` or ``ValueError`` from its fit) gets a
    ``skipped`` row per split with the reason, and one that cannot score new users an ``unsupported`` row,
    instead of stopping the run. ``tuned`` (model -> study record, from
    ``experiments.tuning``) marks the rows of tuned models with their study.

    ``jobs`` worker processes (default ``default_jobs()``) fit and score models side by side, each with its
    share of the cores (``recsys.threads.threads_per_job``); the rows are those of the serial run
    (``jobs=1``), in the order of ``models``.
    """
    models = expand_models(models) if models else default_models(dataset)  # unknown names fail before any fit
    if "oracle" in models and dataset.ground_truth is None:
        print(f"oracle skipped: {dataset.name} has no ground truth (only simulated data do)")
        models.remove("oracle")
    params = params or {}
    tuned = dict(tuned or {})
    if splits is None:
        splits = [s for s in DEFAULT_SPLITS if s in dataset.ratings] or list(DEFAULT_SPLITS)
    missing = [s for s in splits if s not in dataset.ratings]
    if missing:
        raise UserError(
            f"{dataset.name} has no split(s) {', '.join(missing)}; it has {', '.join(dataset.splits)}"
        )
    if draws < 1:
        raise UserError(f"--draws must be at least 1, got {draws}")
    evaluator = Evaluator(dataset, shots=shots, seed=seed, draws=draws)
    board = Leaderboard(
        dataset=dataset, seed=seed, shots=tuple(shots), draws=draws, fit_split=fit_split, tuned=tuned
    )
    task = _ModelTask(evaluator, tuple(splits), params, fit_split, tuned)
    jobs = min(default_jobs() if jobs is None else _check_jobs(jobs), len(models))
    outcomes = (
        _run_parallel(task, models, jobs, progress) if jobs > 1 else _run_serial(task, models, progress)
    )
    for name in models:  # the order of ``models``, whichever finished first
        board.params[name], rows = outcomes[name]
        board.rows += rows
    return board


def default_jobs() -> int:
    """Worker processes of a leaderboard by default: ``DEFAULT_JOBS`` capped at the cores available, and 1
    where processes cannot be forked (each worker inherits the dataset instead of reading it again)."""
    if "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return max(1, min(DEFAULT_JOBS, available_cores()))


def _check_jobs(jobs: int) -> int:
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise UserError(f"--jobs must be a positive integer, got {jobs!r}")
    if jobs > 1 and "fork" not in multiprocessing.get_all_start_methods():
        return 1
    return jobs


@dataclass(frozen=True)
class _ModelTask:
    """Fit one model and score it on every split and k: the unit of work of a leaderboard, the same in the
    serial and the parallel run (so both give the same rows)."""

    evaluator: Evaluator
    splits: tuple[str, ...]
    params: dict[str, dict]
    fit_split: str
    tuned: Mapping[str, dict]

    def __call__(self, name: str) -> tuple[dict, list[Result]]:
        """(the model's hyperparameters, its rows)."""
        evaluator, splits, fit_split = self.evaluator, self.splits, self.fit_split
        model = create_model(name, **self.params.get(name, {}))
        model_params = model.get_params()
        start = time.perf_counter()
        try:
            model.fit(evaluator.dataset, fit_split)
        except (UserError, ValueError) as err:  # the model cannot run on these data (features, metadata)
            return model_params, skipped_rows(evaluator, name, splits, str(err), fit_split)
        fit_seconds = time.perf_counter() - start
        study = self.tuned.get(name, {}).get("study")
        rows = []
        for split in splits:
            for k in evaluator.tasks(split):
                row = evaluator.evaluate(model, split, k, fit_seconds=fit_seconds)
                row.tuned_study = study
                rows.append(row)
        return model_params, rows


def _run_serial(task: _ModelTask, models: list[str], progress: bool) -> dict[str, tuple[dict, list[Result]]]:
    outcomes = {}
    bar = tqdm(models, desc="models", unit="model", disable=not progress)
    for name in bar:
        bar.set_postfix_str(name)
        outcomes[name] = task(name)
    return outcomes


#: the task of the forked workers (set before the pool forks them; they inherit it with the dataset)
_WORKER_TASK: _ModelTask | None = None


def _init_worker(threads: int) -> None:
    limit_process_threads(threads)


def _work(name: str) -> tuple[str, tuple[dict, list[Result]]]:
    return name, _WORKER_TASK(name)


def _run_parallel(
    task: _ModelTask, models: list[str], jobs: int, progress: bool
) -> dict[str, tuple[dict, list[Result]]]:
    """Models fitted and scored in ``jobs`` forked worker processes of ``threads_per_job(jobs)`` threads each,
    the costliest first (each worker takes the next model when it is free)."""
    global _WORKER_TASK
    _WORKER_TASK = task
    order = sorted(models, key=lambda name: -COST_HINT.get(preset_of(name)[0], 1.0))
    outcomes = {}
    context = multiprocessing.get_context("fork")
    pool = ProcessPoolExecutor(jobs, context, initializer=_init_worker, initargs=(threads_per_job(jobs),))
    try:
        futures = [pool.submit(_work, name) for name in order]
        bar = tqdm(total=len(models), desc=f"models ({jobs} jobs)", unit="model", disable=not progress)
        for future in as_completed(futures):
            name, outcome = future.result()
            outcomes[name] = outcome
            bar.set_postfix_str(name)
            bar.update()
        bar.close()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        _WORKER_TASK = None
    return outcomes
