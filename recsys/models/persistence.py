"""One way to save and load fitted models, with nothing that can run code when read.

A saved model is a directory:

* ``config.json``: ``{"model": NAME, "format": SAVE_FORMAT, "params": {...}}``;
* ``state.json``: every fitted attribute that is not an array (numbers, strings, lists, dicts) and where
  each array, sparse matrix, torch module or state record lives;
* ``arrays.npz``: the arrays, read with ``allow_pickle=False``;
* ``modules.pt``: torch ``state_dict`` of each module, read with ``weights_only=True``.

The directory is written beside its destination and renamed into place, so a reader sees the old model or
the new one, never a mix. Anything unreadable (truncated, corrupt, another format, a newer version, another
model) raises :class:`SavedModelError`, one line naming the directory and the problem.
"""

from __future__ import annotations

import dataclasses
import io
import json
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.errors import UserError
from recsys.files import NotARegularFile, read_bytes, read_json, regular_file
from recsys.workspace import remove_stale, temporary_sibling

#: Version of the saved-model layout this code writes and reads.
SAVE_FORMAT = 3

#: Dataclasses allowed as fitted state, by name (registered with :func:`state_record`); nothing else is built.
_RECORDS: dict[str, type] = {}


class SavedModelError(UserError):
    """A saved model that cannot be used: missing, truncated, corrupt, of another format or model."""


