"""One protocol, one evaluator for every model: an episode sampler and a scorer, composed.

* Seen splits: the model predicts every row of the split (its users were in the fit).
* Unseen splits: repeated, nested reference draws by the one sampler (``recsys.evaluation.episodes``): for each
  user and each of ``draws`` draws (seeded by the protocol seed, the user's external id and the draw, so every
  model sees the same draws) one permutation of the user's rows; all but the first K (the largest k evaluated)
  are the queries, the same for every k; the references at k are the first k of the permutation. So every k
  scores the same users on the same queries, and a k-curve compares like with like. Users with fewer than K +
  MIN_USER_QUERIES ratings are skipped for every k, and counted.
* ``references=STRATEGY`` (``recsys.evaluation.elicitation``): the queries stay those of random references (all
  but the first ``reference_pool`` of the permutation, default K), and the strategy picks the references from the
  rest of the permutation (the pool) one at a time, from the answers so far; ``random`` takes them in order.
* ``fixed_queries=False`` (the PIAA protocol, ``recsys.evaluation.protocols``) scores every k on all of the
  user's ratings but its k references instead, as the PIAA papers do; the users are still the same at every k.
* Per-user metrics are averaged over the draws before they are averaged over users, bootstrapped and tested,
  so an interval covers the users and the draw no longer decides a claim on its own.

The scorer says what a row is and how it is scored: ``RatingScorer`` (here: ``predict`` / ``predict_new``, the
rating metrics and best-of-n) or ``ChoiceScorer`` (``recsys.evaluation.pairwise``: ``predict_choices`` /
``predict_new_choices``, the choice metrics). The evaluator is the only place where references are separated
from queries; rows that cannot be scored (``unsupported``, ``skipped``, ``empty``) come from ``failed_row``.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from recsys.data.dataset import Dataset, Ratings, References, is_unseen_split
from recsys.errors import ColdStartNotSupported
from recsys.evaluation.best_of_n import BEST_OF_N, best_of_n
from recsys.evaluation.elicitation import Elicitor, check_strategy
from recsys.evaluation.episodes import DEFAULT_DRAWS, Episode, EpisodeSampler
from recsys.evaluation.metrics import MIN_USER_QUERIES, NDCG_K, all_metrics, bootstrap_ci, ndcg_left_out

__all__ = [
    "DEFAULT_DRAWS",
    "ChoicePredictions",
    "Episode",
    "Evaluator",
    "Predictions",
    "RatingScorer",
    "Result",
    "Scorer",
]

CI_METRICS = ("user_srocc", "pairwise_acc")
USER_METRICS = ("user_srocc", "pairwise_acc", "ndcg@10")
GLOBAL_METRICS = ("rmse", "mae", "plcc", "srocc")


@dataclass(frozen=True)
class Predictions:
    """Every scored query of a row, aligned: ``prediction[i]`` for ``user_idx[i]`` on ``image_idx[i]``, whose
    observed score is ``score[i]``, in reference draw ``draw[i]`` (-1 on seen splits: no draw)."""

    user_idx: np.ndarray
    image_idx: np.ndarray
    score: np.ndarray
    prediction: np.ndarray
    draw: np.ndarray


@dataclass(frozen=True)
class ChoicePredictions:
    """Every scored query of a pairwise row, aligned: ``user_idx[i]`` compared ``image_a[i]`` with ``image_b[i]``
    and chose ``choice[i]`` (1.0 a, 0.0 b, 0.5 a tie); the model gave ``prediction[i]`` = P(a chosen), in
    reference draw ``draw[i]`` (-1 on seen splits: no draw)."""

    user_idx: np.ndarray
    image_a: np.ndarray
    image_b: np.ndarray
    choice: np.ndarray
    prediction: np.ndarray
    draw: np.ndarray


@dataclass
class Result:
    """One row of the leaderboard: a model on a split (and a number of shots for unseen splits).

    ``metrics`` of user-level metrics are means over users of per-user values averaged over draws (global ones:
    means over draws); ``metric_users`` says how many users each one averaged; ``by_draw`` holds each named
    metric's value in each draw (the draw-to-draw spread; rows with more than one draw): for a user-level metric
    the mean over the draw's users, for a pooled one (``choice_acc``) the draw's pooled value; ``ndcg_left_out``
    counts users with too few queries for ndcg@10. ``n_ratings`` is the number of queries of the first draw (the
    same at every k; in every draw too, unless whole sessions are drawn: ``recsys.evaluation.episodes``).
    ``predictions``: ``Predictions`` of rating rows, ``ChoicePredictions`` of pairwise ones.
    ``fallback_predictions``: how many queries of the first draw the model scored by its fallback (images it
    cannot place, e.g. no training rating and no features: ``Model.placeable``).
    """

    model: str
    split: str
    shots: int | None
    n_users: int
    n_ratings: int
    metrics: dict[str, float] | None
    ci95: dict[str, list[float]] | None
    fit_seconds: float
    predict_seconds: float
    skipped_users: int = 0
    status: str = "ok"
    reason: str | None = None
    draws: int = 1
    metric_users: dict[str, int] = field(default_factory=dict)
    ndcg_left_out: int = 0
    by_draw: dict[str, list[float]] = field(default_factory=dict)
    fit_split: str = "train"
    validation_split: str | None = None
    tuned_study: str | None = None
    fallback_predictions: int = 0
    #: on a ``--tuned`` board: ``study`` (tuned), ``defaults`` (no study), ``given`` (no study, --params); else None
    params_source: str | None = None
    per_user: dict[str, dict] = field(default_factory=dict, repr=False)
    predictions: Predictions | ChoicePredictions | None = field(default=None, repr=False)

    @property
    def tuned(self) -> bool:
        return self.tuned_study is not None

    def to_json(self) -> dict:
        out = {
            "model": self.model,
            "split": self.split,
            "shots": self.shots,
            "draws": self.draws,
            "tuned": self.tuned,
            "tuned_study": self.tuned_study,
            "params_source": self.params_source,
            "fit_split": self.fit_split,
            "validation_split": self.validation_split,
            "n_users": self.n_users,
            "n_ratings": self.n_ratings,
            "metrics": _finite_or_none(self.metrics),
            "metric_users": self.metric_users,
            "ndcg_left_out": self.ndcg_left_out,
            "ci95": _finite_or_none(self.ci95),
            "by_draw": _finite_or_none(self.by_draw),
            "fit_seconds": round(self.fit_seconds, 4),
            "predict_seconds": round(self.predict_seconds, 4),
            "skipped_users": self.skipped_users,
            "fallback_predictions": self.fallback_predictions,
            "status": self.status,
        }
        if self.reason:
            out["reason"] = self.reason
        return out


def model_context(model, fit_seconds: float) -> tuple[str, dict]:
    """A fitted model's name and what every row of it records about its fit (seconds, fit and validation split)."""
    context = {
        "fit_seconds": fit_seconds,
        "fit_split": getattr(model, "fit_split_", "train"),
        "validation_split": getattr(model, "validation_split_", None),
    }
    return getattr(model, "name", type(model).__name__), context


