"""Loaders for the personalised image aesthetics (PIAA) datasets, each reading the files as published.

PARA (CVPR 2022)::

    PARA/annotation/PARA-Images.csv     one row per rating: sessionId, imageName, userId, aestheticScore,
                                        qualityScore, compositionScore, colorScore, dofScore, contentScore,
                                        lightScore, isObjectEmphasis, imgEmotion, difficultyOfJudgment,
                                        contentPreference, willingnessToShare, semantic
    PARA/annotation/PARA-UserInfo.csv   one row per user: userId, age, gender, EducationalLevel, artExperience,
                                        photographyExperience, personality-E, -A, -N, -O, -C
    PARA/imgs/<sessionId>/<imageName>   the images (optional; ``imgs/<imageName>`` is looked for too)

  The score is ``aestheticScore`` on its 1-5 scale; image ids are the file names (``imageName``); ``users`` holds
  every column of PARA-UserInfo.csv; ``images`` holds ``semantic`` and ``path``. The other per-rating columns
  (qualityScore ... willingnessToShare) are the same rater's judgements of the same image, which would leak the
  score, so they are not read.

LAPIS: one CSV, one row per rating, with ``image_id, image_filename, rating, response time, participant_id, age,
  nationality, demo_gender, demo_edu, demo_colorblind, Art Interest VAIAK, imgs_known, artist, title, genre,
  style, 4_styles, 2_styles`` (some releases have ``VAIAK1``..``VAIAK7`` and ``2VAIAK1``..``2VAIAK4`` instead of
  ``Art Interest VAIAK``). The score is ``rating`` on 0-100; image ids are ``image_id`` (int); ``users`` holds
  the demographic and VAIAK columns present (each participant's first non-empty value: about 17k rows lack
  them); ``images`` holds artist, title, genre, style, 4_styles, 2_styles and ``path`` (``images/<image_filename>``
  beside the CSV or beside its folder, when there). ``response time`` and ``imgs_known`` are not read.

FLICKR-AES: ``FLICKR-AES_image_labeled_by_each_worker.csv`` with the header ``worker, imagePair, score`` (a space
  after each comma, in the values too, as published): one row per worker and image, score 1-5; image ids are
  the file names (``imagePair``); images in ``40K/<imagePair>`` beside the CSV, when there.

Splits: these files carry none, so the suite makes a seeded holdout exactly as for rating tables
(``recsys.data.tables.make_holdout``), by default ``users:0.1``: new users evaluated from k reference ratings
each, the PIAA protocol.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.dataset import SPLITS, Dataset, Ratings
from recsys.data.paths import image_paths
from recsys.data.tables import _ids, _side_table, holdout_label, make_holdout
from recsys.data.validate import as_scores, check_duplicates, check_scores, check_splits, raise_problems
from recsys.errors import UserError

DEFAULT_PIAA_HOLDOUT = "users:0.1"
PARA_IMAGES = "annotation/PARA-Images.csv"
PARA_USERS = "annotation/PARA-UserInfo.csv"
PARA_SCORE_RANGE = (1.0, 5.0)
LAPIS_SCORE_RANGE = (0.0, 100.0)
LAPIS_COLUMNS = ("image_id", "rating", "participant_id")
LAPIS_USER_COLUMNS = (
    ("age", "nationality", "demo_gender", "demo_edu", "demo_colorblind", "Art Interest VAIAK")
    + tuple(f"VAIAK{i}" for i in range(1, 8))
    + tuple(f"2VAIAK{i}" for i in range(1, 5))
)
LAPIS_IMAGE_COLUMNS = ("artist", "title", "genre", "style", "4_styles", "2_styles")
FLICKR_AES_FILE = "FLICKR-AES_image_labeled_by_each_worker.csv"
FLICKR_AES_COLUMNS = ("worker", "imagePair", "score")
FLICKR_AES_SCORE_RANGE = (1.0, 5.0)


def _read_csv(path: Path, **kwargs) -> pd.DataFrame:
    """A CSV as published (UTF-8, with or without a byte-order mark; Latin-1 as a fallback)."""
    try:
        try:
            return pd.read_csv(path, encoding="utf-8-sig", **kwargs)
        except UnicodeDecodeError:
            return pd.read_csv(path, encoding="latin-1", **kwargs)
    except Exception as err:  # pandas raises many types for unreadable files
        raise UserError(f"{path}: cannot be read as CSV ({type(err).__name__}: {err})") from None


def _header(path: Path, **kwargs) -> list[str]:
    try:
        return [str(c).strip() for c in _read_csv(path, nrows=0, **kwargs).columns]
    except UserError:
        return []


def _require(table: pd.DataFrame, columns, path: Path, what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise UserError(f"{path}: lacks column(s) {', '.join(missing)}; {what} has {', '.join(columns)}")


def _first_with_columns(candidates: list[Path], columns, **read) -> Path | None:
    """The first CSV of ``candidates`` whose header holds every one of ``columns``, or None."""
    for candidate in candidates:
        header = _header(candidate, **read)
        if all(c in header for c in columns):
            return candidate
    return None


def _open_table(path, find, columns, what: str, **read) -> tuple[Path, pd.DataFrame]:
    """(file, table) of the one-CSV dataset ``find`` locates from ``path``, with stripped column names and
    ``columns`` checked: one-line errors naming ``what`` when there is no such file or it lacks a column."""
    file = find(Path(path))
    if file is None:
        raise UserError(f"{path}: no {what} (with columns {', '.join(columns)})")
    table = _read_csv(file, **read)
    table.columns = [str(c).strip() for c in table.columns]
    _require(table, columns, file, f"the {what}")
    return file, table


def _first_per(table: pd.DataFrame, key: str, columns, ids: np.ndarray) -> pd.DataFrame:
    """Each id's first non-empty value of ``columns``, rows aligned to ``ids``."""
    columns = [c for c in columns if c in table.columns]
    if not columns:
        return pd.DataFrame(index=range(len(ids)))
    first = table.groupby(_ids(table[key]), sort=False)[columns].first()
    return first.reindex(ids.tolist()).reset_index(drop=True)


