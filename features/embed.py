"""Embed images and prompts with an encoder, through the chunk cache, into ``.npz`` feature files.

Output format (what ``recsys.data.read_image_features`` reads):

- ``FILE.npz``: ``image_id`` (int64 for PAMELA, else str; n) and ``embedding`` (float32, n x d), rows
  aligned, each row L2-normalised. Images that could not be read are left out only with
  ``skip_bad_images``; they are then listed in ``FILE.bad.json`` beside it (ids, paths, reasons).
- prompt (text) embeddings are a separate file of the same format, ``FILE.text.npz``, keyed by the image
  whose prompt it is, so either file can be passed wherever image features are accepted. Images without
  a prompt are left out of it and listed in ``FILE.text.bad.json``.

``embed_dataset`` writes by default under the workspace, to
``WORKSPACE/features/<dataset folder>-<digest>/<encoder slug>.npz`` (``default_output_path``), never into the
data folder; the chunk cache lives in ``$RECSYS_HOME/embeddings`` (default ``~/.cache/recsys/embeddings``)
unless ``cache_dir`` says otherwise.

Images given as bytes rather than files (Pick-a-Pic's ``jpg_0``/``jpg_1`` columns) go through
``embed_image_bytes``: the same chunks, cache and encoder, each image keyed by the SHA-256 of its bytes.
``embed_dataset`` takes that path by itself for a Pick-a-Pic dataset (``embed_pickapic``).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import UnidentifiedImageError
from tqdm.auto import tqdm

from features.cache import (
    Chunk,
    ChunkCache,
    atomic_write_json,
    atomic_write_npz,
    cache_limit_bytes,
    chunk_key,
    default_cache_dir,
    file_identity,
    sha256_file,
)
from features.encoders import ClipEncoder, load_encoder
from recsys.data.features_file import sidecar_path
from recsys.data.images import open_image
from recsys.distributed import rank_and_world, rank_device, together
from recsys.errors import UserError
from recsys.files import read_json

DEFAULT_CHUNK_SIZE = 1024
_MAX_NAMED = 3


class BadImage(NamedTuple):
    """An input left out: its image id, its path (None for text) and why."""

    image_id: Any
    path: str | None
    reason: str


@dataclass(frozen=True)
class Embeddings:
    """Embeddings of the good inputs and the list of bad ones.

    Attributes:
        image_id: ids of the embedded images, (n,), in input order without the bad ones.
        embedding: float32 (n, d), unit L2 norm per row.
        bad: inputs left out, in input order.
        encoder: name of the encoder that made them.
        kind: ``image`` or ``text``.
        computed_chunks: chunks computed in this call (the rest came from the cache).
        cached_chunks: chunks served from the cache.
    """

    image_id: np.ndarray
    embedding: np.ndarray
    bad: tuple[BadImage, ...] = ()
    encoder: str = ""
    kind: str = "image"
    computed_chunks: int = 0
    cached_chunks: int = 0

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (``.npz``) atomically, and ``bad_sidecar_path(path)`` when there are bad inputs."""
        path = Path(path)
        try:
            atomic_write_npz(path, image_id=self.image_id, embedding=self.embedding)
        except OSError as err:
            raise UserError(f"{path}: cannot write the features file ({err.strerror or err})") from None
        sidecar = bad_sidecar_path(path)
        if self.bad:
            records = [
                {"image_id": _jsonable(b.image_id), "path": b.path, "reason": b.reason} for b in self.bad
            ]
            atomic_write_json(sidecar, {"encoder": self.encoder, "kind": self.kind, "count": len(records),
                                        "features_file": path.name, "left_out": records})  # fmt: skip
        else:
            sidecar.unlink(missing_ok=True)  # a stale list from an earlier run would mislead
        return path


def bad_sidecar_path(path: str | Path) -> Path:
    """``X.npz`` -> ``X.bad.json``: the inputs left out of ``X.npz``."""
    return sidecar_path(path, "bad.json")


def text_output_path(path: str | Path) -> Path:
    """``X.npz`` -> ``X.text.npz``: where the prompt embeddings of the image features file ``X.npz`` go."""
    return sidecar_path(path, "text.npz")


def _jsonable(value):
    return value.item() if isinstance(value, np.generic) else value


def _as_ids(image_ids) -> np.ndarray:
    ids = np.asarray(image_ids)
    if ids.ndim != 1:
        raise ValueError(f"image_ids must be one-dimensional, got shape {ids.shape}")
    return ids.astype(np.int64) if ids.dtype.kind in "iu" else ids.astype(str)


