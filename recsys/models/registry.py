"""One explicit registry: model name -> the class that implements it ("module:Class", imported on use so
that listing models does not import torch)."""

from __future__ import annotations

import importlib
from typing import Any

from recsys.errors import UserError

_REGISTRY: dict[str, str] = {
    "global_mean": "recsys.models.baselines:GlobalMean",
    "metadata_mean": "recsys.models.baselines:MetadataMean",
    "ridge": "recsys.models.baselines:Ridge",
    "user_ridge": "recsys.models.baselines:UserRidge",
    "oracle": "recsys.models.baselines:Oracle",
    # classical recommenders (recsys/models/mf.py, implicit_models.py, lightfm_model.py, knn.py)
    "mf": "recsys.models.mf:MatrixFactorization",
    "als": "recsys.models.implicit_models:ALS",
    "bpr": "recsys.models.implicit_models:BPR",
    "lightfm": "recsys.models.lightfm_model:LightFMModel",
    "user_knn": "recsys.models.knn:UserKNN",
    "item_knn": "recsys.models.knn:ItemKNN",
    # deep hybrids (recsys/models/two_tower.py, pref_tokens.py, profile.py)
    "two_tower": "recsys.models.two_tower:TwoTower",
    "two_tower_no_prototypes": "recsys.models.two_tower:TwoTowerNoPrototypes",
    "two_tower_no_contrastive": "recsys.models.two_tower:TwoTowerNoContrastive",
    "pref_tokens": "recsys.models.pref_tokens:PrefTokens",
    "pref_tokens_no_pool": "recsys.models.pref_tokens:PrefTokensNoPool",
    "pref_tokens_no_contrastive": "recsys.models.pref_tokens:PrefTokensNoContrastive",
    "profile": "recsys.models.profile:PreferenceProfile",
}

#: named groups accepted wherever a model list is (``--models baselines,deep``)
GROUPS = {
    "baselines": ("global_mean", "metadata_mean", "ridge", "user_ridge", "oracle"),
    "classical": ("mf", "als", "bpr", "lightfm", "user_knn", "item_knn"),
    "deep": ("two_tower", "pref_tokens", "profile"),
    "ablations": ("two_tower_no_prototypes", "two_tower_no_contrastive", "pref_tokens_no_pool",
                  "pref_tokens_no_contrastive"),
}  # fmt: skip
GROUPS["all"] = tuple(name for group in GROUPS.values() for name in group)
BASELINES = GROUPS["baselines"]


def expand_models(names) -> list[str]:
    """Model names with group names (``baselines``, ``classical``, ``deep``, ``ablations``, ``all``) expanded,
    duplicates dropped, order kept; unknown names raise a clear error."""
    out: list[str] = []
    for name in names:
        for member in GROUPS.get(name, (name,)):
            model_class(member)
            if member not in out:
                out.append(member)
    return out


def list_models() -> list[str]:
    """Registered model names, in registry order."""
    return list(_REGISTRY)


def model_class(name: str) -> type:
    """The class registered under ``name``; a clear error listing the names for an unknown one."""
    if name not in _REGISTRY:
        raise UserError(f"unknown model {name!r}; registered models: {', '.join(_REGISTRY)}")
    module, _, attr = _REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def create_model(name: str, **params: Any):
    """A new, unfitted model; bad hyperparameters raise a clear error."""
    cls = model_class(name)
    unknown = sorted(set(params) - set(cls.param_names()))
    if unknown:
        raise UserError(
            f"{name}: unknown parameter(s) {', '.join(unknown)}; it takes {', '.join(cls.param_names()) or 'none'}"
        )
    try:
        return cls(**params)
    except (ValueError, TypeError) as err:
        raise UserError(f"{name}: {err}") from None
