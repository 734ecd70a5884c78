"""The leaderboard: fit each model once under the one data policy, score it with the one evaluator on every split."""

from __future__ import annotations

import contextlib
import signal
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from recsys.data.dataset import Dataset, is_unseen_split
from recsys.errors import DataNotSupported, UserError
from recsys.evaluation.evaluator import DEFAULT_DRAWS, Evaluator, Result
from recsys.evaluation.pairwise import PAIR_SHOTS, pair_evaluator
from recsys.evaluation.topn import TOPN_KS, Popularity, TopNScorer
from recsys.extras import MissingExtra
from recsys.models.base import DATA_POLICY
from recsys.models.registry import GROUPS, create_model, expand_models, unavailable_reason
from recsys.threads import available_cores, single_threaded

DEFAULT_SPLITS = ("test_seen", "test_unseen")
#: what a leaderboard measures: predicted scores against held-out ones (ratings, or choices), or the top-N task
#: (``recsys.evaluation.topn``: the whole catalogue ranked for each seen user)
TASKS = ("predict", "topn")


def new_run_id() -> str:
    """A short random id that ties a leaderboard's files (json, csv, per-user, predictions) together."""
    return uuid.uuid4().hex[:12]


@dataclass
class Leaderboard:
    """Rows of results plus what is needed to reproduce them.

    ``tuned`` maps each tuned model to its study (name, objective and stopping epoch) and, on a ``--tuned`` board,
    ``defaults`` each other model to why it runs at its defaults; ``fit_split`` is the split every model fitted on
    (``train``, tuned or not).
    """

    dataset: Dataset
    seed: int
    shots: tuple[int, ...]
    draws: int = DEFAULT_DRAWS
    fit_split: str = DATA_POLICY.fit_split
    rows: list[Result] = field(default_factory=list)
    params: dict[str, dict] = field(default_factory=dict)
    tuned: dict[str, dict] = field(default_factory=dict)
    defaults: dict[str, str] = field(default_factory=dict)
    run_id: str = field(default_factory=new_run_id)
    protocol: str = "default"
    fixed_queries: bool = True
    references: str = "random"
    reference_pool: int | None = None
    protocol_note: str = ""  # what the protocol's split did (the PIAA split's rule and removals)
    task: str = "predict"
    topn: dict = field(default_factory=dict)

    @property
    def pool(self) -> int:
        """How many of each new user's ratings are kept out of the queries (the references' pool)."""
        return max(self.shots, default=0) if self.reference_pool is None else self.reference_pool

    @property
    def held_out(self) -> str:
        """What each new user keeps out of the queries: the pool's ratings, or the whole sessions of its choices
        (``recsys.evaluation.episodes``)."""
        if is_choice_data(self.dataset):
            return f"the whole sessions of {self.pool} choices"
        return f"{self.pool} ratings"

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
                "name": self.protocol,
                "queries": (
                    f"the same for every k: all but {self.held_out} of each new user, per draw"
                    if self.fixed_queries
                    else "every rating of the new user but its k references, per draw"
                ),
                "references": self.references,
                "reference_pool": self.pool,
                "split": self.protocol_note or None,
            },
            "splits": {
                "made_by": self.dataset.splits_made_by,
                "sizes": self.dataset.split_sizes(),
                "fit_split": self.fit_split,
            },
            "data_policy": {
                "fit_split": self.fit_split,
                "validation_split": None if "val_seen" in self.fit_split else DATA_POLICY.validation_split,
                "statement": DATA_POLICY.describe(),
            },
            "task": self.task,
            **({"topn": self.topn} if self.task == "topn" else {}),
            "params": self.params,
            "tuned": self.tuned,
            "defaults": self.defaults,
            "rows": [r.to_json() for r in self.rows],
        }


def default_models(dataset: Dataset) -> list[str]:
    """Every registered model (baselines, classical, deep, ablations, ensembles), the oracle only where a ground truth exists;
    on choices also the models of choices (``GROUPS["choices"]``)."""
    extra = list(GROUPS["choices"]) if is_choice_data(dataset) else []
    return [m for m in GROUPS["all"] if m != "oracle" or dataset.ground_truth is not None] + extra


