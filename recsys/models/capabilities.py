"""What each registered model can do, read from its class's flags (``recsys models`` lists it)."""

from __future__ import annotations

from recsys.data.choices import Choices
from recsys.data.dataset import Ratings
from recsys.models.base import Model
from recsys.models.registry import model_class


def model_supports(name: str) -> tuple[str, ...]:
    """What a model can do: fit ``ratings`` and ``choices`` (the kinds in its ``learns_from``), score
    ``new users`` from their references (it folds them in or predicts them), give ``taste vectors``
    (similar-user search, the atlas)."""
    cls = model_class(name)
    new_users = cls._predict_new is not Model._predict_new or cls._fold is not Model._fold
    flags = (
        ("ratings", Ratings in cls.learns_from),
        ("choices", Choices in cls.learns_from),
        ("new users", new_users),
        ("taste vectors", cls.has_taste_vectors()),
    )
    return tuple(label for label, on in flags if on)
