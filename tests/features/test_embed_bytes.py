"""Images given as bytes (Pick-a-Pic's jpg columns): the same embeddings and cache as image files."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from features.embed import embed_dataset, embed_image_bytes, embed_images, embed_pickapic
from features.encoders import TINY_ARCHITECTURE, load_encoder, register_architecture
from recsys.data import load_dataset
from recsys.data.simulate_pairs import PickapicSimulationConfig, simulate_pickapic
from recsys.errors import UserError

TINY = "clip:recsys-test-tiny/random"


@pytest.fixture(scope="module")
def encoder():
    register_architecture("recsys-test-tiny", TINY_ARCHITECTURE)
    return load_encoder(TINY, device="cpu")


def jpegs(n: int = 5) -> list[bytes]:
    rng = np.random.default_rng(1)
    out = []
    for i in range(n):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (20 + 2 * i, 24, 3), dtype=np.uint8)).save(buffer, format="JPEG")
        out.append(buffer.getvalue())
    return out


def items(blobs: list[bytes]) -> list[tuple]:
    return [(f"uid-{i}", blob, f"shard.parquet row {i} jpg_0") for i, blob in enumerate(blobs)]


def test_bytes_embed_like_the_same_files(encoder, tmp_path):
    blobs = jpegs()
    paths = []
    for i, blob in enumerate(blobs):
        paths.append(tmp_path / f"{i}.jpg")
        paths[-1].write_bytes(blob)
    ids = [f"uid-{i}" for i in range(len(blobs))]
    from_files = embed_images(
        paths, ids, encoder, batch_size=2, use_cache=False, progress=False, num_workers=0
    )
    from_bytes = embed_image_bytes(
        items(blobs), encoder, batch_size=2, chunk_size=2, use_cache=False, progress=False
    )
    assert from_bytes.image_id.tolist() == ids and from_bytes.image_id.dtype.kind == "U"
    np.testing.assert_allclose(from_bytes.embedding, from_files.embedding, rtol=0, atol=1e-6)


def test_bytes_are_cached_by_their_hash(encoder, tmp_path):
    blobs = jpegs()
    kwargs = dict(batch_size=2, chunk_size=2, cache_dir=tmp_path / "cache", progress=False)
    first = embed_image_bytes(items(blobs), encoder, **kwargs)
    again = embed_image_bytes(items(blobs), encoder, **kwargs)
    assert (first.computed_chunks, again.computed_chunks, again.cached_chunks) == (3, 0, 3)
    np.testing.assert_array_equal(again.embedding, first.embedding)
    blobs[4] = jpegs(6)[5]  # new bytes for the last image: only its chunk is computed again
    changed = embed_image_bytes(items(blobs), encoder, **kwargs)
    assert (changed.computed_chunks, changed.cached_chunks) == (1, 2)
    assert not np.allclose(changed.embedding[4], first.embedding[4])


def test_bad_bytes_name_where_they_came_from(encoder, tmp_path):
    blobs = jpegs()
    blobs[2] = b"not a jpeg"
    blobs[3] = blobs[3][: len(blobs[3]) // 3]
    with pytest.raises(
        UserError, match=r"2 image\(s\) missing or unreadable: shard.parquet row 2 jpg_0"
    ) as err:
        embed_image_bytes(items(blobs), encoder, use_cache=False, progress=False)
    assert "\n" not in str(err.value)
    result = embed_image_bytes(items(blobs), encoder, use_cache=False, progress=False, skip_bad_images=True)
    assert result.image_id.tolist() == ["uid-0", "uid-1", "uid-4"] and [b.image_id for b in result.bad] == [
        "uid-2",
        "uid-3",
    ]


def test_a_pickapic_directory_embeds_from_its_shards(encoder, tmp_path):
    config = PickapicSimulationConfig(
        users=10, prompts_per_user=1, max_comparisons=1, feature_dim=8, image_size=32
    )
    root = simulate_pickapic(tmp_path / "pickapic", config, progress=False)
    ds = load_dataset(root)
    out = embed_dataset(ds, TINY, cache_dir=tmp_path / "cache", progress=False, text=True, workspace=tmp_path)
    assert out.parent.parent == tmp_path / "features" and out.parent.name.startswith("pickapic-")
    assert out.name == "clip_recsys-test-tiny_random.npz" and not (root / "features").exists()
    with np.load(out, allow_pickle=False) as data:
        assert data["image_id"].dtype.kind == "U" and sorted(data["image_id"].tolist()) == sorted(
            ds.image_ids
        )
    embedded = load_dataset(root, image_features=out)
    assert embedded.image_features.shape == (ds.n_images, 32)
    assert np.allclose(np.linalg.norm(embedded.image_features, axis=1), 1.0, atol=1e-5)
    assert (out.parent / "clip_recsys-test-tiny_random.text.npz").is_file()
    # embed_pickapic is the same path; a second run is served from the cache
    again = embed_pickapic(
        root, TINY, out=tmp_path / "again.npz", cache_dir=tmp_path / "cache", progress=False
    )
    np.testing.assert_array_equal(
        load_dataset(root, image_features=again).image_features, embedded.image_features
    )
