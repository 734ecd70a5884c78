"""The one object that owns users, images, ratings, side information and splits.

Models and the evaluator see contiguous integer indices only: ``user_idx`` indexes ``Dataset.user_ids`` and
``Dataset.users``; ``image_idx`` indexes ``Dataset.image_ids`` and ``Dataset.images``. Loaders build a
``Dataset``; nothing outside ``recsys.data`` knows a file layout.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.data import encodings
from recsys.data.choices import Choices
from recsys.errors import UnknownId, UserError

#: Split names, in the order they are reported.
SPLITS = ("train", "val_seen", "val_unseen", "test_seen", "test_unseen")


def is_unseen_split(split: str) -> bool:
    """Unseen splits hold users absent from train; they are evaluated with k reference ratings."""
    return split.endswith("_unseen")


def group_by(index: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(value, positions) for each distinct value of an integer array, values ascending, positions in order."""
    index = np.asarray(index)
    if not len(index):
        return []
    order = np.argsort(index, kind="stable")
    values, starts = np.unique(index[order], return_index=True)
    return list(zip(values.tolist(), np.split(order, starts[1:]), strict=True))


@dataclass(frozen=True)
class Ratings:
    """Aligned arrays of one split: ``user_idx[i]`` gave ``score[i]`` to ``image_idx[i]``."""

    user_idx: np.ndarray  # int64, (n,)
    image_idx: np.ndarray  # int64, (n,)
    score: np.ndarray  # float32, (n,)

    def __post_init__(self) -> None:
        n = len(self.user_idx)
        if len(self.image_idx) != n or len(self.score) != n:
            raise ValueError("Ratings arrays must have the same length")

    def __len__(self) -> int:
        return len(self.user_idx)

    def by_user(self) -> list[tuple[int, np.ndarray]]:
        """(user_idx, positions of that user's ratings) per user, users ascending."""
        return group_by(self.user_idx)

    def subset(self, mask: np.ndarray) -> Ratings:
        """The ratings selected by a boolean mask or an index array."""
        return Ratings(self.user_idx[mask], self.image_idx[mask], self.score[mask])

    @staticmethod
    def concat(parts: list[Ratings]) -> Ratings:
        """All ratings of ``parts``, in order."""
        if not parts:
            return Ratings(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32))
        return Ratings(
            np.concatenate([p.user_idx for p in parts]),
            np.concatenate([p.image_idx for p in parts]),
            np.concatenate([p.score for p in parts]),
        )


@dataclass(frozen=True)
class References:
    """A new user's reference ratings: what a model may learn from before scoring the user's queries."""

    user_idx: int  # the user's index in the dataset (demographics live there), or -1 for someone not in it
    image_idx: np.ndarray  # int64, (k,)
    score: np.ndarray  # float32, (k,)

    def __len__(self) -> int:
        return len(self.image_idx)


