"""Hyperparameters declared once: validation messages, get_params/clone, presets."""

from __future__ import annotations

import pytest

from recsys.errors import UserError
from recsys.models import create_model, list_models
from recsys.models.registry import PRESETS, model_class


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("mf", {"factors": 0}, "factors must be >= 1, got 0"),
        ("mf", {"factors": 2.5}, "factors must be an integer, got 2.5"),
        ("mf", {"factors": True}, "factors must be an integer, got True"),
        ("mf", {"reg": 0.0}, "reg must be > 0, got 0.0"),
        ("mf", {"reg": "5"}, "reg must be a number, got '5'"),
        ("mf", {"reg": float("nan")}, "reg must be finite"),
        ("lightfm", {"loss": "hinge"}, "loss must be one of warp, bpr, logistic, got 'hinge'"),
        ("lightfm", {"cluster_sizes": [16, 1]}, "cluster_sizes must be >= 2"),
        ("lightfm", {"cluster_sizes": "16"}, "cluster_sizes must be a list"),
        ("two_tower", {"dropout": 1.0}, "dropout must be < 1"),
        ("two_tower", {"n_prototypes": 0}, "n_prototypes must be at least 1"),
        ("two_tower", {"device": "tpu"}, "device must be one of auto, cpu, cuda"),
        ("pref_tokens", {"n_selected": 9, "pool_size": 8}, r"n_selected \(9\) cannot exceed pool_size \(8\)"),
        ("als", {"confidence_weighted": 1}, "confidence_weighted must be true or false"),
    ],
)
def test_bad_values_are_clear_errors(name, params, message):
    with pytest.raises(UserError, match=message):
        create_model(name, **params)


def test_values_are_normalised_and_read_as_attributes():
    model = create_model("lightfm", cluster_sizes=[8, 32])
    assert model.cluster_sizes == (8, 32) and model.get_params()["cluster_sizes"] == (8, 32)
    assert create_model("mf").factors == 16
    with pytest.raises(AttributeError):
        create_model("mf").no_such_attribute  # noqa: B018


def test_presets_are_named_parameter_sets_of_their_base_model():
    assert set(PRESETS) <= set(list_models())
    model = create_model("two_tower_no_prototypes", dim=8)
    assert model.name == "two_tower_no_prototypes" and type(model) is model_class("two_tower")
    assert model.use_prototypes is False and model.dim == 8
    assert model.clone().name == "two_tower_no_prototypes"
    assert create_model("pref_tokens_no_contrastive").contrastive_weight == 0.0
    # a preset's fixed value may still be overridden explicitly
    assert create_model("two_tower_no_contrastive", contrastive_weight=0.1).contrastive_weight == 0.1


def test_every_parameter_has_a_description():
    for name in list_models():
        params = model_class(name).Params
        for param in params.names():
            assert params.describe(param), f"{name}.{param} has no description"