def build_evaluator(
    dataset: Dataset,
    *,
    task: str = "predict",
    shots: Sequence[int] | None = None,
    seed: int = 0,
    draws: int = DEFAULT_DRAWS,
    fixed_queries: bool = True,
    references: str = "random",
    reference_pool: int | None = None,
    topn_ks: Sequence[int] = TOPN_KS,
    relevant_at: float | None = None,
) -> Evaluator:
    """The leaderboard's evaluator of ``dataset`` (arguments as ``run_leaderboard``): the top-N scorer for
    ``task="topn"``, the pairwise protocol on choices, else the rating protocol (``shots=None``: 0 and 10)."""
    if task == "topn":
        return Evaluator(dataset, shots=(0,), seed=seed, draws=draws, scorer=TopNScorer(topn_ks, relevant_at))
    if is_choice_data(dataset):
        return pair_evaluator(dataset, shots=shots or PAIR_SHOTS, seed=seed, draws=draws)
    try:
        return Evaluator(
            dataset,
            shots=shots or (0, 10),
            seed=seed,
            draws=draws,
            fixed_queries=fixed_queries,
            references=references,
            reference_pool=reference_pool,
        )
    except ValueError as err:
        raise UserError(str(err)) from None


def run_leaderboard(
    dataset: Dataset,
    models: Sequence[str] | None = None,
    *,
    splits: Sequence[str] | None = None,
    shots: Sequence[int] | None = None,
    seed: int = 0,
    draws: int = DEFAULT_DRAWS,
    params: dict[str, dict] | None = None,
    fit_split: str = DATA_POLICY.fit_split,
    tuned: Mapping[str, dict] | None = None,
    defaults: Mapping[str, str] | None = None,
    progress: bool = True,
    protocol: str = "default",
    fixed_queries: bool = True,
    jobs: int | str = "auto",
    references: str = "random",
    reference_pool: int | None = None,
    protocol_note: str = "",
    task: str = "predict",
    topn_ks: Sequence[int] = TOPN_KS,
    relevant_at: float | None = None,
) -> Leaderboard:
    """Fit every model on ``fit_split`` (validating, where a model does, on the policy's validation split) and
    evaluate it on ``splits`` with ``draws`` reference draws per new user.

    ``shots=None``: 0 and 10 reference ratings, or on choices ``PAIR_SHOTS`` (the pairwise protocol,
    ``recsys.evaluation.pairwise``, with the ground truth's rows on simulated choices).
    ``splits=None`` evaluates those of ``DEFAULT_SPLITS`` the dataset has (an error if it has neither); an
    explicitly requested split the dataset lacks is an error naming the splits it has. A model that cannot fit
    these data (no image features, no metadata: a ``UserError`` or ``ValueError`` from its fit) gets a
    ``skipped`` row per split with the reason, and one that cannot score new users, or cannot run here (an extra
    that is not installed: the row names the install command), an ``unsupported`` row, instead of stopping
    the run. ``tuned`` (model -> study record, from ``experiments.tuning``) marks the rows of tuned models with
    their study, and ``defaults`` (model -> why, on a ``--tuned`` board) the rows of the others as at their
    defaults (``params_source``). ``protocol`` names the preset the arguments came from
    (``recsys.evaluation.protocols``); ``fixed_queries`` as in ``Evaluator``. ``jobs``: worker processes fitting
    models side by side (``resolve_jobs``; 1 fits them one after the other in this process).
    ``references`` (random or an elicitation strategy) and ``reference_pool`` as in ``Evaluator``.
    ``protocol_note``: what the protocol's split did (``recsys.evaluation.protocols.split_for_protocol``).
    ``task="topn"`` ranks the whole catalogue for each user of the seen test split instead (``TopNScorer``: recall
    and ndcg at each of ``topn_ks``, relevant = held-out images rated at or above ``relevant_at``), and adds the
    label-free ``Popularity`` row.
    """
    models = expand_models(models) if models else default_models(dataset)  # unknown names fail before any fit
    choices = is_choice_data(dataset)
    if "oracle" in models and (dataset.ground_truth is None or choices):
        if not choices or dataset.ground_truth_choices is None:
            print(f"oracle skipped: {dataset.name} has no ground truth (only simulated data do)")
        models.remove("oracle")  # on choices the ground truth's rows come from the pair evaluator
    params = params or {}
    tuned = dict(tuned or {})
    defaults = dict(defaults or {})
    held = dataset.choices if choices else dataset.ratings
    if task not in TASKS:
        raise UserError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if task == "topn":
        splits = _topn_splits(dataset, splits, choices)
        if references != "random" or reference_pool is not None:
            raise UserError(
                "--references and --reference-pool choose new users' references; --task topn has none"
            )
    if splits is None:
        splits = [s for s in DEFAULT_SPLITS if s in held] or list(DEFAULT_SPLITS)
    missing = [s for s in splits if s not in held]
    if missing:
        raise UserError(
            f"{dataset.name} has no split(s) {', '.join(missing)}; it has {', '.join(dataset.splits)}"
        )
    if draws < 1:
        raise UserError(f"--draws must be at least 1, got {draws}")
    evaluator = build_evaluator(
        dataset,
        task=task,
        shots=shots,
        seed=seed,
        draws=draws,
        fixed_queries=fixed_queries,
        references=references,
        reference_pool=reference_pool,
        topn_ks=topn_ks,
        relevant_at=relevant_at,
    )
    shots = () if task == "topn" else evaluator.shots  # the top-N task draws no references
    board = Leaderboard(
        dataset,
        seed,
        tuple(shots),
        draws,
        fit_split,
        tuned=tuned,
        defaults=defaults,
        protocol=protocol,
        fixed_queries=fixed_queries,
        references=references,
        reference_pool=reference_pool,
        protocol_note=protocol_note,
        task=task,
        topn=evaluator.scorer.describe(dataset) if task == "topn" else {},
    )
    tasks = [
        ModelTask(
            name,
            params.get(name, {}),
            tuned.get(name, {}).get("study"),
            _params_source(name, tuned, defaults, params),
        )
        for name in models
    ]
    for name in models:  # a model that cannot run here (a missing extra) records the values it was given
        given = params.get(name, {})
        board.params[name] = (
            create_model(name, **given).get_params() if unavailable_reason(name) is None else given
        )
    workers = resolve_jobs(jobs, dataset, fit_split, len(tasks))
    if workers > 1:
        rows = _run_in_workers(tasks, evaluator, splits, fit_split, workers, progress)
    else:
        rows = {}
        bar = tqdm(tasks, desc="models", unit="model", disable=not progress)
        for model_task in bar:
            bar.set_postfix_str(model_task.name)
            rows[model_task.name] = fit_and_score(model_task, evaluator, splits, fit_split)
    board.rows = [row for name in models for row in rows[name]]
    if choices:  # the simulator's ground truth, on the same queries
        board.rows += [r for s in splits for k in evaluator.tasks(s) if (r := evaluator.oracle_result(s, k))]
    if task == "topn":  # the label-free reference of any top-N table
        start = time.perf_counter()
        popularity = Popularity(dataset, fit_split)
        board.rows += [
            evaluator.evaluate(popularity, split, fit_seconds=time.perf_counter() - start) for split in splits
        ]
    return board


