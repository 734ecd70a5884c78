"""Neighbourhood models: item kNN and user kNN.

With image features, similarity between images is the cosine of their embeddings (so unrated images have
neighbours). On a table without features they fall back to rating-based similarity: item kNN to the shrunk
Pearson-baseline correlation over co-raters (Koren's neighbourhood model, as Surprise's KNNBaseline), user kNN
to mean-centred cosine over co-ratings, shrunk by ``n_common / (n_common + shrinkage)``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from recsys.data.dataset import Dataset, Ratings, References, group_by
from recsys.data.encodings import ImageInputs
from recsys.errors import NewImagesNotSupported, UserError
from recsys.models.base import Model, append_rows
from recsys.models.biases import BASELINE_SPEC, BiasParams, clip_scores, fit_model_baseline, placed_images
from recsys.models.linear import consensus_map, linear_map_spec
from recsys.models.params import Hyperparameters, at_least_one, hyper, non_negative

#: item_knn's similarities (auto: embedding when the dataset has image features, else pearson_baseline)
SIMILARITIES = ("auto", "embedding", "pearson_baseline")


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


#: dimensions of user_knn's taste vectors on datasets without image features
TASTE_DIMENSIONS = 32


def _rating_basis(centred: sp.csr_matrix, dims: int) -> np.ndarray:
    """(n_images x d) top right singular vectors of the users' centred ratings, float32: rows of ``centred``
    projected on them keep most of their cosine geometry in d dimensions (a taste space for retrieval)."""
    from scipy.sparse.linalg import svds

    d = max(1, min(dims, min(centred.shape) - 1))
    if not np.any(centred.data):  # every user rates every image at their mean: no taste direction to find
        return np.zeros((centred.shape[1], d), np.float32)
    v0 = np.random.default_rng(0).standard_normal(min(centred.shape))
    _, _, vt = svds(centred.astype(np.float64), k=d, v0=v0)
    return np.ascontiguousarray(vt.T, dtype=np.float32)


def rating_similarity(rows: sp.csr_matrix, shrinkage: float) -> np.ndarray:
    """Shrunk cosine between the rows of a centred rating matrix: (n_rows, n_rows) dense."""
    gram = (rows @ rows.T).toarray()
    norms = np.sqrt(np.maximum(np.diag(gram), 1e-12))
    binary = rows.copy()
    binary.data = np.ones_like(binary.data)
    common = (binary @ binary.T).toarray()
    sim = gram / np.outer(norms, norms) * common / (common + shrinkage)
    np.fill_diagonal(sim, 0.0)
    return sim


def pearson_baseline(
    rows: np.ndarray, columns: np.ndarray, residual: np.ndarray, n_rows: int, shrinkage: float
) -> np.ndarray:
    """Shrunk Pearson-baseline similarity between rows (e.g. images) rated by columns (e.g. users): dense
    (n_rows, n_rows).

    ``residual[n]`` is rating n's ``r - b`` (rating minus baseline estimate), at (``rows[n]``,
    ``columns[n]``). Rows i and j with co-raters U: ``sum_U e_i e_j / sqrt(sum_U e_i^2 * sum_U e_j^2)``, sums
    over the co-raters only, times ``(|U| - 1) / (|U| - 1 + shrinkage)``; 0 with fewer than two co-raters.
    """
    shape = (n_rows, int(columns.max()) + 1 if len(columns) else 0)
    values = sp.csr_matrix((np.asarray(residual, np.float64), (rows, columns)), shape=shape)
    squared = sp.csr_matrix((np.square(residual, dtype=np.float64), (rows, columns)), shape=shape)
    rated = sp.csr_matrix((np.ones(len(rows)), (rows, columns)), shape=shape)
    cross = (values @ values.T).toarray()
    squares = (squared @ rated.T).toarray()  # [i, j]: sum of e_i^2 over the columns that row j also has
    norms = np.sqrt(squares * squares.T)
    sim = np.divide(cross, norms, out=np.zeros_like(cross), where=norms > 0)
    support = np.maximum((rated @ rated.T).toarray() - 1.0, 0.0)
    sim *= np.divide(support, support + shrinkage, out=np.zeros_like(support), where=support > 0)
    np.fill_diagonal(sim, 0.0)
    return sim


def weighted_neighbours(sim: np.ndarray, values: np.ndarray, k: int, shrinkage: float) -> np.ndarray:
    """Per row of ``sim`` (n, m): the similarity-weighted mean of ``values`` (m,) over its k most similar
    columns with positive similarity, shrunk toward 0 by ``shrinkage`` in the denominator."""
    if sim.shape[1] == 0:
        return np.zeros(sim.shape[0])
    if sim.shape[1] > k:
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        sim = np.take_along_axis(sim, top, 1)
        values = values[top]
    else:
        values = np.broadcast_to(values, sim.shape)
    sim = np.maximum(sim, 0.0)
    weight = sim.sum(1) + shrinkage
    return np.divide((sim * values).sum(1), weight, out=np.zeros(len(sim)), where=weight > 0)


class KNNParams(Hyperparameters):
    """Hyperparameters both neighbourhood models share."""

    k: int = at_least_one(30, "neighbours")
    shrinkage: float = non_negative(
        1.0, "added to the sum of neighbour similarities (shrinks toward the baseline)"
    )
    mean_shrinkage: float = non_negative(5.0, "pseudo-ratings at the global mean in each user's mean")
    similarity_shrinkage: float = non_negative(10.0, "co-ratings at which a rating similarity is halved")


class _KNNBase(Model):
    """What both kNNs keep: each fitted user's ratings, and which images they place (``placed_images``: an image
    without training ratings and without features scores by the baseline alone, no neighbour having rated it)."""

    state_schema: ClassVar[dict[str, Any]] = {
        "rated_image_": "int[ratings] < images",  # before rated_start_, whose bound it sets
        "rated_start_": "int[users+1] < ratings+1",
        "rated_score_": "float[ratings]",
        "placed_": "bool[images]",
    }

    def _placeable(self, image_idx: np.ndarray) -> np.ndarray:
        return self.placed_[image_idx]

    def _keep_ratings(self, ratings: Ratings, n_users: int) -> None:
        # user u's ratings are rated_image_[rated_start_[u]:rated_start_[u + 1]], likewise rated_score_
        order = np.argsort(ratings.user_idx, kind="stable")
        self.rated_start_ = np.r_[0, np.cumsum(np.bincount(ratings.user_idx, minlength=n_users))]
        self.rated_image_ = ratings.image_idx[order]
        self.rated_score_ = ratings.score[order].astype(np.float64)

    def _rated(self, user: int) -> tuple[np.ndarray, np.ndarray]:
        """(images, scores) of a fitted user's ratings."""
        lo, hi = self.rated_start_[user], self.rated_start_[user + 1]
        return self.rated_image_[lo:hi], self.rated_score_[lo:hi]


