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
* ``coverage``: greedy coverage of ``PROTOTYPES`` taste prototypes, k-means centres of the dataset's image
  features (seeded; side information only), each weighted by its share of images: each pick adds the most
  cover ``sum_c m_c max(0, cos(c, i) - cover_c)``, where ``cover_c`` is the best cosine of prototype c to an
  image already asked.
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
#: k-means prototypes of the image features that the coverage strategy covers
PROTOTYPES = 16

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
    if isinstance(model, UserRidge):  # weights: X'X + user_alpha I
        rows = np.asarray(model.design_, np.float64)
        return LinearPosterior(rows, np.full(rows.shape[1], 1.0 / model.user_alpha), 1.0)
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
        elif strategy == "disagreement":
            known = np.flatnonzero(getattr(model, "known_", np.zeros(0, bool)))
            if not len(known):
                raise ColdStartNotSupported("disagreement needs a model fitted on training users")
            rng = np.random.default_rng([seed, 1])
            self.panel = np.sort(rng.choice(known, min(PANEL_SIZE, len(known)), replace=False))
        elif strategy == "coverage":
            self.features, self.prototypes, self.mass = prototypes(dataset, seed)

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
            return coverage_scorer(self.features[pool] @ self.prototypes.T, self.mass)
        users = np.repeat(self.panel, len(pool))
        predicted = self.model.predict(users, np.tile(pool, len(self.panel))).reshape(len(self.panel), -1)
        return disagreement_scorer(predicted)


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
    """Facility-location gain of each pool image (rows of ``similarity``, pool x prototypes, cosines)."""
    similarity = np.clip(similarity, 0.0, None)

    def values(asked: list[int], answers: list[float]) -> np.ndarray:
        cover = similarity[asked].max(axis=0) if asked else np.zeros(similarity.shape[1])
        return np.clip(similarity - cover, 0.0, None) @ mass

    return values


def prototypes(dataset: Dataset, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit-norm image features (n_images x d), ``PROTOTYPES`` unit-norm k-means centres of them and each
    centre's share of the images (seeded; the image features only, never ratings)."""
    return dataset._cached(("elicitation_prototypes", PROTOTYPES, seed), lambda: _kmeans(dataset, seed))


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def _kmeans(dataset: Dataset, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.cluster import KMeans

    features = _unit(np.asarray(dataset.image_inputs(), np.float64))
    n = min(PROTOTYPES, len(features))
    km = KMeans(n_clusters=n, n_init=3, random_state=seed).fit(features)
    return features, _unit(km.cluster_centers_), np.bincount(km.labels_, minlength=n) / len(features)