@dataclass
class Dataset:
    """Users, images, ratings per split, and side information.

    Attributes:
        name: human-readable name; simulated datasets say so in it.
        simulated: True when the data come from the simulator (not real people).
        pamela_semantics: True for PAMELA-layout data, whose ``*_seen`` splits hold images absent from train.
        user_ids: external user ids (str), index = user_idx.
        image_ids: external image ids (int64 for PAMELA, else str), index = image_idx.
        users: one row per user: demographic columns (any names; PAMELA: age, age_binned, gender, nationality).
        images: one row per image: metadata columns (PAMELA: type, group, style, prompt, path).
        ratings: split name -> Ratings. Has ``train`` unless the data are pairwise choices only.
        score_range: (low, high) of valid scores.
        image_features: float32 (or float16, as a features file stores it) (n_images, d) or None; rows aligned
            to image_idx.
        feature_source: what made ``image_features`` (file path or encoder name).
        ground_truth: split name -> float32 noise-free expected score per rating (simulated data only).
        root: the directory the data were loaded from, if any.
        choices: split name -> Choices (pairwise choices; same split names as ``ratings``). A dataset has a
            ``train`` split in ``ratings`` or in ``choices``.
        ground_truth_choices: split name -> float32 expected choice per pair, P(a) + P(tie) / 2 (simulated only).
        splits_made_by: how the splits were made, as outputs say it (``holdout both:0.1,0.05 (the default),
            seed 0``, ``the table's split column``); None for data that come with their splits.
        prompt_features: float32 (n_images, d) or None: an embedding of the prompt each image was generated from
            (images of one prompt share the row; an image without a prompt has a zero row), read by models
            conditioned on the prompt (``pal``).
        prompt_source: what made ``prompt_features`` (file path).
    """

    name: str
    simulated: bool
    pamela_semantics: bool
    user_ids: np.ndarray
    image_ids: np.ndarray
    users: pd.DataFrame
    images: pd.DataFrame
    ratings: dict[str, Ratings]
    score_range: tuple[float, float]
    image_features: np.ndarray | None = None
    feature_source: str | None = None
    ground_truth: dict[str, np.ndarray] | None = None
    root: Path | None = None
    choices: dict[str, Choices] = field(default_factory=dict)
    ground_truth_choices: dict[str, np.ndarray] | None = None
    splits_made_by: str | None = None
    prompt_features: np.ndarray | None = None
    prompt_source: str | None = None
    _user_index: dict = field(default_factory=dict, repr=False)
    _image_index: dict = field(default_factory=dict, repr=False)
    #: encodings built once per dataset (a copy made with ``replace`` starts empty)
    _encodings: dict[Any, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._user_index = {uid: i for i, uid in enumerate(self.user_ids.tolist())}
        self._image_index = {iid: i for i, iid in enumerate(self.image_ids.tolist())}
        if "train" not in self.ratings and "train" not in self.choices:
            raise UserError(f"{self.name}: no training ratings or choices; a dataset needs a 'train' split")

    # ----------------------------------------------------------------- sizes and lookups
    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_images(self) -> int:
        return len(self.image_ids)

    @property
    def splits(self) -> list[str]:
        """The splits present, in reporting order."""
        return [s for s in SPLITS if s in self.ratings]

    @property
    def choice_splits(self) -> list[str]:
        """The splits with pairwise choices, in reporting order."""
        return [s for s in SPLITS if s in self.choices]

    def user_index(self, user_id) -> int:
        """The index of an external user id; a clear error for an unknown one."""
        key = _coerce_id(user_id, self.user_ids, self._user_index)
        if key not in self._user_index:
            raise UnknownId(f"unknown user id {user_id!r} in {self.name}")
        return self._user_index[key]

    def image_index(self, image_id) -> int:
        """The index of an external image id; a clear error for an unknown one."""
        key = _coerce_id(image_id, self.image_ids, self._image_index)
        if key not in self._image_index:
            raise UnknownId(f"unknown image id {image_id!r} in {self.name}")
        return self._image_index[key]

    def train_users(self) -> np.ndarray:
        """Sorted indices of the users with at least one training rating or choice."""
        users = [self.ratings["train"].user_idx] if "train" in self.ratings else []
        users += [self.choices["train"].user_idx] if "train" in self.choices else []
        return np.unique(np.concatenate(users))

    def train_images(self) -> np.ndarray:
        """Sorted indices of the images with at least one training rating or shown in a training choice."""
        images = [self.ratings["train"].image_idx] if "train" in self.ratings else []
        images += [self.choices["train"].images()] if "train" in self.choices else []
        return np.unique(np.concatenate(images))

    def fit_ratings(self, split: str = "train") -> Ratings:
        """The ratings a model fits on: ``train``, or several splits joined with '+' (e.g. ``train+val_seen``)."""
        parts = split.split("+")
        for part in parts:
            if part not in self.ratings:
                if part in self.choices:
                    raise UserError(
                        f"{self.name} holds pairwise choices, not ratings, in {part!r}; use a model that "
                        "learns from choices"
                    )
                raise UserError(f"{self.name} has no split {part!r}; it has {', '.join(self.splits)}")
        return Ratings.concat([self.ratings[p] for p in parts])

    def fit_choices(self, split: str = "train") -> Choices:
        """The pairwise choices a model fits on: ``train``, or several splits joined with '+'."""
        parts = split.split("+")
        for part in parts:
            if part not in self.choices:
                kind = "ratings, not pairwise choices," if part in self.ratings else "no pairwise choices"
                raise UserError(
                    f"{self.name} has {kind} in split {part!r}; its choices are in: "
                    f"{', '.join(self.choice_splits) or 'none'}"
                )
        return Choices.concat([self.choices[p] for p in parts])

    def fit_data(self, split: str = "train") -> Ratings | Choices:
        """What a model fits on: the choices of ``split`` when every part of it holds choices and no ratings,
        else its ratings (``fit_ratings``, a clear error for a split the dataset lacks)."""
        parts = split.split("+")
        if any(p not in self.ratings for p in parts) and all(p in self.choices for p in parts):
            return self.fit_choices(split)
        return self.fit_ratings(split)

    def fit_view(
        self, fit_split: str = "train", validation_split: str | None = None, *, ground_truth: bool = False
    ) -> FitView:
        """What a model may see while it fits (see ``FitView``): the ratings of ``fit_split`` (splits joined with
        '+'), those of ``validation_split`` unless the fit includes it or the dataset lacks it, and the side
        information. With ``ground_truth`` (the oracle only) the view also holds ``expected_scores()``."""
        parts = fit_split.split("+")
        self.fit_data(fit_split)  # a clear error for a split the dataset lacks
        ratings = {part: self.ratings[part] for part in parts if part in self.ratings}
        pairs = {part: self.choices[part] for part in parts if part in self.choices}
        held = None
        if validation_split and validation_split not in parts and len(self.ratings.get(validation_split, ())):
            ratings[validation_split] = self.ratings[validation_split]
            held = validation_split
        if validation_split and validation_split not in parts and len(self.choices.get(validation_split, ())):
            pairs[validation_split] = self.choices[validation_split]
            held = validation_split
        shared = {f.name: getattr(self, f.name) for f in fields(Dataset) if f.init}
        view = FitView(
            **(
                shared
                | {"ratings": ratings, "ground_truth": None, "root": None}
                | {"choices": pairs, "ground_truth_choices": None}
            ),
            fit_split=fit_split,
            validation_split=held,
            expected=self.expected_scores() if ground_truth else None,
        )
        view._encodings = self._encodings  # encodings do not depend on ratings: built once, shared
        return view

    def expected_scores(self) -> Ratings | None:
        """Every rated pair of every split with the simulator's noise-free expected score as its score (the
        last split wins for a pair rated twice), or None without a ground truth (real data)."""
        if self.ground_truth is None:
            return None
        parts = [
            Ratings(self.ratings[s].user_idx, self.ratings[s].image_idx, np.asarray(truth, np.float32))
            for s, truth in self.ground_truth.items()
            if s in self.ratings
        ]
        return Ratings.concat(parts)

    # ----------------------------------------------------------------- encodings (built once)
    def _cached(self, key, build):
        if key not in self._encodings:
            value = build()
            if isinstance(value, np.ndarray):
                value.setflags(write=False)  # shared by every model: nobody may change it in place
            self._encodings[key] = value
        return self._encodings[key]

    def metadata(self) -> encodings.Metadata:
        """The categorical image metadata as one-hots and codes (see ``recsys.data.encodings.Metadata``)."""
        return self._cached("metadata", lambda: encodings.encode_metadata(self.images))

    def image_design(self, metadata_weight: float = 0.5, *, required: bool = True) -> np.ndarray | None:
        """Image features (rows as given) beside metadata one-hots scaled by ``metadata_weight`` (float64,
        n_images x d). Without features and metadata: a clear error, or None when not ``required``."""
        design = self._cached(
            ("image_design", metadata_weight),
            lambda: encodings.image_design(self.image_features, self.metadata(), metadata_weight),
        )
        if design is None and required:
            raise UserError(
                f"{self.name} has no image features and no categorical metadata; pass --image-features FILE.npz "
                "or --encoder NAME"
            )
        return design

    def image_inputs(self) -> np.ndarray:
        """Image features (float32, n_images x d); the image design stands in when there are no features."""
        if self.image_features is not None:
            return self.image_features.astype(np.float32)
        return self.image_design().astype(np.float32)

    def image_inputs_at(self, image_idx: np.ndarray) -> encodings.ImageInputs:
        """What a model may read of the dataset's images ``image_idx``: their features and encoded metadata."""
        image_idx = np.atleast_1d(np.asarray(image_idx, np.int64))
        features = None if self.image_features is None else self.image_features[image_idx]
        prompts = None if self.prompt_features is None else self.prompt_features[image_idx]
        return encodings.ImageInputs(features, self.metadata().rows(image_idx), prompts)

    def new_image_inputs(
        self,
        features: np.ndarray | None,
        metadata: pd.DataFrame | None = None,
        prompts: np.ndarray | None = None,
    ) -> encodings.ImageInputs:
        """What a model may read of images the dataset does not hold, encoded as the dataset encodes its own: their
        features (float32, m x d, from the encoder of ``image_features``; None when the dataset has none), their
        metadata (a frame of m rows with any of the dataset's image columns, index = how errors name the images;
        None or a missing value: encoded as the dataset encodes a missing value) and the embeddings of their
        prompts (float32, m x d, like ``prompt_features``; None: unknown, and a model conditioned on the prompt
        uses its documented stand-in).

        Raises:
            UserError: features of another width, non-finite, or given to a dataset without any (or missing for one
                with them); a metadata frame of another length, with an unknown column or an unknown level;
                prompts of another width or count, non-finite, or given to a dataset without prompt features.
        """
        if features is None:
            if self.image_features is not None:
                raise UserError(
                    f"new images need features: {self.name}'s models read image features ({self.feature_source})"
                )
            if metadata is None:
                raise UserError("new images need features or metadata")
            n = len(metadata)
        else:
            features = np.asarray(features, np.float32)
            if self.image_features is None:
                raise UserError(f"{self.name} has no image features, so new images' features cannot be used")
            if features.ndim != 2 or features.shape[1] != self.image_features.shape[1]:
                raise UserError(
                    f"new image features have shape {features.shape}; the data's have "
                    f"{self.image_features.shape[1]} per image ({self.feature_source})"
                )
            if not np.isfinite(features).all():
                raise UserError("new image features contain NaN or infinite values")
            n = len(features)
        if prompts is not None:
            prompts = self._new_prompts(prompts, n)
        if metadata is None:
            metadata = pd.DataFrame(index=range(n))
        if len(metadata) != n:
            raise UserError(f"{len(metadata)} rows of new image metadata for {n} new images")
        unknown = [c for c in metadata.columns if c not in self.images.columns]
        if unknown:
            raise UserError(
                f"new image metadata has column(s) {', '.join(map(str, unknown))} that {self.name}'s images lack; "
                f"its columns: {', '.join(map(str, self.images.columns)) or 'none'}"
            )
        return encodings.ImageInputs(features, self.metadata().encode(metadata), prompts)

    def _new_prompts(self, prompts: np.ndarray, n: int) -> np.ndarray:
        """New images' prompt embeddings, checked against the data's (see ``new_image_inputs``)."""
        prompts = np.asarray(prompts, np.float32)
        if self.prompt_features is None:
            raise UserError(f"{self.name} has no prompt features, so new images' prompts cannot be used")
        if prompts.shape != (n, self.prompt_features.shape[1]):
            raise UserError(
                f"new images' prompt features have shape {prompts.shape}; expected ({n}, "
                f"{self.prompt_features.shape[1]}) like the data's ({self.prompt_source})"
            )
        if not np.isfinite(prompts).all():
            raise UserError("new images' prompt features contain NaN or infinite values")
        return prompts

    def user_design(self, fitted_users: np.ndarray, *, categorical_only: bool = False) -> np.ndarray:
        """Demographics of every user, encoded on ``fitted_users`` only (float32, (n_users + 1) x d; the last
        row is a person with no recorded demographics, read by user_idx -1). See ``encodings.user_design``."""
        fitted = np.unique(np.asarray(fitted_users, np.int64))
        key = ("user_design", categorical_only, hashlib.sha1(fitted.tobytes()).hexdigest())
        users = self.users
        if categorical_only:
            users = users[[c for c in users.columns if not pd.api.types.is_numeric_dtype(users[c])]]
        return self._cached(key, lambda: encodings.user_design(users, fitted))

    # ----------------------------------------------------------------- derived datasets
    def with_image_features(self, features: np.ndarray, source: str) -> Dataset:
        """A copy whose ``image_features`` are ``features`` (float32, or float16 kept so; aligned to image_idx)."""
        features = self._per_image_rows(features, f"image features from {source}")
        return replace(self, image_features=features, feature_source=source)

    def with_prompt_features(self, features: np.ndarray, source: str) -> Dataset:
        """A copy whose ``prompt_features`` are ``features`` (float32, or float16 kept so; one row per image: its
        prompt's embedding)."""
        features = self._per_image_rows(features, f"prompt features from {source}")
        return replace(self, prompt_features=features, prompt_source=source)

    def _per_image_rows(self, features: np.ndarray, what: str) -> np.ndarray:
        """``features`` as one contiguous float32 (or float16, kept so) row per image, checked finite."""
        dtype = np.float16 if np.asarray(features).dtype == np.float16 else np.float32
        features = np.ascontiguousarray(features, dtype=dtype)
        if features.ndim != 2 or features.shape[0] != self.n_images:
            raise UserError(f"{what} have shape {features.shape}; expected ({self.n_images}, d)")
        if not np.isfinite(features).all():
            raise UserError(f"{what} contain NaN or infinite values")
        return features

    def all_as_train(self) -> Dataset:
        """A copy whose every rating (and choice) is in ``train``: what ``--fit-on all`` fits on, so that every
        user and image of the data is known to the model. Nothing is held out, so nothing of it can be
        evaluated; the name says so (and so the fingerprint, hence a saved model's key, differs)."""
        if set(self.splits) <= {"train"} and set(self.choice_splits) <= {"train"}:
            return self
        ratings = {"train": Ratings.concat([self.ratings[s] for s in self.splits])} if self.ratings else {}
        choices = (
            {"train": Choices.concat([self.choices[s] for s in self.choice_splits])} if self.choices else {}
        )
        truth = pair_truth = None
        if self.ground_truth is not None and all(s in self.ground_truth for s in self.splits):
            truth = {"train": np.concatenate([self.ground_truth[s] for s in self.splits])}
        if self.ground_truth_choices is not None and all(
            s in self.ground_truth_choices for s in self.choice_splits
        ):
            pair_truth = {"train": np.concatenate([self.ground_truth_choices[s] for s in self.choice_splits])}
        return replace(
            self,
            name=f"{self.name}, every split as train",
            ratings=ratings,
            choices=choices,
            ground_truth=truth,
            ground_truth_choices=pair_truth,
            splits_made_by="every split joined into train (fit on all)",
        )

    def drop_images(self, image_idx: np.ndarray) -> tuple[Dataset, int]:
        """A copy without the ratings (and choices) of the given images (e.g. undecodable files); returns it and
        the count of ratings and choices dropped.

        Images keep their indices (features stay aligned); only their ratings and the pairs that show them go.
        """
        drop = np.zeros(self.n_images, dtype=bool)
        drop[np.asarray(image_idx, dtype=np.int64)] = True
        ratings, truth, dropped = {}, {}, 0
        for split, r in self.ratings.items():
            keep = ~drop[r.image_idx]
            dropped += int((~keep).sum())
            ratings[split] = r.subset(keep)
            if self.ground_truth is not None and split in self.ground_truth:
                truth[split] = self.ground_truth[split][keep]
        pairs, pair_truth = {}, {}
        for split, p in self.choices.items():
            keep = ~(drop[p.image_a] | drop[p.image_b])
            dropped += int((~keep).sum())
            pairs[split] = p.subset(keep)
            if self.ground_truth_choices is not None and split in self.ground_truth_choices:
                pair_truth[split] = self.ground_truth_choices[split][keep]
        return replace(
            self,
            ratings=ratings,
            ground_truth=truth if self.ground_truth else None,
            choices=pairs,
            ground_truth_choices=pair_truth if self.ground_truth_choices else None,
        ), dropped

    # ----------------------------------------------------------------- identity
    def fingerprint(self) -> str:
        """A short hash of the ratings, choices, ids and features: two runs on equal fingerprints saw equal data."""
        digest = hashlib.sha256()
        digest.update(self.name.encode())
        for split in self.splits:
            r = self.ratings[split]
            digest.update(split.encode())
            digest.update(np.ascontiguousarray(r.user_idx).tobytes())
            digest.update(np.ascontiguousarray(r.image_idx).tobytes())
            digest.update(np.ascontiguousarray(r.score).tobytes())
        for (
            split
        ) in self.choice_splits:  # nothing added without pairs: rating datasets keep their fingerprints
            p = self.choices[split]
            digest.update(f"pairs:{split}".encode())
            for values in (p.user_idx, p.image_a, p.image_b, p.choice):
                digest.update(np.ascontiguousarray(values).tobytes())
        digest.update("\x00".join(map(str, self.user_ids.tolist())).encode())
        digest.update("\x00".join(map(str, self.image_ids.tolist())).encode())
        if self.image_features is not None:
            digest.update(self.image_features.tobytes())
        if self.prompt_features is not None:  # nothing added without them: fingerprints of other data stay
            digest.update(b"prompts:" + self.prompt_features.tobytes())
        return digest.hexdigest()[:16]

    def split_table(self) -> pd.DataFrame:
        """Every rating with its split, on external ids: ``user_id, item_id, score, split`` (on data of choices
        ``user_id, item_a, item_b, choice, split``, choice a, b or tie), splits in reporting order. Read back as
        a table, it gives the same splits (``recsys data split``)."""
        if self.ratings and self.choices:
            raise UserError(f"{self.name} holds ratings and choices; a split table holds one kind")
        parts = []
        for split in SPLITS:
            if split in self.ratings:
                r = self.ratings[split]
                score = r.score.astype(np.float64)
                integral = np.array_equal(score, np.round(score))
                columns = {
                    "user_id": self.user_ids[r.user_idx],
                    "item_id": self.image_ids[r.image_idx],
                    "score": score.astype(np.int64) if integral else score,
                }
            elif split in self.choices:
                p = self.choices[split]
                columns = {
                    "user_id": self.user_ids[p.user_idx],
                    "item_a": self.image_ids[p.image_a],
                    "item_b": self.image_ids[p.image_b],
                    "choice": np.select([p.choice == 1.0, p.choice == 0.0], ["a", "b"], "tie"),
                }
            else:
                continue
            parts.append(pd.DataFrame(columns).assign(split=split))
        return pd.concat(parts, ignore_index=True)

    def split_sizes(self) -> dict[str, dict[str, int]]:
        """Per split present, in reporting order: its ratings (or choices, on data of choices), users and
        images."""
        out = {}
        for split in SPLITS:
            data = self.ratings.get(split) if split in self.ratings else self.choices.get(split)
            if data is None:
                continue
            images = data.image_idx if isinstance(data, Ratings) else data.images()
            unit = "ratings" if isinstance(data, Ratings) else "choices"
            out[split] = {
                unit: int(len(data)),
                "users": int(len(np.unique(data.user_idx))),
                "images": int(len(np.unique(images))),
            }
        return out

    def describe_splits(self, fit_split: str = "train") -> str:
        """One line for a leaderboard's header: how the splits were made, their sizes, and what share of the
        ratings (or choices) a model fitted on ``fit_split`` learns from."""
        sizes = self.split_sizes()
        unit = "ratings" if all("ratings" in s for s in sizes.values()) else "choices"
        count = {split: next(iter(s.values())) for split, s in sizes.items()}
        total = max(1, sum(count.values()))
        made_by = self.splits_made_by or (
            "the simulator's splits" if self.simulated else "the splits the data came with"
        )
        parts = ", ".join(
            f"{split} {n:,} ({n / total:.0%}"
            + (f", {sizes[split]['users']:,} users)" if is_unseen_split(split) else ")")
            for split, n in count.items()
        )
        fit = sum(count.get(part, 0) for part in fit_split.split("+"))
        return (
            f"{made_by}: {parts} of {total:,} {unit}; models fit on {fit_split}, {fit:,} {unit} "
            f"({fit / total:.0%})"
        )

    def summary(self) -> dict:
        """Counts per split, users, images and the score distribution (for ``recsys data validate``); choices
        per split under ``pairs`` when the dataset has them."""
        train = self.ratings.get("train", ())
        out = {
            "name": self.name,
            "simulated": self.simulated,
            "users": self.n_users,
            "images": self.n_images,
            "train_users": int(len(self.train_users())),
            "train_images": int(len(self.train_images())),
            "score_range": list(self.score_range),
            "splits": {},
            "image_features": None
            if self.image_features is None
            else {"dim": int(self.image_features.shape[1]), "source": self.feature_source},
            "prompt_features": None
            if self.prompt_features is None
            else {"dim": int(self.prompt_features.shape[1]), "source": self.prompt_source},
        }
        for split in self.splits:
            r = self.ratings[split]
            q = np.quantile(r.score, [0.0, 0.25, 0.5, 0.75, 1.0]) if len(r) else [np.nan] * 5
            out["splits"][split] = {
                "ratings": int(len(r)),
                "users": int(len(np.unique(r.user_idx))),
                "images": int(len(np.unique(r.image_idx))),
                "score_mean": float(r.score.mean()) if len(r) else None,
                "score_std": float(r.score.std()) if len(r) else None,
                "score_quantiles": [round(float(v), 3) for v in q],
            }
        out["train_ratings_per_user"] = float(len(train) / max(1, len(self.train_users())))
        if self.choices:
            out["pairs"] = {
                split: {
                    "pairs": int(len(p)),
                    "users": int(len(np.unique(p.user_idx))),
                    "images": int(len(p.images())),
                    "chose_a": int((p.choice == 1.0).sum()),
                    "chose_b": int((p.choice == 0.0).sum()),
                    "ties": int((p.choice == 0.5).sum()),
                }
                for split, p in ((s, self.choices[s]) for s in self.choice_splits)
            }
            out["train_pairs_per_user"] = float(
                len(self.choices.get("train", ())) / max(1, len(self.train_users()))
            )
        return out


@dataclass
class FitView(Dataset):
    """The part of a dataset a model may use while it fits, and nothing else.

    It holds the ratings of the fit split (``fit_split``), those of the declared validation split
    (``validation_split``, for early stopping or calibration; None when there is none to hold) and all side
    information: users, images, features, metadata. Test ratings, the ground truth and the data directory are
    not in it. ``expected`` (the simulator's expected score of every rated pair) is set only for a model
    that declares it needs the ground truth: the oracle.
    """

    fit_split: str = "train"
    validation_split: str | None = None
    expected: Ratings | None = field(default=None, repr=False)

    def expected_scores(self) -> Ratings | None:
        return self.expected


def _coerce_id(value, ids: np.ndarray, index: dict):
    """Match an id to the dataset's id type: ids typed on a command line (or in a URL) arrive as strings, and
    a JSON body may give a text id such as ``"196"`` as the number 196."""
    if ids.dtype.kind in "iu" and isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return value
    if (
        ids.dtype.kind in "OUS"
        and isinstance(value, int | np.integer)
        and not isinstance(value, bool)
        and value not in index
    ):
        return str(value)
    return value