def _image_paths(folder: Path, names: list, first: pd.DataFrame, where: Path, problems: list[str]):
    """The resolved files of ``names`` (None where there is none), contained in ``folder``; ``first`` holds
    the rows the names were read from (its index: the table's row numbers)."""
    labels = [f"row {r}" for r in first.index.tolist()]
    return image_paths(names, labels, folder=folder, where=str(where), problems=problems)


@dataclass(frozen=True)
class PiaaFormat:
    """The columns of a PIAA dataset's rating table and its score scale."""

    name: str
    user_column: str
    image_column: str
    score_column: str
    score_range: tuple[float, float]


PARA = PiaaFormat("PARA", "userId", "imageName", "aestheticScore", PARA_SCORE_RANGE)
LAPIS = PiaaFormat("LAPIS", "participant_id", "image_id", "rating", LAPIS_SCORE_RANGE)
FLICKR_AES = PiaaFormat("FLICKR-AES", "worker", "imagePair", "score", FLICKR_AES_SCORE_RANGE)


def _rating_dataset(
    fmt: PiaaFormat, label: str, root: Path, where: Path, table: pd.DataFrame, users, images, options: dict
) -> Dataset:
    """A rating Dataset from one table (the file ``where`` of the dataset folder ``root``, named ``fmt.name
    (label)``): checks, ids, a seeded holdout; ``users(user_ids)`` and ``images(image_ids, first_rows,
    problems)`` build the side tables; ``options``: the loader's holdout, seed and problems."""
    user_column, image_column, score_column = fmt.user_column, fmt.image_column, fmt.score_column
    problems = options["problems"]
    collect = problems is not None
    problems = problems if problems is not None else []
    rows = np.arange(len(table))
    no_id = table[[user_column, image_column]].isna().any(axis=1).to_numpy()
    if no_id.any():
        problems.append(
            f"{where}: empty {user_column} or {image_column} at row(s) {_first_rows(rows[no_id])}; every rating "
            "needs both"
        )
    score = pd.to_numeric(table[score_column], errors="coerce").to_numpy(np.float64)
    problems.extend(check_scores(score[~no_id], fmt.score_range, str(where), rows[~no_id]))
    keep = ~no_id & np.isfinite(score)
    table, rows, score = table[keep], rows[keep], score[keep]
    if not len(table):
        raise UserError(f"{where}: no ratings with a user, an image and a numeric {score_column}")
    user_ids, user_idx = np.unique(_ids(table[user_column]), return_inverse=True)
    image_ids, image_idx = np.unique(_ids(table[image_column]), return_inverse=True)
    every = Ratings(user_idx.astype(np.int64), image_idx.astype(np.int64), as_scores(score))
    problems.extend(check_duplicates(every, str(where), rows, user_ids, image_ids))
    spec = options["holdout"] or DEFAULT_PIAA_HOLDOUT
    split_of = make_holdout(every, spec, options["seed"])
    ratings = {split: every.subset(split_of == split) for split in SPLITS if (split_of == split).any()}
    _, first = np.unique(image_idx, return_index=True)
    ds = Dataset(
        name=f"{fmt.name} ({label})",
        simulated=False,
        pamela_semantics=False,
        user_ids=user_ids,
        image_ids=image_ids,
        users=users(user_ids),
        images=images(image_ids, table.iloc[first], problems),
        ratings=ratings,
        score_range=fmt.score_range,
        root=root.resolve(),
        splits_made_by=holdout_label(spec, options["seed"], default=not options["holdout"]),
    )
    problems.extend(check_splits(ds, {s: f"{where} ({s})" for s in ratings}))
    if not collect:
        raise_problems(problems, str(where))
    return ds