def _resolve_encoder(encoder: ClipEncoder | str, checkpoint, device: str) -> ClipEncoder:
    if isinstance(encoder, str):
        # lazy: a run served from the cache never builds the model
        return load_encoder(encoder, checkpoint=checkpoint, device=device, lazy=True)
    return encoder


def _short(reason: str, limit: int = 80) -> str:
    reason = " ".join(reason.split())
    return reason if len(reason) <= limit else reason[: limit - 3] + "..."


class BadImagesError(UserError):
    """Images that are missing or cannot be decoded (``bad``), named in one line with what to do about them.

    The remedy depends on who asked: ``skip_bad_images=True`` for the API, a command's own option for a command,
    so a command re-words the error with ``remedy`` instead of the library naming options it may not have."""

    def __init__(self, bad: Sequence[BadImage], noun: str = "image file(s)", remedy: str = "") -> None:
        self.bad, self.noun = tuple(bad), noun
        named = "; ".join(
            f"{b.path or f'image {b.image_id}'} ({_short(b.reason)})" for b in self.bad[:_MAX_NAMED]
        )
        more = f" and {len(self.bad) - _MAX_NAMED} more" if len(self.bad) > _MAX_NAMED else ""
        remedy = remedy or "fix or remove them, or pass skip_bad_images=True to leave them out"
        super().__init__(f"{len(self.bad)} {noun} missing or unreadable: {named}{more}; {remedy}")

    def remedy(self, remedy: str) -> BadImagesError:
        """The same error with another remedy (a command's options)."""
        return BadImagesError(self.bad, self.noun, remedy)


def _bad_images_error(bad: Sequence[BadImage], noun: str = "image file(s)") -> BadImagesError:
    return BadImagesError(bad, noun)


def _prefetch(items: Iterable, load: Callable, num_workers: int, lookahead: int) -> Iterator:
    """``load(item)`` for each item, in order, computed up to ``lookahead`` items ahead by worker threads.

    Threads rather than processes: PIL decoding and resizing and torch's tensor ops release the GIL, and
    threads share the preprocessing transform without pickling it or paying process start-up per run.
    """
    if num_workers <= 0:
        yield from map(load, items)
        return
    pool = ThreadPoolExecutor(max_workers=num_workers, thread_name_prefix="recsys-decode")
    try:
        source = iter(items)
        pending = deque(pool.submit(load, item) for item in itertools.islice(source, lookahead))
        while pending:
            result = pending.popleft().result()
            for item in itertools.islice(source, 1):
                pending.append(pool.submit(load, item))
            yield result
    finally:
        # on interruption, drop queued work instead of decoding the rest of the lookahead
        pool.shutdown(wait=False, cancel_futures=True)


def _pixels(preprocess: Callable, source: str | bytes, where: str) -> tuple[torch.Tensor | None, str]:
    """(preprocessed pixels, "") of an image file or bytes, or (None, why it is unusable). ``open_image``
    decodes it fully now, so that a truncated file fails here, not halfway through a batch, and refuses a
    decompression bomb from its header."""
    try:
        with open_image(source, where) as image:
            return preprocess(image), ""
    except FileNotFoundError:
        return None, "no such file"
    except UnidentifiedImageError:
        return None, "not a readable image (unknown format or damaged header)"
    except UserError as err:  # too many pixels, not a regular file: the message names the image already
        return None, str(err).removeprefix(f"{where}: ")
    except Exception as err:  # PIL raises many types for bad files; each means "this image is unusable"
        return None, f"{type(err).__name__}: {err}"


def _load_pixels(preprocess: Callable) -> Callable:
    def load(path: str | None) -> tuple[torch.Tensor | None, str]:
        if path is None:
            return None, "no image file"
        return _pixels(preprocess, path, path)

    return load


def _load_pixels_from_bytes(preprocess: Callable) -> Callable:
    def load(blob: bytes | None) -> tuple[torch.Tensor | None, str]:
        if not blob:
            return None, "no image bytes"
        return _pixels(preprocess, blob, "image bytes")

    return load


def bytes_identity(blob: bytes | None) -> str | None:
    """``sha256:<hex>:<length>`` of an image's bytes (its identity in the cache), None without bytes."""
    if not blob:
        return None
    return f"sha256:{hashlib.sha256(blob).hexdigest()}:{len(blob)}"


def _chunk_bounds(n: int, chunk_size: int) -> list[tuple[int, int]]:
    return [(start, min(start + chunk_size, n)) for start in range(0, n, chunk_size)]


