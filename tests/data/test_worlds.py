"""The simulator's world settings and the family of named worlds: the default world is unchanged, each setting
does what it says (checked on the drawn world by an independent computation), both simulators take them."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from recsys.cli import main
from recsys.data import load_dataset
from recsys.data.simulate import (
    DEFAULT_INDIVIDUAL_SHARE,
    GROUP_TASTE_SD,
    INDIVIDUAL_TASTE_SD,
    N_ATTRIBUTES,
    WORLD_KNOBS,
    SimulationConfig,
    _World,
    load_aggregates,
    simulate,
)
from recsys.data.simulate_pairs import PickapicSimulationConfig, simulate_pickapic
from recsys.data.worlds import WORLDS, get_worlds, simulate_world
from recsys.errors import UserError

#: sha256 of the small default simulation below (annotations, ground truth, users, features rounded to 1e-5)
#: as written by the simulator before the world settings existed: the default world must stay what it was
DEFAULT_WORLD_DIGEST = "fc008cd3c3e08bb6df3f33650f3a148b8be5c8572a041bfc2bde7d259d5260c2"
SMALL = SimulationConfig(
    seed=3, users=40, images=300, ratings_per_user=80, feature_dim=32, render_images=False
)
#: a world with many users and no ratings drawn: the settings' effects are measured on its latent draws
MANY = SimulationConfig(seed=1, users=3000, images=2000, feature_dim=64, render_images=False)
AGGREGATES = load_aggregates()


def world(**settings) -> _World:
    return _World(replace(MANY, **settings), AGGREGATES)


@pytest.fixture(scope="module")
def default_world() -> _World:
    return world()


def test_the_default_world_is_unchanged(tmp_path):
    out = simulate(tmp_path / "s", SMALL, progress=False)
    digest = hashlib.sha256()
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.suffix in (".json", ".csv"))
    for name in [n for n in written if n != "simulation.json"]:
        digest.update(name.encode())
        digest.update((out / name).read_bytes())
    with np.load(out / "image_features.npz", allow_pickle=False) as z:
        digest.update(z["image_id"].tobytes())
        digest.update(np.round(z["embedding"].astype(np.float64), 5).tobytes())
    assert digest.hexdigest() == DEFAULT_WORLD_DIGEST
    manifest = json.loads((out / "simulation.json").read_text())
    assert manifest["name"] == "simulated PAMELA (seed 3)"  # no settings named: the fingerprint is unchanged
    assert {k: manifest["config"][k] for k in ("taste_rank", "membership")} == {
        "taste_rank": 0,
        "membership": "single",
    }


def test_taste_settings_keep_the_rest_of_the_world(default_world):
    """Images, demographics, biases, noise levels and features are those of the default world of the seed."""
    other = world(taste_groups=24, taste_rank=16, membership="mixture", taste_form="interaction")
    for name in (
        "attributes",
        "image_group",
        "age",
        "gender",
        "nationality",
        "user_bias",
        "user_noise",
        "features",
    ):
        assert np.array_equal(getattr(other, name), getattr(default_world, name)), name
    assert not np.allclose(other.taste[:, :10], default_world.taste[:, :10])


def test_taste_rank_and_groups(default_world):
    """With no individual taste, the users' tastes are the group tastes: as many distinct rows as groups
    present, spanning ``taste_rank`` directions (rank 0: one per group)."""
    for groups, rank, expected_rank in ((6, 0, 6), (6, 2, 2), (24, 16, 16), (24, 0, 24)):
        w = world(taste_groups=groups, taste_rank=rank, individual_share=0.0)
        distinct = np.unique(w.taste.round(12), axis=0)
        assert len(distinct) == len(np.unique(w.taste_group)) and set(w.taste_group) <= set(range(groups))
        assert np.linalg.matrix_rank(w.taste, tol=1e-9) == expected_rank


def test_individual_share_splits_a_fixed_taste_variance(default_world):
    """The total spread of taste is the default world's whatever the share; the share of it around the
    group's taste is ``individual_share`` (measured from the users of each group)."""
    total = GROUP_TASTE_SD**2 + INDIVIDUAL_TASTE_SD**2
    for share in (0.0, DEFAULT_INDIVIDUAL_SHARE, 0.6, 1.0):
        w = world(individual_share=share)
        taste = w.taste[:, : w.content.shape[1]]
        assert taste.var() == pytest.approx(total, rel=0.15)
        within = np.mean([taste[w.taste_group == g].var(axis=0).mean() for g in np.unique(w.taste_group)])
        assert within / total == pytest.approx(share, abs=0.03)


