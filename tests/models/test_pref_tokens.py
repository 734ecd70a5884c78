"""What is special to pref_tokens: preference-token selection, the whole history, references in / scores out,
persistence."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.data.dataset import References
from recsys.models import create_model
from recsys.models.base import Model

FAST = {"epochs": 20, "seed": 0}


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


def _history(model, ratings, rows):
    return (int(ratings.user_idx[rows[0]]), ratings.image_idx[rows], np.full(len(rows), len(model.base_)),
            ratings.score[rows])  # fmt: skip


def test_a_seen_user_is_scored_from_its_whole_history(model, small_sim):
    """A fitted user's taste is the fold of every one of its training ratings (with the seen users' ridge
    strength), not of a sample of them."""
    r = small_sim.ratings["train"]
    user = int(r.user_idx[0])
    rows = np.flatnonzero(r.user_idx == user)
    assert len(rows) > 40
    whole = model._fold_rows([_history(model, r, rows)], False, model.seen_reg_scale_)[0]
    np.testing.assert_allclose(model.user_vectors()[user], whole, rtol=1e-4, atol=1e-5)
    part = model._fold_rows([_history(model, r, rows[:32])], False, model.seen_reg_scale_)[0]
    assert not np.allclose(part, whole, atol=1e-3)


def test_the_seen_users_refinement_is_the_ridge_strength_best_on_val_seen(model, small_sim):
    """The seen users' ridge strength is the multiple with the lowest val_seen squared error, recomputed here
    from the model's scores of each candidate's tastes; new users keep the learned strength."""
    from recsys.models.pref_tokens import SEEN_REG_SCALES

    train, val = small_sim.ratings["train"], small_sim.ratings["val_seen"]
    users = np.unique(train.user_idx)
    histories = [_history(model, train, np.flatnonzero(train.user_idx == u)) for u in users]
    errors = []
    for scale in SEEN_REG_SCALES:
        taste = dict(zip(users.tolist(), model._fold_rows(histories, False, scale), strict=True))
        seen = np.isin(val.user_idx, users)
        pred = [model._score_folded([taste[int(u)]], [np.array([i])])[0][0]
                for u, i in zip(val.user_idx[seen], val.image_idx[seen], strict=True)]  # fmt: skip
        errors.append(float(np.mean((np.array(pred) - val.score[seen]) ** 2)))
    best = int(np.argmin(errors))
    expected = SEEN_REG_SCALES[best] if errors[best] < errors[0] else 1.0
    assert model.seen_reg_scale_ == expected
    refs = References(int(users[0]), train.image_idx[train.user_idx == users[0]],
                      train.score[train.user_idx == users[0]])  # fmt: skip
    np.testing.assert_allclose(
        model.fold_in([refs])[0], model._fold_rows([_history(model, train, np.flatnonzero(train.user_idx ==
                                                    users[0]))], False, 1.0)[0], rtol=1e-5, atol=1e-6
    )  # fmt: skip


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
    with pytest.raises(ValueError, match="history_reg"):
        create_model("pref_tokens").clone(history_reg=0.0)
    with pytest.raises(ValueError, match="n_selected"):
        create_model("pref_tokens").clone(n_selected=20, pool_size=8)


def test_the_tower_on_the_shown_images_equals_the_whole_catalogues_gathered(monkeypatch):
    import torch

    from recsys.models import pref_tokens
    from recsys.models.torch_utils import ImageTower

    torch.manual_seed(0)
    tower = ImageTower(6, [3, 2], hidden=8, dim=4, dropout=0.1).eval()  # eval: no dropout draws to compare
    n = 10
    t = {
        "features": torch.randn(n, 6),
        "codes": torch.stack([torch.arange(n) % 3, torch.arange(n) % 2], 1),
        "base": torch.randn(n),
    }
    # image 10 is NONE (a rating's second image); 0 also pads; images 4 and 8 are shown by no index
    indices = (
        torch.tensor([[1, 2, 10], [0, 0, 0]]),
        torch.tensor([[10, 10, 3]]),
        torch.tensor([7, 9, 1, 5, 6]),
    )
    with torch.no_grad():
        z, bias = tower(t["features"], t["codes"])
        whole_z = torch.cat([z, torch.zeros(1, 4)])
        whole_s0 = torch.cat([t["base"] + bias, torch.zeros(1)])
        monkeypatch.setattr(pref_tokens, "WHOLE_TOWER_IMAGES", 0)
        shown_z, shown_s0, renumbered = pref_tokens._tower_of_shown(tower, t, indices)
        monkeypatch.setattr(pref_tokens, "WHOLE_TOWER_IMAGES", n)
        same_z, same_s0, same = pref_tokens._tower_of_shown(tower, t, indices)
    assert len(shown_z) == 9  # the 8 shown images and NONE, not the whole catalogue
    for original, local, kept in zip(indices, renumbered, same, strict=True):
        assert local.shape == original.shape and torch.equal(kept, original)
        torch.testing.assert_close(shown_z[local], whole_z[original])
        torch.testing.assert_close(shown_s0[local], whole_s0[original])
    assert torch.equal(same_z, whole_z) and torch.equal(same_s0, whole_s0)


def test_validation_in_batches_of_users_is_the_mean_over_all_queries(small_sim, monkeypatch):
    from recsys.models import pref_tokens

    whole = create_model("pref_tokens", epochs=3, seed=0).fit(small_sim)
    monkeypatch.setattr(pref_tokens, "VALIDATION_USERS", 7)  # the small simulation's users in many batches
    batched = create_model("pref_tokens", epochs=3, seed=0).fit(small_sim)
    assert len(whole.history_["val_loss"]) == 3
    # the same training; each epoch's validation loss the same mean, summed in another order
    np.testing.assert_array_equal(whole.history_["train_loss"], batched.history_["train_loss"])
    np.testing.assert_allclose(whole.history_["val_loss"], batched.history_["val_loss"], rtol=1e-5)
