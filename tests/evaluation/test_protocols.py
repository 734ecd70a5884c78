"""Named protocols: the PIAA preset (fixed test users, 10 and 100 shots, every other rating a query, the test
users' images kept out of training; or a published split from files)."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from recsys.cli import main
from recsys.data import load_dataset
from recsys.data.features_file import write_image_features
from recsys.errors import UserError
from recsys.evaluation.evaluator import Evaluator
from recsys.evaluation.protocols import PROTOCOLS, apply_protocol, piaa_split

WORKERS, IMAGES, PER_WORKER = 80, 300, 120


def latent_ratings(workers=WORKERS, per_worker=PER_WORKER, seed=0, images=IMAGES, pools=None):
    """(worker, image, score 1-5) triples with a two-factor taste structure, and the images' latent factors;
    ``pools`` maps a worker to the images it rates from (default: all)."""
    rng = np.random.default_rng(seed)
    u, v = rng.normal(size=(workers, 2)), rng.normal(size=(images, 2))
    rows = []
    for w in range(workers):
        pool = np.arange(images) if pools is None else pools(w)
        for i in rng.choice(pool, per_worker, replace=False):
            rows.append((w, int(i), int(np.clip(np.rint(3 + u[w] @ v[i] + rng.normal(0, 0.3)), 1, 5))))
    return rows, v


def write_flickr_aes(root, workers=WORKERS, per_worker=PER_WORKER, seed=0, images=IMAGES, pools=None):
    """A FLICKR-AES file as published (``worker, imagePair, score`` with a space after each comma)."""
    rows, _ = latent_ratings(workers, per_worker, seed, images, pools)
    root.mkdir(parents=True, exist_ok=True)
    path = root / "FLICKR-AES_image_labeled_by_each_worker.csv"
    path.write_text(
        "worker, imagePair, score\n" + "".join(f"W{w:03d}, farm{i}_1_2.jpg, {s}\n" for w, i, s in rows)
    )
    return path


def write_para(root, rows):
    """PARA's two annotation files as published (the columns the loader reads, and a user table)."""
    (root / "annotation").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        [(f"session{i % 7}", f"iaa_pub{i}_.jpg", f"A{w}", float(s), "portrait") for w, i, s in rows],
        columns=["sessionId", "imageName", "userId", "aestheticScore", "semantic"],
    ).to_csv(root / "annotation" / "PARA-Images.csv", index=False)
    workers = sorted({w for w, _, _ in rows})
    pd.DataFrame({"userId": [f"A{w}" for w in workers], "gender": "female"}).to_csv(
        root / "annotation" / "PARA-UserInfo.csv", index=False
    )
    return root


def write_lapis(root, rows):
    """A LAPIS CSV as published (the columns the loader reads; ratings on 0-100)."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "LAPIS_individualratings_metaANDdemodata.csv"
    pd.DataFrame(
        [(100 + i, f"img{i}.jpg", 25 * (s - 1), 1000 + w) for w, i, s in rows],
        columns=["image_id", "image_filename", "rating", "participant_id"],
    ).to_csv(path, index=False)
    return path


def sparse_rows():
    """Ratings where the test users' images cannot cover every image: 80 workers, 120 each of 3,000 images."""
    return latent_ratings(images=3000)[0]


FORMATS = {
    "FLICKR-AES": (lambda root: write_flickr_aes(root, images=3000).parent, 37),
    "PARA": (lambda root: write_para(root, sparse_rows()), 40),
    "LAPIS": (lambda root: write_lapis(root, sparse_rows()), 8),
}


