"""Pairwise-choice datasets: Pick-a-Pic v2's parquet shards exactly as published, and a generic pairs table.

Pick-a-Pic v2 (``yuvalkirstain/pickapic_v2`` on the Hugging Face hub), once downloaded::

    PICKAPIC/data/<split>-NNNNN-of-MMMMM[-hash].parquet    split: train, validation, test,
                                                             validation_unique, test_unique

One row per comparison shown to the user who wrote the prompt, with the columns ``PICKAPIC_COLUMNS``. Read here:

* a row is a choice when ``has_label`` and ``are_different`` are true and ``image_0_uid`` differs from
  ``image_1_uid``; other rows are dropped, and their count is printed once;
* its pair is image a = ``image_0_uid``, image b = ``image_1_uid``, choice = ``label_0`` (1: image 0 chosen,
  0: image 1 chosen, 0.5: a tie); ``label_0``/``label_1`` must be 1/0, 0/1 or 0.5/0.5 (``best_image_uid`` is
  not read). The same user comparing the same two images twice (either order) is kept as two choices;
* image ids are the uid strings, indexed in order of first appearance; ``images`` holds per image the prompt
  (``caption``) and the generating model (``model_0``/``model_1``) of the first row that shows it;
* user ids are ``user_id`` (int); there are no demographics;
* only the columns the index needs are read: never ``jpg_0``/``jpg_1``. ``iter_pickapic_images`` streams the
  JPEG bytes, a few hundred rows at a time, for ``features.embed`` (``recsys features embed``).

Splits. The published validation and test files serve caption-level evaluation of one global scorer and hold
few users; the suite's splits are made from the published ``train`` files only (``published_splits`` widens
that) by a seeded holdout, ``holdout`` (default ``users:0.1``) with ``seed``:

1. ``users:F``: the distinct user ids, ascending, permuted by ``numpy.random.default_rng(seed)``; the first
   max(1, round(F * n)) users are ``test_unseen``, the next max(1, round(F * (n - n_test))) ``val_unseen``
   (Python's ``round``), as ``--holdout users:F`` of rating tables;
2. sessions: a seen user's choices are split in whole sessions (``Choices.session``, ``choice_sessions``). In
   Pick-a-Pic a session is one user's choices under one ``caption``, joined with any other of the user's choices
   that shows one of its images. The site keeps the chosen image for the next comparison of a prompt, so
   comparisons split one by one put most held-out comparisons beside a training comparison of the same image,
   and "the image seen in more training comparisons wins", a rule that reads no label, scores far above chance
   (0.731 on the default simulated data's test_seen, above ``mf``'s 0.707). Split by session, no held-out image
   of a user is in the user's training choices, and that rule is at chance. In a pairs table a session is one
   comparison (one user and one unordered pair of images: a pair judged twice stays in one split). Every
   session (held-out users' too) gets one uniform draw from the same generator, in order of its first row
   (pairs tables: ascending (user index, lower image index, higher image index)); for every other (seen) user,
   in ascending draw order the first floor(F * k + 0.5) of the user's k sessions are ``test_seen``, the next
   floor(F * (k - n_test) + 0.5) ``val_seen``, the rest ``train`` (a user keeps at least one training session).
   User indices follow ascending user ids; image indices follow first appearance (pairs tables: ascending item
   ids).

``random:F`` skips step 1 (every user is seen). The same rule splits a pairs table without a ``split`` column.
New users' references and queries are drawn by session too (``recsys.evaluation.pairwise``).

A generic pairs table (CSV or Parquet; or a directory with ``pairs.csv`` / ``pairs.parquet``) has the columns
``user_id, item_a, item_b, choice`` with ``choice`` one of ``a``, ``b``, ``tie`` (case and surrounding spaces
ignored), and optionally ``split`` (the suite's split names). ``users.csv`` and ``items.csv`` beside it are read as for rating tables.

The simulator (``recsys.data.simulate_pairs``) writes the Pick-a-Pic layout plus ``simulation.json``,
``image_features.npz`` and ``simulation/choice_probabilities.csv`` (read into ``Dataset.ground_truth_choices``).
Pairwise datasets have no ratings: ``Dataset.ratings`` is empty and ``score_range`` is (0, 1), the range of a choice.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from recsys.data.choices import CHOSE_A, CHOSE_B, TIE, Choices, choice_sessions
from recsys.data.dataset import SPLITS, Dataset
from recsys.data.tables import (
    _ids,
    _read,
    holdout_label,
    parse_holdout,
    read_manifest,
    split_column,
    table_dataset,
)
from recsys.data.validate import check_split_users, raise_problems
from recsys.errors import UserError

#: Pick-a-Pic v2's published splits, in the order they are read
PUBLISHED_SPLITS = ("train", "validation", "test", "validation_unique", "test_unique")
#: every column of a published shard, in the published order
PICKAPIC_COLUMNS = (
    "are_different",
    "best_image_uid",
    "caption",
    "created_at",
    "has_label",
    "image_0_uid",
    "image_0_url",
    "image_1_uid",
    "image_1_url",
    "jpg_0",
    "jpg_1",
    "label_0",
    "label_1",
    "model_0",
    "model_1",
    "ranking_id",
    "user_id",
    "num_example_per_prompt",
)
#: the columns the index needs; the others are not read
INDEX_COLUMNS = (
    "user_id",
    "caption",
    "has_label",
    "are_different",
    "image_0_uid",
    "image_1_uid",
    "label_0",
    "label_1",
)
OPTIONAL_COLUMNS = ("model_0", "model_1", "ranking_id")
JPEG_COLUMNS = ("image_0_uid", "jpg_0", "image_1_uid", "jpg_1")
DEFAULT_PAIR_HOLDOUT = "users:0.1"
PAIR_SCORE_RANGE = (0.0, 1.0)
SIMULATION_MANIFEST = "simulation.json"
CHOICE_PROBABILITIES = "simulation/choice_probabilities.csv"
PAIRS_TABLE_NAMES = ("pairs.parquet", "pairs.csv")
PAIRS_COLUMNS = ("user_id", "item_a", "item_b", "choice")
CHOICE_VALUES = {"a": CHOSE_A, "b": CHOSE_B, "tie": TIE}


def _first(values, limit: int = 5) -> str:
    values = list(values)
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f" (and {len(values) - limit} more)" if len(values) > limit else "")


# --------------------------------------------------------------------------------------------- the split rule
def pair_holdout(pairs: Choices, spec: str, seed: int) -> np.ndarray:
    """Split name per pair for a seeded holdout of ``users:F`` or ``random:F`` (see the module docstring): seen
    users' units are their sessions (``pairs.session``), or their distinct comparisons without sessions."""
    kind, fraction = parse_holdout(spec)
    rng = np.random.default_rng(seed)
    split_of = np.full(len(pairs), "train", dtype=object)
    if not len(pairs):
        return split_of
    if kind == "users":
        users = rng.permutation(np.unique(pairs.user_idx))
        n_test = max(1, round(fraction * len(users)))
        n_val = max(1, round(fraction * (len(users) - n_test)))
        if n_test + n_val >= len(users):
            raise UserError(
                f"--holdout {spec}: only {len(users)} users with choices, so no user would stay in train; "
                "use random:F (held-out comparisons of every user) or more users"
            )
        split_of[np.isin(pairs.user_idx, users[:n_test])] = "test_unseen"
        split_of[np.isin(pairs.user_idx, users[n_test : n_test + n_val])] = "val_unseen"
    n_images = int(max(pairs.image_a.max(), pairs.image_b.max())) + 1
    units = pairs.comparison_codes(n_images) if pairs.session is None else pairs.session
    _, first, unit = np.unique(units, return_index=True, return_inverse=True)
    draw = rng.random(len(first))
    owner = pairs.user_idx[first]
    order = np.lexsort((draw, owner))  # by user, then by draw
    sorted_owner = owner[order]
    starts = np.flatnonzero(np.r_[True, sorted_owner[1:] != sorted_owner[:-1]])
    sizes = np.diff(np.r_[starts, len(order)])
    rank = np.arange(len(order)) - np.repeat(starts, sizes)
    k = np.repeat(sizes, sizes)
    n_test = np.floor(fraction * k + 0.5)
    n_val = np.minimum(np.floor(fraction * (k - n_test) + 0.5), np.maximum(k - n_test - 1, 0))
    per_unit = np.full(len(first), "train", dtype=object)
    per_unit[order[rank < n_test]] = "test_seen"
    per_unit[order[(rank >= n_test) & (rank < n_test + n_val)]] = "val_seen"
    seen = split_of == "train"
    split_of[seen] = per_unit[unit.reshape(-1)[seen]]
    return split_of


