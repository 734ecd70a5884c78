"""Learned preference tokens: the learned-user-preference MLLM approach with a small transformer over frozen features.

Input sequence of a user: [demographic token, the n preference tokens selected from a learnable pool, the k
reference tokens (projected image embedding + an embedding of the rating's residual from the consensus),
the candidate tokens]. Candidates attend to everything before them and to themselves, never to each other, so a
candidate's score does not depend on which other candidates share its batch. A head on each candidate's output
gives the personal correction to the consensus (global ridge) score.

Preference-token selection (prompt-pool style): the mean reference token (plus the demographic token) is a query;
the ``n_selected`` pool entries whose keys are most cosine-similar are prepended, and a key-matching loss pulls the
selected keys toward the query. Training is episodic on the training users (k references drawn uniformly in
0..``max_references``, ``n_queries`` queries) with MSE + a contrastive preference loss; early stopping on
``val_seen`` (the validation split of every model, ``recsys.models.base.DATA_POLICY``), scored as any fitted user
is: its fixed training references in, its val_seen ratings as queries. New users need no retraining:
references in, scores out. A fitted user's references are a seeded fixed sample of up to ``max_references`` of
its training ratings.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from recsys.data.dataset import Dataset, Ratings, References, group_by
from recsys.data.encodings import with_intercept
from recsys.models.base import Model
from recsys.models.params import at_least_one, hyper, non_negative, positive
from recsys.models.torch_utils import (
    DeepParams,
    choose_device,
    fit_module,
    global_ridge_scores,
    preference_loss,
    seed_everything,
)

_CHUNK = 256  # candidates scored per forward pass


class _PrefTokenNet(nn.Module):
    def __init__(self, n_features, n_demo, *, dim, heads, layers, pool_size, n_selected, dropout):
        super().__init__()
        self.image = nn.Sequential(nn.Linear(n_features, dim), nn.GELU(), nn.Linear(dim, dim))
        self.rating = nn.Linear(1, dim)
        self.rating_gate = nn.Linear(1, dim, bias=False)
        self.demo = nn.Linear(n_demo, dim)
        self.role = nn.Embedding(4, dim)  # demographic, preference token, reference, candidate
        self.n_selected = n_selected
        if n_selected:
            self.pool = nn.Parameter(torch.randn(pool_size, dim) * 0.1)
            self.keys = nn.Parameter(torch.randn(pool_size, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 1))

    def select(self, query):
        """Indices (batch x n_selected) of the preference tokens closest to ``query``, and the key-matching loss."""
        sim = nn.functional.normalize(query, dim=-1) @ nn.functional.normalize(self.keys, dim=-1).T
        top = sim.topk(self.n_selected, dim=-1)
        return top.indices, (1.0 - top.values).mean()

    def forward(self, ref_x, ref_resid, ref_mask, cand_x, demo):
        """Personal corrections (batch x n_cand) and the key loss; ``ref_mask`` is 1 for real references."""
        batch, k = ref_mask.shape
        demo_tok = (self.demo(demo) + self.role.weight[0])[:, None, :]
        ref_tok = self.image(ref_x) + self.rating(ref_resid[..., None]) + self.role.weight[2]
        ref_tok = ref_tok + self.rating_gate(ref_resid[..., None]) * self.image(ref_x)
        cand_tok = self.image(cand_x) + self.role.weight[3]
        parts, pads = [demo_tok], [torch.zeros(batch, 1, dtype=torch.bool, device=demo.device)]
        key_loss = demo.new_zeros(())
        if self.n_selected:
            counts = ref_mask.sum(1, keepdim=True).clamp(min=1)
            query = (ref_tok * ref_mask[..., None]).sum(1) / counts + demo_tok[:, 0]
            chosen, key_loss = self.select(query)
            parts.append(self.pool[chosen] + self.role.weight[1])
            pads.append(torch.zeros(batch, self.n_selected, dtype=torch.bool, device=demo.device))
        parts.append(ref_tok)
        pads.append(ref_mask == 0)
        prefix = torch.cat(parts, 1)
        prefix_pad = torch.cat(pads, 1)
        n_prefix, n_cand = prefix.shape[1], cand_tok.shape[1]
        seq = torch.cat([prefix, cand_tok], 1)
        # attention mask (True = blocked): candidates see the prefix and themselves; the prefix sees the prefix
        blocked = torch.ones(n_prefix + n_cand, n_prefix + n_cand, dtype=torch.bool, device=demo.device)
        blocked[:, :n_prefix] = False
        blocked[n_prefix:, n_prefix:] = ~torch.eye(n_cand, dtype=torch.bool, device=demo.device)
        pad = torch.cat([prefix_pad, torch.zeros(batch, n_cand, dtype=torch.bool, device=demo.device)], 1)
        # combine as a float mask so that padded keys are blocked per sequence
        mask = torch.zeros(batch, n_prefix + n_cand, n_prefix + n_cand, device=demo.device)
        mask = mask.masked_fill(blocked[None] | pad[:, None, :], float("-inf"))
        mask = mask.repeat_interleave(self.encoder.layers[0].self_attn.num_heads, 0)
        out = self.encoder(seq, mask=mask)
        return self.head(out[:, n_prefix:]).squeeze(-1), key_loss


class PrefTokens(Model):
    """Transformer over [demographics, selected preference tokens, k rated references, candidates]."""

    name = "pref_tokens"

    class Params(DeepParams):
        dim: int = at_least_one(64, "transformer width (a multiple of heads)")
        heads: int = at_least_one(4, "attention heads")
        layers: int = at_least_one(2, "transformer layers")
        dropout: float = hyper(0.0, low=0, high=1, high_open=True, doc="transformer dropout")
        pool_size: int = at_least_one(16, "learnable preference tokens in the pool")
        n_selected: int = non_negative(4, "preference tokens selected per user")
        use_pool: bool = hyper(True, doc="select preference tokens from the pool (else none)")
        key_weight: float = non_negative(0.1, "weight of the key-matching loss")
        max_references: int = at_least_one(
            32, "most references per episode (and per fitted user at prediction)"
        )
        n_queries: int = at_least_one(32, "queries per training episode")
        episodes_per_user: int = at_least_one(8, "episodes per training user per epoch")
        batch_users: int = at_least_one(32, "episodes per step")
        epochs: int = at_least_one(12, "maximum training epochs")
        lr: float = positive(2e-3, "Adam learning rate")
        patience: int = at_least_one(3, "epochs without validation improvement before stopping")

        def validate(self) -> None:
            if self.dim % self.heads:
                raise ValueError(f"dim ({self.dim}) must be a multiple of heads ({self.heads})")
            if self.n_selected > self.pool_size:
                raise ValueError(f"n_selected ({self.n_selected}) cannot exceed pool_size ({self.pool_size})")

    def _build(self, n_features: int, n_demo: int) -> _PrefTokenNet:
        return _PrefTokenNet(
            n_features,
            n_demo,
            dim=self.dim,
            heads=self.heads,
            layers=self.layers,
            pool_size=self.pool_size,
            n_selected=self.n_selected if self.use_pool else 0,
            dropout=self.dropout,
        )

    def _build_module(self, key: str, state: dict) -> _PrefTokenNet:
        return self._build(state["features_"].shape[1], state["demo_"].shape[1])

    # ------------------------------------------------------------------ fitting
    def _fit(self, dataset: Dataset, ratings: Ratings, split: str) -> None:
        generator = seed_everything(self.seed)
        rng = np.random.default_rng(self.seed)
        device = choose_device(self.device)
        self.base_ = global_ridge_scores(dataset, ratings, self.base_alpha).astype(np.float32)
        self.features_ = dataset.image_inputs()
        self.demo_ = with_intercept(dataset.user_design(ratings.user_idx))
        net = self._build(self.features_.shape[1], self.demo_.shape[1]).to(device)
        feats = torch.as_tensor(self.features_, device=device)
        demo_all = torch.as_tensor(self.demo_, device=device)
        base = torch.as_tensor(self.base_, device=device)

        grouped = ratings.by_user()
        users = np.array([user for user, _ in grouped], np.int64)
        per_user = [(ratings.image_idx[rows], ratings.score[rows]) for _, rows in grouped]
        # a fitted user's references: a seeded fixed sample of its training ratings
        self.ref_start_ = np.zeros(dataset.n_users + 1, np.int64)
        ref_images, ref_scores = [[] for _ in range(dataset.n_users)], [[] for _ in range(dataset.n_users)]
        ref_rng = np.random.default_rng([self.seed, 1])
        for user, (imgs, scs) in zip(users, per_user, strict=True):
            pick = np.sort(ref_rng.permutation(len(imgs))[: self.max_references])
            ref_images[user], ref_scores[user] = imgs[pick], scs[pick]
        self.ref_start_[1:] = np.cumsum([len(x) for x in ref_images])
        self.ref_image_ = np.concatenate([np.asarray(x, np.int64) for x in ref_images])
        self.ref_score_ = np.concatenate([np.asarray(x, np.float32) for x in ref_scores])

        eligible = [j for j, (imgs, _) in enumerate(per_user) if len(imgs) >= 2]
        n_steps = max(1, -(-len(eligible) * self.episodes_per_user // self.batch_users))

        def batch_tensors(episodes, k_max, q_max):
            n = len(episodes)
            ref_i = np.zeros((n, max(k_max, 1)), np.int64)
            ref_r = np.zeros((n, max(k_max, 1)), np.float32)
            ref_m = np.zeros((n, max(k_max, 1)), np.float32)
            cand_i = np.zeros((n, q_max), np.int64)
            cand_y = np.zeros((n, q_max), np.float32)
            cand_m = np.zeros((n, q_max), bool)
            user_i = np.zeros(n, np.int64)
            for row, (user, ri, rs, ci, cy) in enumerate(episodes):
                ref_i[row, : len(ri)], ref_r[row, : len(ri)], ref_m[row, : len(ri)] = (
                    ri,
                    rs - self.base_[ri],
                    1,
                )
                cand_i[row, : len(ci)], cand_y[row, : len(ci)], cand_m[row, : len(ci)] = ci, cy, True
                user_i[row] = user
            t = lambda a: torch.as_tensor(a, device=device)  # noqa: E731
            return t(ref_i), t(ref_r), t(ref_m), t(cand_i), t(cand_y), t(cand_m), t(user_i)

        def loss_of(batch, train: bool):
            ref_i, ref_r, ref_m, cand_i, cand_y, cand_m, user_i = batch
            correction, key_loss = net(feats[ref_i], ref_r, ref_m, feats[cand_i], demo_all[user_i])
            pred = (base[cand_i] + correction)[cand_m]
            target = cand_y[cand_m]
            loss = torch.mean((pred - target) ** 2)
            if train:
                loss = loss + self.key_weight * key_loss
                if self.contrastive_weight > 0:
                    group = torch.arange(len(cand_i), device=device)[:, None].expand_as(cand_i)[cand_m]
                    loss = loss + self.contrastive_weight * preference_loss(
                        pred, target, group, self.temperature
                    )
            return loss

        def step(b: int) -> torch.Tensor:
            net.train()
            k = int(rng.integers(0, self.max_references + 1))
            chosen = rng.choice(eligible, size=min(self.batch_users, len(eligible)), replace=False)
            episodes = []
            for j in chosen:
                imgs, scs = per_user[j]
                kk = min(k, len(imgs) - 1)
                perm = rng.permutation(len(imgs))[: kk + self.n_queries]
                episodes.append((users[j], imgs[perm[:kk]], scs[perm[:kk]], imgs[perm[kk:]], scs[perm[kk:]]))
            return loss_of(batch_tensors(episodes, k, self.n_queries), True)

        validate = None
        val_episodes = self._validation_episodes(self._validation(dataset, split))
        if val_episodes:
            k_max = max(len(e[1]) for e in val_episodes)
            q_max = max(len(e[3]) for e in val_episodes)
            val_batch = batch_tensors(val_episodes, k_max, q_max)

            def validate() -> float:
                net.eval()
                with torch.no_grad():
                    return float(loss_of(val_batch, False))

        del generator
        fit_module(self, net, step, n_steps, validate)

    def _validation_episodes(self, r: Ratings | None) -> list:
        """One episode per fitted user of the validation ratings: its fixed references (as ``predict`` uses
        them) and its validation ratings as queries (early stopping)."""
        if r is None:
            return []
        episodes = []
        for user, rows in r.by_user():
            ref_images, ref_scores = self._references_of(user)
            if not self.known_[user] or not len(ref_images):
                continue
            episodes.append((user, ref_images, ref_scores, r.image_idx[rows], r.score[rows]))
        return episodes

    # ------------------------------------------------------------------ prediction
    def _score_user(self, user_idx: int, ref_images, ref_scores, images: np.ndarray) -> np.ndarray:
        """Scores of one user's candidates from its references (at most max_references, the first ones)."""
        ref_images = np.asarray(ref_images, np.int64)[: self.max_references]
        ref_scores = np.asarray(ref_scores, np.float32)[: self.max_references]
        feats = torch.as_tensor(self.features_)
        k = len(ref_images)
        ref_i = torch.as_tensor(ref_images if k else np.zeros(1, np.int64))[None]
        ref_r = torch.as_tensor((ref_scores - self.base_[ref_images]) if k else np.zeros(1, np.float32))[None]
        ref_m = torch.ones(1, max(k, 1)) if k else torch.zeros(1, 1)
        demo = torch.as_tensor(self.demo_[[user_idx]])
        out = []
        with torch.no_grad():
            for start in range(0, len(images), _CHUNK):
                chunk = images[start : start + _CHUNK]
                correction, _ = self.net_(
                    feats[ref_i], ref_r, ref_m, feats[torch.as_tensor(chunk)][None], demo
                )
                out.append(self.base_[chunk].astype(np.float64) + correction[0].double().numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def _references_of(self, user: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.ref_start_[user], self.ref_start_[user + 1]
        return self.ref_image_[lo:hi], self.ref_score_[lo:hi]

    def _predict(self, user_idx: np.ndarray, image_idx: np.ndarray) -> np.ndarray:
        out = np.zeros(len(user_idx))
        for user, rows in group_by(user_idx):
            out[rows] = self._score_user(user, *self._references_of(user), image_idx[rows])
        return out

    def _predict_new(self, references: list[References], images: list[np.ndarray]) -> list[np.ndarray]:
        return [
            self._score_user(int(refs.user_idx), refs.image_idx, refs.score, candidates)
            for refs, candidates in zip(references, images, strict=True)
        ]

    def active_tokens(self, references: Sequence[References]) -> list[np.ndarray]:
        """Indices of the preference tokens each user's references select (sorted by similarity)."""
        self._check_fitted()
        if not self.net_.n_selected:
            raise ValueError(f"{self.name} has no preference-token pool")
        out = []
        feats = torch.as_tensor(self.features_)
        with torch.no_grad():
            for refs in references:
                imgs = np.asarray(refs.image_idx, np.int64)[: self.max_references]
                resid = np.asarray(refs.score, np.float32)[: self.max_references] - self.base_[imgs]
                demo_tok = (
                    self.net_.demo(torch.as_tensor(self.demo_[[refs.user_idx]]))[0] + self.net_.role.weight[0]
                )
                query = demo_tok
                if len(imgs):
                    x, r = feats[torch.as_tensor(imgs)], torch.as_tensor(resid)[:, None]
                    tok = self.net_.image(x) + self.net_.rating(r) + self.net_.role.weight[2]
                    tok = tok + self.net_.rating_gate(r) * self.net_.image(x)
                    query = tok.mean(0) + demo_tok
                out.append(self.net_.select(query[None])[0][0].numpy())
        return out

    def _user_vectors(self) -> np.ndarray:
        """The query (history summary) of each fitted user (float32, n_users x dim); zeros for others."""
        out = np.zeros((len(self.known_), self.dim), np.float32)
        for user in np.flatnonzero(self.known_):
            out[user] = self._history_summary(*self._references_of(int(user)))
        return out

    def _fold(self, references: list[References]) -> np.ndarray:
        """History summaries (float32, n x dim) of new users' references, comparable to ``user_vectors``."""
        out = np.zeros((len(references), self.dim), np.float32)
        for row, refs in enumerate(references):
            imgs = np.asarray(refs.image_idx, np.int64)[: self.max_references]
            if len(imgs):
                out[row] = self._history_summary(
                    imgs, np.asarray(refs.score, np.float32)[: self.max_references]
                )
        return out

    def _history_summary(self, imgs: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """Mean reference token (image + centred rating) of one user's history (float32, dim)."""
        feats = torch.as_tensor(self.features_)
        with torch.no_grad():
            x, r = feats[torch.as_tensor(imgs)], torch.as_tensor(scores - self.base_[imgs])[:, None]
            tok = self.net_.image(x) + self.net_.rating(r) + self.net_.rating_gate(r) * self.net_.image(x)
            return tok.mean(0).numpy()