def _topn_splits(dataset: Dataset, splits: Sequence[str] | None, choices: bool) -> list[str]:
    """The splits of the top-N task: seen splits of ratings (default: test_seen), or a one-line error."""
    if choices:
        raise UserError(f"the top-N task ranks rated images; {dataset.name} holds pairwise choices")
    if splits is None:
        if "test_seen" not in dataset.ratings:
            raise UserError(
                f"the top-N task ranks the catalogue for the users of test_seen, which {dataset.name} lacks (it "
                f"has {', '.join(dataset.splits)}); a table makes one with --holdout random:0.2 or both:0.2"
            )
        return ["test_seen"]
    unseen = [s for s in splits if is_unseen_split(s)]
    if unseen:
        raise UserError(
            f"the top-N task ranks the catalogue for seen users (test_seen, val_seen), not {', '.join(unseen)}: "
            "new users have no fit ratings to leave out"
        )
    return list(splits)


def is_choice_data(dataset: Dataset) -> bool:
    """True for data of pairwise choices only (no ratings): the pairwise protocol scores them."""
    return bool(dataset.choices) and not dataset.ratings


@dataclass(frozen=True)
class ModelTask:
    """One model of a leaderboard: its name, hyperparameters, tuning study (None when not tuned) and where its
    hyperparameters come from on a ``--tuned`` board (``Result.params_source``)."""

    name: str
    params: dict
    study: str | None = None
    params_source: str | None = None


