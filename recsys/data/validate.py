"""Integrity checks run on every load: each problem is one line naming the file, row or id, and what to do."""

from __future__ import annotations

import numpy as np

from recsys.data.dataset import Dataset, Ratings, is_unseen_split
from recsys.errors import UserError


def _first(values, limit: int = 5) -> str:
    values = list(values)
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f" (and {len(values) - limit} more)" if len(values) > limit else "")


def check_scores(
    score: np.ndarray, score_range: tuple[float, float], where: str, rows: np.ndarray
) -> list[str]:
    """Problems with NaN or out-of-range scores; ``rows`` maps positions to the user's row numbers."""
    problems = []
    nan = ~np.isfinite(score)
    if nan.any():
        problems.append(
            f"{where}: score is NaN or infinite at row(s) {_first(rows[nan])}; fix or drop those rows"
        )
    lo, hi = score_range
    bad = np.isfinite(score) & ((score < lo) | (score > hi))
    if bad.any():
        i = np.flatnonzero(bad)
        problems.append(
            f"{where}: score {score[i[0]]:g} outside the declared range [{lo:g}, {hi:g}] at row(s) "
            f"{_first(rows[i])}; fix the scores or declare the range"
        )
    return problems


def check_duplicates(r: Ratings, where: str, rows: np.ndarray, user_ids, image_ids) -> list[str]:
    """Problems with a (user, image) pair rated twice within one split."""
    key = r.user_idx.astype(np.int64) * (int(r.image_idx.max(initial=0)) + 1) + r.image_idx
    order = np.argsort(key, kind="stable")
    dup = np.flatnonzero(np.diff(key[order]) == 0)
    if not len(dup):
        return []
    second = order[dup + 1]
    first = order[dup]
    pairs = [
        f"user {user_ids[r.user_idx[s]]} / image {image_ids[r.image_idx[s]]} (rows {rows[f]} and {rows[s]})"
        for f, s in zip(first[:3], second[:3], strict=True)
    ]
    return [f"{where}: duplicate (user, image) pair {_first(pairs, 3)}; keep one rating per pair and split"]


def check_splits(ds: Dataset, split_files: dict[str, str]) -> list[str]:
    """Cross-split problems: unseen users in train, seen users missing from train, seen images in train."""
    problems = []
    train = ds.ratings["train"]
    train_users = np.zeros(ds.n_users, dtype=bool)
    train_users[train.user_idx] = True
    train_images = np.zeros(ds.n_images, dtype=bool)
    train_images[train.image_idx] = True
    for split in ds.splits:
        if split == "train":
            continue
        r = ds.ratings[split]
        where = split_files.get(split, split)
        users = np.unique(r.user_idx)
        if is_unseen_split(split):
            leaked = users[train_users[users]]
            if len(leaked):
                problems.append(
                    f"{where}: {len(leaked)} user(s) of unseen split {split} also rate in train: "
                    f"{_first(ds.user_ids[leaked])}; an unseen user must be absent from train"
                )
        else:
            missing = users[~train_users[users]]
            if len(missing):
                problems.append(
                    f"{where}: {len(missing)} user(s) of seen split {split} have no training ratings: "
                    f"{_first(ds.user_ids[missing])}; move them to an unseen split"
                )
            if ds.pamela_semantics:
                images = np.unique(r.image_idx)
                leaked = images[train_images[images]]
                if len(leaked):
                    problems.append(
                        f"{where}: {len(leaked)} image(s) of seen split {split} also appear in train: "
                        f"{_first(ds.image_ids[leaked])}; PAMELA's seen splits hold only images absent from train"
                    )
    return problems


def raise_problems(problems: list[str], source: str) -> None:
    """Raise the first problem as a UserError, counting the rest."""
    if problems:
        more = (
            f" (and {len(problems) - 1} more problem(s); run `recsys data validate {source}`)"
            if len(problems) > 1
            else ""
        )
        raise UserError(problems[0] + more)
