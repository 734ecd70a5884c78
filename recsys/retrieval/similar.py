"""Similar users and similar images: a FAISS index over a model's taste vectors (or image features), with
explanations from the ratings themselves.

A neighbour comes with its similarity and why: the visual groups and art styles both people rate above their
own average, and how much they agree on the images both rated.

Ids live at the edges. The index knows rows by position only: for users, position p is row p of the fitted
users' vectors, that is user index ``users[p]`` and id ``dataset.user_ids[users[p]]``; for images, position
p is image index p.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys.data.dataset import Dataset, References
from recsys.errors import UserError
from recsys.models.base import Model
from recsys.retrieval.index import IndexInputError, VectorIndex, vectors_fingerprint
from recsys.retrieval.index_io import load_index, save_index

MIN_AFFINITY = 0.25  # a group or style "rates highly" when its mean centred score is at least this
MIN_CATEGORY_RATINGS = 2
MAX_EXPLAINED = 3
#: File name of the saved user index in a fitted model's directory (its sidecar adds ``.json``).
USER_INDEX_FILE = "user_index.faiss"


@dataclass(frozen=True)
class Taste:
    """What one person's ratings say: mean score, centred affinity per group/style, rated images."""

    mean: float
    affinities: dict[str, dict[str, float]]  # column -> level -> mean centred score
    ratings: dict[int, float]  # image_idx -> score


def taste_of(dataset: Dataset, image_idx: np.ndarray, scores: np.ndarray, columns: list[str]) -> Taste:
    """Summarise ratings as per-category affinities (mean of the user-centred scores)."""
    image_idx = np.asarray(image_idx, np.int64)
    scores = np.asarray(scores, float)
    mean = float(scores.mean()) if len(scores) else 0.0
    centred = scores - mean
    affinities: dict[str, dict[str, float]] = {}
    for column in columns:
        levels = dataset.images[column].to_numpy()[image_idx]
        per_level: dict[str, float] = {}
        for level in {v for v in levels if isinstance(v, str)}:
            mask = levels == level
            if mask.sum() >= MIN_CATEGORY_RATINGS:
                per_level[level] = float(centred[mask].mean())
        affinities[column] = per_level
    return Taste(mean, affinities, dict(zip(image_idx.tolist(), scores.tolist(), strict=True)))


def explain_pair(a: Taste, b: Taste) -> dict:
    """Why two people look alike: categories both rate highly, and agreement on co-rated images."""
    out: dict = {}
    for column, levels in a.affinities.items():
        shared = [
            (min(value, b.affinities.get(column, {}).get(level, -np.inf)), level)
            for level, value in levels.items()
            if value >= MIN_AFFINITY and b.affinities.get(column, {}).get(level, -np.inf) >= MIN_AFFINITY
        ]
        out[f"shared_{column}"] = [level for _, level in sorted(shared, reverse=True)[:MAX_EXPLAINED]]
    common = sorted(set(a.ratings) & set(b.ratings))
    out["co_rated"] = len(common)
    agreement = None
    if len(common) >= 3:
        x = np.array([a.ratings[i] for i in common])
        y = np.array([b.ratings[i] for i in common])
        if np.ptp(x) > 0 and np.ptp(y) > 0:
            agreement = round(float(np.corrcoef(x, y)[0, 1]), 4)
    out["agreement"] = agreement
    return out


