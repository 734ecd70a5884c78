"""The Pick-a-Pic simulator: published format, readable by the loader, choices drawn from its probabilities."""

from __future__ import annotations

import io
import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image
from scipy.special import ndtr

from recsys.data import load_dataset
from recsys.data.features_file import mapped_member
from recsys.data.pickapic import PICKAPIC_COLUMNS
from recsys.data.simulate_pairs import (
    PICKAPIC_SCHEMA,
    PickapicSimulationConfig,
    choice_probabilities,
    simulate_pickapic,
)
from recsys.errors import UserError

SMALL = PickapicSimulationConfig(
    seed=5,
    users=40,
    prompts_per_user=30,
    max_comparisons=3,
    feature_dim=16,
    image_size=16,
    detailed_images=False,
)


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory):
    return simulate_pickapic(tmp_path_factory.mktemp("pickapic") / "sim", SMALL, progress=False)


def test_choice_probabilities_by_hand():
    # equal means, no tie band: a coin flip
    p_a, p_tie, p_b = choice_probabilities(np.array([3.0]), np.array([3.0]), np.array([0.5]), 0.0)
    np.testing.assert_allclose([p_a[0], p_tie[0], p_b[0]], [0.5, 0.0, 0.5])
    # sigma = 1/sqrt(2) so the difference has sd 1; d = 0.5, band 0.5: P(a) = Phi(0), P(b) = Phi(-1)
    p_a, p_tie, p_b = choice_probabilities(np.array([3.5]), np.array([3.0]), np.array([2**-0.5]), 0.5)
    np.testing.assert_allclose([p_a[0], p_b[0]], [0.5, 0.15865525], atol=1e-7)
    np.testing.assert_allclose(p_tie[0], 1 - 0.5 - 0.15865525, atol=1e-7)
    assert ndtr(0.0) == 0.5


def test_writes_the_published_layout_and_types(sim_dir):
    names = sorted(p.name for p in (sim_dir / "data").iterdir())
    assert names == [
        "test-00000-of-00001.parquet",
        "test_unique-00000-of-00001.parquet",
        "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet",
        "validation-00000-of-00001.parquet",
        "validation_unique-00000-of-00001.parquet",
    ]
    assert tuple(PICKAPIC_SCHEMA.names) == PICKAPIC_COLUMNS
    table = pq.read_table(sim_dir / "data" / "train-00000-of-00002.parquet")
    assert table.schema.equals(PICKAPIC_SCHEMA)
    frame = table.to_pandas()
    with Image.open(io.BytesIO(frame["jpg_0"].iloc[0])) as image:
        assert image.format == "JPEG" and image.size == (16, 16)
    labelled = frame[frame["has_label"] & frame["are_different"]]
    pairs = set(zip(labelled["label_0"], labelled["label_1"], strict=True))
    assert pairs == {(1.0, 0.0), (0.0, 1.0), (0.5, 0.5)}  # including ties
    won = labelled["label_0"] == 1.0
    assert (labelled.loc[won, "best_image_uid"] == labelled.loc[won, "image_0_uid"]).all()
    assert (labelled.loc[labelled["label_0"] == 0.5, "best_image_uid"] == "").all()
    assert (~frame["has_label"]).any() and (~frame["are_different"]).any()
    same = frame[~frame["are_different"]]
    assert (same["image_0_uid"] == same["image_1_uid"]).all()
    test = pq.read_table(sim_dir / "data" / "test-00000-of-00001.parquet").to_pandas()
    unique = pq.read_table(sim_dir / "data" / "test_unique-00000-of-00001.parquet").to_pandas()
    assert set(unique["ranking_id"]) < set(test["ranking_id"])  # one row per prompt of the test users
    assert unique["num_example_per_prompt"].sum() == len(test)  # each prompt's rows, counted once per prompt
    manifest = json.loads((sim_dir / "simulation.json").read_text())
    assert manifest["simulated"] and manifest["rows"]["train"] == sum(
        pq.read_metadata(sim_dir / "data" / f"train-0000{i}-of-00002.parquet").num_rows for i in range(2)
    )