@dataclass(frozen=True)
class Scored:
    """Every scored query of a row: ``prediction[i]`` for row ``rows[i]`` of the split, in reference draw
    ``draw[i]`` (-1 on seen splits); draws in order, each draw's users ascending."""

    rows: np.ndarray
    draw: np.ndarray
    prediction: np.ndarray


class Scorer(Protocol):
    """What the evaluator asks of the kind of data it scores (ratings, choices)."""

    #: what a row is, in messages ("ratings", "choices")
    unit: str
    #: queries every new user keeps beyond the references' pool
    min_queries: int

    def table(self, dataset: Dataset, split: str):
        """The split's rows (``Ratings``, ``Choices``); a ValueError for a split the dataset lacks."""

    def units(self, table) -> np.ndarray | None:
        """A unit id per row (rows that the sampler keeps together), or None: every row its own unit."""

    def predict_seen(self, model, table) -> np.ndarray:
        """The fitted model's prediction of every row of a seen split."""

    def predict_new(self, model, table, episodes: list[Episode]) -> list[np.ndarray]:
        """Per episode (one draw's new users), the model's predictions of its queries from its references."""

    def truth(self, dataset: Dataset, split: str) -> np.ndarray | None:
        """The ground truth's prediction of every row (the oracle's row), or None."""

    def summary(self, evaluator: Evaluator, split: str, table, scored: Scored) -> dict:
        """The metric fields of the ``Result`` (metrics, ci95, per_user, by_draw, ...) of scored queries."""