@pytest.mark.parametrize("name", list(FORMATS))
def test_no_test_users_image_is_in_a_fit_split(tmp_path, name):
    """Checked against a brute-force recount of the ratings as read: every rating of an image a test user
    rated is out of train and val_seen, every other rating of the other users is in them, and the sentence
    for leaderboard.md has the counts."""
    write, n_test = FORMATS[name]
    ds = load_dataset(write(tmp_path / name))
    everything = {
        (u, i, float(s))
        for r in ds.ratings.values()
        for u, i, s in zip(r.user_idx.tolist(), r.image_idx.tolist(), r.score.tolist(), strict=True)
    }
    split = piaa_split(ds, PROTOCOLS["piaa"])
    out = split.dataset
    test = out.ratings["test_unseen"]
    test_users = set(test.user_idx.tolist())
    assert len(test_users) == n_test == split.test_users
    held_images = {i for u, i, _ in everything if u in test_users}
    fit_ratings = out.fit_ratings("train+val_seen")
    fit = list(zip(fit_ratings.user_idx.tolist(), fit_ratings.image_idx.tolist(), strict=True))
    assert fit and not {i for _, i in fit} & held_images
    assert not {u for u, _ in fit} & test_users
    expected_fit = {(u, i) for u, i, _ in everything if u not in test_users and i not in held_images}
    assert sorted(fit) == sorted(expected_fit)
    removed = sum(1 for u, i, _ in everything if u not in test_users and i in held_images)
    assert removed > 0 and split.removed == removed and split.kept == len(expected_fit)
    assert len(test) == sum(1 for u, _, _ in everything if u in test_users)  # every test rating kept
    assert f"{removed:,} ratings of them by other users removed" in split.describe()
    assert f"the {len(held_images):,} images the test users rated" in split.describe()


def test_piaa_split_fixes_the_test_users(tmp_path):
    path = write_flickr_aes(tmp_path / "FLICKR-AES", images=3000)
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
    assert len(first.ratings["test_unseen"]) == 37 * PER_WORKER
    assert first.splits == ["train", "val_seen", "test_unseen"]


def test_piaa_leaves_no_training_when_the_test_users_rated_every_image(tmp_path):
    path = write_flickr_aes(tmp_path / "FLICKR-AES")  # 37 test workers x 120 of 300 images: all of them
    with pytest.raises(UserError, match="leaves no training rating"):
        apply_protocol(load_dataset(path.parent), PROTOCOLS["piaa"])


def test_published_split_from_files(tmp_path):
    """--test-users picks exactly those users; --test-images keeps exactly those images out of training and
    scores the test users on them only."""
    path = write_flickr_aes(tmp_path / "FLICKR-AES", images=3000)
    ds = load_dataset(path.parent)
    chosen = ["W003", "W017", "W042", "W079"]
    split = piaa_split(ds, PROTOCOLS["piaa"], test_users=chosen)
    test = split.dataset.ratings["test_unseen"]
    assert sorted(ds.user_ids[np.unique(test.user_idx)].tolist()) == chosen
    assert "4 test users (from --test-users)" in split.describe()
    every = [
        (ds.user_ids[u], ds.image_ids[i])
        for r in ds.ratings.values()
        for u, i in zip(r.user_idx.tolist(), r.image_idx.tolist(), strict=True)
    ]
    images = sorted({i for u, i in every if u == "W003"})[:50]  # half of them are test images
    split = piaa_split(ds, PROTOCOLS["piaa"], test_users=chosen, test_images=images)
    test = split.dataset.ratings["test_unseen"]
    assert set(ds.image_ids[test.image_idx].tolist()) <= set(images)
    assert len(test) == sum(1 for u, i in every if u in chosen and i in images)
    assert split.dropped == sum(1 for u, i in every if u in chosen and i not in images)
    assert split.removed == sum(1 for u, i in every if u not in chosen and i in images)
    fit = split.dataset.fit_ratings("train+val_seen")
    assert not set(ds.image_ids[fit.image_idx].tolist()) & set(images)
    assert len(fit) == sum(1 for u, i in every if u not in chosen and i not in images)
    with pytest.raises(UserError, match=re.escape("--test-users: 2 id(s) not in FLICKR-AES")):
        piaa_split(ds, PROTOCOLS["piaa"], test_users=["W003", "nobody", "W999"])
    with pytest.raises(UserError, match="--test-images: 1 id"):
        piaa_split(ds, PROTOCOLS["piaa"], test_users=chosen, test_images=["farm1_1_2.jpg", "nope.jpg"])


