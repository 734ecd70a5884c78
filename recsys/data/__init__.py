"""The data layer: one Dataset object, loaders for PAMELA directories, Pick-a-Pic shards and pairs tables,
the PIAA datasets (PARA, LAPIS, FLICKR-AES), feature files and rating tables, integrity checks, and the
calibrated simulators."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from recsys.data.choices import Choices
from recsys.data.dataset import SPLITS, Dataset, Ratings, References, is_unseen_split
from recsys.data.delimited import parse_sep
from recsys.data.encodings import ImageInputs
from recsys.data.features_file import read_image_features, sidecar_path
from recsys.data.pamela import is_pamela_dir, load_pamela
from recsys.data.piaa import (
    find_flickr_aes_csv,
    find_lapis_csv,
    is_para_dir,
    load_flickr_aes,
    load_lapis,
    load_para,
)
from recsys.data.pickapic import is_pairs_table, is_pickapic_dir, load_pairs_table, load_pickapic
from recsys.data.tables import load_table, parse_columns
from recsys.errors import UserError
from recsys.files import read_json

__all__ = [
    "SPLITS",
    "Dataset",
    "Choices",
    "ImageInputs",
    "Ratings",
    "References",
    "is_unseen_split",
    "load_dataset",
    "default_data_dir",
    "with_prompt_file",
]


#: the options of rating tables only, by the flag that sets them
FLAGS = {"--columns": "columns", "--sep": "sep", "--no-header": "header"}


def default_data_dir() -> Path:
    """Where the simulated default dataset is cached (``RECSYS_HOME`` or ``~/.cache/recsys``)."""
    home = Path(os.environ.get("RECSYS_HOME", Path.home() / ".cache" / "recsys"))
    return home / "simulated-pamela-seed0"


def ensure_default_dataset(progress: bool = True) -> Path:
    """Simulate the default dataset once into the cache directory and return its path."""
    from recsys.data.simulate import SimulationConfig, simulate

    path = default_data_dir()
    if not (path / "simulation.json").is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and not any(path.iterdir()):
            path.rmdir()
        simulate(path, SimulationConfig(seed=0), progress=progress)
    return path


def load_dataset(
    path: str | Path | None = None,
    *,
    image_features: str | Path | None = None,
    prompt_features: str | Path | bool | None = None,
    holdout: str | None = None,
    seed: int = 0,
    score_range: tuple[float, float] | None = None,
    problems: list[str] | None = None,
    columns: dict[str, str] | str | None = None,
    sep: str | None = None,
    header: bool | None = None,
) -> Dataset:
    """Load a dataset: a PAMELA directory (real or simulated), a Pick-a-Pic directory (real or simulated), a
    PARA directory, a LAPIS or FLICKR-AES ratings CSV, a pairs table or a generic rating table.

    Args:
        path: PAMELA directory, Pick-a-Pic directory (``data/<split>-*.parquet``), PARA directory
            (``annotation/PARA-Images.csv``), LAPIS or FLICKR-AES CSV (or its folder), pairs table (CSV/Parquet
            with user_id, item_a, item_b, choice; or a directory with ``pairs.csv``), rating table (CSV/Parquet)
            or a directory holding ``ratings.csv``; None means the simulated default (simulated once into a
            cache directory).
        image_features: an ``.npz`` with ``image_id`` and ``embedding``; simulated data use their own file
            when this is None.
        prompt_features: an ``.npz`` like ``image_features`` holding each image's prompt embedding; when None,
            ``X.text.npz`` beside the image features file ``X.npz`` is read if it exists (``recsys features
            embed --text`` writes it, and so does the Pick-a-Pic simulator). Images it leaves out as having no
            prompt (listed in its ``.bad.json``) get a zero row. False: read none.
        holdout: ``random:F`` or ``users:F`` for data without splits (tables without a split column, Pick-a-Pic,
            PARA, LAPIS, FLICKR-AES; see each loader for its rule and default).
        seed: seed of the holdout.
        score_range: declared score range of a table (default: the observed range).
        problems: collect data problems here instead of raising on the first (used by ``data validate``).
        columns: a rating table's own names of user_id, item_id, score, split: a dict, or a string like
            ``"user=uid,item=movie,score=rating"`` (rating tables only).
        sep: a rating table's delimiter (``,`` ``\\t`` ``;`` ``::``, or a name: tab, whitespace; see
            ``recsys.data.delimited.parse_sep``); found from the first lines when None.
        header: False for a rating table without a header line (columns by position: user, item, score and
            optionally timestamp); None finds out from the first lines.
    """
    if isinstance(columns, str):
        columns = parse_columns(columns)
    sep = parse_sep(sep)
    table_options = {"columns": columns, "sep": sep, "header": header}
    root = Path(path) if path is not None else ensure_default_dataset()
    if not root.exists():
        raise UserError(f"{root}: no such file or directory")
    kind = data_kind(root)
    given = [flag for flag, key in FLAGS.items() if table_options[key] not in (None, {})]
    if given and kind != "rating table":
        verb = "applies" if len(given) == 1 else "apply"
        raise UserError(f"{root}: {', '.join(given)} {verb} to rating tables only, not to a {kind}")
    if kind == "PAMELA directory":
        if holdout:
            raise UserError(f"{root}: PAMELA data come with their own splits; drop --holdout")
        ds = load_pamela(root, problems=problems)
        if image_features is None and ds.simulated and (root / "image_features.npz").is_file():
            image_features = root / "image_features.npz"
    elif kind == "Pick-a-Pic directory":
        ds = load_pickapic(root, holdout=holdout, seed=seed, problems=problems)
        if image_features is None and ds.simulated and (root / "image_features.npz").is_file():
            image_features = root / "image_features.npz"
    elif kind == "rating table":
        ds = load_table(
            root, holdout=holdout, seed=seed, score_range=score_range, problems=problems, **table_options
        )
    else:
        ds = PIAA_LOADERS[kind](root, holdout=holdout, seed=seed, problems=problems)
    left_out = np.empty(0, np.int64)
    if image_features is not None:
        left_out = _left_out_images(Path(image_features), ds)
        features = read_image_features(image_features, ds.image_ids, allow_missing=left_out)
        ds = ds.with_image_features(features, str(image_features))
        if prompt_features is None and sidecar_path(image_features, "text.npz").is_file():
            prompt_features = sidecar_path(image_features, "text.npz")
    if prompt_features is not None and prompt_features is not False:
        ds = with_prompt_file(ds, Path(prompt_features), left_out=left_out)
    if len(left_out):
        ds, dropped = ds.drop_images(left_out)
        print(
            f"dropped {dropped} ratings of {len(left_out)} image(s) left out of {image_features} (see its .bad.json)"
        )
    return ds


#: the loaders of the PIAA datasets and of pairs tables, by the kind of data ``data_kind`` names
PIAA_LOADERS = {
    "PARA directory": load_para,
    "LAPIS table": load_lapis,
    "FLICKR-AES table": load_flickr_aes,
    "pairs table": load_pairs_table,
}


def data_kind(root: Path) -> str:
    """What ``root`` holds, as ``load_dataset`` tells: a PAMELA or Pick-a-Pic directory, a PIAA dataset, a pairs
    table, or (anything else) a rating table."""
    if root.is_dir() and is_pamela_dir(root):
        return "PAMELA directory"
    if is_pickapic_dir(root):
        return "Pick-a-Pic directory"
    if is_para_dir(root):
        return "PARA directory"
    if find_lapis_csv(root) is not None:
        return "LAPIS table"
    if find_flickr_aes_csv(root) is not None:
        return "FLICKR-AES table"
    if is_pairs_table(root):
        return "pairs table"
    return "rating table"


def with_prompt_file(
    ds: Dataset, path: Path, source: str | None = None, *, left_out: np.ndarray | None = None
) -> Dataset:
    """``ds`` with the prompt embeddings of ``path`` (an ``.npz`` keyed by image id, as image features are) as its
    ``prompt_features``; images the file leaves out as having no prompt (listed in its ``.bad.json``) and the
    images ``left_out`` of the image features get a zero row. ``source`` names them (default: the path)."""
    no_prompt = _left_out_images(path, ds)
    if left_out is not None:
        no_prompt = np.union1d(no_prompt, left_out)
    prompts = read_image_features(path, ds.image_ids, allow_missing=no_prompt)
    return ds.with_prompt_features(prompts, source or str(path))


def _left_out_images(features_file: Path, ds: Dataset) -> np.ndarray:
    """Indices of images listed as undecodable in ``X.bad.json`` beside ``X.npz`` (``--skip-bad-images``)."""
    sidecar = sidecar_path(features_file, "bad.json")
    if not sidecar.is_file():
        return np.empty(0, np.int64)
    try:
        records = read_json(sidecar, "a list of left-out images")["left_out"]
        ids = [record["image_id"] for record in records]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        raise UserError(
            f"{sidecar}: not a list of left-out images; delete it or re-run `recsys features embed`"
        ) from None
    return np.array([ds._image_index[i] for i in ids if i in ds._image_index], dtype=np.int64)
