"""One protocol, one evaluator for every model.

* Seen splits: the model predicts every rating of the split (its users were in the fit).
* Unseen splits: for each user, k reference ratings are drawn (seeded by the protocol seed and the user's
  external id, so every model sees the same draw) and handed to the model as the user's history; the other
  ratings are the queries. Users with fewer than k + MIN_USER_QUERIES ratings are skipped and counted.

The evaluator is the only place where reference ratings are separated from queries.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from recsys.data.dataset import Dataset, References, is_unseen_split
from recsys.errors import ColdStartNotSupported
from recsys.evaluation.metrics import MIN_USER_QUERIES, all_metrics, bootstrap_ci

CI_METRICS = ("user_srocc", "pairwise_acc")


@dataclass(frozen=True)
class Episode:
    """The references and queries of one new user."""

    references: References
    query_image_idx: np.ndarray
    query_score: np.ndarray


@dataclass
class Result:
    """One row of the leaderboard: a model on a split (and a number of shots for unseen splits)."""

    model: str
    split: str
    shots: int | None
    n_users: int
    n_ratings: int
    metrics: dict[str, float] | None
    ci95: dict[str, list[float]] | None
    fit_seconds: float
    predict_seconds: float
    skipped_users: int = 0
    status: str = "ok"
    reason: str | None = None
    per_user: dict[str, dict] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict:
        out = {
            "model": self.model,
            "split": self.split,
            "shots": self.shots,
            "n_users": self.n_users,
            "n_ratings": self.n_ratings,
            "metrics": _finite_or_none(self.metrics),
            "ci95": _finite_or_none(self.ci95),
            "fit_seconds": round(self.fit_seconds, 4),
            "predict_seconds": round(self.predict_seconds, 4),
            "skipped_users": self.skipped_users,
            "status": self.status,
        }
        if self.reason:
            out["reason"] = self.reason
        return out


class Evaluator:
    """Scores any fitted model on a dataset's splits under the one protocol.

    Args:
        dataset: the data (the model must have been fitted on it).
        shots: numbers of reference ratings per new user on unseen splits.
        seed: seed of the reference draws and of the bootstrap.
        n_bootstrap: bootstrap resamples for the 95% intervals over users.
    """

    def __init__(
        self, dataset: Dataset, *, shots: Sequence[int] = (0, 10), seed: int = 0, n_bootstrap: int = 1000
    ):
        if any(k < 0 for k in shots):
            raise ValueError(f"shots must be non-negative, got {list(shots)}")
        self.dataset = dataset
        self.shots = tuple(int(k) for k in shots)
        self.seed = seed
        self.n_bootstrap = n_bootstrap

    # ------------------------------------------------------------------ protocol
    def tasks(self, split: str) -> list[int | None]:
        """The shot counts evaluated on a split: None for seen splits."""
        return list(self.shots) if is_unseen_split(split) else [None]

    def episodes(self, split: str, shots: int) -> tuple[list[Episode], int]:
        """The new-user episodes of an unseen split at k = ``shots``, and the number of users skipped."""
        r = self.dataset.ratings[split]
        order = np.argsort(r.user_idx, kind="stable")
        users, starts = np.unique(r.user_idx[order], return_index=True)
        episodes, skipped = [], 0
        for user, chunk in zip(users, np.split(order, starts[1:]), strict=True):
            if len(chunk) < shots + MIN_USER_QUERIES:
                skipped += 1
                continue
            user_key = zlib.crc32(str(self.dataset.user_ids[user]).encode())
            rng = np.random.default_rng([self.seed, user_key])
            chosen = rng.permutation(len(chunk))
            refs, queries = chunk[chosen[:shots]], np.sort(chunk[chosen[shots:]])
            episodes.append(
                Episode(
                    References(int(user), r.image_idx[refs], r.score[refs]),
                    r.image_idx[queries],
                    r.score[queries],
                )
            )
        return episodes, skipped

    # ------------------------------------------------------------------ scoring
    def evaluate(self, model, split: str, shots: int | None = None, *, fit_seconds: float = 0.0) -> Result:
        """Score a fitted model on one split (and k for an unseen split)."""
        if split not in self.dataset.ratings:
            raise ValueError(f"no split {split!r} in {self.dataset.name}")
        name = getattr(model, "name", type(model).__name__)
        if not is_unseen_split(split):
            r = self.dataset.ratings[split]
            start = time.perf_counter()
            try:
                pred = np.asarray(model.predict(r.user_idx, r.image_idx), dtype=float)
            except ColdStartNotSupported as err:  # e.g. a scorer whose weights are not available here
                return Result(
                    name, split, None, 0, 0, None, None, fit_seconds, 0.0, 0, "unsupported", str(err)
                )
            seconds = time.perf_counter() - start
            return self._result(name, split, None, r.score, pred, r.user_idx, fit_seconds, seconds, 0)
        if shots is None:
            raise ValueError(f"{split} is an unseen split: pass shots")
        episodes, skipped = self.episodes(split, shots)
        if not episodes:
            return Result(name, split, shots, 0, 0, None, None, fit_seconds, 0.0, skipped, "empty",
                          f"no user has at least {shots + MIN_USER_QUERIES} ratings")  # fmt: skip
        start = time.perf_counter()
        try:
            preds = model.predict_new([e.references for e in episodes], [e.query_image_idx for e in episodes])
        except ColdStartNotSupported as err:
            return Result(name, split, shots, len(episodes), 0, None, None, fit_seconds, 0.0, skipped,
                          "unsupported", str(err))  # fmt: skip
        seconds = time.perf_counter() - start
        y_true = np.concatenate([e.query_score for e in episodes])
        y_pred = np.concatenate([np.asarray(p, dtype=float) for p in preds])
        user = np.concatenate([np.full(len(e.query_score), e.references.user_idx) for e in episodes])
        if len(y_pred) != len(y_true):
            raise RuntimeError(f"{name} returned {len(y_pred)} scores for {len(y_true)} queries")
        return self._result(name, split, shots, y_true, y_pred, user, fit_seconds, seconds, skipped)

    def _result(self, name, split, shots, y_true, y_pred, user, fit_seconds, seconds, skipped) -> Result:
        if not np.isfinite(y_pred).all():
            raise RuntimeError(f"{name} predicted NaN or infinite scores on {split}")
        metrics, per_user = all_metrics(y_true, y_pred, user)
        ci = {
            m: list(
                bootstrap_ci(
                    np.array(list(per_user[m].values())), n_resamples=self.n_bootstrap, seed=self.seed
                )
            )
            for m in CI_METRICS
        }
        return Result(
            model=name,
            split=split,
            shots=shots,
            n_users=int(len(np.unique(user))),
            n_ratings=int(len(y_true)),
            metrics=metrics,
            ci95=ci,
            fit_seconds=fit_seconds,
            predict_seconds=seconds,
            skipped_users=skipped,
            per_user={m: {int(k): v for k, v in values.items()} for m, values in per_user.items()},
        )


def _finite_or_none(values):
    """JSON has no NaN: a metric that could not be computed is null."""
    if values is None:
        return None
    if isinstance(values, dict):
        return {k: _finite_or_none(v) for k, v in values.items()}
    if isinstance(values, list | tuple):
        return [_finite_or_none(v) for v in values]
    return None if isinstance(values, float) and not np.isfinite(values) else values
