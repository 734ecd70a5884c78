"""Best of n: how well a model picks, for one person, the best of n candidate images (a generator's best-of-n).

For each user, the user's scored queries (one reference draw's queries on unseen splits) are shuffled, seeded by
the protocol seed, n and the user's external id, so every model meets the same groups, and cut into groups of n
(the last incomplete group dropped): ``recsys.evaluation.episodes.groups_of_n``. The model's pick in a group is the image it scores highest (of equal scores,
the first in the group's shuffled order).

* ``best_of_n_uplift@n``: the observed score of the pick minus the group's mean observed score, averaged over
  groups (0 for a random pick, in score units);
* ``best_of_n_hit@n``: the share of groups where the pick is one of the user's favourites (an image with the
  group's highest observed score; ties in the observed score all count as favourites);
* ``best_of_n_true_uplift@n`` (simulated data only): the same uplift in the simulator's noise-free expected score.

The non-personal reference is the consensus model (``ridge``): the report shows each model's uplift beside it.
"""

from __future__ import annotations

import numpy as np

from recsys.evaluation.episodes import groups_of_n

#: group sizes evaluated
BEST_OF_N = (2, 4, 8)


def best_of_n(
    user_idx: np.ndarray,
    score: np.ndarray,
    prediction: np.ndarray,
    n: int,
    *,
    user_ids: np.ndarray,
    seed: int = 0,
    truth: np.ndarray | None = None,
) -> dict[str, float]:
    """Best-of-n metrics (module docstring) of aligned queries; NaN when no user has n queries."""
    groups = groups_of_n(user_idx, n, user_ids=user_ids, seed=seed)
    if not len(groups):
        out = {f"best_of_n_uplift@{n}": float("nan"), f"best_of_n_hit@{n}": float("nan")}
        return out | ({f"best_of_n_true_uplift@{n}": float("nan")} if truth is not None else {})
    pick = np.argmax(prediction[groups], axis=1)
    observed = score[groups].astype(np.float64)
    chosen = observed[np.arange(len(groups)), pick]
    out = {
        f"best_of_n_uplift@{n}": float((chosen - observed.mean(1)).mean()),
        f"best_of_n_hit@{n}": float((chosen >= observed.max(1)).mean()),
    }
    if truth is not None:
        expected = truth[groups].astype(np.float64)
        out[f"best_of_n_true_uplift@{n}"] = float(
            (expected[np.arange(len(groups)), pick] - expected.mean(1)).mean()
        )
    return out
