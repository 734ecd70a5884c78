"""Breakdowns: where a model works and for whom.

Each rating row of a leaderboard (failed rows and rows of pairwise choices are left out) is broken down:

* **by user group** (``USER_DIMENSIONS``): each user's user SROCC (``Result.per_user["user_srocc"]``, averaged
  over draws) joined with the user's demographics. Age in fixed bins (``AGE_BINS``: 18-24, 25-34, 35-44, 45-54,
  55+, and <18), or in quartiles (labelled by the lowest and highest age in each) when the ages do not look like
  years of age; gender as recorded; nationality
  from a ``nationality_group`` column when there is one, else the ``MAX_LEVELS`` most common nationalities
  (by users) and "other".
* **by image group** (``IMAGE_DIMENSIONS``, the images table's categorical metadata): each user's Spearman
  correlation on only the user's queries of that category (``per_user_srocc`` with at least
  ``MIN_CATEGORY_QUERIES`` queries; constant true scores skipped, constant predictions 0, as for user SROCC),
  per draw and then averaged over draws. Levels beyond the ``MAX_LEVELS`` most common (by images) are "other";
  images without a value (PAMELA: photographs have no art style) are left out of that dimension.

A group's value is the mean over its users with a 95% percentile bootstrap interval over users
(``bootstrap_ci``) and the number of users. Per dimension, the largest gap is the highest group mean minus the
lowest among groups of at least ``MIN_GROUP_USERS`` users; it is *separated* when the two intervals do not
overlap. The gap flagged per model is its largest separated gap over every dimension, else its largest. A
dimension the data lack (no column, or fewer than two levels) is not broken down and is named in the report.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys.data.dataset import Dataset
from recsys.evaluation.evaluator import Result
from recsys.evaluation.metrics import bootstrap_ci, per_user_srocc

USER_DIMENSIONS = ("age", "gender", "nationality")
#: the images table's categorical columns broken down (reported as ``image <column>``)
IMAGE_DIMENSIONS = ("type", "group", "style")
#: (upper bound, label) of the age bins; the last label takes every age from its lower bound on
AGE_BINS = ((18, "<18"), (25, "18-24"), (35, "25-34"), (45, "35-44"), (55, "45-54"), (np.inf, "55+"))
#: ages outside this range are not years of age (another coding): quartile bins instead. MovieLens-100k's
#: youngest raters are 7: years of age, in the "<18" bin
PLAUSIBLE_AGES = (5, 110)
NATIONALITY_COLUMNS = ("nationality_group", "nationality")
#: most levels kept of a dimension with many (nationality, image group, image style); the rest are "other"
MAX_LEVELS = 6
#: a user's SROCC on one image category needs this many of the user's queries in it
MIN_CATEGORY_QUERIES = 3
#: groups with fewer users are listed but take no part in the largest gap
MIN_GROUP_USERS = 5
OTHER = "other"
COLUMNS = ("model", "split", "shots", "dimension", "group", "n_users", "user_srocc", "ci_low", "ci_high")


@dataclass(frozen=True)
class Grouping:
    """One dimension: ``levels`` in report order and a level code per user or image (-1: no value)."""

    levels: tuple[str, ...]
    codes: np.ndarray


def _grouping(labels: pd.Series, order: list[str] | None = None) -> Grouping:
    """Codes of ``labels`` over ``order`` (default: levels by frequency, "other" last); missing values -1."""
    labels = labels.astype("string")
    if order is None:
        counts = labels.value_counts()
        order = [v for v in counts.index if v != OTHER] + ([OTHER] if OTHER in counts.index else [])
    codes = pd.Categorical(labels, categories=order).codes.astype(np.int64)
    return Grouping(tuple(order), codes)


def _top_levels(labels: pd.Series, keep: int = MAX_LEVELS) -> pd.Series:
    """The ``keep`` most common values as they are, every other value "other", missing values kept missing."""
    labels = labels.astype("string").str.strip().replace("", pd.NA)
    top = labels.value_counts().index[:keep]
    return labels.where(labels.isin(top) | labels.isna(), OTHER)


def age_groups(age: pd.Series) -> Grouping:
    """Fixed age bins (``AGE_BINS``), or quartile bins when ages are implausible, each labelled by the lowest
    and highest age in it (ages in months, say: ``200-295``, not the quantile edges)."""
    age = pd.to_numeric(age, errors="coerce")
    lo, hi = PLAUSIBLE_AGES
    if age.notna().any() and (age.min() < lo or age.max() > hi):
        bins = pd.qcut(age, 4, duplicates="drop")
        span = age.groupby(bins, observed=False).agg(["min", "max"])
        labels = [f"{low:g}-{high:g}" for low, high in zip(span["min"], span["max"], strict=True)]
        return _grouping(bins.cat.rename_categories(labels).astype("string"), labels)
    edges = [-np.inf] + [upper for upper, _ in AGE_BINS]
    labels = [label for _, label in AGE_BINS]
    return _grouping(pd.cut(age, edges, right=False, labels=labels).astype("string"), labels)


def user_groupings(users: pd.DataFrame) -> dict[str, Grouping]:
    """The user dimensions the demographics allow (a level code per user_idx)."""
    out = {}
    if "age" in users.columns and pd.to_numeric(users["age"], errors="coerce").notna().any():
        out["age"] = age_groups(users["age"])
    elif "age_binned" in users.columns:
        out["age"] = _grouping(users["age_binned"])
    if "gender" in users.columns:
        out["gender"] = _grouping(users["gender"])
    column = next((c for c in NATIONALITY_COLUMNS if c in users.columns), None)
    if column == "nationality_group":
        out["nationality"] = _grouping(users[column])
    elif column is not None:
        out["nationality"] = _grouping(_top_levels(users[column]))
    return {d: g for d, g in out.items() if len(np.unique(g.codes[g.codes >= 0])) >= 2}


def image_groupings(images: pd.DataFrame) -> dict[str, Grouping]:
    """The image dimensions of ``IMAGE_DIMENSIONS`` the metadata has (a level code per image_idx)."""
    out = {}
    for column in IMAGE_DIMENSIONS:
        if column in images.columns and not pd.api.types.is_numeric_dtype(images[column]):
            grouping = _grouping(_top_levels(images[column]))
            if len(grouping.levels) >= 2:
                out[f"image {column}"] = grouping
    return out


def all_dimensions() -> list[str]:
    """Every dimension a breakdown can have, in report order."""
    return [*USER_DIMENSIONS, *(f"image {c}" for c in IMAGE_DIMENSIONS)]


def summarise(
    dimension: str, grouping: Grouping, codes: np.ndarray, values: np.ndarray, seed: int
) -> list[dict]:
    """Per level with at least one user: mean of ``values`` (one per user; ``codes`` their levels), its
    bootstrap interval over users and the number of users."""
    out = []
    for code, level in enumerate(grouping.levels):
        mine = values[codes == code]
        if not len(mine):
            continue
        lo, hi = bootstrap_ci(mine, seed=seed)
        out.append(
            {
                "dimension": dimension,
                "group": level,
                "n_users": len(mine),
                "user_srocc": float(mine.mean()),
                "ci_low": lo,
                "ci_high": hi,
            }
        )
    return out


def demographic_breakdown(row: Result, groupings: dict[str, Grouping], seed: int = 0) -> list[dict]:
    """Each user's user SROCC of ``row``, averaged per group of each user dimension."""
    per_user = row.per_user.get("user_srocc", {})
    users = np.fromiter(per_user.keys(), np.int64, len(per_user))
    values = np.fromiter(per_user.values(), float, len(per_user))
    out = []
    for dimension, grouping in groupings.items():
        codes = grouping.codes[users]
        out += summarise(dimension, grouping, codes, values, seed)
    return out


