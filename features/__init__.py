"""Features: image and prompt embeddings from open_clip encoders (cached, resumable); the encoders of user
demographics (``recsys.data.demographics``, where the data layer uses them) are re-exported here.

Importing this package is cheap; torch and open_clip load only when an embedding function is used.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BadImage",
    "ClipEncoder",
    "Embeddings",
    "PamelaUserEncoder",
    "TabularEncoder",
    "embed_dataset",
    "embed_dataset_features",
    "embed_image_bytes",
    "embed_images",
    "embed_pickapic",
    "embed_texts",
    "list_encoders",
    "load_encoder",
    "parse_encoder_name",
    "user_feature_encoder_for",
]

_HOMES = {
    "BadImage": "features.embed",
    "Embeddings": "features.embed",
    "embed_dataset": "features.embed",
    "embed_dataset_features": "features.embed",
    "embed_image_bytes": "features.embed",
    "embed_images": "features.embed",
    "embed_pickapic": "features.embed",
    "embed_texts": "features.embed",
    "ClipEncoder": "features.encoders",
    "list_encoders": "features.encoders",
    "load_encoder": "features.encoders",
    "parse_encoder_name": "features.encoders",
    "PamelaUserEncoder": "recsys.data.demographics",
    "TabularEncoder": "recsys.data.demographics",
    "user_feature_encoder_for": "recsys.data.demographics",
}


def __getattr__(name: str) -> Any:
    # lazy: importing `features` (e.g. for `recsys --help`) must not pull in torch
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'features' has no attribute {name!r}")
