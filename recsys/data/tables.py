"""Loader for a generic rating table: CSV or Parquet with ``user_id, item_id, score`` and optional ``split``.

Optional ``users.csv`` (``user_id`` + demographic columns) and ``items.csv`` (``item_id`` + metadata columns)
beside the table. Without a ``split`` column a seeded holdout is made:

* ``random:F`` holds out a fraction F of ratings as ``test_seen`` and, of the rest, F as ``val_seen``
  (the classic rating-prediction setting; every held-out user keeps ratings in train);
* ``users:F`` holds out a fraction F of users as ``test_unseen`` and, of the rest, F as ``val_unseen``
  (new users, evaluated with k reference ratings each);
* ``both:F`` does both: ``users:F`` first, then ``random:F`` on the remaining users' ratings, so one table
  gives seen-user and new-user test and validation splits (with too few users to leave any in train,
  ``random:F`` alone);
* ``KIND:F,V`` sets the validation fraction apart: F of the users (or ratings) are test, V of them validation.
  The default, ``both:0.1,0.05``, holds out 10% of the users as new users for testing and 5% for validation,
  then 10% and 5% of the other users' ratings: about 72% of the ratings stay in train (``both:0.2`` kept 41%),
  while 10% of a table's users and ratings still give test intervals of about +-0.03 user SROCC on
  MovieLens-100k; validation only stops training early, and 5% is enough for that.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.dataset import SPLITS, Dataset, Ratings
from recsys.data.delimited import apply_aliases, read_delimited
from recsys.data.paths import image_paths
from recsys.data.validate import as_scores, check_duplicates, check_scores, check_splits
from recsys.errors import UserError
from recsys.files import read_json

#: a directory's rating table: ours, MovieLens-100k's and MovieLens-1M's
TABLE_NAMES = ("ratings.parquet", "ratings.csv", "u.data", "ratings.dat")
DEFAULT_HOLDOUT = "both:0.1,0.05"


@dataclass(frozen=True)
class Holdout:
    """A seeded holdout rule (see the module docstring): its kind (random, users, both), the test fraction and
    the validation fraction (None: the test fraction of what the test split leaves)."""

    kind: str
    test: float
    val: float | None = None

    def counts(self, n: int, *, at_least_one: bool = False) -> tuple[int, int]:
        """(test, validation) counts out of ``n`` users or ratings."""
        n_test = round(self.test * n)
        n_val = round(self.val * n) if self.val is not None else round(self.test * (n - n_test))
        if at_least_one:
            n_test, n_val = max(1, n_test), max(1, n_val)
        return n_test, n_val


def parse_table_holdout(spec: str) -> Holdout:
    """``"both:0.1,0.05"`` -> Holdout("both", 0.1, 0.05); ``"random:0.2"`` -> Holdout("random", 0.2); a clear
    error for anything else (fractions in (0, 0.5), together below 0.5)."""
    kind_and_test, _, val_text = spec.partition(",")
    kind, test = parse_holdout(kind_and_test, ("random", "users", "both"))
    if not val_text:
        return Holdout(kind, test)
    try:
        val = float(val_text)
    except ValueError:
        val = -1.0
    if not 0.0 < val < 0.5 or test + val >= 0.5:
        raise UserError(
            f"--holdout {spec!r}: expected KIND:F,V with 0 < V and F + V < 0.5 (F test, V validation), e.g. "
            "both:0.1,0.05"
        )
    return Holdout(kind, test, val)


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
        f"{path}: no rating table (expected a .csv/.parquet file or a directory with one of "
        f"{', '.join(TABLE_NAMES)})"
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


def read_rating_table(
    table_path: Path,
    *,
    sep: str | None = None,
    header: bool | None = None,
    columns: dict[str, str] | None = None,
) -> pd.DataFrame:
    """The table at ``table_path`` with columns named user_id, item_id, score (and split when it has one).

    Parquet is read as it is; a delimited file has its delimiter and header found (``recsys.data.delimited``;
    ``sep`` and ``header=False`` override them), and each choice the reader made on its own is printed as one
    line on stderr. ``columns`` maps the table's own names (``parse_columns``).

    Raises:
        UserError: the file cannot be read, or it lacks a needed column: the message lists the columns it has
            and the ``--columns`` mapping to use.
    """
    if table_path.suffix == ".parquet":
        if sep is not None or header is not None:
            raise UserError(f"{table_path}: --sep and --no-header apply to delimited text, not to Parquet")
        table, fmt = _read(table_path), None
    else:
        table, fmt = read_delimited(table_path, sep=sep, header=header, columns=columns)
    table = rename_columns(table, columns, table_path)
    if fmt is not None and fmt.header:
        table = apply_aliases(table, fmt)
    missing = [c for c in ("user_id", "item_id", "score") if c not in table.columns]
    if missing:
        found = ", ".join(map(str, table.columns))
        example = ",".join(f"{k}=COLUMN" for k, v in COLUMN_KEYS.items() if v in missing)
        raise UserError(
            f"{table_path}: lacks column(s) {', '.join(missing)} (it has {found}); a rating table needs "
            f"user_id, item_id, score: map its own names with --columns {example}"
        )
    for note in fmt.notes(table_path) if fmt is not None else []:
        print(note, file=sys.stderr)
    return table


def load_table(
    path: str | Path,
    *,
    holdout: str | None = None,
    seed: int = 0,
    score_range: tuple[float, float] | None = None,
    problems: list[str] | None = None,
    columns: dict[str, str] | None = None,
    sep: str | None = None,
    header: bool | None = None,
) -> Dataset:
    """Load a generic rating table into a Dataset (see the module docstring for the layout); ``columns`` maps
    user_id, item_id, score, split to the table's own column names (``parse_columns``); ``sep`` and ``header``
    as in ``read_rating_table``."""
    table_path = find_table(Path(path))
    collect = problems is not None
    problems = problems if problems is not None else []
    table = read_rating_table(table_path, sep=sep, header=header, columns=columns)
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
    made_by = "the table's split column"
    if split_of is None:
        split_of = make_holdout(all_ratings, holdout or DEFAULT_HOLDOUT, seed)
        made_by = holdout_label(holdout or DEFAULT_HOLDOUT, seed, default=not holdout)

    ratings = {}
    for split in SPLITS:
        mask = split_of == split
        if mask.any():
            ratings[split] = all_ratings.subset(mask)
    if "train" not in ratings:
        raise UserError(f"{table_path}: no training ratings")

    ids = (user_ids, item_ids)
    ds = table_dataset(f"table ({table_path.name})", table_path, ids, score_range, columns, ratings=ratings)
    ds.splits_made_by = made_by
    problems.extend(check_splits(ds, {s: f"{table_path} ({s})" for s in ratings}))
    if problems and not collect:
        more = (
            f" (and {len(problems) - 1} more; run `recsys data validate {path}`)" if len(problems) > 1 else ""
        )
        raise UserError(problems[0] + more)
    return ds


def make_holdout(ratings: Ratings, spec: str, seed: int) -> np.ndarray:
    """Split name per rating for a seeded holdout (see the module docstring)."""
    holdout = parse_table_holdout(spec)
    kind = holdout.kind
    rng = np.random.default_rng(seed)
    split_of = np.full(len(ratings), "train", dtype=object)
    if kind in ("users", "both"):
        users = rng.permutation(np.unique(ratings.user_idx))
        n_test, n_val = holdout.counts(len(users), at_least_one=True)
        if kind == "both" and n_test + n_val >= len(users):
            n_test = n_val = 0  # too few users to hold any out as new users: the seen-user holdout only
        split_of[np.isin(ratings.user_idx, users[:n_test])] = "test_unseen"
        split_of[np.isin(ratings.user_idx, users[n_test : n_test + n_val])] = "val_unseen"
        if kind == "users":
            return split_of
    remaining = np.flatnonzero(split_of == "train")
    order = remaining[rng.permutation(len(remaining))]
    n_test, n_val = holdout.counts(len(order))
    split_of[order[:n_test]] = "test_seen"
    split_of[order[n_test : n_test + n_val]] = "val_seen"
    # A held-out rating of a user left with nothing in train goes back to train (seen users must be known).
    in_train = np.zeros(ratings.user_idx.max() + 1, dtype=bool)
    in_train[ratings.user_idx[split_of == "train"]] = True
    seen = np.isin(split_of, ("test_seen", "val_seen"))
    split_of[seen & ~in_train[ratings.user_idx]] = "train"
    return split_of


def holdout_label(spec: str, seed: int, *, default: bool = False) -> str:
    """How a holdout made a dataset's splits, as outputs say it: ``holdout both:0.1,0.05 (the default), seed 0``."""
    return f"holdout {spec}{' (the default)' if default else ''}, seed {seed}"


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
