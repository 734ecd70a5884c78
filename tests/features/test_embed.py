"""The embedding pipeline: equal to a bare forward pass, cached, resumable, atomic, strict about bad images."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import features.cache as cache_module
from features.cache import ChunkCache, atomic_write_npz
from features.embed import (
    bad_sidecar_path,
    embed_dataset,
    embed_images,
    embed_texts,
    text_output_path,
)
from features.encoders import TINY_ARCHITECTURE, load_encoder, register_architecture
from recsys.data.features_file import read_image_features
from recsys.errors import UserError

TINY = "clip:recsys-test-tiny/random"
N_IMAGES = 7


@pytest.fixture(scope="module")
def encoder():
    register_architecture("recsys-test-tiny", TINY_ARCHITECTURE)
    return load_encoder(TINY, device="cpu")


@pytest.fixture
def images(tmp_path):
    """Seven small PNGs of different sizes and modes (RGB, RGBA, L, P), and their ids."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(N_IMAGES):
        height, width = 24 + 4 * i, 40 - 2 * i
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        image = image.convert(["RGB", "RGBA", "L", "P"][i % 4])
        path = tmp_path / "images" / f"img{i}.png"
        path.parent.mkdir(exist_ok=True)
        image.save(path)
        paths.append(path)
    return paths, np.arange(100, 100 + N_IMAGES, dtype=np.int64)


class CountingEncoder:
    """Counts (and can interrupt) the encoder's forward passes without changing their results."""

    def __init__(self, encoder, fail_on_call: int | None = None):
        self.encoder = encoder
        self.calls = 0
        self.fail_on_call = fail_on_call
        self.real_image, self.real_text = encoder.encode_image_batch, encoder.encode_text_batch

    def __enter__(self):
        self.encoder.encode_image_batch = self._wrap(self.real_image)
        self.encoder.encode_text_batch = self._wrap(self.real_text)
        return self

    def __exit__(self, *exc):
        del self.encoder.encode_image_batch, self.encoder.encode_text_batch

    def _wrap(self, real):
        def counted(batch):
            self.calls += 1
            if self.fail_on_call is not None and self.calls == self.fail_on_call:
                raise KeyboardInterrupt
            return real(batch)

        return counted


