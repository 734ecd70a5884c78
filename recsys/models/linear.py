"""Closed-form linear algebra shared by the models: one ridge solver and the consensus (global ridge) score."""

from __future__ import annotations

import hashlib

import numpy as np

from recsys.data.dataset import Dataset, Ratings


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
    start from. Solved on the rated images with their mean scores, weighted by their rating counts: the same
    least-squares problem as one row per rating (the squared error of a rating splits into its image mean's
    error and a constant), an order of magnitude cheaper when images are rated many times.
    """
    image_idx = np.asarray(ratings.image_idx, np.int64)
    counts = np.bincount(image_idx, minlength=len(design)).astype(np.float64)
    sums = np.bincount(image_idx, ratings.score.astype(np.float64), minlength=len(design))
    rated = np.flatnonzero(counts)
    coef, intercept = ridge(design[rated], sums[rated] / counts[rated], alpha, weight=counts[rated])
    return (design @ coef + intercept).ravel()


def dataset_consensus(
    dataset: Dataset, ratings: Ratings, alpha: float, *, required: bool = True
) -> np.ndarray | None:
    """``consensus_scores`` on the dataset's image design, computed once per (ratings, alpha) and shared by
    every model fitted on the same dataset (a fresh copy each call); None without a design unless ``required``."""
    design = dataset.image_design(required=required)
    if design is None:
        return None
    digest = hashlib.blake2b(digest_size=16)
    for array in (ratings.image_idx, ratings.score):
        digest.update(np.ascontiguousarray(array).tobytes())
    key = ("consensus", float(alpha), len(ratings), digest.hexdigest())
    return dataset._cached(key, lambda: consensus_scores(design, ratings, alpha)).copy()
