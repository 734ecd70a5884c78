"""What is special to two_tower: prototypes, fold-in from references, learning, persistence."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.data.dataset import References
from recsys.models import create_model
from recsys.models.base import Model

FAST = {"epochs": 6, "seed": 0}


@pytest.fixture(scope="module")
def model(small_sim):
    return create_model("two_tower", **FAST).fit(small_sim)


def test_learns_better_than_the_non_personalised_baselines(model, evaluator, floors):
    unseen = evaluator.evaluate(model, "test_unseen", 10).metrics["pairwise_acc"]
    seen = evaluator.evaluate(model, "test_seen").metrics["pairwise_acc"]
    assert unseen > max(floors.values()) and seen > max(floors.values())


def test_prototype_mixture_is_a_distribution(model, small_sim):
    mixture = model.prototype_mixture(np.arange(5))
    assert mixture.shape == (5, model.n_prototypes)
    np.testing.assert_allclose(mixture.sum(1), 1.0, atol=1e-5)
    assert model.user_vectors().shape == (small_sim.n_users, model.dim)


def test_new_user_from_references_without_refitting(model, small_sim):
    r = small_sim.ratings["test_unseen"]
    user = r.user_idx[0]
    rows = np.flatnonzero(r.user_idx == user)
    refs = References(int(user), r.image_idx[rows[:10]], r.score[rows[:10]])
    empty = References(int(user), np.zeros(0, np.int64), np.zeros(0, np.float32))
    queries = r.image_idx[rows[10:]]
    with_refs, without = model.predict_new([refs, empty], [queries, queries])
    assert with_refs.shape == queries.shape and np.isfinite(with_refs).all()
    assert not np.allclose(with_refs, without)  # references move the prediction
    mixture = model.prototype_mixture(references=[refs, empty])
    np.testing.assert_allclose(mixture.sum(1), 1.0, atol=1e-5)


def test_save_load_gives_identical_predictions_for_new_users(model, small_sim, tmp_path):
    r = small_sim.ratings["test_unseen"]
    refs = References(int(r.user_idx[0]), r.image_idx[:5], r.score[:5])
    before = model.predict_new([refs], [r.image_idx[5:40]])[0]
    loaded = Model.load(model.save(tmp_path / "tt"))
    assert (tmp_path / "tt" / "modules.pt").exists()
    np.testing.assert_allclose(
        loaded.predict_new([refs], [r.image_idx[5:40]])[0], before, rtol=1e-6, atol=1e-6
    )


def test_ablations_fix_their_flag(small_sim):
    assert create_model("two_tower_no_contrastive").contrastive_weight == 0.0
    model = create_model("two_tower_no_prototypes", epochs=2).fit(small_sim)
    with pytest.raises(ValueError, match="no prototypes"):
        model.prototype_mixture(np.arange(2))


def test_bad_hyperparameter_is_a_value_error():
    with pytest.raises(ValueError, match="dim"):
        create_model("two_tower").clone(dim=0)
