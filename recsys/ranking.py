"""Ranking candidate images for one person: the best of a generator's candidates first.

``rank_images`` scores a known user's candidates with ``predict`` or a new user's with ``predict_new`` from
reference ratings, and orders them by predicted score, highest first (equal scores keep the candidates' order).
The ``recsys rank`` command and the service's ``POST /rank`` both call it.
"""

from __future__ import annotations

import numpy as np

from recsys.data.dataset import Dataset, References
from recsys.errors import UserError
from recsys.models.base import Model


def rank_images(
    model: Model,
    dataset: Dataset,
    image_ids: list,
    *,
    user_id=None,
    references: References | None = None,
) -> list[dict]:
    """``[{"rank", "image_id", "score"}]`` of the candidates ``image_ids``, best first, for the fitted user
    ``user_id`` or for a new user given by ``references`` (exactly one of them)."""
    if (user_id is None) == (references is None):
        raise UserError("rank: give exactly one of a fitted user or a new user's references")
    if not image_ids:
        raise UserError("rank: no candidate images")
    if len(set(map(str, image_ids))) != len(image_ids):
        raise UserError("rank: a candidate image is listed twice")
    images = np.array([dataset.image_index(i) for i in image_ids], np.int64)
    ids = dataset.image_ids[images].tolist()  # the dataset's own ids (ints for PAMELA, as typed elsewhere)
    if user_id is not None:
        user = dataset.user_index(user_id)
        if not model.known_[user]:
            raise UserError(f"rank: user {user_id!r} was not fitted; give their references instead")
        scores = model.predict(np.full(len(images), user), images)
    else:
        scores = model.predict_new([references], [images])[0]
    order = np.argsort(-np.asarray(scores, np.float64), kind="stable")
    return [
        {"rank": rank, "image_id": ids[i], "score": float(scores[i])}
        for rank, i in enumerate(order.tolist(), start=1)
    ]