def _cached_chunks(
    cache: ChunkCache | None, keys: list[str], bounds: list[tuple[int, int]], ids: np.ndarray, dim: int
):
    """The chunks already in the cache (``dim`` wide), None where a chunk must be computed."""
    chunks: list[Chunk | None] = [None] * len(keys)
    if cache is not None:
        for i, (key, (start, stop)) in enumerate(zip(keys, bounds, strict=True)):
            chunks[i] = cache.load(key, ids[start:stop], dim)
    return chunks


def _assemble(ids, paths, chunks: list[Chunk], encoder: ClipEncoder, kind: str, computed: int) -> Embeddings:
    """Concatenate chunks into one result; collect the bad inputs with their paths."""
    good_ids, rows, bad = [], [], []
    offset = 0
    for chunk in chunks:
        good_ids.append(chunk.image_id[chunk.ok])
        rows.append(chunk.embedding)
        for pos in np.flatnonzero(~chunk.ok):
            path = paths[offset + pos] if paths is not None else None
            bad.append(BadImage(_jsonable(ids[offset + pos]), None if path is None else str(path),
                                str(chunk.reason[pos])))  # fmt: skip
        offset += len(chunk.image_id)
    dim = encoder.embed_dim
    embedding = (
        np.concatenate(rows).astype(np.float32, copy=False) if rows else np.zeros((0, dim), np.float32)
    )
    image_id = np.concatenate(good_ids) if good_ids else ids[:0]
    return Embeddings(image_id, embedding.reshape(-1, dim), tuple(bad), encoder.name, kind,
                      computed_chunks=computed, cached_chunks=len(chunks) - computed)  # fmt: skip


def _compute_chunk(
    chunk_ids: np.ndarray, decoded: Iterator, encoder: ClipEncoder, batch_size: int, bar
) -> Chunk:
    """Embed the next ``len(chunk_ids)`` items of ``decoded`` ((pixels or None, reason) each) into one chunk."""
    n = len(chunk_ids)
    ok = np.zeros(n, dtype=bool)
    reasons = [""] * n
    rows, batch = [], []
    for pos in range(n):
        pixels, reason = next(decoded)
        if pixels is None:
            reasons[pos] = reason
        else:
            ok[pos] = True
            batch.append(pixels)
        # batches stay inside a chunk so each chunk file is complete when written
        if batch and (len(batch) == batch_size or pos == n - 1):
            rows.append(encoder.encode_image_batch(torch.stack(batch)))
            bar.update(len(batch))
            batch = []
    bar.update(int((~ok).sum()))
    embedding = np.concatenate(rows) if rows else np.zeros((0, encoder.embed_dim), np.float32)
    return Chunk(chunk_ids, ok, embedding.astype(np.float32, copy=False), np.array(reasons, dtype=str))


@dataclass(frozen=True)
class EmbedSettings:
    """How ``embed_images`` and ``embed_image_bytes`` run (their keyword arguments).

    batch_size: images per forward pass. device: ``auto`` (a GPU when there is one), cpu, cuda or cuda:N, for an
    encoder given by name (as is ``checkpoint``, a local open_clip state dict). num_workers: decoding threads;
    default min(8, CPU count); 0 decodes in the calling thread. cache_dir: chunk cache root (default
    ``default_cache_dir()``); ``use_cache=False`` bypasses it. cache_max_gb: the cache's size bound (default
    ``$RECSYS_CACHE_MAX_GB`` or 10 GB; least recently used chunks go first). chunk_size: inputs per cache chunk (the unit of
    resumption). skip_bad_images: leave missing, truncated or undecodable images out (listed in
    ``result.bad``) instead of raising. progress: a tqdm bar with images/s. shard: ``(rank, world)`` to embed
    only that rank's chunks (``shard_rows``) into the cache, for one of several processes; the result then holds
    those inputs only, and undecodable images do not raise (the assembly of the whole result does).
    """

    batch_size: int = 64
    device: str = "auto"
    num_workers: int | None = None
    cache_dir: str | Path | None = None
    cache_max_gb: float | None = None
    use_cache: bool = True
    chunk_size: int = DEFAULT_CHUNK_SIZE
    skip_bad_images: bool = False
    progress: bool = True
    checkpoint: str | Path | None = None
    shard: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.chunk_size < 1:
            raise ValueError(
                f"batch_size and chunk_size must be positive, got {self.batch_size} and {self.chunk_size}"
            )
        _check_shard(self.shard)


