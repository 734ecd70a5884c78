"""What is special to pref_tokens: preference-token selection, references in / scores out, persistence."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.data.dataset import References
from recsys.models import create_model
from recsys.models.base import Model

FAST = {"epochs": 3, "seed": 0}


@pytest.fixture(scope="module")
def model(small_sim):
    return create_model("pref_tokens", **FAST).fit(small_sim)


def _refs(small_sim, k):
    r = small_sim.ratings["test_unseen"]
    rows = np.flatnonzero(r.user_idx == r.user_idx[0])
    return References(int(r.user_idx[0]), r.image_idx[rows[:k]], r.score[rows[:k]]), r.image_idx[rows[k:]]


def test_learns_better_than_the_non_personalised_baselines(model, evaluator, floors):
    floor = max(floors.values())
    assert evaluator.evaluate(model, "test_unseen", 10).metrics["pairwise_acc"] > floor
    assert evaluator.evaluate(model, "test_seen").metrics["pairwise_acc"] > floor


def test_references_in_scores_out(model, small_sim):
    refs, queries = _refs(small_sim, 10)
    empty = References(refs.user_idx, np.zeros(0, np.int64), np.zeros(0, np.float32))
    with_refs, without = model.predict_new([refs, empty], [queries, queries])
    assert with_refs.shape == queries.shape and np.isfinite(without).all()
    assert not np.allclose(with_refs, without)
    # a candidate's score does not depend on the other candidates scored with it
    single = model.predict_new([refs], [queries[:1]])[0]
    np.testing.assert_allclose(single, with_refs[:1], rtol=1e-5, atol=1e-5)


def test_active_tokens(model, small_sim):
    refs, _ = _refs(small_sim, 10)
    tokens = model.active_tokens([refs])[0]
    assert len(tokens) == model.n_selected and len(set(tokens.tolist())) == model.n_selected
    assert ((0 <= tokens) & (tokens < model.pool_size)).all()


def test_save_load_round_trip_for_new_users(model, small_sim, tmp_path):
    refs, queries = _refs(small_sim, 8)
    before = model.predict_new([refs], [queries])[0]
    loaded = Model.load(model.save(tmp_path / "pt"))
    np.testing.assert_allclose(loaded.predict_new([refs], [queries])[0], before, rtol=1e-6, atol=1e-6)


def test_no_pool_ablation_has_no_tokens(small_sim):
    model = create_model("pref_tokens_no_pool", epochs=1).fit(small_sim)
    with pytest.raises(ValueError, match="no preference-token pool"):
        model.active_tokens([_refs(small_sim, 5)[0]])


def test_bad_hyperparameters_are_value_errors():
    with pytest.raises(ValueError, match="multiple of heads"):
        create_model("pref_tokens").clone(dim=30, heads=4)
    with pytest.raises(ValueError, match="n_selected"):
        create_model("pref_tokens").clone(n_selected=20, pool_size=8)