class SimilarUsers:
    """Nearest neighbours among the fitted users of a model, by taste vector (cosine).

    Args:
        model: a fitted model with ``user_vectors()`` (and ``fold_in`` for queries by references).
        dataset: the dataset it was fitted on (for ids and explanations).
        index: a built index over the fitted users' taste vectors (row p: user ``users[p]``), e.g. from
            :meth:`load`; built when None.
        index_params: parameters of :class:`VectorIndex` (kind, device, ...).

    Raises:
        UserError: the model has no taste vectors, fewer than two users were fitted, or (an
            ``IndexInputError``) ``index`` was not built from these users' vectors.
    """

    def __init__(
        self,
        model: Model,
        dataset: Dataset,
        *,
        index: VectorIndex | None = None,
        index_params: dict | None = None,
    ):
        self.model = model
        self.dataset = dataset
        try:
            vectors = model.user_vectors()
        except NotImplementedError:
            raise UserError(
                f"{model.name} has no taste vectors; pick a model with user vectors: mf, als, bpr or lightfm on "
                "any table, user_ridge or two_tower with image features"
            ) from None
        self.users = dataset.train_users()  # index position -> user index
        if len(self.users) < 2:
            raise UserError(f"{dataset.name}: similar users need at least two fitted users")
        fitted_vectors = vectors[self.users]
        if index is None:
            index = VectorIndex(**(index_params or {})).build(fitted_vectors)
        elif len(index) != len(self.users) or index.fingerprint_ != vectors_fingerprint(fitted_vectors):
            raise IndexInputError(
                f"the user index ({len(index)} vectors) was not built from the taste vectors of {model.name}'s "
                f"{len(self.users)} fitted users on {dataset.name}; rebuild it"
            )
        self.index = index
        self._vectors = fitted_vectors
        self._position = np.full(dataset.n_users, -1, np.int64)  # user index -> index position
        self._position[self.users] = np.arange(len(self.users))
        train = dataset.ratings["train"]
        self._columns = [c for c in ("type", "group", "style") if c in dataset.images.columns]
        order = np.argsort(train.user_idx, kind="stable")
        starts = np.searchsorted(train.user_idx[order], self.users)
        ends = np.searchsorted(train.user_idx[order], self.users, side="right")
        self._tastes = {
            int(u): taste_of(dataset, train.image_idx[order[s:e]], train.score[order[s:e]], self._columns)
            for u, s, e in zip(self.users, starts, ends, strict=True)
        }

    def _check_k(self, k: int, exclude: int) -> None:
        if not 1 <= k <= len(self.users) - exclude:
            raise UserError(f"k must be between 1 and {len(self.users) - exclude}, got {k}")

    def _neighbours(self, positions: np.ndarray, scores: np.ndarray, taste: Taste) -> list[dict]:
        out = []
        ids = self.dataset.user_ids[self.users[positions]].tolist()  # the data's own ids: int or str
        for user, user_id, score in zip(self.users[positions].tolist(), ids, scores.tolist(), strict=True):
            out.append({"user_id": user_id, "score": float(score), **explain_pair(taste, self._tastes[user])})
        return out

    def by_user(self, user_id, k: int = 10) -> list[dict]:
        """The k users most similar to a fitted user, most similar first, never the user itself."""
        user = self.dataset.user_index(user_id)
        if user not in self._tastes:
            raise UserError(
                f"user {user_id!r} has no training ratings; query by reference ratings instead, or fit on every "
                "rating (--fit-on all)"
            )
        self._check_k(k, exclude=1)
        if not np.any(self._vectors[self._position[user]]):
            raise UserError(
                f"user {user_id!r} has a zero taste vector under {self.model.name} (its ratings carry no signal "
                "for this model, e.g. none above the user's mean); try --model mf"
            )
        result = self.index.search_positions(self._position[[user]], k)
        return self._neighbours(result.positions[0], result.scores[0], self._tastes[user])

    def by_references(self, image_ids, scores, k: int = 10) -> list[dict]:
        """The k fitted users most similar to a new user described by reference ratings (fold-in, then search)."""
        if len(image_ids) != len(scores) or len(image_ids) == 0:
            raise UserError("references need as many scores as image ids, and at least one")
        image_idx = np.array([self.dataset.image_index(i) for i in image_ids], np.int64)
        scores = np.asarray(scores, float)
        lo, hi = self.dataset.score_range
        if not np.isfinite(scores).all() or (scores < lo).any() or (scores > hi).any():
            raise UserError(f"reference scores must lie in [{lo:g}, {hi:g}]")
        self._check_k(k, exclude=0)
        try:
            vector = self.model.fold_in([References(-1, image_idx, scores.astype(np.float32))])
        except NotImplementedError:
            raise UserError(f"{self.model.name} cannot fold new users into its taste space") from None
        if not np.any(vector):
            raise UserError(
                "these references carry no taste signal (a zero taste vector); add more varied ratings"
            )
        result = self.index.search(vector, k)
        return self._neighbours(
            result.positions[0], result.scores[0], taste_of(self.dataset, image_idx, scores, self._columns)
        )

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        """Save the index beside the model (``directory/user_index.faiss`` + sidecar)."""
        return save_index(self.index, Path(directory) / USER_INDEX_FILE)

    @classmethod
    def load(cls, directory: str | Path, model: Model, dataset: Dataset) -> SimilarUsers:
        """Reload an index saved by :meth:`save`, without rebuilding it.

        Raises:
            IndexInputError: the saved index is missing or unusable, or was built from other vectors than
                this model's fitted users.
        """
        return cls(model, dataset, index=load_index(Path(directory) / USER_INDEX_FILE))


