"""Closed-form linear algebra shared by the models: one ridge solver, the affine maps it fits (kept as fitted
state, so that images absent from the data are scored from their design rows) and the consensus (global ridge)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recsys.data.dataset import Ratings
from recsys.models.persistence import state_record
from recsys.models.schema import Record


@state_record
@dataclass
class LinearMap:
    """An affine map of design rows: ``design @ coef + intercept`` (coef (d, t), intercept (t,)).

    Models keep such maps as fitted state: the map from an image's design row to its score or its parameters,
    which gives the rows of images the model was not fitted with (``Model.with_new_images``).
    """

    coef: np.ndarray
    intercept: np.ndarray

    def __call__(self, design: np.ndarray) -> np.ndarray:
        """(n, t) outputs of (n, d) design rows."""
        return design @ self.coef + self.intercept

    def scores(self, design: np.ndarray) -> np.ndarray:
        """(n,) outputs of a map with one output."""
        return self(design).ravel()


def linear_map_spec(inputs: str, outputs: str) -> Record:
    """The state schema of a ``LinearMap`` from ``inputs`` design columns to ``outputs`` (dimension names)."""
    return Record("LinearMap", coef=f"float[{inputs}, {outputs}]", intercept=f"float[{outputs}]")


def ridge(
    x: np.ndarray, y: np.ndarray, alpha: float, weight: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Multi-target ridge with an unpenalised intercept: (weights (d, t), intercept (t,)).

    ``x`` (n, d), ``y`` (n,) or (n, t), optional row weights ``weight`` (n,). Solved in the dual when n < d.
    """
    y2 = y.reshape(len(y), -1).astype(np.float64)
    w = np.ones(len(x)) if weight is None else np.asarray(weight, np.float64)
    x_mean = (w[:, None] * x).sum(0) / w.sum()
    y_mean = (w[:, None] * y2).sum(0) / w.sum()
    xc, yc = (x - x_mean) * np.sqrt(w)[:, None], (y2 - y_mean) * np.sqrt(w)[:, None]
    if xc.shape[0] < xc.shape[1]:
        coef = xc.T @ np.linalg.solve(xc @ xc.T + alpha * np.eye(len(xc)), yc)
    else:
        coef = np.linalg.solve(xc.T @ xc + alpha * np.eye(xc.shape[1]), xc.T @ yc)
    return coef, y_mean - x_mean @ coef


def consensus_map(design: np.ndarray, ratings: Ratings, alpha: float) -> LinearMap:
    """The global ridge of scores on image design rows (one output): the consensus score of any image's row.

    The non-personalised score that ``ridge``, ``user_ridge``, ``user_knn``, ``profile`` and the deep models start
    from (``consensus_scores`` applies it to every image of the design).
    """
    # One row per rated image, weighted by its number of ratings, with the image's mean score as the target:
    # the same normal equations as one row per rating (the same fit), from far fewer rows.
    counts = np.bincount(ratings.image_idx, minlength=len(design))
    sums = np.bincount(ratings.image_idx, ratings.score.astype(np.float64), minlength=len(design))
    rated = np.flatnonzero(counts)
    return LinearMap(*ridge(design[rated], sums[rated] / counts[rated], alpha, weight=counts[rated]))


def consensus_scores(design: np.ndarray, ratings: Ratings, alpha: float) -> np.ndarray:
    """``consensus_map`` applied to every image of ``design`` (float64, n_images)."""
    return consensus_map(design, ratings, alpha).scores(design)
