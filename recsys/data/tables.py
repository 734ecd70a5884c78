"""Loader for a generic rating table: CSV or Parquet with ``user_id, item_id, score`` and optional ``split``.

Optional ``users.csv`` (``user_id`` + demographic columns) and ``items.csv`` (``item_id`` + metadata columns)
beside the table. Without a ``split`` column a seeded holdout is made:

* ``random:F`` holds out a fraction F of ratings as ``test_seen`` and, of the rest, F as ``val_seen``
  (the classic rating-prediction setting; every held-out user keeps ratings in train);
* ``users:F`` holds out a fraction F of users as ``test_unseen`` and, of the rest, F as ``val_unseen``
  (new users, evaluated with k reference ratings each);
* ``both:F`` (the default) does both: ``users:F`` first, then ``random:F`` on the remaining users' ratings, so
  one table gives seen-user and new-user test and validation splits (with too few users to leave any in
  train, ``random:F`` alone).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.dataset import SPLITS, Dataset, Ratings
from recsys.data.paths import image_paths
from recsys.data.validate import as_scores, check_duplicates, check_scores, check_splits
from recsys.errors import UserError
from recsys.files import read_json

TABLE_NAMES = ("ratings.parquet", "ratings.csv")
DEFAULT_HOLDOUT = "both:0.2"


def parse_holdout(spec: str, kinds: tuple[str, ...] = ("random", "users")) -> tuple[str, float]:
    """``"random:0.2"`` -> ("random", 0.2); a clear error for anything else (or a kind not in ``kinds``)."""
    kind, _, value = spec.partition(":")
    try:
        fraction = float(value)
    except ValueError:
        fraction = -1.0
    if kind not in kinds or not 0.0 < fraction < 0.5:
        expected = " or ".join(f"{k}:F" for k in kinds)
        raise UserError(f"--holdout {spec!r}: expected {expected} with 0 < F < 0.5, e.g. {kinds[0]}:0.2")
    return kind, fraction


#: what ``--columns`` maps: short name -> the column a rating table needs
COLUMN_KEYS = {"user": "user_id", "item": "item_id", "score": "score", "split": "split"}


def parse_columns(spec: str) -> dict[str, str]:
    """``"user=uid,item=movie,score=rating"`` -> {"user_id": "uid", "item_id": "movie", "score": "rating"}."""
    mapping: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, sep, column = (x.strip() for x in part.partition("="))
        key = {v: v for v in COLUMN_KEYS.values()}.get(key, COLUMN_KEYS.get(key, ""))
        if not sep or not key or not column:
            raise UserError(
                f"--columns {spec!r}: expected NAME=COLUMN pairs with NAME one of "
                f"{', '.join(COLUMN_KEYS)}, e.g. user=uid,item=movie,score=rating"
            )
        mapping[key] = column
    if len(set(mapping.values())) < len(mapping):
        raise UserError(f"--columns {spec!r}: two names map to the same column")
    return mapping


def rename_columns(table: pd.DataFrame, columns: dict[str, str] | None, where: Path) -> pd.DataFrame:
    """The table with the mapped columns renamed to user_id, item_id, score, split (see ``parse_columns``)."""
    if not columns:
        return table
    absent = [c for c in columns.values() if c not in table.columns]
    if absent:
        raise UserError(
            f"{where}: --columns names column(s) {', '.join(absent)} it lacks; it has {', '.join(map(str, table.columns))}"
        )
    clash = [k for k, c in columns.items() if k in table.columns and k != c and k not in columns.values()]
    if clash:
        raise UserError(f"{where}: already has column(s) {', '.join(clash)}; map or rename them, not both")
    return table.rename(columns={c: k for k, c in columns.items()})


def find_table(path: Path) -> Path:
    if path.is_file():
        return path
    for name in TABLE_NAMES:
        if (path / name).is_file():
            return path / name
    raise UserError(
        f"{path}: no rating table (expected a .csv/.parquet file or a directory with ratings.csv)"
    )


def _read(path: Path) -> pd.DataFrame:
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except Exception as err:  # pandas raises many types for unreadable files
        raise UserError(f"{path}: cannot be read as a table ({type(err).__name__}: {err})") from None


def _ids(values: pd.Series) -> np.ndarray:
    """Integer ids stay int64 (so features files can key on them); anything else becomes str."""
    if pd.api.types.is_integer_dtype(values):
        return values.to_numpy(np.int64)
    return values.astype(str).to_numpy(object)


def check_id_whitespace(values: pd.Series, column: str, where: str) -> list[str]:
    """A problem when ids in ``column`` have leading or trailing whitespace: they are rejected, not stripped
    (``"u1 "`` and ``"u1"`` would otherwise be two users, or an id that matches nothing in a side table)."""
    if pd.api.types.is_numeric_dtype(values):
        return []
    text = values.astype(str)
    padded = np.flatnonzero((text != text.str.strip()).to_numpy())
    if not len(padded):
        return []
    row = int(padded[0])
    return [
        f"{where}: {column} {text.iloc[row]!r} at row {row} has leading or trailing whitespace "
        f"({len(padded)} {column} value(s) do); ids are rejected, not stripped: remove the whitespace"
    ]


def split_column(table: pd.DataFrame, where: str | Path, holdout: str | None) -> np.ndarray | None:
    """The table's ``split`` column as strings, or None when it has none.

    Raises:
        UserError: the table has a split column and a holdout was asked for too, or a split value is unknown.
    """
    if "split" not in table.columns:
        return None
    if holdout:
        raise UserError(f"{where}: has a split column; drop --holdout (or drop the column to use it)")
    split_of = table["split"].astype(str).to_numpy()
    unknown = sorted(set(split_of) - set(SPLITS))
    if unknown:
        raise UserError(f"{where}: unknown split value(s) {', '.join(unknown[:5])}; use {', '.join(SPLITS)}")
    return split_of


def read_manifest(file: Path, simulate_command: str) -> dict:
    """A simulator's JSON manifest, or {} when ``file`` is absent (the data set is not simulated).

    Raises:
        UserError: malformed JSON, telling to re-run ``simulate_command``.
    """
    if not file.is_file():
        return {}
    try:
        manifest = read_json(file, "a simulator's manifest")
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        reason = err.msg if isinstance(err, json.JSONDecodeError) else "not UTF-8"
        raise UserError(f"{file}: malformed JSON ({reason}); re-run `{simulate_command}`") from None
    if not isinstance(manifest, dict):
        raise UserError(f"{file}: not a simulator's manifest (a JSON object); re-run `{simulate_command}`")
    return manifest


def load_table(
    path: str | Path,
    *,
    holdout: str | None = None,
    seed: int = 0,
    score_range: tuple[float, float] | None = None,
    problems: list[str] | None = None,
    columns: dict[str, str] | None = None,
) -> Dataset:
    """Load a generic rating table into a Dataset (see the module docstring for the layout); ``columns`` maps
    user_id, item_id, score, split to the table's own column names (``parse_columns``)."""
    table_path = find_table(Path(path))
    collect = problems is not None
    problems = problems if problems is not None else []
    table = rename_columns(_read(table_path), columns, table_path)
    missing = [c for c in ("user_id", "item_id", "score") if c not in table.columns]
    if missing:
        raise UserError(
            f"{table_path}: lacks column(s) {', '.join(missing)}; a rating table needs user_id, item_id, score"
        )
    if table[["user_id", "item_id"]].isna().any().any():
        row = int(np.flatnonzero(table[["user_id", "item_id"]].isna().any(axis=1).to_numpy())[0])
        raise UserError(f"{table_path}: empty user_id or item_id at row {row}; every rating needs both")
    score = pd.to_numeric(table["score"], errors="coerce").to_numpy(np.float64)
    rows = np.arange(len(table))
    for column in ("user_id", "item_id"):
        problems.extend(check_id_whitespace(table[column], column, str(table_path)))
    if score_range is None:
        finite = score[np.isfinite(score)]
        if not len(finite):
            raise UserError(f"{table_path}: no numeric scores")
        score_range = (float(finite.min()), float(finite.max()))

    user_ids, user_idx = np.unique(_ids(table["user_id"]), return_inverse=True)
    item_ids, item_idx = np.unique(_ids(table["item_id"]), return_inverse=True)
    all_ratings = Ratings(user_idx.astype(np.int64), item_idx.astype(np.int64), as_scores(score))
    problems.extend(check_scores(score, score_range, str(table_path), rows))
    # on the whole table, before any holdout: a pair rated twice must not land in two splits unnoticed
    problems.extend(check_duplicates(all_ratings, str(table_path), rows, user_ids, item_ids))

    split_of = split_column(table, table_path, holdout)
    if split_of is None:
        split_of = make_holdout(all_ratings, holdout or DEFAULT_HOLDOUT, seed)

    ratings = {}
    for split in SPLITS:
        mask = split_of == split
        if mask.any():
            ratings[split] = all_ratings.subset(mask)
    if "train" not in ratings:
        raise UserError(f"{table_path}: no training ratings")

    ids = (user_ids, item_ids)
    ds = table_dataset(f"table ({table_path.name})", table_path, ids, score_range, columns, ratings=ratings)
    problems.extend(check_splits(ds, {s: f"{table_path} ({s})" for s in ratings}))
    if problems and not collect:
        more = (
            f" (and {len(problems) - 1} more; run `recsys data validate {path}`)" if len(problems) > 1 else ""
        )
        raise UserError(problems[0] + more)
    return ds