def _params_source(name: str, tuned: Mapping, defaults: Mapping, params: Mapping) -> str | None:
    """``study`` for a tuned model, ``defaults`` for a model of a ``--tuned`` board without a study (``given`` when
    --params set some of its values), None on a board without tuning."""
    if name in tuned:
        return "study"
    if name in defaults:
        return "given" if params.get(name) else "defaults"
    return None


def fit_and_score(
    task: ModelTask, evaluator: Evaluator, splits: Sequence[str], fit_split: str
) -> list[Result]:
    """Fit one model on ``fit_split`` and score it on every split and k: its leaderboard rows.

    Numeric libraries run on one thread throughout (``recsys.threads.single_threaded``), here as in a worker
    process: the rows are then the same whatever ``--jobs`` and the machine's core count."""
    with single_threaded():
        rows = _fit_and_score(task, evaluator, splits, fit_split)
    for row in rows:  # failed rows too: they say which hyperparameters they would have run with
        row.tuned_study, row.params_source = task.study, task.params_source
    return rows


def _fit_and_score(
    task: ModelTask, evaluator: Evaluator, splits: Sequence[str], fit_split: str
) -> list[Result]:
    reason = unavailable_reason(task.name)
    if reason is not None:  # e.g. an extra that is not installed
        return evaluator.failed_rows(task.name, splits, "unsupported", reason, fit_split)
    model = create_model(task.name, **task.params)
    start = time.perf_counter()
    try:
        model.fit(evaluator.dataset, fit_split)
    # a model of ratings on choices; a use of the model that needs an extra (mf on choices needs torch)
    except (DataNotSupported, MissingExtra) as err:
        return evaluator.failed_rows(task.name, splits, "unsupported", str(err), fit_split)
    except (UserError, ValueError) as err:  # the model cannot run on these data (features, metadata)
        return evaluator.failed_rows(task.name, splits, "skipped", str(err), fit_split)
    fit_seconds = time.perf_counter() - start
    rows = []
    for split in splits:
        for k in evaluator.tasks(split):
            rows.append(evaluator.evaluate(model, split, k, fit_seconds=fit_seconds))
    return rows


#: ``jobs="auto"`` uses worker processes only for runs this large (starting a worker costs ~3 s of imports)
AUTO_JOBS_MIN_RATINGS = 20_000
AUTO_JOBS_MIN_MODELS = 4
#: ... and only while the image features are at most this large: each worker holds its own copy of the data (a
#: million simulated Pick-a-Pic choices carry 1.5 GB of float16 features), so beyond it memory, not cores, limits
AUTO_JOBS_MAX_FEATURE_BYTES = 2**30


def resolve_jobs(jobs: int | str, dataset: Dataset, fit_split: str, n_models: int) -> int:
    """Worker processes for a run: ``jobs`` itself, or for ``"auto"`` one per core (at most 2; the models'
    own threads are then set to 1) when the run has enough models and ratings to pay for starting them and its
    image features are small enough to copy into each worker."""
    if jobs != "auto":
        if not isinstance(jobs, int) or jobs < 1:
            raise UserError(f"--jobs must be a positive integer or auto, got {jobs!r}")
        return min(jobs, max(1, n_models))
    n_ratings = sum(
        len(dataset.ratings.get(p, ())) + len(dataset.choices.get(p, ())) for p in fit_split.split("+")
    )
    if n_models < AUTO_JOBS_MIN_MODELS or n_ratings < AUTO_JOBS_MIN_RATINGS:
        return 1
    features = dataset.image_features
    if features is not None and features.nbytes > AUTO_JOBS_MAX_FEATURE_BYTES:
        return 1
    return min(2, available_cores(), n_models)


