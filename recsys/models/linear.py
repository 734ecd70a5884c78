"""Closed-form linear algebra shared by the models: one ridge solver and the consensus (global ridge) score."""

from __future__ import annotations

import numpy as np

from recsys.data.dataset import Ratings


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


def consensus_scores(design: np.ndarray, ratings: Ratings, alpha: float) -> np.ndarray:
    """The global ridge of scores on image design rows, applied to every image (float64, n_images).

    The non-personalised score that ``ridge``, ``user_ridge``, ``item_knn``, ``profile`` and the deep models
    start from.
    """
    # One row per rated image, weighted by its number of ratings, with the image's mean score as the target:
    # the same normal equations as one row per rating (the same fit), from far fewer rows.
    counts = np.bincount(ratings.image_idx, minlength=len(design))
    sums = np.bincount(ratings.image_idx, ratings.score.astype(np.float64), minlength=len(design))
    rated = np.flatnonzero(counts)
    coef, intercept = ridge(design[rated], sums[rated] / counts[rated], alpha, weight=counts[rated])
    return (design @ coef + intercept).ravel()
