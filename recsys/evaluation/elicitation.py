"""Elicitation: which of a new user's rated images to ask about, one at a time, to learn their taste fastest.

The protocol (``Evaluator(references=STRATEGY, reference_pool=P)``): for each new user and draw the seeded
permutation fixes the queries first, exactly as for random references: every rating but the first P of the
permutation (the *pool*; P defaults to the largest k). A strategy then picks the user's references from the
pool only, one at a time. Its i-th pick may read the model, the training users, the image side of the pool and
the answers (observed scores) to its first i - 1 picks; it never sees the queries, nor the score of an image it
has not asked about (``elicit`` hands it the answers through ``ask`` one pick at a time). The references at k
are its first k picks, so a k-curve is nested, as with random references. ``random`` picks in the permutation's
order: with P = K it is the standard protocol, and with any P it is the reference on the same queries.

Strategies (ties go to the image earlier in the permutation):

* ``random``: the permutation's order.
* ``disagreement``: a panel of up to ``PANEL_SIZE`` training users (seeded). Each pick is the pool image whose
  predicted score varies most over the panel (each panel user's predictions centred over the pool, so a user's
  overall bias does not count), the panel users weighted by how well their predictions match the answers so far:
  ``w ~ exp(-(mse - min mse) / (2 s^2))``, ``s^2`` the panel's median mse. Every model that scores its
  training users.
* ``uncertainty``: the pool image with the largest posterior predictive variance of the model's linear-Gaussian
  fold-in, given the images asked so far (``linear_posterior``): the factor models (mf, als, bpr, lightfm: rows
  ``[q_i, 1]``, prior variance ``1 / penalty`` per dimension), profile (its empirical-Bayes profile) and
  user_ridge (its per-user ridge). Other models have no posterior over a new user and are reported
  ``unsupported`` for this strategy.
* ``coverage``: greedy coverage of ``PROTOTYPES`` taste prototypes. The prototypes are k-means groups of the
  panel users (as for disagreement), clustered on their centred predictions over a seeded sample of
  ``PROTOTYPE_IMAGES`` images, each weighted by its share of the panel. An image covers prototype c by how
  distinctive it is of that taste: ``|z_c(i)|``, the group's mean centred prediction on the image minus the
  panel's, in units of its spread over the pool. Each pick adds the most cover ``sum_c m_c max(0, |z_c(i)| -
  cover_c)``, where ``cover_c`` is the largest ``|z_c|`` of an image already asked: the first picks tell each
  taste group apart from the rest; once every group is covered, ties go to the permutation's order. It reads
  the model's predictions only, never the answers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from recsys.data.dataset import Dataset
from recsys.errors import ColdStartNotSupported

STRATEGIES = ("random", "disagreement", "uncertainty", "coverage")
#: the k-curve of the elicitation mode (``recsys leaderboard --references STRATEGY`` without ``--shots``)
ELICITATION_SHOTS = tuple(range(1, 21))
#: training users whose predictions the disagreement strategy compares
PANEL_SIZE = 256
#: taste prototypes (k-means groups of the panel users) that the coverage strategy covers
PROTOTYPES = 8
#: images whose predictions the panel users are clustered on
PROTOTYPE_IMAGES = 512

#: values of the pool images for the next pick, from the positions asked so far and their answers
Scorer = Callable[[list[int], list[float]], np.ndarray]


def check_strategy(name: str) -> str:
    if name not in STRATEGIES:
        raise ValueError(f"unknown reference strategy {name!r}; known: {', '.join(STRATEGIES)}")
    return name


def elicit(scorer: Scorer, ask: Callable[[int], float], n_pool: int, k: int) -> np.ndarray:
    """Positions (into the pool) of the first ``k`` picks, in order. Each pick is the highest value of
    ``scorer(asked, answers)`` among the positions not asked yet (ties: the first); its answer comes from
    ``ask(position)`` only after it is picked."""
    asked: list[int] = []
    answers: list[float] = []
    free = np.ones(n_pool, dtype=bool)
    for _ in range(min(k, n_pool)):
        values = np.where(free, np.asarray(scorer(asked, answers), dtype=np.float64), -np.inf)
        position = int(np.argmax(values))
        asked.append(position)
        answers.append(float(ask(position)))
        free[position] = False
    return np.array(asked, dtype=np.int64)


# ---------------------------------------------------------------------- the model's posterior
@dataclass(frozen=True)
class LinearPosterior:
    """A new user's fold-in as Bayesian linear regression: ``score_i = rows[i] . w + noise``, ``w`` with prior
    covariance ``diag(prior_var)``, noise variance ``noise``."""

    rows: np.ndarray  # (n_images, d)
    prior_var: np.ndarray  # (d,)
    noise: float

    def variances(self, pool: np.ndarray, asked: list[int]) -> np.ndarray:
        """Posterior predictive variance of every pool image's score after asking the pool positions ``asked``
        (kernel form, so a design wider than the pool costs nothing)."""
        x = self.rows[pool]
        kernel = (x * self.prior_var) @ x.T
        prior = np.diag(kernel).copy()
        if not asked:
            return prior
        cross = kernel[asked]  # (asked, pool)
        gram = kernel[np.ix_(asked, asked)] + self.noise * np.eye(len(asked))
        return prior - np.einsum("ap,ap->p", cross, np.linalg.solve(gram, cross))


def linear_posterior(model) -> LinearPosterior:
    """The linear-Gaussian fold-in of ``model`` (module docstring); ``ColdStartNotSupported`` for a model
    without one."""
    from recsys.models.baselines import UserRidge
    from recsys.models.factor import FoldIn
    from recsys.models.profile import PreferenceProfile

    fold = getattr(model, "fold_", None)
    if isinstance(fold, FoldIn):  # penalty = noise variance / prior variance, noise in raw units
        rows = np.hstack([fold.item_vecs, np.ones((len(fold.item_vecs), 1))])
        return LinearPosterior(rows, 1.0 / np.asarray(fold.penalty, np.float64), 1.0)
    if isinstance(model, PreferenceProfile):  # lhs = X'X / noise + diag(precision)
        rows = model._design(np.arange(len(model.dimensions_)))
        return LinearPosterior(rows, 1.0 / np.asarray(model.prior_precision_, np.float64), model.noise_)
    if isinstance(model, UserRidge):  # weights: X'X + user_alpha_ I (the fitted penalty)
        rows = np.asarray(model.design_, np.float64)
        return LinearPosterior(rows, np.full(rows.shape[1], 1.0 / model.user_alpha_), 1.0)
    raise ColdStartNotSupported(
        f"{getattr(model, 'name', type(model).__name__)} has no posterior over a new user's taste, so the "
        "uncertainty strategy cannot choose its references (models with one: mf, als, bpr, lightfm, profile, "
        "user_ridge)"
    )


# ---------------------------------------------------------------------- strategies
class Elicitor:
    """A strategy's picks for one fitted model on one dataset (see the module docstring).

    Raises:
        ColdStartNotSupported: the strategy needs what the model does not have (``uncertainty`` without a
            posterior).
    """

    def __init__(self, strategy: str, model, dataset: Dataset, seed: int = 0):
        self.strategy = check_strategy(strategy)
        self.model = model
        self.dataset = dataset
        self.seed = seed
        if strategy == "uncertainty":
            self.posterior = linear_posterior(model)
        elif strategy in ("disagreement", "coverage"):
            known = np.flatnonzero(getattr(model, "known_", np.zeros(0, bool)))
            if not len(known):
                raise ColdStartNotSupported(f"{strategy} needs a model fitted on training users")
            rng = np.random.default_rng([seed, 1])
            self.panel = np.sort(rng.choice(known, min(PANEL_SIZE, len(known)), replace=False))
            if strategy == "coverage":
                self.groups, self.mass = taste_prototypes(
                    self._centred(rng.permutation(dataset.n_images)[:PROTOTYPE_IMAGES]), seed
                )

    def picks(self, pool: np.ndarray, ask: Callable[[int], float], k: int) -> np.ndarray:
        """Positions (into ``pool``, image indices in permutation order) of the first ``k`` picks."""
        pool = np.asarray(pool, np.int64)
        return elicit(self.scorer(pool), ask, len(pool), k)

    def scorer(self, pool: np.ndarray) -> Scorer:
        if self.strategy == "random":
            order = -np.arange(len(pool), dtype=np.float64)
            return lambda asked, answers: order
        if self.strategy == "uncertainty":
            return lambda asked, answers: self.posterior.variances(pool, asked)
        if self.strategy == "coverage":
            return coverage_scorer(distinctiveness(self._centred(pool), self.groups, self.mass), self.mass)
        return disagreement_scorer(self._predicted(pool))

    def _predicted(self, images: np.ndarray) -> np.ndarray:
        """The panel's predicted scores of ``images`` (panel x images)."""
        users = np.repeat(self.panel, len(images))
        return self.model.predict(users, np.tile(images, len(self.panel))).reshape(len(self.panel), -1)

    def _centred(self, images: np.ndarray) -> np.ndarray:
        predicted = self._predicted(images)
        return predicted - predicted.mean(axis=1, keepdims=True)