# --------------------------------------------------------------------------------------------- integrity checks
def check_pair_splits(ds: Dataset, split_files: dict[str, str]) -> list[str]:
    """Cross-split problems of pairwise choices, leaks first: the same comparison (user and unordered image pair)
    in two splits; unseen users with training data or in both unseen splits; seen users without training data."""
    problems = []
    splits = ds.choice_splits
    if splits:
        every = Choices.concat([ds.choices[s] for s in splits])
        code = every.comparison_codes(ds.n_images)
        bounds = np.cumsum([0] + [len(ds.choices[s]) for s in splits])
        codes = {s: np.unique(code[bounds[i] : bounds[i + 1]]) for i, s in enumerate(splits)}
        flat = every.keys()
        for i, first in enumerate(splits):
            for second in splits[i + 1 :]:
                shared = np.intersect1d(codes[first], codes[second], assume_unique=True)
                if len(shared):
                    where = np.flatnonzero(np.isin(code, shared[:3]))
                    named = sorted({tuple(flat[j].tolist()) for j in where})[:3]
                    pairs = [
                        f"user {ds.user_ids[u]} / images {ds.image_ids[a]} and {ds.image_ids[b]}"
                        for u, a, b in named
                    ]
                    problems.append(
                        f"{split_files.get(second, second)}: {len(shared)} comparison(s) of {second} also in {first}: "
                        f"{_first(pairs, 3)}; a comparison belongs to one split only"
                    )
    if "val_unseen" in ds.choices and "test_unseen" in ds.choices:
        shared = np.intersect1d(ds.choices["val_unseen"].user_idx, ds.choices["test_unseen"].user_idx)
        if len(shared):
            problems.append(
                f"{split_files.get('test_unseen', 'test_unseen')}: {len(shared)} user(s) of test_unseen also in "
                f"val_unseen: {_first(ds.user_ids[shared])}; val_unseen and test_unseen must not share users"
            )
    in_train = np.zeros(ds.n_users, dtype=bool)
    in_train[ds.train_users()] = True
    for split in splits:
        if split == "train":
            continue
        users = np.unique(ds.choices[split].user_idx)
        where = split_files.get(split, split)
        problems += check_split_users(users, in_train, split, where, ds.user_ids, "choose", "choices")
    return problems


