"""The protocol: nested, repeated reference draws, seeded and identical across models; skips counted; per-user
values averaged over draws before they are averaged over users."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import stats

from recsys.evaluation.evaluator import Evaluator
from recsys.models import create_model
from recsys.models.base import Model


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
        assert len(e.references) == 10 and (r.user_idx[e.references] == e.user_idx).all()
        np.testing.assert_array_equal(r.image_idx[e.references], r.image_idx[e2.references])
        assert not set(r.image_idx[e.references]) & set(r.image_idx[e.queries])
        total += len(e.references) + len(e.queries)
    assert total == len(r)
    assert any(
        not np.array_equal(r.image_idx[a.references], r.image_idx[b.references])
        for a, b in zip(episodes, other, strict=True)
    )


def test_draws_are_nested_same_queries_at_every_k_and_references_are_prefixes(small_sim):
    ev = Evaluator(small_sim, shots=(0, 2, 5, 10), seed=1, draws=3)
    r = small_sim.ratings["test_unseen"]
    for draw in range(3):
        by_k = {k: ev.episodes("test_unseen", k, draw)[0] for k in ev.shots}
        for k, episodes in by_k.items():
            for e, e10 in zip(episodes, by_k[10], strict=True):
                assert e.draw == draw and len(e.references) == k
                np.testing.assert_array_equal(e.queries, e10.queries)  # fixed queries
                np.testing.assert_array_equal(e.references, e10.references[:k])  # a prefix
                assert not set(r.image_idx[e10.references]) & set(r.image_idx[e.queries])
    first, second = ev.episodes("test_unseen", 10, 0)[0], ev.episodes("test_unseen", 10, 1)[0]
    assert any(not np.array_equal(a.queries, b.queries) for a, b in zip(first, second, strict=True))
    with pytest.raises(ValueError, match="not within"):
        ev.episodes("test_unseen", 20)


def _without_ratings_of_one_unseen_user(ds, keep: int):
    """A copy whose first test_unseen user keeps only ``keep`` ratings."""
    r = ds.ratings["test_unseen"]
    user = r.user_idx[0]
    rows = np.flatnonzero(r.user_idx == user)
    mask = np.ones(len(r), dtype=bool)
    mask[rows[keep:]] = False
    return replace(ds, ratings=ds.ratings | {"test_unseen": r.subset(mask)}), user


def test_a_user_short_of_the_largest_k_is_skipped_at_every_k_and_counted(small_sim):
    ds, user = _without_ratings_of_one_unseen_user(small_sim, keep=14)  # 10 + 5 queries needed, 14 held
    ev = Evaluator(ds, shots=(0, 10), draws=2)
    n_users = len(np.unique(ds.ratings["test_unseen"].user_idx))
    for k in (0, 10):
        episodes, skipped = ev.episodes("test_unseen", k)
        assert skipped == 1 and len(episodes) == n_users - 1
        assert user not in {e.user_idx for e in episodes}
    result = ev.evaluate(create_model("ridge").fit(ds), "test_unseen", 0)
    assert result.skipped_users == 1 and result.n_users == n_users - 1
    # with 9 as the largest k the user has enough ratings again
    assert Evaluator(ds, shots=(0, 9)).episodes("test_unseen", 0)[1] == 0


def test_unsupported_cold_start_is_reported_not_raised(small_sim):
    class SeenOnly(type(create_model("global_mean"))):
        name = "seen_only"

        def _predict_new(self, references, images):
            return Model._predict_new(self, references, images)  # no fold-in: "cannot score users"

    model = SeenOnly().fit(small_sim)
    result = Evaluator(small_sim, shots=(0,)).evaluate(model, "test_unseen", 0)
    assert result.status == "unsupported"
    assert result.metrics is None
    assert "cannot score users" in result.reason


def test_seen_split_scores_every_rating(small_sim):
    result = Evaluator(small_sim).evaluate(create_model("user_ridge").fit(small_sim), "test_seen")
    assert result.n_ratings == len(small_sim.ratings["test_seen"])
    assert result.shots is None and result.draws == 1
    assert (result.predictions.draw == -1).all()
    lo, hi = result.ci95["user_srocc"]
    assert lo <= result.metrics["user_srocc"] <= hi


def test_per_user_values_are_averaged_over_draws_before_users(small_sim):
    """Recomputed from the returned predictions with scipy: Spearman per user and draw, the mean over draws per
    user, then the mean over users."""
    model = create_model("user_ridge").fit(small_sim)
    draws = 3
    result = Evaluator(small_sim, shots=(0, 5), draws=draws).evaluate(model, "test_unseen", 5)
    p = result.predictions
    per_user_draw: dict[int, list[float]] = {}
    for draw in range(draws):
        for user in np.unique(p.user_idx):
            at = (p.draw == draw) & (p.user_idx == user)
            per_user_draw.setdefault(int(user), []).append(stats.spearmanr(p.score[at], p.prediction[at])[0])
    expected = {u: np.mean(v) for u, v in per_user_draw.items()}
    assert result.per_user["user_srocc"] == pytest.approx(expected)
    assert result.metrics["user_srocc"] == pytest.approx(np.mean(list(expected.values())))
    by_draw = [np.mean([v[d] for v in per_user_draw.values()]) for d in range(draws)]
    assert result.by_draw["user_srocc"] == pytest.approx(by_draw)
    assert result.n_ratings == int((p.draw == 0).sum()) == int((p.draw == 2).sum())
    assert result.metric_users["user_srocc"] == len(expected)


def test_users_with_ten_or_fewer_queries_are_left_out_of_ndcg_and_counted(small_sim):
    ds, user = _without_ratings_of_one_unseen_user(small_sim, keep=19)  # 19 - 10 references = 9 queries
    model = create_model("ridge").fit(ds)
    result = Evaluator(ds, shots=(10,), draws=1).evaluate(model, "test_unseen", 10)
    n_users = len(np.unique(ds.ratings["test_unseen"].user_idx))
    assert result.ndcg_left_out == 1
    assert result.metric_users["ndcg@10"] == n_users - 1 and user not in result.per_user["ndcg@10"]
    assert result.metric_users["user_srocc"] == n_users


def test_the_same_draws_for_every_model(small_sim):
    ev = Evaluator(small_sim, shots=(0, 10), draws=2)
    a = ev.evaluate(create_model("ridge").fit(small_sim), "test_unseen", 10).predictions
    b = ev.evaluate(create_model("user_ridge").fit(small_sim), "test_unseen", 10).predictions
    for field in ("user_idx", "image_idx", "score", "draw"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_draws_must_be_positive(small_sim):
    with pytest.raises(ValueError, match="draws"):
        Evaluator(small_sim, draws=0)


def test_failed_rows_one_per_split_and_k_without_metrics(small_sim):
    ev = Evaluator(small_sim, shots=(0, 4, 10), draws=3)
    rows = ev.failed_rows("m", ["test_seen", "test_unseen"], "skipped", "no features", "train+val_seen")
    assert [(r.split, r.shots, r.draws) for r in rows] == [
        ("test_seen", None, 1),
        ("test_unseen", 0, 3),
        ("test_unseen", 4, 3),
        ("test_unseen", 10, 3),
    ]
    for r in rows:
        assert (r.model, r.status, r.reason, r.metrics, r.ci95, r.n_ratings) == (
            "m",
            "skipped",
            "no features",
            None,
            None,
            0,
        )
        assert (r.fit_split, r.fit_seconds, r.validation_split) == ("train+val_seen", 0.0, None)
