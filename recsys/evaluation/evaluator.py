"""One protocol, one evaluator for every model.

* Seen splits: the model predicts every rating of the split (its users were in the fit).
* Unseen splits: repeated, nested reference draws. For each user and each of ``draws`` draws (seeded by the
  protocol seed, the user's external id and the draw, so every model sees the same draws) one permutation of
  the user's ratings is drawn: all but the first K (the largest k evaluated) are the queries, the same for
  every k; the references at k are the first k of the permutation. So every k scores the same users on the same
  queries, and a k-curve compares like with like. Users with fewer than K + MIN_USER_QUERIES ratings are skipped
  for every k, and counted.
* ``references=STRATEGY`` (``recsys.evaluation.elicitation``): the queries stay those of random references (all
  but the first ``reference_pool`` of the permutation, default K), and the strategy picks the references from the
  rest of the permutation (the pool) one at a time, from the answers so far; ``random`` takes them in order.
* ``fixed_queries=False`` (the PIAA protocol, ``recsys.evaluation.protocols``) scores every k on all of the
  user's ratings but its k references instead, as the PIAA papers do; the users are still the same at every k.
* Per-user metrics are averaged over the draws before they are averaged over users, bootstrapped and tested,
  so an interval covers the users and the draw no longer decides a claim on its own.

The evaluator is the only place where reference ratings are separated from queries.
"""

from __future__ import annotations

import time
import zlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from recsys.data.dataset import Dataset, References, is_unseen_split
from recsys.errors import ColdStartNotSupported
from recsys.evaluation.best_of_n import BEST_OF_N, best_of_n
from recsys.evaluation.elicitation import Elicitor, check_strategy
from recsys.evaluation.metrics import MIN_USER_QUERIES, NDCG_K, all_metrics, bootstrap_ci, ndcg_left_out

CI_METRICS = ("user_srocc", "pairwise_acc")
USER_METRICS = ("user_srocc", "pairwise_acc", "ndcg@10")
GLOBAL_METRICS = ("rmse", "mae", "plcc", "srocc")
#: reference draws per new user (the README's numbers use this many)
DEFAULT_DRAWS = 5


@dataclass(frozen=True)
class Episode:
    """The references and queries of one new user in one draw."""

    references: References
    query_image_idx: np.ndarray
    query_score: np.ndarray
    draw: int = 0


@dataclass(frozen=True)
class Predictions:
    """Every scored query of a row, aligned: ``prediction[i]`` for ``user_idx[i]`` on ``image_idx[i]``, whose
    observed score is ``score[i]``, in reference draw ``draw[i]`` (-1 on seen splits: no draw)."""

    user_idx: np.ndarray
    image_idx: np.ndarray
    score: np.ndarray
    prediction: np.ndarray
    draw: np.ndarray


