"""Hyperparameters declared once: a frozen dataclass per model gives defaults, validation and get_params.

A model declares its hyperparameters as a nested ``Params`` class (made a frozen dataclass on definition) whose
fields use :func:`hyper` and its shorthands::

    class Params(Hyperparameters):
        factors: int = hyper(16, low=1, doc="latent dimensions")
        reg: float = hyper(5.0, low=0, low_open=True)
        loss: str = hyper("warp", choices=("warp", "bpr"))

Validation follows the annotations (``int``, ``float``, ``bool``, ``str``, ``tuple[int, ...]``) and the bounds,
and raises ``ValueError`` with a message that names the parameter, what it must be and the value given.
"""

from __future__ import annotations

import math
import typing
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

import numpy as np


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
            _check_range(f.name, value, f.metadata)
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
