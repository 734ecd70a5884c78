"""Saving and loading a :class:`~recsys.retrieval.index.VectorIndex`: a FAISS index file and a JSON sidecar.

An index saved at ``path`` is two files, and no pickle:

* ``path``: the CPU FAISS index, written by ``faiss.write_index`` (a GPU index is copied to the CPU first,
  so the file loads on either device);
* ``path.json``: the sidecar, ``{"format": "recsys.retrieval.VectorIndex", "format_version": 3,
  "faiss_version", "metric", "kind", "params", "dimension", "n_vectors", "vectors_sha256", "index_file",
  "index_file_sha256"}``. ``vectors_sha256`` is the :func:`~recsys.retrieval.index.vectors_fingerprint`
  of the vectors built from, so a caller can tell whether the index still matches them.

Each file is written under a temporary name, fsynced and renamed into place, the sidecar last, so a reader
never pairs a sidecar with another save's index file (the SHA-256 of the index file in the sidecar
catches it if it does).

:func:`load_index` checks, in order: both files exist; the sidecar is JSON of this format; its format
version is one this suite reads (3, or 2, which lacked the ``ivf_sq`` parameters; a newer version needs
a newer suite; version 1, which stored external ids, is no longer read); its fields are complete; the index file's SHA-256 matches; FAISS can read the file; and the
index read has the dimension, size, kind and metric the sidecar says. Any failure is an
:class:`~recsys.retrieval.index.IndexInputError` (a ``UserError``) whose one-line message says which.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from pathlib import Path
from typing import Any

from recsys.files import NotARegularFile, read_json
from recsys.retrieval.index import Device, IndexInputError, VectorIndex, faiss, resolve_device
from recsys.threads import ensure_faiss_threads_configured

SIDECAR_SUFFIX = ".json"
FORMAT = "recsys.retrieval.VectorIndex"
#: Version 3 adds the ``ivf_sq`` kind and its parameters; version 2 (rows known by position only) reads
#: as the same index with those parameters at their defaults. Version 1 also stored external ids.
FORMAT_VERSION = 3
#: The oldest version :func:`load_index` reads.
OLDEST_READABLE_VERSION = 2
_RESAVE = "rebuild the index and save it again"


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """Where the JSON sidecar of an index saved at ``path`` lives: ``path`` + ``.json``."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def save_index(index: VectorIndex, path: str | os.PathLike[str]) -> Path:
    """Write ``index`` to ``path`` (FAISS) and ``path.json`` (sidecar), each atomically.

    Returns:
        ``path`` as a Path.

    Raises:
        IndexInputError: the index is not built.
    """
    cpu_index = index.cpu_faiss_index()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    token = f".tmp-{os.getpid()}-{uuid.uuid4().hex}"
    index_tmp = path.with_name(path.name + token)
    sidecar = sidecar_path(path)
    sidecar_tmp = sidecar.with_name(sidecar.name + token)
    try:
        faiss.write_index(cpu_index, str(index_tmp))
        _fsync(index_tmp)
        metadata = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "faiss_version": faiss.__version__,
            "metric": index.metric,
            "kind": index.kind_,
            "params": index.get_params(),
            "dimension": index.dim_,
            "n_vectors": len(index),
            "vectors_sha256": index.fingerprint_,
            "index_file": path.name,
            "index_file_sha256": _file_sha256(index_tmp),
        }
        with sidecar_tmp.open("w", encoding="utf-8") as handle:
            json.dump(metadata, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(index_tmp, path)
        os.replace(sidecar_tmp, sidecar)
        _fsync_directory(path.parent)
    finally:
        for leftover in (index_tmp, sidecar_tmp):
            leftover.unlink(missing_ok=True)
    return path


def load_index(path: str | os.PathLike[str], *, device: Device = "auto") -> VectorIndex:
    """Read an index written by :func:`save_index`; nothing is rebuilt or retrained.

    Args:
        path: the index file given to :func:`save_index` (the sidecar is ``path.json``).
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``; HNSW always loads on the CPU (and the graph over an
            ``ivf_sq`` index's lists, with its refinement, stays there).

    Raises:
        IndexInputError: a file is missing, unreadable, truncated or corrupt, of another or newer format,
            or the two files do not belong together.
    """
    resolve_device(device)  # a device that cannot be used is the caller's error, not the file's
    path = Path(path)
    sidecar = sidecar_path(path)
    for required in (path, sidecar):
        if not required.is_file():
            raise IndexInputError(f"{required}: no such file; save the index with save_index first")
    metadata = _read_sidecar(sidecar)
    try:
        expected_sha256 = metadata["index_file_sha256"]
        kind = metadata["kind"]
        dimension = metadata["dimension"]
        n_vectors = metadata["n_vectors"]
        fingerprint = metadata["vectors_sha256"]
        params = dict(metadata["params"])
    except (KeyError, TypeError, ValueError) as error:
        raise IndexInputError(
            f"{sidecar}: incomplete sidecar (missing or bad field {error}); {_RESAVE}"
        ) from None
    if _file_sha256(path) != expected_sha256:
        raise IndexInputError(
            f"{path}: the index file does not match the checksum in its sidecar {sidecar.name} "
            f"(truncated, changed, or written by another save); {_RESAVE}"
        )
    ensure_faiss_threads_configured()
    try:
        cpu_index = faiss.read_index(str(path))
    except RuntimeError as error:
        raise IndexInputError(
            f"{path}: FAISS cannot read the index file ({_first_line(error)}); {_RESAVE}"
        ) from None
    if cpu_index.d != dimension or cpu_index.ntotal != n_vectors:
        raise IndexInputError(
            f"{path}: the index holds {cpu_index.ntotal} x {cpu_index.d} vectors but its sidecar says "
            f"{n_vectors} x {dimension}; {_RESAVE}"
        )
    try:
        return VectorIndex.from_faiss(
            cpu_index, params=params, kind=kind, fingerprint=fingerprint, device=device
        )
    except IndexInputError as error:  # the device was checked above: this is about the saved index
        raise IndexInputError(f"{path}: {error}; {_RESAVE}") from None


def _read_sidecar(sidecar: Path) -> dict[str, Any]:
    try:
        metadata = read_json(sidecar, "an index sidecar")
    except (json.JSONDecodeError, UnicodeDecodeError, NotARegularFile) as error:
        raise IndexInputError(f"{sidecar}: not a readable JSON sidecar ({error}); {_RESAVE}") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise IndexInputError(f"{sidecar}: not a VectorIndex sidecar (no format {FORMAT!r}); {_RESAVE}")
    version = metadata.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise IndexInputError(f"{sidecar}: unknown index format version {version!r}; {_RESAVE}")
    if version > FORMAT_VERSION:
        raise IndexInputError(
            f"{sidecar}: index format version {version} is newer than this suite reads ({FORMAT_VERSION}); "
            f"upgrade recsys, or {_RESAVE}"
        )
    if version < OLDEST_READABLE_VERSION:
        raise IndexInputError(
            f"{sidecar}: index format version {version} is no longer read (this suite reads "
            f"{OLDEST_READABLE_VERSION} to {FORMAT_VERSION}); {_RESAVE}"
        )
    return metadata


def _first_line(error: BaseException) -> str:
    """FAISS's message without its C++ location prefix, on one line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return re.sub(r"^Error in .*? at \S+:\d+: (Error: )?", "", lines[0])[:200]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def _fsync_directory(directory: Path) -> None:
    """Make the renames durable (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
