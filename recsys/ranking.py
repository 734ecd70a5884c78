"""Ranking candidate images for one person: the best of a generator's candidates first.

``rank_images`` scores a known user's candidates with ``predict`` or a new user's with ``predict_new`` from
reference ratings, and orders them by predicted score, highest first (equal scores keep the candidates' order).
The ``recsys rank`` command and the service's ``POST /rank`` both call it.

Candidates need not be images of the dataset. New images (files of a folder, or uploaded bytes) are embedded
once with the encoder that made the dataset's image features (through the embedding cache of ``features.embed``),
described as the dataset describes its own images (``new_images``: their features, and no metadata, which is
how the dataset encodes a missing value) and scored by the fitted model from them (``Model.with_new_images``):
one pass of the model's image-side map over the new images, no refit and nothing added to the dataset. A model
whose image side is per image id (the oracle; item_knn on co-raters) says so in one line
(``NewImagesNotSupported``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.dataset import Dataset, References
from recsys.data.encodings import ImageInputs
from recsys.errors import UserError
from recsys.models.base import Model

#: files of a candidate folder that are images
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")


@dataclass(frozen=True)
class NewImages:
    """Candidates that are not images of the dataset: their names (their ids in a ranking) and what a model reads
    of them (``ImageInputs``, rows aligned with ``names``)."""

    names: list[str]
    inputs: ImageInputs


def new_images(
    dataset: Dataset,
    names: Sequence[str],
    features: np.ndarray,
    metadata: pd.DataFrame | None = None,
    prompts: np.ndarray | None = None,
) -> NewImages:
    """New candidate images named ``names``, with feature rows ``features`` (aligned; from the encoder of the
    dataset's features), optional ``metadata`` (one row each) and optional ``prompts`` (the embedding of each
    one's prompt, by the encoder of the dataset's prompt features), encoded as ``dataset`` encodes its images.

    Raises:
        UserError: no names, a name twice or the id of a dataset image, features of another shape.
    """
    names = check_new_names(dataset, names)
    if len(features) != len(names):
        raise UserError(f"rank: {len(features)} feature rows for {len(names)} new images")
    if metadata is not None:
        metadata = metadata.set_axis(names, axis=0)
    return NewImages(names, dataset.new_image_inputs(features, metadata, prompts))


def check_new_names(dataset: Dataset, names: Sequence[str]) -> list[str]:
    """The names of new images as strings; a UserError for none, a name twice or the id of a dataset image."""
    names = [str(n) for n in names]
    if not names:
        raise UserError("rank: no new images")
    if len(set(names)) != len(names):
        raise UserError("rank: two new images have the same name")
    taken = {str(i) for i in dataset.image_ids.tolist()}
    clash = [n for n in names if n in taken]
    if clash:
        raise UserError(f"rank: new image {clash[0]!r} has the id of an image of {dataset.name}; rename it")
    return names


def rank_images(
    model: Model,
    dataset: Dataset,
    image_ids: list,
    *,
    new: NewImages | None = None,
    user_id=None,
    references: References | None = None,
) -> list[dict]:
    """``[{"rank", "image_id", "score"}]`` of the candidates, best first: the dataset's images ``image_ids`` and the
    ``new`` images (scored by ``model.with_new_images``, no refit), for the fitted user ``user_id`` or for a new
    user given by ``references`` (exactly one of them)."""
    if (user_id is None) == (references is None):
        raise UserError("rank: give exactly one of a fitted user or a new user's references")
    names = [] if new is None else new.names
    if not image_ids and not names:
        raise UserError("rank: no candidate images")
    if len(set(map(str, image_ids))) != len(image_ids):
        raise UserError("rank: a candidate image is listed twice")
    images = np.array([dataset.image_index(i) for i in image_ids], np.int64)
    ids = [*dataset.image_ids[images].tolist(), *names]  # the dataset's own ids (ints for PAMELA), then names
    scorer = model
    if new is not None:
        if model.n_images_ != dataset.n_images:
            raise UserError(
                f"rank: {model.name} was fitted on {model.n_images_} images, not {dataset.name}'s"
            )
        scorer = model.with_new_images(new.inputs)
        images = np.concatenate([images, np.arange(model.n_images_, scorer.n_images_)])
    if user_id is not None:
        user = dataset.user_index(user_id)
        if not model.known_[user]:
            raise UserError(f"rank: user {user_id!r} was not fitted; give their references instead")
        scores = scorer.predict(np.full(len(images), user), images)
    else:
        scores = scorer.predict_new([references], [images])[0]
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
