"""The one interface every model shares.

* Hyperparameters are keyword-only constructor arguments, stored unchanged under their own names; nothing is
  learned in the constructor. ``get_params`` / ``clone`` read the signature (as scikit-learn does).
* ``fit(dataset, split="train") -> self`` reads ratings, features and side information from the dataset.
* ``predict(user_idx, image_idx) -> scores`` scores aligned (user, image) pairs of users the model was fitted
  on. Batch first: one pair is a batch of one.
* ``predict_new(references, image_idx) -> [scores]`` scores users absent from the fit from their reference
  ratings (k may be 0). A model that cannot raises ``ColdStartNotSupported``.
* Optional: ``user_vectors()`` (taste vectors for retrieval), ``save(path)`` / ``load(path)``.
"""

from __future__ import annotations

import inspect
import json
import pickle
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from recsys.data.dataset import Dataset, References
from recsys.errors import ColdStartNotSupported, UserError

SAVE_FORMAT = 1


class Model(ABC):
    """Base class of every model; see the module docstring for the contract."""

    #: registry name (set by each subclass)
    name: ClassVar[str] = "model"
    #: True when predictions for new users use their reference ratings (not only demographics)
    uses_references: ClassVar[bool] = True
    #: True when the model is personalised (predictions differ between users)
    personalised: ClassVar[bool] = True

    # ------------------------------------------------------------------ parameters
    @classmethod
    def param_names(cls) -> list[str]:
        """Names of the keyword-only hyperparameters of the constructor."""
        signature = inspect.signature(cls.__init__)
        return [p.name for p in signature.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY]

    def get_params(self) -> dict[str, Any]:
        """The hyperparameters, as passed to the constructor."""
        return {name: getattr(self, name) for name in self.param_names()}

    def clone(self, **overrides: Any) -> Self:
        """An unfitted copy with the same hyperparameters (and ``overrides``)."""
        params = self.get_params() | overrides
        return type(self)(**params)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------------ the contract
    @abstractmethod
    def fit(self, dataset: Dataset, split: str = "train") -> Self:
        """Learn from the ratings of ``split`` (``train`` or e.g. ``train+val_seen``); returns self."""

    @abstractmethod
    def predict(self, user_idx: np.ndarray, image_idx: np.ndarray) -> np.ndarray:
        """Scores (float64, n) of aligned (user, image) pairs; users must be among those fitted on."""

    def predict_new(
        self, references: Sequence[References], image_idx: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        """Scores of new users' candidate images from their reference ratings, one array per user."""
        raise ColdStartNotSupported(f"{self.name} cannot score users it was not fitted on")

    def user_vectors(self) -> np.ndarray:
        """Taste vectors (float32, n_users x d) of the fitted users, rows indexed by user_idx."""
        raise NotImplementedError(f"{self.name} has no user vectors")

    def fold_in(self, references: Sequence[References]) -> np.ndarray:
        """Taste vectors (float32, n x d, comparable to ``user_vectors()``) of new users from their references."""
        raise NotImplementedError(f"{self.name} cannot fold new users into its taste space")

    # ------------------------------------------------------------------ helpers for subclasses
    def _check_fitted(self) -> None:
        if not getattr(self, "fitted_", False):
            raise RuntimeError(f"{self.name} is not fitted; call fit(dataset) first")

    @staticmethod
    def _pairs(user_idx: np.ndarray, image_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        user_idx = np.atleast_1d(np.asarray(user_idx, dtype=np.int64))
        image_idx = np.atleast_1d(np.asarray(image_idx, dtype=np.int64))
        if user_idx.shape != image_idx.shape:
            raise ValueError(f"user_idx {user_idx.shape} and image_idx {image_idx.shape} must be aligned")
        return user_idx, image_idx

    def _check_known(self, user_idx: np.ndarray, known: np.ndarray) -> None:
        """Raise a clear error for users the model was not fitted on (``known``: boolean mask by user_idx)."""
        bad = (user_idx < 0) | (user_idx >= len(known))
        if not bad.any():
            bad = ~known[user_idx]
        if bad.any():
            raise UserError(
                f"{self.name}: user index {int(user_idx[np.argmax(bad)])} was not in the fitted ratings; "
                "score new users with predict_new(references, ...)"
            )

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Save hyperparameters (config.json) and fitted state (state.pkl) into directory ``path``."""
        self._check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        config = {"model": self.name, "format": SAVE_FORMAT, "params": self.get_params()}
        _atomic_write(path / "config.json", json.dumps(config, indent=2).encode())
        state = {k: v for k, v in self.__dict__.items() if k.endswith("_")}
        _atomic_write(path / "state.pkl", pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
        return path

    @classmethod
    def load(cls, path: str | Path) -> Model:
        """Load a model saved by ``save``; no refitting."""
        from recsys.models.registry import create_model

        path = Path(path)
        try:
            config = json.loads((path / "config.json").read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise UserError(f"{path}: not a saved model ({err})") from None
        model = create_model(config["model"], **config["params"])
        if hasattr(model, "_restore"):  # models with their own state format (torch: model.pt)
            model._restore(path)
            return model
        with open(path / "state.pkl", "rb") as fh:
            model.__dict__.update(pickle.load(fh))
        return model


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    """Raise ValueError for a hyperparameter that must be positive."""
    ok = value >= 0 if allow_zero else value > 0
    if not ok or not np.isfinite(value):
        raise ValueError(f"{name} must be {'non-negative' if allow_zero else 'positive'}, got {value!r}")
