"""Top-N recommendations: the n images of the whole catalogue that a model scores highest for one person.

``recommend`` scores every image of the dataset for a fitted user (``predict``) or for a new user from reference
ratings (``predict_new``), leaves out the images the person has already rated unless ``include_rated`` (a fitted
user's ratings in the data the model was fitted on, ``Model.fit_split_``; on choices, the images of the user's
fitted choices; a new user's references), and returns the n highest scores, best first. Equal scores are ordered
by the images' order in the dataset, so a list is the same on every call. ``Recommender.recommend``, ``recsys
recommend`` and the service's ``GET /users/{id}/recommend`` all call it.
"""

from __future__ import annotations

import numpy as np

from recsys.data.choices import Choices
from recsys.data.dataset import Dataset, References
from recsys.errors import UserError
from recsys.models.base import DATA_POLICY, Model


def check_n(n) -> int:
    """``n`` as a positive integer, or a one-line error."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise UserError(f"recommend: n must be a positive integer, got {n!r}")
    return int(n)


def rated_images(model: Model, dataset: Dataset, user: int) -> np.ndarray:
    """Sorted indices of the images the fitted user ``user`` rated (on choices: was shown) in the data
    ``model`` was fitted on."""
    data = dataset.fit_data(getattr(model, "fit_split_", DATA_POLICY.fit_split))
    mine = data.user_idx == user
    if isinstance(data, Choices):
        return np.union1d(data.image_a[mine], data.image_b[mine])
    return np.unique(data.image_idx[mine])


def top_n(scores: np.ndarray, candidates: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` of ``candidates`` (image indices, ascending) with the highest ``scores`` (indexed by image),
    best first; equal scores by image index, NaN last."""
    values = np.asarray(scores, np.float64)[candidates]
    values = np.where(np.isnan(values), -np.inf, values)
    return candidates[np.lexsort((candidates, -values))[:n]]


def recommend(
    model: Model,
    dataset: Dataset,
    *,
    user_id=None,
    references: References | None = None,
    n: int = 10,
    include_rated: bool = False,
) -> list[dict]:
    """``[{"rank", "image_id", "score", "rated"}]``: the ``n`` images of ``dataset`` that ``model`` scores highest
    for the fitted user ``user_id`` or for a new user given by ``references`` (exactly one of them), best first.

    Without ``include_rated`` the images the person rated are left out (module docstring), so fewer than n
    come back only when the catalogue holds fewer unrated images; ``rated`` says which were rated.
    """
    if (user_id is None) == (references is None):
        raise UserError("recommend: give exactly one of a fitted user or a new user's references")
    n = check_n(n)
    images = np.arange(dataset.n_images, dtype=np.int64)
    if user_id is not None:
        user = dataset.user_index(user_id)
        if not model.known_[user]:
            raise UserError(
                f"recommend: user {user_id!r} is not in the data {model.name} was fitted on "
                f"({getattr(model, 'fit_split_', DATA_POLICY.fit_split)}); give their references instead"
            )
        scores = model.predict(np.full(len(images), user), images)
        rated = rated_images(model, dataset, user)
    else:
        scores = model.predict_new([references], [images])[0]
        rated = np.unique(references.image_idx)
    is_rated = np.zeros(dataset.n_images, dtype=bool)
    is_rated[rated] = True
    candidates = images if include_rated else images[~is_rated]
    chosen = top_n(scores, candidates, n)
    ids = dataset.image_ids[chosen].tolist()
    return [
        {"rank": rank, "image_id": image_id, "score": float(scores[i]), "rated": bool(is_rated[i])}
        for rank, (image_id, i) in enumerate(zip(ids, chosen.tolist(), strict=True), start=1)
    ]