def _check_duplicate_comparisons(
    pairs: Choices, split_of: np.ndarray, where: str, rows, user_ids
) -> list[str]:
    """A problem for the same comparison twice within one split of a table."""
    keys = np.column_stack(
        [
            pairs.comparison_codes(int(pairs.images().max()) + 1),
            np.unique(split_of.astype(str), return_inverse=True)[1],
        ]
    )
    _, first, inverse, counts = np.unique(
        keys, axis=0, return_index=True, return_inverse=True, return_counts=True
    )
    repeated = np.flatnonzero(counts[inverse.reshape(-1)] > 1)
    repeated = repeated[repeated != first[inverse.reshape(-1)[repeated]]]  # the second and later rows
    if not len(repeated):
        return []
    shown = [
        f"user {user_ids[pairs.user_idx[j]]} (rows {rows[first[inverse.reshape(-1)[j]]]} and {rows[j]})"
        for j in repeated[:3]
    ]
    return [
        f"{where}: {len(repeated)} duplicate comparison(s) of the same two items by the same user in one split: "
        f"{_first(shown, 3)}; keep one row per user, item pair and split"
    ]


# --------------------------------------------------------------------------------------------- Pick-a-Pic
def shard_files(root: Path, split: str) -> list[Path]:
    """The parquet shards of one published split, sorted (``data/<split>-*.parquet``)."""
    return sorted((Path(root) / "data").glob(f"{split}-*.parquet"))


