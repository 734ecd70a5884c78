"""Named protocols: the PIAA preset (fixed test users, 10 and 100 shots, every other rating a query)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recsys.cli import main
from recsys.data import load_dataset
from recsys.errors import UserError
from recsys.evaluation.evaluator import Evaluator
from recsys.evaluation.protocols import PROTOCOLS, apply_protocol

WORKERS, IMAGES, PER_WORKER = 80, 300, 120


def write_flickr_aes(root, workers=WORKERS, per_worker=PER_WORKER, seed=0):
    """A FLICKR-AES file as published (``worker, imagePair, score`` with a space after each comma), with a
    two-factor taste structure."""
    rng = np.random.default_rng(seed)
    u, v = rng.normal(size=(workers, 2)), rng.normal(size=(IMAGES, 2))
    lines = []
    for w in range(workers):
        for i in rng.choice(IMAGES, per_worker, replace=False):
            score = int(np.clip(np.rint(3 + u[w] @ v[i] + rng.normal(0, 0.3)), 1, 5))
            lines.append(f"W{w:03d}, farm{i}_1_2.jpg, {score}\n")
    root.mkdir(parents=True, exist_ok=True)
    path = root / "FLICKR-AES_image_labeled_by_each_worker.csv"
    path.write_text("worker, imagePair, score\n" + "".join(lines))
    return path


def test_piaa_split_fixes_the_test_users(tmp_path):
    path = write_flickr_aes(tmp_path / "FLICKR-AES")
    piaa = PROTOCOLS["piaa"]
    first = apply_protocol(load_dataset(path.parent), piaa)
    other_seed = apply_protocol(load_dataset(path.parent, seed=3), piaa)
    test = np.unique(first.ratings["test_unseen"].user_idx)
    assert len(test) == 37  # FLICKR-AES's own number of test workers
    assert np.array_equal(
        first.user_ids[test], other_seed.user_ids[np.unique(other_seed.ratings["test_unseen"].user_idx)]
    )
    train_users = set(first.ratings["train"].user_idx.tolist())
    assert not train_users & set(test.tolist())
    assert set(first.ratings["val_seen"].user_idx.tolist()) <= train_users
    total = sum(len(r) for r in first.ratings.values())
    assert total == WORKERS * PER_WORKER  # every rating kept, once
    assert first.splits == ["train", "val_seen", "test_unseen"]


def test_piaa_needs_users_with_enough_ratings(tmp_path):
    path = write_flickr_aes(tmp_path / "FLICKR-AES", per_worker=60)
    with pytest.raises(UserError, match="at least 105 ratings"):
        apply_protocol(load_dataset(path.parent), PROTOCOLS["piaa"])


def test_unfixed_queries_score_every_other_rating(tmp_path):
    path = write_flickr_aes(tmp_path / "FLICKR-AES", workers=20)
    ds = apply_protocol(load_dataset(path.parent), PROTOCOLS["piaa"])
    evaluator = Evaluator(ds, shots=(10, 100), draws=2, fixed_queries=False)
    r = ds.ratings["test_unseen"]
    for k in (10, 100):
        for draw in (0, 1):
            episodes, skipped = evaluator.episodes("test_unseen", k, draw)
            assert skipped == 0 and len(episodes) == len(np.unique(r.user_idx))
            for e in episodes:
                rated = r.image_idx[r.user_idx == e.user_idx]
                refs, queries = r.image_idx[e.references], r.image_idx[e.queries]
                assert len(refs) == k and len(queries) == PER_WORKER - k
                assert not set(refs.tolist()) & set(queries.tolist())
                assert sorted([*refs.tolist(), *queries.tolist()]) == sorted(rated.tolist())
    # the fixed-query rule, for comparison: every k scores the ratings left after the largest k
    fixed = Evaluator(ds, shots=(10, 100), draws=1)
    assert all(len(e.queries) == PER_WORKER - 100 for e in fixed.episodes("test_unseen", 10)[0])


def test_leaderboard_protocol_piaa(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write_flickr_aes(tmp_path / "FLICKR-AES")
    args = ["leaderboard", "--data", str(path.parent), "--protocol", "piaa", "--models", "biases,mf"]
    assert main([*args, "--draws", "2", "--no-tracking", "--out", str(tmp_path / "out")]) == 0
    board = json.loads((tmp_path / "out" / "leaderboard.json").read_text())
    assert board["protocol"]["name"] == "piaa" and board["protocol"]["shots"] == [10, 100]
    rows = board["rows"]
    assert {(r["split"], r["shots"]) for r in rows} == {("test_unseen", 10), ("test_unseen", 100)}
    for row in rows:
        assert row["n_users"] == 37 and row["n_ratings"] == 37 * (PER_WORKER - row["shots"])
    mf = {r["shots"]: r["metrics"]["user_srocc"] for r in rows if r["model"] == "mf"}
    assert mf[100] > mf[10] > 0.2  # more references, better; and it learns the taste structure
    markdown = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "piaa protocol" in markdown and "task-vector PIAA" in markdown  # published PIAA rows beside