def category_srocc(row: Result, image_codes: np.ndarray) -> pd.DataFrame:
    """Per (user, level): the user's Spearman on the queries of images of that level (at least
    MIN_CATEGORY_QUERIES of them), per draw, averaged over draws. Columns ``user``, ``level``, ``value``."""
    p = row.predictions
    level = image_codes[p.image_idx]
    keep = level >= 0
    n_levels = int(image_codes.max()) + 1
    n_users = int(p.user_idx.max()) + 1
    draw = p.draw[keep] - p.draw.min()
    key = (draw * n_users + p.user_idx[keep]) * n_levels + level[keep]
    values = per_user_srocc(p.score[keep], p.prediction[keep], key, min_queries=MIN_CATEGORY_QUERIES)
    keys = np.fromiter(values.keys(), np.int64, len(values)) % (n_users * n_levels)  # draw dropped
    cells, where = np.unique(keys, return_inverse=True)
    counts = np.bincount(where, minlength=len(cells))
    sums = np.bincount(where, np.fromiter(values.values(), float, len(values)), minlength=len(cells))
    return pd.DataFrame({"user": cells // n_levels, "level": cells % n_levels, "value": sums / counts})


def image_breakdown(row: Result, groupings: dict[str, Grouping], seed: int = 0) -> list[dict]:
    """Per group of each image dimension: users' SROCC on their queries of that group (``category_srocc``)."""
    out = []
    for dimension, grouping in groupings.items():
        table = category_srocc(row, grouping.codes)
        out += summarise(dimension, grouping, table["level"].to_numpy(), table["value"].to_numpy(), seed)
    return out


def is_broken_down(row: Result) -> bool:
    """Rating rows with metrics and predictions (not failed rows, not pairwise choices)."""
    return bool(row.metrics) and row.predictions is not None and "user_srocc" in row.per_user


@dataclass(frozen=True)
class Breakdown:
    """A leaderboard's breakdowns: ``table`` (``COLUMNS``, a line per row, dimension and group), the dimensions
    broken down, those the data lack, and the task the report shows (``main_task``; None without rating rows)."""

    table: pd.DataFrame
    dimensions: list[str]
    missing: list[str]
    task: tuple[str, int | None] | None


def breakdown(rows: list[Result], dataset: Dataset, seed: int = 0) -> Breakdown:
    """Every rating row broken down by each dimension the dataset allows (module docstring)."""
    users = user_groupings(dataset.users)
    images = image_groupings(dataset.images)
    records, rated = [], [r for r in rows if is_broken_down(r)]
    for row in rated:
        head = {"model": row.model, "split": row.split, "shots": row.shots}
        found = demographic_breakdown(row, users, seed) + image_breakdown(row, images, seed)
        records += [head | r for r in found]
    table = pd.DataFrame(records, columns=list(COLUMNS))
    table["shots"] = table["shots"].astype("Int64")
    present = [*users, *images]
    missing = [d for d in all_dimensions() if d not in present]
    return Breakdown(table, present, missing, main_task([(r.split, r.shots) for r in rated]))


def largest_gap(groups: pd.DataFrame, min_users: int = MIN_GROUP_USERS) -> dict | None:
    """The highest minus the lowest group mean among named groups (not "other", which pools many) of at least
    ``min_users`` users (rows of one model, task and dimension): ``high`` and ``low`` (group names), ``gap``,
    ``separated`` (intervals do not overlap); None with fewer than two such groups."""
    eligible = ((groups["n_users"] >= min_users) & (groups["group"] != OTHER)).to_numpy()
    if eligible.sum() < 2:
        return None
    mean = groups["user_srocc"].to_numpy()[eligible]
    order = np.argsort(mean, kind="stable")
    low, high = order[0], order[-1]
    name, lo, hi = (groups[c].to_numpy()[eligible] for c in ("group", "ci_low", "ci_high"))
    return {
        "dimension": groups["dimension"].iloc[0],
        "high": name[high],
        "low": name[low],
        "gap": float(mean[high] - mean[low]),
        "separated": bool(hi[low] < lo[high]),
    }


def main_task(tasks: list[tuple[str, int | None]]) -> tuple[str, int | None] | None:
    """The task the report shows, of (split, shots) tasks: the seen-user test split when present, else the first
    split (at its largest k); None without tasks."""
    if not tasks:
        return None
    splits = list(dict.fromkeys(split for split, _ in tasks))
    split = "test_seen" if "test_seen" in splits else splits[0]
    shots = [k for s, k in tasks if s == split and k is not None]
    return split, (max(shots) if shots else None)


def task_rows(table: pd.DataFrame, task: tuple[str, int | None]) -> pd.DataFrame:
    """The lines of one (split, shots) task."""
    split, shots = task
    at = table["split"] == split
    return table[at & (table["shots"].isna() if shots is None else table["shots"] == shots)]


def dimension_gaps(table: pd.DataFrame) -> dict[str, dict[str, dict]]:
    """Per model (lines of one task) and dimension, the largest gap (``largest_gap``; dimensions without one
    left out)."""
    out = {}
    for model, lines in table.groupby("model", sort=False):
        found = {d: largest_gap(part) for d, part in lines.groupby("dimension", sort=False)}
        out[model] = {d: gap for d, gap in found.items() if gap is not None}
    return out


def gaps(table: pd.DataFrame) -> dict[str, dict]:
    """Per model (lines of one task), the gap flagged: the largest separated one over every dimension (the
    intervals do not overlap), else the largest (small groups' gaps are large by noise alone)."""
    found = dimension_gaps(table)
    return {m: max(g.values(), key=lambda gap: (gap["separated"], gap["gap"])) for m, g in found.items() if g}