def test_piaa_needs_users_with_enough_ratings(tmp_path):
    path = write_flickr_aes(tmp_path / "FLICKR-AES", per_worker=60)
    with pytest.raises(UserError, match="at least 105 ratings"):
        apply_protocol(load_dataset(path.parent), PROTOCOLS["piaa"])


def test_unfixed_queries_score_every_other_rating(tmp_path):
    path = write_flickr_aes(tmp_path / "FLICKR-AES", workers=20, images=3000)
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
    """A published split: 37 test workers rate from their own 300 images, the others mostly from 300 others and
    20 each of the test images (those ratings are removed); features carry the taste to the test images."""
    monkeypatch.chdir(tmp_path)
    test_workers = range(37)
    rng = np.random.default_rng(1)

    def pools(worker: int) -> np.ndarray:
        if worker in test_workers:
            return np.arange(300)
        return np.r_[300 + rng.choice(300, 100, replace=False), rng.choice(300, 20, replace=False)]

    path = write_flickr_aes(tmp_path / "FLICKR-AES", images=600, pools=pools)
    _, v = latent_ratings(images=600)
    features = np.hstack([v, np.random.default_rng(2).normal(0, 0.05, (600, 6))]).astype(np.float32)
    write_image_features(tmp_path / "f.npz", np.array([f"farm{i}_1_2.jpg" for i in range(600)]), features)
    (tmp_path / "test_users.txt").write_text("".join(f"W{w:03d}\n" for w in test_workers))
    args = ["leaderboard", "--data", str(path.parent), "--protocol", "piaa", "--models", "biases,mf"]
    args += ["--image-features", str(tmp_path / "f.npz"), "--test-users", str(tmp_path / "test_users.txt")]
    assert main([*args, "--draws", "2", "--no-tracking", "--out", str(tmp_path / "out")]) == 0
    board = json.loads((tmp_path / "out" / "leaderboard.json").read_text())
    assert board["protocol"]["name"] == "piaa" and board["protocol"]["shots"] == [10, 100]
    rows = board["rows"]
    assert {(r["split"], r["shots"]) for r in rows} == {("test_unseen", 10), ("test_unseen", 100)}
    for row in rows:
        assert row["n_users"] == 37 and row["n_ratings"] == 37 * (PER_WORKER - row["shots"])
    mf = {r["shots"]: r["metrics"]["user_srocc"] for r in rows if r["model"] == "mf"}
    assert mf[100] > mf[10] > 0.2  # more references, better; and features carry the taste to new images
    markdown = (tmp_path / "out" / "leaderboard.md").read_text()
    assert "piaa protocol" in markdown and "task-vector PIAA" in markdown  # published PIAA rows beside
    removed = 43 * 20  # every other worker's 20 ratings of test images
    note = (
        "PIAA split: 37 test users (from --test-users); the 300 images the test users rated kept out of "
        f"training: {removed:,} ratings"
    )
    assert note in markdown and note in board["protocol"]["split"] and note in capsys.readouterr().out


def test_test_users_file_errors_are_one_line(tmp_path, capsys):
    path = write_flickr_aes(tmp_path / "FLICKR-AES", images=3000)
    (tmp_path / "users.txt").write_text("W001\nnobody\n")
    (tmp_path / "empty.txt").write_text("\n")
    base = ["leaderboard", "--data", str(path.parent), "--models", "biases", "--no-tracking"]
    cases = [
        (["--protocol", "piaa", "--test-users", str(tmp_path / "users.txt")], "--test-users: 1 id(s) not in"),
        (["--protocol", "piaa", "--test-users", str(tmp_path / "empty.txt")], "holds no ids"),
        (["--protocol", "piaa", "--test-users", str(tmp_path / "none.txt")], "cannot be read"),
        (["--test-users", str(tmp_path / "users.txt")], "apply to --protocol piaa only"),
    ]
    for extra, message in cases:
        assert main([*base, *extra, "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
