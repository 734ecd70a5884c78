"""Models under one interface (``base.Model``) and one registry (``registry``)."""

from recsys.models.base import Model
from recsys.models.registry import create_model, list_models

__all__ = ["Model", "create_model", "list_models"]
