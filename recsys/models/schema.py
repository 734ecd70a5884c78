"""The declared schema of a model's saved state: what ``state.json`` and ``arrays.npz`` must hold, checked on load.

Each model class declares ``state_schema``: fitted attribute -> spec, merged over its base classes (``Model``
declares the keys every model has). A spec is one of

* an array: ``"float[users, factors+1]"`` (dtype kind ``float``, ``int``, ``bool`` or an exact numpy dtype such
  as ``float32``; a float array must be finite unless written ``float~``), each dimension a number, a size of
  the data (``users``, ``images``, ``features``, ``metadata``), a hyperparameter (``factors``) or any other name
  (bound by its first use, so that every array using it agrees), optionally ``+ n`` or ``- n``; an index array
  adds its bound, ``"int[ratings] < images"``: every value in [0, images), checked when it is read, so that a
  tampered index is refused instead of failing where it is used;
* a sparse matrix: ``"sparse float[users, images]"`` (stored as CSR data, indices and indptr);
* ``"module"``: the weights of a torch module (checked against the module the model builds, in
  ``persistence``);
* a JSON value: ``"float"`` (finite; an integer is accepted), ``"float~"``, ``"int"``, ``"int=images"`` (an
  integer that is also the dimension ``images``), ``"bool"``, ``"str"``,
  ``"None"``, ``"list[float]"``, ``"list[int]"``, ``"list[str]"``, ``"dict"`` (any JSON object), or a dict of
  specs (an object with exactly those keys);
* a ``Record(name, field=spec, ...)``: a ``state_record`` dataclass, its fields checked as above;
* a list of specs: any one of them (``["float[images, images]", "None"]``).

Shapes are checked from the npy header of each array, before its data is read (``persistence``), so that a
tampered header cannot make the reader allocate what the model would never hold.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: sizes of the data a model is fitted on, bound before the state is checked
DATA_SIZES = ("users", "images", "features", "metadata")

_ARRAY = re.compile(r"^(sparse\s+)?([a-z]+[0-9]*)(~?)\[(.*)\](?:\s*<\s*(\S+))?$")
_DIM = re.compile(r"^([A-Za-z_][A-Za-z_0-9]*|\d+)\s*(?:([+-])\s*(\d+))?$")
_KINDS = {"float": "f", "int": "iu", "bool": "b"}


class SchemaMismatch(ValueError):
    """The saved state disagrees with the declared schema; the message names the key (one line)."""


@dataclass(frozen=True)
class Record:
    """Spec of a ``state_record`` dataclass: its class name and a spec per field."""

    name: str
    fields: dict[str, Any] = field(default_factory=dict)

    def __init__(self, name: str, **fields: Any) -> None:
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "fields", fields)


@dataclass(frozen=True)
class ArraySpec:
    """A parsed array spec: dtype (kind letters or an exact dtype), dims, finite, sparse."""

    dtype: str
    dims: tuple[str, ...]
    finite: bool
    sparse: bool
    below: str | None = None  # an index array: every value in [0, below), ``below`` a dimension

    def dtype_ok(self, dtype: np.dtype) -> bool:
        if self.dtype in _KINDS:
            return dtype.kind in _KINDS[self.dtype]
        return dtype == np.dtype(self.dtype)


def parse_array(spec: Any) -> ArraySpec | None:
    """The ``ArraySpec`` of an array or sparse spec string; None for any other spec."""
    if not isinstance(spec, str):
        return None
    match = _ARRAY.match(spec.strip())
    if match is None or match.group(2) in ("list",):
        return None
    dims = tuple(d.strip() for d in match.group(4).split(",") if d.strip())
    return ArraySpec(match.group(2), dims, match.group(3) != "~", bool(match.group(1)), match.group(5))


class Bindings:
    """Values of the dimension names: data sizes and hyperparameters given, the other names bound by first use."""

    def __init__(self, fixed: dict[str, int]) -> None:
        self.values: dict[str, int] = dict(fixed)

    def copy(self) -> Bindings:
        return Bindings(self.values)

    def match(self, dims: tuple[str, ...], shape: tuple[int, ...]) -> str | None:
        """None when ``shape`` fits ``dims`` (binding new names); else what was expected, in words."""
        if len(dims) != len(shape):
            return f"{len(dims)} dimensions [{', '.join(dims)}]"
        trial = dict(self.values)
        for dim, size in zip(dims, shape, strict=True):
            match = _DIM.match(dim)
            if match is None:
                raise ValueError(f"bad dimension {dim!r} in a state schema")
            name, sign, offset = match.groups()
            delta = 0 if sign is None else int(offset) * (1 if sign == "+" else -1)
            if name.isdigit():
                expected = int(name) + delta
            elif name in trial:
                expected = trial[name] + delta
            else:
                trial[name] = size - delta
                continue
            if size != expected:
                return f"[{', '.join(dims)}] = {tuple(self.expected(dims, trial))}"
        self.values = trial
        return None

    @staticmethod
    def expected(dims: tuple[str, ...], values: dict[str, int]) -> list[Any]:
        out: list[Any] = []
        for dim in dims:
            name, sign, offset = _DIM.match(dim).groups()
            base = int(name) if name.isdigit() else values.get(name)
            delta = 0 if sign is None else int(offset) * (1 if sign == "+" else -1)
            out.append("?" if base is None else base + delta)
        return out


def check_value(key: str, value: Any, spec: Any) -> None:
    """A ``SchemaMismatch`` naming ``key`` when the JSON ``value`` is not of the declared kind."""
    if not _value_ok(value, spec):
        raise SchemaMismatch(f"{key} is {_describe(value)}, expected {_spec_words(spec)}")


def _value_ok(value: Any, spec: Any) -> bool:
    if isinstance(spec, list):
        return any(_value_ok(value, s) for s in spec)
    if isinstance(spec, dict):
        return (
            isinstance(value, dict)
            and set(value) == set(spec)
            and all(_value_ok(value[k], s) for k, s in spec.items())
        )
    if spec == "None":
        return value is None
    if spec == "bool":
        return isinstance(value, bool)
    if spec == "int" or (isinstance(spec, str) and spec.startswith("int=")):
        return isinstance(value, int) and not isinstance(value, bool)
    if spec in ("float", "float~"):
        number = isinstance(value, int | float) and not isinstance(value, bool)
        return number and (spec == "float~" or math.isfinite(value))
    if spec == "str":
        return isinstance(value, str)
    if spec == "dict":
        return isinstance(value, dict)
    if isinstance(spec, str) and spec.startswith("list[") and spec.endswith("]"):
        return isinstance(value, list) and all(_value_ok(v, spec[5:-1]) for v in value)
    return False


def is_value_spec(spec: Any) -> bool:
    """True for the specs of JSON values (not arrays, records or modules)."""
    if isinstance(spec, list):
        return all(is_value_spec(s) for s in spec)
    if isinstance(spec, dict):
        return True
    return isinstance(spec, str) and spec != "module" and parse_array(spec) is None


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if isinstance(value, int | float):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return f"a string ({value[:30]!r})"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    return "an object" if isinstance(value, dict) else type(value).__name__


def _spec_words(spec: Any) -> str:
    if isinstance(spec, list):
        return " or ".join(_spec_words(s) for s in spec)
    if isinstance(spec, dict):
        return "an object with " + ", ".join(spec)
    if isinstance(spec, Record):
        return f"a {spec.name} record"
    return {"None": "null", "float~": "a number", "float": "a finite number"}.get(spec, str(spec))


def spec_words(spec: Any) -> str:
    """The spec in words, for messages."""
    return _spec_words(spec)


def renamed_dims(spec: Any, prefix: str) -> Any:
    """``spec`` with every dimension name but the data sizes prefixed by ``prefix``: the schema of a model kept
    inside another (an ensemble's base), whose hyperparameter and free dimensions must not bind the outer
    model's names or another base's."""
    if isinstance(spec, list):
        return [renamed_dims(s, prefix) for s in spec]
    if isinstance(spec, dict):
        return {k: renamed_dims(s, prefix) for k, s in spec.items()}
    if isinstance(spec, Record):
        return Record(spec.name, **{k: renamed_dims(s, prefix) for k, s in spec.fields.items()})
    if not isinstance(spec, str):
        return spec
    if spec.startswith("int="):
        name = spec[4:]
        return spec if name in DATA_SIZES else f"int={prefix}{name}"
    match = _ARRAY.match(spec.strip())
    if match is None or match.group(2) == "list":
        return spec

    def rename(dim: str) -> str:
        name, sign, offset = _DIM.match(dim).groups()
        renamed = name if name.isdigit() or name in DATA_SIZES else prefix + name
        return renamed + ("" if sign is None else f"{sign}{offset}")

    dims = [rename(d.strip()) for d in match.group(4).split(",") if d.strip()]
    below = f" < {rename(match.group(5))}" if match.group(5) else ""
    return f"{match.group(1) or ''}{match.group(2)}{match.group(3)}[{', '.join(dims)}]{below}"


def merged_schema(cls: type) -> dict[str, Any]:
    """``state_schema`` of ``cls`` and its bases, the most derived declaration of a key winning."""
    schema: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        schema.update(vars(klass).get("state_schema", {}))
    return schema
