"""Loader for a PAMELA directory (``annotations/pamela_*.json``, ``images/`` optional).

The simulator writes the same layout plus ``simulation.json`` (a manifest marking the data simulated),
``image_features.npz`` and ``simulation/ground_truth.csv`` (the noise-free expected score of each rating).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.dataset import SPLITS, Dataset, Ratings
from recsys.data.paths import image_paths
from recsys.data.tables import read_manifest
from recsys.data.validate import as_scores, check_duplicates, check_not_empty, check_scores, check_splits
from recsys.errors import UserError
from recsys.files import loads, read_text

PAMELA_SCORE_RANGE = (1.0, 5.0)
REQUIRED_FIELDS = ("image_id", "participant_id", "original_score", "image_metadata", "user_demographics")
USER_COLUMNS = ("age", "age_binned", "gender", "nationality")
IMAGE_COLUMNS = ("type", "group", "style", "category", "prompt")
SIMULATION_MANIFEST = "simulation.json"
GROUND_TRUTH_FILE = "simulation/ground_truth.csv"


def split_file(root: Path, split: str) -> Path:
    return root / "annotations" / f"pamela_{split}.json"


def is_pamela_dir(path: Path) -> bool:
    return (path / "annotations").is_dir()


def _read_entries(path: Path) -> list:
    try:
        text = read_text(path, "a PAMELA annotation file")
    except OSError as err:
        raise UserError(f"{path}: cannot read ({err.strerror}); check the file and its permissions") from None
    except UnicodeDecodeError as err:
        raise UserError(
            f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); re-download or fix the file"
        ) from None
    try:
        entries = loads(text)
    except json.JSONDecodeError as err:
        raise UserError(
            f"{path}: malformed JSON at line {err.lineno} column {err.colno} ({err.msg}); re-download or fix the file"
        ) from None
    if not isinstance(entries, list):
        raise UserError(f"{path}: expected a JSON list of rating entries, found {type(entries).__name__}")
    return entries


def load_pamela(path: str | Path, *, problems: list[str] | None = None) -> Dataset:
    """Load a PAMELA directory into a Dataset, running every integrity check.

    With ``problems=None`` the first problem raises ``UserError``; with a list, data problems are appended to
    it and loading goes on where it can (``recsys data validate`` reports them all).
    """
    root = Path(path)
    collect = problems is not None
    problems = problems if problems is not None else []
    if not root.is_dir():
        raise UserError(
            f"{root}: no such directory; pass a PAMELA download (with annotations/) or omit --data"
        )
    train_file = split_file(root, "train")
    if not train_file.is_file():
        raise UserError(f"{train_file}: missing; a PAMELA directory needs annotations/pamela_train.json")
    present = [s for s in SPLITS if split_file(root, s).is_file()]
    if not any(s.startswith("test") for s in present):
        raise UserError(
            f"{root / 'annotations'}: no test split (pamela_test_seen.json or pamela_test_unseen.json) found"
        )

    user_ids: dict[str, int] = {}
    image_ids: dict[int, int] = {}
    user_rows: list[dict] = []
    image_rows: list[dict] = []
    columns: dict[str, tuple[list, list, list, list]] = {}
    for split in present:
        file = split_file(root, split)
        users, images, scores, rows = [], [], [], []
        for row, entry in enumerate(_read_entries(file)):
            if not isinstance(entry, dict):
                problems.append(f"{file}: entry {row} is not a JSON object; each entry is one rating")
                continue
            missing = [f for f in REQUIRED_FIELDS if f not in entry]
            if missing:
                problems.append(
                    f"{file}: entry {row} lacks field(s) {', '.join(missing)}; every entry needs {', '.join(REQUIRED_FIELDS)}"
                )
                continue
            try:
                image_id = int(entry["image_id"])
                score = (
                    float(entry["original_score"]) if entry["original_score"] is not None else float("nan")
                )
            except (TypeError, ValueError):
                problems.append(f"{file}: entry {row} has a non-numeric image_id or original_score")
                continue
            pid = str(entry["participant_id"])
            if pid not in user_ids:
                user_ids[pid] = len(user_ids)
                demo = entry["user_demographics"] or {}
                user_rows.append({c: demo.get(c) for c in USER_COLUMNS})
            if image_id not in image_ids:
                image_ids[image_id] = len(image_ids)
                meta = entry["image_metadata"] or {}
                record = {c: meta.get(c) for c in IMAGE_COLUMNS}
                record["image_path"] = entry.get("image_path")
                record["image_path_at"] = f"{file.name} entry {row}"
                image_rows.append(record)
            users.append(user_ids[pid])
            images.append(image_ids[image_id])
            scores.append(score)
            rows.append(row)
        columns[split] = (users, images, scores, rows)

    if not user_ids:
        raise UserError(f"{train_file}: no ratings; the training split is empty")
    user_id_arr = np.array(list(user_ids), dtype=object)
    image_id_arr = np.array(list(image_ids), dtype=np.int64)
    ratings, split_files = {}, {}
    for split, (users, images, scores, rows) in columns.items():
        read = np.array(scores, np.float64)
        r = Ratings(np.array(users, np.int64), np.array(images, np.int64), as_scores(read))
        file = str(split_file(root, split))
        split_files[split] = file
        rows_arr = np.array(rows, np.int64)
        problems.extend(check_not_empty(r, file))
        problems.extend(check_scores(read, PAMELA_SCORE_RANGE, file, rows_arr))
        problems.extend(check_duplicates(r, file, rows_arr, user_id_arr, image_id_arr))
        ratings[split] = r
    if "train" not in ratings or not len(ratings["train"]):
        raise UserError(f"{train_file}: no valid ratings")

    users_df = pd.DataFrame(user_rows, columns=list(USER_COLUMNS))
    users_df["age"] = pd.to_numeric(users_df["age"], errors="coerce")
    images_df = pd.DataFrame(image_rows)
    images_dir = root / "images"
    names, labels = images_df.pop("image_path"), images_df.pop("image_path_at")
    if images_dir.is_dir():
        images_df["path"] = image_paths(
            names.tolist(), labels.tolist(), folder=root, inside=images_dir,
            where=str(root / "annotations"), problems=problems, existing=False,
        )  # fmt: skip
    else:
        images_df["path"] = None

    manifest = read_manifest(root / SIMULATION_MANIFEST, "recsys data simulate")
    ds = Dataset(
        name=manifest.get("name", f"PAMELA ({root.name})") if manifest else f"PAMELA ({root.name})",
        simulated=bool(manifest),
        pamela_semantics=True,
        user_ids=user_id_arr,
        image_ids=image_id_arr,
        users=users_df,
        images=images_df,
        ratings=ratings,
        score_range=PAMELA_SCORE_RANGE,
        root=root.resolve(),
    )
    problems.extend(check_splits(ds, split_files))
    if manifest:
        ds.ground_truth = _read_ground_truth(root, ds)
    if problems and not collect:
        more = (
            f" (and {len(problems) - 1} more; run `recsys data validate {root}`)" if len(problems) > 1 else ""
        )
        raise UserError(problems[0] + more)
    return ds


def _read_ground_truth(root: Path, ds: Dataset) -> dict[str, np.ndarray] | None:
    file = root / GROUND_TRUTH_FILE
    if not file.is_file():
        return None
    table = pd.read_csv(file, dtype={"participant_id": str})
    truth = {}
    for split, part in table.groupby("split", sort=False):
        if split not in ds.ratings:
            continue
        r = ds.ratings[split]
        users = part["participant_id"].map(ds._user_index).to_numpy()
        images = part["image_id"].map(ds._image_index).to_numpy()
        if pd.isna(users).any() or pd.isna(images).any():
            raise UserError(
                f"{file}: ids not present in the annotations of {split}; re-run `recsys data simulate`"
            )
        lookup = dict(
            zip(
                zip(users.astype(np.int64).tolist(), images.astype(np.int64).tolist(), strict=True),
                part["expected_score"].to_numpy(np.float32).tolist(),
                strict=True,
            )
        )
        try:
            truth[split] = np.array(
                [lookup[(u, i)] for u, i in zip(r.user_idx.tolist(), r.image_idx.tolist(), strict=True)],
                dtype=np.float32,
            )
        except KeyError:
            raise UserError(
                f"{file}: a rating of {split} has no ground truth; re-run `recsys data simulate`"
            ) from None
    return truth
