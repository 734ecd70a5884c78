"""``recsys features embed`` end to end on a tiny simulated PAMELA directory, and its one-line errors."""

from __future__ import annotations

import json
import os
import stat
import warnings

import numpy as np
import pytest

from features.embed import bad_sidecar_path, embed_dataset_features, text_output_path
from features.encoders import TINY_ARCHITECTURE, register_architecture
from recsys.cli import main
from recsys.data import load_dataset
from recsys.data.demographics import PamelaUserEncoder, user_feature_encoder_for
from recsys.data.features_file import read_image_features
from recsys.data.simulate import SimulationConfig, simulate

TINY = "clip:recsys-test-tiny/random"


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory):
    register_architecture("recsys-test-tiny", TINY_ARCHITECTURE)
    config = SimulationConfig(seed=3, users=10, images=24, ratings_per_user=6, feature_dim=8, image_size=16)
    return simulate(tmp_path_factory.mktemp("sim") / "pamela", config, progress=False)


def test_embed_command_writes_features_the_data_layer_reads(sim_dir, tmp_path, capsys):
    out = tmp_path / "clip.npz"
    args = ["features", "embed", "--data", str(sim_dir), "--encoder", TINY, "--out", str(out), "--text",
            "--device", "cpu", "--cache-dir", str(tmp_path / "cache"), "--workers", "1", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"wrote 24 embeddings (32-d, {TINY}) to {out}" in printed
    ds = load_dataset(sim_dir)
    features = read_image_features(out, ds.image_ids)
    np.testing.assert_allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-6)
    assert read_image_features(text_output_path(out), ds.image_ids).shape == (24, 32)

    with_features = embed_dataset_features(ds, TINY, device="cpu", out=out, cache_dir=tmp_path / "cache",
                                           progress=False)  # fmt: skip
    np.testing.assert_array_equal(with_features.image_features, features)
    assert with_features.feature_source == TINY


def test_bad_image_is_one_line_and_exit_2(sim_dir, tmp_path, capsys):
    ds = load_dataset(sim_dir)
    broken = ds.images["path"].iloc[3]
    original = open(broken, "rb").read()
    try:
        with open(broken, "wb") as handle:
            handle.write(original[: len(original) // 2])
        args = ["features", "embed", "--data", str(sim_dir), "--encoder", TINY, "--out", str(tmp_path / "x.npz"),
                "--device", "cpu", "--cache-dir", str(tmp_path / "cache"), "--no-progress"]  # fmt: skip
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: 1 image file(s)") and broken in err and "\n" not in err

        assert main([*args, "--skip-bad-images"]) == 0
        sidecar = json.loads(bad_sidecar_path(tmp_path / "x.npz").read_text())
        assert sidecar["left_out"][0]["path"] == broken
        assert sidecar["left_out"][0]["image_id"] == int(ds.image_ids[3])
        assert "1 left out" in capsys.readouterr().out

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            kept = embed_dataset_features(ds, TINY, device="cpu", out=tmp_path / "y.npz",
                                          cache_dir=tmp_path / "cache", skip_bad_images=True, progress=False)  # fmt: skip
        assert any("1 unreadable images left out" in str(w.message) for w in caught)
        assert not kept.image_features[3].any() and kept.image_features[2].any()
        assert all(3 not in r.image_idx for r in kept.ratings.values())
    finally:
        with open(broken, "wb") as handle:
            handle.write(original)


@pytest.mark.parametrize(
    ("encoder", "message"),
    [
        ("ViT-B-32", "malformed"),
        ("clip:NoSuchNet/x", "no architecture"),
        ("clip:ViT-B-32/nope", "no pretrained tag"),
    ],
)
def test_encoder_mistakes_are_one_line(sim_dir, tmp_path, capsys, encoder, message):
    args = ["features", "embed", "--data", str(sim_dir), "--encoder", encoder, "--out", str(tmp_path / "x.npz"),
            "--no-progress"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_missing_checkpoint_is_one_line(sim_dir, tmp_path, capsys):
    args = ["features", "embed", "--data", str(sim_dir), "--encoder", TINY, "--checkpoint",
            str(tmp_path / "absent.pt"), "--out", str(tmp_path / "x.npz"), "--no-progress"]  # fmt: skip
    assert main(args) == 2
    assert "absent.pt: no such checkpoint file" in capsys.readouterr().err


def _embed_args(sim_dir, out, cache, *extra: str) -> list[str]:
    paths = ["--data", str(sim_dir), "--out", str(out), "--cache-dir", str(cache)]
    options = ["--encoder", TINY, *"--device cpu --workers 0 --no-progress".split()]
    return ["features", "embed", *paths, *options, *extra]


def test_chunk_size_is_the_unit_of_resumption(sim_dir, tmp_path, monkeypatch, capsys):
    from features.embed import DEFAULT_CHUNK_SIZE
    from features.encoders import ClipEncoder
    from recsys.cli import features as features_cli

    assert features_cli.DEFAULT_CHUNK_SIZE == DEFAULT_CHUNK_SIZE
    batches, encode = [], ClipEncoder.encode_image_batch

    def interrupted_in_third_chunk(self, pixels):
        batches.append(len(pixels))
        if len(batches) == 3 and interrupt:
            raise KeyboardInterrupt
        return encode(self, pixels)

    monkeypatch.setattr(ClipEncoder, "encode_image_batch", interrupted_in_third_chunk)
    cache, out = tmp_path / "cache", tmp_path / "clip.npz"
    args = _embed_args(sim_dir, out, cache, "--batch-size", "4", "--chunk-size", "4")
    interrupt = True
    assert main(args) == 130
    assert len(list(cache.rglob("*.npz"))) == 2 and not out.exists()  # two whole chunks of 4 images kept
    batches.clear()
    interrupt = False
    assert main(args) == 0
    assert batches == [4, 4, 4, 4]  # 24 images: 6 chunks, the first 2 from the cache
    assert len(list(cache.rglob("*.npz"))) == 6
    assert "wrote 24 embeddings" in capsys.readouterr().out


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["umask-022", "umask-027"])
def test_written_files_follow_the_umask(sim_dir, tmp_path, umask):
    cache, out = tmp_path / "cache", tmp_path / "clip.npz"
    args = _embed_args(sim_dir, out, cache, "--text")
    previous = os.umask(umask)
    try:
        assert main(args) == 0
    finally:
        os.umask(previous)
    written = [out, text_output_path(out), *cache.rglob("*.npz")]
    assert len(written) > 2
    assert {oct(stat.S_IMODE(path.stat().st_mode)) for path in written} == {oct(0o666 & ~umask)}


def test_simulated_users_get_the_pamela_treatment(sim_dir):
    ds = load_dataset(sim_dir)
    train_users = ds.users.iloc[ds.train_users()]
    encoder = user_feature_encoder_for(ds.users)
    assert isinstance(encoder, PamelaUserEncoder)
    encoder.fit(train_users)
    features = encoder.transform(ds.users)
    assert features.shape == (ds.n_users, len(encoder.feature_names)) and features.dtype == np.float32
    assert not np.isnan(features).any()