def cramers_v(a: np.ndarray, b: np.ndarray) -> float:
    table = pd.crosstab(a, b).to_numpy().astype(float)
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    chi2 = ((table - expected) ** 2 / expected).sum()
    return float(np.sqrt(chi2 / table.sum() / (min(table.shape) - 1)))


def test_demographic_weight_sets_how_much_demographics_pull_groups():
    """Association (Cramer's V) of gender x region with the taste group, over 20,000 users: at chance level
    (about 0.03 for this table) without the pull, growing with it."""
    association = {}
    for weight in (0.0, 1.0, 3.0):
        w = _World(replace(MANY, users=20_000, demographic_weight=weight), AGGREGATES)
        association[weight] = cramers_v(w.gender * 4 + w.nationality % 4, w.taste_group)
    assert association[0.0] < 0.05 and 0.2 < association[1.0] < association[3.0]


def test_mixture_membership_mixes_the_groups():
    """Without individual taste, single membership gives one taste per group; a mixture gives every user
    their own taste within the span of the 6 group tastes, of the same spread."""
    single = world(individual_share=0.0)
    mixed = world(individual_share=0.0, membership="mixture")
    assert len(np.unique(single.taste.round(12), axis=0)) == 6
    assert len(np.unique(mixed.taste.round(12), axis=0)) == MANY.users
    assert np.linalg.matrix_rank(mixed.taste, tol=1e-9) == 6
    assert mixed.taste.var() == pytest.approx(single.taste.var(), rel=0.3)


def r2_of_personal_score_on_content(w: _World, user: int) -> float:
    """R^2 of a least-squares fit on the image content of one user's personal score less user 0's, over all
    images."""
    images = np.arange(len(w.content))

    def taste_part(
        u: int,
    ) -> np.ndarray:  # appeal + personal score of user u: mu less u's bias, over u's scale
        return (w.mean_score(np.full(len(images), u), images) - 3 - w.user_bias[u]) / w.user_scale[u]

    personal = taste_part(user) - taste_part(0)  # the consensus appeal cancels
    x = np.hstack([w.content, np.ones((len(images), 1))])
    fit = x @ np.linalg.lstsq(x, personal, rcond=None)[0]
    return 1 - np.var(personal - fit) / np.var(personal)


def test_interaction_taste_is_not_linear_in_content(default_world):
    interaction = world(taste_form="interaction")
    assert interaction.taste.shape[1] == default_world.taste.shape[1] + N_ATTRIBUTES
    assert r2_of_personal_score_on_content(default_world, 7) > 0.999999
    assert r2_of_personal_score_on_content(interaction, 7) < 0.9


def ridge_r2(x: np.ndarray, y: np.ndarray) -> float:
    """Held-out R^2 of a ridge from ``x`` to ``y`` (first 1500 rows to fit, the rest to test)."""
    fit, test = slice(0, 1500), slice(1500, None)
    xf = np.hstack([x, np.ones((len(x), 1))])
    w = np.linalg.solve(xf[fit].T @ xf[fit] + 1e-2 * np.eye(xf.shape[1]), xf[fit].T @ y[fit])
    return 1 - np.var(y[test] - xf[test] @ w) / np.var(y[test])


