"""Integrity checks run on every load: each problem is one line naming the file, row or id, and what to do."""

from __future__ import annotations

import numpy as np

from recsys.data.dataset import Dataset, Ratings, is_unseen_split
from recsys.errors import UserError


def _first(values, limit: int = 5) -> str:
    values = list(values)
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f" (and {len(values) - limit} more)" if len(values) > limit else "")


#: the largest magnitude a float32 holds: scores are stored as float32, so a larger one would become infinite
FLOAT32_MAX = float(np.finfo(np.float32).max)


def as_scores(score) -> np.ndarray:
    """Scores as the float32 a ``Ratings`` holds, without numpy's overflow warning: a score beyond
    ``FLOAT32_MAX`` becomes infinite, and ``check_scores`` (given the scores as read) names it."""
    with np.errstate(over="ignore"):
        return np.asarray(score, dtype=np.float64).astype(np.float32)


def check_scores(
    score: np.ndarray, score_range: tuple[float, float], where: str, rows: np.ndarray
) -> list[str]:
    """Problems with NaN, infinite, overflowing or out-of-range scores; ``rows`` maps positions to the user's
    row numbers. ``score`` as read (float64), before ``as_scores``."""
    problems = []
    score = np.asarray(score, dtype=np.float64)
    nan = ~np.isfinite(score)
    if nan.any():
        problems.append(
            f"{where}: score is NaN or infinite at row(s) {_first(rows[nan])}; fix or drop those rows"
        )
    huge = np.isfinite(score) & (np.abs(score) > FLOAT32_MAX)
    if huge.any():
        i = np.flatnonzero(huge)
        problems.append(
            f"{where}: score {score[i[0]]:g} at row(s) {_first(rows[i])} overflows the 32-bit floats scores are "
            f"stored in (largest {FLOAT32_MAX:.4g}); rescale the scores"
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


def constant_scores(ds: Dataset) -> list[str]:
    """A warning (one line, not a problem: every model still fits) when every score of a split is the same:
    there is no order to learn or measure, so the correlation metrics are undefined there."""
    constant = {}
    for split in ds.splits:
        score = ds.ratings[split].score
        if len(score) > 1 and float(score.min()) == float(score.max()):
            constant[split] = float(score[0])
    if not constant:
        return []
    values = sorted(set(constant.values()))
    shown = ", ".join(f"{v:g}" for v in values)
    return [
        f"{ds.name}: every score of {', '.join(constant)} is {shown if len(values) == 1 else 'one value (' + shown + ')'}; "
        "the models fit, but there is no order to learn and the correlation metrics are undefined"
    ]


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
    """Cross-split problems, leaks first: the same (user, image) pair in two splits; unseen users in train or in
    both unseen splits; PAMELA's seen-split images in train or in both seen splits; seen users without
    training ratings."""
    problems = []
    train = ds.ratings["train"]
    train_users = np.zeros(ds.n_users, dtype=bool)
    train_users[train.user_idx] = True
    train_images = np.zeros(ds.n_images, dtype=bool)
    train_images[train.image_idx] = True
    problems += check_pair_leaks(ds, split_files)
    problems += _check_disjoint(ds, split_files, ("val_unseen", "test_unseen"), "user")
    if ds.pamela_semantics:
        problems += _check_disjoint(ds, split_files, ("val_seen", "test_seen"), "image")
    for split in ds.splits:
        if split == "train":
            continue
        r = ds.ratings[split]
        where = split_files.get(split, split)
        users = np.unique(r.user_idx)
        problems += check_split_users(users, train_users, split, where, ds.user_ids, "rate", "ratings")
        if not is_unseen_split(split):
            if ds.pamela_semantics:
                images = np.unique(r.image_idx)
                leaked = images[train_images[images]]
                if len(leaked):
                    problems.append(
                        f"{where}: {len(leaked)} image(s) of seen split {split} also appear in train: "
                        f"{_first(ds.image_ids[leaked])}; PAMELA's seen splits hold only images absent from train"
                    )
    return problems


def check_pair_leaks(ds: Dataset, split_files: dict[str, str]) -> list[str]:
    """Problems with a (user, image) pair rated in two splits: a model fitted on one would have seen the
    other's answer."""
    problems = []
    keys = {s: np.unique(ds.ratings[s].user_idx * ds.n_images + ds.ratings[s].image_idx) for s in ds.splits}
    for i, first in enumerate(ds.splits):
        for second in ds.splits[i + 1 :]:
            shared = np.intersect1d(keys[first], keys[second], assume_unique=True)
            if len(shared):
                pairs = [
                    f"user {ds.user_ids[k // ds.n_images]} / image {ds.image_ids[k % ds.n_images]}"
                    for k in shared[:3].tolist()
                ]
                problems.append(
                    f"{split_files.get(second, second)}: {len(shared)} (user, image) pair(s) of {second} also in "
                    f"{first}: {_first(pairs, 3)}; a rating belongs to one split only"
                )
    return problems


def _check_disjoint(
    ds: Dataset, split_files: dict[str, str], splits: tuple[str, str], kind: str
) -> list[str]:
    """A problem when two splits share users (``kind="user"``) or images (``kind="image"``)."""
    first, second = splits
    if first not in ds.ratings or second not in ds.ratings:
        return []
    column, ids = ("user_idx", ds.user_ids) if kind == "user" else ("image_idx", ds.image_ids)
    shared = np.intersect1d(getattr(ds.ratings[first], column), getattr(ds.ratings[second], column))
    if not len(shared):
        return []
    return [
        f"{split_files.get(second, second)}: {len(shared)} {kind}(s) of {second} also in {first}: "
        f"{_first(ids[shared])}; {first} and {second} must not share {kind}s"
    ]


def check_not_empty(r: Ratings, where: str) -> list[str]:
    """A problem for a split file or table part with no ratings at all."""
    if len(r):
        return []
    return [f"{where}: no ratings (an empty split); add ratings or remove the file"]


def check_split_users(
    users: np.ndarray,
    in_train: np.ndarray,
    split: str,
    where: str,
    user_ids: np.ndarray,
    verb: str,
    noun: str,
) -> list[str]:
    """Problems with the users (indices, unique) of a held-out split: an unseen split's must be absent from
    train, a seen split's present in it. ``in_train`` flags the users with training data; ``verb`` and ``noun``
    name what a user does there ("rate", "ratings")."""
    if is_unseen_split(split):
        leaked = users[in_train[users]]
        if len(leaked):
            return [
                f"{where}: {len(leaked)} user(s) of unseen split {split} also {verb} in train: "
                f"{_first(user_ids[leaked])}; an unseen user must be absent from train"
            ]
    else:
        missing = users[~in_train[users]]
        if len(missing):
            return [
                f"{where}: {len(missing)} user(s) of seen split {split} have no training {noun}: "
                f"{_first(user_ids[missing])}; move them to an unseen split"
            ]
    return []


def raise_problems(problems: list[str], source: str) -> None:
    """Raise the first problem as a UserError, counting the rest."""
    if problems:
        more = (
            f" (and {len(problems) - 1} more problem(s); run `recsys data validate {source}`)"
            if len(problems) > 1
            else ""
        )
        raise UserError(problems[0] + more)
