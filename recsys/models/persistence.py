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

Reading checks the state against the model's declared ``state_schema`` (``recsys.models.schema``): the keys of
``state.json``, the JSON kind of each value, and the dtype and shape of each array from its npy header, with
dimensions bound by the hyperparameters and the sizes of the data the model is loaded for. Only the members of
``arrays.npz`` that the checked state names are opened; each is refused before its data is read when its zip
entry unpacks to more than ``MAX_ARRAY_BYTES`` or is compressed more than ``MAX_COMPRESSION_RATIO`` to one, or
its header disagrees with the schema or declares more than the cap; all of them together are capped by
``MAX_TOTAL_BYTES`` (and half the memory available). Float arrays must be finite unless declared otherwise.
Torch weights are checked by name, dtype and shape against the module the model builds before they are loaded.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import shutil
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from recsys.errors import UserError
from recsys.files import NotARegularFile, read_bytes, read_json, regular_file
from recsys.models.params import available_memory
from recsys.models.schema import (
    ArraySpec,
    Bindings,
    Record,
    SchemaMismatch,
    check_value,
    parse_array,
    spec_words,
)
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


def read_state(
    path: str | Path, build_module, schema: dict[str, Any], sizes: dict[str, int] | None = None
) -> dict[str, Any]:
    """The fitted attributes of a saved model, checked against the model's declared ``schema``
    (``recsys.models.schema``); ``sizes`` binds dimension names (data sizes, hyperparameters) before the check.
    ``build_module(key, state_so_far)`` makes the empty module whose keys and shapes the saved weights must have.

    Only the arrays the checked ``state.json`` names are read from ``arrays.npz``, each after its npy header
    agreed with the schema and the byte caps; any disagreement is one ``SavedModelError`` naming file and key.
    """
    path = Path(path)
    index = _read_json(path, "state.json")
    if not isinstance(index, dict):
        raise SavedModelError(f"{path}: state.json is not a state index")
    missing = [key for key in schema if key not in index]
    if missing:
        raise SavedModelError(f"{path}: state.json has no key {missing[0]} (the model needs it); refit")
    extra = [key for key in index if key not in schema]
    if extra:
        raise SavedModelError(f"{path}: state.json has an unexpected key {str(extra[0])[:60]!r}; refit")
    bindings = Bindings(sizes or {})
    try:
        with _Arrays(path) as arrays:
            plan = {key: _plan(key, index[key], spec, arrays, bindings) for key, spec in schema.items()}
            arrays.check_total()
            state = {
                key: _resolve(entry, arrays) for key, entry in plan.items() if not isinstance(entry, _Module)
            }
    except SchemaMismatch as err:
        raise SavedModelError(f"{path}: {err}; refit") from None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, KeyError) as err:
        raise SavedModelError(f"{path}: arrays.npz is unreadable ({_first_line(err)})") from None
    pending = [key for key, entry in plan.items() if isinstance(entry, _Module)]
    if pending:
        modules = _read_torch(path / "modules.pt") if (path / "modules.pt").exists() else {}
        for key in pending:  # modules last: their shapes come from the other state
            state[key] = _load_module(path, key, modules, build_module, state)
    return state


# ------------------------------------------------------------------------------------- checked reading
#: the largest array (bytes, as its npy header declares it) read from a saved model
MAX_ARRAY_BYTES = 16 * 2**30
#: the most bytes of arrays read from one saved model (also at most half the memory available)
MAX_TOTAL_BYTES = 64 * 2**30
#: the largest uncompressed / compressed size of a compressed npz member (the suite writes them uncompressed)
MAX_COMPRESSION_RATIO = 100
#: the largest npy header read (numpy's own default)
MAX_HEADER_BYTES = 10_000


@dataclasses.dataclass
class _Module:
    key: str


@dataclasses.dataclass
class _Pending:
    """An array whose header was checked; its data is read once every header passed."""

    member: str
    finite: bool
    below: int | None = None


@dataclasses.dataclass
class _PendingSparse:
    key: str
    shape: tuple[int, int]
    finite: bool


@dataclasses.dataclass
class _PendingRecord:
    cls: type
    fields: dict[str, Any]