def state_record(cls: type) -> type:
    """Class decorator: let instances of a dataclass of arrays and plain values be saved as fitted state."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls.__name__} must be a dataclass")
    _RECORDS[cls.__name__] = cls
    return cls


def fitted_state(obj: Any) -> dict[str, Any]:
    """The fitted attributes of a model: public names ending with ``_`` (scikit-learn's convention)."""
    return {k: v for k, v in vars(obj).items() if k.endswith("_") and not k.startswith("_")}


# ---------------------------------------------------------------------------------------------- writing
def write_model_dir(path: str | Path, config: dict, state: dict[str, Any]) -> Path:
    """Write ``config`` and the fitted ``state`` as a saved-model directory at ``path`` (replaced whole)."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    modules: dict[str, dict] = {}
    index = {key: _encode(key, value, arrays, modules) for key, value in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale(path.parent)  # what writers killed mid-save left beside it
    tmp = temporary_sibling(path)
    tmp.mkdir()
    try:
        (tmp / "state.json").write_text(json.dumps(index, allow_nan=True))
        with open(tmp / "arrays.npz", "wb") as fh:
            np.savez(fh, **arrays)
        if modules:
            import torch

            torch.save(modules, tmp / "modules.pt")
        (tmp / "config.json").write_text(json.dumps(config, indent=2))
        old = None
        if path.exists():
            old = temporary_sibling(path, "old")
            path.rename(old)
        tmp.rename(path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _encode(key: str, value: Any, arrays: dict, modules: dict) -> Any:
    """A JSON description of one fitted attribute; arrays and module weights are set aside."""
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise TypeError(
                f"fitted attribute {key} is an object array; store numbers or fixed-width strings"
            )
        arrays[key] = value
        return {"array": key}
    if sp.issparse(value):
        csr = sp.csr_matrix(value)
        for part in ("data", "indices", "indptr"):
            arrays[f"{key}.{part}"] = getattr(csr, part)
        return {"sparse": key, "shape": list(csr.shape)}
    if _is_module(value):
        modules[key] = {k: v.detach().cpu() for k, v in value.state_dict().items()}
        return {"module": key}
    if dataclasses.is_dataclass(value) and type(value).__name__ in _RECORDS:
        return {
            "record": type(value).__name__,
            "fields": {
                f.name: _encode(f"{key}.{f.name}", getattr(value, f.name), arrays, modules)
                for f in dataclasses.fields(value)
            },
        }
    return {"value": _plain(key, value)}


def _plain(key: str, value: Any) -> Any:
    """``value`` as JSON-ready data (numpy scalars to Python, tuples to lists); a TypeError otherwise."""
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_plain(key, v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _plain(key, v) for k, v in value.items()}
    raise TypeError(f"fitted attribute {key} of type {type(value).__name__} cannot be saved")


def _is_module(value: Any) -> bool:
    try:
        import torch
    except ImportError:
        return False
    return isinstance(value, torch.nn.Module)


# ---------------------------------------------------------------------------------------------- reading
def read_config(path: str | Path) -> dict:
    """``config.json`` of a saved model, checked for its format version and fields."""
    path = Path(path)
    config = _read_json(path, "config.json")
    if not isinstance(config, dict) or not isinstance(config.get("params"), dict) or "model" not in config:
        raise SavedModelError(f"{path}: config.json is not a saved-model config (model, format, params)")
    version = config.get("format")
    if not isinstance(version, int) or isinstance(version, bool):
        raise SavedModelError(f"{path}: config.json has no integer format version")
    if version > SAVE_FORMAT:
        raise SavedModelError(
            f"{path}: saved in format {version} by a newer version of the suite (this one reads {SAVE_FORMAT}); "
            "upgrade, or refit"
        )
    if version < SAVE_FORMAT:
        raise SavedModelError(
            f"{path}: saved in the old format {version} (this version reads {SAVE_FORMAT}); refit"
        )
    return config


def read_state(path: str | Path, build_module) -> dict[str, Any]:
    """The fitted attributes of a saved model; ``build_module(key, state_so_far)`` makes an empty module."""
    path = Path(path)
    index = _read_json(path, "state.json")
    if not isinstance(index, dict):
        raise SavedModelError(f"{path}: state.json is not a state index")
    try:
        with np.load(regular_file(path / "arrays.npz", "a saved model's arrays"), allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise SavedModelError(f"{path}: arrays.npz is missing") from None
    except NotARegularFile as err:
        raise SavedModelError(str(err)) from None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as err:
        raise SavedModelError(f"{path}: arrays.npz is unreadable ({_first_line(err)})") from None
    modules = {}
    if (path / "modules.pt").exists():
        modules = _read_torch(path / "modules.pt")
    state: dict[str, Any] = {}
    try:
        pending = []
        for key, entry in index.items():
            if isinstance(entry, dict) and "module" in entry:
                pending.append(key)
            else:
                state[key] = _decode(entry, arrays)
        for key in pending:  # modules last: their shapes come from the other state
            module = build_module(key, state)
            module.load_state_dict(modules[index[key]["module"]], strict=True)
            module.eval()
            state[key] = module
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise SavedModelError(f"{path}: saved state does not match the model ({_first_line(err)})") from None
    return state


def _decode(entry: Any, arrays: dict[str, np.ndarray]) -> Any:
    if not isinstance(entry, dict) or len({"array", "sparse", "record", "value"} & set(entry)) != 1:
        raise ValueError(f"unknown state entry {str(entry)[:60]!r}")
    if "array" in entry:
        return arrays[entry["array"]]
    if "sparse" in entry:
        key = entry["sparse"]
        parts = (arrays[f"{key}.data"], arrays[f"{key}.indices"], arrays[f"{key}.indptr"])
        return sp.csr_matrix(parts, shape=tuple(entry["shape"]))
    if "record" in entry:
        cls = _RECORDS.get(entry["record"])
        if cls is None:
            raise ValueError(f"unknown state record {entry['record']!r}")
        return cls(**{name: _decode(value, arrays) for name, value in entry["fields"].items()})
    return entry["value"]


def _read_json(path: Path, name: str) -> Any:
    try:
        return read_json(path / name, f"a saved model's {name}")
    except FileNotFoundError:
        raise SavedModelError(f"{path}: not a saved model ({name} is missing)") from None
    except NotARegularFile as err:
        raise SavedModelError(str(err)) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise SavedModelError(f"{path}: {name} is unreadable ({_first_line(err)})") from None


def _read_torch(file: Path) -> dict:
    import torch

    try:
        data = read_bytes(file, "a saved model's weights")
        modules = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # the weights-only unpickler refuses anything but tensors, with its own errors
        raise SavedModelError(
            f"{file.parent}: {file.name} is unreadable or unsafe ({_first_line(err)})"
        ) from None
    if not isinstance(modules, dict) or not all(isinstance(v, dict) for v in modules.values()):
        raise SavedModelError(f"{file.parent}: {file.name} holds no module weights")
    return modules


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:200] if text else type(err).__name__