def is_pickapic_dir(path: Path) -> bool:
    """A directory with ``data/<split>-*.parquet`` shards of a published Pick-a-Pic split."""
    path = Path(path)
    return path.is_dir() and (path / "data").is_dir() and any(shard_files(path, s) for s in PUBLISHED_SPLITS)


def _schema_names(file: Path) -> list[str]:
    try:
        return pq.read_schema(file).names
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise UserError(
            f"{file}: not a readable parquet file ({type(err).__name__}: {err}); re-download the shard"
        ) from None


def _read_index(file: Path) -> pd.DataFrame:
    """The index columns of one shard (no image bytes)."""
    names = _schema_names(file)
    missing = [c for c in INDEX_COLUMNS if c not in names]
    if missing:
        raise UserError(
            f"{file}: lacks column(s) {', '.join(missing)}; a Pick-a-Pic shard has {', '.join(PICKAPIC_COLUMNS)}"
        )
    columns = list(INDEX_COLUMNS) + [c for c in OPTIONAL_COLUMNS if c in names]
    try:
        return pq.read_table(file, columns=columns).to_pandas()
    except Exception as err:
        raise UserError(
            f"{file}: cannot be read ({type(err).__name__}: {err}); re-download the shard"
        ) from None


def _shard_choices(
    file: Path, df: pd.DataFrame, problems: list[str], dropped: dict[str, int]
) -> pd.DataFrame:
    """The rows of one shard that are choices, checked; problems are appended and their rows left out."""
    rows = np.arange(len(df))
    for column in ("has_label", "are_different"):
        empty = df[column].isna().to_numpy()
        if empty.any():
            problems.append(
                f"{file}: {column} is empty at row(s) {_first(rows[empty])}; re-download the shard"
            )
    labelled = df["has_label"].fillna(False).astype(bool).to_numpy()
    uid0, uid1 = df["image_0_uid"], df["image_1_uid"]
    different = df["are_different"].fillna(False).astype(bool).to_numpy() & (uid0 != uid1).to_numpy()
    dropped["unlabelled"] += int((~labelled).sum())
    dropped["same"] += int((labelled & ~different).sum())
    choice = labelled & different
    no_id = (
        df["user_id"].isna()
        | uid0.isna()
        | uid1.isna()
        | (uid0.astype(str).str.len() == 0)
        | (uid1.astype(str).str.len() == 0)
    ).to_numpy() & choice
    if no_id.any():
        problems.append(
            f"{file}: empty user_id, image_0_uid or image_1_uid at row(s) {_first(rows[no_id])}; every choice "
            "needs all three"
        )
    label_0 = pd.to_numeric(df["label_0"], errors="coerce").to_numpy(np.float64)
    label_1 = pd.to_numeric(df["label_1"], errors="coerce").to_numpy(np.float64)
    valid = (
        ((label_0 == 1.0) & (label_1 == 0.0))
        | ((label_0 == 0.0) & (label_1 == 1.0))
        | ((label_0 == 0.5) & (label_1 == 0.5))
    )
    bad = choice & ~valid & ~no_id
    if bad.any():
        i = np.flatnonzero(bad)
        problems.append(
            f"{file}: label_0/label_1 are {label_0[i[0]]:g}/{label_1[i[0]]:g} at row(s) {_first(rows[i])}; a "
            "labelled comparison has 1/0, 0/1 or 0.5/0.5 (a tie)"
        )
    keep = choice & ~no_id & ~bad
    out = pd.DataFrame(
        {
            "user_id": df["user_id"].to_numpy()[keep],
            "image_0_uid": uid0.astype(str).to_numpy()[keep],
            "image_1_uid": uid1.astype(str).to_numpy()[keep],
            "choice": label_0[keep].astype(np.float32),
            "caption": df["caption"].to_numpy()[keep],
            "model_0": df["model_0"].to_numpy()[keep] if "model_0" in df else None,
            "model_1": df["model_1"].to_numpy()[keep] if "model_1" in df else None,
            "ranking_id": df["ranking_id"].to_numpy()[keep] if "ranking_id" in df else -1,
        }
    )
    return out


