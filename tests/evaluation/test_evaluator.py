"""The protocol: reference draws are seeded, disjoint from queries, identical across models; skips counted."""

from __future__ import annotations

import numpy as np

from recsys.evaluation.evaluator import Evaluator
from recsys.models import create_model


def test_episodes_are_seeded_disjoint_and_complete(small_sim):
    ev = Evaluator(small_sim, shots=(10,), seed=3)
    episodes, skipped = ev.episodes("test_unseen", 10)
    again, _ = Evaluator(small_sim, shots=(10,), seed=3).episodes("test_unseen", 10)
    other, _ = Evaluator(small_sim, shots=(10,), seed=4).episodes("test_unseen", 10)
    r = small_sim.ratings["test_unseen"]
    assert skipped == 0
    assert len(episodes) == len(np.unique(r.user_idx))
    total = 0
    for e, e2 in zip(episodes, again, strict=True):
        assert len(e.references) == 10
        np.testing.assert_array_equal(e.references.image_idx, e2.references.image_idx)
        assert not set(e.references.image_idx) & set(e.query_image_idx)
        total += len(e.references) + len(e.query_image_idx)
    assert total == len(r)
    assert any(
        not np.array_equal(a.references.image_idx, b.references.image_idx)
        for a, b in zip(episodes, other, strict=True)
    )


def test_users_with_too_few_ratings_are_skipped_and_counted(small_sim):
    r = small_sim.ratings["test_unseen"]
    per_user = np.bincount(r.user_idx)
    k = int(per_user[per_user > 0].min()) - 4  # the smallest user has k + 4 ratings: one short
    ev = Evaluator(small_sim, shots=(k,))
    episodes, skipped = ev.episodes("test_unseen", k)
    assert skipped >= 1
    assert skipped + len(episodes) == len(np.unique(r.user_idx))


def test_unsupported_cold_start_is_reported_not_raised(small_sim):
    class SeenOnly(type(create_model("global_mean"))):
        name = "seen_only"

        def predict_new(self, references, image_idx):
            return super(type(create_model("global_mean")), self).predict_new(references, image_idx)

    model = SeenOnly().fit(small_sim)
    result = Evaluator(small_sim, shots=(0,)).evaluate(model, "test_unseen", 0)
    assert result.status == "unsupported"
    assert result.metrics is None
    assert "cannot score users" in result.reason


def test_seen_split_scores_every_rating(small_sim):
    result = Evaluator(small_sim).evaluate(create_model("user_ridge").fit(small_sim), "test_seen")
    assert result.n_ratings == len(small_sim.ratings["test_seen"])
    assert result.shots is None
    lo, hi = result.ci95["user_srocc"]
    assert lo <= result.metrics["user_srocc"] <= hi
