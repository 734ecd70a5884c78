"""The one interface every model shares; the base class does the checks and the persistence.

* Hyperparameters are declared once, as a nested frozen dataclass ``Params`` (see ``recsys.models.params``):
  keyword-only constructor arguments, validated with clear messages, read back as attributes
  (``model.factors``), by ``get_params`` and by ``clone``. Nothing is learned in the constructor.
* ``fit(dataset, split="train") -> self`` hands the model a ``FitView`` of the data (the fit split, the
  validation split of the one ``DATA_POLICY``, side information; never test ratings or, but for the oracle,
  the ground truth), records which users the fit saw (``known_``) and calls the model's
  ``_fit(view, ratings, split)``. A model that early-stops or calibrates reads the validation ratings with
  ``self._validation(view, split)``; ``validation_split_`` then records it.
* ``predict(user_idx, image_idx)`` checks that the model is fitted, the pairs aligned and (for personalised
  models) the users known, then calls ``_predict``. Batch first: one pair is a batch of one.
* ``predict_new(references, image_idx)`` scores users absent from the fit from their reference ratings. A model
  with taste vectors writes ``_fold`` (references -> per-user state) and ``_score_folded`` (state -> scores);
  ``fold_in`` and ``predict_new`` both follow from them. Others write ``_predict_new`` or stay unsupported
  (``ColdStartNotSupported``, which the evaluator reports).
* ``user_vectors()`` / ``fold_in(references)``: taste vectors for retrieval, from ``_user_vectors`` and
  ``_taste`` (the taste part of a folded state; the state itself by default).
* Typed inputs: ``_fit`` receives the fit split's data as they are, ``Ratings`` or ``Choices`` (pairwise choices,
  ``recsys.data.choices``). Each model declares which it learns from in ``learns_from``; on data of another kind
  ``fit`` raises ``DataNotSupported`` (reported unsupported, with the reason). ``fitted_on_`` records the kind. ``predict_choices`` gives
  P(a chosen over b) = sigmoid(s(a) - s(b)): Bradley-Terry on the model's scores, which pair-trained models
  learn on that scale. New users come with reference choices: ``predict_new_choices`` folds them in with
  ``_fold_choices`` (by default each choice becomes two pseudo-ratings, the chosen image 1 and the other 0, given
  to ``_fold``) and scores with ``_score_folded``.
* ``save(path)`` / ``Model.load(path)``: ``recsys.models.persistence`` (JSON, ``.npz``, torch state dicts).
  Fitted state is every public attribute ending with ``_``; a model with a torch module writes
  ``_build_module`` to make the empty module that the saved weights are loaded into, and ``_after_load`` for
  anything it keeps only in memory.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np

from recsys.data.choices import ChoiceReferences, Choices
from recsys.data.dataset import Dataset, Ratings, References
from recsys.errors import ColdStartNotSupported, DataNotSupported, UserError
from recsys.models.params import Hyperparameters
from recsys.models.persistence import SAVE_FORMAT, fitted_state, write_model_dir


@dataclass(frozen=True)
class DataPolicy:
    """Which data every model fits on, declared once for all of them.

    Every model fits on ``fit_split``. Every model that early-stops or calibrates does so on the same
    ``validation_split``: val_seen, because every model can score it as it scores test_seen (known users,
    their fit state), and because val_unseen users then stay out of every fit and every stopping rule.
    Models that neither stop early nor calibrate use the fit split only. A tuned leaderboard fits the same way
    (train, validated on val_seen, as the study's trials were), so a tuned row differs from an untuned one only
    in its hyperparameters; val_seen is not added to the fit, which would leave a stopping rule nothing to stop
    on and make any gain partly the extra data's.
    """

    fit_split: str = "train"
    validation_split: str = "val_seen"

    def describe(self) -> str:
        return (
            f"Every model fits on {self.fit_split}; every model that stops early or calibrates uses "
            f"{self.validation_split} (the same split for all of them; recorded per row as validation_split), "
            f"the others {self.fit_split} only. Tuned and untuned rows fit alike (a tuned model with its study's "
            "best hyperparameters, as the study's trials were fitted), so they differ only in hyperparameters. No "
            "model sees test ratings while it fits; the oracle alone reads the simulator's ground truth."
        )


#: The one data policy of every fit, tuned or not.
DATA_POLICY = DataPolicy()


class Model(ABC):
    """Base class of every model; see the module docstring for the contract."""

    #: registry name (presets of the same class get their own name from the registry)
    name: ClassVar[str] = "model"

    class Params(Hyperparameters):
        """No hyperparameters."""

    #: False for models that score any user the same way (``predict`` then accepts users outside the fit)
    needs_known_users: ClassVar[bool] = True
    #: True only for the oracle: its fit view holds the simulator's expected score of every rated pair
    needs_ground_truth: ClassVar[bool] = False
    #: the kinds of fit data ``_fit`` accepts: ``Ratings``, ``Choices`` or both
    learns_from: ClassVar[tuple[type, ...]] = (Ratings,)

    def __init__(self, **params: Any) -> None:
        unknown = sorted(set(params) - set(self.param_names()))
        if unknown:
            raise TypeError(
                f"unknown parameter(s) {', '.join(unknown)}; it takes {', '.join(self.param_names()) or 'none'}"
            )
        self.params = self.Params(**params)

    def __getattr__(self, key: str) -> Any:
        params = self.__dict__.get("params")
        if params is not None and key in type(params).__dataclass_fields__:
            return getattr(params, key)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {key!r}")

    # ------------------------------------------------------------------ parameters
    @classmethod
    def param_names(cls) -> list[str]:
        """Names of the hyperparameters, in declaration order."""
        return cls.Params.names()

    def get_params(self) -> dict[str, Any]:
        """The hyperparameters (every one, defaults included)."""
        return self.params.as_dict()

    def clone(self, **overrides: Any) -> Self:
        """An unfitted copy with the same hyperparameters (and ``overrides``) and the same name."""
        copy = type(self)(**(self.get_params() | overrides))
        copy.name = self.name
        return copy

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why the model cannot run on this machine (a missing extra, weights, a GPU), or None when it can."""
        return None

    @classmethod
    def has_taste_vectors(cls) -> bool:
        """True when the model gives ``user_vectors()`` and ``fold_in()`` (for similar-user search)."""
        return cls._user_vectors is not Model._user_vectors

    # ------------------------------------------------------------------ the contract
    def fit(self, dataset: Dataset, split: str = DATA_POLICY.fit_split) -> Self:
        """Learn from the ratings or choices of ``split`` (``train`` or e.g. ``train+val_seen``); returns self.

        The model sees a ``FitView``: ``split``'s data, the policy's validation split (unless ``split``
        includes it) and the side information, nothing else.
        """
        view = dataset.fit_view(split, DATA_POLICY.validation_split, ground_truth=self.needs_ground_truth)
        data = view.fit_data(split)
        if not isinstance(data, self.learns_from):
            kinds = " or ".join(kind_of(t) for t in self.learns_from)
            raise DataNotSupported(
                f"{self.name} learns from {kinds} only; {dataset.name} holds {kind_of(data)}"
            )
        self.known_ = np.zeros(dataset.n_users, dtype=bool)
        self.known_[data.user_idx] = True
        self.fit_split_, self.validation_split_ = split, None
        self.fitted_on_ = kind_of(data)
        self._fit(view, data, split)
        self.fitted_ = True
        return self

    def stopping_epoch(self) -> int | None:
        """Epochs the validation split chose when the last fit stopped early on it (best epoch + 1), else None.

        Read from ``history_``: a dict with ``best_epoch`` (``torch_utils.train_loop``) or a list of validation
        losses per epoch, lower is better. A study records it for each trial.
        """
        history = getattr(self, "history_", None)
        if self.validation_split_ is None or not history:
            return None
        if isinstance(history, dict):
            best = history.get("best_epoch")
            return None if best is None else int(best) + 1
        return int(np.argmin(np.asarray(history, dtype=float))) + 1

    def predict(self, user_idx: np.ndarray, image_idx: np.ndarray) -> np.ndarray:
        """Scores (float64, n) of aligned (user, image) pairs; users must be among those fitted on."""
        self._check_fitted()
        user_idx, image_idx = _pairs(user_idx, image_idx)
        if self.needs_known_users:
            self._check_known(user_idx)
        return np.asarray(self._predict(user_idx, image_idx), dtype=np.float64)

    def predict_new(
        self, references: Sequence[References], image_idx: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        """Scores of new users' candidate images from their reference ratings, one array per user."""
        self._check_fitted()
        references = list(references)
        images = [np.atleast_1d(np.asarray(i, dtype=np.int64)) for i in image_idx]
        if len(references) != len(images):
            raise ValueError(f"{len(references)} users' references but {len(images)} candidate lists")
        return [np.asarray(s, dtype=np.float64) for s in self._predict_new(references, images)]

    def predict_choices(self, user_idx: np.ndarray, image_a: np.ndarray, image_b: np.ndarray) -> np.ndarray:
        """P(a chosen over b) (float64, n) for aligned (user, a, b) of users fitted on."""
        user_idx, image_a = _pairs(user_idx, image_a)
        return _sigmoid(self.predict(user_idx, image_a) - self.predict(user_idx, image_b))

    def predict_new_choices(
        self,
        references: Sequence[ChoiceReferences],
        image_a: Sequence[np.ndarray],
        image_b: Sequence[np.ndarray],
    ) -> list[np.ndarray]:
        """P(a chosen over b) of new users' candidate pairs from their reference choices, one array per user."""
        self._check_fitted()
        references = list(references)
        if type(self)._fold is Model._fold and type(self)._fold_choices is Model._fold_choices:
            raise ColdStartNotSupported(f"{self.name} cannot score users it was not fitted on")
        a = [np.atleast_1d(np.asarray(x, np.int64)) for x in image_a]
        b = [np.atleast_1d(np.asarray(x, np.int64)) for x in image_b]
        scores = self._score_folded(
            self._fold_choices(references), [np.concatenate(p) for p in zip(a, b, strict=True)]
        )
        return [_sigmoid(s[: len(x)] - s[len(x) :]) for s, x in zip(scores, a, strict=True)]

    def _fold_choices(self, references: list[ChoiceReferences]) -> Any:
        """Per-user state from reference choices; by default each choice as two pseudo-ratings (``_fold``)."""
        return self._fold([References(r.user_idx, *r.as_ratings()) for r in references])

    def user_vectors(self) -> np.ndarray:
        """Taste vectors (float32, n_users x d) of the dataset's users, rows indexed by user_idx."""
        if not self.has_taste_vectors():
            raise NotImplementedError(f"{self.name} has no user vectors")
        self._check_fitted()
        return np.asarray(self._user_vectors(), dtype=np.float32)

    def fold_in(self, references: Sequence[References]) -> np.ndarray:
        """Taste vectors (float32, n x d, comparable to ``user_vectors()``) of new users from their references."""
        if not self.has_taste_vectors():
            raise NotImplementedError(f"{self.name} cannot fold new users into its taste space")
        self._check_fitted()
        references = list(references)
        if not references:
            return np.zeros((0, self.user_vectors().shape[1]), np.float32)
        return np.asarray(self._taste(self._fold(references)), dtype=np.float32).reshape(len(references), -1)

    # ------------------------------------------------------------------ hooks a model writes
    @abstractmethod
    def _fit(self, dataset: Dataset, data: Ratings | Choices, split: str) -> None:
        """Learn from ``data`` (the fit split's ratings or choices, of a kind in ``learns_from``) and the dataset's
        side information."""

    @abstractmethod
    def _predict(self, user_idx: np.ndarray, image_idx: np.ndarray) -> np.ndarray:
        """Scores of checked, aligned int64 pairs."""

    def _predict_new(self, references: list[References], images: list[np.ndarray]) -> list[np.ndarray]:
        if type(self)._fold is Model._fold:
            raise ColdStartNotSupported(f"{self.name} cannot score users it was not fitted on")
        return self._score_folded(self._fold(references), images)

    def _fold(self, references: list[References]) -> Any:
        """Per-user state (whatever ``_score_folded`` and ``_taste`` read) of new users from their references."""
        raise NotImplementedError

    def _score_folded(self, states: Any, images: list[np.ndarray]) -> list[np.ndarray]:
        """Scores of each new user's candidates from the states ``_fold`` made."""
        raise NotImplementedError

    def _taste(self, states: Any) -> np.ndarray:
        """Taste vectors (n x d) from folded states (the states themselves by default)."""
        return np.asarray(states)

    def _user_vectors(self) -> np.ndarray:
        raise NotImplementedError

    def _build_module(self, key: str, state: dict[str, Any]) -> Any:
        """An empty torch module for the saved weights of attribute ``key``, shaped from the other ``state``."""
        raise TypeError(f"{self.name} saved a module {key} but cannot build one")

    def _after_load(self) -> None:  # noqa: B027 - optional hook; most models keep nothing in memory only
        """Rebuild what the model keeps only in memory (caches), after its state was loaded."""

    def _validation(self, dataset: Dataset, split: str, kind: type = Ratings) -> Ratings | Choices | None:
        """The policy's validation split (``DATA_POLICY.validation_split``, the same for every model) for early
        stopping or calibration: its ratings, or with ``kind=Choices`` its choices. None when the fit includes it
        (e.g. ``train+val_seen``) or the dataset has none of that kind. Records ``validation_split_``."""
        declared = DATA_POLICY.validation_split
        held = (dataset.choices if kind is Choices else dataset.ratings).get(declared, ())
        if declared in split.split("+") or not len(held):
            return None
        self.validation_split_ = declared
        return held

    # ------------------------------------------------------------------ checks
    def _check_fitted(self) -> None:
        if not getattr(self, "fitted_", False):
            raise RuntimeError(f"{self.name} is not fitted; call fit(dataset) first")

    def _check_known(self, user_idx: np.ndarray) -> None:
        """A clear error for users the model was not fitted on."""
        known = self.known_
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
        """Save hyperparameters and fitted state into directory ``path`` (see ``recsys.models.persistence``)."""
        self._check_fitted()
        config = {
            "model": self.name,
            "class": type(self).__name__,
            "format": SAVE_FORMAT,
            "params": self.get_params(),
        }
        return write_model_dir(path, config, fitted_state(self))

    @classmethod
    def load(cls, path: str | Path) -> Model:
        """Load a model saved by ``save``, without refitting; ``SavedModelError`` if it cannot be used."""
        from recsys.models.registry import load_model

        return load_model(path)


def kind_of(data: Ratings | Choices | type) -> str:
    """ "ratings" or "choices": the kind of fit data (or of a fit data class)."""
    cls = data if isinstance(data, type) else type(data)
    return "choices" if issubclass(cls, Choices) else "ratings"


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, np.float64)))


def _pairs(user_idx: np.ndarray, image_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    user_idx = np.atleast_1d(np.asarray(user_idx, dtype=np.int64))
    image_idx = np.atleast_1d(np.asarray(image_idx, dtype=np.int64))
    if user_idx.shape != image_idx.shape:
        raise ValueError(f"user_idx {user_idx.shape} and image_idx {image_idx.shape} must be aligned")
    return user_idx, image_idx
