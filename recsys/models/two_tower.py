"""Two-tower hybrid with shared taste prototypes (a PAL-style mixture of prototypes on frozen image features).

score(u, i) = consensus(i) + image_bias(i) + demographic_bias(u) + user_bias(u) + taste(u) . z(i)

* consensus(i): the global ridge on image features and metadata (closed form, fixed): the model learns the
  personal part and a non-linear correction on top of it.
* image tower: MLP over the image embedding plus embeddings of type / group / style -> z(i) (``dim``) and a
  scalar image bias.
* user tower: taste(u) = softmax(demographic_logits(u) + logit_offset(u)) @ prototypes + offset(u): a mixture of
  ``n_prototypes`` shared prototypes (predicted from demographics, refined per user) plus a personal offset.
* loss: MSE + ``contrastive_weight`` x a logistic preference loss over pairs of one user with different scores.
* new users (towers frozen): the mixture logits, offset and bias are fitted to the k references by MAP
  (Gaussian priors whose variances are measured on the training users), with a fixed number of full-batch
  gradient steps; at k = 0 this is the demographic prior.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Self

import numpy as np
import torch
from torch import nn

from recsys.data.dataset import Dataset, References
from recsys.models.base import Model, check_positive
from recsys.models.side import metadata_columns, user_design, with_intercept
from recsys.models.torch_utils import (
    choose_device,
    global_ridge_scores,
    image_inputs,
    load_torch,
    metadata_codes,
    preference_loss,
    save_torch,
    seed_everything,
    train_loop,
)


class _TwoTowerNet(nn.Module):
    def __init__(self, n_features, meta_sizes, n_demo, n_users, *, dim, hidden, n_prototypes, dropout):
        super().__init__()
        self.image_in = nn.Linear(n_features, hidden)
        self.meta = nn.ModuleList(nn.Embedding(size, hidden) for size in meta_sizes)
        self.image_out = nn.Sequential(nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim + 1))
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
        hidden = self.image_in(features)
        for j, emb in enumerate(self.meta):
            hidden = hidden + emb(codes[:, j])
        out = self.image_out(hidden)
        return out[:, :-1], out[:, -1]

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


class TwoTower(Model):
    """Two-tower hybrid: image MLP x user mixture of shared taste prototypes, on top of the global ridge.

    Args:
        dim: taste / image embedding size.
        hidden: hidden width of the image tower.
        n_prototypes: shared taste prototypes (``use_prototypes=False`` replaces them by a linear map).
        contrastive_weight: weight of the contrastive preference loss (0 turns it off).
        temperature: temperature of the preference loss (score units).
        user_reg: L2 weight on per-user parameters (offsets, biases, mixture-logit offsets).
        epochs, batch_size, lr, weight_decay, dropout, patience: training; early stopping on ``val_seen``.
        foldin_steps, foldin_lr: gradient steps fitting a new user's parameters to its references.
        base_alpha: ridge penalty of the consensus base score.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        seed: seed of initialisation and batch order.
    """

    name = "two_tower"
    use_prototypes = True
    use_contrastive = True

    def __init__(
        self,
        *,
        dim: int = 32,
        hidden: int = 128,
        n_prototypes: int = 8,
        contrastive_weight: float = 0.5,
        temperature: float = 0.5,
        user_reg: float = 0.02,
        epochs: int = 30,
        batch_size: int = 2048,
        lr: float = 5e-3,
        weight_decay: float = 1e-5,
        dropout: float = 0.1,
        patience: int = 4,
        foldin_steps: int = 150,
        foldin_lr: float = 0.05,
        base_alpha: float = 3.0,
        device: str = "auto",
        seed: int = 0,
    ) -> None:
        for key, value in {"dim": dim, "hidden": hidden, "epochs": epochs, "batch_size": batch_size, "lr": lr,
                           "temperature": temperature, "base_alpha": base_alpha, "patience": patience}.items():  # fmt: skip
            check_positive(key, value)
        for key, value in {"n_prototypes": n_prototypes, "contrastive_weight": contrastive_weight,
                           "user_reg": user_reg, "weight_decay": weight_decay, "foldin_steps": foldin_steps,
                           "foldin_lr": foldin_lr}.items():  # fmt: skip
            check_positive(key, value, allow_zero=True)
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
        if self.use_prototypes and n_prototypes < 1:
            raise ValueError("n_prototypes must be at least 1 (use two_tower_no_prototypes for none)")
        self.dim = dim
        self.hidden = hidden
        self.n_prototypes = n_prototypes
        self.contrastive_weight = contrastive_weight
        self.temperature = temperature
        self.user_reg = user_reg
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.dropout = dropout
        self.patience = patience
        self.foldin_steps = foldin_steps
        self.foldin_lr = foldin_lr
        self.base_alpha = base_alpha
        self.device = device
        self.seed = seed

    # ------------------------------------------------------------------ fitting
    def _build(self, n_features, meta_sizes, n_demo, n_users) -> _TwoTowerNet:
        return _TwoTowerNet(
            n_features, meta_sizes, n_demo, n_users, dim=self.dim, hidden=self.hidden,
            n_prototypes=self.n_prototypes if self.use_prototypes else 0, dropout=self.dropout,
        )  # fmt: skip

    def fit(self, dataset: Dataset, split: str = "train") -> Self:
        generator = seed_everything(self.seed)
        device = choose_device(self.device)
        ratings = dataset.fit_ratings(split)
        self.base_ = global_ridge_scores(dataset, split, self.base_alpha).astype(np.float32)
        self.features_ = image_inputs(dataset)
        self.codes_, meta_sizes = metadata_codes(dataset.images, metadata_columns(dataset.images))
        self.demo_ = with_intercept(user_design(dataset.users, dataset.fit_ratings(split).user_idx))
        self.meta_ = {"meta_sizes": meta_sizes}
        self.known_ = np.zeros(dataset.n_users, dtype=bool)
        self.known_[ratings.user_idx] = True
        net = self._build(self.features_.shape[1], meta_sizes, self.demo_.shape[1], dataset.n_users).to(
            device
        )
        tensors = self._tensors(device)

        users = torch.as_tensor(ratings.user_idx, device=device)
        images = torch.as_tensor(ratings.image_idx, device=device)
        scores = torch.as_tensor(ratings.score, dtype=torch.float32, device=device)
        n = len(scores)
        n_batches = max(1, -(-n // self.batch_size))
        order = {"perm": None}

        def step(b: int) -> torch.Tensor:
            if b == 0:
                net.train()
                order["perm"] = torch.randperm(n, generator=generator).to(device)
            idx = order["perm"][b * self.batch_size : (b + 1) * self.batch_size]
            u, i, y = users[idx], images[idx], scores[idx]
            pred, penalty = self._forward(net, tensors, u, i)
            loss = torch.mean((pred - y) ** 2) + self.user_reg * penalty
            if self.use_contrastive and self.contrastive_weight > 0:
                loss = loss + self.contrastive_weight * preference_loss(pred, y, u, self.temperature)
            return loss

        validate = None
        if split == "train" and "val_seen" in dataset.ratings and len(dataset.ratings["val_seen"]):
            val = dataset.ratings["val_seen"]
            val = val.subset(self.known_[val.user_idx])
            vu = torch.as_tensor(val.user_idx, device=device)
            vi = torch.as_tensor(val.image_idx, device=device)
            vy = torch.as_tensor(val.score, dtype=torch.float32, device=device)

            def validate() -> float:
                net.eval()
                with torch.no_grad():
                    return float(torch.mean((self._forward(net, tensors, vu, vi)[0] - vy) ** 2))

        self.history_ = train_loop(
            step, n_batches, net.parameters(), epochs=self.epochs, lr=self.lr, weight_decay=self.weight_decay,
            validate=validate, patience=self.patience, desc=self.name, state=net.state_dict,
            restore=net.load_state_dict,
        )  # fmt: skip
        net.eval()
        self.net_ = net.cpu()
        self._device = torch.device("cpu")
        self._tensors_cpu = self._tensors(torch.device("cpu"))
        self._measure_priors(ratings)
        self.fitted_ = True
        return self

    def _tensors(self, device) -> dict[str, torch.Tensor]:
        return {
            "features": torch.as_tensor(self.features_, device=device),
            "codes": torch.as_tensor(self.codes_, device=device),
            "demo": torch.as_tensor(self.demo_, device=device),
            "base": torch.as_tensor(self.base_, device=device),
        }

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

    def _measure_priors(self, ratings) -> None:
        """Prior variances of new users' parameters and the noise variance, measured on the training users."""
        known = torch.as_tensor(np.flatnonzero(self.known_))
        with torch.no_grad():
            pred, _ = self._forward(self.net_, self._tensors_cpu, torch.as_tensor(ratings.user_idx),
                                    torch.as_tensor(ratings.image_idx))  # fmt: skip
            noise = float(torch.mean((pred - torch.as_tensor(ratings.score)) ** 2))
            offset_var = float((self.net_.offset.weight[known] ** 2).mean())
            bias_var = float((self.net_.user_bias.weight[known] ** 2).mean())
            logit_var = (
                float((self.net_.logit_offset.weight[known] ** 2).mean()) if self.net_.n_prototypes else 1.0
            )
        self.priors_ = np.array([noise, max(offset_var, 1e-4), max(bias_var, 1e-4), max(logit_var, 1e-2)])

    # ------------------------------------------------------------------ prediction
    def predict(self, user_idx: np.ndarray, image_idx: np.ndarray) -> np.ndarray:
        self._check_fitted()
        user_idx, image_idx = self._pairs(user_idx, image_idx)
        self._check_known(user_idx, self.known_)
        with torch.no_grad():
            pred, _ = self._forward(
                self.net_, self._tensors_cpu, torch.as_tensor(user_idx), torch.as_tensor(image_idx)
            )
        return pred.double().numpy()

    def _fold_in(self, references: Sequence[References]):
        """MAP fit of (logit offsets, offsets, biases) of new users to their references, towers frozen."""
        net, t = self.net_, self._tensors_cpu
        n_users, k_max = len(references), max([len(r) for r in references] + [1])
        images = torch.zeros(n_users, k_max, dtype=torch.long)
        target = torch.zeros(n_users, k_max)
        mask = torch.zeros(n_users, k_max)
        for row, refs in enumerate(references):
            k = len(refs)
            images[row, :k] = torch.as_tensor(np.asarray(refs.image_idx, np.int64))
            target[row, :k] = torch.as_tensor(np.asarray(refs.score, np.float32))
            mask[row, :k] = 1.0
        demo = t["demo"][torch.as_tensor([r.user_idx for r in references], dtype=torch.long)]
        n_proto = net.n_prototypes
        logit_offset = torch.zeros(n_users, max(n_proto, 1), requires_grad=True)
        offset = torch.zeros(n_users, self.dim, requires_grad=True)
        bias = torch.zeros(n_users, requires_grad=True)
        noise, offset_var, bias_var, logit_var = (float(v) for v in self.priors_)
        with torch.no_grad():
            z, image_bias = net.image(t["features"][images.reshape(-1)], t["codes"][images.reshape(-1)])
            z, image_bias = z.reshape(n_users, k_max, -1), image_bias.reshape(n_users, k_max)
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
                    demo[:, None, :].expand(-1, k_max, -1),
                    taste[:, None, :],
                    bias[:, None],
                )
                nll = (((pred - target) ** 2) * mask).sum() / noise
                prior = (offset**2).sum() / offset_var + (bias**2).sum() / bias_var
                if n_proto:
                    prior = prior + (logit_offset**2).sum() / logit_var
                (0.5 * (nll + prior)).backward()
                optimiser.step()
        return demo, (logit_offset.detach() if n_proto else None), offset.detach(), bias.detach()

    def predict_new(
        self, references: Sequence[References], image_idx: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        self._check_fitted()
        if not references:
            return []
        net, t = self.net_, self._tensors_cpu
        with torch.enable_grad():
            demo, logit_offset, offset, bias = self._fold_in(references)
        out = []
        with torch.no_grad():
            taste = net.taste(demo, logit_offset, offset)
            for row, images in enumerate(image_idx):
                i = torch.as_tensor(np.asarray(images, np.int64))
                z, image_bias = net.image(t["features"][i], t["codes"][i])
                pred = net.score(
                    t["base"][i], z, image_bias, demo[row : row + 1].expand(len(i), -1), taste[row], bias[row]
                )
                out.append(pred.double().numpy())
        return out

    def user_vectors(self) -> np.ndarray:
        """Taste vectors (float32, n_users x dim); users absent from the fit get their demographic taste."""
        self._check_fitted()
        net = self.net_
        u = torch.arange(len(self.known_))
        with torch.no_grad():
            known = torch.as_tensor(self.known_)[:, None].float()
            logit_offset = net.logit_offset(u) * known if net.n_prototypes else None
            return (
                net.taste(self._tensors_cpu["demo"][u], logit_offset, net.offset(u) * known)
                .numpy()
                .astype(np.float32)
            )

    def fold_in(self, references: Sequence[References]) -> np.ndarray:
        """Taste vectors (float32, n x dim) of new users from their references, comparable to ``user_vectors``."""
        self._check_fitted()
        if not references:
            return np.zeros((0, self.dim), np.float32)
        with torch.enable_grad():
            demo, logit_offset, offset, _ = self._fold_in(references)
        with torch.no_grad():
            return self.net_.taste(demo, logit_offset, offset).numpy().astype(np.float32)

    def prototype_mixture(
        self, user_idx: np.ndarray | None = None, references: Sequence[References] | None = None
    ) -> np.ndarray:
        """Mixture weights over the prototypes (float32, n x n_prototypes) of fitted users or of new users' references."""
        self._check_fitted()
        net = self.net_
        if not net.n_prototypes:
            raise ValueError(f"{self.name} has no prototypes")
        if references is not None:
            with torch.enable_grad():
                demo, logit_offset, _, _ = self._fold_in(references)
        with torch.no_grad():
            if references is None:
                u = torch.as_tensor(
                    np.arange(len(self.known_)) if user_idx is None else np.asarray(user_idx, np.int64)
                )
                demo = self._tensors_cpu["demo"][u]
                logit_offset = net.logit_offset(u) * torch.as_tensor(self.known_)[u][:, None].float()
            return torch.softmax(net.demo_logits(demo) + logit_offset, dim=-1).numpy().astype(np.float32)

    # ------------------------------------------------------------------ persistence
    _ARRAYS = ("base_", "features_", "codes_", "demo_", "known_", "priors_")

    def save(self, path: str | Path) -> Path:
        return save_torch(self, path, self.net_, {name: getattr(self, name) for name in self._ARRAYS})

    def _restore(self, path: str | Path) -> None:
        payload = load_torch(path)
        for name in self._ARRAYS:
            setattr(self, name, payload["arrays"][name].numpy())
        self.meta_ = payload["meta"]
        self.net_ = self._build(
            self.features_.shape[1], self.meta_["meta_sizes"], self.demo_.shape[1], len(self.known_)
        )
        self.net_.load_state_dict(payload["module"])
        self.net_.eval()
        self._tensors_cpu = self._tensors(torch.device("cpu"))
        self.fitted_ = True


class TwoTowerNoPrototypes(TwoTower):
    """Ablation: the user tower without shared prototypes (demographics map linearly to taste)."""

    name = "two_tower_no_prototypes"
    use_prototypes = False


class TwoTowerNoContrastive(TwoTower):
    """Ablation: regression loss only (``contrastive_weight`` is ignored)."""

    name = "two_tower_no_contrastive"
    use_contrastive = False