def _check_shard(shard: tuple[int, int] | None) -> None:
    if shard is not None and not 0 <= shard[0] < shard[1]:
        raise ValueError(f"shard must be (rank, world) with 0 <= rank < world, got {shard}")


def shard_rows(n: int, chunk_size: int, rank: int, world: int) -> np.ndarray:
    """Positions (in input order) of the inputs rank ``rank`` of ``world`` embeds: the chunks of a single run
    (positions ``[c * chunk_size, (c + 1) * chunk_size)``) go round-robin, chunk c to rank ``c % world``.

    Every chunk but the last is full, so the shard's inputs cut into chunks of ``chunk_size`` give exactly the
    single run's chunks, with its cache keys: the ranks' chunks together are the single run's, and rank 0 (or a
    later single run) assembles the whole result from the cache.
    """
    starts = range(rank * chunk_size, n, world * chunk_size)
    if not starts:
        return np.zeros(0, np.int64)
    return np.concatenate([np.arange(start, min(start + chunk_size, n)) for start in starts])


def _image_setup(encoder: ClipEncoder | str, o: EmbedSettings) -> tuple[ClipEncoder, int, ChunkCache | None]:
    """An image embedding run's encoder, decoding threads (default min(8, CPU count)) and chunk cache."""
    encoder = _resolve_encoder(encoder, o.checkpoint, o.device)
    workers = min(8, os.cpu_count() or 1) if o.num_workers is None else o.num_workers
    cache = (
        ChunkCache(
            o.cache_dir or default_cache_dir(), encoder.cache_key, "image", cache_limit_bytes(o.cache_max_gb)
        )
        if o.use_cache
        else None
    )
    return encoder, workers, cache


def _image_bar(total: int | None, encoder: ClipEncoder, progress: bool) -> tqdm:
    return tqdm(total=total, unit="img", desc=f"embedding images ({encoder.name})", disable=not progress,
                dynamic_ncols=True, smoothing=0.1)  # fmt: skip


def _compute_and_store(
    ids: np.ndarray, decoded, encoder: ClipEncoder, batch_size: int, bar, cache: ChunkCache | None, key: str
) -> Chunk:
    """``_compute_chunk``, then the chunk stored under ``key`` when there is a cache."""
    chunk = _compute_chunk(ids, decoded, encoder, batch_size, bar)
    if cache is not None:
        cache.store(key, chunk)
    return chunk


def embed_images(
    paths: Sequence[str | Path | None],
    image_ids: Sequence | np.ndarray,
    encoder: ClipEncoder | str,
    **settings: Any,
) -> Embeddings:
    """Embed image files: decode in worker threads, batch, run the encoder (autocast on a GPU).

    Args:
        paths: one image file per id (None: the image has no file, which counts as a bad image).
        image_ids: ids aligned with ``paths``, (n,); int64 or str.
        encoder: a loaded encoder, or a name for ``load_encoder`` (then ``checkpoint`` and ``device`` apply).
        settings: ``EmbedSettings`` (batch_size, device, num_workers, cache_dir, use_cache, chunk_size,
            skip_bad_images, progress, checkpoint).

    Returns:
        Embeddings: float32 (n_good, d) unit-norm rows, aligned with ``result.image_id``.

    Raises:
        UserError: bad image files (naming the first few and the count) unless ``skip_bad_images``.
    """
    o = EmbedSettings(**settings)
    ids = _as_ids(image_ids)
    if len(paths) != len(ids):
        raise ValueError(f"got {len(paths)} paths for {len(ids)} image ids")
    if o.shard is not None:
        rows = shard_rows(len(ids), o.chunk_size, *o.shard)
        ids, paths = ids[rows], [paths[i] for i in rows]
    path_strs = [None if p is None else str(p) for p in paths]
    identities = [file_identity(p) for p in path_strs]
    if not o.skip_bad_images:
        # missing files are known from the stat alone: fail before any model work
        missing = [BadImage(_jsonable(ids[i]), path_strs[i], "no image file" if path_strs[i] is None else "no such file")
                   for i, identity in enumerate(identities) if identity is None]  # fmt: skip
        if missing:
            raise _bad_images_error(missing)
    encoder, workers, cache = _image_setup(encoder, o)

    bounds = _chunk_bounds(len(ids), o.chunk_size)
    keys = [chunk_key(encoder.cache_key, "image", ids[a:b].tolist(), identities[a:b]) for a, b in bounds]
    chunks = _cached_chunks(cache, keys, bounds, ids, encoder.embed_dim)
    todo = [i for i, chunk in enumerate(chunks) if chunk is None]

    bar = _image_bar(len(ids), encoder, o.progress)
    bar.update(sum(len(chunk.image_id) for chunk in chunks if chunk is not None))
    todo_paths = (path_strs[k] for i in todo for k in range(*bounds[i]))
    # the preprocessing is asked for only when something is left to compute: it builds the model
    load = _load_pixels(encoder.preprocess) if todo else None
    decoded = _prefetch(todo_paths, load, workers, max(2 * o.batch_size, 4 * workers))
    try:
        for i in todo:
            start, stop = bounds[i]
            chunks[i] = _compute_and_store(
                ids[start:stop], decoded, encoder, o.batch_size, bar, cache, keys[i]
            )
    finally:
        decoded.close()
        bar.close()

    result = _assemble(ids, path_strs, chunks, encoder, "image", computed=len(todo))
    if result.bad and not o.skip_bad_images and o.shard is None:
        raise _bad_images_error(result.bad)
    return result


