"""The pairwise protocol: predicting which of two images a person chooses (Pick-a-Pic and the MLLM papers).

* Seen users (``*_seen`` splits): every held-out choice of a fitted user is predicted, P(a chosen over b); the
  held-out choices are whole sessions (``recsys.data.pickapic.pair_holdout``), none shares an image with the
  user's training choices.
* New users (``*_unseen`` splits), with the rating protocol's sampler (``recsys.evaluation.episodes``), repeated
  draws and fixed queries, drawn by session (``Choices.session``: one prompt's choices, ``recsys.data.pickapic``):
  for each user and draw (seeded by the protocol seed, the user's external id and the draw) one permutation of
  the user's sessions; the pool is the first sessions that hold K choices (K the largest k), the k reference
  choices are its first k, and the queries are every choice of the sessions after the pool. So every k scores
  the same users on the same queries, references never include a query, and no image of a reference session
  appears among the queries (in Pick-a-Pic the chosen image stays for the next comparison: drawn one by one, a
  query would share its images with a reference). Users with fewer than K - 1 + their largest session +
  ``MIN_USER_PAIRS`` choices are skipped at every k, and counted. Choices without sessions are drawn by
  comparison (the repeats of one comparison together).
* Metrics: ``choice_acc`` (the share of decided choices whose chosen image the model gives the higher
  probability; a prediction of exactly 0.5 counts half; ties are excluded and counted in ``ties``),
  ``user_choice_acc`` (the same per user, averaged over users: the metric with the 95% bootstrap interval),
  ``log_loss`` (a tie counts half for each side) and ``ece`` (expected calibration error over ``ECE_BINS``
  equal-width bins of P(a), against the observed outcome, ties as 0.5). Pooled metrics are averaged over draws,
  per-user ones over draws before users. ``by_draw`` keeps each draw's ``user_choice_acc`` (the mean over the
  draw's users) and ``choice_acc`` (pooled).
* Every scored query is kept (``ChoicePredictions``: user, images a and b, choice, P(a), draw), for
  predictions.parquet.

The evaluator is the rating protocol's ``Evaluator`` with a ``ChoiceScorer`` (``pair_evaluator``). The simulator's
ground truth gives the oracle's rows (``Evaluator.oracle_result``): P(a) + P(tie) / 2 of each query.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from recsys.data.choices import TIE, ChoiceReferences, Choices, choice_sessions
from recsys.data.dataset import Dataset
from recsys.evaluation.episodes import DEFAULT_DRAWS, Episode
from recsys.evaluation.evaluator import ChoicePredictions, Evaluator, Scored
from recsys.evaluation.metrics import bootstrap_ci

#: reference choices per new user, as in the MLLM papers (8 reference pairs) and below
PAIR_SHOTS = (0, 1, 2, 4, 8)
#: query choices a new user needs beyond the largest k
MIN_USER_PAIRS = 5
#: bins of the expected calibration error
ECE_BINS = 10
#: the metrics of a pairwise row, the first the one with an interval and the one rows are ranked by
PAIR_METRICS = ("user_choice_acc", "choice_acc", "log_loss", "ece")
#: the metrics a pairwise row keeps per draw (``Result.by_draw``): the mean over the draw's users, the pooled value
BY_DRAW_METRICS = ("user_choice_acc", "choice_acc")


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
    """Choice accuracy per user (decided choices only; users without one are left out), users ascending. One
    pass over the rows (hits are 0, 0.5 or 1, so the per-user sums are exact)."""
    decided = choice != TIE
    hit = np.where(p[decided] == 0.5, 0.5, (p[decided] > 0.5) == (choice[decided] == 1.0))
    users, inverse = np.unique(user_idx[decided], return_inverse=True)
    sums = np.bincount(inverse.reshape(-1), weights=hit, minlength=len(users))
    counts = np.bincount(inverse.reshape(-1), minlength=len(users))
    return {
        int(u): float(s / c) for u, s, c in zip(users.tolist(), sums.tolist(), counts.tolist(), strict=True)
    }


class ChoiceScorer:
    """Choices: ``predict_choices`` on seen splits, ``predict_new_choices`` from ``ChoiceReferences`` on unseen ones;
    the choice metrics (module docstring) with the interval over users; the simulator's probabilities as truth."""

    unit = "choices"
    min_queries = MIN_USER_PAIRS

    def table(self, dataset: Dataset, split: str) -> Choices:
        if split not in dataset.choices:
            raise ValueError(f"no pairwise split {split!r} in {dataset.name}")
        return dataset.choices[split]

    def units(self, table: Choices) -> np.ndarray:
        """The sessions of the split's choices (all references or all queries); without sessions, the repeats
        of each comparison."""
        if table.session is not None:
            return table.session
        return choice_sessions(
            table, int(max(table.image_a.max(initial=0), table.image_b.max(initial=0))) + 1
        )

    def predict_seen(self, model, table: Choices) -> np.ndarray:
        return model.predict_choices(table.user_idx, table.image_a, table.image_b)

    def predict_new(self, model, table: Choices, episodes: list[Episode]) -> list[np.ndarray]:
        references = [
            ChoiceReferences(
                e.user_idx,
                table.image_a[e.references],
                table.image_b[e.references],
                table.choice[e.references],
            )
            for e in episodes
        ]
        a = [table.image_a[e.queries] for e in episodes]
        b = [table.image_b[e.queries] for e in episodes]
        return model.predict_new_choices(references, a, b)

    def truth(self, dataset: Dataset, split: str) -> np.ndarray | None:
        """The simulator's P(a) + P(tie) / 2 of each choice of the split, or None without ground truth."""
        return (dataset.ground_truth_choices or {}).get(split)

    def summary(self, evaluator: Evaluator, split: str, table: Choices, scored: Scored) -> dict:
        """The metric fields of a ``Result`` (module docstring) and its ``ChoicePredictions``."""
        per_draw, collected = [], defaultdict(list)
        for draw in np.unique(scored.draw):
            at = scored.draw == draw
            q, p = scored.rows[at], scored.prediction[at]
            metrics = choice_metrics(table.choice[q], p)
            users = user_choice_accuracy(table.user_idx[q], table.choice[q], p)
            metrics["user_choice_acc"] = float(np.mean(list(users.values()))) if users else float("nan")
            per_draw.append(metrics)
            for user, value in users.items():
                collected[user].append(value)
        per_user = {user: float(np.mean(v)) for user, v in collected.items()}
        values = np.array(list(per_user.values()))
        metrics = {
            m: float(np.mean([d[m] for d in per_draw])) for m in ("choice_acc", "log_loss", "ece", "ties")
        }
        metrics["user_choice_acc"] = float(values.mean()) if len(values) else float("nan")
        ci = bootstrap_ci(values, n_resamples=evaluator.n_bootstrap, seed=evaluator.seed)
        by_draw = {m: [d[m] for d in per_draw] for m in BY_DRAW_METRICS} if len(per_draw) > 1 else {}
        rows = scored.rows
        predictions = ChoicePredictions(
            table.user_idx[rows],
            table.image_a[rows],
            table.image_b[rows],
            table.choice[rows],
            scored.prediction,
            scored.draw,
        )
        return {
            "metrics": metrics,
            "ci95": {"user_choice_acc": list(ci)},
            "metric_users": {"user_choice_acc": len(per_user)},
            "by_draw": by_draw,
            "per_user": {"user_choice_acc": per_user},
            "predictions": predictions,
        }


def pair_evaluator(
    dataset: Dataset,
    *,
    shots: Sequence[int] = PAIR_SHOTS,
    seed: int = 0,
    n_bootstrap: int = 1000,
    draws: int = DEFAULT_DRAWS,
) -> Evaluator:
    """The evaluator of the pairwise protocol (module docstring): the one sampler and a ``ChoiceScorer``."""
    return Evaluator(
        dataset, shots=shots, seed=seed, n_bootstrap=n_bootstrap, draws=draws, scorer=ChoiceScorer()
    )
