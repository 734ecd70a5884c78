"""The embedding cache: a size bound with least-recently-used eviction, and damaged chunks (another width,
other rows) dropped and rebuilt with one line instead of served or crashing."""

from __future__ import annotations

import os

import numpy as np
import pytest

from features.cache import Chunk, ChunkCache, cache_limit_bytes
from features.embed import embed_images
from features.encoders import TINY_ARCHITECTURE, load_encoder, register_architecture
from recsys.errors import UserError
from recsys.workspace import temporary_sibling


def chunk(ids, dim: int = 4, value: float = 1.0) -> Chunk:
    n = len(ids)
    return Chunk(np.asarray(ids), np.ones(n, bool), np.full((n, dim), value, np.float32), np.array([""] * n))


def test_the_bound_comes_from_the_argument_the_environment_or_the_default(monkeypatch):
    monkeypatch.delenv("RECSYS_CACHE_MAX_GB", raising=False)
    assert cache_limit_bytes() == 10 * 10**9
    monkeypatch.setenv("RECSYS_CACHE_MAX_GB", "0.5")
    assert cache_limit_bytes() == 5 * 10**8
    assert cache_limit_bytes(2) == 2 * 10**9
    monkeypatch.setenv("RECSYS_CACHE_MAX_GB", "-1")
    with pytest.raises(
        UserError, match=r"\$RECSYS_CACHE_MAX_GB must be a positive number of gigabytes, got '-1'"
    ):
        cache_limit_bytes()


def test_least_recently_used_chunks_are_evicted_first(tmp_path):
    cache = ChunkCache(tmp_path, "encoder-key", "image", max_bytes=10**9)
    for key in ("a", "b", "c"):
        cache.store(key, chunk([1, 2]))
    size = cache.path_for("a").stat().st_size
    # last uses, oldest first: b, c, a (set by hand: the order must not depend on the clock's resolution)
    for key, when in (("b", 1_000), ("c", 2_000), ("a", 3_000)):
        os.utime(cache.path_for(key), ns=(when * 10**9, when * 10**9))
    cache.max_bytes = 3 * size  # room for three: storing a fourth evicts the least recently used, b
    cache.store("d", chunk([1, 2]))
    assert sorted(p.stem for p, _, _ in cache.chunk_files()) == ["a", "c", "d"]
    assert cache.load("c", np.array([1, 2])) is not None  # c is now the most recently used
    os.utime(cache.path_for("d"), ns=(2_500 * 10**9, 2_500 * 10**9))
    cache.max_bytes = 2 * size
    assert [p.stem for p in cache.evict()] == ["d"]  # a (3000) and c (now) stay
    assert sorted(p.stem for p, _, _ in cache.chunk_files()) == ["a", "c"]


def test_the_chunk_just_written_is_kept_even_alone_beyond_the_bound(tmp_path):
    cache = ChunkCache(tmp_path, "encoder-key", "image", max_bytes=1)
    cache.store("a", chunk([1]))
    cache.store("b", chunk([1]))
    assert [p.stem for p, _, _ in cache.chunk_files()] == ["b"]


def test_the_bound_covers_every_encoder_and_kind_and_stale_temporary_files_go(tmp_path):
    image = ChunkCache(tmp_path, "encoder-one", "image", max_bytes=10**9)
    text = ChunkCache(tmp_path, "encoder-two", "text", max_bytes=10**9)
    image.store("x", chunk([1]))
    os.utime(image.path_for("x"), ns=(10**9, 10**9))
    text.store("y", chunk([1]))
    dead = temporary_sibling(text.path_for("z"))
    dead = dead.with_name(dead.name.rsplit("-", 1)[0] + "-999999999@" + dead.name.rsplit("@", 1)[1])
    dead.write_bytes(b"half a chunk")  # a writer with that pid does not exist
    text.max_bytes = image.path_for("x").stat().st_size
    assert [p.stem for p in text.evict()] == ["x"]  # the other encoder's, older
    assert not dead.exists()


@pytest.fixture(scope="module")
def encoder():
    register_architecture("recsys-test-tiny", TINY_ARCHITECTURE)
    return load_encoder("clip:recsys-test-tiny/random", device="cpu")


@pytest.mark.parametrize("damage", ["width", "rows", "garbage", "folder"])
def test_a_damaged_chunk_is_dropped_and_rebuilt_with_one_line(encoder, tmp_path, capsys, damage):
    from PIL import Image

    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(np.full((8, 8, 3), 60 * i, np.uint8)).save(paths[-1])
    ids = np.arange(3)
    options = {"cache_dir": tmp_path / "cache", "progress": False, "num_workers": 0}
    first = embed_images(paths, ids, encoder, **options)
    (file,) = (tmp_path / "cache").rglob("*.npz")
    if damage == "width":  # what a chunk of another encoder's width would hold
        np.savez(file, image_id=ids, ok=np.ones(3, bool), embedding=np.ones((3, 7), np.float32),
                 reason=np.array(["", "", ""]))  # fmt: skip
    elif damage == "rows":
        np.savez(file, image_id=ids, ok=np.ones(3, bool), embedding=np.ones((2, 32), np.float32),
                 reason=np.array(["", "", ""]))  # fmt: skip
    elif damage == "garbage":
        file.write_bytes(b"not a zip")
    else:
        file.unlink()
        file.mkdir()
    capsys.readouterr()
    again = embed_images(paths, ids, encoder, **options)
    assert again.computed_chunks == 1 and again.cached_chunks == 0
    np.testing.assert_array_equal(again.embedding, first.embedding)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"embedding cache: dropped the chunk {file} (")
    assert err[0].endswith("); recomputing it")
    third = embed_images(paths, ids, encoder, **options)  # rebuilt: served from the cache again
    assert third.cached_chunks == 1 and capsys.readouterr().err == ""
