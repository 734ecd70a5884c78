"""The optional parts of the suite, installed as extras of ``recsys-pamela``, and the one-line error that names
the install command when one is missing.

    deep         torch, open_clip: two_tower, pref_tokens, pal, pal_a (and mf on pairwise choices); image embedding
                 (``recsys features``, ``--encoder``, ranking new image files)
    implicit     implicit, LightFM: als, bpr, lightfm
    faiss        FAISS: the index of similar-users, similar-images and the service
    serve        FastAPI, uvicorn (and FAISS): ``recsys serve``
    experiments  Optuna, MLflow: ``recsys tune``, ``recsys study``, ``--tuned``, tracking in MLflow
    mllm         transformers: the MLLM scorer

A plain ``pip install recsys-pamela`` runs the data tools, the leaderboard, the baselines and the models of
numpy and SciPy (biases, mf, user_knn, item_knn, profile); ``[all]`` installs the extras above but mllm
(pyproject also has ``gpu`` and ``bench``, which no module of the suite imports). Checks look modules up
without importing them (``importlib.util.find_spec``), so asking is cheap.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from recsys.errors import UserError

#: the distribution whose extras these are
DISTRIBUTION = "recsys-pamela"

#: extra -> the top-level modules it provides (the ones the suite imports)
EXTRAS: dict[str, tuple[str, ...]] = {
    "deep": ("torch", "open_clip", "safetensors"),
    "implicit": ("implicit", "lightfm"),
    "faiss": ("faiss",),
    "serve": ("fastapi", "uvicorn", "starlette", "pydantic", "faiss"),
    "experiments": ("optuna", "mlflow", "sqlalchemy"),
    "mllm": ("transformers",),
}


class MissingExtra(UserError):
    """A part of the suite needs an extra that is not installed; the message names the pip command."""


def install_command(extra: str) -> str:
    """``pip install "recsys-pamela[extra]"``."""
    if extra not in EXTRAS:
        raise KeyError(f"unknown extra {extra!r}; extras: {', '.join(EXTRAS)}")
    return f'pip install "{DISTRIBUTION}[{extra}]"'


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a module set to None in sys.modules, or a finder that refuses it
        return False


def missing_modules(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be found (none when the extra is installed)."""
    if extra not in EXTRAS:
        raise KeyError(f"unknown extra {extra!r}; extras: {', '.join(EXTRAS)}")
    return [module for module in EXTRAS[extra] if not _installed(module)]


def missing_reason(extra: str, what: str, modules: list[str] | None = None) -> str | None:
    """Why ``what`` cannot run (one line naming the install command), or None when ``extra`` is installed."""
    missing = missing_modules(extra) if modules is None else modules
    if not missing:
        return None
    verb = "is" if len(missing) == 1 else "are"
    return f"{what} needs the {extra} extra ({', '.join(missing)} {verb} not installed): {install_command(extra)}"


def require(extra: str, what: str, hint: str = "") -> None:
    """Raise ``MissingExtra`` (one line; ``hint`` appended, e.g. ", or pass --no-tracking") when ``extra`` is
    not installed."""
    reason = missing_reason(extra, what)
    if reason is not None:
        raise MissingExtra(reason + hint)


def import_extra(extra: str, module: str, what: str) -> ModuleType:
    """``module`` (one of ``extra``'s), imported; ``MissingExtra`` naming the install command when it is not
    installed."""
    require(extra, what)
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:  # found but broken: one of its own dependencies is missing
        raise MissingExtra(missing_reason(extra, what, [err.name or module]) or str(err)) from None


def extra_providing(module: str | None) -> str | None:
    """The extra that provides the top-level package of ``module`` (``torch.nn`` -> deep), or None."""
    top = (module or "").partition(".")[0]
    return next((extra for extra, modules in EXTRAS.items() if top in modules), None)


class LazyModule:
    """A stand-in for an optional module that imports it on first attribute access (``MissingExtra`` naming the
    install command when its extra is missing), so that a module using it throughout still imports without it:
    ``faiss = LazyModule("faiss", "faiss", "the FAISS index")`` at the top, ``faiss.IndexFlatIP(d)`` below."""

    def __init__(self, extra: str, module: str, what: str) -> None:
        self._extra, self._module, self._what = extra, module, what
        self._loaded: ModuleType | None = None

    def __getattr__(self, name: str):
        if name in ("_extra", "_module", "_what", "_loaded"):  # own attributes, before __init__ sets them
            raise AttributeError(name)
        if self._loaded is None:
            self._loaded = import_extra(self._extra, self._module, self._what)
        return getattr(self._loaded, name)

    def __repr__(self) -> str:
        state = "imported" if self._loaded is not None else "not imported yet"
        return f"<lazy module {self._module!r} of the {self._extra} extra, {state}>"