class Evaluator:
    """Scores any fitted model on a dataset's splits under the one protocol: an ``EpisodeSampler`` draws the new
    users' references and queries, a scorer predicts and measures them.

    Args:
        dataset: the data (the model must have been fitted on it).
        shots: numbers of references per new user on unseen splits; the largest fixes the queries.
        seed: seed of the reference draws and of the bootstrap.
        n_bootstrap: bootstrap resamples for the 95% intervals over users.
        draws: reference draws per new user (seen splits have none: every row is scored once).
        fixed_queries: True: every k scores the same queries (all but the largest k's references); False: each
            k scores all of the user's rows but its own k references.
        references: how a new user's references are chosen: ``random`` or a strategy of
            ``recsys.evaluation.elicitation`` (ratings only; needs fixed queries).
        reference_pool: how many of each new user's rows are kept out of the queries for the references to be
            chosen from (default None: the largest k); users need this many plus the scorer's minimum queries.
        scorer: ``RatingScorer()`` (default) or ``recsys.evaluation.pairwise.ChoiceScorer()``.
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        shots: Sequence[int] = (0, 10),
        seed: int = 0,
        n_bootstrap: int = 1000,
        draws: int = DEFAULT_DRAWS,
        fixed_queries: bool = True,
        references: str = "random",
        reference_pool: int | None = None,
        scorer: Scorer | None = None,
    ):
        self.scorer = scorer if scorer is not None else RatingScorer()
        self.sampler = EpisodeSampler(
            dataset.user_ids,
            shots=shots,
            seed=seed,
            draws=draws,
            pool=reference_pool,
            min_queries=self.scorer.min_queries,
            fixed_queries=fixed_queries,
        )
        if check_strategy(references) != "random":
            if not fixed_queries:
                raise ValueError(f"references={references!r} needs fixed queries (the default protocol)")
            if not isinstance(self.scorer, RatingScorer):
                raise ValueError(f"references={references!r} chooses among ratings; choices take random ones")
        self.dataset = dataset
        self.n_bootstrap = n_bootstrap
        self.references = references
        self._elicited: dict = {}  # (split, draw) -> {user: pool positions picked}, for one model

    @property
    def shots(self) -> tuple[int, ...]:
        return self.sampler.shots

    @property
    def seed(self) -> int:
        return self.sampler.seed

    @property
    def draws(self) -> int:
        return self.sampler.draws

    @property
    def fixed_queries(self) -> bool:
        return self.sampler.fixed_queries

    @property
    def reference_pool(self) -> int:
        return self.sampler.pool

    @property
    def max_shots(self) -> int:
        """The largest k: every user keeps this many rows out of its queries, whatever k is scored."""
        return self.sampler.max_shots

    # ------------------------------------------------------------------ protocol
    def tasks(self, split: str) -> list[int | None]:
        """The shot counts evaluated on a split: None for seen splits."""
        return self.sampler.tasks(split)

    def table(self, split: str):
        """The split's rows the scorer scores (``Ratings`` or ``Choices``); a ValueError for a split without."""
        return self.scorer.table(self.dataset, split)

    def episodes(self, split: str, shots: int, draw: int = 0, model=None) -> tuple[list[Episode], int]:
        """The new-user episodes of an unseen split at k = ``shots`` in reference draw ``draw`` (row positions in
        ``table(split)``), and the number of users skipped (too few rows for the reference pool plus the
        scorer's minimum queries). A reference strategy other than random picks from the pool for ``model``."""
        table = self.table(split)
        choose = self._chooser(model, split, draw, table) if self.references != "random" else None
        return self.sampler.episodes(
            table.user_idx, shots, draw, units=self.scorer.units(table), choose=choose
        )

    def _chooser(self, model, split: str, draw: int, ratings: Ratings):
        """``choose(user, pool)``: the positions in ``pool`` (rating rows of the user's pool, in draw order) of the
        strategy's first K picks for ``model``, computed once per model, split and draw."""
        if model is None:
            raise ValueError(f"references={self.references!r} chooses references for a model: pass it")
        if self._elicited.get("model") is not model:
            self._elicited = {
                "model": model,
                "elicitor": Elicitor(self.references, model, self.dataset, self.seed),
            }
        elicitor, cache = self._elicited["elicitor"], self._elicited.setdefault((split, draw), {})

        def choose(user: int, pool: np.ndarray) -> np.ndarray:
            if user not in cache:
                cache[user] = elicitor.picks(
                    ratings.image_idx[pool], lambda p: float(ratings.score[pool[p]]), self.max_shots
                )
            return cache[user]

        return choose

    # ------------------------------------------------------------------ scoring
    def evaluate(self, model, split: str, shots: int | None = None, *, fit_seconds: float = 0.0) -> Result:
        """Score a fitted model on one split (and k for an unseen split)."""
        name, context = model_context(model, fit_seconds)
        return self._score(
            name,
            split,
            shots,
            context,
            lambda table: self.scorer.predict_seen(model, table),
            lambda table, episodes: self.scorer.predict_new(model, table, episodes),
            model,
        )

    def oracle_result(self, split: str, shots: int | None = None) -> Result | None:
        """The ground truth's row on the same queries, where the scorer has one for the split (simulated choices:
        P(a) + P(tie) / 2 of each query, references unused); None otherwise."""
        truth = self.scorer.truth(self.dataset, split)
        if truth is None:
            return None
        context = {"fit_seconds": 0.0, "fit_split": "train", "validation_split": None}

        def seen(table) -> np.ndarray:
            return truth.astype(np.float64)

        def new(table, episodes: list[Episode]) -> list[np.ndarray]:
            return [truth[e.queries].astype(np.float64) for e in episodes]

        return self._score("oracle", split, shots, context, seen, new, None, timed=False)

    def _score(
        self,
        name: str,
        split: str,
        shots: int | None,
        context: dict,
        predict_seen: Callable,
        predict_new: Callable,
        model,
        *,
        timed: bool = True,
    ) -> Result:
        table = self.table(split)
        if not is_unseen_split(split):
            start = time.perf_counter()
            try:
                prediction = np.asarray(predict_seen(table), dtype=np.float64).ravel()
            except ColdStartNotSupported as err:  # e.g. a scorer whose weights are not available here
                return self.failed_row(name, split, None, "unsupported", str(err), context)
            seconds = time.perf_counter() - start
            rows = np.arange(len(table))
            self._check(name, split, [prediction], [rows])
            scored = Scored(rows, np.full(len(rows), -1, np.int64), prediction)
            result = self._result(name, split, None, table, scored, seconds if timed else 0.0, 0, context)
            return count_fallbacks(model, result)
        if shots is None:
            raise ValueError(f"{split} is an unseen split: pass shots")
        draws, skipped = [], 0
        try:
            for draw in range(self.draws):
                drawn, skipped = self.episodes(split, shots, draw, model)
                draws.append(drawn)
        except ColdStartNotSupported as err:  # the reference strategy needs what the model lacks
            return self.failed_row(name, split, shots, "unsupported", str(err), context)
        episodes = [e for drawn in draws for e in drawn]
        if not episodes:
            reason = f"no user has at least {self.sampler.needed_rows()} {self.scorer.unit}"
            if self.scorer.units(table) is not None:
                reason += " in whole sessions"
            return self.failed_row(name, split, shots, "empty", reason, context, skipped=skipped)
        start = time.perf_counter()
        try:  # one call per draw: each new user once per call
            predictions = [p for drawn in draws for p in predict_new(table, drawn)]
        except ColdStartNotSupported as err:
            n_users = len(draws[0])
            return self.failed_row(name, split, shots, "unsupported", str(err), context, n_users, skipped)
        seconds = time.perf_counter() - start
        queries = [e.queries for e in episodes]
        self._check(name, split, predictions, queries)
        sizes = [len(q) for q in queries]
        scored = Scored(
            np.concatenate(queries),
            np.repeat([e.draw for e in episodes], sizes).astype(np.int64),
            np.concatenate([np.asarray(p, np.float64).ravel() for p in predictions]),
        )
        result = self._result(name, split, shots, table, scored, seconds if timed else 0.0, skipped, context)
        return count_fallbacks(model, result)

    @staticmethod
    def _check(name: str, split: str, predictions: list, queries: list[np.ndarray]) -> None:
        """One finite prediction per query of every episode, or a RuntimeError naming the model."""
        got = [len(np.ravel(p)) for p in predictions]
        wanted = [len(q) for q in queries]
        if got != wanted:
            raise RuntimeError(f"{name} returned {sum(got)} predictions for {sum(wanted)} queries on {split}")
        if not all(np.isfinite(np.asarray(p, np.float64)).all() for p in predictions):
            raise RuntimeError(f"{name} predicted NaN or infinite values on {split}")

    def _result(self, name, split, shots, table, scored: Scored, seconds, skipped, context) -> Result:
        draws = 1 if shots is None else self.draws
        return Result(
            model=name,
            split=split,
            shots=shots,
            n_users=int(len(np.unique(table.user_idx[scored.rows]))),
            n_ratings=int((scored.draw == scored.draw[0]).sum()),
            predict_seconds=seconds,
            skipped_users=skipped,
            draws=draws,
            **self.scorer.summary(self, split, table, scored),
            **context,
        )

    def failed_row(
        self,
        name: str,
        split: str,
        shots: int | None,
        status: str,
        reason: str,
        context: dict,
        n_users: int = 0,
        skipped: int = 0,
    ) -> Result:
        """A row without metrics: the model cannot fit the data (``skipped``) or score the split
        (``unsupported``), or nobody qualifies (``empty``); ``context`` as ``model_context`` gives it."""
        return Result(
            model=name,
            split=split,
            shots=shots,
            n_users=n_users,
            n_ratings=0,
            metrics=None,
            ci95=None,
            predict_seconds=0.0,
            skipped_users=skipped,
            status=status,
            reason=reason,
            draws=1 if shots is None else self.draws,
            **context,
        )

    def failed_rows(
        self, name: str, splits: Sequence[str], status: str, reason: str, fit_split: str
    ) -> list[Result]:
        """One ``failed_row`` per split and k for a model that could not fit (nothing fitted, no seconds)."""
        context = {"fit_seconds": 0.0, "fit_split": fit_split, "validation_split": None}
        return [
            self.failed_row(name, split, k, status, reason, context)
            for split in splits
            for k in self.tasks(split)
        ]


