"""One explicit registry: model name -> the class that implements it ("module:Class", imported on use so that
listing models does not import torch), the extra a model's module needs (``recsys.extras``), plus named
presets of a class's hyperparameters (the ablations)."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from recsys.errors import UserError
from recsys.extras import missing_reason, require
from recsys.models.persistence import SavedModelError, read_config, read_state

_REGISTRY: dict[str, str] = {
    "global_mean": "recsys.models.baselines:GlobalMean",
    "metadata_mean": "recsys.models.baselines:MetadataMean",
    "ridge": "recsys.models.baselines:Ridge",
    "user_ridge": "recsys.models.baselines:UserRidge",
    "oracle": "recsys.models.baselines:Oracle",
    "biases": "recsys.models.biases:Biases",
    "mf": "recsys.models.mf:MatrixFactorization",
    "als": "recsys.models.implicit_models:ALS",
    "bpr": "recsys.models.implicit_models:BPR",
    "lightfm": "recsys.models.lightfm_model:LightFMModel",
    "user_knn": "recsys.models.knn:UserKNN",
    "item_knn": "recsys.models.knn:ItemKNN",
    "two_tower": "recsys.models.two_tower:TwoTower",
    "pref_tokens": "recsys.models.pref_tokens:PrefTokens",
    "profile": "recsys.models.profile:PreferenceProfile",
    "pal": "recsys.models.pal:PalB",
    "pal_a": "recsys.models.pal:PalA",
    "mllm_scorer": "recsys.models.mllm:MLLMScorer",
    "blend": "recsys.models.blend:Blend",
}

#: models that need an extra, checked before their module is imported (the torch models' modules cannot be
#: without it); a model that needs one only in some uses says so itself, as mf on choices does
EXTRA_OF: dict[str, str] = {
    "als": "implicit",
    "bpr": "implicit",
    "lightfm": "implicit",
    "two_tower": "deep",
    "pref_tokens": "deep",
    "pal": "deep",
    "pal_a": "deep",
}

#: named presets: (registered model, the hyperparameters it fixes); the ablations of the deep models
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "two_tower_no_prototypes": ("two_tower", {"use_prototypes": False}),
    "two_tower_no_contrastive": ("two_tower", {"contrastive_weight": 0.0}),
    "pref_tokens_no_pool": ("pref_tokens", {"use_pool": False}),
    "pref_tokens_no_contrastive": ("pref_tokens", {"contrastive_weight": 0.0}),
}

#: named groups accepted wherever a model list is (``--models baselines,deep``)
GROUPS: dict[str, tuple[str, ...]] = {
    "baselines": ("global_mean", "metadata_mean", "ridge", "user_ridge", "oracle"),
    "classical": ("biases", "mf", "als", "bpr", "lightfm", "user_knn", "item_knn"),
    "deep": ("two_tower", "pref_tokens", "profile"),
    "ablations": tuple(PRESETS),
    "mllm": ("mllm_scorer",),
    # models of pairwise choices (they run on ratings too, made into choices); in the default set on choices
    "choices": ("pal", "pal_a"),
    # stacks of other models' predictions, weighted on the validation split
    "ensembles": ("blend",),
}
#: the default set: everything but the MLLM scorer, which needs weights and a GPU
GROUPS["all"] = tuple(
    name for group in ("baselines", "classical", "deep", "ablations", "ensembles") for name in GROUPS[group]
)
BASELINES = GROUPS["baselines"]

#: roles the report asks for instead of names: the ``ceiling`` (the simulator's ground truth: shown, never the
#: best model, not tested) and the ``consensus`` (one score per image for everyone: what the best-of-n uplift of
#: a personal model is compared against)
CEILING, CONSENSUS = "ceiling", "consensus"
ROLES: dict[str, str] = {"oracle": CEILING, "ridge": CONSENSUS}

#: image features, or categorical image metadata standing in for them
IMAGE_INPUT = "image features or metadata"
METADATA = "categorical image metadata"
#: what a model needs beyond ratings or choices; a model whose need the data or machine lacks is a ``skipped``
#: or ``unsupported`` row. No model needs demographics: those with a new-user prior use them when present.
NEEDS: dict[str, tuple[str, ...]] = {
    "metadata_mean": (METADATA,),
    "ridge": (IMAGE_INPUT,),
    "user_ridge": (IMAGE_INPUT,),
    "oracle": ("a simulator's ground truth",),
    "two_tower": (IMAGE_INPUT,),
    "pref_tokens": (IMAGE_INPUT,),
    "profile": (IMAGE_INPUT,),
    "pal": (IMAGE_INPUT,),
    "pal_a": (IMAGE_INPUT,),
    "mllm_scorer": ("the mllm extra", "local weights", "a GPU", "image files"),
}


def expand_models(names) -> list[str]:
    """Model names with group names (``baselines``, ``classical``, ``deep``, ``ablations``, ``mllm``, ``all``)
    expanded, duplicates dropped, order kept; unknown names raise a clear error."""
    out: list[str] = []
    for name in names:
        for member in GROUPS.get(name, (name,)):
            _registered(member)
            if member not in out:
                out.append(member)
    return out


def list_models() -> list[str]:
    """Registered model names and presets, in registry order."""
    return [*_REGISTRY, *PRESETS]


def preset_of(name: str) -> tuple[str, dict[str, Any]]:
    """(registered base model, fixed hyperparameters) of a name; a plain model fixes none."""
    return PRESETS.get(name, (name, {}))


def model_role(name: str) -> str | None:
    """The registry role of a model (``CEILING``, ``CONSENSUS``), or None for an ordinary model."""
    return ROLES.get(name)


def models_with_role(role: str) -> list[str]:
    """The registered names that have ``role``."""
    return [name for name, r in ROLES.items() if r == role]


def model_group(name: str) -> str:
    """The first named group (of baselines, classical, deep, ablations, mllm, choices, ensembles) that holds ``name``."""
    return next((g for g, members in GROUPS.items() if g != "all" and name in members), "-")


def model_needs(name: str) -> tuple[str, ...]:
    """What a model needs beyond ratings or choices: ``NEEDS`` (a preset needs what its base model needs) and
    the extra its module needs (``EXTRA_OF``). Imports nothing."""
    base = _registered(name)
    extra = (f"the {EXTRA_OF[base]} extra",) if base in EXTRA_OF else ()
    return NEEDS.get(name, NEEDS.get(base, ())) + extra


def _registered(name: str) -> str:
    """The registered base model of ``name`` (itself, or a preset's); a clear error listing names otherwise."""
    base, _ = preset_of(name)
    if base not in _REGISTRY:
        raise UserError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    return base


def model_class(name: str) -> type:
    """The class registered under ``name`` (a preset's base class); a clear error listing names otherwise, and
    ``recsys.extras.MissingExtra`` (naming the install command) when its module needs a missing extra."""
    base = _registered(name)
    if base in EXTRA_OF:
        require(EXTRA_OF[base], name)
    module, _, attr = _REGISTRY[base].partition(":")
    return getattr(importlib.import_module(module), attr)


def unavailable_reason(name: str) -> str | None:
    """Why the model cannot run on this machine (one line: a missing extra and its install command, or the
    class's own ``unavailable_reason``), or None when it can. Does not import a module whose extra is missing."""
    base = _registered(name)
    if base in EXTRA_OF and (reason := missing_reason(EXTRA_OF[base], name)):
        return reason
    return model_class(name).unavailable_reason()


def create_model(name: str, **params: Any):
    """A new, unfitted model (a preset's fixed values under ``params``); bad hyperparameters raise a clear error."""
    cls = model_class(name)
    _, fixed = preset_of(name)
    unknown = sorted(set(params) - set(cls.param_names()))
    if unknown:
        raise UserError(
            f"{name}: unknown parameter(s) {', '.join(unknown)}; it takes {', '.join(cls.param_names()) or 'none'}"
        )
    try:
        model = cls(**(fixed | params))
    except (ValueError, TypeError) as err:
        raise UserError(f"{name}: {err}") from None
    model.name = name
    return model


def load_model(path: str | Path, dataset=None):
    """A model saved by ``Model.save``, without refitting; ``SavedModelError`` (one line) if it is unusable.

    Its state is checked against the model's declared ``state_schema`` (``recsys.models.schema``), with the
    dimensions bound by its hyperparameters and, given the ``dataset`` it is loaded for, by that data's sizes
    (a model saved for other data is then refused too)."""
    path = Path(path)
    config = read_config(path)
    try:
        model = create_model(str(config["model"]), **config["params"])
    except UserError as err:
        raise SavedModelError(f"{path}: {err}") from None
    if config.get("class") != type(model).__name__:
        raise SavedModelError(
            f"{path}: holds a {config.get('class')} model, not {config['model']} ({type(model).__name__})"
        )
    sizes = {
        name: value
        for name, value in model.get_params().items()
        if isinstance(value, int) and not isinstance(value, bool)
    }
    if dataset is not None:
        sizes |= {"users": dataset.n_users, "images": dataset.n_images}
        sizes["metadata"] = len(dataset.metadata().names)
        if dataset.image_features is not None:
            sizes["features"] = int(dataset.image_features.shape[1])
    state = read_state(path, model._build_module, model.saved_schema(path), sizes)
    vars(model).update(state)
    model._after_load()
    model.fitted_ = True
    return model
