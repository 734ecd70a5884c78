"""The pairwise protocol: metrics by hand, reference/query disjointness, models that learn from choices, the
leaderboard on a simulated Pick-a-Pic folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from recsys.cli import main
from recsys.data import load_dataset
from recsys.data.choices import ChoiceReferences
from recsys.data.simulate_pairs import PickapicSimulationConfig, simulate_pickapic
from recsys.evaluation.pairwise import (
    MIN_USER_PAIRS,
    PAIR_SHOTS,
    choice_metrics,
    pair_evaluator,
    user_choice_accuracy,
)
from recsys.leaderboard import run_leaderboard
from recsys.models import create_model
from recsys.models.pal import MIN_PRIOR_SPREAD, _softmax, population_prior

SMALL = PickapicSimulationConfig(
    seed=0, users=60, prompts_per_user=30, detailed_images=False, image_size=16, feature_dim=32
)


@pytest.fixture(scope="module")
def pickapic_dir(tmp_path_factory):
    return simulate_pickapic(tmp_path_factory.mktemp("pap") / "pickapic", SMALL, progress=False)


@pytest.fixture(scope="module")
def choices(pickapic_dir):
    return load_dataset(pickapic_dir, image_features=pickapic_dir / "image_features.npz")


def test_choice_metrics_by_hand():
    choice = np.array([1.0, 0.0, 0.5, 1.0, 0.0])
    p = np.array([0.8, 0.3, 0.6, 0.4, 0.5])
    m = choice_metrics(choice, p)
    # decided: hit, hit, miss, half (p = 0.5 exactly)
    assert m["choice_acc"] == pytest.approx((1 + 1 + 0 + 0.5) / 4)
    expected = -np.mean(
        [np.log(0.8), np.log(0.7), 0.5 * np.log(0.6) + 0.5 * np.log(0.4), np.log(0.4), np.log(0.5)]
    )
    assert m["log_loss"] == pytest.approx(expected)
    # one prediction per bin (0.8, 0.3, 0.6, 0.4, 0.5): |p - outcome| summed over bins / n
    assert m["ece"] == pytest.approx((0.2 + 0.3 + 0.1 + 0.6 + 0.5) / 5)
    assert m["ties"] == 1
    per_user = user_choice_accuracy(np.array([0, 0, 0, 1, 1]), choice, p)
    assert per_user == {0: 1.0, 1: pytest.approx(0.25)}


def test_references_and_queries_are_disjoint_and_queries_fixed_across_k(choices):
    """Whole sessions: the queries are every choice of the user outside the pool (the first sessions holding 8
    choices), the same at every k; the references are the pool's first k choices; no session and no image of the
    pool is among the queries."""
    evaluator = pair_evaluator(choices, draws=2)
    pairs = choices.choices["test_unseen"]
    for draw in (0, 1):
        at_k = {k: evaluator.episodes("test_unseen", k, draw) for k in PAIR_SHOTS}
        queries = [tuple(e.queries.tolist()) for e in at_k[max(PAIR_SHOTS)][0]]
        for k, (episodes, skipped) in at_k.items():
            assert [tuple(e.queries.tolist()) for e in episodes] == queries  # the same queries at every k
            assert skipped == at_k[0][1]
            for e, e8 in zip(episodes, at_k[max(PAIR_SHOTS)][0], strict=True):
                q, refs = e.queries, e.references
                assert len(refs) == k and (pairs.user_idx[q] == e.user_idx).all()
                assert (pairs.user_idx[refs] == e.user_idx).all()
                np.testing.assert_array_equal(refs, e8.references[:k])  # nested
                mine = np.flatnonzero(pairs.user_idx == e.user_idx)
                pool = np.setdiff1d(mine, q)  # whole sessions, at least 8 choices
                assert len(pool) >= max(PAIR_SHOTS) and np.isin(refs, pool).all()
                assert not set(pairs.session[pool].tolist()) & set(pairs.session[q].tolist())
                pool_images = set(pairs.image_a[pool].tolist()) | set(pairs.image_b[pool].tolist())
                assert not pool_images & (set(pairs.image_a[q].tolist()) | set(pairs.image_b[q].tolist()))
                assert len(q) >= MIN_USER_PAIRS
    first, second = (
        evaluator.episodes("test_unseen", 8, 0)[0],
        evaluator.episodes("test_unseen", 8, 1)[0],
    )
    assert any(
        not np.array_equal(a.queries, b.queries) for a, b in zip(first, second, strict=True)
    )  # draws differ


@pytest.mark.parametrize("name", ["pal", "pal_a"])
def test_pal_learns_from_choices_and_one_reference_keeps_the_population(choices, name):
    # 3 draws: the five new users' values are averaged over enough draws for their interval to clear chance
    board = run_leaderboard(choices, [name], progress=False, jobs=1, draws=3)
    rows = {(r.model, r.split, r.shots): r for r in board.rows}
    assert rows[(name, "test_seen", None)].metrics["user_choice_acc"] > 0.52  # chance is 0.5
    for k in (0, 8):  # the lower end of the interval over users is above chance
        assert rows[(name, "test_unseen", k)].ci95["user_choice_acc"][0] > 0.52
    oracle = rows[("oracle", "test_unseen", 8)].metrics["choice_acc"]
    assert 0.7 < oracle <= 1.0 and rows[(name, "test_unseen", 8)].metrics["choice_acc"] < oracle
    # MAP under the population prior: one reference choice does not undo what the population says
    zero, one = (rows[(name, "test_unseen", k)].metrics["user_choice_acc"] for k in (0, 1))
    assert one >= zero - 0.01


def _references(model, n_users: int, per_user: int, seed: int) -> list[ChoiceReferences]:
    rng = np.random.default_rng(seed)
    n = model.features_.shape[0]
    return [
        ChoiceReferences(
            -1,
            rng.integers(0, n, per_user),
            rng.integers(0, n, per_user),
            rng.integers(0, 2, per_user).astype(np.float32),
        )
        for _ in range(n_users)
    ]


@pytest.fixture(scope="module")
def pal_models(choices):
    return {name: create_model(name, epochs=20).fit(choices) for name in ("pal", "pal_a")}


@pytest.mark.parametrize("name", ["pal", "pal_a"])
def test_a_new_users_fit_does_not_depend_on_who_is_folded_with_them(pal_models, name):
    model = pal_models[name]
    refs = _references(model, 6, 5, seed=1) + [ChoiceReferences(-1, [], [], [])]
    together = model._fold_choices(refs)
    alone = np.vstack([model._fold_choices([r]) for r in refs])
    np.testing.assert_allclose(together, alone, atol=1e-6)
    # no reference: the prior mean, whose softmax is the fitted users' mean mixture
    np.testing.assert_allclose(together[-1], model.prior_mean_, atol=1e-6)
    weights = torch.softmax(model.net_.logits.weight[model.known_].detach().double(), -1).mean(0).numpy()
    np.testing.assert_allclose(_softmax(together[-1:].astype(np.float64))[0], weights, atol=1e-5)


def test_population_prior_by_hand():
    logits = np.array([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    mean, spread = population_prior(logits)
    e = np.exp(logits)
    weights = (e / e.sum(1, keepdims=True)).mean(0)  # symmetric: (a, b, a)
    expected = np.log(weights) - np.log(weights).mean()
    np.testing.assert_allclose(mean, expected)
    centred = logits - 1.0  # every row has mean 1
    np.testing.assert_allclose(
        spread, np.maximum(np.sqrt(((centred - expected) ** 2).mean(0)), MIN_PRIOR_SPREAD)
    )
    agreeing = population_prior(np.ones((4, 3)))
    np.testing.assert_allclose(agreeing[0], 0.0, atol=1e-12)
    np.testing.assert_allclose(agreeing[1], MIN_PRIOR_SPREAD)


def test_pal_a_new_user_weights_follow_the_references(pal_models):
    """Reference choices that all prefer one ideal point's images move the new user's mixture toward it."""
    model = pal_models["pal_a"]
    rewards = model._rewards
    favourite = int(np.argmax(rewards.std(0)))
    order = np.argsort(rewards[:, favourite])
    best, worst = order[-20:], order[:20]
    refs = ChoiceReferences(-1, best, worst, np.ones(20, np.float32))
    weights = _softmax(model._fold_choices([refs]).astype(np.float64))[0]
    assert weights[favourite] > _softmax(model.prior_mean_)[favourite]


def test_pal_b_scores_are_the_cosine_of_the_image_and_the_mixed_prototypes(pal_models, choices):
    """The fitted scores (numpy) against the network's own forward pass (torch): s * cos(f(y), sum_k w_k g_k(x)),
    x the prompt embedding of the image, read from the simulator's image_features.text.npz."""
    model = pal_models["pal"]
    assert choices.prompt_features is not None and model.conditioned()
    net = model.net_
    users = np.flatnonzero(model.known_)[:5]
    # five comparisons of the data, whose two images share their prompt
    pairs = choices.choices["train"]
    a, b = pairs.image_a[:5], pairs.image_b[:5]
    np.testing.assert_array_equal(choices.prompt_features[a], choices.prompt_features[b])
    with torch.no_grad():
        prompts = torch.as_tensor(choices.prompt_features[a])
        diff = (
            net.diff(torch.as_tensor(model.features_), prompts, torch.as_tensor(users), a, b).double().numpy()
        )
        f = net.project_item(torch.as_tensor(model.features_[a])).double().numpy()
        g = torch.stack([p(prompts) for p in net.project_prompt], 1).double().numpy()
    w = _softmax(net.logits.weight.detach().double().numpy()[users])
    u = (w[:, :, None] * g).sum(1)
    cos = (f * u).sum(1) / np.linalg.norm(f, axis=1) / np.linalg.norm(u, axis=1)
    scale = min(np.exp(float(net.logit_scale.detach())), 100.0)
    np.testing.assert_allclose(model._predict(users, a), scale * cos, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(
        model._predict(users, a) - model._predict(users, b), diff, rtol=1e-4, atol=1e-4
    )


def test_rating_models_are_unsupported_on_choices_with_the_reason(choices):
    board = run_leaderboard(choices, ["ridge"], splits=["test_seen"], progress=False, jobs=1)
    ridge = [r for r in board.rows if r.model == "ridge"]
    assert ridge and all(r.status == "unsupported" and "learns from ratings only" in r.reason for r in ridge)


def test_leaderboard_command_on_a_simulated_pickapic_folder(pickapic_dir, choices, tmp_path, capsys):
    features = pickapic_dir / "image_features.npz"
    args = ["leaderboard", "--data", str(pickapic_dir), "--image-features", str(features), "--models", "pal"]
    assert main([*args, "--draws", "2", "--no-tracking", "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "user_choice_acc" in printed and "SIMULATED" in printed and "oracle" in printed
    board = json.loads((tmp_path / "out" / "leaderboard.json").read_text())
    tasks = {(r["model"], r["split"], r["shots"]) for r in board["rows"]}
    assert {("pal", "test_unseen", k) for k in PAIR_SHOTS} <= tasks and ("oracle", "test_seen", None) in tasks
    markdown = (tmp_path / "out" / "leaderboard.md").read_text()
    assert (
        "p (user_choice_acc)" in markdown and "the whole sessions of 8 choices of each new user" in markdown
    )
    assert "the whole sessions of 8 choices" in board["protocol"]["queries"]
    check_predictions_file_and_draws(tmp_path / "out", board, choices)


def check_predictions_file_and_draws(out, board: dict, ds) -> None:
    """predictions.parquet holds every scored choice (user, images a and b, choice, P(a)) of every row, and each
    row's by-draw values are recomputed from it by hand: the pooled accuracy and the mean over users per draw."""
    import pandas as pd

    predictions = pd.read_parquet(out / "predictions.parquet")
    assert (
        list(predictions.columns)
        == (
            "run_id dataset simulated model tuned_study split shots draw user_id image_a_id image_b_id choice "
            "prediction"
        ).split()
    )
    rows = {(r["model"], r["split"], r["shots"]): r for r in board["rows"]}
    for (model, split, shots), row in rows.items():
        part = predictions[(predictions["model"] == model) & (predictions["split"] == split)]
        part = part[part["shots"].isna()] if shots is None else part[part["shots"] == shots]
        assert (part["draw"].fillna(0) == 0).sum() == row["n_ratings"] > 0  # the first draw's queries
        assert part["draw"].fillna(0).nunique() == row["draws"]
        hits, users = {}, {}
        for draw, at_draw in part.groupby(part["draw"].fillna(-1)):
            decided = at_draw[at_draw["choice"] != 0.5]
            p, chose_a = decided["prediction"].to_numpy(), decided["choice"].to_numpy() == 1.0
            hit = np.where(p == 0.5, 0.5, (p > 0.5) == chose_a)
            hits[draw] = hit.mean()
            per_user = pd.Series(hit).groupby(decided["user_id"].to_numpy()).mean()
            users[draw] = per_user.mean()
        if split == "test_seen":  # every held-out choice, in order; the oracle's P(a) is the ground truth
            pairs = ds.choices[split]
            assert part["user_id"].tolist() == ds.user_ids[pairs.user_idx].astype(str).tolist()
            assert part["image_a_id"].tolist() == ds.image_ids[pairs.image_a].tolist()
            assert part["image_b_id"].tolist() == ds.image_ids[pairs.image_b].tolist()
            np.testing.assert_array_equal(part["choice"].to_numpy(), pairs.choice)
            if model == "oracle":
                np.testing.assert_allclose(part["prediction"], ds.ground_truth_choices[split], rtol=1e-6)
        if row["draws"] > 1:
            assert row["by_draw"]["choice_acc"] == pytest.approx([hits[d] for d in sorted(hits)])
            assert row["by_draw"]["user_choice_acc"] == pytest.approx([users[d] for d in sorted(users)])
        assert row["metrics"]["choice_acc"] == pytest.approx(np.mean(list(hits.values())))


def test_simulate_command_writes_a_pickapic_folder(tmp_path, capsys):
    out = tmp_path / "pap"
    assert main(["data", "simulate", "--out", str(out), "--pickapic", "--users", "12", "--no-images"]) == 0
    assert (out / "image_features.npz").is_file() and list((out / "data").glob("train-*.parquet"))
    assert "SIMULATED" in capsys.readouterr().out
    assert main(["data", "validate", str(out), "--image-features", str(out / "image_features.npz")]) == 0
    printed = capsys.readouterr().out
    ds = load_dataset(out, image_features=out / "image_features.npz")
    train = ds.choices["train"]
    row = next(line for line in printed.splitlines() if line.startswith("train "))
    assert "choices" in printed and row.split()[1:2] == [str(len(train))]
    assert row.split()[-1] == str(int((train.choice == 0.5).sum()))  # ties


def test_pref_tokens_learns_from_choices_and_keeps_them_when_saved(choices, tmp_path):
    from recsys.models.base import Model

    board = run_leaderboard(choices, ["pref_tokens"], progress=False, jobs=1, draws=2, shots=(0, 8))
    rows = {(r.split, r.shots): r for r in board.rows if r.model == "pref_tokens"}
    assert rows[("test_seen", None)].ci95["user_choice_acc"][0] > 0.5  # above chance over users
    assert rows[("test_unseen", 8)].metrics["user_choice_acc"] > 0.55
    model = create_model("pref_tokens", epochs=5).fit(choices)
    pairs = choices.choices["test_seen"]
    before = model.predict_choices(pairs.user_idx, pairs.image_a, pairs.image_b)
    loaded = Model.load(model.save(tmp_path / "pt"))
    np.testing.assert_allclose(
        loaded.predict_choices(pairs.user_idx, pairs.image_a, pairs.image_b), before, rtol=1e-5
    )


def test_two_tower_learns_from_choices(choices):
    """Bradley-Terry on score differences: above chance on seen users' held-out choices, and new users' MAP fit
    on reference choices runs (probabilities in (0, 1), one per query)."""
    board = run_leaderboard(choices, ["two_tower"], progress=False, jobs=1, draws=1, shots=(0, 8))
    rows = {(r.split, r.shots): r for r in board.rows if r.model == "two_tower"}
    assert all(r.status == "ok" for r in rows.values())
    assert rows[("test_seen", None)].metrics["user_choice_acc"] > 0.53  # chance: 0.5 (0.56 measured)
    assert rows[("test_unseen", 8)].metrics["user_choice_acc"] > 0.53


def test_mf_learns_from_choices_and_folds_in_new_users(choices):
    """mf on choices: Bradley-Terry on score differences; a new user's Newton MAP fit follows the references."""
    board = run_leaderboard(choices, ["mf"], progress=False, jobs=1, draws=2, shots=(0, 8))
    rows = {(r.split, r.shots): r for r in board.rows if r.model == "mf"}
    assert (
        rows[("test_seen", None)].ci95["user_choice_acc"][0] > 0.5
    )  # above chance over users (0.60 measured)
    assert rows[("test_unseen", 8)].metrics["user_choice_acc"] > 0.55
    model = create_model("mf").fit(choices)
    from recsys.data.choices import ChoiceReferences

    a, b = np.arange(0, 20), np.arange(20, 40)
    p = model._fold_choice(ChoiceReferences(-1, a, b, np.ones(20, np.float32)))[:-1]
    before = model.fold_.item_vecs[a] - model.fold_.item_vecs[b]
    assert (before @ p).mean() > 0  # the fitted taste prefers the chosen images