class _Arrays:
    """The members of ``arrays.npz`` that the schema names, headers first: never a member it does not name."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.total = 0
        self.handle = None
        self.zip: zipfile.ZipFile | None = None

    def __enter__(self) -> _Arrays:
        file = self.path / "arrays.npz"
        try:
            regular_file(file, "a saved model's arrays")
        except FileNotFoundError:
            raise SavedModelError(f"{self.path}: arrays.npz is missing") from None
        except NotARegularFile as err:
            raise SavedModelError(str(err)) from None
        self.handle = open(file, "rb")  # noqa: SIM115 - closed by __exit__
        try:
            self.zip = zipfile.ZipFile(self.handle)  # reads the central directory only
        except BaseException:
            self.handle.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.zip is not None:
            self.zip.close()
        if self.handle is not None:
            self.handle.close()

    def header(self, member: str, spec: ArraySpec, dims: tuple[str, ...], bindings: Bindings) -> tuple:
        """(shape, dtype) of ``member`` from its npy header, checked against the spec and the caps."""
        where = f"arrays.npz: {member}"
        try:
            info = self.zip.getinfo(f"{member}.npy")
        except KeyError:
            raise SchemaMismatch(f"{where} is missing") from None
        cap = self.cap()
        if info.file_size > cap + MAX_HEADER_BYTES:
            raise SchemaMismatch(f"{where} unpacks to {info.file_size} bytes, over the cap of {cap}")
        if info.compress_type != zipfile.ZIP_STORED and info.file_size > MAX_COMPRESSION_RATIO * max(
            info.compress_size, 1
        ):
            raise SchemaMismatch(
                f"{where} is compressed {info.file_size // max(info.compress_size, 1)}:1, over "
                f"{MAX_COMPRESSION_RATIO}:1 (a decompression bomb?)"
            )
        with self.zip.open(info) as stream:
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(
                    stream, max_header_size=MAX_HEADER_BYTES
                )
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(
                    stream, max_header_size=MAX_HEADER_BYTES
                )
            else:
                raise SchemaMismatch(f"{where} has npy format {version}, not 1.0 or 2.0")
        if dtype.hasobject:
            raise SchemaMismatch(f"{where} holds Python objects; refused")
        if not spec.dtype_ok(dtype):
            raise SchemaMismatch(f"{where} has dtype {dtype}, expected {spec.dtype}")
        expected = bindings.match(dims, tuple(shape))
        if expected is not None:
            raise SchemaMismatch(f"{where} has shape {tuple(shape)}, expected {expected}")
        size = math.prod(shape) * dtype.itemsize
        if size > cap:
            raise SchemaMismatch(f"{where} declares {size} bytes, over the cap of {cap}")
        self.total += size
        return tuple(shape), dtype

    def cap(self) -> int:
        return min(MAX_ARRAY_BYTES, self.total_cap())

    @staticmethod
    def total_cap() -> int:
        available = available_memory()
        return MAX_TOTAL_BYTES if available is None else min(MAX_TOTAL_BYTES, available // 2)

    def check_total(self) -> None:
        if self.total > self.total_cap():
            raise SchemaMismatch(
                f"arrays.npz declares {self.total} bytes in all, over the cap of {self.total_cap()}"
            )

    def read(self, member: str, finite: bool, below: int | None = None) -> np.ndarray:
        with self.zip.open(f"{member}.npy") as stream:
            array = np.lib.format.read_array(stream, allow_pickle=False, max_header_size=MAX_HEADER_BYTES)
        if finite and array.dtype.kind in "fc" and not np.isfinite(array).all():
            raise SchemaMismatch(f"arrays.npz: {member} holds non-finite values")
        if below is not None and array.size and (array.min() < 0 or array.max() >= below):
            raise SchemaMismatch(f"arrays.npz: {member} holds indices outside [0, {below})")
        return array


def _plan(key: str, entry: Any, spec: Any, arrays: _Arrays, bindings: Bindings) -> Any:
    """``entry`` of ``state.json`` checked against ``spec`` (array headers included); what ``_resolve`` reads."""
    if isinstance(spec, list):  # any one of the alternatives, the first that fits
        errors = []
        for alternative in spec:
            trial, total = bindings.copy(), arrays.total
            try:
                planned = _plan(key, entry, alternative, arrays, trial)
            except SchemaMismatch as err:
                errors.append((_entry_kind(entry) == _spec_kind(alternative), err))
                arrays.total = total  # the bytes of an alternative that did not fit are not read
                continue
            bindings.values = trial.values
            return planned
        same_kind = [err for fits, err in errors if fits]
        if same_kind:
            raise same_kind[0]
        raise SchemaMismatch(f"state.json: {key} is {_entry_words(entry)}, expected {spec_words(spec)}")
    kind = _spec_kind(spec)
    if _entry_kind(entry) != kind:
        raise SchemaMismatch(f"state.json: {key} is {_entry_words(entry)}, expected {spec_words(spec)}")
    if kind == "value":
        check_value(f"state.json: {key}", entry["value"], spec)
        if isinstance(spec, str) and spec.startswith("int="):  # an integer that is also a dimension
            expected = bindings.match((spec[4:],), (entry["value"],))
            if expected is not None:
                raise SchemaMismatch(f"state.json: {key} is {entry['value']}, expected {expected}")
        return entry["value"]
    if kind == "module":
        if entry != {"module": key}:
            raise SchemaMismatch(f"state.json: {key} names other module weights")
        return _Module(key)
    if kind == "record":
        if entry.get("record") != spec.name or not isinstance(entry.get("fields"), dict):
            raise SchemaMismatch(f"state.json: {key} is not a {spec.name} record")
        if set(entry["fields"]) != set(spec.fields):
            raise SchemaMismatch(
                f"state.json: {key} has fields {sorted(entry['fields'])}, expected {list(spec.fields)}"
            )
        fields = {
            name: _plan(f"{key}.{name}", entry["fields"][name], field_spec, arrays, bindings)
            for name, field_spec in spec.fields.items()
        }
        return _PendingRecord(_RECORDS[spec.name], fields)
    array = parse_array(spec)
    if kind == "array":
        if entry != {"array": key}:
            raise SchemaMismatch(f"state.json: {key} names another array")
        arrays.header(key, array, array.dims, bindings)
        below = None
        if array.below is not None:
            (bound,) = bindings.expected((array.below,), bindings.values)
            if bound == "?":
                raise SchemaMismatch(f"state.json: {key}'s bound {array.below} is not known when it is read")
            below = int(bound)
        return _Pending(key, array.finite, below)
    shape = entry.get("shape")
    if set(entry) != {"sparse", "shape"} or entry["sparse"] != key or not _ints(shape, 2):
        raise SchemaMismatch(f"state.json: {key} is not a sparse matrix entry")
    expected = bindings.match(array.dims, tuple(shape))
    if expected is not None:
        raise SchemaMismatch(f"state.json: {key} has shape {tuple(shape)}, expected {expected}")
    (nnz,), _ = arrays.header(f"{key}.data", array, ("nnz",), Bindings({}))
    arrays.header(f"{key}.indices", parse_array("int[]"), ("nnz",), Bindings({"nnz": nnz}))
    arrays.header(f"{key}.indptr", parse_array("int[]"), ("rows",), Bindings({"rows": shape[0] + 1}))
    return _PendingSparse(key, (shape[0], shape[1]), array.finite)


def _resolve(entry: Any, arrays: _Arrays) -> Any:
    """The value of a planned entry: its arrays read, its records built."""
    if isinstance(entry, _Pending):
        return arrays.read(entry.member, entry.finite, entry.below)
    if isinstance(entry, _PendingSparse):
        parts = [arrays.read(f"{entry.key}.{p}", entry.finite) for p in ("data", "indices", "indptr")]
        matrix = sp.csr_matrix(tuple(parts), shape=entry.shape)
        try:
            matrix.check_format(full_check=True)
        except ValueError as err:
            raise SchemaMismatch(
                f"arrays.npz: {entry.key} is not a valid sparse matrix ({_first_line(err)})"
            ) from None
        return matrix
    if isinstance(entry, _PendingRecord):
        return entry.cls(**{name: _resolve(value, arrays) for name, value in entry.fields.items()})
    return entry


def _load_module(path: Path, key: str, modules: dict, build_module, state: dict[str, Any]) -> Any:
    """The module of ``key``: built from the checked state, its saved tensors checked by name and shape first."""
    import torch

    saved = modules.get(key)
    if saved is None:
        raise SavedModelError(f"{path}: modules.pt has no weights for {key}; refit")
    try:
        module = build_module(key, state)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise SavedModelError(
            f"{path}: {key} cannot be built from the saved state ({_first_line(err)})"
        ) from None
    expected = module.state_dict()
    for name, tensor in expected.items():
        value = saved.get(name)
        if not isinstance(value, torch.Tensor):
            raise SavedModelError(f"{path}: modules.pt: {key}.{name} is missing; refit")
        if tuple(value.shape) != tuple(tensor.shape) or value.dtype != tensor.dtype:
            raise SavedModelError(
                f"{path}: modules.pt: {key}.{name} is {value.dtype} {tuple(value.shape)}, expected "
                f"{tensor.dtype} {tuple(tensor.shape)}; refit"
            )
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise SavedModelError(f"{path}: modules.pt: {key}.{name} holds non-finite values; refit")
    extra = [name for name in saved if name not in expected]
    if extra:
        raise SavedModelError(
            f"{path}: modules.pt: {key} has an unexpected tensor {str(extra[0])[:60]!r}; refit"
        )
    module.load_state_dict(saved, strict=True)
    module.eval()
    return module


def _spec_kind(spec: Any) -> str:
    if isinstance(spec, Record):
        return "record"
    if spec == "module":
        return "module"
    array = parse_array(spec)
    if array is None:
        return "value"
    return "sparse" if array.sparse else "array"


def _entry_kind(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return None
    kinds = [k for k in ("array", "sparse", "record", "module", "value") if k in entry]
    return kinds[0] if len(kinds) == 1 else None


def _entry_words(entry: Any) -> str:
    kind = _entry_kind(entry)
    if kind == "value":
        return f"the value {str(entry['value'])[:40]!r}"
    return f"a saved {kind}" if kind else "not a state entry"


def _ints(value: Any, n: int) -> bool:
    return (
        isinstance(value, list)
        and len(value) == n
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
    )


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

    cap = _Arrays.total_cap()
    try:
        size = file.stat().st_size
    except OSError as err:
        raise SavedModelError(f"{file.parent}: {file.name} is unreadable ({_first_line(err)})") from None
    if size > cap:  # torch reads the whole file into memory: refused before a byte of it is read
        raise SavedModelError(f"{file.parent}: {file.name} holds {size} bytes, over the cap of {cap}; refit")
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
