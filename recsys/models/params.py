"""Hyperparameters declared once: a frozen dataclass per model gives defaults, validation and get_params.

A model declares its hyperparameters as a nested ``Params`` class (made a frozen dataclass on definition) whose
fields use :func:`hyper` and its shorthands::

    class Params(Hyperparameters):
        factors: int = hyper(16, low=1, doc="latent dimensions")
        reg: float = hyper(5.0, low=0, low_open=True)
        loss: str = hyper("warp", choices=("warp", "bpr"))

Validation follows the annotations (``int``, ``float``, ``bool``, ``str``, ``tuple[int, ...]``) and the bounds,
and raises ``ValueError`` with a message that names the parameter, what it must be and the value given.

Upper bounds: the size-like hyperparameters every model shares by name (``factors``, ``dim``, ``epochs``, ...)
have one declared maximum here (``SIZE_BOUNDS``), far above any useful value, so that a typo or a tampered study
(``factors=100000000``) is refused before anything is allocated; any other integer stays within 32 bits. A field
declares its own ``high`` where it needs a tighter one. Within the bounds, ``check_memory`` estimates the bytes a
fit will hold (``Hyperparameters.memory_bytes``) and refuses, in one line, a fit that cannot fit in the memory
available, before the model allocates anything.
"""

from __future__ import annotations

import math
import typing
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, NamedTuple

import numpy as np

from recsys.errors import UserError

#: (low, high) of the size-like hyperparameters, by name, for every model that has them (None: as declared)
SIZE_BOUNDS: dict[str, tuple[int | None, int]] = {
    "factors": (None, 1024),
    "dim": (None, 4096),
    "hidden": (None, 8192),
    "n_prototypes": (None, 1024),
    "pool_size": (None, 1024),
    "n_selected": (None, 1024),
    "n_directions": (None, 1024),
    "epochs": (None, 10_000),
    "iterations": (None, 10_000),
    "patience": (None, 10_000),
    "foldin_steps": (None, 100_000),
    "batch_size": (None, 1_000_000),
    "batch_users": (None, 100_000),
    "n_queries": (None, 100_000),
    "k": (None, 100_000),
    "image_k": (None, 100_000),
    "pairs_per_rating": (None, 1_000),
    "max_pairs": (None, 64),
    "cluster_sizes": (None, 100_000),
    "seed": (0, 2**32 - 1),  # what every random generator the models use accepts
}
#: the bound of any other integer hyperparameter
MAX_INT = 2**31 - 1
#: hyperparameters that set the width of a table with one row per user, per image and per image feature
WIDTHS = ("factors", "dim", "hidden", "n_prototypes", "pool_size")
#: copies of those tables a fit holds at once (values, gradients or the best epoch's copy, optimiser state)
TABLE_COPIES = 4


