"""Embedding across processes: chunks shared out round-robin, each rank writing its own into the cache, rank 0
assembling the file; two gloo processes under torchrun on the CPU against a single run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from features.embed import embed_images, embed_texts, shard_rows
from features.encoders import TINY_ARCHITECTURE, load_encoder, register_architecture
from recsys.cli import main
from recsys.data import load_dataset
from recsys.data.simulate import SimulationConfig, simulate

TINY = "clip:recsys-test-tiny/random"
ROOT = Path(__file__).resolve().parents[2]
CHUNK = 4


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory):
    register_architecture("recsys-test-tiny", TINY_ARCHITECTURE)
    config = SimulationConfig(seed=3, users=10, images=40, ratings_per_user=6, feature_dim=8, image_size=16)
    return simulate(tmp_path_factory.mktemp("sim") / "pamela", config, progress=False)


#: a process that stores one chunk under one key again and again, every value in it equal to argv[2]
WRITER = """
import sys
import numpy as np
from features.cache import Chunk, ChunkCache
cache, ids = ChunkCache(sys.argv[1], "0" * 16, "image"), np.arange(512)
chunk = Chunk(ids, np.ones(512, bool), np.full((512, 64), float(sys.argv[2]), np.float32), np.full(512, ""))
for _ in range(100):
    cache.store("one-key", chunk)
"""


def torchrun(*args: str) -> subprocess.CompletedProcess:
    """``recsys ARGS`` in two CPU processes under torchrun (gloo), with the tiny test encoder registered."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(ROOT / "tests" / "torchrun_main.py"), *args]  # fmt: skip
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def embed_args(data: Path, out: Path, cache: Path) -> list[str]:
    return ["features", "embed", "--data", str(data), "--encoder", TINY, "--out", str(out), "--text",
            "--device", "cpu", "--cache-dir", str(cache), "--chunk-size", str(CHUNK), "--workers", "0",
            "--no-progress"]  # fmt: skip


def test_concurrent_writers_of_one_chunk_never_leave_a_partial_file(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), value], env=env) for value in "12"
    ]
    path = tmp_path / "image" / ("0" * 16) / "one-key.npz"
    seen = set()
    try:
        while any(w.poll() is None for w in writers) or not seen:
            try:
                with np.load(path, allow_pickle=False) as data:  # any partial file would fail to read here
                    embedding = data["embedding"]
            except FileNotFoundError:
                assert not seen, "the chunk vanished after it was written"
                continue
            assert embedding.shape == (512, 64) and len(np.unique(embedding)) == 1  # one writer's, whole
            seen.add(float(embedding[0, 0]))
    finally:
        for writer in writers:
            writer.wait(timeout=120)
    assert [w.returncode for w in writers] == [0, 0]
    assert seen <= {1.0, 2.0} and not list(path.parent.glob("*.tmp"))  # no temporary file left behind


@pytest.mark.parametrize(("n", "world"), [(37, 2), (37, 3), (8, 2), (3, 2), (0, 2), (10, 1)])
def test_shards_are_whole_chunks_that_partition_the_inputs(n, world):
    shards = [shard_rows(n, CHUNK, rank, world) for rank in range(world)]
    np.testing.assert_array_equal(np.sort(np.concatenate(shards)), np.arange(n))
    for rank, rows in enumerate(shards):
        chunks = np.unique(rows // CHUNK)
        np.testing.assert_array_equal(chunks % world, rank)  # chunk c belongs to rank c % world
        for c in chunks:  # and the rank holds all of it
            np.testing.assert_array_equal(
                rows[rows // CHUNK == c], np.arange(c * CHUNK, min((c + 1) * CHUNK, n))
            )


def test_shards_fill_the_cache_a_single_run_reads(sim_dir, tmp_path):
    ds = load_dataset(sim_dir)
    paths, ids = ds.images["path"].tolist(), ds.image_ids
    prompts = ds.images["prompt"].tolist()
    encoder = load_encoder(TINY, device="cpu")
    settings = {"cache_dir": tmp_path / "cache", "chunk_size": CHUNK, "progress": False}
    parts = [
        embed_images(paths, ids, encoder, shard=(rank, 2), num_workers=0, **settings) for rank in range(2)
    ]
    texts = [embed_texts(prompts, ids, encoder, shard=(rank, 2), **settings) for rank in range(2)]
    whole = embed_images(paths, ids, encoder, num_workers=0, **settings)
    whole_texts = embed_texts(prompts, ids, encoder, **settings)
    n_chunks = -(-len(ids) // CHUNK)
    assert [p.computed_chunks for p in parts] == [(n_chunks + 1) // 2, n_chunks // 2]
    assert (whole.computed_chunks, whole.cached_chunks) == (0, n_chunks)  # the shards' chunks, by their keys
    assert whole_texts.computed_chunks == 0
    for rank, part in enumerate(parts):
        rows = shard_rows(len(ids), CHUNK, rank, 2)
        np.testing.assert_array_equal(part.image_id, ids[rows])
        np.testing.assert_array_equal(part.embedding, whole.embedding[rows])
        np.testing.assert_array_equal(texts[rank].embedding, whole_texts.embedding[rows])


def test_torchrun_with_two_processes_writes_the_single_run_file(sim_dir, tmp_path, capsys):
    proc = torchrun(*embed_args(sim_dir, tmp_path / "two.npz", tmp_path / "cache2"))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("wrote 37 embeddings") == 2  # images and prompts, printed by rank 0 only
    assert "computed" not in proc.stderr  # rank 0 found every chunk of rank 1 in the cache

    # the reference: one process with the thread count of each torchrun worker (OMP_NUM_THREADS=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(embed_args(sim_dir, tmp_path / "one.npz", tmp_path / "cache1")) == 0
    finally:
        torch.set_num_threads(threads)
    # bitwise: the same chunks, the same batches in each chunk, the same weights and thread count
    for name in ("{}.npz", "{}.text.npz"):
        with np.load(tmp_path / name.format("two")) as two, np.load(tmp_path / name.format("one")) as one:
            np.testing.assert_array_equal(two["image_id"], one["image_id"])
            np.testing.assert_array_equal(two["embedding"], one["embedding"])
    capsys.readouterr()

    # and a single run served whole from the two processes' cache
    ds = load_dataset(sim_dir)
    again = embed_images(ds.images["path"].tolist(), ds.image_ids, TINY, device="cpu", num_workers=0,
                         cache_dir=tmp_path / "cache2", chunk_size=CHUNK, progress=False)  # fmt: skip
    assert again.computed_chunks == 0 and again.cached_chunks == 10


def test_a_failing_rank_fails_every_rank_without_a_hang(sim_dir, tmp_path):
    data = shutil.copytree(sim_dir, tmp_path / "data")
    ds = load_dataset(data)
    missing = Path(ds.images["path"].iloc[CHUNK])  # chunk 1: rank 1's
    missing.unlink()
    proc = torchrun(*embed_args(data, tmp_path / "x.npz", tmp_path / "cache"))
    assert proc.returncode != 0
    assert f"error: 1 image file(s) missing or unreadable: {missing}" in proc.stderr  # rank 1's own error
    assert (
        "error: embedding the images failed on rank 1 (its error is printed above)" in proc.stderr
    )  # rank 0
    assert "]: Traceback" not in proc.stderr  # no worker died with a traceback ([rankN]: prefixes them)
    assert not (tmp_path / "x.npz").exists()
