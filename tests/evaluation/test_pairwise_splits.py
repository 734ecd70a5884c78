"""Pairwise splits that do not leak session structure: on simulated Pick-a-Pic data (where the chosen image stays
for the prompt's next comparison, as on the site) a rule that reads no label, "the image that appears in more
training comparisons wins", is at chance on every held-out split under the session split and session draws, and
well above chance under the one-by-one split and draws that came before them."""

from __future__ import annotations

from dataclasses import replace
from functools import partial

import numpy as np
import pytest

import recsys.data.simulate_pairs as simulate_pairs
from recsys.data import Choices, load_dataset
from recsys.data.pickapic import pair_holdout
from recsys.evaluation.pairwise import pair_evaluator

#: the default simulation's shape (199 users, 25 prompts each), with small features: 8,626 choices
WORLD = simulate_pairs.PickapicSimulationConfig(
    seed=0, users=199, prompts_per_user=25, detailed_images=False, image_size=8, feature_dim=8
)
#: how far from 0.5 counts as chance
CHANCE = 0.02


@pytest.fixture(scope="module")
def pickapic(tmp_path_factory):
    path = tmp_path_factory.mktemp("shortcut") / "pickapic"
    with pytest.MonkeyPatch.context() as patch:  # the loader never reads the JPEGs: skip rendering them
        patch.setattr(simulate_pairs, "_render_jpeg", lambda world, config, i: b"")
        simulate_pairs.simulate_pickapic(path, WORLD, progress=False)
    return load_dataset(path, image_features=path / "image_features.npz")


def appearances(n_images: int, *parts: Choices) -> np.ndarray:
    """How many comparisons of ``parts`` show each image."""
    shown = np.concatenate([np.r_[p.image_a, p.image_b] for p in parts])
    return np.bincount(shown, minlength=n_images)


def rule_hits(counts: np.ndarray, pairs: Choices) -> np.ndarray:
    """The rule on the decided choices of ``pairs``: 1 when the chosen image appears more often, 0 when less,
    one half when both appear as often."""
    decided = pairs.subset(pairs.choice != 0.5)
    a, b = counts[decided.image_a], counts[decided.image_b]
    return np.where(a == b, 0.5, (a > b) == (decided.choice == 1.0))


def new_user_rule(evaluator, counts: np.ndarray, pairs: Choices, draw_episodes) -> float:
    """The rule on new users' queries at the largest k, every draw (``draw_episodes(draw)``: episodes and users
    skipped), each user's counts adding its references."""
    hits = []
    for draw in range(evaluator.draws):
        episodes, _ = draw_episodes(draw)
        assert episodes
        for e in episodes:
            mine = counts + appearances(len(counts), pairs.subset(e.references))
            hits.append(rule_hits(mine, pairs.subset(e.queries)))
    return float(np.concatenate(hits).mean())


def test_the_label_free_appearance_rule_is_at_chance_on_every_held_out_split(pickapic):
    ds = pickapic
    evaluator = pair_evaluator(ds)
    counts = appearances(ds.n_images, ds.choices["train"])
    for split in ("test_seen", "val_seen"):
        assert abs(rule_hits(counts, ds.choices[split]).mean() - 0.5) <= CHANCE, split
    for split in ("test_unseen", "val_unseen"):
        protocol = partial(evaluator.episodes, split, evaluator.max_shots)
        assert abs(new_user_rule(evaluator, counts, ds.choices[split], protocol) - 0.5) <= CHANCE, split

    # the one-by-one split and draws of the same choices: the rule is well above chance
    every = Choices.concat([ds.choices[s] for s in ds.choice_splits])
    split_of = pair_holdout(replace(every, session=None), "users:0.1", seed=0)
    counts = appearances(ds.n_images, every.subset(split_of == "train"))
    assert rule_hits(counts, every.subset(split_of == "test_seen")).mean() > 0.65  # 0.744 measured
    new_users = every.subset(split_of == "test_unseen")
    one_by_one = partial(evaluator.sampler.episodes, new_users.user_idx, evaluator.max_shots)
    assert new_user_rule(evaluator, counts, new_users, one_by_one) > 0.5 + CHANCE  # 0.562 measured
