"""The registry's metadata checked against what the models do: roles, what each needs (a table without image
features or metadata), what each supports (choices, taste vectors), and ``recsys models`` listing them."""

from __future__ import annotations

import pytest
from test_api import write_table

from recsys.cli import main
from recsys.data import load_dataset
from recsys.errors import DataNotSupported, UserError
from recsys.models.capabilities import model_supports
from recsys.models.registry import (
    CEILING,
    CONSENSUS,
    IMAGE_INPUT,
    METADATA,
    create_model,
    list_models,
    model_group,
    model_needs,
    model_role,
    models_with_role,
)

#: models this test cannot fit here: the oracle needs a simulator's ground truth, the MLLM scorer weights
NOT_FITTED = ("oracle", "mllm_scorer")
#: the fewest epochs of the trained models, to keep the fits short
QUICK = {"epochs": 1}


@pytest.fixture(scope="module")
def bare(tmp_path_factory):
    """A plain rating table: no image features, no image metadata, no demographics."""
    folder = tmp_path_factory.mktemp("bare")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RECSYS_HOME", str(folder / "home"))
        ds = load_dataset(write_table(folder / "ratings.csv"))
    assert ds.image_features is None and ds.images.columns.empty and ds.users.columns.empty
    return ds


def test_roles():
    assert model_role("oracle") == CEILING and model_role("ridge") == CONSENSUS and model_role("mf") is None
    assert models_with_role(CEILING) == ["oracle"] and models_with_role(CONSENSUS) == ["ridge"]


@pytest.mark.parametrize("name", [m for m in list_models() if m not in NOT_FITTED])
def test_a_model_needs_image_input_exactly_when_it_says_so(bare, name):
    params = QUICK if "epochs" in create_model(name).get_params() else {}
    model = create_model(name, **params)
    if IMAGE_INPUT in model_needs(name):
        with pytest.raises(UserError, match="no image features and no categorical metadata"):
            model.fit(bare)
    elif METADATA in model_needs(name):
        with pytest.raises(UserError, match="needs categorical image metadata"):
            model.fit(bare)
    else:
        model.fit(bare)  # fits without features, metadata or demographics
        assert model.predict(
            bare.ratings["test_seen"].user_idx[:3], bare.ratings["test_seen"].image_idx[:3]
        ).shape == (3,)


def test_presets_need_what_their_base_model_needs():
    assert (
        model_needs("two_tower_no_prototypes") == model_needs("two_tower") == (IMAGE_INPUT, "the deep extra")
    )
    assert model_needs("als") == ("the implicit extra",)
    assert model_group("two_tower_no_prototypes") == "ablations" and model_group("mf") == "classical"
    assert model_needs("oracle") == ("a simulator's ground truth",) and model_needs("mf") == ()


def test_supports_matches_what_the_models_do(small_sim, bare):
    for name in ("ridge", "mf", "item_knn"):
        supports = model_supports(name)
        model = create_model(name).fit(bare if name != "ridge" else small_sim)
        try:
            model.user_vectors()
            vectors = True
        except NotImplementedError:
            vectors = False
        assert ("taste vectors" in supports) == vectors, name
        assert "ratings" in supports and "new users" in supports
    assert "choices" in model_supports("mf") and "choices" not in model_supports("ridge")


def test_a_rating_model_on_choices_is_what_supports_says(tmp_path):
    from recsys.data.simulate_pairs import PickapicSimulationConfig, simulate_pickapic

    config = PickapicSimulationConfig(
        seed=2, users=20, prompts_per_user=10, detailed_images=False, image_size=8, feature_dim=8
    )
    folder = simulate_pickapic(tmp_path / "pap", config, progress=False)
    choices = load_dataset(folder, image_features=folder / "image_features.npz")
    with pytest.raises(DataNotSupported):
        create_model("ridge").fit(choices)
    create_model("mf", epochs=2).fit(choices)  # "choices" in model_supports("mf")


def test_models_command_lists_group_role_needs_and_supports(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    head, *lines = out.splitlines()
    assert head.split()[:5] == ["model", "group", "role", "needs", "supports"]
    by_name = {line.split()[0]: line for line in lines if line and line.split()[0] in list_models()}
    assert set(by_name) == set(list_models())
    assert "consensus" in by_name["ridge"] and IMAGE_INPUT in by_name["ridge"]
    assert "ceiling" in by_name["oracle"] and "simulator's ground truth" in by_name["oracle"]
    assert "ratings, choices, new users, taste vectors" in by_name["mf"] and " classical " in by_name["mf"]
    assert "no model needs demographics" in out
