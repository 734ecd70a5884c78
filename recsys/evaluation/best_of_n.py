"""Best of n: how well a model picks, for one person, the best of n candidate images (a generator's best-of-n).

For each user, the user's scored queries (one reference draw's queries on unseen splits) are shuffled, seeded by
the protocol seed, n and the user's external id, so every model meets the same groups, and cut into groups of n
(the last incomplete group dropped): ``recsys.evaluation.episodes.groups_of_n``. The model's pick in a group is the
image it scores highest. Candidates tied at the top score share the pick: the group counts the mean of their
outcomes (the expectation of a pick drawn at random among them), so a constant predictor's uplift is exactly 0
whatever the grouping seed, instead of the outcome of whichever image the shuffle put first.

* ``best_of_n_uplift@n``: the observed score of the pick minus the group's mean observed score, averaged over
  groups (0 for a random pick, in score units);
* ``best_of_n_hit@n``: the share of groups where the pick is one of the user's favourites (an image with the
  group's highest observed score; ties in the observed score all count as favourites);
* ``best_of_n_true_uplift@n`` (simulated data only): the same uplift in the simulator's noise-free expected score.

Each user's mean uplift (``per_user``) is kept, so that a model's uplift can be compared with the consensus model's
(the registry role ``consensus``) by a paired interval over users (``recsys.evaluation.stats``).
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
) -> tuple[dict[str, float], dict[int, float]]:
    """Best-of-n metrics (module docstring) of aligned queries, NaN when no user has n queries; and each user's
    mean uplift over its groups (user index -> uplift)."""
    groups = groups_of_n(user_idx, n, user_ids=user_ids, seed=seed)
    if not len(groups):
        out = {f"best_of_n_uplift@{n}": float("nan"), f"best_of_n_hit@{n}": float("nan")}
        return out | ({f"best_of_n_true_uplift@{n}": float("nan")} if truth is not None else {}), {}
    predicted = prediction[groups]
    share = (predicted == predicted.max(1, keepdims=True)).astype(np.float64)
    share /= share.sum(1, keepdims=True)  # the pick: uniform over the candidates tied at the top score
    observed = score[groups].astype(np.float64)
    uplift = (share * observed).sum(1) - observed.mean(1)
    favourite = observed >= observed.max(1, keepdims=True)
    out = {
        f"best_of_n_uplift@{n}": float(uplift.mean()),
        f"best_of_n_hit@{n}": float((share * favourite).sum(1).mean()),
    }
    if truth is not None:
        expected = truth[groups].astype(np.float64)
        out[f"best_of_n_true_uplift@{n}"] = float(((share * expected).sum(1) - expected.mean(1)).mean())
    owners = user_idx[groups[:, 0]]
    users, inverse = np.unique(owners, return_inverse=True)
    per_user = np.bincount(inverse, uplift) / np.bincount(inverse)
    return out, dict(zip(users.tolist(), per_user.tolist(), strict=True))
