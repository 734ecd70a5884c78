"""PAL-B conditioned on the prompt: it learns a taste that depends on the prompt (which a constant prompt cannot),
new images are scored under their prompts, and the prompt table survives a save and load."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from recsys.data.choices import Choices
from recsys.data.dataset import Dataset
from recsys.models import create_model
from recsys.models.pal import PROMPT_CHUNK, prompt_table
from recsys.models.registry import load_model

N_USERS, PROMPTS_PER_USER, IMAGES_PER_PROMPT, DIM = 30, 40, 4, 8
#: each user's prompts: the first 30 train, the next 5 val_seen, the last 5 test_seen
SPLIT_OF_PROMPT = ["train"] * 30 + ["val_seen"] * 5 + ["test_seen"] * 5


def flipping_world(seed: int = 0) -> Dataset:
    """Two kinds of prompt; a user of taste group g prefers images along v_g under prompts of kind 0 and against
    it under kind 1. The images' features say nothing of the kind, so only the prompt tells the two apart."""
    rng = np.random.default_rng(seed)
    n_prompts = N_USERS * PROMPTS_PER_USER
    kind = rng.integers(0, 2, n_prompts)
    prompt_rows = np.concatenate([np.eye(2)[kind], rng.normal(0, 0.05, (n_prompts, 2))], axis=1)
    features = rng.normal(0, 1, (n_prompts * IMAGES_PER_PROMPT, DIM)).astype(np.float32)
    taste = rng.normal(0, 1, (2, DIM))
    group = np.arange(N_USERS) % 2
    parts: dict[str, list] = {s: [] for s in set(SPLIT_OF_PROMPT)}
    for user in range(N_USERS):
        for position in range(PROMPTS_PER_USER):
            prompt = user * PROMPTS_PER_USER + position
            images = prompt * IMAGES_PER_PROMPT + np.arange(IMAGES_PER_PROMPT)
            utility = (1 - 2 * kind[prompt]) * features[images] @ taste[group[user]]
            for i, j in ((0, 1), (2, 3), (0, 2), (1, 3)):
                chose_a = float(utility[i] > utility[j])
                parts[SPLIT_OF_PROMPT[position]].append((user, images[i], images[j], chose_a))
    choices = {}
    for split, rows in parts.items():
        u, a, b, c = (np.array(column) for column in zip(*rows, strict=True))
        choices[split] = Choices(
            u.astype(np.int64), a.astype(np.int64), b.astype(np.int64), c.astype(np.float32)
        )
    n_images = len(features)
    return Dataset(
        name="flipping world (simulated)",
        simulated=True,
        pamela_semantics=False,
        user_ids=np.arange(N_USERS),
        image_ids=np.arange(n_images),
        users=pd.DataFrame(index=range(N_USERS)),
        images=pd.DataFrame(index=range(n_images)),
        ratings={},
        score_range=(0.0, 1.0),
        choices=choices,
        image_features=features,
        prompt_features=np.repeat(prompt_rows, IMAGES_PER_PROMPT, axis=0).astype(np.float32),
    )


def pal(**params):
    small = {"n_prototypes": 4, "dim": 16, "hidden": 32, "patience": 3, "user_reg": 0.01}
    return create_model("pal", batch_size=256, epochs=40, seed=0, **small, **params)


def test_accuracy(model, ds: Dataset) -> float:
    test = ds.choices["test_seen"]
    p = model.predict_choices(test.user_idx, test.image_a, test.image_b)
    return float(((p > 0.5) == (test.choice == 1.0)).mean())


test_accuracy.__test__ = False  # a helper, not a test


@pytest.fixture(scope="module")
def world() -> Dataset:
    return flipping_world()


@pytest.fixture(scope="module")
def conditioned(world):
    return pal().fit(world)


def test_pal_b_learns_a_taste_that_flips_with_the_prompt(world, conditioned):
    """Conditioned on the prompt, PAL-B gets most held-out choices right; with one constant prompt the two kinds'
    preferences cancel and it is near chance."""
    constant = pal().fit(replace(world, prompt_features=None))
    assert conditioned.conditioned() and not constant.conditioned()
    with_prompts, without = test_accuracy(conditioned, world), test_accuracy(constant, world)
    assert with_prompts >= 0.8
    assert without <= 0.62
    assert with_prompts - without >= 0.2


def test_prompt_table_keeps_one_row_per_distinct_prompt():
    prompts = np.array([[1, 0], [0, 1], [1, 0], [0, 1], [2, 2]], np.float32)
    table, prompt_of = prompt_table(prompts, 5)
    np.testing.assert_array_equal(table[prompt_of], prompts)
    assert len(table) == 3 and prompt_of[0] == prompt_of[2] and prompt_of[1] == prompt_of[3]
    constant, of = prompt_table(None, 4)
    np.testing.assert_array_equal(constant, [[1.0]])
    np.testing.assert_array_equal(of, 0)


def test_chunked_scores_equal_one_pass(world, conditioned, monkeypatch):
    """Scores computed in chunks of the prompt projector equal those of one pass."""
    users = np.repeat(np.arange(N_USERS), 7)
    images = np.arange(len(users)) * 3
    whole = conditioned._predict(users, images)
    monkeypatch.setattr("recsys.models.pal.PROMPT_CHUNK", 16)
    np.testing.assert_allclose(conditioned._predict(users, images), whole, rtol=1e-12)
    assert PROMPT_CHUNK > len(users)


def test_new_images_are_scored_under_their_prompts(world, conditioned):
    """Images added with their features and prompts score as they do in the data; without prompts they are
    scored under the mean prompt of the fitted images, computed here from the network by hand."""
    idx = np.arange(12, 20)
    user = 3
    inputs = world.new_image_inputs(world.image_features[idx], prompts=world.prompt_features[idx])
    extended = conditioned.with_new_images(inputs)
    new = np.arange(world.n_images, world.n_images + len(idx))
    np.testing.assert_allclose(
        extended.predict(np.full(len(idx), user), new),
        conditioned.predict(np.full(len(idx), user), idx),
        rtol=1e-6,
    )
    unprompted = conditioned.with_new_images(world.new_image_inputs(world.image_features[idx]))
    mean_prompt = world.prompt_features.astype(np.float64).mean(0, keepdims=True).astype(np.float32)
    prototypes = conditioned._prototypes_of(mean_prompt)[0]
    mixed = conditioned._weights[user] @ prototypes
    reward = conditioned._scale * conditioned._items[idx] @ (mixed / np.linalg.norm(mixed))
    expected = conditioned.scale_[0] + conditioned.scale_[1] * reward
    np.testing.assert_allclose(unprompted.predict(np.full(len(idx), user), new), expected, rtol=1e-6)


def test_new_images_prompts_are_checked(world):
    with pytest.raises(Exception, match="prompt features have shape"):
        world.new_image_inputs(world.image_features[:2], prompts=np.zeros((2, 3)))
    bare = replace(world, prompt_features=None)
    with pytest.raises(Exception, match="has no prompt features"):
        bare.new_image_inputs(bare.image_features[:2], prompts=np.zeros((2, 4)))


def test_saved_and_loaded_conditioned_model_scores_the_same(world, conditioned, tmp_path):
    path = conditioned.save(tmp_path / "pal")
    loaded = load_model(path, world)
    test = world.choices["test_seen"]
    np.testing.assert_array_equal(
        loaded.predict_choices(test.user_idx, test.image_a, test.image_b),
        conditioned.predict_choices(test.user_idx, test.image_a, test.image_b),
    )
    np.testing.assert_array_equal(loaded.prompt_of_, conditioned.prompt_of_)
