"""Per-task stacking of base models' predictions: weights fitted on held-out validation ratings.

Which data it reads. The base models are fitted on the fit split (``train``) exactly as they would be alone
(those that stop early read ``val_seen`` for that, as the data policy allows). The stacking weights are fitted
on ``val_seen`` only, the policy's validation split: ratings the base models did not fit on, so the weights see
honest out-of-sample predictions. ``val_unseen``, test ratings and the ground truth are never read; a fit on
``train+val_seen`` has no validation left and blends with equal weights.

The two tasks get their own weights:

* seen users: each base model's prediction of a user's val_seen ratings, standardised per user (minus the
  base's mean prediction for that user over a fixed sample of images, divided by its spread there: user SROCC
  reads only the order within a user), regressed on the rating minus the bases' mean level for the user, with
  non-negative weights and an intercept. Each user's own weights are a ridge toward these global weights with
  penalty ``shrinkage`` (a pseudo-count of validation ratings); the penalty is chosen on val_seen by two-fold
  cross-validation within each user's validation ratings (mean user SROCC), from ``SHRINKAGE_GRID``, and
  ``shrinkage`` > 0 fixes it instead.
* new users: the same regression, global only, once per number of references in ``shots``, on pseudo-new-user
  episodes built from val_seen users: each user's first k train ratings in a seeded permutation (per user, keyed
  by the crc32 of the user id, as the evaluation's episodes are) as references, their val_seen ratings as
  queries, scored by each base's ``predict_new``. A new user with n references is scored with the weights of the
  largest k <= n: with few references the bases' standardised predictions are noisier and get smaller weights,
  which keeps the blend on the rating scale at k = 0. The base models did fit those users' train ratings, so the
  episodes are slightly easier for the bases than a truly new user; the queries are still held out.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from scipy.optimize import nnls
from scipy.stats import rankdata

from recsys.data.dataset import Dataset, Ratings, References
from recsys.data.encodings import ImageInputs
from recsys.errors import UserError
from recsys.models.base import Model
from recsys.models.params import Hyperparameters, hyper
from recsys.models.persistence import SavedModelError
from recsys.models.schema import renamed_dims

#: base models of ``bases="auto"``: with image features or metadata, and for a plain table of ratings
AUTO_BASES = ("user_ridge", "mf", "profile")
PLAIN_BASES = ("biases", "mf", "item_knn", "user_knn")
#: per-user ridge penalties (pseudo-counts of validation ratings) tried on val_seen; inf: the global weights
SHRINKAGE_GRID = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, np.inf)
#: images (a fixed, evenly spaced sample) on which each user's per-base mean and spread are measured
STANDARDISE_IMAGES = 256
#: smallest spread a base's predictions may have for one user (a constant prediction standardises to zero)
MIN_SPREAD = 1e-6


class Blend(Model):
    """Base models fitted on train, stacked per task (seen users, new users) with weights fitted on val_seen."""

    name = "blend"
    #: its own state; each base's is declared by the base (``saved_schema``), under ``base<i>__``
    state_schema: ClassVar[dict[str, Any]] = {
        "bases_": "list[str]",
        "base_params_": "list[dict]",
        "sample_": "int[sample] < images",
        "centre_": "float[users, bases]",
        "spread_": "float[users, bases]",
        "weights_": "float[bases]",
        "intercept_": "float",
        "user_weights_": "float[users, bases]",
        "shrinkage_": "float~",  # inf: no validation ratings, every user on the global weights
        "new_shots_": "int[shots]",
        "new_weights_": "float[shots, bases]",
        "new_intercept_": "float[shots]",
    }

    class Params(Hyperparameters):
        bases: str = hyper(
            "auto",
            doc="comma-separated base models, or auto (user_ridge, mf, profile; without image inputs "
            "biases, mf, item_knn, user_knn)",
        )
        shrinkage: float = hyper(
            0.0, low=0.0, doc="per-user ridge toward the global weights; 0 chooses it on val_seen"
        )
        shots: tuple[int, ...] = hyper(
            (0, 1, 2, 5, 10, 20), low=0, doc="numbers of references with their own new-user weights"
        )
        seed: int = hyper(0, doc="seed of the base models that take one and of the reference draws")

    # ------------------------------------------------------------------ fit
    def _fit(self, dataset: Dataset, ratings: Ratings, split: str) -> None:
        self.bases_ = self._base_names(dataset)
        self._bases = [self._fit_base(name, dataset, split) for name in self.bases_]
        self.base_params_ = [base.get_params() for base in self._bases]
        vars(self).update(_flatten(self._bases))
        self.sample_ = np.unique(np.linspace(0, dataset.n_images - 1, STANDARDISE_IMAGES).astype(np.int64))
        known = np.flatnonzero(self.known_)
        self.centre_ = np.zeros((dataset.n_users, len(self._bases)))
        self.spread_ = np.ones((dataset.n_users, len(self._bases)))
        self.centre_[known], self.spread_[known] = self._user_stats(known)
        held = self._validation(dataset, split)
        n = len(self._bases)
        self.user_weights_ = np.zeros((dataset.n_users, n))
        if held is None:
            self._equal_weights()
        else:
            held = _known_rows(held, self.known_)
            z, target = self._seen_design(held.user_idx, held.image_idx, held.score)
            self.weights_, self.intercept_ = _stack(z, target)
            self.shrinkage_ = self.shrinkage or _choose_shrinkage(
                held.user_idx, z, target, self.weights_, self.intercept_
            )
            self.user_weights_[:] = self.weights_
            for u, rows in _groups(held.user_idx):
                self.user_weights_[u] = _user_weights(
                    z[rows], target[rows] - self.intercept_, self.weights_, self.shrinkage_
                )
            self._new_user_weights(dataset, ratings, held)
        self.user_weights_[~self.known_] = self.weights_

    def _base_names(self, dataset: Dataset) -> list[str]:
        """The base models: ``bases``, or those of ``auto`` that the dataset's side information supports. The
        oracle (it reads the ground truth) and blend itself cannot be bases."""
        if self.bases == "auto":
            inputs = dataset.image_features is not None or len(dataset.metadata().names) > 0
            return list(AUTO_BASES if inputs else PLAIN_BASES)
        names = [n.strip() for n in self.bases.split(",") if n.strip()]
        if not names or _not_bases(names, self.name):
            raise UserError(
                f"{self.name}: bases must name registered models other than blend and the oracle, got "
                f"{self.bases!r}"
            )
        return list(dict.fromkeys(names))

    def _fit_base(self, name: str, dataset: Dataset, split: str) -> Model:
        from recsys.models.registry import create_model, model_class

        seeded = {"seed": self.seed} if "seed" in model_class(name).param_names() else {}
        return create_model(name, **seeded).fit(dataset, split)

    def _equal_weights(self) -> None:
        """No validation split: each base's standardised prediction weighted alike, at the users' mean spread."""
        n = len(self._bases)
        self.weights_ = np.full(n, float(self.spread_[self.known_].mean()) / n)
        self.intercept_ = 0.0
        self.shrinkage_ = float("inf")
        self.new_shots_ = np.zeros(1, dtype=np.int64)
        self.new_weights_, self.new_intercept_ = self.weights_[None].copy(), np.zeros(1)

    def _user_stats(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each base's mean and spread of its predictions for ``users`` over the sample images."""
        u = np.repeat(users, len(self.sample_))
        i = np.tile(self.sample_, len(users))
        p = np.stack([b.predict(u, i) for b in self._bases], axis=1).reshape(
            len(users), len(self.sample_), -1
        )
        return p.mean(axis=1), np.maximum(p.std(axis=1), MIN_SPREAD)

    def _seen_design(
        self, user_idx: np.ndarray, image_idx: np.ndarray, score: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        p = np.stack([b.predict(user_idx, image_idx) for b in self._bases], axis=1)
        z = (p - self.centre_[user_idx]) / self.spread_[user_idx]
        return z, np.asarray(score, np.float64) - self.centre_[user_idx].mean(axis=1)

    def _new_user_weights(self, dataset: Dataset, ratings: Ratings, held: Ratings) -> None:
        """Global weights of the new-user task per number of references (``shots``), from pseudo-new-user
        episodes of the val_seen users; the seen users' weights where no episode can be drawn."""
        train_rows = dict(_groups(ratings.user_idx))
        drawn, queries, scores = [], [], []
        for u, rows in _groups(held.user_idx):
            own = train_rows.get(u)
            if own is None:
                continue
            key = zlib.crc32(str(dataset.user_ids[u]).encode())
            drawn.append((u, own[np.random.default_rng([self.seed, key]).permutation(len(own))]))
            queries.append(held.image_idx[rows])
            scores.append(held.score[rows])
        self.new_shots_ = np.array(sorted(set(self.shots) | {0}), dtype=np.int64)
        self.new_weights_ = np.tile(self.weights_, (len(self.new_shots_), 1))
        self.new_intercept_ = np.full(len(self.new_shots_), self.intercept_)
        for row, k in enumerate(self.new_shots_):
            enough = [i for i, (_, order) in enumerate(drawn) if len(order) >= k]
            if not enough:
                continue
            references = [
                References(u, ratings.image_idx[order[:k]], ratings.score[order[:k]])
                for u, order in (drawn[i] for i in enough)
            ]
            z, levels = self._new_design(references, [queries[i] for i in enough])
            target = np.concatenate([scores[i] for i in enough]).astype(np.float64) - np.concatenate(levels)
            self.new_weights_[row], self.new_intercept_[row] = _stack(np.concatenate(z), target)

    def _new_design(
        self, references: list[References], images: list[np.ndarray]
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Per new user: standardised base predictions of ``images`` (rows) and the bases' mean level."""
        m = len(self.sample_)
        with_sample = [np.concatenate([self.sample_, i]) for i in images]
        per_base = [b.predict_new(references, with_sample) for b in self._bases]
        z, levels = [], []
        for user, candidates in enumerate(images):
            p = np.stack([scores[user] for scores in per_base], axis=1)
            centre, spread = p[:m].mean(axis=0), np.maximum(p[:m].std(axis=0), MIN_SPREAD)
            z.append((p[m:] - centre) / spread)
            levels.append(np.full(len(candidates), centre.mean()))
        return z, levels

    # ------------------------------------------------------------------ scoring
    def _predict(self, user_idx: np.ndarray, image_idx: np.ndarray) -> np.ndarray:
        z, _ = self._seen_design(user_idx, image_idx, np.zeros(len(user_idx)))
        level = self.centre_[user_idx].mean(axis=1)
        return level + self.intercept_ + np.einsum("ij,ij->i", z, self.user_weights_[user_idx])

    def _predict_new(self, references: list[References], images: list[np.ndarray]) -> list[np.ndarray]:
        z, levels = self._new_design(references, images)
        out = []
        for refs, zu, level in zip(references, z, levels, strict=True):
            row = int(np.searchsorted(self.new_shots_, len(refs.image_idx), side="right")) - 1
            out.append(level + self.new_intercept_[row] + zu @ self.new_weights_[row])
        return out

    def _placeable(self, image_idx: np.ndarray) -> np.ndarray:
        """Placed where every base model places the image (otherwise a base scores its fallback)."""
        return np.logical_and.reduce([b.placeable(image_idx) for b in self._bases])

    def _new_image_state(self, inputs: ImageInputs) -> dict[str, Any]:
        """Each base model's copy with the new images (one that cannot score them raises its own error)."""
        bases = [b.with_new_images(inputs) for b in self._bases]
        return {"_bases": bases, **_flatten(bases)}

    # ------------------------------------------------------------------ persistence
    def saved_schema(self, path) -> dict[str, Any]:
        """Its own ``state_schema`` first (the bases' names and hyperparameters are read before their state),
        then each base's declared schema under ``base<i>__``, its dimension names kept apart per base."""
        from recsys.files import read_json
        from recsys.models.registry import create_model

        index = read_json(Path(path) / "state.json", "a saved model's state index")
        try:
            names = index["bases_"]["value"]
            params = index["base_params_"]["value"]
            ok = isinstance(names, list) and isinstance(params, list) and len(names) == len(params)
        except (KeyError, TypeError):
            ok = False
        if not ok or not all(
            isinstance(n, str) and isinstance(p, dict) for n, p in zip(names, params, strict=True)
        ):
            raise SavedModelError(f"{path}: state.json does not name the blend's bases and their parameters")
        bad = _not_bases(names, self.name)
        if bad:
            raise SavedModelError(f"{path}: state.json names {bad[0][:40]!r}, not a base model of blend")
        schema = super().saved_schema(path)
        for i, (name, values) in enumerate(zip(names, params, strict=True)):
            try:
                base = create_model(name, **values)
            except UserError as err:
                raise SavedModelError(f"{path}: base {i}: {err}") from None
            schema |= {
                f"base{i}__{k}": renamed_dims(s, f"base{i}_") for k, s in base.saved_schema(path).items()
            }
        return schema

    def _build_module(self, key: str, state: dict[str, Any]) -> Any:
        position, _, own = key.partition("__")
        index = int(position.removeprefix("base"))
        base = self._empty_base(index, state)
        prefix = f"{position}__"
        return base._build_module(
            own, {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        )

    def _empty_base(self, index: int, state: dict[str, Any]) -> Model:
        from recsys.models.registry import create_model

        return create_model(state["bases_"][index], **state["base_params_"][index])

    def _after_load(self) -> None:
        state = vars(self)
        self._bases = []
        for index in range(len(self.bases_)):
            base = self._empty_base(index, state)
            prefix = f"base{index}__"
            vars(base).update({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
            base._after_load()
            base.fitted_ = True
            self._bases.append(base)


def _not_bases(names: list[str], own: str) -> list[str]:
    """The names that cannot be bases: unregistered ones, the blend itself (``own``) and models that read the
    simulator's ground truth (the oracle)."""
    from recsys.models.registry import list_models, model_class

    known = set(list_models())
    return [n for n in names if n not in known or n == own or model_class(n).needs_ground_truth]


def _flatten(bases: list[Model]) -> dict[str, Any]:
    """The fitted attributes of every base model, as attributes of the blend (``base<i>__<attribute>``)."""
    return {f"base{i}__{k}": v for i, b in enumerate(bases) for k, v in vars(b).items() if k.endswith("_")}


def _known_rows(ratings: Ratings, known: np.ndarray) -> Ratings:
    keep = known[ratings.user_idx]
    return Ratings(ratings.user_idx[keep], ratings.image_idx[keep], ratings.score[keep])


def _groups(user_idx: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(user, row positions) for every user in ``user_idx``, users ascending, rows in order."""
    order = np.argsort(user_idx, kind="stable")
    users, starts = np.unique(user_idx[order], return_index=True)
    return [(int(u), rows) for u, rows in zip(users, np.split(order, starts[1:]), strict=True)]


def _stack(z: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, float]:
    """Non-negative weights and a free intercept of ``target ~ intercept + z @ weights`` (least squares)."""
    z_mean, t_mean = z.mean(axis=0), float(target.mean())
    weights, _ = nnls(z - z_mean, target - t_mean)
    return weights, t_mean - float(z_mean @ weights)


def _user_weights(z: np.ndarray, residual: np.ndarray, prior: np.ndarray, shrinkage: float) -> np.ndarray:
    """One user's weights: a ridge toward ``prior`` with penalty ``shrinkage``, clipped at zero."""
    if not np.isfinite(shrinkage) or not len(z):
        return prior.copy()
    gram = z.T @ z + shrinkage * np.eye(len(prior))
    return np.maximum(np.linalg.solve(gram, z.T @ residual + shrinkage * prior), 0.0)


def _choose_shrinkage(
    user_idx: np.ndarray, z: np.ndarray, target: np.ndarray, prior: np.ndarray, intercept: float
) -> float:
    """The penalty of ``SHRINKAGE_GRID`` with the best mean user SROCC in two-fold cross-validation within each
    user's validation ratings (alternate rows); ties go to the stronger penalty."""
    folds = [(rows[0::2], rows[1::2]) for _, rows in _groups(user_idx) if len(rows) >= 6]
    best, best_score = float("inf"), -np.inf
    for shrinkage in sorted(SHRINKAGE_GRID, reverse=True):
        scores = []
        for a, b in folds:
            for fit, score in ((a, b), (b, a)):
                w = _user_weights(z[fit], target[fit] - intercept, prior, shrinkage)
                scores.append(_spearman(z[score] @ w, target[score]))
        mean = float(np.mean(scores)) if scores else 0.0
        if mean > best_score + 1e-9:
            best, best_score = float(shrinkage), mean
    return best


def _spearman(pred: np.ndarray, truth: np.ndarray) -> float:
    """Spearman correlation; 0 when either side is constant."""
    a, b = rankdata(pred), rankdata(truth)
    a, b = a - a.mean(), b - b.mean()
    norm = np.sqrt((a @ a) * (b @ b))
    return float(a @ b / norm) if norm > 0 else 0.0