def test_the_loader_reads_it_with_ground_truth_and_features(sim_dir):
    ds = load_dataset(sim_dir)
    assert ds.simulated and ds.name == "simulated Pick-a-Pic (seed 5)"
    assert ds.choice_splits == ["train", "val_seen", "val_unseen", "test_seen", "test_unseen"]
    assert set(ds.ground_truth_choices) == set(ds.choice_splits)
    for split in ds.choice_splits:
        assert ds.ground_truth_choices[split].shape == ds.choices[split].choice.shape
    assert ds.image_features is not None and ds.image_features.shape == (ds.n_images, 16)
    # each image's prompt embedding: the two images of a comparison share it, and prompts differ
    assert ds.prompt_features is not None and ds.prompt_features.shape == (ds.n_images, 16)
    train = ds.choices["train"]
    np.testing.assert_array_equal(ds.prompt_features[train.image_a], ds.prompt_features[train.image_b])
    assert len(np.unique(ds.prompt_features, axis=0)) > ds.n_images // 4
    # the ground truth file names each row's probabilities; they sum to one
    truth = pd.read_csv(sim_dir / "simulation" / "choice_probabilities.csv")
    np.testing.assert_allclose(truth[["p_image_0", "p_tie", "p_image_1"]].sum(axis=1), 1.0, atol=3e-6)
    np.testing.assert_allclose(truth["expected_label_0"], truth["p_image_0"] + truth["p_tie"] / 2, atol=2e-6)


def test_choice_frequencies_match_the_ground_truth(sim_dir):
    ds = load_dataset(sim_dir)
    choice = np.concatenate([ds.choices[s].choice for s in ds.choice_splits]).astype(np.float64)
    expected = np.concatenate([ds.ground_truth_choices[s] for s in ds.choice_splits]).astype(np.float64)
    truth = pd.read_csv(sim_dir / "simulation" / "choice_probabilities.csv")
    p_tie = truth["p_tie"].to_numpy()
    assert len(choice) > 2000
    # the outcome of a row is 1, 0 or 0.5 with probabilities P(a), P(b), P(tie): its variance is bounded by
    # E[c^2] - E[c]^2 = P(a) + P(tie) / 4 - expected^2; z-scores of the sums stay within 4 standard errors
    variance = (expected - expected**2).sum()
    assert abs((choice - expected).sum()) < 4 * np.sqrt(variance)
    ties = (choice == 0.5).sum()
    assert abs(ties - p_tie.sum()) < 4 * np.sqrt((p_tie * (1 - p_tie)).sum())
    # and within each decile of the expected choice
    edges = np.quantile(expected, np.linspace(0, 1, 11))
    for low, high in zip(edges[:-1], edges[1:], strict=True):
        inside = (expected >= low) & (expected <= high)
        gap = choice[inside].mean() - expected[inside].mean()
        assert abs(gap) < 4 * np.sqrt((expected[inside] * (1 - expected[inside])).sum()) / inside.sum()


def test_same_seed_same_data_and_config_checks(tmp_path, sim_dir):
    again = simulate_pickapic(tmp_path / "again", SMALL, progress=False)
    for name in ("train-00000-of-00002.parquet", "test-00000-of-00001.parquet"):
        first, second = (pq.read_table(d / "data" / name) for d in (sim_dir, again))
        assert first.equals(second)
    with pytest.raises(UserError, match="already exists"):
        simulate_pickapic(again, SMALL, progress=False)
    with pytest.raises(UserError, match="--users 3"):
        simulate_pickapic(tmp_path / "x", PickapicSimulationConfig(users=3), progress=False)


def test_the_files_are_the_same_whatever_the_chunk_size(tmp_path, sim_dir):
    # written 7 rows at a time (many row groups, prompts cut across chunks) against the default's one chunk
    chunked = simulate_pickapic(tmp_path / "chunked", SMALL, progress=False, chunk_rows=7)
    for shard in sorted((sim_dir / "data").iterdir()):
        assert pq.ParquetFile(chunked / "data" / shard.name).num_row_groups > 1
        assert pq.ParquetFile(shard).num_row_groups == 1
        assert pq.read_table(chunked / "data" / shard.name).equals(pq.read_table(shard))
    for name in ("simulation/choice_probabilities.csv", "simulation/users.csv"):
        assert (chunked / name).read_bytes() == (sim_dir / name).read_bytes()
    with np.load(chunked / "image_features.npz") as mine, np.load(sim_dir / "image_features.npz") as theirs:
        for name in ("image_id", "embedding"):  # (the zip's member times differ between runs)
            np.testing.assert_array_equal(mine[name], theirs[name])
    # an image's JPEG is the same bytes in every row that shows it, wherever the chunks cut
    table = pq.read_table(chunked / "data" / "train-00000-of-00002.parquet").to_pandas()
    shown = pd.concat(
        [
            table[["image_0_uid", "jpg_0"]].set_axis(["uid", "jpg"], axis=1),
            table[["image_1_uid", "jpg_1"]].set_axis(["uid", "jpg"], axis=1),
        ]
    )
    assert (shown.groupby("uid")["jpg"].nunique() == 1).all()
    assert shown["uid"].duplicated().any()  # kept images do appear in several rows