def _integral(values: pd.Series) -> pd.Series:
    """Integer ids read as floats (a column that had empty cells) back to int64."""
    if pd.api.types.is_float_dtype(values) and len(values) and np.all(np.mod(values.to_numpy(), 1) == 0):
        return values.astype(np.int64)
    return values


def load_pickapic(
    path: str | Path,
    *,
    holdout: str | None = None,
    seed: int = 0,
    published_splits: tuple[str, ...] = ("train",),
    problems: list[str] | None = None,
) -> Dataset:
    """Load a Pick-a-Pic v2 directory into a pairwise Dataset (see the module docstring for the rule).

    Args:
        path: the directory holding ``data/<split>-*.parquet``.
        holdout: ``users:F`` (default ``users:0.1``) or ``random:F``.
        seed: seed of the holdout.
        published_splits: the published splits whose rows are pooled before the holdout.
        problems: collect data problems here instead of raising on the first (``recsys data validate``).
    """
    root = Path(path)
    collect = problems is not None
    problems = problems if problems is not None else []
    unknown = [s for s in published_splits if s not in PUBLISHED_SPLITS]
    if unknown:
        raise UserError(
            f"unknown Pick-a-Pic split(s) {', '.join(unknown)}; use {', '.join(PUBLISHED_SPLITS)}"
        )
    files = [f for split in published_splits for f in shard_files(root, split)]
    if not files:
        raise UserError(
            f"{root / 'data'}: no shards of {', '.join(published_splits)} "
            f"(expected {published_splits[0]}-NNNNN-of-MMMMM.parquet)"
        )
    dropped = {"unlabelled": 0, "same": 0}
    parts = [_shard_choices(file, _read_index(file), problems, dropped) for file in files]
    rows = pd.concat(parts, ignore_index=True)
    if sum(dropped.values()):
        print(
            f"{root}: dropped {sum(dropped.values())} row(s) that are not choices ({dropped['unlabelled']} without "
            f"a label, {dropped['same']} whose two images are not different)"
        )
    if not len(rows):
        raise UserError(f"{root / 'data'}: no labelled comparisons in {', '.join(published_splits)}")

    user_ids, user_idx = np.unique(_ids(_integral(rows["user_id"])), return_inverse=True)
    n = len(rows)
    image_code, image_ids = pd.factorize(np.concatenate([rows["image_0_uid"], rows["image_1_uid"]]))
    _, first = np.unique(image_code, return_index=True)
    captions = np.concatenate([rows["caption"].to_numpy(), rows["caption"].to_numpy()])
    images = pd.DataFrame({"prompt": captions[first]})
    if rows["model_0"].notna().any():
        images["model"] = np.concatenate([rows["model_0"].to_numpy(), rows["model_1"].to_numpy()])[first]
    every = Choices(
        user_idx.astype(np.int64),
        image_code[:n].astype(np.int64),
        image_code[n:].astype(np.int64),
        rows["choice"].to_numpy(np.float32),
    )
    sessions = choice_sessions(every, len(image_ids), rows["caption"].to_numpy(dtype=object))
    every = replace(every, session=sessions)
    split_of = pair_holdout(every, holdout or DEFAULT_PAIR_HOLDOUT, seed)

    manifest = read_manifest(root / SIMULATION_MANIFEST, "recsys data simulate --pickapic")
    truth = _read_choice_probabilities(root, rows["ranking_id"].to_numpy()) if manifest else None
    pairs, ground_truth = {}, {}
    for split in SPLITS:
        mask = split_of == split
        if mask.any():
            pairs[split] = every.subset(mask)
            if truth is not None:
                ground_truth[split] = truth[mask]
    ds = Dataset(
        name=manifest.get("name", f"Pick-a-Pic ({root.name})") if manifest else f"Pick-a-Pic ({root.name})",
        simulated=bool(manifest),
        pamela_semantics=False,
        user_ids=user_ids,
        image_ids=np.asarray(image_ids, dtype=object),
        users=pd.DataFrame(index=range(len(user_ids))),
        images=images,
        ratings={},
        score_range=PAIR_SCORE_RANGE,
        root=root.resolve(),
        choices=pairs,
        ground_truth_choices=ground_truth or None,
        splits_made_by=holdout_label(holdout or DEFAULT_PAIR_HOLDOUT, seed, default=not holdout),
    )
    problems.extend(check_pair_splits(ds, {s: f"{root} ({s})" for s in pairs}))
    if not collect:
        raise_problems(problems, str(root))
    return ds