def _first_rows(rows: np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(str(r) for r in rows[:limit].tolist())
    return shown + (f" (and {len(rows) - limit} more)" if len(rows) > limit else "")


# --------------------------------------------------------------------------------------------- PARA
def is_para_dir(path: Path) -> bool:
    return Path(path).is_dir() and (Path(path) / PARA_IMAGES).is_file()


def load_para(
    path: str | Path, *, holdout: str | None = None, seed: int = 0, problems: list[str] | None = None
) -> Dataset:
    """Load a PARA directory (see the module docstring) into a rating Dataset, aestheticScore on 1-5."""
    root = Path(path)
    images_file, users_file = root / PARA_IMAGES, root / PARA_USERS
    if not images_file.is_file():
        raise UserError(f"{images_file}: missing; a PARA directory needs {PARA_IMAGES} and {PARA_USERS}")
    if not users_file.is_file():
        raise UserError(f"{users_file}: missing; a PARA directory needs {PARA_IMAGES} and {PARA_USERS}")
    table = _read_csv(images_file)
    _require(table, ("sessionId", "imageName", "userId", "aestheticScore"), images_file, "PARA-Images.csv")
    table["imageName"] = table["imageName"].astype("string").str.strip()

    def images(image_ids: np.ndarray, first: pd.DataFrame, problems: list[str]) -> pd.DataFrame:
        session = first["sessionId"].astype(str).tolist()
        # imgs/<sessionId>/<imageName>, else imgs/<imageName>
        candidates = [(f"{s}/{n}", n) for s, n in zip(session, image_ids.tolist(), strict=True)]
        out = pd.DataFrame({"semantic": first["semantic"].to_numpy()} if "semantic" in first else {})
        out["path"] = _image_paths(root / "imgs", candidates, first, images_file, problems)
        return out

    users = lambda ids: _side_table(users_file, "userId", ids)  # noqa: E731
    options = {"holdout": holdout, "seed": seed, "problems": problems}
    return _rating_dataset(PARA, root.name, root, images_file, table, users, images, options)


# --------------------------------------------------------------------------------------------- LAPIS
def find_lapis_csv(path: Path) -> Path | None:
    """The LAPIS CSV named by ``path`` (the file, or a folder holding it or holding annotation/ with it)."""
    path = Path(path)
    if path.is_file():
        candidates = [path] if path.suffix == ".csv" else []
    elif path.is_dir():
        candidates = sorted(path.glob("*.csv")) + sorted((path / "annotation").glob("*.csv"))
    else:
        candidates = []
    return _first_with_columns(candidates, LAPIS_COLUMNS)


def load_lapis(
    path: str | Path, *, holdout: str | None = None, seed: int = 0, problems: list[str] | None = None
) -> Dataset:
    """Load the LAPIS CSV (see the module docstring) into a rating Dataset, rating on 0-100."""
    file, table = _open_table(path, find_lapis_csv, LAPIS_COLUMNS, "LAPIS CSV")
    folders = [file.parent / "images", file.parent.parent / "images"]
    image_dir = next((d for d in folders if d.is_dir()), None)

    def images(image_ids: np.ndarray, first: pd.DataFrame, problems: list[str]) -> pd.DataFrame:
        out = _first_per(first, "image_id", LAPIS_IMAGE_COLUMNS, image_ids)
        names = first["image_filename"].tolist() if "image_filename" in first else [None] * len(first)
        if image_dir is None:
            out["path"] = None
        else:
            out["path"] = _image_paths(image_dir, names, first, file, problems)
        return out

    root = file.parent.parent if file.parent.name == "annotation" else file.parent
    users = lambda ids: _first_per(table, "participant_id", LAPIS_USER_COLUMNS, ids)  # noqa: E731
    options = {"holdout": holdout, "seed": seed, "problems": problems}
    return _rating_dataset(LAPIS, file.name, root, file, table, users, images, options)


# --------------------------------------------------------------------------------------------- FLICKR-AES
def find_flickr_aes_csv(path: Path) -> Path | None:
    """The FLICKR-AES ratings CSV named by ``path`` (the file, or a folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / FLICKR_AES_FILE
    candidates = [path] if path.is_file() and path.suffix == ".csv" else []
    return _first_with_columns(candidates, FLICKR_AES_COLUMNS, skipinitialspace=True)


def load_flickr_aes(
    path: str | Path, *, holdout: str | None = None, seed: int = 0, problems: list[str] | None = None
) -> Dataset:
    """Load FLICKR-AES's per-worker ratings (see the module docstring) into a rating Dataset, score on 1-5."""
    file, table = _open_table(
        path, find_flickr_aes_csv, FLICKR_AES_COLUMNS, "FLICKR-AES ratings CSV", skipinitialspace=True
    )
    for column in ("worker", "imagePair"):
        table[column] = table[column].astype("string").str.strip()

    def images(image_ids: np.ndarray, first: pd.DataFrame, problems: list[str]) -> pd.DataFrame:
        names = [str(n) for n in image_ids.tolist()]
        return pd.DataFrame({"path": _image_paths(file.parent / "40K", names, first, file, problems)})

    users = lambda ids: pd.DataFrame(index=range(len(ids)))  # noqa: E731
    options = {"holdout": holdout, "seed": seed, "problems": problems}
    return _rating_dataset(FLICKR_AES, file.name, file.parent, file, table, users, images, options)
