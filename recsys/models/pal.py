"""PAL (Chen et al., ICLR 2025, "PAL: Pluralistic Alignment Framework"): two reward models over frozen image
features, learned from choices with the Bradley-Terry loss. Both give each user u mixture weights
w_u = softmax(alpha_u) over K shared prototypes and differ in how a mixture makes a reward.

* ``pal`` (``PalB``), PAL-B as published: r_u(x, y) = s * cos(f(y), sum_k w_uk g_k(x)). f is an MLP projector of
  the image's features, g_1..g_K are MLP projectors of the prompt x (the K prototypes, conditioned on the prompt),
  s = exp(logit scale) is learned (capped at 100). The prompt x of an image is its row of
  ``Dataset.prompt_features`` (read from ``X.text.npz`` beside the image features ``X.npz``; the Pick-a-Pic
  simulator writes one). Data without prompt embeddings give every image one constant prompt: the prototypes are
  then K learned points (each g_k of that constant), the same for every prompt; conditioning on nothing, as the
  paper's model would with an empty prompt.
* ``pal_a`` (``PalA``), PAL-A, a mixture of ideal points: r_u(y) = sum_k w_uk * (-||f(y) - p_k||^2) with f linear
  and p_1..p_K free ideal points. Sum_k w_k(-||f - p_k||^2) ranks any two images exactly as
  -||f - sum_k w_k p_k||^2 does (the terms in ||p_k||^2 cancel in a difference), so each user is one ideal point,
  the weighted mean of the prototypes.

Shared by both:

* P(a chosen over b) = sigmoid(r_u(a) - r_u(b)); a tie counts half for each side. Adam, early stopping on the
  validation choices (``val_seen``), an L2 weight ``user_reg`` on the users' mixture logits. On ratings they learn
  from choices made of them (pairs of one user's ratings with different scores, the higher one chosen); their
  scores are then mapped to the rating scale by one affine fit on the training ratings (choice probabilities then
  follow those scores, as for every model: ``Model.predict_choices``).
* New images: their rewards from their features through f (``with_new_images``).
* New users: only their mixture logits are fitted, everything else frozen, by MAP under the population prior: a
  Gaussian per prototype whose mean is the log of the fitted users' mean mixture weights (centred) and whose
  spread is that of the fitted users' centred logits around it. With no reference a new user gets the prior mean,
  i.e. the population's mean mixture; each reference choice adds its Bradley-Terry log likelihood, so one choice
  moves a user only as far as the population's spread allows. Each user's fit depends on their own references
  only (the same whether folded alone or with others).
"""

from __future__ import annotations

import math
from collections.abc import Callable
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

#: the least spread of a prototype's logit in the population prior (a population that agrees on a prototype
#: must still let a new user's references move it a little)
MIN_PRIOR_SPREAD = 0.05
#: the least mean weight whose log is a prior mean (a prototype nobody uses gets a finite, very low prior)
MIN_PRIOR_WEIGHT = 1e-4
#: the largest reward scale of PAL-B's cosine link, as published
MAX_LOGIT_SCALE = 100.0


def _bradley_terry(diff: torch.Tensor, choice: torch.Tensor) -> torch.Tensor:
    """Logistic loss of reward differences ``diff`` (a minus b) for outcomes ``choice`` (1 a, 0 b, 0.5 tie)."""
    return choice * nn.functional.softplus(-diff) + (1 - choice) * nn.functional.softplus(diff)


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


