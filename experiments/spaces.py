"""Search spaces as data: one ``experiments/spaces/<model>.toml`` per registered model.

Each top-level table names a constructor hyperparameter of the model::

    [alpha]
    type = "float"      # "float" | "int" | "categorical"
    low = 0.01
    high = 1000.0
    log = true          # optional, float and int only (needs low > 0)
    # step = 2          # optional, int only (not with log)

    [loss]
    type = "categorical"
    choices = ["mse", "huber"]

Parameters not listed keep the model's defaults. A model without hyperparameters has an empty file. Files are
validated on load against ``model_class(name).param_names()`` and the model's defaults (trial 0 of every study
is the defaults, so they must lie inside the space).

A preset (an ablation, see ``recsys.models.registry.PRESETS``) extends its parent's space instead of copying
it: ``extends = "two_tower"`` takes the parent's tables, ``drop = ["n_prototypes"]`` removes parameters the
preset leaves unused, and tables in the file add or replace parameters. The values a preset fixes are never
searched.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recsys.errors import UserError
from recsys.models.registry import model_class, preset_of

SPACES_DIR = Path(__file__).resolve().parent / "spaces"
TYPES = ("float", "int", "categorical")
_KEYS = {
    "float": {"type", "low", "high", "log"},
    "int": {"type", "low", "high", "log", "step"},
    "categorical": {"type", "choices"},
}


@dataclass(frozen=True)
class Param:
    """One searched hyperparameter."""

    name: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: int | None = None
    choices: tuple[Any, ...] = ()

    def contains(self, value: Any) -> bool:
        """True when ``value`` is a point of this dimension."""
        if self.type == "categorical":
            return any(type(value) is type(c) and value == c for c in self.choices)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.type == "int" and (not float(value).is_integer()):
            return False
        return self.low <= value <= self.high


@dataclass(frozen=True)
class SearchSpace:
    """The searched hyperparameters of one model and its defaults (trial 0)."""

    model: str
    path: Path
    params: dict[str, Param]
    defaults: dict[str, Any]

    def default_point(self) -> dict[str, Any]:
        """The model's defaults restricted to the searched parameters (what trial 0 evaluates)."""
        return {name: self.defaults[name] for name in self.params}


def space_path(model: str, spaces_dir: Path | None = None) -> Path:
    return (spaces_dir or SPACES_DIR) / f"{model}.toml"


def model_defaults(model: str) -> dict[str, Any]:
    """The default values of a model's hyperparameters (a preset's fixed values included)."""
    return model_class(model).Params.defaults() | preset_of(model)[1]


def load_space(model: str, spaces_dir: Path | None = None) -> SearchSpace:
    """Load and validate the search space of a registered model.

    Raises ``UserError`` naming the file (and the key) for a missing file, bad TOML, an unknown parameter,
    an unknown type or key, a bad range, or a default outside the space.
    """
    cls = model_class(model)  # unknown model: a clear error listing the registered ones
    path = space_path(model, spaces_dir)
    if not path.is_file():
        raise UserError(f"no search space for model {model!r}: create {path} (one table per hyperparameter)")
    data = _read_toml(path)
    extends, drop = data.pop("extends", None), data.pop("drop", [])
    if extends is not None:
        if extends != preset_of(model)[0] or extends == model:
            raise UserError(
                f"{path}: extends = {extends!r}, but {model} is a preset of {preset_of(model)[0]!r}"
            )
        if not isinstance(drop, list) or not all(isinstance(d, str) for d in drop):
            raise UserError(f"{path}: drop must be a list of parameter names")
        parent = _read_toml(space_path(extends, spaces_dir))
        unknown = sorted(set(drop) - set(parent))
        if unknown:
            raise UserError(
                f"{path}: drop names {', '.join(unknown)}, which {extends}'s space does not search"
            )
        fixed = preset_of(model)[1]
        data = {k: v for k, v in parent.items() if k not in drop and k not in fixed} | data
    elif drop:
        raise UserError(f"{path}: drop needs extends = PARENT")
    names = cls.param_names()
    defaults = model_defaults(model)
    params: dict[str, Param] = {}
    for name, table in data.items():
        where = f"{path}: [{name}]"
        if name not in names:
            raise UserError(
                f"{where}: {model} has no parameter {name!r}; it takes {', '.join(names) or 'none'}"
            )
        if not isinstance(table, dict):
            raise UserError(f'{where}: expected a table with type = "float"|"int"|"categorical"')
        params[name] = _param(name, table, where)
        if name not in defaults:
            raise UserError(
                f"{where}: {model}.{name} has no default, so trial 0 (the defaults) cannot be run"
            )
        if not params[name].contains(defaults[name]):
            raise UserError(
                f"{where}: the default {defaults[name]!r} lies outside the space; widen it so trial 0 (the "
                "defaults) is a point of the search"
            )
    return SearchSpace(model=model, path=path, params=params, defaults=defaults)


def _read_toml(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"no search space file {path}")
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise UserError(f"{path}: not valid TOML ({err})") from None


def _param(name: str, table: dict, where: str) -> Param:
    kind = table.get("type")
    if kind not in TYPES:
        raise UserError(f"{where}: type must be one of {', '.join(TYPES)}, got {kind!r}")
    unknown = sorted(set(table) - _KEYS[kind])
    if unknown:
        raise UserError(
            f"{where}: unknown key(s) {', '.join(unknown)} for type {kind!r}; allowed: {', '.join(sorted(_KEYS[kind]))}"
        )
    if kind == "categorical":
        choices = table.get("choices")
        if not isinstance(choices, list) or not choices:
            raise UserError(f"{where}: categorical needs a non-empty list `choices`")
        if any(isinstance(c, dict | list) for c in choices):
            raise UserError(f"{where}: choices must be numbers, strings or booleans")
        return Param(name, kind, choices=tuple(choices))
    low, high = table.get("low"), table.get("high")
    for key, value in (("low", low), ("high", high)):
        if value is None:
            raise UserError(f"{where}: missing `{key}`")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise UserError(f"{where}: `{key}` must be a finite number, got {value!r}")
        if kind == "int" and not isinstance(value, int):
            raise UserError(f'{where}: `{key}` must be an integer for type "int", got {value!r}')
    if not low < high:
        raise UserError(f"{where}: low ({low}) must be below high ({high})")
    log = table.get("log", False)
    if not isinstance(log, bool):
        raise UserError(f"{where}: `log` must be true or false, got {log!r}")
    if log and low <= 0:
        raise UserError(f"{where}: log = true needs low > 0, got {low}")
    step = table.get("step")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, int) or step < 1:
            raise UserError(f"{where}: `step` must be a positive integer, got {step!r}")
        if log:
            raise UserError(f"{where}: `step` cannot be combined with log = true")
    if kind == "float":
        low, high = float(low), float(high)
    return Param(name, kind, low=low, high=high, log=log, step=step)


def check_all_spaces(
    models: list[str] | None = None, spaces_dir: Path | None = None
) -> dict[str, SearchSpace]:
    """Load every registered model's space (or ``models``); the first problem raises ``UserError``."""
    from recsys.models.registry import list_models

    return {name: load_space(name, spaces_dir) for name in (models or list_models())}