class SimilarImages:
    """Nearest images by image features (cosine)."""

    def __init__(self, dataset: Dataset, *, index_params: dict | None = None):
        if dataset.image_features is None:
            raise UserError(f"{dataset.name} has no image features; pass --image-features or --encoder")
        self.dataset = dataset
        # Position p is image index p. Under cosine an all-zero feature row has similarity 0 to every image.
        self.index = VectorIndex(**(index_params or {})).build(dataset.image_features)

    def by_image(self, image_id, k: int = 10) -> list[dict]:
        """The k images most similar to an image, most similar first, never the image itself."""
        idx = self.dataset.image_index(image_id)
        if not 1 <= k < self.dataset.n_images:
            raise UserError(f"k must be between 1 and {self.dataset.n_images - 1}, got {k}")
        result = self.index.search_positions([idx], k)
        out = []
        positions = result.positions[0]
        for image, iid, score in zip(
            positions.tolist(),
            self.dataset.image_ids[positions].tolist(),
            result.scores[0].tolist(),
            strict=True,
        ):
            row = self.dataset.images.iloc[image]
            meta = {
                c: (None if not isinstance(row[c], str) else row[c])
                for c in ("type", "group", "style", "prompt")
                if c in row
            }
            out.append({"image_id": iid, "score": float(score), **meta})
        return out


def fitted_model_dir(
    workspace: Path, model_name: str, params: dict, dataset: Dataset, fit_on: str = "train"
) -> Path:
    """Where a fitted model and its index are kept: keyed by model, parameters, dataset fingerprint and what it
    fitted on (``fit_on``: train, or all for every split; a model of one is never taken for the other)."""
    identity = [model_name, params, dataset.fingerprint()] + (
        [] if fit_on == "train" else [f"fit_on={fit_on}"]
    )
    key = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode())
    return workspace / "models" / f"{model_name}-{key.hexdigest()[:12]}"


def default_taste_model(dataset: Dataset) -> str:
    """The model similar-user search uses when none is named: ``user_ridge`` (taste over image features and
    metadata) where the dataset has them, else ``mf`` (taste learned from the ratings alone)."""
    return "user_ridge" if dataset.image_design(required=False) is not None else "mf"


def load_or_fit_model(
    model_name: str | None,
    dataset: Dataset,
    *,
    params: dict | None = None,
    workspace: Path = Path("runs"),
    progress: bool = True,
    fit_on: str = "train",
) -> tuple[Model, Path, bool]:
    """A fitted model: reloaded from the workspace when saved before, else fitted and saved. Returns it, its
    folder and whether it was fitted now. A saved model that cannot be loaded is refitted, with one line on
    stderr. ``model_name`` None: ``default_taste_model``. ``fit_on`` ("train", or "all" for a ``dataset`` whose
    every split was joined into train, ``Dataset.all_as_train``) is part of the saved model's key."""
    from recsys.models.registry import create_model

    model_name = model_name or default_taste_model(dataset)
    params = params or {}
    model = create_model(model_name, **params)
    directory = fitted_model_dir(workspace, model_name, model.get_params(), dataset, fit_on)
    if (directory / "config.json").is_file():
        try:
            return Model.load(directory, dataset), directory, False
        except UserError as error:
            reason = str(error).removesuffix("; refit")
            print(f"saved model in {directory} is unusable ({reason}); refitting", file=sys.stderr)
    if progress:
        print(f"fitting {model_name} on {dataset.name} (saved to {directory} for next time)")
    model.fit(dataset)
    model.save(directory)
    return model, directory, True


def load_or_fit(model_name: str | None, dataset: Dataset, **options) -> tuple[Model, SimilarUsers]:
    """A fitted model and its user index: reloaded from the workspace when saved before, else fitted and saved
    (``options``: ``params``, ``workspace``, ``progress``, ``fit_on`` as for ``load_or_fit_model``).

    A saved model that cannot be loaded is refitted, and a saved index that cannot be used (or belongs to other
    vectors) is rebuilt; either says so in one line on stderr. ``model_name`` None: ``default_taste_model``.
    """
    model, directory, fitted = load_or_fit_model(model_name, dataset, **options)
    if not fitted and (directory / USER_INDEX_FILE).is_file():
        try:
            return model, SimilarUsers.load(directory, model, dataset)
        except IndexInputError as error:
            print(f"saved user index in {directory} is unusable ({error}); rebuilding", file=sys.stderr)
    similar = SimilarUsers(model, dataset)
    similar.save(directory)
    return model, similar
