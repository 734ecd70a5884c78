"""Ranking candidate images for one person: the best of a generator's candidates first.

``rank_images`` scores a known user's candidates with ``predict`` or a new user's with ``predict_new`` from
reference ratings, and orders them by predicted score, highest first (equal scores keep the candidates' order).
The ``recsys rank`` command and the service's ``POST /rank`` both call it, through ``rank_candidates``.

Candidates need not be images of the dataset. New images (files of a folder, or uploaded bytes) are embedded
with the encoder that made the dataset's image features (through the embedding cache of ``features.embed``),
appended to the dataset as images without ratings and without metadata (``with_new_images``), and scored by the
model fitted on that dataset (``rank_candidates``): its fit sees exactly the ratings it saw before, and it scores
the new images from their features as it scores any image it has no rating of (PAMELA's seen-split images).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.dataset import Dataset, References
from recsys.errors import UserError
from recsys.models.base import Model

#: files of a candidate folder that are images
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")


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


def candidate_files(folder: Path) -> list[Path]:
    """The image files (``IMAGE_SUFFIXES``) directly in ``folder``, by name; an error when there are none."""
    files = sorted(p for p in Path(folder).iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) to rank")
    return files


def check_encoder(dataset: Dataset, encoder: str | None) -> str:
    """The encoder new images must be embedded with: the one that made ``dataset``'s image features."""
    if dataset.image_features is None:
        raise UserError(
            f"{dataset.name} has no image features, so new images cannot be compared with its images; "
            "embed the data with --encoder NAME"
        )
    if encoder is None or dataset.feature_source != encoder:
        raise UserError(
            "new images must be embedded by the encoder that made the data's image features "
            f"({dataset.feature_source}); pass --encoder NAME, which embeds the data's images and the new ones "
            "alike"
        )
    return encoder


def with_new_images(dataset: Dataset, image_ids: Sequence[str], features: np.ndarray) -> Dataset:
    """``dataset`` with images appended: ids ``image_ids``, feature rows ``features`` (aligned), no ratings and
    no metadata. Existing images, users and ratings keep their indices."""
    features = np.asarray(features, np.float32)
    if dataset.image_features is None or features.shape != (len(image_ids), dataset.image_features.shape[1]):
        have = None if dataset.image_features is None else dataset.image_features.shape
        raise UserError(f"new image features have shape {features.shape}; the data's have shape {have}")
    names = [str(i) for i in image_ids]
    if len(set(names)) != len(names):
        raise UserError("rank: two new images have the same name")
    taken = {str(i) for i in dataset.image_ids.tolist()}
    clash = [n for n in names if n in taken]
    if clash:
        raise UserError(f"rank: new image {clash[0]!r} has the id of an image of {dataset.name}; rename it")
    blank = pd.DataFrame(index=range(len(names)), columns=dataset.images.columns, dtype=object)
    return replace(
        dataset,
        image_ids=np.concatenate([dataset.image_ids.astype(object), np.array(names, dtype=object)]),
        images=pd.concat([dataset.images.astype(object), blank], ignore_index=True),
        image_features=np.vstack([dataset.image_features, features]),
    )


def rank_candidates(
    fit: Callable[[Dataset], Model],
    dataset: Dataset,
    image_ids: list,
    *,
    new_images: tuple[list[str], np.ndarray] | None = None,
    user_id=None,
    references: References | None = None,
) -> list[dict]:
    """``rank_images`` over the dataset's images ``image_ids`` and ``new_images`` (names, embedding rows), by the
    model ``fit(data)`` returns for the data that hold them all: ``dataset`` itself without new images, else
    ``with_new_images(dataset, ...)``."""
    names, data = [], dataset
    if new_images is not None and len(new_images[0]):
        names = [str(n) for n in new_images[0]]
        data = with_new_images(dataset, names, new_images[1])
    return rank_images(fit(data), data, [*image_ids, *names], user_id=user_id, references=references)