@dataclass
class Result:
    """One row of the leaderboard: a model on a split (and a number of shots for unseen splits).

    ``metrics`` of user-level metrics are means over users of per-user values averaged over draws (global ones:
    means over draws); ``metric_users`` says how many users each one averaged; ``by_draw`` holds the user-level
    means of each draw (the draw-to-draw spread); ``ndcg_left_out`` counts users with too few queries for
    ndcg@10. ``n_ratings`` is the number of queries of one draw (the same in every draw and at every k), and
    ``fallback_predictions`` how many of them the model scored by its fallback (images it cannot place, e.g. no
    training rating and no features: ``Model.placeable``).
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
    per_user: dict[str, dict] = field(default_factory=dict, repr=False)
    predictions: Predictions | None = field(default=None, repr=False)

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


class Evaluator:
    """Scores any fitted model on a dataset's splits under the one protocol.

    Args:
        dataset: the data (the model must have been fitted on it).
        shots: numbers of reference ratings per new user on unseen splits; the largest fixes the queries.
        seed: seed of the reference draws and of the bootstrap.
        n_bootstrap: bootstrap resamples for the 95% intervals over users.
        draws: reference draws per new user (seen splits have none: every rating is scored once).
        fixed_queries: True: every k scores the same queries (all but the largest k's references); False: each
            k scores all of the user's ratings but its own k references.
        references: how a new user's references are chosen: ``random`` or a strategy of
            ``recsys.evaluation.elicitation`` (needs fixed queries).
        reference_pool: how many of each new user's ratings are kept out of the queries for the references to be
            chosen from (default None: the largest k); users need this many plus MIN_USER_QUERIES ratings.
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
    ):
        if not len(shots) or any(k < 0 for k in shots):
            raise ValueError(f"shots must be non-negative, got {list(shots)}")
        if draws < 1:
            raise ValueError(f"draws must be at least 1, got {draws}")
        if reference_pool is not None and reference_pool < max(shots):
            raise ValueError(f"the reference pool ({reference_pool}) must hold the largest k ({max(shots)})")
        if check_strategy(references) != "random" and not fixed_queries:
            raise ValueError(f"references={references!r} needs fixed queries (the default protocol)")
        self.dataset = dataset
        self.shots = tuple(int(k) for k in shots)
        self.seed = seed
        self.n_bootstrap = n_bootstrap
        self.draws = int(draws)
        self.fixed_queries = bool(fixed_queries)
        self.references = references
        self.reference_pool = self.max_shots if reference_pool is None else int(reference_pool)
        self._elicited: dict = {}  # (model, split, draw) -> {user: pool positions picked}, for one model

    @property
    def max_shots(self) -> int:
        """The largest k: every user keeps this many ratings out of its queries, whatever k is scored."""
        return max(self.shots)

    # ------------------------------------------------------------------ protocol
    def tasks(self, split: str) -> list[int | None]:
        """The shot counts evaluated on a split: None for seen splits."""
        return list(self.shots) if is_unseen_split(split) else [None]

    def episodes(self, split: str, shots: int, draw: int = 0, model=None) -> tuple[list[Episode], int]:
        """The new-user episodes of an unseen split at k = ``shots`` in reference draw ``draw``, and the number
        of users skipped (too few ratings for the reference pool plus MIN_USER_QUERIES queries). A reference
        strategy other than random picks from the pool for ``model`` (``recsys.evaluation.elicitation``)."""
        if not 0 <= shots <= self.max_shots:
            raise ValueError(f"shots = {shots} is not within the evaluator's 0..{self.max_shots}")
        r = self.dataset.ratings[split]
        order = np.argsort(r.user_idx, kind="stable")
        users, starts = np.unique(r.user_idx[order], return_index=True)
        picks = self._picks(model, split, draw) if self.references != "random" else None
        episodes, skipped = [], 0
        for user, chunk in zip(users, np.split(order, starts[1:]), strict=True):
            if len(chunk) < self.reference_pool + MIN_USER_QUERIES:
                skipped += 1
                continue
            user_key = zlib.crc32(str(self.dataset.user_ids[user]).encode())
            permutation = chunk[np.random.default_rng([self.seed, user_key, draw]).permutation(len(chunk))]
            first_query = self.reference_pool if self.fixed_queries else shots
            refs, queries = permutation[:shots], np.sort(permutation[first_query:])
            if picks is not None:
                refs = permutation[picks(int(user), permutation[: self.reference_pool])[:shots]]
            episodes.append(
                Episode(
                    References(int(user), r.image_idx[refs], r.score[refs]),
                    r.image_idx[queries],
                    r.score[queries],
                    draw,
                )
            )
        return episodes, skipped

    def _picks(self, model, split: str, draw: int):
        """``picks(user, pool)``: the positions in ``pool`` (rating rows of the user's pool, in permutation order)
        of the strategy's first K picks for ``model``, computed once per model, split and draw."""
        if model is None:
            raise ValueError(f"references={self.references!r} chooses references for a model: pass it")
        if self._elicited.get("model") is not model:
            self._elicited = {
                "model": model,
                "elicitor": Elicitor(self.references, model, self.dataset, self.seed),
            }
        elicitor, cache = self._elicited["elicitor"], self._elicited.setdefault((split, draw), {})
        r = self.dataset.ratings[split]

        def picks(user: int, pool: np.ndarray) -> np.ndarray:
            if user not in cache:
                cache[user] = elicitor.picks(
                    r.image_idx[pool], lambda p: float(r.score[pool[p]]), self.max_shots
                )
            return cache[user]

        return picks

    # ------------------------------------------------------------------ scoring
    def evaluate(self, model, split: str, shots: int | None = None, *, fit_seconds: float = 0.0) -> Result:
        """Score a fitted model on one split (and k for an unseen split)."""
        if split not in self.dataset.ratings:
            raise ValueError(f"no split {split!r} in {self.dataset.name}")
        name, context = model_context(model, fit_seconds)
        if not is_unseen_split(split):
            r = self.dataset.ratings[split]
            start = time.perf_counter()
            try:
                pred = np.asarray(model.predict(r.user_idx, r.image_idx), dtype=float)
            except ColdStartNotSupported as err:  # e.g. a scorer whose weights are not available here
                return self._failed(name, split, None, "unsupported", str(err), context)
            seconds = time.perf_counter() - start
            draw = np.full(len(pred), -1, np.int64)
            scored = Predictions(r.user_idx, r.image_idx, r.score, pred, draw)
            return count_fallbacks(model, self._result(name, split, None, scored, seconds, 0, 1, context))
        if shots is None:
            raise ValueError(f"{split} is an unseen split: pass shots")
        episodes, skipped = [], 0
        try:
            for draw in range(self.draws):
                drawn, skipped = self.episodes(split, shots, draw, model)
                episodes += drawn
        except ColdStartNotSupported as err:  # the reference strategy needs what the model lacks
            return self._failed(name, split, shots, "unsupported", str(err), context)
        n_users = len(episodes) // self.draws
        if not episodes:
            reason = f"no user has at least {self.reference_pool + MIN_USER_QUERIES} ratings"
            return self._failed(name, split, shots, "empty", reason, context, skipped=skipped)
        start = time.perf_counter()
        try:
            preds = model.predict_new([e.references for e in episodes], [e.query_image_idx for e in episodes])
        except ColdStartNotSupported as err:
            return self._failed(name, split, shots, "unsupported", str(err), context, n_users, skipped)
        seconds = time.perf_counter() - start
        y_pred = np.concatenate([np.asarray(p, dtype=float).ravel() for p in preds])
        sizes = [len(e.query_score) for e in episodes]
        if len(y_pred) != sum(sizes) or any(len(np.ravel(p)) != n for p, n in zip(preds, sizes, strict=True)):
            raise RuntimeError(f"{name} returned {len(y_pred)} scores for {sum(sizes)} queries")
        scored = Predictions(
            np.repeat([e.references.user_idx for e in episodes], sizes).astype(np.int64),
            np.concatenate([e.query_image_idx for e in episodes]),
            np.concatenate([e.query_score for e in episodes]),
            y_pred,
            np.repeat([e.draw for e in episodes], sizes).astype(np.int64),
        )
        return count_fallbacks(
            model, self._result(name, split, shots, scored, seconds, skipped, self.draws, context)
        )

    def _failed(self, name, split, shots, status, reason, context, n_users=0, skipped=0) -> Result:
        """A row without metrics: the model cannot score the split (``unsupported``) or nobody qualifies."""
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

    def _best_of_n(self, split: str, scored: Predictions) -> dict[str, float]:
        """Best-of-n metrics (``recsys.evaluation.best_of_n``), each draw's queries apart, averaged over draws."""
        truth = _truth_of(self.dataset, split, scored)
        per_draw = []
        for draw in np.unique(scored.draw):
            at = scored.draw == draw
            values = {}
            for n in BEST_OF_N:
                values |= best_of_n(
                    scored.user_idx[at],
                    scored.score[at],
                    scored.prediction[at],
                    n,
                    user_ids=self.dataset.user_ids,
                    seed=self.seed,
                    truth=None if truth is None else truth[at],
                )
            per_draw.append(values)
        return {m: float(np.mean([d[m] for d in per_draw])) for m in per_draw[0]}

    def _result(self, name, split, shots, scored: Predictions, seconds, skipped, draws, context) -> Result:
        if not np.isfinite(scored.prediction).all():
            raise RuntimeError(f"{name} predicted NaN or infinite scores on {split}")
        min_score = float(self.dataset.score_range[0])
        per_draw: list[dict[str, float]] = []
        collected: dict[str, dict[int, list[float]]] = {m: defaultdict(list) for m in USER_METRICS}
        for draw in np.unique(scored.draw):
            at = scored.draw == draw
            metrics, per_user = all_metrics(
                scored.score[at], scored.prediction[at], scored.user_idx[at], min_score=min_score
            )
            per_draw.append(metrics)
            for metric, values in per_user.items():
                for user, value in values.items():
                    collected[metric][int(user)].append(value)
        per_user = {m: {u: float(np.mean(v)) for u, v in values.items()} for m, values in collected.items()}
        metrics = {m: float(np.mean([d[m] for d in per_draw])) for m in GLOBAL_METRICS}
        metrics |= self._best_of_n(split, scored)
        for m in USER_METRICS:
            metrics[m] = float(np.mean(list(per_user[m].values()))) if per_user[m] else float("nan")
        ci = {
            m: list(
                bootstrap_ci(
                    np.array(list(per_user[m].values())), n_resamples=self.n_bootstrap, seed=self.seed
                )
            )
            for m in CI_METRICS
        }
        first = scored.draw == scored.draw[0]
        return Result(
            model=name,
            split=split,
            shots=shots,
            n_users=int(len(np.unique(scored.user_idx))),
            n_ratings=int(first.sum()),
            metrics=metrics,
            ci95=ci,
            predict_seconds=seconds,
            skipped_users=skipped,
            draws=draws,
            metric_users={m: len(per_user[m]) for m in USER_METRICS},
            ndcg_left_out=ndcg_left_out(scored.user_idx[first], NDCG_K),
            by_draw={m: [d[m] for d in per_draw] for m in CI_METRICS} if draws > 1 else {},
            per_user=per_user,
            predictions=scored,
            **context,
        )


def count_fallbacks(model, result: Result) -> Result:
    """``result`` with ``fallback_predictions`` set: how many queries of its first draw ``model`` scored by its
    fallback (``Model.placeable`` False: an image it cannot place). Users need none: a seen split's users are in
    the fit (checked on load), and a new user is scored from its references by design."""
    placeable = getattr(model, "placeable", None)
    if placeable is not None and result.predictions is not None:
        scored = result.predictions
        first = scored.draw == scored.draw[0]
        result.fallback_predictions = int((~placeable(scored.image_idx[first])).sum())
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
