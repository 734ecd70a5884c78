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

A chunk that does not hold what its key promises (other ids, another width than the encoder's, rows that do not
match ``ok``, a damaged file) is deleted and recomputed, with one line on stderr.

The cache has a size bound: ``max_bytes`` (default ``cache_limit_bytes()``: ``$RECSYS_CACHE_MAX_GB``
gigabytes, else ``DEFAULT_CACHE_MAX_GB``) over every chunk file under ``CACHE_DIR``. Reading a chunk marks it
used (its modification time); after each write the least recently used chunks are deleted until the cache is
within the bound (the chunk just written is kept). Temporary files that a killed writer left are removed then
too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from recsys.errors import UserError
from recsys.files import regular_file
from recsys.workspace import remove_stale, temporary_sibling

_sha_memo: dict[tuple[str, int, int], str] = {}


#: the cache's size bound when ``$RECSYS_CACHE_MAX_GB`` does not set one (gigabytes, 10^9 bytes)
DEFAULT_CACHE_MAX_GB = 10.0
CACHE_MAX_ENV = "RECSYS_CACHE_MAX_GB"


def cache_limit_bytes(max_gb: float | None = None) -> int:
    """The cache's size bound in bytes: ``max_gb``, else ``$RECSYS_CACHE_MAX_GB``, else
    ``DEFAULT_CACHE_MAX_GB``; a value that is not a positive number is a one-line ``UserError``."""
    source = "--cache-max-gb" if max_gb is not None else f"${CACHE_MAX_ENV}"
    value = max_gb if max_gb is not None else os.environ.get(CACHE_MAX_ENV, DEFAULT_CACHE_MAX_GB)
    try:
        gigabytes = float(value)
    except (TypeError, ValueError):
        gigabytes = float("nan")
    if not 0 < gigabytes < float("inf"):
        raise UserError(f"{source} must be a positive number of gigabytes, got {value!r}")
    return int(gigabytes * 1e9)


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
    tmp = temporary_sibling(path)  # named after this process: remove_stale knows a killed writer's file
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno is not None and err.filename is None:
            err.filename = str(path)  # a failed write names no file
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


def _chunk_problem(chunk: Chunk, expected_ids: np.ndarray, dim: int | None) -> str | None:
    """Why a stored chunk cannot be served for ``expected_ids`` at width ``dim`` (None when it can)."""
    n = len(expected_ids)
    if chunk.image_id.shape != (n,) or not np.array_equal(chunk.image_id, expected_ids):
        return "other image ids than its key"  # a key collision or a foreign file
    if chunk.ok.dtype != bool or chunk.ok.shape != (n,) or chunk.reason.shape != (n,):
        return "ok and reason do not match its ids"
    if chunk.embedding.ndim != 2 or len(chunk.embedding) != int(chunk.ok.sum()):
        return f"embedding of shape {chunk.embedding.shape} for {int(chunk.ok.sum())} readable inputs"
    if dim is not None and chunk.embedding.shape[1] != dim:
        return f"embedding {chunk.embedding.shape[1]} wide, not the encoder's {dim}"
    if chunk.embedding.dtype != np.float32 or not np.isfinite(chunk.embedding).all():
        return "embedding not finite float32"
    return None


class ChunkCache:
    """Chunk files of one encoder and kind under ``root``, the cache bounded to ``max_bytes`` in all (default
    ``cache_limit_bytes()``) by least-recently-used eviction (see the module docstring)."""

    def __init__(self, root: str | Path, encoder_key: str, kind: str, max_bytes: int | None = None) -> None:
        self.root = Path(root)
        self.directory = self.root / kind / encoder_key[:16]
        self.max_bytes = cache_limit_bytes() if max_bytes is None else int(max_bytes)

    def path_for(self, key: str) -> Path:
        return self.directory / f"{key}.npz"

    def load(self, key: str, expected_ids: np.ndarray, dim: int | None = None) -> Chunk | None:
        """The chunk stored under ``key``, marked used; None when absent. A chunk that is unreadable or does not
        hold ``expected_ids`` at width ``dim`` is deleted, with one line on stderr, and None returned (the
        caller recomputes and stores it)."""
        path = self.path_for(key)
        try:
            regular_file(path, "an embedding cache chunk")
            with np.load(path, allow_pickle=False) as data:
                chunk = Chunk(data["image_id"], data["ok"], data["embedding"], data["reason"])
        except FileNotFoundError:
            return None
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile, UserError) as err:
            problem = f"unreadable ({type(err).__name__})"
        else:
            problem = _chunk_problem(chunk, np.asarray(expected_ids), dim)
            if problem is None:
                with contextlib.suppress(OSError):
                    os.utime(path)  # used now: the last to be evicted
                return chunk
        print(f"embedding cache: dropped the chunk {path} ({problem}); recomputing it", file=sys.stderr)
        with contextlib.suppress(OSError):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        return None

    def store(self, key: str, chunk: Chunk) -> None:
        """Write one chunk atomically, then evict the least recently used chunks beyond ``max_bytes``; a
        UserError when the cache directory is not writable."""
        try:
            atomic_write_npz(self.path_for(key), image_id=chunk.image_id, ok=chunk.ok,
                             embedding=chunk.embedding, reason=chunk.reason)  # fmt: skip
            self.evict(keep=self.path_for(key))
        except OSError as err:
            raise UserError(f"{self.directory}: cannot write the embedding cache ({err.strerror or err}); make it "
                            "writable, or move the cache ($RECSYS_HOME, `recsys features embed --cache-dir`)"
                            ) from None  # fmt: skip

    def chunk_files(self) -> list[tuple[Path, int, int]]:
        """(path, size, last use in ns) of every chunk file under the cache root, every encoder and kind;
        temporary files that killed writers left are removed on the way."""
        found = []
        for kind in ("image", "text"):
            for directory in sorted((self.root / kind).glob("*")):
                if not directory.is_dir():
                    continue
                remove_stale(directory)
                with os.scandir(directory) as entries:
                    for entry in entries:
                        if entry.name.endswith(".npz") and not entry.name.startswith(".") and entry.is_file():
                            info = entry.stat()
                            found.append((Path(entry.path), info.st_size, info.st_mtime_ns))
        return found

    def evict(self, keep: Path | None = None) -> list[Path]:
        """Delete the least recently used chunk files until the cache holds at most ``max_bytes`` (``keep``, the
        chunk just written, is never deleted); returns the deleted files, oldest use first."""
        files = self.chunk_files()
        total = sum(size for _, size, _ in files)
        evicted = []
        for path, size, _ in sorted(files, key=lambda f: (f[2], str(f[0]))):
            if total <= self.max_bytes:
                break
            if keep is not None and path == keep:
                continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            total -= size
            evicted.append(path)
        return evicted