def make_holdout(ratings: Ratings, spec: str, seed: int) -> np.ndarray:
    """Split name per rating for a seeded holdout (see the module docstring)."""
    kind, fraction = parse_holdout(spec, ("random", "users", "both"))
    rng = np.random.default_rng(seed)
    split_of = np.full(len(ratings), "train", dtype=object)
    if kind in ("users", "both"):
        users = rng.permutation(np.unique(ratings.user_idx))
        n_test = max(1, round(fraction * len(users)))
        n_val = max(1, round(fraction * (len(users) - n_test)))
        if kind == "both" and n_test + n_val >= len(users):
            n_test = n_val = 0  # too few users to hold any out as new users: the seen-user holdout only
        split_of[np.isin(ratings.user_idx, users[:n_test])] = "test_unseen"
        split_of[np.isin(ratings.user_idx, users[n_test : n_test + n_val])] = "val_unseen"
        if kind == "users":
            return split_of
    remaining = np.flatnonzero(split_of == "train")
    order = remaining[rng.permutation(len(remaining))]
    n_test = round(fraction * len(order))
    n_val = round(fraction * (len(order) - n_test))
    split_of[order[:n_test]] = "test_seen"
    split_of[order[n_test : n_test + n_val]] = "val_seen"
    # A held-out rating of a user left with nothing in train goes back to train (seen users must be known).
    in_train = np.zeros(ratings.user_idx.max() + 1, dtype=bool)
    in_train[ratings.user_idx[split_of == "train"]] = True
    seen = np.isin(split_of, ("test_seen", "val_seen"))
    split_of[seen & ~in_train[ratings.user_idx]] = "train"
    return split_of