def _batched(items: Iterable, size: int) -> Iterator[list]:
    source = iter(items)
    while block := list(itertools.islice(source, size)):
        yield block


def embed_image_bytes(
    items: Iterable[tuple[Any, bytes | None, str]],
    encoder: ClipEncoder | str,
    *,
    total: int | None = None,
    **settings: Any,
) -> Embeddings:
    """Embed images given as encoded bytes (JPEG, PNG, ...), streamed, through the chunk cache of ``embed_images``.

    Args:
        items: (image id, bytes or None, where) per image; ``where`` says where the bytes came from (e.g. a
            parquet shard, row and column) for messages about bad images. Consumed one chunk at a time, so only
            ``chunk_size`` images' bytes are held at once.
        total: the number of items, for the progress bar.
        settings: ``EmbedSettings``, as for ``embed_images``. A chunk's cache key holds its ids and the SHA-256
            of each image's bytes (``bytes_identity``).

    Returns:
        Embeddings: float32 (n_good, d) unit-norm rows, aligned with ``result.image_id`` (in input order).

    Raises:
        UserError: bad images (naming the first few by ``where``, and the count) unless ``skip_bad_images``.
    """
    o = EmbedSettings(**settings)
    encoder, workers, cache = _image_setup(encoder, o)
    if o.shard is not None and total is not None:
        total = len(shard_rows(total, o.chunk_size, *o.shard))
    bar = _image_bar(total, encoder, o.progress)
    good_ids, rows, bad = [], [], []
    computed = cached = 0
    load = None
    try:
        for index, block in enumerate(_batched(items, o.chunk_size)):
            if o.shard is not None and index % o.shard[1] != o.shard[0]:
                continue  # another rank's chunk (its bytes are read all the same: the items are a stream)
            ids = _as_ids([item[0] for item in block])
            blobs = [item[1] for item in block]
            key = chunk_key(encoder.cache_key, "image", ids.tolist(), [bytes_identity(b) for b in blobs])
            chunk = cache.load(key, ids, encoder.embed_dim) if cache is not None else None
            if chunk is None:
                # the preprocessing is asked for only when something is left to compute: it builds the model
                load = load or _load_pixels_from_bytes(encoder.preprocess)
                decoded = _prefetch(blobs, load, workers, max(2 * o.batch_size, 4 * workers))
                try:
                    chunk = _compute_and_store(ids, decoded, encoder, o.batch_size, bar, cache, key)
                finally:
                    decoded.close()
                computed += 1
            else:
                bar.update(len(ids))
                cached += 1
            good_ids.append(chunk.image_id[chunk.ok])
            rows.append(chunk.embedding)
            bad += [
                BadImage(_jsonable(ids[p]), block[p][2], str(chunk.reason[p]))
                for p in np.flatnonzero(~chunk.ok)
            ]
    finally:
        bar.close()
    dim = encoder.embed_dim
    embedding = (
        np.concatenate(rows).astype(np.float32, copy=False) if rows else np.zeros((0, dim), np.float32)
    )
    image_id = np.concatenate(good_ids) if good_ids else np.array([], dtype=str)
    if bad and not o.skip_bad_images and o.shard is None:
        raise _bad_images_error(bad, noun="image(s)")
    return Embeddings(
        image_id,
        embedding.reshape(-1, dim),
        tuple(bad),
        encoder.name,
        "image",
        computed_chunks=computed,
        cached_chunks=cached,
    )


