"""Precomputed image features: an ``.npz`` with ``image_id`` (n) and ``embedding`` (float32, n x d).

The embeddings of the images' prompts, when there are any, are a file of the same format beside it,
``X.text.npz`` for ``X.npz`` (one row per image: its prompt's embedding), read into ``Dataset.prompt_features``.

``image_id`` is int64 (PAMELA) or fixed-width unicode strings (``dtype '<U36'`` for Pick-a-Pic's UUIDs, file names
for PARA): ``np.array(ids, dtype=str)``. An object array would be pickled by ``np.savez`` and is refused.
"""

from __future__ import annotations

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
    features = embedding[np.maximum(rows, 0)].astype(np.float32)
    features[rows < 0] = 0.0
    if not np.isfinite(features).all():
        raise UserError(f"{path}: embedding holds NaN or infinite values")
    zero = (rows >= 0) & ~features.any(axis=1)
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


def _kind_name(dtype: np.dtype) -> str:
    names = {"b": "boolean", "c": "complex", "U": "string", "S": "byte-string", "O": "object"}
    return names.get(dtype.kind, "non-numeric")


def write_image_features(path: str | Path, image_ids: np.ndarray, embedding: np.ndarray) -> None:
    """Write the features file atomically (a reader never sees a half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    ids = np.asarray(image_ids)
    if ids.dtype.kind == "O":  # string ids as fixed-width unicode: an object array would be pickled
        ids = ids.astype(str)
    np.savez(tmp, image_id=ids, embedding=np.asarray(embedding, dtype=np.float32))
    tmp.replace(path)
