"""The simulator: PAMELA's sizes, calibration against the published aggregates, structure, determinism."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recsys.data import load_dataset
from recsys.data.simulate import (
    PAMELA_SPLIT_RATINGS,
    SimulationConfig,
    expected_clipped,
    load_aggregates,
    simulate,
)
from recsys.errors import UserError
from recsys.evaluation.metrics import user_srocc


@pytest.fixture(scope="module")
def default_sim(tmp_path_factory):
    """Full PAMELA size (no PNGs, to stay fast)."""
    path = simulate(
        tmp_path_factory.mktemp("full") / "sim", SimulationConfig(seed=0, render_images=False), progress=False
    )
    return path, load_dataset(path)


def test_default_matches_pamela_sizes(default_sim):
    _, ds = default_sim
    assert ds.simulated and "simulated" in ds.name
    assert ds.n_users == 199 and len(ds.train_users()) == 156 and ds.n_images == 5077
    for split, published in PAMELA_SPLIT_RATINGS.items():
        assert abs(len(ds.ratings[split]) - published) / published < 0.10, split
    assert 300 <= len(ds.ratings["train"]) / 156 <= 340
    assert ds.image_features.shape == (5077, 512)
    np.testing.assert_allclose(np.linalg.norm(ds.image_features, axis=1), 1.0, atol=1e-5)
    assert ds.users["age"].between(19, 60).all()
    assert set(ds.users["gender"]) <= {"male", "female", "prefer not to say"}
    assert ds.users["nationality"].nunique() == 23


def test_calibrated_to_published_aggregates(default_sim):
    """Recomputed here from the written annotations, independently of the simulator's own report."""
    _, ds = default_sim
    aggregates = load_aggregates()
    train = ds.ratings["train"]
    meta = ds.images.iloc[train.image_idx]
    for column, key in (("group", "train_by_group"), ("style", "train_by_style"), ("type", "train_by_type")):
        means = meta.assign(score=train.score).groupby(column)["score"].mean()
        diffs = [means[level] - stats["mean_score"] for level, stats in aggregates[key].items()]
        rms = float(np.sqrt(np.mean(np.square(diffs))))
        assert rms < 0.15, (column, rms)
    assert (ds.images.loc[ds.images["type"] == "Photorealism", "style"].isna()).all()
    assert ds.images.loc[ds.images["type"] == "Art", "style"].notna().all()


def test_taste_has_structure(default_sim):
    """The oracle reaches 0.75-0.85 per-user SROCC on test_seen; the best non-personalised predictor less."""
    _, ds = default_sim
    r = ds.ratings["test_seen"]
    oracle = user_srocc(r.score, ds.ground_truth["test_seen"], r.user_idx)
    assert 0.75 <= oracle <= 0.85
    # consensus: each image's mean expected score over everyone who rated it (a non-personalised oracle)
    image = np.concatenate([ds.ratings[s].image_idx for s in ds.splits])
    truth = np.concatenate([ds.ground_truth[s] for s in ds.splits])
    consensus = np.bincount(image, truth, ds.n_images) / np.maximum(
        1, np.bincount(image, minlength=ds.n_images)
    )
    assert user_srocc(r.score, consensus[r.image_idx], r.user_idx) < oracle - 0.15


def test_ground_truth_is_the_expected_observed_score():
    rng = np.random.default_rng(0)
    mu, sigma = np.array([0.5, 3.0, 4.8]), np.array([0.7, 0.7, 0.7])
    draws = np.clip(mu[:, None] + sigma[:, None] * rng.standard_normal((3, 400_000)), 1, 5).mean(axis=1)
    np.testing.assert_allclose(expected_clipped(mu, sigma), draws, atol=0.005)


def test_deterministic_and_writes_pngs(tmp_path):
    config = SimulationConfig(seed=5, users=20, images=60, ratings_per_user=20, feature_dim=16, image_size=32)
    a = simulate(tmp_path / "a", config, progress=False)
    b = simulate(tmp_path / "b", config, progress=False)
    for name in ("pamela_train.json", "pamela_test_unseen.json"):
        assert (a / "annotations" / name).read_bytes() == (b / "annotations" / name).read_bytes()
    pngs = sorted((a / "images").glob("*.png"))
    assert len(pngs) == 60
    entries = json.loads((a / "annotations" / "pamela_train.json").read_text())
    assert set(entries[0]) == {"image_path", "image_id", "participant_id", "image_metadata", "user_demographics",
                               "quality_label", "original_score"}  # fmt: skip
    assert (a / entries[0]["image_path"]).is_file()
    ds = load_dataset(a)
    assert ds.images["path"].notna().all()


def test_refuses_to_overwrite_and_bad_knobs(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        simulate(tmp_path / "x", SimulationConfig(users=20, images=60, ratings_per_user=10), progress=False)
    with pytest.raises(UserError, match="--users"):
        simulate(tmp_path / "y", SimulationConfig(users=3), progress=False)