def embed_texts(
    texts: Sequence[str | None],
    image_ids: Sequence | np.ndarray,
    encoder: ClipEncoder | str,
    *,
    batch_size: int = 256,
    device: str = "auto",
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool = True,
    checkpoint: str | Path | None = None,
    cache_max_gb: float | None = None,
    shard: tuple[int, int] | None = None,
) -> Embeddings:
    """Embed texts (prompts), one per image id, through the same cache as ``embed_images``.

    Inputs that are None, NaN or blank have no text; they are left out and listed in ``result.bad``.
    ``shard=(rank, world)``: only that rank's chunks, as for ``embed_images``.

    Returns:
        Embeddings: float32 (n_with_text, d) unit-norm rows, aligned with ``result.image_id``.
    """
    ids = _as_ids(image_ids)
    if len(texts) != len(ids):
        raise ValueError(f"got {len(texts)} texts for {len(ids)} image ids")
    if batch_size < 1 or chunk_size < 1:
        raise ValueError(f"batch_size and chunk_size must be positive, got {batch_size} and {chunk_size}")
    _check_shard(shard)
    if shard is not None:
        rows = shard_rows(len(ids), chunk_size, *shard)
        ids, texts = ids[rows], [texts[i] for i in rows]
    clean = [t if isinstance(t, str) and t.strip() else None for t in texts]
    encoder = _resolve_encoder(encoder, checkpoint, device)
    cache = (
        ChunkCache(
            cache_dir or default_cache_dir(), encoder.cache_key, "text", cache_limit_bytes(cache_max_gb)
        )
        if use_cache
        else None
    )
    bounds = _chunk_bounds(len(ids), chunk_size)
    keys = [chunk_key(encoder.cache_key, "text", ids[a:b].tolist(), clean[a:b]) for a, b in bounds]
    chunks = _cached_chunks(cache, keys, bounds, ids, encoder.embed_dim)
    todo = [i for i, chunk in enumerate(chunks) if chunk is None]
    bar = tqdm(total=len(ids), unit="text", desc=f"embedding prompts ({encoder.name})", disable=not progress,
               dynamic_ncols=True)  # fmt: skip
    bar.update(sum(len(chunk.image_id) for chunk in chunks if chunk is not None))
    try:
        for i in todo:
            start, stop = bounds[i]
            ok = np.array([t is not None for t in clean[start:stop]], dtype=bool)
            present = [t for t in clean[start:stop] if t is not None]
            rows = [
                encoder.encode_text_batch(present[b : b + batch_size])
                for b in range(0, len(present), batch_size)
            ]
            embedding = np.concatenate(rows) if rows else np.zeros((0, encoder.embed_dim), np.float32)
            reasons = np.array(["" if k else "no prompt" for k in ok], dtype=str)
            chunks[i] = Chunk(ids[start:stop], ok, embedding.astype(np.float32, copy=False), reasons)
            if cache:
                cache.store(keys[i], chunks[i])
            bar.update(stop - start)
    finally:
        bar.close()
    return _assemble(ids, None, chunks, encoder, "text", computed=len(todo))


def encoder_slug(encoder_name: str, checkpoint: str | Path | None = None) -> str:
    """A file-name-safe form of an encoder name; with a checkpoint, its content hash is appended."""
    slug = re.sub(r"[^A-Za-z0-9_.+-]+", "_", encoder_name).strip("_")
    if checkpoint is not None:
        slug += f"-ckpt{sha256_file(checkpoint)[:10]}"
    return slug


def default_output_path(
    ds, encoder_name: str, checkpoint: str | Path | None = None, workspace: str | Path | None = None
) -> Path:
    """``WORKSPACE/features/<data>-<digest>/<encoder slug>.npz``: under the workspace (``workspace``, else
    ``$RECSYS_WORKSPACE``, else ``./runs``), never in the data folder (which may be shared or read-only).
    ``<data>`` is the name of the dataset's folder and ``<digest>`` hashes that folder's path and the image
    ids, so two datasets never share a features file."""
    from recsys.workspace import resolve_workspace

    slug = encoder_slug(encoder_name, checkpoint)
    root = getattr(ds, "root", None)
    joined_ids = "\0".join(map(str, np.asarray(ds.image_ids).tolist()))
    digest = hashlib.sha256(f"{Path(root).resolve() if root else ''}\0{joined_ids}".encode()).hexdigest()[:12]
    folder = re.sub(r"[^A-Za-z0-9_.+-]+", "_", Path(root).name if root else "data").strip("_.") or "data"
    return resolve_workspace(workspace) / "features" / f"{folder}-{digest}" / f"{slug}.npz"