def population_prior(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, spread) per prototype of the Gaussian prior on a new user's mixture logits, from fitted users' logits
    (n x K): the mean is the centred log of their mean mixture weights (its softmax is that mean mixture), the
    spread the root mean square of their centred logits around it (at least ``MIN_PRIOR_SPREAD``)."""
    logits = np.asarray(logits, np.float64)
    k = logits.shape[1]
    if not len(logits):
        return np.zeros(k), np.ones(k)
    weights = _softmax(logits).mean(0)
    mean = np.log(np.maximum(weights, MIN_PRIOR_WEIGHT))
    mean -= mean.mean()
    centred = logits - logits.mean(-1, keepdims=True)
    spread = np.sqrt(((centred - mean) ** 2).mean(0))
    return mean, np.maximum(spread, MIN_PRIOR_SPREAD)


def _softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


class _PalANet(nn.Module):
    """PAL-A: a linear projection f and K free ideal points; users' mixture logits."""

    def __init__(self, n_features: int, n_users: int, dim: int, n_prototypes: int):
        super().__init__()
        self.project = nn.Linear(n_features, dim, bias=False)
        self.points = nn.Parameter(torch.randn(n_prototypes, dim) * 0.5)
        self.logits = nn.Embedding(n_users, n_prototypes)
        nn.init.zeros_(self.logits.weight)

    def distances(self, features: torch.Tensor) -> torch.Tensor:
        """-||f(x) - p_k||^2 of every image and ideal point (n x K): each ideal point's reward."""
        return -torch.cdist(self.project(features), self.points).pow(2)

    def diff(self, features: torch.Tensor, users, a, b) -> torch.Tensor:
        """r_u(a) - r_u(b) of some choices."""
        rewards = self.distances(features)
        weights = torch.softmax(self.logits(users), -1)
        return (weights * (rewards[a] - rewards[b])).sum(-1)


def _mlp(n_in: int, hidden: int, n_out: int) -> nn.Sequential:
    """A projector: two linear layers with a GELU between (the paper's two-layer MLP projector)."""
    return nn.Sequential(nn.Linear(n_in, hidden), nn.GELU(), nn.Linear(hidden, n_out))


