"""The pairwise protocol: predicting which of two images a person chooses (Pick-a-Pic and the MLLM papers).

* Seen users (``*_seen`` splits): every held-out choice of a fitted user is predicted, P(a chosen over b).
* New users (``*_unseen`` splits), with the rating protocol's repeated draws and fixed queries: for each user and
  draw (seeded by the protocol seed, the user's external id and the draw) one permutation of the user's
  choices; the queries are every choice but the first K (K the largest k), and the k reference choices are the
  first k of the permutation, so every k scores the same users on the same queries and references never
  include a query. Users with fewer than K + ``MIN_USER_PAIRS`` choices are skipped at every k, and counted.
* Metrics: ``choice_acc`` (the share of decided choices whose chosen image the model gives the higher
  probability; a prediction of exactly 0.5 counts half; ties are excluded and counted in ``ties``),
  ``user_choice_acc`` (the same per user, averaged over users: the metric with the 95% bootstrap interval),
  ``log_loss`` (a tie counts half for each side) and ``ece`` (expected calibration error over ``ECE_BINS``
  equal-width bins of P(a), against the observed outcome, ties as 0.5). Pooled metrics are averaged over draws,
  per-user ones over draws before users.

The simulator's ground truth gives the oracle's rows (``oracle_result``): P(a) + P(tie) / 2 of each query.
"""

from __future__ import annotations

import time
import zlib
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from recsys.data.choices import TIE, ChoiceReferences, Choices
from recsys.data.dataset import Dataset, is_unseen_split
from recsys.errors import ColdStartNotSupported
from recsys.evaluation.evaluator import DEFAULT_DRAWS, Evaluator, Result, model_context
from recsys.evaluation.metrics import bootstrap_ci

#: reference choices per new user, as in the MLLM papers (8 reference pairs) and below
PAIR_SHOTS = (0, 1, 2, 4, 8)
#: query choices a new user needs beyond the largest k
MIN_USER_PAIRS = 5
#: bins of the expected calibration error
ECE_BINS = 10
#: the metrics of a pairwise row, the first the one with an interval and the one rows are ranked by
PAIR_METRICS = ("user_choice_acc", "choice_acc", "log_loss", "ece")