def _read_choice_probabilities(root: Path, ranking_ids: np.ndarray) -> np.ndarray | None:
    """The simulator's expected ``label_0`` of each kept row, matched by ``ranking_id``."""
    file = root / CHOICE_PROBABILITIES
    if not file.is_file():
        return None
    table = pd.read_csv(file)
    lookup = pd.Series(table["expected_label_0"].to_numpy(np.float32), index=table["ranking_id"].to_numpy())
    if not lookup.index.is_unique:
        raise UserError(f"{file}: ranking_id repeats; re-run `recsys data simulate --pickapic`")
    expected = lookup.reindex(ranking_ids).to_numpy(np.float32)
    if np.isnan(expected).any():
        raise UserError(
            f"{file}: no probability for ranking_id {ranking_ids[np.isnan(expected)][0]}; "
            "re-run `recsys data simulate --pickapic`"
        )
    return expected


def iter_pickapic_images(
    root: str | Path,
    image_ids,
    *,
    published_splits: tuple[str, ...] = PUBLISHED_SPLITS,
    batch_rows: int = 256,
) -> Iterator[tuple[str, bytes | None, str]]:
    """(image uid, JPEG bytes, where) for each of ``image_ids``, from the first row that shows it.

    Reads only ``image_0_uid, jpg_0, image_1_uid, jpg_1``, ``batch_rows`` rows at a time, so memory holds one
    batch of images, and stops once every image is found. ``where`` names the shard, row and column (for error
    messages). An image no row shows comes last with ``None`` bytes.
    """
    root = Path(root)
    wanted = set(map(str, np.asarray(image_ids).tolist()))
    for split in published_splits:
        for file in shard_files(root, split):
            if not wanted:
                return
            missing = [c for c in JPEG_COLUMNS if c not in _schema_names(file)]
            if missing:
                raise UserError(
                    f"{file}: lacks column(s) {', '.join(missing)}; embedding needs the shards with image bytes "
                    "(or use precomputed image features)"
                )
            start = 0
            for batch in pq.ParquetFile(file).iter_batches(batch_size=batch_rows, columns=list(JPEG_COLUMNS)):
                columns = {name: batch.column(name).to_pylist() for name in JPEG_COLUMNS}
                for row in range(batch.num_rows):
                    for side in (0, 1):
                        uid = columns[f"image_{side}_uid"][row]
                        if uid in wanted:
                            wanted.discard(uid)
                            blob = columns[f"jpg_{side}"][row]
                            if isinstance(blob, dict):  # a datasets Image feature: {"bytes", "path"}
                                blob = blob.get("bytes")
                            yield uid, blob, f"{file} row {start + row} jpg_{side}"
                start += batch.num_rows
                if not wanted:
                    return
    for uid in map(str, np.asarray(image_ids).tolist()):
        if uid in wanted:
            yield uid, None, f"{root / 'data'}: no row shows image {uid}"


# --------------------------------------------------------------------------------------------- pairs tables
def _header(path: Path) -> list[str]:
    try:
        if path.suffix == ".parquet":
            return list(pq.read_schema(path).names)
        return list(pd.read_csv(path, nrows=0).columns)
    except Exception:  # not a table at all: the rating-table loader reports it
        return []


