"""PAL-B: a mixture of ideal points over frozen image features (PAL, Chen et al., ICLR 2025), on choices.

r_u(i) = sum_k w_uk * (-||f(x_i) - p_k||^2),  w_u = softmax(alpha_u),  P(a chosen over b) = sigmoid(r_u(a) - r_u(b))

* f: a linear map of the frozen image features into ``dim`` dimensions; p_1..p_K: ``n_prototypes`` ideal points
  shared by everyone (each a preference model: nearer is better); alpha_u: a user's mixture logits.
* Trained with the Bradley-Terry loss on the training choices (a tie counts half for each side), Adam, early
  stopping on the validation choices (``val_seen``). On ratings it learns from choices made of them: pairs of one
  user's ratings with different scores, the higher one chosen; its scores are then mapped to the rating scale by
  one affine fit on the training ratings (choice probabilities then follow those scores, as for every model:
  ``Model.predict_choices``).
* New images: their rewards from their features, through f and the ideal points (``with_new_images``).
* New users: only their mixture logits are fitted, to their reference choices (or ratings made into choices), by
  MAP with a Gaussian prior at 0 (the population's even mixture), f and the ideal points frozen; with no
  reference they get the even mixture.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from recsys.data.choices import ChoiceReferences, Choices
from recsys.data.dataset import Dataset, Ratings, References
from recsys.data.encodings import ImageInputs
from recsys.models.base import Model, append_rows
from recsys.models.params import at_least_one, non_negative
from recsys.models.torch_utils import (
    TrainParams,
    choose_device,
    deterministic_algorithms,
    fit_module,
    seed_everything,
)


class _PalNet(nn.Module):
    def __init__(self, n_features: int, n_users: int, dim: int, n_prototypes: int):
        super().__init__()
        self.project = nn.Linear(n_features, dim, bias=False)
        self.points = nn.Parameter(torch.randn(n_prototypes, dim) * 0.5)
        self.logits = nn.Embedding(n_users, n_prototypes)
        nn.init.zeros_(self.logits.weight)

    def distances(self, features: torch.Tensor) -> torch.Tensor:
        """-||f(x) - p_k||^2 of every image and ideal point (n x K): each ideal point's reward."""
        return -torch.cdist(self.project(features), self.points).pow(2)

    @staticmethod
    def reward(rewards: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return (torch.softmax(logits, -1) * rewards).sum(-1)


def _bradley_terry(diff: torch.Tensor, choice: torch.Tensor) -> torch.Tensor:
    """Mean logistic loss of reward differences ``diff`` (a minus b) for outcomes ``choice`` (1 a, 0 b, 0.5 tie)."""
    return (choice * nn.functional.softplus(-diff) + (1 - choice) * nn.functional.softplus(diff)).mean()


def pairs_from_ratings(ratings: Ratings, per_rating: int, seed: int) -> Choices:
    """Choices made of ratings: for each rating, ``per_rating`` random other ratings of the same user with a
    different score; the higher-rated image is the chosen one."""
    rng = np.random.default_rng(seed)
    parts = []
    for user, rows in ratings.by_user():
        if len(rows) < 2:
            continue
        a = np.repeat(rows, per_rating)
        b = rows[rng.integers(0, len(rows), len(a))]
        keep = ratings.score[a] != ratings.score[b]
        a, b = a[keep], b[keep]
        choice = (ratings.score[a] > ratings.score[b]).astype(np.float32)
        parts.append(
            Choices(np.full(len(a), user, np.int64), ratings.image_idx[a], ratings.image_idx[b], choice)
        )
    return Choices.concat(parts)


class PalB(Model):
    """PAL-B: each user a mixture of shared ideal points over frozen image features, learned from choices."""

    state_schema: ClassVar[dict[str, Any]] = {
        "features_": "float[images, inputs]",
        "history_": "dict",
        "net_": "module",
        "scale_": "float[2]",
    }

    name = "pal"
    learns_from = (Ratings, Choices)

    class Params(TrainParams):
        dim: int = at_least_one(16, "dimensions of the projected image features")
        n_prototypes: int = at_least_one(8, "shared ideal points (preference models)")
        user_reg: float = non_negative(0.1, "L2 weight on the users' mixture logits")
        pairs_per_rating: int = at_least_one(4, "choices made of each rating (on rating data)")
        batch_size: int = at_least_one(4096, "choices per batch")
        epochs: int = at_least_one(60, "maximum training epochs")
        lr: float = non_negative(0.01, "Adam learning rate")
        patience: int = at_least_one(5, "epochs without validation improvement before stopping")
        foldin_steps: int = at_least_one(100, "gradient steps fitting a new user's mixture logits")
        foldin_reg: float = non_negative(1.0, "Gaussian prior weight on a new user's mixture logits")

    def _build_module(self, key: str, state: dict) -> _PalNet:
        return _PalNet(state["features_"].shape[1], len(state["known_"]), self.dim, self.n_prototypes)

    # ------------------------------------------------------------------ fitting
    def _fit(self, dataset: Dataset, data: Ratings | Choices, split: str) -> None:
        generator = seed_everything(self.seed)
        device = choose_device(self.device)
        self.features_ = dataset.image_inputs()
        on_ratings = isinstance(data, Ratings)
        pairs = pairs_from_ratings(data, self.pairs_per_rating, self.seed) if on_ratings else data
        net = _PalNet(self.features_.shape[1], dataset.n_users, self.dim, self.n_prototypes).to(device)
        features = torch.as_tensor(self.features_, device=device)
        t = {
            name: torch.as_tensor(getattr(pairs, name), device=device)
            for name in ("user_idx", "image_a", "image_b", "choice")
        }
        n_batches = max(1, -(-len(pairs) // self.batch_size))
        order = {}

        def loss_of(users, a, b, choice) -> torch.Tensor:
            rewards = net.distances(features)
            logits = net.logits(users)
            diff = net.reward(rewards[a], logits) - net.reward(rewards[b], logits)
            return _bradley_terry(diff, choice)

        def shuffle() -> None:
            net.train()
            order["perm"] = torch.randperm(len(pairs), generator=generator).to(device)

        def step(batch: int) -> torch.Tensor:
            idx = order["perm"][batch * self.batch_size : (batch + 1) * self.batch_size]
            users = t["user_idx"][idx]
            penalty = net.logits(users).pow(2).sum(-1).mean()
            return (
                loss_of(users, t["image_a"][idx], t["image_b"][idx], t["choice"][idx])
                + self.user_reg * penalty
            )

        validate = None
        held = self._validation_pairs(dataset, split, on_ratings)
        if held is not None and len(held):
            v = [
                torch.as_tensor(x, device=device)
                for x in (held.user_idx, held.image_a, held.image_b, held.choice)
            ]

            def validate() -> float:
                net.eval()
                with torch.no_grad():
                    return float(loss_of(*v))

        with deterministic_algorithms():  # the gradients of the gathers are scatter-adds
            fit_module(self, net, step, n_batches, validate, shuffle)
        self._after_load()
        self.scale_ = np.array([0.0, 1.0])  # choices: rewards as they are
        if on_ratings:  # one affine map of rewards to the rating scale, on the training ratings
            reward = self._predict(data.user_idx, data.image_idx)
            slope, intercept = np.polyfit(reward, data.score.astype(np.float64), 1)
            self.scale_ = np.array([intercept, slope])

    def _validation_pairs(self, dataset: Dataset, split: str, on_ratings: bool) -> Choices | None:
        """The policy's validation split as choices (made of its ratings on rating data), fitted users only."""
        if on_ratings:
            held = self._validation(dataset, split)
            held = None if held is None else pairs_from_ratings(held, self.pairs_per_rating, self.seed + 1)
        else:
            held = self._validation(dataset, split, Choices)
        return None if held is None else held.subset(self.known_[held.user_idx])

    def _after_load(self) -> None:
        with torch.no_grad():
            self._rewards = self.net_.distances(torch.as_tensor(self.features_)).double().numpy()
            self._weights = torch.softmax(self.net_.logits.weight, -1).double().numpy()

    def _new_image_state(self, inputs: ImageInputs) -> dict:
        """New images' features and their rewards: the distances of their projections to the ideal points."""
        features = inputs.inputs()
        with torch.no_grad():
            rewards = self.net_.distances(torch.as_tensor(features)).double().numpy()
        return {
            "features_": append_rows(self.features_, features),
            "_rewards": append_rows(self._rewards, rewards),
        }

    # ------------------------------------------------------------------ scoring
    def _predict(self, user_idx: np.ndarray, image_idx: np.ndarray) -> np.ndarray:
        reward = (self._rewards[image_idx] * self._weights[user_idx]).sum(-1)
        return self.scale_[0] + self.scale_[1] * reward

    def _fold(self, references: list[References]) -> np.ndarray:
        """Mixture logits (n x K) of new users from reference ratings, made into choices."""
        made = []
        for refs in references:
            r = Ratings(
                np.zeros(len(refs), np.int64),
                np.asarray(refs.image_idx, np.int64),
                np.asarray(refs.score, np.float32),
            )
            p = pairs_from_ratings(r, max(len(refs) - 1, 1), self.seed)
            made.append(ChoiceReferences(refs.user_idx, p.image_a, p.image_b, p.choice))
        return self._fold_choices(made)

    def _fold_choices(self, references: list[ChoiceReferences]) -> np.ndarray:
        """Mixture logits (n x K) fitted to each new user's reference choices (MAP, prior at 0)."""
        logits = torch.zeros(len(references), self.n_prototypes, requires_grad=True)
        rewards = torch.as_tensor(self._rewards, dtype=torch.float32)
        rows, a, b, choice = [], [], [], []
        for row, refs in enumerate(references):
            rows += [row] * len(refs)
            a.append(np.asarray(refs.image_a, np.int64))
            b.append(np.asarray(refs.image_b, np.int64))
            choice.append(np.asarray(refs.choice, np.float32))
        if not rows:
            return logits.detach().numpy()
        rows = torch.as_tensor(rows)
        gap = rewards[torch.as_tensor(np.concatenate(a))] - rewards[torch.as_tensor(np.concatenate(b))]
        choice = torch.as_tensor(np.concatenate(choice))
        optimiser = torch.optim.Adam([logits], lr=0.1)
        counts = torch.bincount(rows, minlength=len(references)).clamp(min=1).float()
        with torch.enable_grad():
            for _ in range(self.foldin_steps):
                optimiser.zero_grad()
                diff = (torch.softmax(logits[rows], -1) * gap).sum(-1)
                nll = choice * nn.functional.softplus(-diff) + (1 - choice) * nn.functional.softplus(diff)
                per_user = torch.zeros(len(references)).index_add(0, rows, nll) / counts
                loss = per_user.sum() + self.foldin_reg * logits.pow(2).sum() / len(references)
                loss.backward()
                optimiser.step()
        return logits.detach().numpy()

    @staticmethod
    def _softmax(logits: np.ndarray) -> np.ndarray:
        e = np.exp(logits - logits.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    def _score_folded(self, states: np.ndarray, images: list[np.ndarray]) -> list[np.ndarray]:
        weights = self._softmax(np.asarray(states, np.float64))
        return [
            self.scale_[0] + self.scale_[1] * (self._rewards[i] @ w)
            for w, i in zip(weights, images, strict=True)
        ]

    def _user_vectors(self) -> np.ndarray:
        """Mixture weights over the ideal points (n_users x K); the even mixture for users not fitted."""
        return np.where(self.known_[:, None], self._weights, 1.0 / self.n_prototypes)

    def _taste(self, states: np.ndarray) -> np.ndarray:
        return self._softmax(np.asarray(states, np.float64))