def choice_metrics(choice: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """Pooled pairwise metrics of outcomes ``choice`` (1 a, 0 b, 0.5 tie) and predictions ``p`` = P(a)."""
    choice, p = np.asarray(choice, np.float64), np.clip(np.asarray(p, np.float64), 1e-6, 1 - 1e-6)
    decided = choice != TIE
    hit = np.where(p == 0.5, 0.5, (p > 0.5) == (choice == 1.0))[decided]
    log_loss = -(choice * np.log(p) + (1 - choice) * np.log(1 - p))
    bins = np.minimum((p * ECE_BINS).astype(int), ECE_BINS - 1)
    counts = np.bincount(bins, minlength=ECE_BINS)
    gap = np.abs(np.bincount(bins, p - choice, minlength=ECE_BINS))
    return {
        "choice_acc": float(hit.mean()) if len(hit) else float("nan"),
        "log_loss": float(log_loss.mean()) if len(p) else float("nan"),
        "ece": float(gap.sum() / max(counts.sum(), 1)),
        "ties": float((~decided).sum()),
    }


def user_choice_accuracy(user_idx: np.ndarray, choice: np.ndarray, p: np.ndarray) -> dict[int, float]:
    """Choice accuracy per user (decided choices only; users without one are left out)."""
    out = {}
    for user in np.unique(user_idx):
        at = (user_idx == user) & (choice != TIE)
        if at.any():
            out[int(user)] = float(np.where(p[at] == 0.5, 0.5, (p[at] > 0.5) == (choice[at] == 1.0)).mean())
    return out


class PairEvaluator(Evaluator):
    """Scores any fitted model on a dataset's pairwise choices under the pairwise protocol (module docstring)."""

    def __init__(
        self,
        dataset: Dataset,
        *,
        shots: Sequence[int] = PAIR_SHOTS,
        seed: int = 0,
        n_bootstrap: int = 1000,
        draws: int = DEFAULT_DRAWS,
    ):
        super().__init__(dataset, shots=shots, seed=seed, n_bootstrap=n_bootstrap, draws=draws)

    def pair_episodes(self, split: str, shots: int, draw: int = 0) -> tuple[list[tuple], int]:
        """(references, query positions in the split) per new user at k = ``shots`` in draw ``draw``, and the
        number of users skipped (too few choices)."""
        if not 0 <= shots <= self.max_shots:
            raise ValueError(f"shots = {shots} is not within the evaluator's 0..{self.max_shots}")
        pairs = self.dataset.choices[split]
        episodes, skipped = [], 0
        for user, rows in pairs.by_user():
            if len(rows) < self.max_shots + MIN_USER_PAIRS:
                skipped += 1
                continue
            user_key = zlib.crc32(str(self.dataset.user_ids[user]).encode())
            permutation = rows[np.random.default_rng([self.seed, user_key, draw]).permutation(len(rows))]
            refs, queries = permutation[:shots], np.sort(permutation[self.max_shots :])
            references = ChoiceReferences(
                int(user), pairs.image_a[refs], pairs.image_b[refs], pairs.choice[refs]
            )
            episodes.append((references, queries))
        return episodes, skipped

    def _queries(self, split: str, shots: int | None) -> tuple[list[np.ndarray], list[list], int]:
        """Per draw: the query positions and the episodes (None on seen splits), and the users skipped."""
        if not is_unseen_split(split):
            return [np.arange(len(self.dataset.choices[split]))], [None], 0
        positions, episodes, skipped = [], [], 0
        for draw in range(self.draws):
            drawn, skipped = self.pair_episodes(split, shots, draw)
            episodes.append(drawn)
            positions.append(np.concatenate([q for _, q in drawn]) if drawn else np.zeros(0, np.int64))
        return positions, episodes, skipped

    def evaluate(self, model, split: str, shots: int | None = None, *, fit_seconds: float = 0.0) -> Result:
        """Score a fitted model on one split's choices (and k for an unseen split)."""
        if split not in self.dataset.choices:
            raise ValueError(f"no pairwise split {split!r} in {self.dataset.name}")
        name, context = model_context(model, fit_seconds)
        if is_unseen_split(split) and shots is None:
            raise ValueError(f"{split} is an unseen split: pass shots")
        pairs = self.dataset.choices[split]
        positions, episodes, skipped = self._queries(split, shots)
        if not len(positions[0]):
            reason = f"no user has at least {self.max_shots + MIN_USER_PAIRS} choices"
            return self._failed(name, split, shots, "empty", reason, context, skipped=skipped)
        start = time.perf_counter()
        try:
            predictions = [
                self._predict(model, pairs, q, e) for q, e in zip(positions, episodes, strict=True)
            ]
        except ColdStartNotSupported as err:
            n_users = len(episodes[0]) if episodes[0] else 0
            return self._failed(name, split, shots, "unsupported", str(err), context, n_users, skipped)
        seconds = time.perf_counter() - start
        return self._pair_result(name, split, shots, pairs, positions, predictions, seconds, skipped, context)

    def oracle_result(self, split: str, shots: int | None = None) -> Result | None:
        """The ground truth's row (simulated data only): P(a) + P(tie) / 2 of each query, references unused."""
        truth = (self.dataset.ground_truth_choices or {}).get(split)
        if truth is None:
            return None
        pairs = self.dataset.choices[split]
        positions, _, skipped = self._queries(split, shots)
        predictions = [truth[q].astype(np.float64) for q in positions]
        context = {"fit_seconds": 0.0, "fit_split": "train", "validation_split": None}
        return self._pair_result("oracle", split, shots, pairs, positions, predictions, 0.0, skipped, context)

    @staticmethod
    def _predict(model, pairs: Choices, queries: np.ndarray, episodes) -> np.ndarray:
        if episodes is None:
            return model.predict_choices(
                pairs.user_idx[queries], pairs.image_a[queries], pairs.image_b[queries]
            )
        a = [pairs.image_a[q] for _, q in episodes]
        b = [pairs.image_b[q] for _, q in episodes]
        out = model.predict_new_choices([r for r, _ in episodes], a, b)
        return np.concatenate([np.asarray(p, np.float64).ravel() for p in out])

    def _pair_result(
        self, name, split, shots, pairs, positions, predictions, seconds, skipped, context
    ) -> Result:
        per_draw, collected = [], defaultdict(list)
        for q, p in zip(positions, predictions, strict=True):
            if len(p) != len(q) or not np.isfinite(p).all():
                raise RuntimeError(
                    f"{name} gave {len(p)} probabilities (finite: {np.isfinite(p).all()}) for {len(q)}"
                )
            per_draw.append(choice_metrics(pairs.choice[q], p))
            for user, value in user_choice_accuracy(pairs.user_idx[q], pairs.choice[q], p).items():
                collected[user].append(value)
        per_user = {user: float(np.mean(v)) for user, v in collected.items()}
        values = np.array(list(per_user.values()))
        metrics = {
            m: float(np.mean([d[m] for d in per_draw])) for m in ("choice_acc", "log_loss", "ece", "ties")
        }
        metrics["user_choice_acc"] = float(values.mean()) if len(values) else float("nan")
        ci = {"user_choice_acc": list(bootstrap_ci(values, n_resamples=self.n_bootstrap, seed=self.seed))}
        draws = len(positions)
        return Result(
            model=name,
            split=split,
            shots=shots,
            n_users=int(len(np.unique(pairs.user_idx[positions[0]]))),
            n_ratings=int(len(positions[0])),
            metrics=metrics,
            ci95=ci,
            predict_seconds=seconds,
            skipped_users=skipped,
            draws=draws,
            metric_users={"user_choice_acc": len(per_user)},
            by_draw={"user_choice_acc": [d["choice_acc"] for d in per_draw]} if draws > 1 else {},
            per_user={"user_choice_acc": per_user},
            **context,
        )
