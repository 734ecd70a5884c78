"""Biased matrix factorisation for explicit scores, fitted by alternating least squares in numpy.

``score = mu + b_u + b_i + p_u . q_i``. Each half-epoch solves every user's (then every image's) ridge
subproblem in one batch. The factor penalty of a user or image is ``reg + reg_per_rating * n_ratings``
(weighted-lambda regularisation, which carries over between rating tables of different noise levels better
than either term alone); biases get ``bias_reg``. Item parameters ``[b_i, q_i]`` are shrunk toward a ridge
map from the image design (features + metadata one-hots), refitted each epoch, so images absent from the fit
(PAMELA's ``*_seen`` splits) get ``[b_i, q_i]`` from their features; without features or metadata they get
the mean ``[b_i, q_i]`` of the fitted images (the average image; ``placeable`` is False). Early stopping on ``val_seen`` RMSE
when present. New users: fold-in of ``[p, b_u]`` from their references, toward a demographic prior (k = 0:
the prior). Predictions are clipped to the dataset's score range. New images get ``[b_i, q_i]`` from the map
of the epoch kept (``item_map_``), as the images absent from the fit did.

On choices (no ratings) the same scores ``b_i + p_u . q_i`` (``mu`` and ``b_u`` cancel in a choice) are fitted
with the Bradley-Terry loss on score differences by Adam, full batch: ``[q_i, b_i]`` is the ridge map of the
image design plus a penalised offset for each image in the fit; early stopping on ``val_seen`` choices. A new
user's ``p`` is the MAP of the Bradley-Terry likelihood of their reference choices under a Gaussian prior at 0,
by Newton steps.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from recsys.data import encodings
from recsys.data.choices import ChoiceReferences, Choices
from recsys.data.dataset import Dataset, Ratings
from recsys.extras import require
from recsys.models.biases import clip_scores
from recsys.models.factor import FactorModel, FoldIn, ImageMap, average_image, build_fold_in
from recsys.models.linear import LinearMap
from recsys.models.params import DataSizes, Hyperparameters, at_least_one, hyper, non_negative, positive

#: on choices: Adam's learning rate, full-batch steps per epoch, and Newton steps of a new user's fit
CHOICE_LR = 0.05
CHOICE_STEPS_PER_EPOCH = 10
CHOICE_NEWTON_STEPS = 8


class Groups:
    """The ratings of each user (or image), contiguous: ``order`` sorts the ratings by group and group ``g``
    (id ``ids[g]``) holds ``order[bounds[g]:bounds[g + 1]]``."""

    def __init__(self, index: np.ndarray):
        self.order = np.argsort(index, kind="stable")
        self.ids, starts = np.unique(index[self.order], return_index=True)
        self.bounds = np.r_[starts, len(index)]
        self.counts = np.diff(self.bounds)


def als_solve(
    groups: Groups, x: np.ndarray, y: np.ndarray, penalty: np.ndarray, prior: np.ndarray
) -> np.ndarray:
    """The ALS subproblems of every group at once: row g is ``argmin_v |y_g - x_g v|^2 + sum(penalty *
    (v - prior_g)^2)`` over the ratings of group g. ``x`` (n, d) and ``y`` (n,) are aligned to the ratings,
    ``penalty`` and ``prior`` (n_groups, d) or (d,). Returns (n_groups, d)."""
    d = x.shape[1]
    xs, ys = x[groups.order], y[groups.order]
    gram = np.empty((len(groups.ids), d, d))
    rhs = np.empty((len(groups.ids), d))
    for g, (lo, hi) in enumerate(zip(groups.bounds[:-1].tolist(), groups.bounds[1:].tolist(), strict=True)):
        gram[g] = xs[lo:hi].T @ xs[lo:hi]
        rhs[g] = ys[lo:hi] @ xs[lo:hi]
    diagonal = np.arange(d)
    gram[:, diagonal, diagonal] += penalty
    return np.linalg.solve(gram, (rhs + penalty * prior)[..., None])[..., 0]


class MatrixFactorization(FactorModel):
    """Biased MF by ALS with a feature prior on items (see the module docstring)."""

    state_schema: ClassVar[dict[str, Any]] = {"score_range_": "float~[2]", "history_": "list[float~]"}

    name = "mf"
    learns_from = (Ratings, Choices)

    class Params(Hyperparameters):
        factors: int = at_least_one(16, "latent dimensions")
        reg: float = positive(3.0, "L2 penalty on user and item factors")
        reg_per_rating: float = non_negative(
            0.07, "added to reg for each rating of the user or image (weighted-lambda regularisation)"
        )
        bias_reg: float = positive(5.0, "L2 penalty on user and item biases")
        feature_alpha: float = positive(10.0, "ridge penalty of the image-design -> [bias, factors] map")
        epochs: int = at_least_one(20, "maximum ALS epochs")
        patience: int = at_least_one(3, "epochs without val_seen improvement before stopping")
        demo_alpha: float = positive(10.0, "ridge penalty of the demographics -> user prior map")
        seed: int = hyper(0, doc="seed of the factor initialisation")

        def memory_bytes(self, sizes: DataSizes) -> int:
            # each half-epoch holds a (factors + 1)^2 normal-equation matrix per user (or image) and the
            # solver's copy of them, and the rated rows' factors (three copies)
            gram = 2 * 8 * max(sizes.users, sizes.images) * (self.factors + 1) ** 2
            rows = 3 * 8 * sizes.ratings * (self.factors + 1)
            return super().memory_bytes(sizes) + gram + rows

    def _fit(self, dataset: Dataset, data: Ratings | Choices, split: str) -> None:
        if isinstance(data, Choices):
            self._fit_choices(dataset, data, split)
            return
        ratings = data
        rng = np.random.default_rng(self.seed)
        self.score_range_ = np.asarray(dataset.score_range, np.float64)
        k = self.factors
        design = dataset.image_design(required=False)
        mu = float(ratings.score.mean())
        y = ratings.score.astype(np.float64) - mu
        users = np.zeros((dataset.n_users, k + 1))  # [p_u, b_u]
        items = np.zeros((dataset.n_images, k + 1))  # [q_i, b_i]
        items[:, :k] = rng.normal(0.0, 0.1, (dataset.n_images, k))
        by_user, by_item = Groups(ratings.user_idx), Groups(ratings.image_idx)
        ones = np.ones((len(ratings), 1))
        fitted = np.zeros(dataset.n_images, dtype=bool)
        fitted[ratings.image_idx] = True
        item_prior = np.zeros_like(items)
        user_penalty, item_penalty = self._penalty(by_user.counts), self._penalty(by_item.counts)
        image_map = ImageMap(design, self.feature_alpha)
        val = self._validation(dataset, split)
        if val is not None and not self.known_[val.user_idx].all():
            val = None
        if val is not None and design is None and not fitted[val.image_idx].all():
            val = None
        best, best_rmse, since_best = None, np.inf, 0
        self.history_ = []
        for _ in range(self.epochs):
            # users: x = [q_i, 1], target r - mu - b_i
            x = np.hstack([items[ratings.image_idx, :k], ones])
            users[by_user.ids] = als_solve(by_user, x, y - items[ratings.image_idx, k], user_penalty, 0.0)
            # items: x = [p_u, 1], target r - mu - b_u, shrunk toward the feature map's prediction
            x = np.hstack([users[ratings.user_idx, :k], ones])
            target = y - users[ratings.user_idx, k]
            items[by_item.ids] = als_solve(by_item, x, target, item_penalty, item_prior[by_item.ids])
            if design is not None:
                train_images = np.flatnonzero(fitted)
                image_map.fit(train_images, items[train_images])
                item_prior = image_map.predict()
            completed = np.where(fitted[:, None], items, item_prior)
            improved = True
            if val is not None:
                pred = mu + self._raw(users, completed, val.user_idx, val.image_idx)
                rmse = float(np.sqrt(np.mean((pred - val.score) ** 2)))
                self.history_.append(rmse)
                improved = rmse < best_rmse - 1e-5
                best_rmse, since_best = (rmse, 0) if improved else (best_rmse, since_best + 1)
                if since_best >= self.patience:
                    break
            if improved:  # the epoch's factors, and the feature map that gave the unfitted images theirs
                best = (users.copy(), completed.copy(), image_map.linear() if design is not None else None)
        users, items, self.item_map_ = best
        self.scorable_ = np.ones(dataset.n_images, dtype=bool) if design is not None else fitted
        items = average_image(items, self.scorable_)
        self.fold_, self.user_vecs_ = build_fold_in(
            dataset,
            ratings,
            items[:, :k],
            items[:, k],
            users[:, :k],
            mu,
            1.0,
            user_offset_shrinkage=0.0,
            demo_alpha=self.demo_alpha,
            user_offset=users[:, k],
        )

    def _predict(self, user_idx: np.ndarray, image_idx: np.ndarray) -> np.ndarray:
        return clip_scores(super()._predict(user_idx, image_idx), self.score_range_)

    def _score_folded(self, states: list[np.ndarray], images: list[np.ndarray]) -> list[np.ndarray]:
        return [clip_scores(s, self.score_range_) for s in super()._score_folded(states, images)]

    # ------------------------------------------------------------------ choices
    def _fit_choices(self, dataset: Dataset, pairs: Choices, split: str) -> None:
        """Bradley-Terry fit of ``b_i + p_u . q_i`` on choices (module docstring). The result is stored as the
        rating fit's is (``fold_``, ``user_vecs_``) with no calibration (a = 0, b = 1), no user offsets and an
        unbounded score range, so that scoring and taste vectors are the same code for both kinds of data."""
        require("deep", f"{self.name} on pairwise choices")
        import torch

        from recsys.models.torch_utils import deterministic_algorithms, seed_everything

        seed_everything(self.seed)
        # Dataset.image_design()'s design (metadata weight 0.5) made in float32: its values, half its memory
        design = encodings.image_design(dataset.image_features, dataset.metadata(), 0.5, np.float32)
        x = torch.from_numpy(np.zeros((dataset.n_images, 0), np.float32) if design is None else design)
        k, n = self.factors, len(pairs)
        counts = np.bincount(np.concatenate([pairs.image_a, pairs.image_b]), minlength=dataset.n_images)
        users = torch.nn.Parameter(torch.randn(dataset.n_users, k) * 0.1)
        image_map = torch.nn.Parameter(torch.zeros(x.shape[1], k + 1))
        offsets = torch.nn.Parameter(torch.randn(dataset.n_images, k + 1) * 0.01)
        in_fit = torch.as_tensor(counts > 0, dtype=torch.float32)[:, None]
        penalty = torch.as_tensor(self.reg + self.reg_per_rating * counts, dtype=torch.float32)[:, None]
        t = [torch.as_tensor(v) for v in (pairs.user_idx, pairs.image_a, pairs.image_b, pairs.choice)]
        held = self._validation(dataset, split, Choices)
        held = None if held is None else held.subset(self.known_[held.user_idx])
        v = (
            None
            if held is None
            else [torch.as_tensor(a) for a in (held.user_idx, held.image_a, held.image_b, held.choice)]
        )

        def items() -> torch.Tensor:
            return x @ image_map + offsets * in_fit

        def nll(rows, table) -> torch.Tensor:
            u, a, b, c = rows
            diff = table[a, -1] - table[b, -1] + (users[u] * (table[a, :-1] - table[b, :-1])).sum(-1)
            return (
                c * torch.nn.functional.softplus(-diff) + (1 - c) * torch.nn.functional.softplus(diff)
            ).mean()

        optimiser = torch.optim.Adam([users, image_map, offsets], lr=CHOICE_LR)
        best, best_loss, since = None, np.inf, 0
        self.history_ = []
        with deterministic_algorithms():
            for _ in range(self.epochs * CHOICE_STEPS_PER_EPOCH):
                optimiser.zero_grad()
                table = items()
                loss = nll(t, table) + (
                    (users.pow(2).sum() * self.reg + (penalty * offsets.pow(2) * in_fit).sum()) / n
                    + self.feature_alpha * image_map.pow(2).sum() / n
                )
                loss.backward()
                optimiser.step()
                if v is None:
                    continue
                with torch.no_grad():
                    val = float(nll(v, items()))
                self.history_.append(val)
                if val < best_loss - 1e-5:
                    best, best_loss, since = [p.detach().clone() for p in (users, items(), image_map)], val, 0
                elif (since := since + 1) >= self.patience * CHOICE_STEPS_PER_EPOCH:
                    break
        with torch.no_grad():
            best = best or [p.detach().clone() for p in (users, items(), image_map)]
        users, items, weights = (b.double().numpy() for b in best)
        # a new image's [q_i, b_i] is its design row times the map (it has no offset of its own)
        self.item_map_ = LinearMap(weights, np.zeros(k + 1)) if x.shape[1] else None
        self.score_range_ = np.array([-np.inf, np.inf])  # choice scores are differences, not ratings
        self.scorable_ = np.ones(dataset.n_images, dtype=bool)  # every image has a design row (or zeros)
        no_prior = np.zeros((dataset.n_users + 1, k + 1))  # a new user's p starts at 0 (``_fold_choice``)
        self.fold_ = FoldIn(items[:, :k], items[:, k], 0.0, 1.0, no_prior, np.full(k + 1, float(self.reg)))
        self.user_vecs_ = np.hstack([users, np.zeros((dataset.n_users, 1))])

    def _fold_choices(self, references: list[ChoiceReferences]) -> list[np.ndarray]:
        if self.fitted_on_ == "choices":
            return [self._fold_choice(r) for r in references]
        return super()._fold_choices(references)

    def _fold_choice(self, refs: ChoiceReferences) -> np.ndarray:
        """A new user's ``[p, 0]``: p the MAP of the Bradley-Terry likelihood of its reference choices under the
        prior N(0, 1 / reg)."""
        p = np.zeros(self.factors)
        if len(refs):
            a, b = np.asarray(refs.image_a, np.int64), np.asarray(refs.image_b, np.int64)
            q, offset = self.fold_.item_vecs, self.fold_.item_offset
            d, gap = q[a] - q[b], offset[a] - offset[b]
            c = np.asarray(refs.choice, np.float64)
            for _ in range(CHOICE_NEWTON_STEPS):
                prob = 1.0 / (1.0 + np.exp(-(gap + d @ p)))
                grad = d.T @ (prob - c) + self.reg * p
                hess = (d * (prob * (1 - prob))[:, None]).T @ d + self.reg * np.eye(self.factors)
                p = p - np.linalg.solve(hess, grad)
        return np.append(p, 0.0)

    def _penalty(self, counts: np.ndarray) -> np.ndarray:
        """Ridge penalties (n_groups, factors + 1) of users or images with ``counts`` ratings: ``reg +
        reg_per_rating * count`` on the factors (weighted-lambda), ``bias_reg`` on the bias."""
        factors = np.repeat((self.reg + self.reg_per_rating * counts)[:, None], self.factors, axis=1)
        return np.hstack([factors, np.full((len(counts), 1), self.bias_reg)])

    @staticmethod
    def _raw(users: np.ndarray, items: np.ndarray, user_idx: np.ndarray, image_idx: np.ndarray) -> np.ndarray:
        u, i = users[user_idx], items[image_idx]
        return np.einsum("ij,ij->i", u[:, :-1], i[:, :-1]) + u[:, -1] + i[:, -1]
