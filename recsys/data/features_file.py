"""Precomputed image features: an ``.npz`` with ``image_id`` (n) and ``embedding`` (float32, n x d).

The embeddings of the images' prompts, when there are any, are a file of the same format beside it,
``X.text.npz`` for ``X.npz`` (one row per image: its prompt's embedding), read into ``Dataset.prompt_features``.

``image_id`` is int64 (PAMELA) or fixed-width unicode strings (``dtype '<U36'`` for Pick-a-Pic's UUIDs, file names
for PARA): ``np.array(ids, dtype=str)``. An object array would be pickled by ``np.savez`` and is refused.

``embedding`` may be float16 (half the size; the simulator's ``feature_dtype``): it is then read as float16, the
dataset keeps it so, and the models cast what they use. An embedding stored uncompressed (``numpy.savez``, not
``savez_compressed``) is memory-mapped, so reading a dataset's rows never holds a second copy of the whole file.
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np

from recsys.errors import UserError


def read_image_features(
    path: str | Path, image_ids: np.ndarray, *, allow_missing: np.ndarray | None = None
) -> np.ndarray:
    """The rows of ``path`` aligned to ``image_ids`` (float32, len(image_ids) x d).

    Extra images in the file are ignored; images of the dataset missing from the file are an error that names
    how many and which (the first few), except the indices in ``allow_missing`` (images recorded as left out),
    whose rows are zero.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such features file; pass an .npz with arrays image_id and embedding")
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("image_id", "embedding") if k not in data.files]
            if missing:
                raise UserError(
                    f"{path}: lacks array(s) {', '.join(missing)}; it needs image_id and embedding"
                )
            file_ids = data["image_id"]
            embedding = mapped_member(path, "embedding")
            if embedding is None:  # compressed: read whole
                embedding = data["embedding"]
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        if "allow_pickle" in str(err):
            raise UserError(
                f"{path}: image_id or embedding is stored as pickled Python objects; save string ids as fixed-width "
                "unicode, numpy.savez(path, image_id=numpy.array(ids, dtype=str), embedding=...)"
            ) from None
        raise UserError(f"{path}: not a readable .npz file ({err}); re-create it with numpy.savez") from None
    if embedding.ndim != 2 or file_ids.ndim != 1 or len(file_ids) != len(embedding):
        raise UserError(
            f"{path}: image_id has shape {file_ids.shape} and embedding {embedding.shape}; "
            "expected (n,) and (n, d) with rows aligned"
        )
    if embedding.dtype.kind not in "iuf":  # bool, complex, strings, dates: not a point in feature space
        raise UserError(
            f"{path}: embedding holds {_kind_name(embedding.dtype)} values ({embedding.dtype}); it must be "
            "real numbers: save numpy.asarray(embedding, dtype=numpy.float32)"
        )
    if embedding.shape[1] == 0:
        raise UserError(
            f"{path}: embedding has shape {embedding.shape}, no dimensions; expected (n, d) with d >= 1"
        )
    if image_ids.dtype.kind in "iu":
        if file_ids.dtype.kind not in "iu":
            raise UserError(f"{path}: image_id must be integers (int64), found {file_ids.dtype}")
        file_ids = file_ids.astype(np.int64)
    elif file_ids.dtype.kind in "iuUS":
        file_ids = file_ids.astype(str)  # integer ids of a table are matched as their text
    else:
        raise UserError(f"{path}: image_id must be strings or integers, found {file_ids.dtype}")
    position = {k: i for i, k in enumerate(file_ids.tolist())}
    if len(position) != len(file_ids):
        raise UserError(f"{path}: image_id holds duplicates; keep one embedding per image")
    rows = np.array([position.get(k, -1) for k in image_ids.tolist()], dtype=np.int64)
    excused = np.zeros(len(image_ids), dtype=bool)
    if allow_missing is not None:
        excused[np.asarray(allow_missing, dtype=np.int64)] = True
    absent = image_ids[(rows < 0) & ~excused]
    if len(absent):
        first = ", ".join(str(v) for v in absent[:5])
        raise UserError(
            f"{path}: {len(absent)} of the dataset's {len(image_ids)} images are missing from the features "
            f"file (first: {first}); embed them or remove their ratings"
        )
    dtype = np.float16 if embedding.dtype == np.float16 else np.float32
    features = np.empty((len(rows), embedding.shape[1]), dtype)
    zero = np.zeros(len(rows), dtype=bool)
    for start in range(0, len(rows), CHECK_ROWS):  # gathered and checked in blocks: no whole-size temporaries
        block = features[start : start + CHECK_ROWS]
        block[:] = embedding[np.maximum(rows[start : start + CHECK_ROWS], 0)]
        block[rows[start : start + CHECK_ROWS] < 0] = 0.0
        if not np.isfinite(block).all():
            raise UserError(f"{path}: embedding holds NaN or infinite values")
        zero[start : start + CHECK_ROWS] = ~block.any(axis=1)
    zero &= rows >= 0
    if zero.any():
        first = ", ".join(str(v) for v in image_ids[zero][:5])
        raise UserError(
            f"{path}: {int(zero.sum())} embedding row(s) are all zeros (images {first}), which is no embedding; "
            "re-embed those images, or leave them out of the file and their ratings out of the data"
        )
    return features