def _direct(encoder, paths) -> np.ndarray:
    """Independent check: open_clip's transform and encode_image on all images in one batch."""
    pixels = torch.stack([encoder.preprocess(Image.open(p)) for p in paths])
    with torch.no_grad():
        out = encoder.model.encode_image(pixels).numpy()
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def _truncate(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("workers", [0, 2])
def test_embeddings_equal_a_direct_forward_pass(encoder, images, workers):
    paths, ids = images
    result = embed_images(paths, ids, encoder, batch_size=3, chunk_size=4, num_workers=workers,
                          use_cache=False, progress=False)  # fmt: skip
    assert result.embedding.dtype == np.float32 and result.embedding.shape == (N_IMAGES, 32)
    np.testing.assert_array_equal(result.image_id, ids)
    np.testing.assert_allclose(np.linalg.norm(result.embedding, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(result.embedding, _direct(encoder, paths), rtol=0, atol=1e-5)
    assert result.bad == () and result.computed_chunks == 2


def test_second_run_is_served_from_cache(encoder, images, tmp_path):
    paths, ids = images
    kwargs = dict(batch_size=2, chunk_size=3, cache_dir=tmp_path / "cache", progress=False)
    with CountingEncoder(encoder) as counter:
        first = embed_images(paths, ids, encoder, **kwargs)
    assert counter.calls == 5  # chunks of 3, 3, 1 images in batches of 2
    with CountingEncoder(encoder) as counter:
        started = time.perf_counter()
        second = embed_images(paths, ids, encoder, **kwargs)
        elapsed = time.perf_counter() - started
    assert counter.calls == 0
    assert (second.computed_chunks, second.cached_chunks) == (0, 3)
    np.testing.assert_array_equal(second.embedding, first.embedding)
    np.testing.assert_array_equal(second.image_id, first.image_id)
    assert elapsed < 1.0  # 7 images; the benchmark measures the per-1000 figure

    # an encoder loaded lazily is never built when everything comes from the cache
    lazy = load_encoder(TINY, device="cpu", lazy=True)
    assert lazy.cache_key == encoder.cache_key
    np.testing.assert_array_equal(embed_images(paths, ids, lazy, **kwargs).embedding, first.embedding)
    assert not lazy.is_built

    # editing one file invalidates only its chunk
    Image.new("RGB", (30, 30), (200, 10, 10)).save(paths[4])
    with CountingEncoder(encoder) as counter:
        third = embed_images(paths, ids, encoder, **kwargs)
    assert (third.computed_chunks, third.cached_chunks) == (1, 2)
    np.testing.assert_array_equal(third.embedding[:3], first.embedding[:3])
    assert not np.allclose(third.embedding[4], first.embedding[4])
    np.testing.assert_allclose(third.embedding, _direct(encoder, paths), rtol=0, atol=1e-5)


def test_interrupted_run_resumes_from_written_chunks(encoder, images, tmp_path):
    paths, ids = images
    kwargs = dict(batch_size=2, chunk_size=2, progress=False)  # 4 chunks: 2, 2, 2, 1 images
    reference = embed_images(paths, ids, encoder, cache_dir=tmp_path / "reference", **kwargs)

    cache_dir = tmp_path / "cache"
    with CountingEncoder(encoder, fail_on_call=3), pytest.raises(KeyboardInterrupt):
        embed_images(paths, ids, encoder, cache_dir=cache_dir, **kwargs)
    written = sorted(cache_dir.rglob("*"))
    assert len([p for p in written if p.suffix == ".npz"]) == 2
    assert not [p for p in written if p.name.endswith(".tmp")]  # no half-written file left behind

    with CountingEncoder(encoder) as counter:
        resumed = embed_images(paths, ids, encoder, cache_dir=cache_dir, **kwargs)
    assert counter.calls == 2 and (resumed.computed_chunks, resumed.cached_chunks) == (2, 2)
    np.testing.assert_array_equal(resumed.image_id, reference.image_id)
    np.testing.assert_allclose(resumed.embedding, reference.embedding, rtol=0, atol=1e-6)


def test_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "chunk.npz"
    atomic_write_npz(target, image_id=np.arange(3), embedding=np.ones((3, 2), np.float32))

    def failing_savez(handle, **arrays):
        handle.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(cache_module.np, "savez", failing_savez)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_npz(target, image_id=np.arange(5), embedding=np.zeros((5, 2), np.float32))
    monkeypatch.undo()
    with np.load(target) as data:
        np.testing.assert_array_equal(data["image_id"], np.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["chunk.npz"]


def test_unreadable_cache_chunk_is_recomputed(encoder, images, tmp_path):
    paths, ids = images
    kwargs = dict(batch_size=4, chunk_size=4, cache_dir=tmp_path / "cache", progress=False)
    first = embed_images(paths, ids, encoder, **kwargs)
    chunk_file = sorted((tmp_path / "cache").rglob("*.npz"))[0]
    chunk_file.write_bytes(b"garbage")
    again = embed_images(paths, ids, encoder, **kwargs)
    assert again.computed_chunks == 1
    np.testing.assert_array_equal(again.embedding, first.embedding)


def test_corrupt_png_is_a_user_error_naming_the_file(encoder, images, tmp_path):
    paths, ids = images
    _truncate(paths[2])
    with pytest.raises(UserError) as caught:
        embed_images(paths, ids, encoder, cache_dir=tmp_path / "cache", progress=False)
    message = str(caught.value)
    assert "1 image file(s)" in message and "img2.png" in message and "skip_bad_images=True" in message
    assert "\n" not in message


def test_missing_file_fails_before_the_model_runs(encoder, images, tmp_path):
    paths, ids = images
    paths[5].unlink()
    with CountingEncoder(encoder) as counter, pytest.raises(UserError, match="img5.png \\(no such file\\)"):
        embed_images(paths, ids, encoder, cache_dir=tmp_path / "cache", progress=False)
    assert counter.calls == 0


def test_many_bad_images_name_the_first_few_and_the_count(encoder, images, tmp_path):
    paths, ids = images
    for path in paths[:5]:
        path.write_bytes(b"not an image")
    with pytest.raises(UserError, match="5 image file\\(s\\).*img0.png.*img1.png.*img2.png.*and 2 more"):
        embed_images(paths, ids, encoder, cache_dir=tmp_path / "cache", progress=False)


def test_skipped_bad_images_land_in_the_sidecar(encoder, images, tmp_path):
    paths, ids = images
    _truncate(paths[1], keep=0.3)
    paths[6].write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    result = embed_images(paths, ids, encoder, skip_bad_images=True, cache_dir=tmp_path / "cache",
                          chunk_size=3, progress=False)  # fmt: skip
    good = [0, 2, 3, 4, 5]
    np.testing.assert_array_equal(result.image_id, ids[good])
    np.testing.assert_allclose(result.embedding, _direct(encoder, [paths[i] for i in good]), atol=1e-5)

    out = result.save(tmp_path / "out" / "features.npz")
    sidecar = json.loads(bad_sidecar_path(out).read_text())
    assert bad_sidecar_path(out).name == "features.bad.json" and sidecar["count"] == 2
    assert [b["image_id"] for b in sidecar["left_out"]] == [101, 106]
    assert [b["path"] for b in sidecar["left_out"]] == [str(paths[1]), str(paths[6])]
    np.testing.assert_allclose(read_image_features(out, ids[good]), result.embedding)

    # the bad images are cached as bad: a strict re-run fails fast, naming both
    with CountingEncoder(encoder) as counter, pytest.raises(UserError, match="2 image file\\(s\\)"):
        embed_images(paths, ids, encoder, cache_dir=tmp_path / "cache", chunk_size=3, progress=False)
    assert counter.calls == 0


def test_text_embeddings_match_direct_encoding_and_cache(encoder, tmp_path):
    texts = ["A grand palace, rendered in the style of Baroque", None, "a cat", "  ", "a dog"]
    ids = np.array([5, 6, 7, 8, 9])
    result = embed_texts(texts, ids, encoder, batch_size=2, cache_dir=tmp_path / "cache", progress=False)
    np.testing.assert_array_equal(result.image_id, [5, 7, 9])
    with torch.no_grad():
        direct = encoder.model.encode_text(encoder.tokenizer([texts[0], texts[2], texts[4]])).numpy()
    direct /= np.linalg.norm(direct, axis=1, keepdims=True)
    np.testing.assert_allclose(result.embedding, direct, rtol=0, atol=1e-5)
    assert [b.reason for b in result.bad] == ["no prompt", "no prompt"]
    with CountingEncoder(encoder) as counter:
        again = embed_texts(texts, ids, encoder, cache_dir=tmp_path / "cache", progress=False)
    assert counter.calls == 0
    np.testing.assert_array_equal(again.embedding, result.embedding)


def test_embed_dataset_writes_image_and_prompt_files(encoder, images, tmp_path):
    paths, ids = images
    ds = SimpleNamespace(
        image_ids=ids,
        images=pd.DataFrame(
            {"path": [str(p) for p in paths], "prompt": [f"prompt {i}" for i in range(N_IMAGES)]}
        ),
        root=tmp_path / "dataset",
    )
    out = embed_dataset(ds, TINY, text=True, device="cpu", cache_dir=tmp_path / "cache", progress=False,
                        workspace=tmp_path / "ws")  # fmt: skip
    # under the workspace, in a folder named after the dataset's; nothing is written into the data folder
    assert out.parent.parent == tmp_path / "ws" / "features" and out.parent.name.startswith("dataset-")
    assert out.name == "clip_recsys-test-tiny_random.npz" and not (tmp_path / "dataset").exists()
    np.testing.assert_allclose(read_image_features(out, ids), _direct(encoder, paths), atol=1e-5)
    prompts = read_image_features(text_output_path(out), ids)
    assert prompts.shape == (N_IMAGES, 32) and text_output_path(out).name.endswith(".text.npz")
    assert not bad_sidecar_path(out).exists()

    no_files = SimpleNamespace(image_ids=ids, images=pd.DataFrame({"path": [None] * N_IMAGES}), root=None)
    with pytest.raises(UserError, match="no image files"):
        embed_dataset(no_files, TINY, device="cpu", cache_dir=tmp_path / "cache", progress=False)


def test_string_ids_round_trip(encoder, images, tmp_path):
    paths, _ = images
    ids = np.array([f"item-{i}" for i in range(N_IMAGES)])
    result = embed_images(paths, ids, encoder, cache_dir=tmp_path / "cache", progress=False)
    out = result.save(tmp_path / "features.npz")
    np.testing.assert_allclose(read_image_features(out, ids[::-1]), result.embedding[::-1])
    assert ChunkCache(tmp_path / "cache", encoder.cache_key, "image").directory.is_dir()