class _PalBNet(nn.Module):
    """PAL-B: the item projector f, K prompt projectors g_k, users' mixture logits and the learned logit scale."""

    def __init__(
        self, n_features: int, n_prompt: int, n_users: int, dim: int, hidden: int, n_prototypes: int
    ):
        super().__init__()
        self.project_item = _mlp(n_features, hidden, dim)
        self.project_prompt = nn.ModuleList(_mlp(n_prompt, hidden, dim) for _ in range(n_prototypes))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.logits = nn.Embedding(n_users, n_prototypes)
        nn.init.zeros_(self.logits.weight)

    def items(self, features: torch.Tensor) -> torch.Tensor:
        """f(y) / ||f(y)||: the images in the preference space, unit length (n x dim)."""
        return nn.functional.normalize(self.project_item(features), dim=-1)

    def prototypes(self, prompts: torch.Tensor) -> torch.Tensor:
        """g_k(x) of each prompt and prototype (n x K x dim)."""
        return torch.stack([g(prompts) for g in self.project_prompt], 1)

    def scale(self) -> torch.Tensor:
        return self.logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)

    @staticmethod
    def preference(weights: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        """sum_k w_k g_k(x) / its norm: a user's preference for a prompt, unit length (n x dim)."""
        return nn.functional.normalize((weights.unsqueeze(-1) * prototypes).sum(-2), dim=-1)

    def diff(self, features: torch.Tensor, prompts: torch.Tensor, users, a, b) -> torch.Tensor:
        """r_u(x, a) - r_u(x, b) of some choices (``prompts``: one row each)."""
        preference = self.preference(torch.softmax(self.logits(users), -1), self.prototypes(prompts))
        return self.scale() * (preference * (self.items(features[a]) - self.items(features[b]))).sum(-1)


class _Pal(Model):
    """What PAL-A and PAL-B share: the fit on choices or ratings, and new users' MAP mixture logits."""

    state_schema: ClassVar[dict[str, Any]] = {
        "features_": "float[images, inputs]",
        "history_": "dict",
        "net_": "module",
        "scale_": "float[2]",
        "prior_mean_": "float[n_prototypes]",
        "prior_spread_": "float[n_prototypes]",
    }
    learns_from = (Ratings, Choices)

    class Params(TrainParams):
        n_prototypes: int = at_least_one(8, "shared prototypes (preference models)")
        user_reg: float = non_negative(0.1, "L2 weight on the users' mixture logits")
        pairs_per_rating: int = at_least_one(4, "choices made of each rating (on rating data)")
        batch_size: int = at_least_one(4096, "choices per batch")
        epochs: int = at_least_one(60, "maximum training epochs")
        lr: float = non_negative(0.01, "Adam learning rate")
        patience: int = at_least_one(5, "epochs without validation improvement before stopping")
        foldin_steps: int = at_least_one(100, "gradient steps fitting a new user's mixture logits")
        foldin_reg: float = non_negative(
            1.0, "weight of the population prior on a new user's mixture logits (1: the prior as fitted)"
        )

    # ------------------------------------------------------------------ what each variant writes
    def _make_net(self, dataset: Dataset) -> nn.Module:
        raise NotImplementedError

    def _batch_diff(self, net: nn.Module, features: torch.Tensor, users, a, b) -> torch.Tensor:
        raise NotImplementedError

    def _fold_diff(self, a: torch.Tensor, b: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """For choices (a, b) of new users, a function of mixture weights (one row per choice) giving
        r(a) - r(b); what does not depend on the weights is gathered once, before the fit's steps."""
        raise NotImplementedError

    def _rewards_of(self, weights: np.ndarray, images: np.ndarray) -> np.ndarray:
        """Rewards (before the rating scale) of one user with mixture ``weights`` (K,) for ``images``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ fitting
    def _fit(self, dataset: Dataset, data: Ratings | Choices, split: str) -> None:
        generator = seed_everything(self.seed)
        device = choose_device(self.device)
        self.features_ = dataset.image_inputs()
        on_ratings = isinstance(data, Ratings)
        pairs = pairs_from_ratings(data, self.pairs_per_rating, self.seed) if on_ratings else data
        net = self._make_net(dataset).to(device)
        features = torch.as_tensor(self.features_, device=device)
        t = {
            name: torch.as_tensor(getattr(pairs, name), device=device)
            for name in ("user_idx", "image_a", "image_b", "choice")
        }
        n_batches = max(1, -(-len(pairs) // self.batch_size))
        order = {}

        def loss_of(users, a, b, choice) -> torch.Tensor:
            return _bradley_terry(self._batch_diff(net, features, users, a, b), choice).mean()

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
        logits = self.net_.logits.weight.detach().double().numpy()
        self.prior_mean_, self.prior_spread_ = population_prior(logits[self.known_])
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
        self._weights = torch.softmax(self.net_.logits.weight.detach(), -1).double().numpy()

    # ------------------------------------------------------------------ new users
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
        """Mixture logits (n x K) of new users: the MAP under the population prior of each one's reference choices.
        The loss is a sum of per-user terms and Adam scales each coordinate on its own, so a user's logits do not
        depend on who else is folded in the same call."""
        mean = torch.as_tensor(self.prior_mean_, dtype=torch.float32)
        spread = torch.as_tensor(self.prior_spread_, dtype=torch.float32)
        logits = mean.repeat(len(references), 1).requires_grad_(True)
        rows, a, b, choice = [], [], [], []
        for row, refs in enumerate(references):
            rows += [row] * len(refs)
            a.append(np.asarray(refs.image_a, np.int64))
            b.append(np.asarray(refs.image_b, np.int64))
            choice.append(np.asarray(refs.choice, np.float32))
        if not rows:
            return logits.detach().numpy()
        rows = torch.as_tensor(rows)
        a, b = torch.as_tensor(np.concatenate(a)), torch.as_tensor(np.concatenate(b))
        choice = torch.as_tensor(np.concatenate(choice))
        optimiser = torch.optim.Adam([logits], lr=0.1)
        diff_of = self._fold_diff(a, b)
        with torch.enable_grad():
            for _ in range(self.foldin_steps):
                optimiser.zero_grad()
                diff = diff_of(torch.softmax(logits[rows], -1))
                prior = 0.5 * self.foldin_reg * ((logits - mean) / spread).pow(2).sum()
                loss = _bradley_terry(diff, choice).sum() + prior
                loss.backward()
                optimiser.step()
        return logits.detach().numpy()

    def _score_folded(self, states: np.ndarray, images: list[np.ndarray]) -> list[np.ndarray]:
        weights = _softmax(np.asarray(states, np.float64))
        return [
            self.scale_[0] + self.scale_[1] * self._rewards_of(w, np.asarray(i, np.int64))
            for w, i in zip(weights, images, strict=True)
        ]

    def _user_vectors(self) -> np.ndarray:
        """Mixture weights over the prototypes (n_users x K); the population prior's mixture for users not fitted."""
        return np.where(self.known_[:, None], self._weights, _softmax(self.prior_mean_))

    def _taste(self, states: np.ndarray) -> np.ndarray:
        return _softmax(np.asarray(states, np.float64))


class PalA(_Pal):
    """PAL-A: a mixture of ideal points over frozen image features (each user one point, the weighted mean of K
    shared ideal points), learned from choices."""

    name = "pal_a"

    class Params(_Pal.Params):
        dim: int = at_least_one(16, "dimensions of the projected image features")

    def _make_net(self, dataset: Dataset) -> _PalANet:
        return _PalANet(self.features_.shape[1], dataset.n_users, self.dim, self.n_prototypes)

    def _build_module(self, key: str, state: dict) -> _PalANet:
        return _PalANet(state["features_"].shape[1], len(state["known_"]), self.dim, self.n_prototypes)

    def _batch_diff(self, net: _PalANet, features, users, a, b) -> torch.Tensor:
        return net.diff(features, users, a, b)

    def _after_load(self) -> None:
        super()._after_load()
        with torch.no_grad():
            self._rewards = self.net_.distances(torch.as_tensor(self.features_)).double().numpy()

    def _new_image_state(self, inputs: ImageInputs) -> dict:
        """New images' features and their rewards: the distances of their projections to the ideal points."""
        features = inputs.inputs()
        with torch.no_grad():
            rewards = self.net_.distances(torch.as_tensor(features)).double().numpy()
        return {
            "features_": append_rows(self.features_, features),
            "_rewards": append_rows(self._rewards, rewards),
        }

    def _predict(self, user_idx: np.ndarray, image_idx: np.ndarray) -> np.ndarray:
        reward = (self._rewards[image_idx] * self._weights[user_idx]).sum(-1)
        return self.scale_[0] + self.scale_[1] * reward

    def _fold_diff(self, a: torch.Tensor, b: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        # the rows of a and b made float32 once (not the whole catalogue's)
        reward_a, reward_b = (torch.as_tensor(self._rewards[i.numpy()], dtype=torch.float32) for i in (a, b))
        gap = reward_a - reward_b
        return lambda weights: (weights * gap).sum(-1)

    def _rewards_of(self, weights: np.ndarray, images: np.ndarray) -> np.ndarray:
        return self._rewards[images] @ weights


class PalB(_Pal):
    """PAL-B as published: K prompt-conditioned prototypes from MLP projectors, an MLP projector of the image, a
    cosine link with a learned scale; each user a mixture of the prototypes, learned from choices. Each image is
    scored under its own prompt (``Dataset.prompt_features``; the two images of a comparison share it); data
    without prompt embeddings give every image one constant prompt (see the module)."""

    name = "pal"

    state_schema: ClassVar[dict[str, Any]] = {
        "prompt_table_": "float[prompts, prompt_inputs]",  # before prompt_of_, whose bound it sets
        "prompt_of_": "int[images] < prompts",
    }

    class Params(_Pal.Params):
        dim: int = at_least_one(32, "dimensions of the preference space the projectors map into")
        hidden: int = at_least_one(64, "hidden width of the projectors' two-layer MLPs")

    def _fit(self, dataset: Dataset, data: Ratings | Choices, split: str) -> None:
        self.prompt_table_, self.prompt_of_ = prompt_table(dataset.prompt_features, dataset.n_images)
        self._device_prompts = {}
        super()._fit(dataset, data, split)

    def _make_net(self, dataset: Dataset) -> _PalBNet:
        return self._net(self.features_.shape[1], self.prompt_table_.shape[1], dataset.n_users)

    def _net(self, n_features: int, n_prompt: int, n_users: int) -> _PalBNet:
        return _PalBNet(n_features, n_prompt, n_users, self.dim, self.hidden, self.n_prototypes)

    def _build_module(self, key: str, state: dict) -> _PalBNet:
        return self._net(state["features_"].shape[1], state["prompt_table_"].shape[1], len(state["known_"]))

    def conditioned(self) -> bool:
        """True when the images' prompts differ (the model was fitted with prompt embeddings)."""
        return len(self.prompt_table_) > 1

    def _batch_diff(self, net: _PalBNet, features, users, a, b) -> torch.Tensor:
        weights = torch.softmax(net.logits(users), -1)
        items_a, items_b = net.items(features[a]), net.items(features[b])
        if not self.conditioned():  # the constant prompt, one row per choice
            prompts = self._on_device("prompt_table_", features.device).expand(len(users), -1).contiguous()
            preference = net.preference(weights, net.prototypes(prompts))
            return net.scale() * (preference * (items_a - items_b)).sum(-1)
        table = self._on_device("prompt_table_", features.device)
        prompt_of = self._on_device("prompt_of_", features.device)
        used, where = torch.unique(torch.cat([prompt_of[a], prompt_of[b]]), return_inverse=True)
        prototypes = net.prototypes(table[used])  # one pass per distinct prompt of the batch
        where_a, where_b = where[: len(a)], where[len(a) :]
        reward_a = (net.preference(weights, prototypes[where_a]) * items_a).sum(-1)
        reward_b = (net.preference(weights, prototypes[where_b]) * items_b).sum(-1)
        return net.scale() * (reward_a - reward_b)

    def _on_device(self, name: str, device) -> torch.Tensor:
        """The fitted array ``name`` (``prompt_table_`` or ``prompt_of_``) as a tensor on ``device``, made once."""
        key = (name, str(device))
        if key not in self._device_prompts:
            self._device_prompts[key] = torch.as_tensor(getattr(self, name), device=device)
        return self._device_prompts[key]

    def _after_load(self) -> None:
        super()._after_load()
        self._device_prompts = {}
        with torch.no_grad():
            self._items = self.net_.items(torch.as_tensor(self.features_)).double().numpy()
            self._prototypes = self._prototypes_of(self.prompt_table_)
            self._scale = float(self.net_.scale())
            # per user for the single prompt of unconditioned data (the common case: no per-prompt work)
            self._preferences = None if self.conditioned() else _unit(self._weights @ self._prototypes[0])

    def _prototypes_of(self, prompts: np.ndarray) -> np.ndarray:
        """g_k(x) of prompt rows (float64, n x K x dim), in chunks."""
        with torch.no_grad():
            parts = [
                self.net_.prototypes(torch.as_tensor(prompts[start : start + PROMPT_CHUNK])).double().numpy()
                for start in range(0, len(prompts), PROMPT_CHUNK)
            ]
        return np.concatenate(parts) if parts else np.zeros((0, self.n_prototypes, self.dim))

    def _new_image_state(self, inputs: ImageInputs) -> dict:
        """New images' features and their projections into the preference space; their prompts' embeddings when
        ``inputs`` has them (on a model fitted with prompts), else the mean prompt of the fitted images, one row
        added to the table (a constant-prompt model keeps its one prompt)."""
        features = inputs.inputs()
        with torch.no_grad():
            items = self.net_.items(torch.as_tensor(features)).double().numpy()
        state = {
            "features_": append_rows(self.features_, features),
            "_items": append_rows(self._items, items),
            "_device_prompts": {},
        }
        if not self.conditioned():
            state["prompt_of_"] = append_rows(self.prompt_of_, np.zeros(len(features), np.int64))
            return state
        if inputs.prompts is not None and inputs.prompts.shape[1] == self.prompt_table_.shape[1]:
            new_prompts = np.asarray(inputs.prompts, np.float32)
            new_of = len(self.prompt_table_) + np.arange(len(features))
        else:
            counts = np.bincount(self.prompt_of_[: self.n_images_], minlength=len(self.prompt_table_))
            new_prompts = (counts @ self.prompt_table_.astype(np.float64) / max(counts.sum(), 1))[None]
            new_prompts = new_prompts.astype(np.float32)
            new_of = np.full(len(features), len(self.prompt_table_))
        state |= {
            "prompt_table_": append_rows(self.prompt_table_, new_prompts),
            "prompt_of_": append_rows(self.prompt_of_, new_of.astype(np.int64)),
            "_prototypes": append_rows(self._prototypes, self._prototypes_of(new_prompts)),
        }
        return state

    def _rewards(self, weights: np.ndarray, images: np.ndarray) -> np.ndarray:
        """Rewards (before the rating scale) of images under their prompts for mixture weights (one row each)."""
        out = np.empty(len(images))
        for start in range(0, len(images), PROMPT_CHUNK):
            rows = slice(start, start + PROMPT_CHUNK)
            prototypes = self._prototypes[self.prompt_of_[images[rows]]]
            preference = _unit(np.einsum("nk,nkd->nd", weights[rows], prototypes))
            out[rows] = self._scale * (self._items[images[rows]] * preference).sum(-1)
        return out

    def _predict(self, user_idx: np.ndarray, image_idx: np.ndarray) -> np.ndarray:
        if self._preferences is not None:
            reward = self._scale * (self._items[image_idx] * self._preferences[user_idx]).sum(-1)
        else:
            reward = self._rewards(self._weights[user_idx], image_idx)
        return self.scale_[0] + self.scale_[1] * reward

    def _fold_diff(self, a: torch.Tensor, b: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        # the rows of a and b made float32 once (not the whole catalogue's)
        items_a, items_b = (torch.as_tensor(self._items[i.numpy()], dtype=torch.float32) for i in (a, b))
        if not self.conditioned():
            prototypes = torch.as_tensor(self._prototypes[0], dtype=torch.float32)
            gap = items_a - items_b
            return lambda weights: self._scale * (_PalBNet.preference(weights, prototypes) * gap).sum(-1)
        prototypes_a, prototypes_b = (
            torch.as_tensor(self._prototypes[self.prompt_of_[i.numpy()]], dtype=torch.float32) for i in (a, b)
        )

        def diff(weights: torch.Tensor) -> torch.Tensor:
            reward_a = (_PalBNet.preference(weights, prototypes_a) * items_a).sum(-1)
            reward_b = (_PalBNet.preference(weights, prototypes_b) * items_b).sum(-1)
            return self._scale * (reward_a - reward_b)

        return diff

    def _rewards_of(self, weights: np.ndarray, images: np.ndarray) -> np.ndarray:
        if not self.conditioned():
            return self._scale * (self._items[images] @ _unit(weights[None] @ self._prototypes[0])[0])
        return self._rewards(np.broadcast_to(weights, (len(images), len(weights))), images)


#: prompts (or scored rows) per pass through the prompt projectors
PROMPT_CHUNK = 65536


def prompt_table(prompts: np.ndarray | None, n_images: int) -> tuple[np.ndarray, np.ndarray]:
    """(distinct prompt rows (float32, P x d), each image's row in it (int64, n_images)) of per-image prompt
    embeddings; without any, one constant prompt (a single 1) for every image."""
    if prompts is None:
        return np.ones((1, 1), np.float32), np.zeros(n_images, np.int64)
    prompts = np.ascontiguousarray(prompts)  # float16 data stay float16 until the distinct rows are found
    rows = prompts.view(np.dtype((np.void, prompts.dtype.itemsize * prompts.shape[1]))).ravel()
    _, first, prompt_of = np.unique(rows, return_index=True, return_inverse=True)
    return prompts[first].astype(np.float32), prompt_of.astype(np.int64).ravel()


def _unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