class ItemKNN(_KNNBase):
    """Item kNN on baseline estimates (Koren's neighbourhood model, what Surprise's KNNBaseline computes):

    ``score = b_ui + sum_j s_ij e_uj / (sum_j s_ij + shrinkage)`` over the user's k rated images most similar
    to the candidate, positive similarities only, with ``e_uj`` the residual ``r_uj - b_uj`` less the mean
    residual of the user's rated images (``centre_residuals``); ``b_ui = mu + b_u + b_i`` are the ``biases``
    model's ALS baseline estimates (image biases from features for images absent from the fit, user biases
    toward a demographic prior). Similarity ``s_ij``: the cosine of image embeddings when the dataset has
    image features (unrated images have neighbours), else the shrunk Pearson-baseline correlation over
    co-raters, ``(n_ij - 1) / (n_ij - 1 + similarity_shrinkage)`` times the correlation of baseline
    residuals. New users: ``b_u`` folded from their references, whose residuals are the neighbours' values;
    with no references, the baseline estimate. Scores are clipped to the dataset's score range.
    Pearson-baseline similarities are kept as a dense float32 (n_images, n_images) matrix.

    Both departures from KNNBaseline are for a new user's few references. Unshrunk (``shrinkage`` 0), the
    correction is a weighted mean over however little similarity the references have to a candidate: one
    faintly similar reference hands a candidate its whole residual, and on MovieLens-100k 1 to 10 references
    ranked a new user's queries worse than none (user SROCC 0.27 at k = 1 against 0.37 at k = 0). And the
    residuals of a few references still hold most of the user's level (``b_u`` is shrunk toward the prior), which
    the correction then adds only to the candidates that have a similar rated image. With ``shrinkage=0`` and
    ``centre_residuals=False`` (and features absent) the defaults are KNNBaseline's (k 40, similarity shrinkage
    100, baseline regularisation 15 / 10 over 10 epochs), and so are its predictions.
    """

    state_schema: ClassVar[dict[str, Any]] = {
        "score_range_": "float~[2]",
        "baseline_": BASELINE_SPEC,
        "embedding_": ["float[images, features]", "None"],
        "item_sim_": ["float[images, images]", "None"],
    }

    name = "item_knn"

    class Params(BiasParams):
        k: int = at_least_one(40, "neighbours: the user's rated images most similar to the candidate")
        shrinkage: float = non_negative(
            1.0, "added to the sum of neighbour similarities (shrinks toward the baseline estimate)"
        )
        centre_residuals: bool = hyper(
            True, doc="neighbours' residuals less the user's mean residual (the baseline carries the level)"
        )
        similarity: str = hyper(
            "auto",
            choices=SIMILARITIES,
            doc="embedding (cosine of image features), pearson_baseline (co-raters), or auto (embedding when "
            "the dataset has image features)",
        )
        similarity_shrinkage: float = non_negative(
            100.0, "co-raters beyond the first at which a pearson_baseline similarity is halved"
        )

    def _fit(self, dataset: Dataset, ratings: Ratings, split: str) -> None:
        similarity = self.similarity
        if similarity == "auto":
            similarity = "pearson_baseline" if dataset.image_features is None else "embedding"
        if similarity == "embedding" and dataset.image_features is None:
            raise UserError(
                f"item_knn: similarity='embedding' needs image features and {dataset.name} has none; pass "
                "--image-features FILE.npz or --encoder NAME, or use similarity='pearson_baseline'"
            )
        self.score_range_ = np.asarray(dataset.score_range, np.float64)
        self.baseline_ = fit_model_baseline(dataset, ratings, self)
        self.placed_ = placed_images(dataset, ratings)
        self._keep_ratings(ratings, dataset.n_users)
        self.embedding_ = self.item_sim_ = None
        if similarity == "embedding":
            self.embedding_ = _unit(dataset.image_features.astype(np.float32))
        else:
            residual = ratings.score - self.baseline_.pairs(ratings.user_idx, ratings.image_idx)
            self.item_sim_ = pearson_baseline(
                ratings.image_idx, ratings.user_idx, residual, dataset.n_images, self.similarity_shrinkage
            ).astype(np.float32)

    def _similarity(self, candidates: np.ndarray, rated: np.ndarray) -> np.ndarray:
        if self.embedding_ is not None:
            return self.embedding_[candidates] @ self.embedding_[rated].T
        return self.item_sim_[np.ix_(candidates, rated)]

    def _score(
        self, user_bias: float, rated: np.ndarray, scores: np.ndarray, candidates: np.ndarray
    ) -> np.ndarray:
        """Baseline estimates of the candidates + the weighted mean of the user's residuals on their
        neighbours, clipped to the score range."""
        base = self.baseline_
        estimate = base.mu + user_bias + base.item_bias[candidates]
        if len(rated):
            residual = scores - (base.mu + user_bias + base.item_bias[rated])
            if self.centre_residuals:
                residual = residual - residual.mean()
            sim = self._similarity(candidates, rated).astype(np.float64)
            estimate = estimate + weighted_neighbours(sim, residual, self.k, self.shrinkage)
        return clip_scores(estimate, self.score_range_)

    def _predict(self, user_idx: np.ndarray, image_idx: np.ndarray) -> np.ndarray:
        out = np.empty(len(user_idx))
        for user, rows in group_by(user_idx):
            bias = float(self.baseline_.user_bias[user])
            out[rows] = self._score(bias, *self._rated(user), image_idx[rows])
        return out

    def _predict_new(self, references: list[References], images: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        for refs, candidates in zip(references, images, strict=True):
            rated, scores = np.asarray(refs.image_idx, np.int64), np.asarray(refs.score, np.float64)
            bias = self.baseline_.fold(refs.user_idx, rated, scores)
            out.append(self._score(bias, rated, scores, candidates))
        return out

    def _new_image_state(self, inputs: ImageInputs) -> dict:
        if self.embedding_ is None:
            raise NewImagesNotSupported(
                "item_knn with pearson_baseline similarity compares images by their co-raters, which a new image "
                "has none of; use similarity='embedding' (image features)"
            )
        return {
            "embedding_": append_rows(self.embedding_, _unit(inputs.features.astype(np.float32))),
            "baseline_": self.baseline_.with_images(self.name, inputs),
            "placed_": append_rows(self.placed_, np.ones(len(inputs), bool)),
        }


class UserKNN(_KNNBase):
    """User kNN around each image's non-personal score: ``user mean + d_c + sum_v s_uv e_vc / (sum_v s_uv +
    shrinkage)`` over the k most similar users v with positive similarity, where ``d_c`` is the candidate's
    deviation from the global mean in the non-personal score ``item_score_`` (the global ridge on the image
    design, else the shrunk image mean: the 0-shot prediction) and ``e_vc`` a neighbour's rating of it beyond
    its own mean and ``d_c`` (with embeddings: the mean of that over its ``image_k`` rated images nearest the
    candidate). The neighbours add to the consensus only what they agree on beyond it, so a new user's first
    references, whose neighbours are found from a handful of co-ratings, move the 0-shot ranking only as far as
    their evidence goes (with mean-centred values alone, an image no neighbour rated lost its consensus score).
    Users are compared by cosine of taste vectors (mean-centred ratings projected on image features), searched
    exactly (one product with the fitted users' taste vectors, in numpy: a few thousand users need no index);
    without features, by co-rating cosine."""

    state_schema: ClassVar[dict[str, Any]] = {
        "global_": "float",
        "user_mean_": "float[users]",
        "embedding_": ["float[images, features]", "None"],
        "consensus_": [linear_map_spec("design", "1"), "None"],
        "item_score_": "float[images]",
        "train_users_": "int[train_users] < users",
        "centred_": "sparse float[users, images]",
        "taste_": ["float[users, features]", "None"],
        "rating_basis_": ["float[images, basis]", "None"],
    }

    name = "user_knn"

    class Params(KNNParams):
        image_k: int = at_least_one(
            5, "a neighbour's rated images nearest the candidate that it is judged by"
        )
        shrinkage: float = non_negative(
            2.0, "added to the sum of neighbour similarities (shrinks the neighbours' correction toward 0)"
        )

    def _fit(self, dataset: Dataset, ratings: Ratings, split: str) -> None:
        self._prepare(dataset, ratings)
        self.train_users_ = np.flatnonzero(self.known_)
        centred = ratings.score - self.user_mean_[ratings.user_idx]
        self.centred_ = sp.csr_matrix(
            (centred, (ratings.user_idx, ratings.image_idx)), shape=(dataset.n_users, dataset.n_images)
        )
        self.taste_ = None
        self.rating_basis_ = None
        if self.embedding_ is not None:
            self.taste_ = np.zeros((dataset.n_users, self.embedding_.shape[1]), np.float32)
            for user in self.train_users_:
                rated, scores = self._rated(user)
                self.taste_[user] = self._taste_of(rated, scores - self.user_mean_[user])
        else:
            self.rating_basis_ = _rating_basis(self.centred_, TASTE_DIMENSIONS)
        self._after_load()

    def _prepare(self, dataset: Dataset, ratings: Ratings) -> None:
        """User means, the non-personalised image score (k = 0), the embeddings and each user's ratings."""
        score = ratings.score.astype(np.float64)
        self.global_ = float(score.mean())
        sums = np.bincount(ratings.user_idx, score, minlength=dataset.n_users)
        counts = np.bincount(ratings.user_idx, minlength=dataset.n_users)
        self.user_mean_ = (sums + self.mean_shrinkage * self.global_) / (counts + self.mean_shrinkage)
        self.embedding_ = (
            None if dataset.image_features is None else _unit(dataset.image_features.astype(np.float32))
        )
        # non-personalised fallback for k = 0: a global ridge on the image design, else the image mean
        design = dataset.image_design(required=False)
        self.consensus_ = None
        if design is not None:
            self.consensus_ = consensus_map(design, ratings, 3.0)
            self.item_score_ = self.consensus_.scores(design)
        else:
            isum = np.bincount(ratings.image_idx, score, minlength=dataset.n_images)
            icount = np.bincount(ratings.image_idx, minlength=dataset.n_images)
            self.item_score_ = (isum + 5.0 * self.global_) / (icount + 5.0)
        self._keep_ratings(ratings, dataset.n_users)
        self.placed_ = placed_images(dataset, ratings)
        self.n_images_ = dataset.n_images

    def _user_mean(self, scores: np.ndarray) -> float:
        return float(
            (scores.sum() + self.mean_shrinkage * self.global_) / (len(scores) + self.mean_shrinkage)
        )

    def _after_load(self) -> None:
        # the fitted users' taste vectors, contiguous for the neighbour search (kept in memory only)
        self._train_tastes = (
            None if self.taste_ is None else np.ascontiguousarray(self.taste_[self.train_users_])
        )
        if self.taste_ is None:  # co-rating similarity: which fitted user rated what, and each one's norm
            self._rated_matrix = self.centred_.copy()
            self._rated_matrix.data[:] = 1.0
            self._row_norms = np.sqrt(np.asarray(self.centred_.multiply(self.centred_).sum(1)).ravel())

    def _taste_of(self, rated: np.ndarray, centred: np.ndarray) -> np.ndarray:
        vec = (centred[:, None] * self.embedding_[rated]).mean(0)
        return (vec / max(np.linalg.norm(vec), 1e-12)).astype(np.float32)

    def _neighbours(
        self, taste: np.ndarray | None, rated: np.ndarray, centred: np.ndarray, exclude: int | None
    ):
        """(neighbour user indices, similarities) of the k most similar training users."""
        if taste is not None:
            scores = self._train_tastes @ taste  # exact inner products (float32, as the taste vectors)
            positions = np.argsort(-scores, kind="stable")[: self.k + 1]  # ties: the lower position first
            users, sims = self.train_users_[positions], scores[positions].astype(np.float64)
        else:
            row = sp.csr_matrix((centred, (np.zeros(len(rated), np.int64), rated)), shape=(1, self.n_images_))
            gram = (self.centred_ @ row.T).toarray().ravel()
            common = np.asarray(self._rated_matrix[:, rated].sum(1)).ravel()
            norms = self._row_norms * np.linalg.norm(centred)
            sims_all = gram / np.maximum(norms, 1e-12) * common / (common + self.similarity_shrinkage)
            sims_all[~self.known_] = -np.inf
            users = np.argsort(-sims_all, kind="stable")[: self.k + 1]
            sims = sims_all[users]
        keep = users != exclude if exclude is not None else np.ones(len(users), bool)
        return users[keep][: self.k], sims[keep][: self.k]

    def _neighbour_estimates(
        self, neighbour: int, candidates: np.ndarray, similar: tuple[np.ndarray, np.ndarray] | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(estimate, available) of a neighbour's rating of each candidate beyond its own mean and the image's
        deviation ``d``; ``similar`` holds the cosines of the candidates to a set of images (sorted ids) that
        includes the neighbour's rated ones."""
        rated, scores = self._rated(neighbour)
        beyond = scores - self.user_mean_[neighbour] - self._deviation(rated)
        if similar is not None:
            images, cosine = similar
            sim = cosine[:, np.searchsorted(images, rated)]
            k = min(self.image_k, len(rated))
            top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
            return beyond[top].mean(1), np.ones(len(candidates), bool)
        has = np.isin(candidates, rated)
        values = np.zeros(len(candidates))
        order = np.argsort(rated)
        values[has] = beyond[order[np.searchsorted(rated, candidates[has], sorter=order)]]
        return values, has

    def _deviation(self, images: np.ndarray) -> np.ndarray:
        """``d``: each image's non-personal score minus the global mean (what the neighbours' values are
        beyond, and what an image no neighbour rated keeps)."""
        return self.item_score_[images] - self.global_

    def _score(self, neighbours, sims, mean: float, candidates: np.ndarray) -> np.ndarray:
        num = np.zeros(len(candidates))
        den = np.full(len(candidates), float(self.shrinkage))
        used = [(n, s) for n, s in zip(neighbours.tolist(), sims.tolist(), strict=True) if s > 0]
        similar = None
        if self.embedding_ is not None and used:
            # one product of the candidates with every image the neighbours rated, rather than one per neighbour
            images = np.unique(np.concatenate([self._rated(n)[0] for n, _ in used]))
            similar = images, self.embedding_[candidates] @ self.embedding_[images].T
        for neighbour, sim in used:
            estimate, has = self._neighbour_estimates(neighbour, candidates, similar)
            num += sim * estimate * has
            den += sim * has
        return mean + self._deviation(candidates) + num / den

    def _predict(self, user_idx: np.ndarray, image_idx: np.ndarray) -> np.ndarray:
        out = np.empty(len(user_idx))
        for user, rows in group_by(user_idx):
            rated, scores = self._rated(user)
            mean = self.user_mean_[user]
            taste = None if self.taste_ is None else self.taste_[user]
            neighbours, sims = self._neighbours(taste, rated, scores - mean, exclude=user)
            out[rows] = self._score(neighbours, sims, mean, image_idx[rows])
        return out

    def _predict_new(self, references: list[References], images: list[np.ndarray]) -> list[np.ndarray]:
        out = []
        for refs, candidates in zip(references, images, strict=True):
            scores = np.asarray(refs.score, np.float64)
            rated = np.asarray(refs.image_idx, np.int64)
            if len(rated) == 0:
                out.append(self.item_score_[candidates].copy())
                continue
            mean = self._user_mean(scores)
            taste = None if self.taste_ is None else self._taste_of(rated, scores - mean)
            neighbours, sims = self._neighbours(taste, rated, scores - mean, exclude=None)
            out.append(self._score(neighbours, sims, mean, candidates))
        return out

    def _new_image_state(self, inputs: ImageInputs) -> dict:
        if self.embedding_ is None:
            raise NewImagesNotSupported(
                "user_knn on data without image features judges a neighbour by its ratings of the very candidate, "
                "which a new image has none of; embed the data's images (--encoder NAME)"
            )
        return {
            "embedding_": append_rows(self.embedding_, _unit(inputs.features.astype(np.float32))),
            "item_score_": append_rows(self.item_score_, self.consensus_.scores(inputs.design())),
            "placed_": append_rows(self.placed_, np.ones(len(inputs), bool)),
        }

    def _user_vectors(self) -> np.ndarray:
        if self.taste_ is not None:
            return self.taste_.copy()
        return _unit(np.asarray(self.centred_ @ self.rating_basis_, np.float32))

    def _fold(self, references: list[References]) -> np.ndarray:
        """Taste vectors (float32, n x d) of new users from their references (zeros without references).

        With image features: the references' centred scores projected on the features. Without: the centred
        rating row projected on the fitted users' top right singular vectors, so that cosines approximate the
        co-rating cosine the neighbour search uses."""
        dims = self.taste_.shape[1] if self.taste_ is not None else self.rating_basis_.shape[1]
        out = np.zeros((len(references), dims), np.float32)
        for row, refs in enumerate(references):
            if len(refs):
                scores = np.asarray(refs.score, np.float64)
                rated, centred = np.asarray(refs.image_idx, np.int64), scores - self._user_mean(scores)
                if self.taste_ is not None:
                    out[row] = self._taste_of(rated, centred)
                else:
                    out[row] = _unit((centred @ self.rating_basis_[rated])[None, :])[0]
        return out
