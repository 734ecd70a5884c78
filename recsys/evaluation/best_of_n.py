"""Best of n: how well a model picks, for one person, the best of n candidate images (a generator's best-of-n).

For each user, the user's scored queries (one reference draw's queries on unseen splits) are shuffled, seeded by
the protocol seed, n and the user's external id, so every model meets the same groups, and cut into groups of n
(the last incomplete group dropped). The model's pick in a group is the image it scores highest (of equal scores,
the first in the group's shuffled order).

* ``best_of_n_uplift@n``: the observed score of the pick minus the group's mean observed score, averaged over
  groups (0 for a random pick, in score units);
* ``best_of_n_hit@n``: the share of groups where the pick is one of the user's favourites (an image with the
  group's highest observed score; ties in the observed score all count as favourites);
* ``best_of_n_true_uplift@n`` (simulated data only): the same uplift in the simulator's noise-free expected score.

The non-personal reference is the consensus model (``ridge``): the report shows each model's uplift beside it.
"""

from __future__ import annotations

import zlib

import numpy as np

from recsys.data.dataset import group_by

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
    uplift, hit, true_uplift = [], [], []
    for user, rows in group_by(user_idx):
        if len(rows) < n:
            continue
        key = zlib.crc32(str(user_ids[user]).encode())
        shuffled = rows[np.random.default_rng([seed, n, key]).permutation(len(rows))]
        groups = shuffled[: len(shuffled) // n * n].reshape(-1, n)
        pick = np.argmax(prediction[groups], axis=1)
        observed = score[groups].astype(np.float64)
        chosen = observed[np.arange(len(groups)), pick]
        uplift.append(chosen - observed.mean(1))
        hit.append(chosen >= observed.max(1))
        if truth is not None:
            expected = truth[groups].astype(np.float64)
            true_uplift.append(expected[np.arange(len(groups)), pick] - expected.mean(1))
    out = {
        f"best_of_n_uplift@{n}": float(np.concatenate(uplift).mean()) if uplift else float("nan"),
        f"best_of_n_hit@{n}": float(np.concatenate(hit).mean()) if hit else float("nan"),
    }
    if truth is not None:
        out[f"best_of_n_true_uplift@{n}"] = (
            float(np.concatenate(true_uplift).mean()) if true_uplift else float("nan")
        )
    return out