def disagreement_scorer(predicted: np.ndarray) -> Scorer:
    """Weighted variance over panel users (rows of ``predicted``, panel x pool) of their centred predictions,
    the weights from each user's squared error on the answers so far."""
    centred = predicted - predicted.mean(axis=1, keepdims=True)

    def values(asked: list[int], answers: list[float]) -> np.ndarray:
        weights = np.ones(len(predicted))
        if asked:
            mse = np.mean((predicted[:, asked] - np.asarray(answers)) ** 2, axis=1)
            scale = max(float(np.median(mse)), 1e-9)
            weights = np.exp(-(mse - mse.min()) / (2 * scale))
        weights = weights / weights.sum()
        mean = weights @ centred
        return weights @ (centred - mean) ** 2

    return values


def coverage_scorer(similarity: np.ndarray, mass: np.ndarray) -> Scorer:
    """Facility-location gain of each pool image (rows of ``similarity``, pool x prototypes: how much the image
    covers each prototype; negative values count as 0)."""
    similarity = np.clip(similarity, 0.0, None)

    def values(asked: list[int], answers: list[float]) -> np.ndarray:
        cover = similarity[asked].max(axis=0) if asked else np.zeros(similarity.shape[1])
        return np.clip(similarity - cover, 0.0, None) @ mass

    return values


def taste_prototypes(centred: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each panel user's prototype (k-means of the rows of ``centred``, panel x images, unit-normed; seeded)
    and each prototype's share of the panel."""
    from sklearn.cluster import KMeans

    rows = centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)
    n = min(PROTOTYPES, len(rows))
    labels = KMeans(n_clusters=n, n_init=4, random_state=seed).fit(rows).labels_
    return labels, np.bincount(labels, minlength=n) / len(labels)


def distinctiveness(centred: np.ndarray, groups: np.ndarray, mass: np.ndarray) -> np.ndarray:
    """``|z_c(i)|`` (images x prototypes): how far each prototype's mean centred prediction on each image
    (columns of ``centred``, panel x images) lies from the panel's, in units of its spread over the images."""
    means = np.stack([centred[groups == c].mean(axis=0) for c in range(len(mass))])  # prototypes x images
    gaps = means - mass @ means
    spread = np.maximum(gaps.std(axis=1, keepdims=True), 1e-12)
    return np.abs(gaps / spread).T
