"""A small Python facade on external ids: load a rating table, fit a model, predict, find similar users.

>>> rec = Recommender.load_data("ratings.csv")            # any table recsys reads (user_id, item_id, score)
>>> rec.fit("biases")                                      # any registered model, with its hyperparameters
>>> rec.predict(["u1", "u2"], ["i9", "i3"])                # scores of aligned (user, item) pairs
>>> rec.predict_new({"i1": 5, "i2": 1}, items=["i3", "i4"])  # a new user, from reference ratings
>>> rec.similar_users(user_id="u1", k=5)                   # or references={"i1": 5, "i2": 1}
>>> rec.recommend("u1", n=10)                               # the 10 best items u1 has not rated
>>> rec.evaluate("test_seen")                               # the leaderboard's metrics on a test split
>>> rec.save("my-model"); Recommender.load("my-model", "ratings.csv")  # the fitted model, no pickle

Everything takes and returns the ids of the table; the integer indices models use stay inside.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from recsys.data import Dataset, References, load_dataset
from recsys.errors import UserError
from recsys.models.base import Model
from recsys.models.registry import create_model
from recsys.recommend import recommend
from recsys.retrieval.similar import SimilarUsers


class Recommender:
    """One dataset and (after :meth:`fit`) one fitted model, addressed by external user and item ids."""

    def __init__(self, dataset: Dataset, model: Model | None = None):
        self.dataset = dataset
        self.model = model
        self._similar: SimilarUsers | None = None

    @classmethod
    def load_data(cls, path: str | Path | None = None, **kwargs: Any) -> Recommender:
        """A recommender over the data at ``path`` (keyword arguments as ``recsys.data.load_dataset``: ``holdout``,
        ``seed``, ``columns``, ``score_range`` and, for a delimited table, ``sep`` and ``header=False``, as the
        command line's ``--sep`` and ``--no-header``; the delimiter and the header are found when not given)."""
        return cls(load_dataset(path, **kwargs))

    def fit(self, model: str = "biases", split: str = "train", **params: Any) -> Recommender:
        """Fit the registered model ``model`` with hyperparameters ``params`` on ``split``; returns self.

        ``split="all"`` fits on every rating of every split (the recommender's dataset becomes
        ``Dataset.all_as_train()``), so that every user of the data is known; nothing is left to evaluate."""
        if split == "all":
            self.dataset, split = self.dataset.all_as_train(), "train"
        fitted = create_model(model, **params)
        try:
            fitted.fit(self.dataset, split)
        except ValueError as err:  # e.g. a model that needs image features the data lack
            raise UserError(f"{model}: {err}") from None
        self.model, self._similar = fitted, None
        return self

    def save(self, path: str | Path) -> Path:
        """Save the fitted model to the directory ``path`` (JSON, npz and torch weights, never a pickle;
        ``Model.save``); returns it. The data are not saved: :meth:`load` reads them again."""
        return self._fitted().save(path)

    @classmethod
    def load(cls, path: str | Path, data: str | Path | None = None, **kwargs: Any) -> Recommender:
        """A recommender over the data at ``data`` (as :meth:`load_data`, with the same keyword arguments as when
        the model was fitted) with the model saved at ``path``; a saved model that does not fit those data (other
        sizes, a damaged file) is a one-line ``UserError``."""
        dataset = load_dataset(data, **kwargs)
        return cls(dataset, Model.load(path, dataset))

    def evaluate(
        self, split: str = "test_seen", shots: int | None = None, *, seed: int = 0, draws: int = 5
    ) -> dict:
        """The fitted model's metrics on the test split ``split`` as the leaderboard computes them (its protocol
        ``seed`` and reference ``draws``); on an unseen split each new user gets ``shots`` references (default 10),
        scored on the queries of ``recsys leaderboard --shots 0,10`` (0, 10 and ``shots``). Choices are scored
        by the pairwise protocol. Returns ``{metric: value}``."""
        from recsys.data.dataset import is_unseen_split
        from recsys.evaluation.pairwise import PAIR_SHOTS
        from recsys.leaderboard import build_evaluator, is_choice_data

        model = self._fitted()
        if is_unseen_split(split):
            shots = 10 if shots is None else int(shots)
            if shots < 0:
                raise UserError(f"shots must be at least 0, got {shots}")
        elif shots is not None:
            raise UserError(f"{split} holds fitted users: shots apply to unseen splits only")
        tasks = PAIR_SHOTS if is_choice_data(self.dataset) else (0, 10)
        tasks = tuple(sorted({*tasks, shots})) if shots is not None else tasks
        result = build_evaluator(self.dataset, shots=tasks, seed=seed, draws=draws).evaluate(
            model, split, shots
        )
        if result.metrics is None:
            raise UserError(f"{model.name} on {split}: {result.reason or result.status}")
        return dict(result.metrics)

    def _fitted(self) -> Model:
        if self.model is None:
            raise UserError("no model fitted yet: call fit(...) first")
        return self.model

    def known_users(self) -> list:
        """Ids of the users the model was fitted on (those :meth:`predict` and ``similar_users(user_id=...)``
        take); new users go through :meth:`predict_new`."""
        known = np.flatnonzero(self._fitted().known_)
        return self.dataset.user_ids[known].tolist()

    def _items(self, item_ids: Sequence) -> np.ndarray:
        return np.array([self.dataset.image_index(i) for i in item_ids], np.int64)

    def _references(self, references: Mapping, demographics: Mapping | None) -> References:
        if not references and demographics is None:
            raise UserError("a new user needs reference ratings {item_id: score} or demographics")
        items = self._items(list(references))
        scores = np.asarray(list(references.values()), dtype=np.float64)
        lo, hi = self.dataset.score_range
        if not np.isfinite(scores).all() or (scores < lo).any() or (scores > hi).any():
            raise UserError(f"reference scores must lie in [{lo:g}, {hi:g}]")
        return References(self._demographic_user(demographics), items, scores.astype(np.float32))

    def _demographic_user(self, demographics: Mapping | None) -> int:
        """A dataset user with exactly these demographics (whose prior a new user shares), or -1 for none."""
        if not demographics:
            return -1
        users = self.dataset.users
        unknown = sorted(set(demographics) - set(users.columns))
        if unknown:
            have = ", ".join(map(str, users.columns)) or "none"
            raise UserError(f"unknown demographic column(s) {', '.join(unknown)}; the data have {have}")
        match = np.ones(len(users), dtype=bool)
        for column, value in demographics.items():
            match &= (users[column].astype(str) == str(value)).to_numpy()
        if not match.any():
            raise UserError(f"no user in {self.dataset.name} has demographics {dict(demographics)}")
        return int(np.flatnonzero(match)[0])

    def predict(self, user_ids: Sequence, item_ids: Sequence) -> np.ndarray:
        """Predicted scores of aligned (user id, item id) pairs of users the model was fitted on."""
        if len(user_ids) != len(item_ids):
            raise UserError(f"{len(user_ids)} user ids but {len(item_ids)} item ids; pass aligned pairs")
        users = np.array([self.dataset.user_index(u) for u in user_ids], np.int64)
        model = self._fitted()
        if model.needs_known_users:
            for user_id, user in zip(user_ids, users.tolist(), strict=True):
                if not model.known_[user]:
                    raise UserError(
                        f"user {user_id!r} was not in the fit of {model.name}; score them with predict_new("
                        "references) or fit on every rating (fit(..., split='all'))"
                    )
        return model.predict(users, self._items(item_ids))

    def predict_new(
        self,
        references: Mapping | None = None,
        items: Sequence = (),
        demographics: Mapping | None = None,
    ) -> np.ndarray:
        """Predicted scores of ``items`` for a new user from reference ratings ``{item_id: score}`` and,
        optionally, demographics ``{column: value}`` (matched to a user with the same values)."""
        refs = self._references(references or {}, demographics)
        return self._fitted().predict_new([refs], [self._items(items)])[0]

    def similar_users(
        self, user_id: Any = None, references: Mapping | None = None, k: int = 10
    ) -> pd.DataFrame:
        """The k most similar fitted users (``user_id``, ``score`` and an explanation per row), to a known
        user ``user_id`` or to a new user given by ``references`` ``{item_id: score}``."""
        if (user_id is None) == (references is None):
            raise UserError("pass exactly one of user_id or references")
        if self._similar is None:
            self._similar = SimilarUsers(self._fitted(), self.dataset)
        if user_id is not None:
            rows = self._similar.by_user(user_id, k=k)
        else:
            rows = self._similar.by_references(list(references), list(references.values()), k=k)
        return pd.DataFrame(rows)

    def recommend(
        self,
        user_id: Any = None,
        n: int = 10,
        include_rated: bool = False,
        *,
        references: Mapping | None = None,
        demographics: Mapping | None = None,
    ) -> pd.DataFrame:
        """The ``n`` items of the whole catalogue the model scores highest (``rank``, ``item_id``, ``score``,
        ``rated``; best first, equal scores in the data's order of items) for a fitted user ``user_id``, or for a
        new user given by ``references`` ``{item_id: score}`` (and optionally ``demographics``). Items the user
        rated in the fit data (a new user's references) are left out unless ``include_rated``
        (``recsys.recommend``)."""
        if (user_id is None) == (references is None and demographics is None):
            raise UserError("pass exactly one of user_id or references (with or without demographics)")
        refs = None if user_id is not None else self._references(references or {}, demographics)
        rows = recommend(
            self._fitted(), self.dataset, user_id=user_id, references=refs, n=n, include_rated=include_rated
        )
        table = pd.DataFrame(rows, columns=["rank", "image_id", "score", "rated"])
        return table.rename(columns={"image_id": "item_id"})