def _dataset_column(ds, column: str) -> list:
    images = ds.images
    if column not in images.columns:
        return [None] * len(ds.image_ids)
    values = images[column].tolist()
    if len(values) != len(ds.image_ids):
        raise UserError(f"dataset has {len(ds.image_ids)} image ids but {len(values)} rows of image metadata")
    return [v if isinstance(v, str) and v else None for v in values]


def embed_dataset(
    ds,
    encoder_name: str,
    *,
    checkpoint: str | Path | None = None,
    out: str | Path | None = None,
    text: bool = False,
    batch_size: int = 64,
    device: str = "auto",
    num_workers: int | None = None,
    cache_dir: str | Path | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    skip_bad_images: bool = False,
    progress: bool = True,
    workspace: str | Path | None = None,
    cache_max_gb: float | None = None,
) -> Path:
    """Embed every image of a dataset (and with ``text`` its prompts) and write the features file(s).

    Args:
        ds: a dataset with ``image_ids`` (n,), ``images`` (DataFrame with ``path`` and ``prompt`` columns, one
            row per image index) and ``root`` (Path or None).
        encoder_name: ``clip:ARCH/TAG``.
        out: the image features file; default ``default_output_path(ds, encoder_name, checkpoint, workspace)``,
            under the workspace.
        text: also write the prompt embeddings to ``text_output_path(out)``.
        chunk_size: images (and prompts) per cache chunk: an interrupted run resumes from its last whole chunk.
            The chunks of another size are not reused.

    Under torchrun (a process group of several ranks, ``recsys.distributed``) every rank embeds its share of
    the chunks (``shard_rows``) on its own device (``auto``: ``cuda:LOCAL_RANK``, else the CPU) into the chunk
    cache, then rank 0 assembles the files from the cache, as a single run would; the cache directory must be
    one that every rank reaches (on several machines: a shared file system).

    Returns:
        The path of the image features file (``.npz``: image_id, embedding).

    Raises:
        UserError: no image files at all, bad image files (unless ``skip_bad_images``), encoder problems; under
            torchrun on every rank when any rank failed.
    """
    if chunk_size < 1:
        raise UserError(f"chunk_size must be at least 1, got {chunk_size}")
    paths = _dataset_column(ds, "path")
    pickapic_root = _pickapic_root(ds) if all(p is None for p in paths) else None
    if all(p is None for p in paths) and pickapic_root is None:
        where = f" in {ds.root}" if getattr(ds, "root", None) else ""
        raise UserError(f"the dataset{where} has no image files to embed (no 'path' per image); "
                        "use precomputed image features (an .npz of image_id and embedding) instead")  # fmt: skip
    out = Path(out) if out is not None else default_output_path(ds, encoder_name, checkpoint, workspace)
    if out.suffix != ".npz":
        raise UserError(f"{out}: the output must be an .npz file")
    rank, world = rank_and_world()
    with together("embedding the images"):
        if rank == 0:
            out.parent.mkdir(parents=True, exist_ok=True)  # an OSError names the folder (the CLI: one line)
        # lazy: a run served from the cache never builds the model or reads its weights
        encoder = load_encoder(encoder_name, checkpoint=checkpoint, device=rank_device(device), lazy=True)
        settings = {"batch_size": batch_size, "num_workers": num_workers, "cache_dir": cache_dir}
        settings |= {"cache_max_gb": cache_max_gb}
        settings |= {"chunk_size": chunk_size, "skip_bad_images": skip_bad_images, "progress": progress}
        if world > 1:  # this rank's chunks into the cache; rank 0 assembles the files from it below
            shard = settings | {"shard": (rank, world), "progress": progress and rank == 0}
            _embed_images_and_prompts(ds, encoder, paths, pickapic_root, text, shard)
    with together("writing the features file"):
        if rank == 0:
            images, prompts = _embed_images_and_prompts(ds, encoder, paths, pickapic_root, text, settings)
            if world > 1:
                _check_cache_shared(images, prompts, cache_dir)
            images.save(out)
            if prompts is not None:
                prompts.save(text_output_path(out))
    return out


def has_prompts(ds) -> bool:
    """True when some image of the dataset has a prompt (a non-blank ``prompt``)."""
    return any(p is not None and p.strip() for p in _dataset_column(ds, "prompt"))


