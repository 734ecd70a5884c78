"""The top-N task: ranking the whole catalogue for each seen user, measured against the user's held-out images.

* Candidates. For each user of a seen split (``test_seen``), every image of the dataset that the user has not
  rated in ``train`` or ``val_seen``: the ratings a model may read under the data policy (its fit split and the
  validation split), so every model, tuned or not, ranks the same candidates. The user's held-out images are
  among them, and so are images nobody rated in train (PAMELA's seen-split images), which a model scores from
  their features as it scores any image.
* Relevant: the user's held-out images (the split's ratings) rated at or above ``relevant_at``; by default the
  point three quarters up the score range (4 on a 1-5 scale, the like threshold of als, bpr and lightfm). Held-out
  images rated below it are candidates without gain. Users without a relevant held-out image are left out of
  the metrics and counted (``Result.n_users`` is every user of the split; ``metric_users`` those averaged).
* Metrics (``recsys.evaluation.metrics``): recall@k (relevant images among the top k over the user's relevant
  images) and ndcg@k with binary gains, per user, for each k of ``ks`` (10 and 20 by default); equal scores are
  broken pessimistically (an irrelevant candidate first), so a constant scorer earns nothing. Averaged over users,
  with a 95% percentile bootstrap interval over users as every user-level metric of the suite.
* The model scores the candidates with ``predict`` (``PREDICT_CHUNK`` pairs a call). Unseen splits are not part of
  the task: a new user has no fit ratings to leave out, and the rating protocol measures new users.
* ``Result.predictions`` holds each user's top max(k) candidates as the metrics ranked them (score: the held-out
  rating, NaN for an image that was not held out), not every candidate.

``TopNScorer`` is a scorer of the one ``Evaluator`` (composed with its sampler, as ``RatingScorer`` and
``ChoiceScorer`` are). ``Popularity`` is the label-free reference every top-N table shows: each image scored by
its number of ratings in the fit split (who rated what, not the scores), the same for every user.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recsys.data.dataset import Dataset, Ratings, group_by, is_unseen_split
from recsys.errors import ColdStartNotSupported, UserError
from recsys.evaluation.episodes import Episode
from recsys.evaluation.evaluator import Evaluator, Predictions, Scored
from recsys.evaluation.metrics import bootstrap_ci, per_user_recall_at_k, per_user_topn_ndcg
from recsys.models.base import DATA_POLICY

#: cut-offs of recall@k and ndcg@k
TOPN_KS = (10, 20)
#: splits whose ratings a user's candidates leave out: what a model may read under the data policy
SEEN_SPLITS = (DATA_POLICY.fit_split, DATA_POLICY.validation_split)
#: (user, image) pairs scored in one ``predict`` call
PREDICT_CHUNK = 250_000


def topn_metrics(ks: Sequence[int]) -> tuple[str, ...]:
    """The metric names of a top-N row, in report order: recall@k and ndcg@k for each k."""
    return tuple(f"{name}@{k}" for k in ks for name in ("recall", "ndcg"))


def default_relevant_at(dataset: Dataset) -> float:
    """The default relevance threshold: three quarters up the score range (4 on 1-5)."""
    lo, hi = dataset.score_range
    return float(lo + 0.75 * (hi - lo))


def candidates(dataset: Dataset, split: str, seen_splits: Sequence[str] = SEEN_SPLITS) -> Ratings:
    """One row per (user of ``split``, image the user did not rate in ``seen_splits``), users ascending and each
    user's images ascending; ``score`` is the user's rating in ``split``, NaN for an image not held out."""
    held = dataset.ratings[split]
    seen = Ratings.concat([dataset.ratings[s] for s in seen_splits if s in dataset.ratings and s != split])
    seen_rows = dict(group_by(seen.user_idx))
    users, images, scores = [], [], []
    open_ = np.ones(dataset.n_images, dtype=bool)
    for user, rows in held.by_user():
        open_[:] = True
        open_[seen.image_idx[seen_rows.get(user, [])]] = False
        items = np.flatnonzero(open_)
        score = np.full(len(items), np.nan, np.float32)
        kept = open_[held.image_idx[rows]]  # a held-out image rated in a seen split too is no candidate
        score[np.searchsorted(items, held.image_idx[rows][kept])] = held.score[rows][kept]
        users.append(np.full(len(items), user, np.int64))
        images.append(items.astype(np.int64))
        scores.append(score)
    if not users:
        return Ratings.concat([])
    return Ratings(np.concatenate(users), np.concatenate(images), np.concatenate(scores))


class TopNScorer:
    """The top-N task's scorer (module docstring): candidates of seen splits scored with ``predict``, recall@k and
    ndcg@k per user against the held-out images rated at or above ``relevant_at`` (None: ``default_relevant_at``).
    """

    unit = "ratings"
    min_queries = 1

    def __init__(
        self,
        ks: Sequence[int] = TOPN_KS,
        relevant_at: float | None = None,
        seen_splits: Sequence[str] = SEEN_SPLITS,
    ):
        ks = tuple(dict.fromkeys(int(k) for k in ks))
        if not ks or min(ks) < 1:
            raise UserError(f"top-N cut-offs must be positive integers, got {list(ks)}")
        self.ks = ks
        self.relevant_at = relevant_at
        self.seen_splits = tuple(seen_splits)
        self._tables: dict = {}

    def __getstate__(self) -> dict:
        return self.__dict__ | {"_tables": {}}  # a worker process builds its own candidates

    @property
    def metrics(self) -> tuple[str, ...]:
        return topn_metrics(self.ks)

    def threshold(self, dataset: Dataset) -> float:
        return default_relevant_at(dataset) if self.relevant_at is None else float(self.relevant_at)

    def describe(self, dataset: Dataset) -> dict:
        """What the task ranks and counts as relevant (leaderboard.json ``topn``)."""
        return {
            "ks": list(self.ks),
            "relevant_at": self.threshold(dataset),
            "candidates": "every image the user has not rated in "
            + " or ".join(s for s in self.seen_splits if s in dataset.ratings),
            "relevant": f"the user's held-out images rated at or above {self.threshold(dataset):g}",
        }

    def table(self, dataset: Dataset, split: str) -> Ratings:
        if split not in dataset.ratings:
            raise ValueError(f"no split {split!r} in {dataset.name}")
        if is_unseen_split(split):
            raise ValueError(f"the top-N task ranks the catalogue for seen users; {split} holds new users")
        key = (id(dataset), split)
        if key not in self._tables:
            self._tables[key] = candidates(dataset, split, self.seen_splits)
        return self._tables[key]

    def units(self, table: Ratings) -> None:
        return None

    def predict_seen(self, model, table: Ratings) -> np.ndarray:
        """Every candidate's score; a model that cannot score some candidates (e.g. images without a fit rating
        and without features) raises ``ColdStartNotSupported``, which the evaluator reports as unsupported."""
        parts = []
        for start in range(0, len(table), PREDICT_CHUNK):
            users, images = (
                table.user_idx[start : start + PREDICT_CHUNK],
                table.image_idx[start : start + PREDICT_CHUNK],
            )
            try:
                parts.append(model.predict(users, images))
            except UserError as err:
                raise ColdStartNotSupported(f"cannot rank the whole catalogue: {err}") from None
        return np.concatenate(parts) if parts else np.zeros(0)

    def predict_new(self, model, table: Ratings, episodes: list[Episode]) -> list[np.ndarray]:
        raise ColdStartNotSupported("the top-N task ranks the catalogue for seen users only")

    def truth(self, dataset: Dataset, split: str) -> None:
        return None

    def summary(self, evaluator: Evaluator, split: str, table: Ratings, scored: Scored) -> dict:
        """The metric fields of a ``Result`` (module docstring)."""
        users, items = table.user_idx[scored.rows], table.image_idx[scored.rows]
        held = table.score[scored.rows]
        relevant = np.nan_to_num(held, nan=-np.inf) >= self.threshold(evaluator.dataset)
        per_user: dict[str, dict[int, float]] = {}
        for k in self.ks:
            recall = per_user_recall_at_k(relevant, scored.prediction, users, k)
            ndcg = per_user_topn_ndcg(relevant, scored.prediction, users, k)
            per_user[f"recall@{k}"] = {int(u): v for u, v in recall.items()}
            per_user[f"ndcg@{k}"] = {int(u): v for u, v in ndcg.items()}
        metrics = {
            m: float(np.mean(list(values.values()))) if values else float("nan")
            for m, values in per_user.items()
        }
        ci = {
            m: list(
                bootstrap_ci(
                    np.array(list(values.values())), n_resamples=evaluator.n_bootstrap, seed=evaluator.seed
                )
            )
            for m, values in per_user.items()
        }
        order = np.lexsort((relevant, -scored.prediction, users))  # as the metrics rank them
        sorted_users = users[order]
        starts = np.searchsorted(sorted_users, sorted_users, side="left")
        top = order[np.arange(len(order)) - starts < max(self.ks)]
        predictions = Predictions(users[top], items[top], held[top], scored.prediction[top], scored.draw[top])
        return {
            "metrics": metrics,
            "ci95": ci,
            "metric_users": {m: len(values) for m, values in per_user.items()},
            "by_draw": {},
            "per_user": per_user,
            "predictions": predictions,
        }


class Popularity:
    """The label-free reference of the top-N task: every image scored by its number of ratings in ``fit_split``
    (who rated what, never the scores), the same for every user. Not a registered model: it is the row any
    top-N table must show, made beside the models (as the oracle's row on choices)."""

    name = "popularity"
    needs_known_users = False

    def __init__(self, dataset: Dataset, fit_split: str = DATA_POLICY.fit_split):
        ratings = dataset.fit_ratings(fit_split)
        self.counts_ = np.bincount(ratings.image_idx, minlength=dataset.n_images).astype(np.float64)
        self.fit_split_ = fit_split
        self.validation_split_ = None

    def predict(self, user_idx: np.ndarray, image_idx: np.ndarray) -> np.ndarray:
        return self.counts_[np.asarray(image_idx, np.int64)]