def sidecar_path(features_file: str | Path, kind: str) -> Path:
    """``X.npz`` -> ``X.<kind>``: a file that goes with the image features file ``X.npz``: ``text.npz`` (the
    embeddings of its images' prompts, same format, keyed by image id) or ``bad.json`` (the images left out)."""
    path = Path(features_file)
    return path.with_name(path.name.removesuffix(".npz") + "." + kind)


#: rows gathered and checked at once when reading a features file
CHECK_ROWS = 65_536


def mapped_member(path: str | Path, name: str) -> np.ndarray | None:
    """The array ``name`` of the ``.npz`` at ``path`` as a read-only memory map, when it is stored uncompressed
    with a numeric type; None otherwise (compressed, or not a plain array: read it with ``numpy.load``)."""
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo(f"{name}.npy")
        if info.compress_type != zipfile.ZIP_STORED:
            return None
        with open(path, "rb") as file:
            file.seek(info.header_offset)
            local = file.read(30)  # the member's local header: its name and extra field come next
            if local[:4] != b"PK\x03\x04":
                return None
            name_length, extra_length = struct.unpack("<HH", local[26:30])
            file.seek(info.header_offset + 30 + name_length + extra_length)
            version = np.lib.format.read_magic(file)
            read_header = {
                (1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0,
            }.get(version)
            if read_header is None:
                return None
            shape, fortran, dtype = read_header(file)
            offset = file.tell()
    except (KeyError, OSError, ValueError, zipfile.BadZipFile):
        return None
    if dtype.kind not in "iuf" or offset + dtype.itemsize * int(np.prod(shape)) > Path(path).stat().st_size:
        return None
    return np.memmap(path, dtype=dtype, mode="r", shape=shape, order="F" if fortran else "C", offset=offset)


def _kind_name(dtype: np.dtype) -> str:
    names = {"b": "boolean", "c": "complex", "U": "string", "S": "byte-string", "O": "object"}
    return names.get(dtype.kind, "non-numeric")


def write_image_features(
    path: str | Path, image_ids: np.ndarray, embedding: np.ndarray, *, dtype: str = "float32"
) -> None:
    """Write the features file atomically (a reader never sees a half-written file), the embedding as ``dtype``
    (float32 or float16), uncompressed so that readers memory-map it; a memory-mapped ``embedding`` of that type
    is copied in blocks, never read whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    ids = np.asarray(image_ids)
    if ids.dtype.kind == "O":  # string ids as fixed-width unicode: an object array would be pickled
        ids = ids.astype(str)
    np.savez(tmp, image_id=ids, embedding=np.asarray(embedding, dtype=dtype))
    tmp.replace(path)
