"""The one interface every model shares; the base class does the checks and the persistence.

* Hyperparameters are declared once, as a nested frozen dataclass ``Params`` (see ``recsys.models.params``):
  keyword-only constructor arguments, validated with clear messages, read back as attributes
  (``model.factors``), by ``get_params`` and by ``clone``. Nothing is learned in the constructor.
* ``fit(dataset, split="train") -> self`` refuses, in one line, a fit too large for the memory available
  (``recsys.models.params.check_memory``), then hands the model a ``FitView`` of the data (the fit split, the
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
* ``placeable(image_idx)``: which images the model scores from what it learned of them; the others (no
  training rating, no features or metadata) get its documented fallback, the average image, and the evaluator
  counts them. A model writes ``_placeable`` when it has such images.
* Typed inputs: ``_fit`` receives the fit split's data as they are, ``Ratings`` or ``Choices`` (pairwise choices,
  ``recsys.data.choices``). Each model declares which it learns from in ``learns_from``; on data of another kind
  ``fit`` raises ``DataNotSupported`` (reported unsupported, with the reason). ``fitted_on_`` records the kind. ``predict_choices`` gives
  P(a chosen over b) = sigmoid(s(a) - s(b)): Bradley-Terry on the model's scores, which pair-trained models
  learn on that scale. New users come with reference choices: ``predict_new_choices`` folds them in with
  ``_fold_choices`` (by default each choice becomes two pseudo-ratings, the chosen image 1 and the other 0, given
  to ``_fold``) and scores with ``_score_folded``.
* New images: ``with_new_images(inputs)`` returns a light copy that also scores images the model was not fitted
  with (``ImageInputs``: features and metadata encoded with the dataset's levels), as image indices
  ``n_images_ ..`` in order, by every scoring method (``predict``, ``predict_new``, choices); ``score_new_images``
  scores one person's new images directly. A model that reads image content keeps its fitted image-side map (a
  ``LinearMap`` of the design, an image tower, a projection) and writes ``_new_image_state(inputs)``: the fitted
  attributes of the copy, its per-image tables with the new images' rows appended from that map. No refit, and
  the model itself is not changed (the service scores from several threads). A model whose image side is per
  image id raises ``NewImagesNotSupported`` (one line), the default.
* ``save(path)`` / ``Model.load(path)``: ``recsys.models.persistence`` (JSON, ``.npz``, torch state dicts).
  Fitted state is every public attribute ending with ``_``, each declared in the class's ``state_schema``
  (``recsys.models.schema``: kinds, dtypes and shapes in data sizes and hyperparameters), which a load checks
  before anything is used; a model with a torch module writes
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
from recsys.data.encodings import ImageInputs
from recsys.errors import ColdStartNotSupported, DataNotSupported, NewImagesNotSupported, UserError
from recsys.models.params import DataSizes, Hyperparameters, check_memory
from recsys.models.persistence import SAVE_FORMAT, fitted_state, write_model_dir
from recsys.models.schema import merged_schema


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

    #: the fitted state every model saves (``recsys.models.schema``); each model adds its own keys
    state_schema: ClassVar[dict[str, Any]] = {
        "known_": "bool[users]",
        "n_images_": "int=images",
        "image_layout_": {"features": ["int", "None"], "metadata": "list[str]"},
        "fit_split_": "str",
        "validation_split_": ["str", "None"],
        "fitted_on_": "str",
        "fitted_": "bool",
    }

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
        features = 0 if dataset.image_features is None else int(dataset.image_features.shape[1])
        sizes = DataSizes(dataset.n_users, dataset.n_images, features, len(data))
        check_memory(self.name, self.params, sizes)
        if not isinstance(data, self.learns_from):
            kinds = " or ".join(kind_of(t) for t in self.learns_from)
            raise DataNotSupported(
                f"{self.name} learns from {kinds} only; {dataset.name} holds {kind_of(data)}"
            )
        self.known_ = np.zeros(dataset.n_users, dtype=bool)
        self.known_[data.user_idx] = True
        self.n_images_ = dataset.n_images
        metadata = dataset.metadata()
        features = dataset.image_features
        # what new images must look like to be scored beside the fitted ones (``with_new_images``)
        self.image_layout_ = {
            "features": None if features is None else int(features.shape[1]),
            "metadata": list(metadata.names),
        }
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
        self._check_images(image_idx)
        return np.asarray(self._predict(user_idx, image_idx), dtype=np.float64)

    def placeable(self, image_idx: np.ndarray) -> np.ndarray:
        """True (bool, n) where the model scores an image from what it learned of it: the image's own training
        ratings or, through its features or metadata, images like it; False where it scores its fallback instead
        (an image with no training rating and no side information scores as the average image: the global mean
        plus the user's offset, or the item bias prior; each model's docstring says which). The evaluator counts
        the predictions that used a fallback."""
        self._check_fitted()
        return np.asarray(self._placeable(np.atleast_1d(np.asarray(image_idx, np.int64))), dtype=bool)

    def _placeable(self, image_idx: np.ndarray) -> np.ndarray:
        """``placeable`` of checked int64 image indices; every image by default (models that score every image
        from its content, or the same for every image)."""
        return np.ones(len(image_idx), dtype=bool)

    def predict_new(
        self, references: Sequence[References], image_idx: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        """Scores of new users' candidate images from their reference ratings, one array per user."""
        self._check_fitted()
        references = list(references)
        images = [np.atleast_1d(np.asarray(i, dtype=np.int64)) for i in image_idx]
        if len(references) != len(images):
            raise ValueError(f"{len(references)} users' references but {len(images)} candidate lists")
        for candidates in images:
            self._check_images(candidates)
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

    def with_new_images(self, inputs: ImageInputs) -> Self:
        """A light copy of this fitted model that also scores ``len(inputs)`` images it was not fitted with, as image
        indices ``n_images_``, ``n_images_ + 1``, ... in the order of ``inputs`` (made by
        ``dataset.new_image_inputs``), for every scoring method. Their rows come from the fitted image-side map
        (``_new_image_state``): no refit. The model itself is not changed; the copy shares its arrays.

        Raises:
            NewImagesNotSupported: the model scores only the images it was fitted with (one line).
            UserError: ``inputs`` are not encoded like the images the model was fitted on.
        """
        self._check_fitted()
        layout = self.image_layout_
        features = None if inputs.features is None else int(inputs.features.shape[1])
        if features != layout["features"] or list(inputs.metadata.names) != layout["metadata"]:
            raise UserError(
                f"{self.name}: the new images are described by {features or 'no'} features and "
                f"{len(inputs.metadata.names)} metadata levels; the images it was fitted on by "
                f"{layout['features'] or 'no'} and {len(layout['metadata'])}: build them with new_image_inputs of "
                "the dataset it was fitted on"
            )
        state = self._new_image_state(inputs)
        extended = object.__new__(type(self))
        vars(extended).update(vars(self))
        vars(extended).update(state, n_images_=self.n_images_ + len(inputs))
        return extended

    def score_new_images(
        self, inputs: ImageInputs, *, user_idx: int | None = None, references: References | None = None
    ) -> np.ndarray:
        """Scores (float64, m) of images the model was not fitted with, for one fitted user ``user_idx`` or one new
        user given by ``references`` (exactly one of them); see ``with_new_images``."""
        if (user_idx is None) == (references is None):
            raise ValueError("give exactly one of user_idx or references")
        extended = self.with_new_images(inputs)
        images = np.arange(self.n_images_, extended.n_images_)
        if user_idx is not None:
            return extended.predict(np.full(len(images), user_idx), images)
        return extended.predict_new([references], [images])[0]

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

    def _new_image_state(self, inputs: ImageInputs) -> dict[str, Any]:
        """The fitted attributes that differ in ``with_new_images``'s copy: each per-image table with the rows of
        ``inputs`` appended (``append_rows``), computed from the fitted image-side map. The default: none can be."""
        raise NewImagesNotSupported(
            f"{self.name} cannot score images it was not fitted with: it keeps no map from image features or "
            "metadata to scores"
        )

    def saved_schema(self, path: Path) -> dict[str, Any]:
        """The schema a saved copy of this model at ``path`` is checked against (``recsys.models.schema``): the
        class's ``state_schema`` merged over its bases. A model whose state depends on what it saved (an ensemble
        of other models) reads what it needs from ``path`` first."""
        return merged_schema(type(self))

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

    def _check_images(self, image_idx: np.ndarray) -> None:
        """A clear error for image indices outside the images the model scores (those it was fitted with, and
        those ``with_new_images`` added)."""
        if len(image_idx) and (image_idx.min() < 0 or image_idx.max() >= self.n_images_):
            bad = image_idx[(image_idx < 0) | (image_idx >= self.n_images_)][0]
            raise UserError(
                f"{self.name}: image index {int(bad)} is not one of its {self.n_images_} images; score images it "
                "was not fitted with through with_new_images"
            )

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
    def load(cls, path: str | Path, dataset: Dataset | None = None) -> Model:
        """Load a model saved by ``save``, without refitting; ``SavedModelError`` (one line) if it cannot be used:
        unreadable, or its state not what the model's ``state_schema`` declares (for ``dataset``'s sizes, given
        the dataset it is loaded for)."""
        from recsys.models.registry import load_model

        return load_model(path, dataset)


def append_rows(table: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """A new ``table`` (n x ...) with ``rows`` (m x ...) after its own, in the table's dtype (``_new_image_state``)."""
    return np.concatenate([table, np.asarray(rows, table.dtype).reshape(-1, *table.shape[1:])])


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