def _embed_images_and_prompts(
    ds, encoder: ClipEncoder, paths: list, pickapic_root: Path | None, text: bool, settings: dict
) -> tuple[Embeddings, Embeddings | None]:
    """The dataset's image embeddings (files, or Pick-a-Pic's bytes) and with ``text`` its prompts' ones."""
    if pickapic_root is not None:
        from recsys.data.pickapic import iter_pickapic_images

        items = iter_pickapic_images(pickapic_root, ds.image_ids)
        images = embed_image_bytes(items, encoder, total=len(ds.image_ids), **settings)
    else:
        images = embed_images(paths, ds.image_ids, encoder, **settings)
    if not text:
        return images, None
    prompts = embed_texts(
        _dataset_column(ds, "prompt"),
        ds.image_ids,
        encoder,
        batch_size=max(settings["batch_size"], 256),
        cache_dir=settings["cache_dir"],
        cache_max_gb=settings["cache_max_gb"],
        chunk_size=settings["chunk_size"],
        progress=settings["progress"],
        shard=settings.get("shard"),
    )
    return images, prompts


def _check_cache_shared(images: Embeddings, prompts: Embeddings | None, cache_dir) -> None:
    """Under torchrun, rank 0's assembly should find every chunk in the cache; a warning when it had to compute
    some (the other ranks wrote them where rank 0 cannot see them)."""
    computed = images.computed_chunks + (prompts.computed_chunks if prompts is not None else 0)
    if computed:
        where = cache_dir or default_cache_dir()
        warnings.warn(f"rank 0 computed {computed} chunk(s) the other ranks embedded, missing from the cache "
                      f"{where}: on several machines pass a --cache-dir on a file system they all share",
                      stacklevel=3)  # fmt: skip


def _pickapic_root(ds) -> Path | None:
    """The dataset's root when it is a Pick-a-Pic directory (images as bytes in its shards), else None."""
    from recsys.data.pickapic import is_pickapic_dir

    root = getattr(ds, "root", None)
    return Path(root) if root is not None and is_pickapic_dir(Path(root)) else None


def embed_pickapic(root: str | Path, encoder_name: str, *, out: str | Path | None = None, **kwargs) -> Path:
    """Embed every image of a Pick-a-Pic directory from the JPEG bytes of its shards (``jpg_0``/``jpg_1``,
    streamed) and write the features file; returns its path (default ``default_output_path``, under the
    workspace).

    The images are those of ``recsys.data.pickapic.load_pickapic(root)``; with ``text=True`` the captions are
    embedded too. Other keyword arguments go to ``embed_dataset``.
    """
    from recsys.data.pickapic import load_pickapic

    return embed_dataset(load_pickapic(root), encoder_name, out=out, **kwargs)


def embed_dataset_features(
    ds,
    encoder_name: str,
    *,
    checkpoint: str | Path | None = None,
    skip_bad_images: bool = False,
    **kwargs,
):
    """A copy of a ``recsys.data.Dataset`` whose ``image_features`` are the encoder's image embeddings and, when
    its images have prompts, whose ``prompt_features`` are the encoder's text embeddings of them (an image
    without a prompt: a zero row).

    With ``skip_bad_images``, bad images get zero rows and their ratings are dropped (``ds.drop_images``), with
    a warning naming how many. Other keyword arguments go to ``embed_dataset``.
    """
    from recsys.data import with_prompt_file
    from recsys.data.features_file import read_image_features

    text = kwargs.pop("text", has_prompts(ds))
    out = embed_dataset(
        ds, encoder_name, checkpoint=checkpoint, skip_bad_images=skip_bad_images, text=text, **kwargs
    )
    if text:
        ds = with_prompt_file(ds, text_output_path(out), f"{encoder_name} (prompts)")
    sidecar = bad_sidecar_path(out)
    if not sidecar.is_file():
        features = read_image_features(out, np.asarray(ds.image_ids))
        return ds.with_image_features(features, encoder_name)
    bad_ids = {b["image_id"] for b in read_json(sidecar, "a list of left-out images")["left_out"]}
    ids = np.asarray(ds.image_ids)
    bad_mask = np.array([v in bad_ids for v in ids.tolist()], dtype=bool)
    good = read_image_features(out, ids[~bad_mask])
    features = np.zeros((len(ids), good.shape[1]), np.float32)
    features[~bad_mask] = good
    ds = ds.with_image_features(features, encoder_name)
    ds, dropped = ds.drop_images(np.flatnonzero(bad_mask))
    warnings.warn(f"{int(bad_mask.sum())} unreadable images left out ({dropped} ratings dropped); see {sidecar}",
                  stacklevel=2)  # fmt: skip
    return ds