class RatingScorer:
    """Ratings: ``predict`` on seen splits, ``predict_new`` from ``References`` on unseen ones; the rating metrics
    (``recsys.evaluation.metrics``), best-of-n (``recsys.evaluation.best_of_n``) and intervals over users."""

    unit = "ratings"
    min_queries = MIN_USER_QUERIES

    def table(self, dataset: Dataset, split: str) -> Ratings:
        if split not in dataset.ratings:
            raise ValueError(f"no split {split!r} in {dataset.name}")
        return dataset.ratings[split]

    def units(self, table: Ratings) -> None:
        return None  # every rating is its own unit

    def predict_seen(self, model, table: Ratings) -> np.ndarray:
        return model.predict(table.user_idx, table.image_idx)

    def predict_new(self, model, table: Ratings, episodes: list[Episode]) -> list[np.ndarray]:
        references = [
            References(e.user_idx, table.image_idx[e.references], table.score[e.references]) for e in episodes
        ]
        return model.predict_new(references, [table.image_idx[e.queries] for e in episodes])

    def truth(self, dataset: Dataset, split: str) -> None:
        return None  # the rating oracle is a model of the registry

    def summary(self, evaluator: Evaluator, split: str, table: Ratings, scored: Scored) -> dict:
        """The metric fields of a ``Result`` (module docstring)."""
        dataset = evaluator.dataset
        predictions = Predictions(
            table.user_idx[scored.rows],
            table.image_idx[scored.rows],
            table.score[scored.rows],
            scored.prediction,
            scored.draw,
        )
        min_score = float(dataset.score_range[0])
        per_draw: list[dict[str, float]] = []
        collected: dict[str, dict[int, list[float]]] = {m: defaultdict(list) for m in USER_METRICS}
        for draw in np.unique(predictions.draw):
            at = predictions.draw == draw
            metrics, per_user = all_metrics(
                predictions.score[at],
                predictions.prediction[at],
                predictions.user_idx[at],
                min_score=min_score,
            )
            per_draw.append(metrics)
            for metric, values in per_user.items():
                for user, value in values.items():
                    collected[metric][int(user)].append(value)
        per_user = {m: {u: float(np.mean(v)) for u, v in values.items()} for m, values in collected.items()}
        metrics = {m: float(np.mean([d[m] for d in per_draw])) for m in GLOBAL_METRICS}
        best, best_per_user = _best_of_n(dataset, split, predictions, evaluator.seed)
        metrics |= best
        for m in USER_METRICS:
            metrics[m] = float(np.mean(list(per_user[m].values()))) if per_user[m] else float("nan")
        ci = {
            m: list(
                bootstrap_ci(
                    np.array(list(per_user[m].values())),
                    n_resamples=evaluator.n_bootstrap,
                    seed=evaluator.seed,
                )
            )
            for m in CI_METRICS
        }
        first = predictions.draw == predictions.draw[0]
        return {
            "metrics": metrics,
            "ci95": ci,
            "metric_users": {m: len(per_user[m]) for m in USER_METRICS},
            "ndcg_left_out": ndcg_left_out(predictions.user_idx[first], NDCG_K),
            "by_draw": {m: [d[m] for d in per_draw] for m in CI_METRICS} if len(per_draw) > 1 else {},
            "per_user": per_user | best_per_user,
            "predictions": predictions,
        }