def test_feature_maps_and_hidden_attributes(default_world):
    """Other maps make other unit-norm features of the same images; attributes hidden from the features are
    predicted from them much worse than when visible (the part of them not set by group and style is lost)."""
    for form in ("relu", "fourier"):
        w = world(feature_map=form)
        np.testing.assert_allclose(np.linalg.norm(w.features, axis=1), 1.0, atol=1e-5)
        assert not np.allclose(w.features, default_world.features, atol=0.05)
        assert ridge_r2(w.features, w.attributes[:, 0]) > 0.5  # the content is still in the features
    hidden = world(hidden_attributes=4)
    for a in range(N_ATTRIBUTES - 4, N_ATTRIBUTES):
        visible = ridge_r2(default_world.features, default_world.attributes[:, a])
        assert ridge_r2(hidden.features, hidden.attributes[:, a]) < visible - 0.2
    assert ridge_r2(hidden.features, hidden.attributes[:, 0]) > 0.7


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"taste_rank": 7}, "--taste-rank 7: choose 0 to --taste-groups (6)"),
        ({"taste_groups": 0}, "--taste-groups 0"),
        ({"individual_share": 1.5}, "--individual-share 1.5"),
        ({"demographic_weight": -1.0}, "--demographic-weight"),
        ({"membership": "all"}, "--membership 'all': choose one of single, mixture"),
        ({"taste_form": "cubic"}, "--taste-form 'cubic'"),
        ({"feature_map": "sigmoid"}, "--feature-map 'sigmoid'"),
        ({"hidden_attributes": 13}, "--hidden-attributes 13: choose 0 to 12"),
    ],
)
def test_bad_world_settings_are_one_line_errors(tmp_path, settings, message):
    for config in (replace(SMALL, **settings), PickapicSimulationConfig(**settings)):
        with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
            config.validate()
        assert "\n" not in str(err.value)


def test_every_named_world_is_valid_and_its_flags_draw_it(tmp_path, capsys):
    assert list(WORLDS)[0] == "default" and len(WORLDS) >= 5
    assert {k for w in WORLDS.values() for k in w.settings} <= set(WORLD_KNOBS)
    for w in WORLDS.values():
        replace(SMALL, **w.settings).validate()
        PickapicSimulationConfig(**w.settings).validate()
    w = WORLDS["other_generator"]
    out = tmp_path / "other"
    assert main(["data", "simulate", "--out", str(out), "--users", "20", "--images", "60", "--ratings-per-user",
                 "20", "--feature-dim", "16", "--no-images", *w.flags().split()]) == 0  # fmt: skip
    config = json.loads((out / "simulation.json").read_text())["config"]
    assert {k: config[k] for k in w.settings} == w.settings
    assert "taste_rank=8" in load_dataset(out).name and "membership=mixture" in load_dataset(out).name
    with pytest.raises(UserError, match="unknown world"):
        get_worlds(["default", "nowhere"])


def test_choices_take_the_world_settings(tmp_path):
    """The Pick-a-Pic simulator draws the same world: its settings change the choice probabilities, are
    recorded and named, and the command line passes them through."""
    sizes = {"users": 20, "prompts_per_user": 10, "feature_dim": 16, "image_size": 16}
    default = simulate_world(WORLDS["default"], "choices", tmp_path / "d", sizes=sizes)
    low = simulate_world(WORLDS["low_rank"], "choices", tmp_path / "l", sizes=sizes)
    truth = [pd.read_csv(d / "simulation" / "choice_probabilities.csv") for d in (default, low)]
    assert truth[0]["ranking_id"].equals(truth[1]["ranking_id"])  # the same comparisons ...
    assert not np.allclose(truth[0]["p_image_0"], truth[1]["p_image_0"])  # ... chosen by other tastes
    assert load_dataset(low).name == "simulated Pick-a-Pic (seed 0, taste_rank=2)"
    assert json.loads((low / "simulation.json").read_text())["config"]["taste_rank"] == 2
    cli = tmp_path / "cli"
    assert main(["data", "simulate", "--pickapic", "--out", str(cli), "--users", "20", "--no-images",
                 "--taste-rank", "2", "--membership", "mixture", "--noise-scale", "0.5"]) == 0  # fmt: skip
    config = json.loads((cli / "simulation.json").read_text())["config"]
    assert (config["taste_rank"], config["membership"], config["noise_scale"]) == (2, "mixture", 0.5)
    direct = simulate_pickapic(
        tmp_path / "direct",
        PickapicSimulationConfig(
            users=20, detailed_images=False, taste_rank=2, membership="mixture", noise_scale=0.5
        ),
        progress=False,
    )
    same = [pd.read_csv(d / "simulation" / "choice_probabilities.csv") for d in (cli, direct)]
    assert same[0].equals(same[1])