def find_pairs_table(path: Path) -> Path | None:
    """The pairs table named by ``path``: a file with item_a and item_b columns, or pairs.csv/.parquet in a
    directory; None otherwise."""
    path = Path(path)
    if path.is_dir():
        return next((path / name for name in PAIRS_TABLE_NAMES if (path / name).is_file()), None)
    if path.is_file() and path.suffix in (".csv", ".parquet"):
        header = _header(path)
        return path if "item_a" in header and "item_b" in header else None
    return None


def is_pairs_table(path: Path) -> bool:
    return find_pairs_table(path) is not None


def load_pairs_table(
    path: str | Path,
    *,
    holdout: str | None = None,
    seed: int = 0,
    problems: list[str] | None = None,
) -> Dataset:
    """Load a pairs table (``user_id, item_a, item_b, choice`` [, ``split``]) into a pairwise Dataset."""
    table_path = find_pairs_table(Path(path))
    if table_path is None:
        raise UserError(f"{path}: no pairs table (a .csv/.parquet with user_id, item_a, item_b, choice)")
    collect = problems is not None
    problems = problems if problems is not None else []
    table = _read(table_path)
    missing = [c for c in PAIRS_COLUMNS if c not in table.columns]
    if missing:
        raise UserError(
            f"{table_path}: lacks column(s) {', '.join(missing)}; a pairs table needs {', '.join(PAIRS_COLUMNS)}"
        )
    rows = np.arange(len(table))
    where = str(table_path)
    no_id = table[["user_id", "item_a", "item_b"]].isna().any(axis=1).to_numpy()
    if no_id.any():
        problems.append(
            f"{where}: empty user_id, item_a or item_b at row(s) {_first(rows[no_id])}; fill or drop them"
        )
    text = table["choice"].astype("string").str.strip().str.lower()
    choice = text.map(CHOICE_VALUES).astype("float64").to_numpy()
    bad = np.isnan(choice) & ~no_id
    if bad.any():
        i = np.flatnonzero(bad)
        problems.append(
            f"{where}: choice {table['choice'].iloc[i[0]]!r} at row(s) {_first(rows[i])}; use a, b or tie"
        )
    keep = ~no_id & ~bad
    table, rows, choice = table[keep], rows[keep], choice[keep]
    same = (table["item_a"].astype(str) == table["item_b"].astype(str)).to_numpy()
    if same.any():
        problems.append(
            f"{where}: item_a equals item_b at row(s) {_first(rows[same])}; a comparison needs two different items"
        )
        table, rows, choice = table[~same], rows[~same], choice[~same]
    if not len(table):
        raise UserError(f"{where}: no valid comparisons")

    user_ids, user_idx = np.unique(_ids(_integral(table["user_id"])), return_inverse=True)
    both = pd.concat([table["item_a"], table["item_b"]], ignore_index=True)
    item_ids, item_idx = np.unique(_ids(_integral(both)), return_inverse=True)
    n = len(table)
    every = Choices(
        user_idx.astype(np.int64),
        item_idx[:n].astype(np.int64),
        item_idx[n:].astype(np.int64),
        choice.astype(np.float32),
    )
    every = replace(every, session=choice_sessions(every, len(item_ids)))
    split_of = split_column(table, where, holdout)
    made_by = "the table's split column"
    if split_of is None:
        split_of = pair_holdout(every, holdout or DEFAULT_PAIR_HOLDOUT, seed)
        made_by = holdout_label(holdout or DEFAULT_PAIR_HOLDOUT, seed, default=not holdout)
    problems.extend(_check_duplicate_comparisons(every, split_of, where, rows, user_ids))
    pairs = {split: every.subset(split_of == split) for split in SPLITS if (split_of == split).any()}
    if "train" not in pairs:
        raise UserError(f"{where}: no training comparisons")
    ids = (user_ids, item_ids)
    ds = table_dataset(f"pairs table ({table_path.name})", table_path, ids, PAIR_SCORE_RANGE, choices=pairs)
    ds.splits_made_by = made_by
    problems.extend(check_pair_splits(ds, {s: f"{where} ({s})" for s in pairs}))
    if not collect:
        raise_problems(problems, str(path))
    return ds