def hyper(
    default: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    choices: tuple | None = None,
    doc: str = "",
) -> Any:
    """A hyperparameter field: its default, its valid range or choices, and a one-line description."""
    meta = {
        "low": low,
        "high": high,
        "low_open": low_open,
        "high_open": high_open,
        "choices": choices,
        "doc": doc,
    }
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class Hyperparameters:
    """Base of every model's ``Params``: checks and normalises each value after construction.

    A subclass is made a frozen dataclass when it is defined, so a model writes ``class Params(Hyperparameters)``
    and its fields only.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        dataclass(frozen=True)(cls)

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            value = _coerce(f.name, hints[f.name], getattr(self, f.name))
            _check_range(f.name, value, bounds(f.name, f.metadata, hints[f.name]))
            object.__setattr__(self, f.name, value)
        self.validate()

    def validate(self) -> None:
        """Checks that involve several hyperparameters (raise ValueError); none by default."""

    @classmethod
    def names(cls) -> list[str]:
        """The hyperparameter names, in declaration order."""
        return [f.name for f in fields(cls)]

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Every hyperparameter's default value."""
        return {f.name: f.default for f in fields(cls) if f.default is not MISSING}

    @classmethod
    def describe(cls, name: str) -> str:
        """The one-line description of a hyperparameter (empty when none was given)."""
        return next(f.metadata.get("doc", "") for f in fields(cls) if f.name == name)

    def as_dict(self) -> dict[str, Any]:
        """The values, by name (tuples stay tuples)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def memory_bytes(self, sizes: DataSizes) -> int:
        """About how many bytes a fit with these values holds at its peak: ``TABLE_COPIES`` float64 tables,
        one row per user, image and image feature, as wide as the ``WIDTHS`` hyperparameters together. A model
        that also holds something larger (ALS's per-row normal equations) adds it in its own ``Params``."""
        width = sum(getattr(self, name) for name in WIDTHS if name in self.names())
        return TABLE_COPIES * 8 * width * (sizes.users + sizes.images + sizes.features)

    def width_names(self) -> list[str]:
        """The ``WIDTHS`` hyperparameters this model has (what to lower when a fit is too large)."""
        return [name for name in WIDTHS if name in self.names()]


class DataSizes(NamedTuple):
    """What a fit's tables scale with: users, images, image features (columns of the features) and ratings."""

    users: int
    images: int
    features: int = 0
    ratings: int = 0


class MemoryEstimateError(UserError):
    """A fit that would need more memory than is available, refused before it allocates."""


def available_memory() -> int | None:
    """Bytes of memory this process can still take: MemAvailable (/proc/meminfo), lowered to what is left of a
    cgroup limit (containers); None where neither can be read."""
    found: list[int] = []
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as limit, open("/sys/fs/cgroup/memory.current") as used:
            cap = limit.read().strip()
            if cap != "max":
                found.append(max(0, int(cap) - int(used.read().strip())))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_memory(model: str, params: Hyperparameters, sizes: DataSizes, available: int | None = None) -> None:
    """Refuse (``MemoryEstimateError``, one line) a fit whose ``params.memory_bytes(sizes)`` exceeds the memory
    available (``available_memory()`` unless given), naming the values to lower."""
    needed = params.memory_bytes(sizes)
    available = available_memory() if available is None else available
    if available is None or needed <= available:
        return
    widths = ", ".join(f"{name}={getattr(params, name)}" for name in params.width_names()) or "its settings"
    raise MemoryEstimateError(
        f"{model}: {widths} needs about {_gib(needed)} of memory for {sizes.users:,} users, {sizes.images:,} "
        f"images and {sizes.features:,} image features, more than the {_gib(available)} available; lower "
        f"{'/'.join(params.width_names()) or 'its sizes'}"
    )


def _coerce(name: str, kind: Any, value: Any) -> Any:
    """``value`` checked against the annotation ``kind`` and converted to its plain Python type."""
    if kind is bool:
        if not isinstance(value, bool | np.bool_):
            raise ValueError(f"{name} must be true or false, got {value!r}")
        return bool(value)
    if kind is int:
        if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
            raise ValueError(f"{name} must be an integer, got {value!r}")
        return int(value)
    if kind is float:
        if isinstance(value, bool | np.bool_) or not isinstance(
            value, int | float | np.integer | np.floating
        ):
            raise ValueError(f"{name} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{name} must be finite, got {value!r}")
        return float(value) if isinstance(value, np.floating) else value
    if kind is str:
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string, got {value!r}")
        return value
    if typing.get_origin(kind) is tuple:
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise ValueError(f"{name} must be a list, got {value!r}")
        (item,) = typing.get_args(kind)[:1]
        return tuple(_coerce(f"each value of {name}", item, v) for v in value)
    raise TypeError(f"{name}: unsupported hyperparameter type {kind!r}")


def bounds(name: str, meta: typing.Mapping[str, Any], kind: Any) -> dict[str, Any]:
    """The field's declared range, with the shared ``SIZE_BOUNDS`` (or ``MAX_INT`` for other integers) where
    it declares no ``high`` (or no ``low``)."""
    out = dict(meta)
    integers = kind is int or (typing.get_origin(kind) is tuple and typing.get_args(kind)[:1] == (int,))
    if not integers:
        return out
    low, high = SIZE_BOUNDS.get(name, (None, MAX_INT))
    if out.get("high") is None:
        out["high"], out["high_open"] = high, False
    if out.get("low") is None and low is not None:
        out["low"], out["low_open"] = low, False
    return out


def _check_range(name: str, value: Any, meta: typing.Mapping[str, Any]) -> None:
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}, got {value!r}")
    values = value if isinstance(value, tuple) else (value,)
    low, high = meta.get("low"), meta.get("high")
    for v in values:
        if isinstance(v, bool | str):
            continue
        if low is not None and (v <= low if meta.get("low_open") else v < low):
            raise ValueError(f"{name} must be {'>' if meta.get('low_open') else '>='} {low}, got {value!r}")
        if high is not None and (v >= high if meta.get("high_open") else v > high):
            raise ValueError(f"{name} must be {'<' if meta.get('high_open') else '<='} {high}, got {value!r}")


#: shorthands for the common cases
def positive(default: float, doc: str = "") -> Any:
    """A number > 0."""
    return hyper(default, low=0, low_open=True, doc=doc)


def non_negative(default: float, doc: str = "") -> Any:
    """A number >= 0."""
    return hyper(default, low=0, doc=doc)


def at_least_one(default: int, doc: str = "") -> Any:
    """An integer >= 1."""
    return hyper(default, low=1, doc=doc)


DEVICES = ("auto", "cpu", "cuda")
