"""Learned preference tokens (the approach of arXiv 2508.08220) on frozen image features.

score(u, i) = consensus(i) + image_bias(i) + taste(u) . z(i)

* image tower: MLP over the image embedding plus embeddings of type / group / style -> z(i) (``dim``) and a
  scalar image bias, on top of the consensus (the global ridge).
* preference tokens: a learnable pool of ``pool_size`` tokens with keys. Each user selects ``n_selected`` of them:
  the query is the user's history summary (the mean of its rated images' z weighted by its residual scores)
  plus its demographics; the tokens whose keys are most cosine-similar are selected and mixed by a softmax of
  those similarities into the user's prior taste. A key-matching loss pulls the selected keys toward the query.
* the whole history reaches the model: taste(u) is the user's prior taste refined by a ridge regression of the
  user's residuals on z over *all* its ratings (a seen user's full training history; a new user's k
  references), shrunk toward the prior with a learned strength. So the same network serves seen users (long
  histories) and new users (k references, k = 0: the prior from demographics alone), without retraining.
* loss: MSE + ``contrastive_weight`` x the contrastive preference loss on (disliked, liked) pairs of one user
  (pairs of its query images with different scores) + ``key_weight`` x the key-matching loss.
* training is episodic: every epoch each training user's ratings are split at random into a history and
  queries (half of the episodes with short histories, as new users have, half with long ones, as seen users
  have); early stopping on ``val_seen`` (``recsys.models.base.DATA_POLICY``), each fitted user scored from its
  full training history.
* seen users' refinement (not in the paper): the ridge strength is learned for histories of every length, so a
  fitted user's taste is refit on its whole training history with that strength times ``seen_reg_scale_``, the
  multiple of ``SEEN_REG_SCALES`` with the lowest validation loss on ``val_seen`` (1 unless another is strictly
  better). New users keep the learned strength.

What follows the paper and what is ours: README.md, "pref_tokens: the paper and this reproduction".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from recsys.data.choices import ChoiceReferences, Choices
from recsys.data.dataset import Dataset, Ratings, References
from recsys.data.encodings import ImageInputs
from recsys.models.params import at_least_one, hyper, non_negative, positive
from recsys.models.torch_utils import (
    DeepModel,
    ImageTower,
    TowerParams,
    deterministic_algorithms,
    fit_module,
    own_draws,
    preference_loss,
)

#: histories of at most this many ratings count as short (the new-user regime) in training episodes
SHORT_HISTORY = 24
#: temperature of the softmax that mixes the selected tokens (over cosine similarities)
MIX_TEMPERATURE = 0.1
#: multiples of the learned history ridge strength tried for the seen users' refinement (chosen on val_seen)
SEEN_REG_SCALES = (1.0, 0.03, 0.1, 0.3, 3.0, 10.0)
#: catalogues up to this many images run the image tower on every image in each training step; larger ones on
#: the images the step's batch shows (the tower's cost per step then does not grow with the catalogue)
WHOLE_TOWER_IMAGES = 20_000
#: users whose validation episodes are scored at once (bounds the padded validation batch on large data)
VALIDATION_USERS = 2048


class _PrefNet(nn.Module):
    def __init__(self, n_features, meta_sizes, n_demo, *, dim, hidden, pool_size, n_selected, dropout, reg):
        super().__init__()
        self.tower = ImageTower(n_features, meta_sizes, hidden=hidden, dim=dim, dropout=dropout)
        self.n_selected = n_selected
        self.summary = nn.Linear(dim, dim, bias=False)
        self.demo_query = nn.Linear(n_demo, dim)
        if n_selected:
            self.pool = nn.Parameter(torch.randn(pool_size, dim) * 0.1)
            self.keys = nn.Parameter(torch.randn(pool_size, dim))
        else:
            self.demo_taste = nn.Linear(n_demo, dim)
        self.log_reg = nn.Parameter(torch.tensor(math.log(reg)))
        self.log_gap = nn.Parameter(torch.zeros(()))  # choices: the score gap a decided choice stands for

    def gap(self) -> torch.Tensor:
        return self.log_gap.exp()

    def select(self, query):
        """(indices, mixing weights) of the preference tokens selected by ``query`` (batch x dim), and the
        key-matching loss."""
        sim = nn.functional.normalize(query, dim=-1) @ nn.functional.normalize(self.keys, dim=-1).T
        top = sim.topk(self.n_selected, dim=-1)
        return top.indices, torch.softmax(top.values / MIX_TEMPERATURE, -1), (1.0 - top.values).mean()

    def taste(self, z, resid, mask, demo, reg_scale: float = 1.0):
        """Taste vectors (batch x dim) from histories: ``z`` (batch x L x dim) of the rated images, ``resid``
        their residual scores, ``mask`` 1 for real entries; ``demo`` (batch x n_demo). And the key loss.
        ``reg_scale`` multiplies the learned ridge strength of the history fit (the seen users' refinement)."""
        z = z * mask[..., None]
        resid = resid * mask
        summary = (z * resid[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0)
        key_loss = demo.new_zeros(())
        if self.n_selected:
            chosen, weights, key_loss = self.select(self.demo_query(demo) + self.summary(summary))
            prior = (weights[..., None] * self.pool[chosen]).sum(1)
        else:
            prior = self.demo_taste(demo)
        eye = torch.eye(z.shape[-1], device=z.device)
        gram = z.transpose(1, 2) @ z + reg_scale * self.log_reg.exp() * eye
        rhs = z.transpose(1, 2) @ (resid - (z @ prior[..., None]).squeeze(-1))[..., None]
        return prior + torch.linalg.solve(gram, rhs).squeeze(-1), key_loss


class PrefTokens(DeepModel):
    """Preference tokens selected per user from a learnable pool, refined by the user's whole history."""

    state_schema: ClassVar[dict[str, Any]] = {"taste_": "float[users, dim]", "seen_reg_scale_": "float"}

    name = "pref_tokens"
    learns_from = (Ratings, Choices)

    class Params(TowerParams):
        hidden: int = at_least_one(64, "hidden width of the image tower (narrower than two_tower's)")
        pool_size: int = at_least_one(16, "learnable preference tokens in the pool")
        n_selected: int = at_least_one(4, "preference tokens selected per user")
        use_pool: bool = hyper(
            True, doc="select preference tokens from the pool (else a linear map from demographics)"
        )
        key_weight: float = non_negative(0.1, "weight of the key-matching loss")
        history_reg: float = positive(1.0, "initial ridge strength pulling the history fit toward the tokens")
        n_queries: int = at_least_one(64, "most query ratings per training episode")
        batch_users: int = at_least_one(64, "episodes (users) per step")
        epochs: int = at_least_one(60, "maximum training epochs (one episode per training user each)")
        lr: float = positive(1e-2, "Adam learning rate")
        patience: int = at_least_one(6, "epochs without validation improvement before stopping")

        def validate(self) -> None:
            if self.n_selected > self.pool_size:
                raise ValueError(f"n_selected ({self.n_selected}) cannot exceed pool_size ({self.pool_size})")

    def _build(self, n_features: int, meta_sizes, n_demo: int) -> _PrefNet:
        return _PrefNet(
            n_features,
            meta_sizes,
            n_demo,
            dim=self.dim,
            hidden=self.hidden,
            pool_size=self.pool_size,
            n_selected=self.n_selected if self.use_pool else 0,
            dropout=self.dropout,
            reg=self.history_reg,
        )

    def _build_module(self, key: str, state: dict) -> _PrefNet:
        return self._build(state["features_"].shape[1], state["meta_"]["meta_sizes"], state["demo_"].shape[1])

    # ------------------------------------------------------------------ fitting
    # Histories and queries are rows (image a, image b, target): a rating is (image, NONE, score), where NONE is
    # an extra image whose z, bias and base are 0; a choice is (a, b, choice). A row's value is the difference
    # s(a) - s(b), so one taste fit serves both: a rating's target is its score, a choice's gap * (2 choice - 1)
    # with a learned gap; a query is scored by squared error (ratings) or Bradley-Terry (choices).
    def _fit(self, dataset: Dataset, data: Ratings | Choices, split: str) -> None:
        choices = isinstance(data, Choices)
        _, device, t = self._start_fit(dataset, data)
        rng = np.random.default_rng(self.seed)
        draws = own_draws(rng, self.seed)  # rng itself in one process; a rank's own under torchrun
        net = self._build(self.features_.shape[1], self.meta_["meta_sizes"], self.demo_.shape[1]).to(device)
        histories = [(u, *self._rows(data, rows)) for u, rows in data.by_user()]
        eligible = [h for h in histories if len(h[1]) >= 2]
        n_steps = max(1, -(-len(eligible) // self.batch_users))
        order: list = []

        def loss_of(batch, train: bool) -> torch.Tensor:
            users, hist_a, hist_b, hist_y, hist_m, query_a, query_b, query_y, query_m = batch
            # the image tower runs on the images the batch shows only (its cost no longer grows with the catalogue)
            z_all, s0, (hist_a, hist_b, query_a, query_b) = _tower_of_shown(
                net.tower, t, (hist_a, hist_b, query_a, query_b)
            )
            target = net.gap() * (2 * hist_y - 1) if choices else hist_y
            resid = target - (s0[hist_a] - s0[hist_b])
            taste, key_loss = net.taste(z_all[hist_a] - z_all[hist_b], resid, hist_m, t["demo"][users])
            diff = s0[query_a] - s0[query_b] + ((z_all[query_a] - z_all[query_b]) * taste[:, None, :]).sum(-1)
            diff, outcome = diff[query_m], query_y[query_m]
            if choices:
                loss = (
                    outcome * nn.functional.softplus(-diff) + (1 - outcome) * nn.functional.softplus(diff)
                ).mean()
            else:
                loss = torch.mean((diff - outcome) ** 2)
            if train:
                loss = loss + self.key_weight * key_loss
                if self.contrastive_weight > 0:
                    contrastive = self._contrastive(diff, outcome, query_m, device, choices)
                    loss = loss + self.contrastive_weight * contrastive
            return loss

        def shuffle() -> None:
            order[:] = [eligible[j] for j in rng.permutation(len(eligible))]

        def step(b: int) -> torch.Tensor:
            net.train()
            episodes = []
            for user, a, b_, y in order[b * self.batch_users : (b + 1) * self.batch_users]:
                n = len(a)
                longest = max(1, n - 1)
                short = draws.random() < 0.5 or longest <= SHORT_HISTORY
                k = (
                    int(draws.integers(0, min(SHORT_HISTORY, longest) + 1))
                    if short
                    else int(draws.integers(SHORT_HISTORY, longest + 1))
                )
                perm = draws.permutation(n)
                h, q = perm[:k], perm[k : k + self.n_queries]
                episodes.append((user, a[h], b_[h], y[h], a[q], b_[q], y[q]))
            return loss_of(_pad(episodes, device), True)

        validate = None
        held = self._validation(dataset, split, type(data))
        if held is not None:
            by_user = {h[0]: h[1:] for h in histories}
            val_episodes = [
                (u, *by_user[u], *self._rows(held, rows)) for u, rows in held.by_user() if u in by_user
            ]
            if val_episodes:
                # VALIDATION_USERS users at a time (one batch on smaller data, as before), the mean over all queries
                val_batches = [
                    _pad(val_episodes[start : start + VALIDATION_USERS], device)
                    for start in range(0, len(val_episodes), VALIDATION_USERS)
                ]
                val_queries = [int(batch[-1].sum()) for batch in val_batches]

                def validate() -> float:
                    net.eval()
                    with torch.no_grad():
                        if len(val_batches) == 1:
                            return float(loss_of(val_batches[0], False))
                        losses = [float(loss_of(batch, False)) for batch in val_batches]
                        return sum(x * n for x, n in zip(losses, val_queries, strict=True)) / sum(val_queries)

        with deterministic_algorithms():  # the gradient of the gather of z is a scatter-add
            fit_module(self, net, step, n_steps, validate, shuffle)
        self._after_load()
        self.seen_reg_scale_ = 1.0
        if held is not None and len(held):
            self.seen_reg_scale_ = self._seen_reg_scale(histories, held, choices)
        self.taste_ = np.zeros((dataset.n_users, self.dim), np.float32)
        self.taste_[[h[0] for h in histories]] = self._fold_rows(histories, choices, self.seen_reg_scale_)

    def _seen_reg_scale(self, histories: list[tuple], held: Ratings | Choices, choices: bool) -> float:
        """The multiple of ``SEEN_REG_SCALES`` whose refit of the fitted users' tastes from their whole training
        histories scores the validation split best (mean squared error of ratings, log loss of choices); the
        first, 1, unless another is strictly better."""
        users = np.array([h[0] for h in histories], np.int64)
        row_of = np.full(int(users.max()) + 1, -1, np.int64)
        row_of[users] = np.arange(len(users))
        user_idx = held.user_idx
        keep = (user_idx <= users.max()) & (row_of[np.minimum(user_idx, users.max())] >= 0)
        if not keep.any():
            return 1.0
        rows = row_of[user_idx[keep]]
        a, b, y = self._rows(held, np.flatnonzero(keep))
        losses = []
        for scale in SEEN_REG_SCALES:
            taste = self._fold_rows(histories, choices, scale).astype(np.float64)
            diff = self._score0[a] - self._score0[b] + ((self._z[a] - self._z[b]) * taste[rows]).sum(-1)
            if choices:
                loss = y * np.logaddexp(0.0, -diff) + (1 - y) * np.logaddexp(0.0, diff)
            else:
                loss = (diff - y) ** 2
            losses.append(float(np.mean(loss)))
        best = int(np.argmin(losses))
        return float(SEEN_REG_SCALES[best]) if losses[best] < losses[0] else 1.0

    def _rows(self, data, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image a, image b, target) of some rows of ratings (b: NONE) or of choices."""
        if isinstance(data, Choices):
            return data.image_a[rows], data.image_b[rows], data.choice[rows]
        return data.image_idx[rows], np.full(len(rows), len(self.base_), np.int64), data.score[rows]

    def _contrastive(self, diff, outcome, mask, device, choices: bool) -> torch.Tensor:
        """The contrastive preference loss on (disliked, liked) pairs at ``temperature``: of ratings, pairs of one
        user's query images with different scores; of choices, the decided choices themselves."""
        if not choices:
            group = torch.arange(mask.shape[0], device=device)[:, None].expand_as(mask)[mask]
            return preference_loss(diff, outcome, group, self.temperature)
        decided = outcome != 0.5
        if not bool(decided.any()):
            return diff.sum() * 0.0
        sign = 2 * outcome[decided] - 1
        return nn.functional.softplus(-sign * diff[decided] / self.temperature).mean()

    def _after_load(self) -> None:
        """The image tower's output for every image (and NONE's zeros), kept in memory for scoring and folding."""
        t = self._cpu_inputs()
        with torch.no_grad():
            z, bias = self.net_.tower(t["features"], t["codes"])
            self._gap = float(self.net_.gap())
        self._z = np.vstack([z.numpy(), np.zeros((1, z.shape[1]), np.float32)])
        self._score0 = np.append(self.base_ + bias.numpy(), 0.0).astype(np.float64)

    def _new_image_state(self, inputs: ImageInputs) -> dict:
        """The kept inputs and the tower's output with new images' rows; NONE stays the last row."""
        state = super()._new_image_state(inputs)
        with torch.no_grad():
            z, bias = self.net_.tower(
                torch.as_tensor(state["features_"][self.n_images_ :]),
                torch.as_tensor(state["codes_"][self.n_images_ :]),
            )
        score0 = (state["base_"][self.n_images_ :] + bias.numpy()).astype(np.float64)
        return state | {
            "_z": np.vstack([self._z[:-1], z.numpy(), self._z[-1:]]),
            "_score0": np.concatenate([self._score0[:-1], score0, self._score0[-1:]]),
        }

    # ------------------------------------------------------------------ prediction
    def _predict(self, user_idx: np.ndarray, image_idx: np.ndarray) -> np.ndarray:
        return self._score0[image_idx] + (self.taste_[user_idx] * self._z[image_idx]).sum(-1)

    def _fold(self, references: list[References]) -> np.ndarray:
        """Taste vectors (float32, n x dim) of users from reference ratings (a seen user's: its whole history)."""
        none = len(self.base_)
        return self._fold_rows(
            [
                (r.user_idx, np.asarray(r.image_idx, np.int64), np.full(len(r), none), r.score)
                for r in references
            ],
            choices=False,
        )

    def _fold_choices(self, references: list[ChoiceReferences]) -> np.ndarray:
        """Taste vectors (float32, n x dim) of users from reference choices."""
        return self._fold_rows(
            [(r.user_idx, r.image_a, r.image_b, r.choice) for r in references], choices=True
        )

    def _fold_rows(self, histories: list[tuple], choices: bool, reg_scale: float = 1.0) -> np.ndarray:
        """Taste vectors of (user, image a, image b, target) histories of ratings or, with ``choices``, of choices
        (see the fitting section), with the history ridge's strength times ``reg_scale``."""
        out = np.zeros((len(histories), self.dim), np.float32)
        z_all = torch.as_tensor(self._z)
        for start in range(0, len(histories), 256):
            chunk = histories[start : start + 256]
            hist_a, hist_b, hist_y, hist_m = _pad_rows([h[1:] for h in chunk])
            demo = torch.as_tensor(self.demo_[[int(h[0]) for h in chunk]])
            target = self._gap * (2 * hist_y - 1) if choices else hist_y
            s0 = torch.as_tensor(self._score0, dtype=torch.float32)
            resid = target - (s0[hist_a] - s0[hist_b])
            with torch.no_grad():
                taste, _ = self.net_.taste(z_all[hist_a] - z_all[hist_b], resid, hist_m, demo, reg_scale)
            out[start : start + len(chunk)] = taste.numpy()
        return out

    def _score_folded(self, states: np.ndarray, images: list[np.ndarray]) -> list[np.ndarray]:
        return [self._score0[i] + self._z[i] @ state for state, i in zip(states, images, strict=True)]

    def _user_vectors(self) -> np.ndarray:
        return self.taste_ * self.known_[:, None]

    def active_tokens(self, references: Sequence[References]) -> list[np.ndarray]:
        """Indices of the preference tokens each user's reference ratings select (most similar first)."""
        self._check_fitted()
        if not self.net_.n_selected:
            raise ValueError(f"{self.name} has no preference-token pool")
        out = []
        none = len(self.base_)
        for refs in references:
            hist_a, hist_b, hist_y, hist_m = _pad_rows(
                [(refs.image_idx, np.full(len(refs), none), refs.score)]
            )
            z = torch.as_tensor(self._z)[hist_a] * hist_m[..., None]
            resid = (hist_y - torch.as_tensor(self._score0, dtype=torch.float32)[hist_a]) * hist_m
            summary = (z * resid[..., None]).sum(1) / hist_m.sum(1, keepdim=True).clamp(min=1.0)
            with torch.no_grad():
                demo = torch.as_tensor(self.demo_[[int(refs.user_idx)]])
                chosen, _, _ = self.net_.select(self.net_.demo_query(demo) + self.net_.summary(summary))
            out.append(chosen[0].numpy())
        return out


def _tower_of_shown(
    tower: nn.Module, t: dict[str, torch.Tensor], indices: tuple[torch.Tensor, ...]
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, ...]]:
    """(z, base score plus image bias) of the images that ``indices`` (image indices, NONE = n_images) show, NONE's
    rows zero, and ``indices`` renumbered into those rows: the tower's output on the whole catalogue, gathered at
    ``indices``, at the cost of the shown images only. A catalogue of at most ``WHOLE_TOWER_IMAGES`` images runs
    whole (its dropout draws, hence its numbers, as they always were; a batch shows much of it anyway)."""
    n_images = len(t["base"])
    if n_images <= WHOLE_TOWER_IMAGES:
        z_all, bias_all = tower(t["features"].float(), t["codes"])
        return _with_none(z_all), _with_none(t["base"] + bias_all), indices
    shown, local = torch.unique(torch.cat([i.reshape(-1) for i in indices]), return_inverse=True)
    real = shown.clamp(max=n_images - 1)
    none = (shown == n_images)[:, None]
    z, bias = tower(t["features"][real].float(), t["codes"][real])
    z, s0 = z.masked_fill(none, 0.0), (t["base"][real] + bias).masked_fill(none[:, 0], 0.0)
    sizes = [i.numel() for i in indices]
    renumbered = tuple(part.reshape(i.shape) for part, i in zip(local.split(sizes), indices, strict=True))
    return z, s0, renumbered


def _with_none(x: torch.Tensor) -> torch.Tensor:
    """``x`` with one more row of zeros: NONE, the second image of a rating."""
    return torch.cat([x, x.new_zeros((1, *x.shape[1:]))])


def _pad_rows(rows) -> tuple[torch.Tensor, ...]:
    """(image a, image b, target, mask) of histories of rows, padded to the longest (at least one column)."""
    width = max([len(r[0]) for r in rows] + [1])
    a = np.zeros((len(rows), width), np.int64)
    b = np.zeros((len(rows), width), np.int64)
    y = np.zeros((len(rows), width), np.float32)
    mask = np.zeros((len(rows), width), np.float32)
    for row, (images_a, images_b, target) in enumerate(rows):
        n = len(images_a)
        a[row, :n], b[row, :n], y[row, :n], mask[row, :n] = images_a, images_b, target, 1.0
    return torch.as_tensor(a), torch.as_tensor(b), torch.as_tensor(y), torch.as_tensor(mask)


def _pad(episodes, device) -> tuple[torch.Tensor, ...]:
    """Tensors of a batch of episodes (user, history a, b, target, query a, b, target)."""
    history = _pad_rows([e[1:4] for e in episodes])
    queries = _pad_rows([e[4:7] for e in episodes])
    users = torch.as_tensor(np.array([e[0] for e in episodes], np.int64))
    mask = queries[3].bool()
    return tuple(x.to(device) for x in (users, *history, *queries[:3], mask))