def test_float16_features_are_memory_mapped_and_load_as_the_float32_ones(tmp_path, sim_dir):
    half = simulate_pickapic(tmp_path / "half", replace(SMALL, feature_dtype="float16"), progress=False)
    with np.load(half / "image_features.npz") as f16, np.load(sim_dir / "image_features.npz") as f32:
        assert f16["embedding"].dtype == np.float16 and f32["embedding"].dtype == np.float32
        np.testing.assert_array_equal(f16["embedding"], f32["embedding"].astype(np.float16))
        np.testing.assert_array_equal(f16["image_id"], f32["image_id"])
        mapped = mapped_member(half / "image_features.npz", "embedding")
        assert isinstance(mapped, np.memmap)
        np.testing.assert_array_equal(mapped, f16["embedding"])
    # the same parquet shards; the dataset keeps the float16 rows, within float16 rounding of the float32 ones
    for shard in sorted((sim_dir / "data").iterdir()):
        assert pq.read_table(half / "data" / shard.name).equals(pq.read_table(shard))
    ds16, ds32 = load_dataset(half), load_dataset(sim_dir)
    assert ds16.image_features.dtype == np.float16 and ds32.image_features.dtype == np.float32
    np.testing.assert_array_equal(ds16.image_ids, ds32.image_ids)
    np.testing.assert_array_equal(ds16.image_features, ds32.image_features.astype(np.float16))
    # unit-norm rows: every value within half a float16 step at 1 (2**-12) of its float32 value
    assert np.abs(ds16.image_features.astype(np.float32) - ds32.image_features).max() <= 2**-12
    with pytest.raises(UserError, match="--feature-dtype float64"):
        simulate_pickapic(tmp_path / "x", replace(SMALL, feature_dtype="float64"), progress=False)


def test_only_an_uncompressed_numeric_member_is_memory_mapped(tmp_path):
    values = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.savez(tmp_path / "plain.npz", image_id=np.array(["a", "b", "c", "d"]), embedding=values)
    np.savez_compressed(tmp_path / "packed.npz", embedding=values)
    mapped = mapped_member(tmp_path / "plain.npz", "embedding")
    assert isinstance(mapped, np.memmap) and mapped.shape == (4, 3)
    np.testing.assert_array_equal(mapped, values)
    assert mapped_member(tmp_path / "plain.npz", "image_id") is None  # strings: read by numpy.load
    assert mapped_member(tmp_path / "packed.npz", "embedding") is None
    assert mapped_member(tmp_path / "plain.npz", "nothing") is None


def test_prompt_taste_reverses_own_taste_under_art_prompts_only(tmp_path):
    """With prompt_taste, comparisons under a caption that names an art style change and the others do not:
    under such prompts the difference of perceived means is consensus + (1 - 2 t) * own taste, so its value at
    t = 0.5 is the mean of its values at t = 0 and t = 1 (read back from the probabilities: for one user,
    ndtri(P(a)) - ndtri(P(b)) is proportional to the difference)."""
    from scipy.special import ndtri

    tables = {}
    for taste in (0.0, 0.5, 1.0):
        config = replace(SMALL, prompt_taste=taste, users=20)
        root = simulate_pickapic(tmp_path / f"t{taste}", config, progress=False)
        truth = pd.read_csv(root / "simulation" / "choice_probabilities.csv")
        captions = pd.concat(pq.read_table(f, columns=["ranking_id", "caption"]).to_pandas()
                             for f in sorted((root / "data").glob("*.parquet"))).drop_duplicates("ranking_id")  # fmt: skip
        tables[taste] = truth.merge(captions, on="ranking_id")
        if taste:
            assert f"prompt_taste={taste:g}" in json.loads((root / "simulation.json").read_text())["name"]
    key = ["ranking_id", "image_0_uid", "image_1_uid"]
    both = tables[0.0].merge(tables[1.0], on=key, suffixes=("_0", "_1")).merge(tables[0.5], on=key)
    styled = both["caption"].str.contains("in the style of")
    assert styled.any() and (~styled).any()
    plain = both[~styled]
    np.testing.assert_array_equal(plain["p_image_0_0"], plain["p_image_0_1"])
    art = both[styled]
    assert (art["p_image_0_0"] != art["p_image_0_1"]).mean() > 0.9
    inner = (
        art[[c for c in art.columns if c.startswith(("p_image_0", "p_image_1"))]]
        .apply(lambda p: p.between(0.02, 0.98))
        .all(axis=1)
    )
    art = art[inner]
    assert len(art) > 20

    def gap(suffix: str) -> np.ndarray:
        return ndtri(art[f"p_image_0{suffix}"]) - ndtri(art[f"p_image_1{suffix}"])

    np.testing.assert_allclose(gap(""), (gap("_0") + gap("_1")) / 2, atol=2e-3)
    with pytest.raises(UserError, match="prompt-taste"):
        replace(SMALL, prompt_taste=1.5).validate()
