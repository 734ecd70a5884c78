"""What is special to profile: interpretable profiles whose contributions sum exactly to the score."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.data.dataset import References
from recsys.models import create_model
from recsys.models.base import Model


@pytest.fixture(scope="module")
def model(small_sim):
    return create_model("profile").fit(small_sim)


def test_learns_better_than_the_non_personalised_baselines(model, evaluator, floors):
    floor = max(floors.values())
    assert evaluator.evaluate(model, "test_unseen", 10).metrics["pairwise_acc"] > floor


def test_explain_sums_exactly_to_the_score(model, small_sim):
    r = small_sim.ratings["test_seen"]
    for user, image in zip(r.user_idx[:5], r.image_idx[:5], strict=True):
        out = model.explain(int(user), int(image))
        total = out["consensus"] + out["bias"] + sum(out["contributions"].values())
        assert total == pytest.approx(out["score"], abs=1e-9)
        assert out["score"] == pytest.approx(model.predict(np.array([user]), np.array([image]))[0], abs=1e-9)
    assert any(name.startswith("visual_") for name in out["profile"])
    assert any(name.startswith("type=") for name in out["profile"])


def test_explain_for_a_new_user_matches_predict_new(model, small_sim):
    r = small_sim.ratings["test_unseen"]
    rows = np.flatnonzero(r.user_idx == r.user_idx[0])
    refs = References(int(r.user_idx[0]), r.image_idx[rows[:10]], r.score[rows[:10]])
    image = int(r.image_idx[rows[12]])
    out = model.explain(refs, image)
    assert out["score"] == pytest.approx(model.predict_new([refs], [np.array([image])])[0][0], abs=1e-9)
    total = out["consensus"] + out["bias"] + sum(out["contributions"].values())
    assert total == pytest.approx(out["score"], abs=1e-9)


def test_save_load_round_trip(model, small_sim, tmp_path):
    loaded = Model.load(model.save(tmp_path / "p"))
    r = small_sim.ratings["test_seen"]
    np.testing.assert_allclose(
        loaded.predict(r.user_idx[:20], r.image_idx[:20]), model.predict(r.user_idx[:20], r.image_idx[:20])
    )


def test_explain_cli(small_sim_dir, small_sim, capsys):
    import argparse

    from recsys.cli.models import add_parsers

    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers(dest="command"))
    r = small_sim.ratings["train"]
    user, image = small_sim.user_ids[r.user_idx[0]], small_sim.image_ids[r.image_idx[0]]
    args = parser.parse_args(
        ["explain", "--data", str(small_sim_dir), "--user", str(user), "--image", str(image)]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "predicted score" in out and "top contributions" in out
