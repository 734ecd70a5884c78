"""On-disk cache of embeddings: content-addressed chunk files, written atomically.

Layout: ``CACHE_DIR/<kind>/<encoder key[:16]>/<chunk key>.npz`` where kind is ``image`` or ``text``. A chunk
holds the embeddings of up to ``chunk_size`` consecutive inputs, keyed by the encoder (its ``cache_key``:
name, architecture config, preprocessing, checkpoint SHA-256) and by each input's identity:

- images: the id, the file name, its size in bytes and its modification time (ns). A stat costs microseconds,
  so a cache lookup over PAMELA's 5,077 files takes milliseconds; hashing contents would read all 2.25 GB on
  every lookup. Replacing or editing a file changes its size or mtime, which is what we need to notice.
- texts: the id and the text itself.

Keying each chunk by its own inputs (not the whole set) means an interrupted run resumes from the chunks it
wrote, and fixing one bad file recomputes only its chunk. Each chunk file stores ``image_id`` (all ids of
the chunk, in order), ``ok`` (bool), ``embedding`` (float32, rows of the ok inputs only) and ``reason``
(why an input failed, "" when ok).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys.errors import UserError

_sha_memo: dict[tuple[str, int, int], str] = {}


def default_cache_dir() -> Path:
    """``$RECSYS_HOME/embeddings`` (default ``~/.cache/recsys/embeddings``), beside the simulated dataset."""
    return Path(os.environ.get("RECSYS_HOME", Path.home() / ".cache" / "recsys")) / "embeddings"


def _umask() -> int:
    """The process's umask: from /proc where it is there, else set and restored."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic_write(path: Path, write) -> None:
    """Write through ``write(file_object)`` into a temp file in the same directory, then rename over ``path``.

    os.replace is atomic within a file system, so a reader sees the old file or the new one, never a part.
    The file gets the permissions of any new file (``0o666`` less the umask), not the temp file's ``0o600``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_npz(path: str | Path, **arrays: np.ndarray) -> None:
    """``np.savez`` to ``path`` atomically (no pickled objects: every array must have a plain dtype)."""
    _atomic_write(Path(path), lambda handle: np.savez(handle, **arrays))


def atomic_write_json(path: str | Path, obj) -> None:
    """``json.dump`` to ``path`` atomically."""
    _atomic_write(Path(path), lambda handle: handle.write(json.dumps(obj, indent=1).encode()))


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """``data`` to ``path`` atomically."""
    _atomic_write(Path(path), lambda handle: handle.write(data))


def atomic_write_text(path: str | Path, text: str) -> None:
    """``text`` (UTF-8) to ``path`` atomically."""
    _atomic_write(Path(path), lambda handle: handle.write(text.encode()))


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's content, remembered per (path, size, mtime) within the process."""
    path = Path(path)
    stat = path.stat()
    memo_key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo_key not in _sha_memo:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _sha_memo[memo_key] = digest.hexdigest()
    return _sha_memo[memo_key]


def file_identity(path: str | Path | None) -> str | None:
    """``name:size:mtime_ns`` of an image file, or None when there is no such file (see the module docstring)."""
    if path is None:
        return None
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return f"{os.path.basename(path)}:{stat.st_size}:{stat.st_mtime_ns}"


def chunk_key(encoder_key: str, kind: str, ids: Sequence, identities: Sequence[str | None]) -> str:
    """Hex key of one chunk: the encoder, the kind, and each input's id and identity in order."""
    digest = hashlib.sha256(f"{encoder_key}\0{kind}\0{len(ids)}".encode())
    for item_id, identity in zip(ids, identities, strict=True):
        digest.update(f"\0{item_id!r}\0{identity!r}".encode())
    return digest.hexdigest()[:32]


@dataclass(frozen=True)
class Chunk:
    """Embeddings of consecutive inputs: ``image_id`` (n,), ``ok`` (bool, n), ``embedding`` (float32,
    ok.sum() x d, rows of the ok inputs in order) and ``reason`` (str, n; "" when ok)."""

    image_id: np.ndarray
    ok: np.ndarray
    embedding: np.ndarray
    reason: np.ndarray


class ChunkCache:
    """Chunk files of one encoder and kind under ``root``."""

    def __init__(self, root: str | Path, encoder_key: str, kind: str) -> None:
        self.directory = Path(root) / kind / encoder_key[:16]

    def path_for(self, key: str) -> Path:
        return self.directory / f"{key}.npz"

    def load(self, key: str, expected_ids: np.ndarray) -> Chunk | None:
        """The chunk stored under ``key``, or None when absent or unreadable (then it is recomputed)."""
        path = self.path_for(key)
        try:
            with np.load(path, allow_pickle=False) as data:
                chunk = Chunk(data["image_id"], data["ok"], data["embedding"], data["reason"])
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
            return None
        # a key collision or a foreign file would show here; recompute rather than serve wrong rows
        if len(chunk.image_id) != len(expected_ids) or not np.array_equal(chunk.image_id, expected_ids):
            return None
        if chunk.embedding.ndim != 2 or len(chunk.embedding) != int(chunk.ok.sum()):
            return None
        return chunk

    def store(self, key: str, chunk: Chunk) -> None:
        """Write one chunk atomically; a UserError when the cache directory is not writable."""
        try:
            atomic_write_npz(self.path_for(key), image_id=chunk.image_id, ok=chunk.ok,
                             embedding=chunk.embedding, reason=chunk.reason)  # fmt: skip
        except OSError as err:
            raise UserError(f"{self.directory}: cannot write the embedding cache ({err.strerror or err}); "
                            "pass --cache-dir with a writable directory") from None  # fmt: skip