def table_dataset(name: str, table_path: Path, ids, score_range, columns=None, **splits) -> Dataset:
    """A real (not simulated) dataset read from a table: ``ids`` (user ids, item ids), ``users.csv`` and
    ``items.csv`` beside the table when there, and ``splits`` (``ratings=`` and / or ``choices=``)."""
    user_ids, item_ids = ids
    images = _side_table(table_path.parent / "items.csv", "item_id", item_ids, columns)
    if "path" in images.columns:  # image files, relative to the table's folder and inside it
        problems: list[str] = []
        labels = [f"item {i}" for i in item_ids.tolist()]
        where, folder = str(table_path.parent / "items.csv"), table_path.parent
        images["path"] = image_paths(
            images["path"].tolist(), labels, folder=folder, where=where, problems=problems
        )
        for problem in problems:
            raise UserError(problem)
    return Dataset(
        name=name,
        simulated=False,
        pamela_semantics=False,
        user_ids=user_ids,
        image_ids=item_ids,
        users=_side_table(table_path.parent / "users.csv", "user_id", user_ids, columns),
        images=images,
        ratings=splits.pop("ratings", {}),
        score_range=score_range,
        root=table_path.parent.resolve(),
        **splits,
    )


def _side_table(path: Path, key: str, ids: np.ndarray, columns: dict[str, str] | None = None) -> pd.DataFrame:
    """Rows of ``users.csv`` / ``items.csv`` aligned to ``ids``; absent rows are all-missing. The key may have
    the table's own name from ``columns`` (``--columns user=uid``)."""
    if not path.is_file():
        return pd.DataFrame(index=range(len(ids)))
    side = _read(path)
    alias = (columns or {}).get(key)
    if key not in side.columns and alias in side.columns:
        side = side.rename(columns={alias: key})
    if key not in side.columns:
        raise UserError(f"{path}: lacks column {key}")
    for problem in check_id_whitespace(side[key], key, str(path)):
        raise UserError(problem)
    side = side.drop_duplicates(key)
    side.index = _ids(side[key])
    if ids.dtype.kind not in "iu":
        side.index = side.index.astype(str)
    aligned = side.drop(columns=[key]).reindex(ids.tolist())
    return aligned.reset_index(drop=True)
