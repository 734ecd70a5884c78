"""Two-tower hybrid with shared taste prototypes (a PAL-style mixture of prototypes on frozen image features).

score(u, i) = consensus(i) + image_bias(i) + demographic_bias(u) + user_bias(u) + taste(u) . z(i)

* consensus(i): the global ridge on image features and metadata (closed form, fixed): the model learns the
  personal part and a non-linear correction on top of it.
* image tower: MLP over the image embedding plus embeddings of type / group / style -> z(i) (``dim``) and a
  scalar image bias.
* user tower: taste(u) = softmax(demographic_logits(u) + logit_offset(u)) @ prototypes + offset(u): a mixture of
  ``n_prototypes`` shared prototypes (predicted from demographics, refined per user) plus a personal offset.
* loss: MSE + ``contrastive_weight`` x a logistic preference loss over pairs of one user with different scores.
* new images: their base from the consensus map, their z and image bias from the image tower, on their features and
  metadata codes (``with_new_images``).
* new users (towers frozen): the mixture logits, offset and bias are fitted to the k references by MAP
  (Gaussian priors whose variances are measured on the training users), with a fixed number of full-batch
  gradient steps; at k = 0 this is the demographic prior.
* on choices (no ratings): no consensus base (0), the Bradley-Terry loss on score differences of the chosen and
  the other image plus the contrastive loss on the decided choices; new users' MAP fit uses the Bradley-Terry
  likelihood of their reference choices.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn.functional import softplus

from recsys.data.choices import ChoiceReferences, Choices
from recsys.data.dataset import Dataset, Ratings, References
from recsys.data.encodings import ImageInputs
from recsys.models.params import at_least_one, hyper, non_negative
from recsys.models.torch_utils import DeepModel, ImageTower, TowerParams, fit_module, preference_loss


class _TwoTowerNet(nn.Module):
    def __init__(self, n_features, meta_sizes, n_demo, n_users, *, dim, hidden, n_prototypes, dropout):
        super().__init__()
        self.tower = ImageTower(n_features, meta_sizes, hidden=hidden, dim=dim, dropout=dropout)
        self.n_prototypes = n_prototypes
        if n_prototypes:
            self.prototypes = nn.Parameter(torch.randn(n_prototypes, dim) * 0.3)
            self.demo_logits = nn.Linear(n_demo, n_prototypes)
            self.logit_offset = nn.Embedding(n_users, n_prototypes)
            nn.init.zeros_(self.logit_offset.weight)
        else:
            self.demo_taste = nn.Linear(n_demo, dim)
        self.demo_bias = nn.Linear(n_demo, 1)
        self.offset = nn.Embedding(n_users, dim)
        self.user_bias = nn.Embedding(n_users, 1)
        nn.init.normal_(self.offset.weight, std=0.01)
        nn.init.zeros_(self.user_bias.weight)

    def image(self, features, codes):
        return self.tower(features, codes)

    def prior_logits(self, demo):
        return self.demo_logits(demo)

    def taste(self, demo, logit_offset, offset):
        """Taste vectors from demographics, per-user mixture-logit offsets (or None) and offsets."""
        if self.n_prototypes:
            mixture = torch.softmax(self.demo_logits(demo) + logit_offset, dim=-1)
            return mixture @ self.prototypes + offset
        return self.demo_taste(demo) + offset

    def score(self, base, z, image_bias, demo, taste, user_bias):
        return base + image_bias + self.demo_bias(demo).squeeze(-1) + user_bias + (taste * z).sum(-1)


class TwoTower(DeepModel):
    """Two-tower hybrid: image MLP x user mixture of shared taste prototypes, on top of the global ridge."""

    state_schema: ClassVar[dict[str, Any]] = {"priors_": "float[4]"}

    name = "two_tower"
    learns_from = (Ratings, Choices)

    class Params(TowerParams):
        n_prototypes: int = non_negative(8, "shared taste prototypes")
        use_prototypes: bool = hyper(
            True, doc="a mixture of shared prototypes (else a linear map from demographics)"
        )
        user_reg: float = non_negative(0.02, "L2 weight on per-user parameters")
        batch_size: int = at_least_one(2048, "ratings per batch")
        foldin_steps: int = non_negative(
            150, "gradient steps fitting a new user's parameters to its references"
        )
        foldin_lr: float = non_negative(0.05, "learning rate of those steps")
        patience: int = at_least_one(3, "epochs without validation improvement before stopping")

        def validate(self) -> None:
            if self.use_prototypes and self.n_prototypes < 1:
                raise ValueError("n_prototypes must be at least 1 (set use_prototypes=false for none)")

    # ------------------------------------------------------------------ fitting
    def _build(self, n_features, meta_sizes, n_demo, n_users) -> _TwoTowerNet:
        return _TwoTowerNet(
            n_features,
            meta_sizes,
            n_demo,
            n_users,
            dim=self.dim,
            hidden=self.hidden,
            n_prototypes=self.n_prototypes if self.use_prototypes else 0,
            dropout=self.dropout,
        )

    def _build_module(self, key: str, state: dict) -> _TwoTowerNet:
        features, demo = state["features_"], state["demo_"]
        return self._build(
            features.shape[1], state["meta_"]["meta_sizes"], demo.shape[1], len(state["known_"])
        )

    def _fit(self, dataset: Dataset, data: Ratings | Choices, split: str) -> None:
        choices = isinstance(data, Choices)
        generator, device, tensors = self._start_fit(dataset, data)
        sizes = self.meta_["meta_sizes"]
        net = self._build(self.features_.shape[1], sizes, self.demo_.shape[1], dataset.n_users).to(device)
        rows = _rows(data, device)
        n = len(rows[0])
        n_batches = max(1, -(-n // self.batch_size))
        order = {"perm": None}

        def loss_of(batch, train: bool) -> torch.Tensor:
            """Squared error of ratings, or Bradley-Terry of choices on score differences (+ the penalties and
            the contrastive loss when training)."""
            u = batch[0]
            pred, penalty = self._forward(net, tensors, u, batch[1])
            if choices:
                other, _ = self._forward(net, tensors, u, batch[2])
                diff, outcome = pred - other, batch[3]
                loss = (outcome * softplus(-diff) + (1 - outcome) * softplus(diff)).mean()
            else:
                loss = torch.mean((pred - batch[2]) ** 2)
            if not train:
                return loss
            loss = loss + self.user_reg * penalty
            if self.contrastive_weight > 0 and choices:
                decided = outcome != 0.5
                if bool(decided.any()):
                    sign = 2 * outcome[decided] - 1
                    loss = (
                        loss
                        + self.contrastive_weight * softplus(-sign * diff[decided] / self.temperature).mean()
                    )
            elif self.contrastive_weight > 0:
                loss = loss + self.contrastive_weight * preference_loss(pred, batch[2], u, self.temperature)
            return loss

        def shuffle() -> None:
            net.train()
            order["perm"] = torch.randperm(n, generator=generator).to(device)

        def step(b: int) -> torch.Tensor:
            idx = order["perm"][b * self.batch_size : (b + 1) * self.batch_size]
            return loss_of([x[idx] for x in rows], True)

        validate = None
        held = self._validation(dataset, split, type(data))
        if held is not None:
            held_rows = _rows(held.subset(self.known_[held.user_idx]), device)

            def validate() -> float:
                net.eval()
                with torch.no_grad():
                    return float(loss_of(held_rows, False))

        fit_module(self, net, step, n_batches, validate, shuffle)
        self._after_load()
        self._measure_priors(data if not choices else None)

    def _after_load(self) -> None:
        self._cpu = self._cpu_inputs()

    def _new_image_state(self, inputs: ImageInputs) -> dict:
        state = super()._new_image_state(inputs)
        tensors = {"features": state["features_"], "codes": state["codes_"], "base": state["base_"]}
        return state | {"_cpu": self._cpu | {k: torch.as_tensor(v) for k, v in tensors.items()}}

    def _forward(self, net, tensors, u, i):
        z, image_bias = net.image(tensors["features"][i], tensors["codes"][i])
        demo = tensors["demo"][u]
        logit_offset = net.logit_offset(u) if net.n_prototypes else None
        offset, user_bias = net.offset(u), net.user_bias(u).squeeze(-1)
        taste = net.taste(demo, logit_offset, offset)
        pred = net.score(tensors["base"][i], z, image_bias, demo, taste, user_bias)
        penalty = (offset**2).sum(-1).mean() + (user_bias**2).mean()
        if logit_offset is not None:
            penalty = penalty + 0.1 * (logit_offset**2).sum(-1).mean()
        return pred, penalty

    def _measure_priors(self, ratings: Ratings | None) -> None:
        """Prior variances of new users' parameters and the noise variance, measured on the training users and
        their ``ratings`` (on choices, None: the Bradley-Terry likelihood has no noise variance, 1)."""
        known = torch.as_tensor(np.flatnonzero(self.known_))
        with torch.no_grad():
            noise = 1.0
            if ratings is not None:
                users, images = torch.as_tensor(ratings.user_idx), torch.as_tensor(ratings.image_idx)
                pred, _ = self._forward(self.net_, self._cpu, users, images)
                noise = float(torch.mean((pred - torch.as_tensor(ratings.score)) ** 2))
            offset_var = float((self.net_.offset.weight[known] ** 2).mean())
            bias_var = float((self.net_.user_bias.weight[known] ** 2).mean())
            logit_var = (
                float((self.net_.logit_offset.weight[known] ** 2).mean()) if self.net_.n_prototypes else 1.0
            )
        self.priors_ = np.array([noise, max(offset_var, 1e-4), max(bias_var, 1e-4), max(logit_var, 1e-2)])

    # ------------------------------------------------------------------ prediction
    def _predict(self, user_idx: np.ndarray, image_idx: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            pred, _ = self._forward(
                self.net_, self._cpu, torch.as_tensor(user_idx), torch.as_tensor(image_idx)
            )
        return pred.double().numpy()

    def _fold(self, references: list[References]):
        """MAP fit of (logit offsets, offsets, biases) of new users to their references, towers frozen."""
        with torch.enable_grad():
            return self._map_fit(references)

    def _fold_choices(self, references: list[ChoiceReferences]):
        """MAP fit of new users' parameters to their reference choices (Bradley-Terry likelihood), towers frozen."""
        with torch.enable_grad():
            return self._map_fit(references, choices=True)

    def _map_fit(self, references: list, choices: bool = False):
        """MAP fit to reference ratings (Gaussian likelihood) or, with ``choices``, to reference choices: a's in
        the first half of the columns, b's in the second, targets the outcomes."""
        net, t = self.net_, self._cpu
        n_users, k_max = len(references), max([len(r) for r in references] + [1])
        images = torch.zeros(n_users, 2 * k_max if choices else k_max, dtype=torch.long)
        target = torch.zeros(n_users, k_max)
        mask = torch.zeros(n_users, k_max)
        for row, refs in enumerate(references):
            k = len(refs)
            if choices:
                images[row, :k] = torch.as_tensor(np.asarray(refs.image_a, np.int64))
                images[row, k_max : k_max + k] = torch.as_tensor(np.asarray(refs.image_b, np.int64))
            else:
                images[row, :k] = torch.as_tensor(np.asarray(refs.image_idx, np.int64))
            target[row, :k] = torch.as_tensor(np.asarray(refs.choice if choices else refs.score, np.float32))
            mask[row, :k] = 1.0
        width = images.shape[1]
        demo = t["demo"][torch.as_tensor([r.user_idx for r in references], dtype=torch.long)]
        n_proto = net.n_prototypes
        logit_offset = torch.zeros(n_users, max(n_proto, 1), requires_grad=True)
        offset = torch.zeros(n_users, self.dim, requires_grad=True)
        bias = torch.zeros(n_users, requires_grad=True)
        noise, offset_var, bias_var, logit_var = (float(v) for v in self.priors_)
        with torch.no_grad():
            z, image_bias = net.image(t["features"][images.reshape(-1)], t["codes"][images.reshape(-1)])
            z, image_bias = z.reshape(n_users, width, -1), image_bias.reshape(n_users, width)
            base = t["base"][images]
        if mask.sum() > 0 and self.foldin_steps > 0:
            params = [offset, bias] + ([logit_offset] if n_proto else [])
            optimiser = torch.optim.Adam(params, lr=self.foldin_lr)
            for _ in range(self.foldin_steps):
                optimiser.zero_grad()
                taste = net.taste(demo, logit_offset if n_proto else None, offset)
                pred = net.score(
                    base,
                    z,
                    image_bias,
                    demo[:, None, :].expand(-1, width, -1),
                    taste[:, None, :],
                    bias[:, None],
                )
                if choices:  # -2 log-likelihood, as the Gaussian's below
                    diff = pred[:, :k_max] - pred[:, k_max:]
                    nll = 2 * ((target * softplus(-diff) + (1 - target) * softplus(diff)) * mask).sum()
                else:
                    nll = (((pred - target) ** 2) * mask).sum() / noise
                prior = (offset**2).sum() / offset_var + (bias**2).sum() / bias_var
                if n_proto:
                    prior = prior + (logit_offset**2).sum() / logit_var
                (0.5 * (nll + prior)).backward()
                optimiser.step()
        return demo, (logit_offset.detach() if n_proto else None), offset.detach(), bias.detach()

    def _score_folded(self, states, images: list[np.ndarray]) -> list[np.ndarray]:
        net, t = self.net_, self._cpu
        demo, logit_offset, offset, bias = states
        out = []
        with torch.no_grad():
            taste = net.taste(demo, logit_offset, offset)
            for row, candidates in enumerate(images):
                i = torch.as_tensor(candidates)
                z, image_bias = net.image(t["features"][i], t["codes"][i])
                pred = net.score(
                    t["base"][i], z, image_bias, demo[row : row + 1].expand(len(i), -1), taste[row], bias[row]
                )
                out.append(pred.double().numpy())
        return out

    def _taste(self, states) -> np.ndarray:
        demo, logit_offset, offset, _ = states
        with torch.no_grad():
            return self.net_.taste(demo, logit_offset, offset).numpy()

    def _user_vectors(self) -> np.ndarray:
        """Taste vectors (n_users x dim); users absent from the fit get their demographic taste."""
        net = self.net_
        u = torch.arange(len(self.known_))
        with torch.no_grad():
            known = torch.as_tensor(self.known_)[:, None].float()
            logit_offset = net.logit_offset(u) * known if net.n_prototypes else None
            return net.taste(self._cpu["demo"][u], logit_offset, net.offset(u) * known).numpy()

    def prototype_mixture(
        self, user_idx: np.ndarray | None = None, references: Sequence[References] | None = None
    ) -> np.ndarray:
        """Mixture weights over the prototypes (float32, n x n_prototypes) of fitted users or of new users' references."""
        self._check_fitted()
        net = self.net_
        if not net.n_prototypes:
            raise ValueError(f"{self.name} has no prototypes")
        if references is not None:
            demo, logit_offset, _, _ = self._fold(list(references))
        with torch.no_grad():
            if references is None:
                u = torch.as_tensor(
                    np.arange(len(self.known_)) if user_idx is None else np.asarray(user_idx, np.int64)
                )
                demo = self._cpu["demo"][u]
                logit_offset = net.logit_offset(u) * torch.as_tensor(self.known_)[u][:, None].float()
            return torch.softmax(net.demo_logits(demo) + logit_offset, dim=-1).numpy().astype(np.float32)


def _rows(data, device) -> list[torch.Tensor]:
    """The training rows as tensors: (user, image, score) of ratings, (user, image a, image b, choice) of choices."""
    columns = (
        ("user_idx", "image_a", "image_b", "choice")
        if isinstance(data, Choices)
        else ("user_idx", "image_idx", "score")
    )
    return [torch.as_tensor(getattr(data, c), device=device) for c in columns]