def _best_of_n(
    dataset: Dataset, split: str, scored: Predictions, seed: int
) -> tuple[dict[str, float], dict[str, dict[int, float]]]:
    """Best-of-n metrics (``recsys.evaluation.best_of_n``), each draw's queries apart, averaged over draws; and
    each user's uplift at every n, averaged over the draws where the user had a group (``per_user`` keys
    ``best_of_n_uplift@n``)."""
    truth = _truth_of(dataset, split, scored)
    per_draw, collected = [], defaultdict(lambda: defaultdict(list))
    for draw in np.unique(scored.draw):
        at = scored.draw == draw
        values = {}
        for n in BEST_OF_N:
            metrics, per_user = best_of_n(
                scored.user_idx[at],
                scored.score[at],
                scored.prediction[at],
                n,
                user_ids=dataset.user_ids,
                seed=seed,
                truth=None if truth is None else truth[at],
            )
            values |= metrics
            for user, uplift in per_user.items():
                collected[f"best_of_n_uplift@{n}"][user].append(uplift)
        per_draw.append(values)
    per_user = {m: {u: float(np.mean(v)) for u, v in users.items()} for m, users in collected.items()}
    return {m: float(np.mean([d[m] for d in per_draw])) for m in per_draw[0]}, per_user


def count_fallbacks(model, result: Result) -> Result:
    """``result`` with ``fallback_predictions`` set: how many queries of its first draw ``model`` scored by its
    fallback (``Model.placeable`` False: an image it cannot place; on choices, a pair with such an image). Users
    need none: a seen split's users are in the fit (checked on load), and a new user is scored from its
    references by design."""
    placeable = getattr(model, "placeable", None)
    scored = result.predictions
    if placeable is not None and scored is not None and len(scored.draw):
        first = scored.draw == scored.draw[0]
        if isinstance(scored, ChoicePredictions):
            unplaced = ~placeable(scored.image_a[first]) | ~placeable(scored.image_b[first])
        else:
            unplaced = ~placeable(scored.image_idx[first])
        result.fallback_predictions = int(unplaced.sum())
    return result


def _truth_of(dataset: Dataset, split: str, scored: Predictions) -> np.ndarray | None:
    """The simulator's expected score of each scored (user, image) of ``split``, or None without ground truth."""
    truth = (dataset.ground_truth or {}).get(split)
    if truth is None:
        return None
    r = dataset.ratings[split]
    codes = r.user_idx.astype(np.int64) * dataset.n_images + r.image_idx
    order = np.argsort(codes)
    wanted = scored.user_idx.astype(np.int64) * dataset.n_images + scored.image_idx
    return truth[order[np.searchsorted(codes[order], wanted)]]


def _finite_or_none(values):
    """JSON has no NaN: a metric that could not be computed is null."""
    if values is None:
        return None
    if isinstance(values, dict):
        return {k: _finite_or_none(v) for k, v in values.items()}
    if isinstance(values, list | tuple):
        return [_finite_or_none(v) for v in values]
    return None if isinstance(values, float) and not np.isfinite(values) else values