def _run_in_workers(
    tasks, evaluator, splits, fit_split, workers: int, progress: bool
) -> dict[str, list[Result]]:
    """Every task in ``workers`` processes (spawned: no state shared with this one but the arguments), the
    costliest kinds first so that the last one to finish is short; rows come back per model."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    rank = {name: 0 for group in ("deep", "ablations") for name in GROUPS.get(group, ())}
    rank |= {name: 1 for name in GROUPS.get("classical", ())}
    ordered = sorted(tasks, key=lambda t: rank.get(t.name, 2))  # stable: deep, then classical, then the rest
    rows: dict[str, list[Result]] = {}
    bar = tqdm(total=len(tasks), desc=f"models ({workers} workers)", unit="model", disable=not progress)
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(evaluator, splits, fit_split),
    )
    try:
        # no Ctrl-C while the workers are spawned (one would orphan a half-started worker): it is handled right
        # after; the workers start with it blocked (an exec keeps the mask) and then ignore it (_init_worker)
        with _interrupts_deferred():
            pending = {pool.submit(_worker_fit_and_score, task): task for task in ordered}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                task = pending.pop(future)
                rows[task.name] = future.result()
                bar.set_postfix_str(task.name)
                bar.update()
    except BaseException:
        # an interrupt or an error ends the run now: the fits under way are stopped, not waited for
        pool.shutdown(wait=False, cancel_futures=True)
        _stop_workers()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    return rows


def _stop_workers(grace: float = 10.0) -> None:
    """Terminate this process's worker processes (every live multiprocessing child: whatever the pool's own
    bookkeeping holds at this moment) and reap them."""
    import multiprocessing

    children = multiprocessing.active_children()
    for child in children:
        child.terminate()
    for child in children:
        child.join(grace)
        if child.is_alive():
            child.kill()
            child.join(grace)


_WORKER: dict = {}


@contextlib.contextmanager
def _interrupts_deferred() -> Iterator[None]:
    """Within the block a SIGINT is recorded, not raised (Python runs its handler in the main thread whichever
    thread the signal reached, so blocking it in this thread alone is not enough), and raised again after the
    block through the handler that was in place; processes started in the block inherit it blocked."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        signal.signal(signal.SIGINT, previous)
        if received:
            signal.raise_signal(signal.SIGINT)


def _init_worker(evaluator: Evaluator, splits: Sequence[str], fit_split: str) -> None:
    """A worker process: one thread for every numeric library (the processes share the cores; each fit also
    runs under ``single_threaded``), and the evaluator (with its dataset) kept for every task it runs."""
    import os

    from threadpoolctl import threadpool_limits

    # Ctrl-C reaches every process of the terminal's group: the parent alone handles it, and stops the workers
    # with SIGTERM, on which a worker releases what it registered with the resource tracker and exits
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _worker_stop)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})

    from recsys.threads import FAISS_THREADS_ENV_VAR, TORCH_THREADS_ENV_VAR

    os.environ[TORCH_THREADS_ENV_VAR] = "1"
    os.environ[FAISS_THREADS_ENV_VAR] = "1"
    threadpool_limits(1)
    _WORKER.update(evaluator=evaluator, splits=splits, fit_split=fit_split)


def _worker_stop(signum: int, frame) -> None:
    """A worker's SIGTERM: run multiprocessing's finalizers (shared semaphores are unregistered, so the resource
    tracker has no "leaked semaphore" to warn about) and exit at once."""
    import os
    from multiprocessing import util

    util._run_finalizers(0)
    os._exit(128 + signum)


def _worker_fit_and_score(task: ModelTask) -> list[Result]:
    return fit_and_score(task, _WORKER["evaluator"], _WORKER["splits"], _WORKER["fit_split"])
