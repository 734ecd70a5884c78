"""The data layer: one Dataset object, loaders for PAMELA directories, feature files and rating tables,
integrity checks, and the calibrated simulator."""

from __future__ import annotations

import os
from pathlib import Path

from recsys.data.dataset import SPLITS, Dataset, Ratings, References, is_unseen_split
from recsys.data.features_file import read_image_features
from recsys.data.pamela import is_pamela_dir, load_pamela
from recsys.data.tables import load_table
from recsys.errors import UserError

__all__ = [
    "SPLITS",
    "Dataset",
    "Ratings",
    "References",
    "is_unseen_split",
    "load_dataset",
    "default_data_dir",
]


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
    holdout: str | None = None,
    seed: int = 0,
    score_range: tuple[float, float] | None = None,
    problems: list[str] | None = None,
) -> Dataset:
    """Load a dataset: a PAMELA directory (real or simulated) or a generic rating table.

    Args:
        path: PAMELA directory, rating table (CSV/Parquet) or a directory holding ``ratings.csv``; None means the
            simulated default (simulated once into a cache directory).
        image_features: an ``.npz`` with ``image_id`` and ``embedding``; simulated data use their own file
            when this is None.
        holdout: ``random:F`` or ``users:F`` for tables without a split column.
        seed: seed of the holdout.
        score_range: declared score range of a table (default: the observed range).
        problems: collect data problems here instead of raising on the first (used by ``data validate``).
    """
    root = Path(path) if path is not None else ensure_default_dataset()
    if not root.exists():
        raise UserError(f"{root}: no such file or directory")
    if root.is_dir() and is_pamela_dir(root):
        if holdout:
            raise UserError(f"{root}: PAMELA data come with their own splits; drop --holdout")
        ds = load_pamela(root, problems=problems)
        if image_features is None and ds.simulated and (root / "image_features.npz").is_file():
            image_features = root / "image_features.npz"
    else:
        ds = load_table(root, holdout=holdout, seed=seed, score_range=score_range, problems=problems)
    if image_features is not None:
        features = read_image_features(image_features, ds.image_ids)
        ds = ds.with_image_features(features, str(image_features))
        bad_list = (
            Path(str(image_features)[: -len(".npz")] + ".bad.json")
            if str(image_features).endswith(".npz")
            else None
        )
        if bad_list is not None and bad_list.is_file():
            ds = _drop_bad_images(ds, bad_list)
    return ds


def _drop_bad_images(ds: Dataset, bad_list: Path) -> Dataset:
    """Drop the ratings of images recorded as undecodable beside a features file (``--skip-bad-images``)."""
    import json

    bad = json.loads(bad_list.read_text())
    ids = (
        [
            entry["image_id"] if isinstance(entry, dict) else entry
            for entry in bad.get("images", bad)
            if entry is not None
        ]
        if isinstance(bad, dict)
        else bad
    )
    idx = [ds._image_index[i] for i in ids if i in ds._image_index]
    if not idx:
        return ds
    ds, dropped = ds.drop_images(idx)
    print(f"dropped {dropped} ratings of {len(idx)} undecodable image(s) listed in {bad_list}")
    return ds
