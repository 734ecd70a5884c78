"""Pairwise data: Pick-a-Pic v2 shards as published, pairs tables, the split rule, string image ids, the Dataset."""

from __future__ import annotations

import io
import json
import re
from dataclasses import replace
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

import recsys.data.pickapic as pickapic_module
from recsys.cli import main
from recsys.data import Choices, load_dataset
from recsys.data.choices import choice_sessions
from recsys.data.features_file import write_image_features
from recsys.data.pickapic import iter_pickapic_images, load_pickapic, pair_holdout
from recsys.data.simulate_pairs import PICKAPIC_SCHEMA, write_pickapic_shard
from recsys.errors import UserError

UID = {name: f"{i:08x}-1111-4222-8333-444455556666" for i, name in enumerate("ABCDEFGH")}


def jpeg(name: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (30 * "ABCDEFGH".index(name), 90, 160)).save(buffer, format="JPEG")
    return buffer.getvalue()


def row(user, caption, a, b, label_0, label_1, *, has_label=True, are_different=True, ranking_id=0) -> dict:
    best = UID[a] if label_0 == 1.0 else UID[b] if label_1 == 1.0 else ""
    return {
        "are_different": are_different,
        "best_image_uid": best,
        "caption": caption,
        "created_at": datetime(2023, 5, 1, 12, 0, ranking_id % 60),
        "has_label": has_label,
        "image_0_uid": UID[a],
        "image_0_url": f"https://example.invalid/{UID[a]}.png",
        "image_1_uid": UID[b],
        "image_1_url": f"https://example.invalid/{UID[b]}.png",
        "jpg_0": jpeg(a),
        "jpg_1": jpeg(b),
        "label_0": label_0,
        "label_1": label_1,
        "model_0": "sdxl" if a in "ACE" else "sd-2.1",
        "model_1": "sdxl" if b in "ACE" else "sd-2.1",
        "ranking_id": ranking_id,
        "user_id": user,
        "num_example_per_prompt": 2,
    }


def write_shard(path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_pickapic_shard(path, {name: [r[name] for r in rows] for name in PICKAPIC_SCHEMA.names})


def good_shards() -> dict[str, list[dict]]:
    return {
        "train-00000-of-00002.parquet": [
            row(7, "a red fox", "A", "B", 1.0, 0.0, ranking_id=1),
            row(7, "a red fox", "A", "C", 0.0, 1.0, ranking_id=2),
            row(8, "a harbour", "D", "E", 0.5, 0.5, ranking_id=3),  # a tie
            row(8, "a harbour", "D", "E", 0.0, 0.0, has_label=False, ranking_id=4),
        ],
        "train-00001-of-00002.parquet": [
            row(9, "a glass forest", "F", "F", 0.5, 0.5, are_different=False, ranking_id=5),
            row(9, "a glass forest", "B", "F", 0.0, 1.0, ranking_id=6),
            row(7, "a red fox", "C", "B", 1.0, 0.0, ranking_id=7),
        ],
        "validation-00000-of-00001.parquet": [row(10, "a cat", "G", "H", 1.0, 0.0, ranking_id=8)],
    }


def write_pickapic(root, shards: dict[str, list[dict]] | None = None):
    for name, rows in (shards or good_shards()).items():
        write_shard(root / "data" / name, rows)
    return root


def choices(ds) -> set[tuple]:
    """Every choice of every split as (user id, image a uid, image b uid, choice)."""
    out = set()
    for p in ds.choices.values():
        for u, a, b, c in zip(p.user_idx, p.image_a, p.image_b, p.choice, strict=True):
            out.add((ds.user_ids[u], ds.image_ids[a], ds.image_ids[b], float(c)))
    return out


def test_loads_pickapic_shards_as_published(tmp_path, capsys):
    ds = load_dataset(write_pickapic(tmp_path))
    assert (
        capsys.readouterr().out.count("dropped 2 row(s) that are not choices (1 without a label, 1 whose two")
        == 1
    )
    assert ds.ratings == {} and ds.score_range == (0.0, 1.0) and not ds.simulated
    assert choices(ds) == {
        (7, UID["A"], UID["B"], 1.0),
        (7, UID["A"], UID["C"], 0.0),
        (8, UID["D"], UID["E"], 0.5),
        (9, UID["B"], UID["F"], 0.0),
        (7, UID["C"], UID["B"], 1.0),
    }
    assert sorted(ds.user_ids.tolist()) == [7, 8, 9]  # user 10 is only in the validation file
    assert sorted(ds.image_ids.tolist()) == [UID[x] for x in "ABCDEF"]
    prompt = dict(zip(ds.image_ids.tolist(), ds.images["prompt"], strict=True))
    model = dict(zip(ds.image_ids.tolist(), ds.images["model"], strict=True))
    # F's first choice row is "a glass forest"; its dropped rows do not count
    assert prompt[UID["A"]] == prompt[UID["C"]] == "a red fox" and prompt[UID["F"]] == "a glass forest"
    assert model[UID["A"]] == "sdxl" and model[UID["B"]] == "sd-2.1"
    for p in ds.choices.values():
        assert p.user_idx.dtype == np.int64 and p.image_a.dtype == np.int64 and p.choice.dtype == np.float32
    summary = ds.summary()
    assert sum(s["pairs"] for s in summary["pairs"].values()) == 5
    assert sum(s["ties"] for s in summary["pairs"].values()) == 1


def test_three_users_give_one_seen_and_two_unseen(tmp_path):
    ds = load_dataset(write_pickapic(tmp_path))
    # users:0.1 of 3 users: max(1, round(0.3)) = 1 test_unseen, max(1, round(0.2)) = 1 val_unseen
    test_users = set(ds.user_ids[ds.choices["test_unseen"].user_idx].tolist())
    val_users = set(ds.user_ids[ds.choices["val_unseen"].user_idx].tolist())
    train_users = set(ds.user_ids[ds.choices["train"].user_idx].tolist())
    assert len(test_users) == len(val_users) == len(train_users) == 1
    assert test_users | val_users | train_users == {7, 8, 9}
    order = np.random.default_rng(0).permutation(np.arange(3))
    assert test_users == {ds.user_ids[order[0]]} and val_users == {ds.user_ids[order[1]]}


def test_published_splits_widen_the_pool(tmp_path):
    ds = load_pickapic(
        write_pickapic(tmp_path), published_splits=("train", "validation"), holdout="random:0.2"
    )
    assert (10, UID["G"], UID["H"], 1.0) in choices(ds)
    with pytest.raises(UserError, match="unknown Pick-a-Pic split"):
        load_pickapic(tmp_path, published_splits=("dev",))


def test_the_index_never_reads_the_image_bytes(tmp_path, monkeypatch):
    read = []
    real = pq.read_table

    def recording(path, *, columns=None, **kwargs):
        read.append(columns)
        return real(path, columns=columns, **kwargs)

    monkeypatch.setattr(pickapic_module.pq, "read_table", recording)
    load_dataset(write_pickapic(tmp_path))
    assert len(read) == 2 and all(c is not None and "jpg_0" not in c and "jpg_1" not in c for c in read)


def test_image_bytes_stream_from_the_first_row_that_shows_each_image(tmp_path):
    root = write_pickapic(tmp_path)
    streamed = list(iter_pickapic_images(root, [UID["F"], "no-such-uid", UID["B"]], batch_rows=2))
    assert [(uid, blob) for uid, blob, _ in streamed] == [
        (UID["B"], jpeg("B")),
        (UID["F"], jpeg("F")),
        ("no-such-uid", None),
    ]
    assert streamed[0][2].endswith("train-00000-of-00002.parquet row 0 jpg_1")
    assert streamed[1][2].endswith("train-00001-of-00002.parquet row 0 jpg_0")
    _write_without(tmp_path / "bare", "jpg_0")
    with pytest.raises(
        UserError, match=r"lacks column\(s\) jpg_0; embedding needs the shards with image bytes"
    ):
        list(iter_pickapic_images(tmp_path / "bare", [UID["A"]]))


def _write_without(root, column):
    for name, rows in good_shards().items():
        table = pa.Table.from_pylist(rows, schema=PICKAPIC_SCHEMA).drop_columns([column])
        (root / "data").mkdir(parents=True, exist_ok=True)
        pq.write_table(table, root / "data" / name)


FIRST, SECOND = "train-00000-of-00002.parquet", "train-00001-of-00002.parquet"


@pytest.mark.parametrize(
    ("mutate", "message", "left"),
    [
        (
            lambda s: s[SECOND].append(row(9, "x", "A", "B", 1.0, 1.0)),
            f"{SECOND}: label_0/label_1 are 1/1 at row(s) 3",
            5,
        ),
        (lambda s: s[FIRST].append(row(7, "x", "A", "D", float("nan"), 0.0)), "are nan/0 at row(s) 4", 5),
        (
            lambda s: s[FIRST][0].update(image_1_uid=""),
            f"{FIRST}: empty user_id, image_0_uid or image_1_uid at row(s) 0",
            4,
        ),
        (
            lambda s: s[FIRST][1].update(label_0=0.7, label_1=0.3),
            "at row(s) 1; a labelled comparison has 1/0, 0/1",
            4,
        ),
    ],
)
def test_bad_pickapic_rows_are_one_line_errors(tmp_path, mutate, message, left):
    shards = good_shards()
    mutate(shards)
    write_pickapic(tmp_path, shards)
    with pytest.raises(UserError, match=re.escape(message)) as err:
        load_dataset(tmp_path)
    assert "\n" not in str(err.value) and "train-0000" in str(err.value)
    problems: list[str] = []
    ds = load_dataset(tmp_path, problems=problems)
    assert len(problems) == 1 and len(choices(ds)) == left  # the bad row is left out, the rest loads


def test_a_shard_without_a_needed_column_or_unreadable_is_a_one_line_error(tmp_path):
    _write_without(tmp_path, "label_1")
    with pytest.raises(UserError, match=r"train-00000-of-00002.parquet: lacks column\(s\) label_1") as err:
        load_dataset(tmp_path)
    assert "\n" not in str(err.value)
    broken = tmp_path / "broken"
    (broken / "data").mkdir(parents=True)
    (broken / "data" / "train-00000-of-00001.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(UserError, match="not a readable parquet file") as err:
        load_dataset(broken)
    assert "\n" not in str(err.value)


def test_a_shard_without_image_bytes_still_loads(tmp_path):
    _write_without(tmp_path, "jpg_1")
    assert len(choices(load_dataset(tmp_path))) == 5


def test_validate_reports_pickapic_problems_and_summary(tmp_path, capsys):
    shards = good_shards()
    shards["train-00000-of-00002.parquet"].append(row(7, "x", "A", "D", 2.0, 0.0))
    write_pickapic(tmp_path / "bad", shards)
    assert main(["data", "validate", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "label_0/label_1 are 2/0" in err
    write_pickapic(tmp_path / "good")
    assert main(["data", "validate", str(tmp_path / "good"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.split("\n", 1)[1])  # after the one "dropped" line
    assert sum(s["pairs"] for s in summary["pairs"].values()) == 5 and summary["splits"] == {}


# --------------------------------------------------------------------------------------------- the split rule
def synthetic_pairs(n_users: int = 20, per_user: int = 10) -> Choices:
    """User u compares images (u*100 + i, u*100 + i + 1) for i < per_user, and repeats its first comparison
    with the sides swapped."""
    users, a, b = [], [], []
    for u in range(n_users):
        users += [u] * (per_user + 1)
        a += [u * 100 + i for i in range(per_user)] + [u * 100 + 1]
        b += [u * 100 + i + 1 for i in range(per_user)] + [u * 100]
    n = len(users)
    return Choices(np.array(users), np.array(a), np.array(b), np.ones(n, np.float32))


def test_the_pair_holdout_follows_its_rule():
    pairs = synthetic_pairs()
    split_of = pair_holdout(pairs, "users:0.1", seed=3)
    order = np.random.default_rng(3).permutation(np.arange(20))
    # step 1: round(0.1 * 20) = 2 test_unseen users, round(0.1 * 18) = 2 val_unseen users
    assert set(pairs.user_idx[split_of == "test_unseen"]) == set(order[:2].tolist())
    assert set(pairs.user_idx[split_of == "val_unseen"]) == set(order[2:4].tolist())
    for u in order[4:].tolist():
        # 10 distinct comparisons (the 11th row repeats the first, sides swapped, and shares its split):
        # floor(0.1 * 10 + 0.5) = 1 test_seen, floor(0.1 * 9 + 0.5) = 1 val_seen, 8 train
        mine = split_of[pairs.user_idx == u]
        assert mine[0] == mine[-1]
        assert (mine[:-1] == "test_seen").sum() == 1 and (mine[:-1] == "val_seen").sum() == 1
    np.testing.assert_array_equal(split_of, pair_holdout(pairs, "users:0.1", seed=3))
    assert not np.array_equal(split_of, pair_holdout(pairs, "users:0.1", seed=4))
    assert not any(s.endswith("_unseen") for s in pair_holdout(pairs, "random:0.1", seed=3))


def test_a_user_with_one_comparison_keeps_it_in_train_and_too_few_users_is_an_error():
    one = Choices(np.array([0, 1]), np.array([0, 2]), np.array([1, 3]), np.ones(2, np.float32))
    assert pair_holdout(one, "random:0.4", seed=0).tolist() == ["train", "train"]
    with pytest.raises(UserError, match="only 2 users with choices"):
        pair_holdout(one, "users:0.1", seed=0)


def test_sessions_join_a_users_choices_by_prompt_and_by_shared_image():
    # user 0: "fox" (images 0-1, 1-2), "owl" (3-4), "cat" (5-6) shares image 4 with "owl"; "fox" again later;
    # user 1: "fox" too (its own images 7-8); a choice without a caption (9-10) and a repeat of it (10-9)
    user = np.array([0, 0, 0, 0, 1, 0, 1, 1])
    a = np.array([0, 1, 3, 5, 7, 2, 9, 10])
    b = np.array([1, 2, 4, 4, 8, 11, 10, 9])
    prompts = np.array(["fox", "fox", "owl", "cat", "fox", "fox", None, None], dtype=object)
    pairs = Choices(user, a, b, np.ones(8, np.float32))
    sessions = choice_sessions(pairs, 12, prompts)
    # by hand: {0, 1, 5} (fox), {2, 3} (owl + cat through image 4), {4} (user 1's fox), {6, 7} (one comparison)
    assert sessions.tolist() == [0, 0, 1, 1, 2, 0, 3, 3]
    # without prompts: each distinct comparison, ascending (user, lower image, higher image)
    by_comparison = choice_sessions(pairs, 12)
    codes = [(u, min(x, y), max(x, y)) for u, x, y in zip(user.tolist(), a.tolist(), b.tolist(), strict=True)]
    ranks = {code: i for i, code in enumerate(sorted(set(codes)))}
    assert by_comparison.tolist() == [ranks[c] for c in codes] and by_comparison[6] == by_comparison[7]


def test_the_pair_holdout_keeps_sessions_whole():
    """20 users, each with 10 sessions of one to three comparisons chained as on the site (the chosen image
    stays): every session falls in one split, floor(0.1 * 10 + 0.5) = 1 session per seen user is test_seen and
    floor(0.1 * 9 + 0.5) = 1 val_seen, and no held-out image of a seen user is in the user's training choices."""
    rng = np.random.default_rng(0)
    users, a, b, session = [], [], [], []
    image = 0
    for u in range(20):
        for _ in range(10):
            n = int(rng.integers(1, 4))
            images = image + np.arange(n + 1)
            image += n + 1
            kept = images[0]
            for step in range(n):
                users.append(u)
                a.append(kept)
                b.append(images[step + 1])
                session.append(len(set(session)) if step == 0 else session[-1])
                kept = images[step + 1] if rng.random() < 0.5 else kept
    pairs = Choices(
        np.array(users), np.array(a), np.array(b), np.ones(len(users), np.float32), np.array(session)
    )
    split_of = pair_holdout(pairs, "users:0.1", seed=3)
    for s in np.unique(pairs.session):
        assert len(set(split_of[pairs.session == s])) == 1
    for u in set(users) - set(pairs.user_idx[np.char.endswith(split_of.astype(str), "_unseen")].tolist()):
        mine = pairs.user_idx == u
        for split in ("test_seen", "val_seen"):
            assert len(np.unique(pairs.session[mine & (split_of == split)])) == 1
        train = mine & (split_of == "train")
        held = mine & (split_of != "train")
        trained = set(pairs.image_a[train].tolist()) | set(pairs.image_b[train].tolist())
        assert not trained & (set(pairs.image_a[held].tolist()) | set(pairs.image_b[held].tolist()))
    # without sessions the same pairs split comparison by comparison: sessions straddle splits
    one_by_one = pair_holdout(replace(pairs, session=None), "users:0.1", seed=3)
    assert any(len(set(one_by_one[pairs.session == s])) > 1 for s in np.unique(pairs.session))


def test_loaded_pickapic_choices_carry_their_sessions(tmp_path):
    ds = load_dataset(write_pickapic(tmp_path))
    every = Choices.concat([ds.choices[s] for s in ds.choice_splits])
    by_user = {}
    for u, s in zip(ds.user_ids[every.user_idx].tolist(), every.session.tolist(), strict=True):
        by_user.setdefault(u, set()).add(s)
    # one caption per user in the good shards: one session each, three in all
    assert {u: len(s) for u, s in by_user.items()} == {7: 1, 8: 1, 9: 1}
    assert len(set().union(*by_user.values())) == 3


# --------------------------------------------------------------------------------------------- pairs tables
def write_table(path, rows: dict, users: dict | None = None):
    pd.DataFrame(rows).to_csv(path, index=False)
    if users is not None:
        pd.DataFrame(users).to_csv(path.parent / "users.csv", index=False)
    return path


def table_rows() -> dict:
    return {
        "user_id": ["ann", "ann", "ann", "bob", "bob", "cat"],
        "item_a": [1, 2, 3, 1, 4, 2],
        "item_b": [2, 3, 1, 4, 5, 5],
        "choice": ["a", "b", "tie", "B", " a ", "a"],
        "split": ["train", "train", "test_seen", "train", "test_seen", "test_unseen"],
    }


def test_loads_a_pairs_table(tmp_path):
    path = write_table(tmp_path / "choices.csv", table_rows(), {"user_id": ["ann", "bob"], "age": [31, 47]})
    ds = load_dataset(path)
    assert ds.name == "pairs table (choices.csv)" and ds.ratings == {}
    assert ds.choice_splits == ["train", "test_seen", "test_unseen"]
    assert ds.image_ids.dtype == np.int64 and ds.image_ids.tolist() == [1, 2, 3, 4, 5]
    train = ds.choices["train"]
    assert ds.user_ids[train.user_idx].tolist() == ["ann", "ann", "bob"]
    assert ds.image_ids[train.image_a].tolist() == [1, 2, 1] and ds.image_ids[train.image_b].tolist() == [
        2,
        3,
        4,
    ]
    np.testing.assert_array_equal(train.choice, [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(ds.choices["test_seen"].choice, [0.5, 1.0])
    assert ds.users["age"].tolist()[:2] == [31, 47] and np.isnan(ds.users["age"].tolist()[2])
    assert ds.train_users().tolist() == [0, 1] and ds.train_images().tolist() == [0, 1, 2, 3]


def test_a_pairs_table_without_split_column_gets_the_holdout(tmp_path):
    rows = table_rows()
    del rows["split"]
    ds = load_dataset(write_table(tmp_path / "pairs.csv", rows), holdout="random:0.2")
    expected = [("ann", 1, 2, 1.0), ("ann", 2, 3, 0.0), ("ann", 3, 1, 0.5), ("bob", 1, 4, 0.0)]
    assert choices(ds) == {*expected, ("bob", 4, 5, 1.0), ("cat", 2, 5, 1.0)}


def _set(column: str, position: int, value):
    return lambda rows: rows[column].__setitem__(position, value)


def _duplicate(rows):
    rows["split"] = ["train"] * 6
    rows["item_a"][2], rows["item_b"][2] = 2, 1  # ann compares 1 and 2 again, the other way round


def _unknown_user_in_val_seen(rows):
    rows["split"][4], rows["user_id"][4] = "val_seen", "dan"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_set("choice", 2, "left"), "choice 'left' at row(s) 2; use a, b or tie"),
        (_set("item_b", 0, 1), "item_a equals item_b at row(s) 0"),
        (_set("user_id", 1, None), "empty user_id, item_a or item_b at row(s) 1"),
        (
            _duplicate,
            "1 duplicate comparison(s) of the same two items by the same user in one split: user ann (rows 0",
        ),
        (_set("split", 1, "val_sen"), "unknown split value(s) val_sen"),
        (_set("item_b", 4, 1), "1 comparison(s) of test_seen also in train: user bob / images 1 and 4"),
        (_set("user_id", 5, "bob"), "1 user(s) of unseen split test_unseen also choose in train: bob"),
        (_unknown_user_in_val_seen, "1 user(s) of seen split val_seen have no training choices: dan"),
        (lambda rows: rows.pop("choice"), "lacks column(s) choice"),
    ],
)
def test_bad_pairs_tables_are_one_line_errors(tmp_path, mutate, message):
    rows = table_rows()
    mutate(rows)
    write_table(tmp_path / "pairs.csv", rows)
    with pytest.raises(UserError, match=re.escape(message)) as err:
        load_dataset(tmp_path)
    assert "\n" not in str(err.value) and "pairs.csv" in str(err.value)


# --------------------------------------------------------------------------------------------- features, Dataset
def test_string_image_ids_in_a_features_file(tmp_path):
    root = write_pickapic(tmp_path / "pickapic")
    ids = np.array([UID[x] for x in "FEDCBAH"])  # another order, and one extra image
    assert ids.dtype.kind == "U"
    embedding = np.arange(len(ids) * 3, dtype=np.float32).reshape(-1, 3)
    write_image_features(tmp_path / "f.npz", ids, embedding)
    ds = load_dataset(root, image_features=tmp_path / "f.npz")
    for i, uid in enumerate(ds.image_ids.tolist()):
        np.testing.assert_array_equal(ds.image_features[i], embedding[ids.tolist().index(uid)])
    # an object array (what np.savez pickles) is refused with a way out
    np.savez(tmp_path / "objects.npz", image_id=np.array(ids.tolist(), dtype=object), embedding=embedding)
    with pytest.raises(UserError, match="pickled Python objects.*dtype=str") as err:
        load_dataset(root, image_features=tmp_path / "objects.npz")
    assert "\n" not in str(err.value)
    # write_image_features turns an object array of strings into fixed-width unicode
    write_image_features(tmp_path / "g.npz", np.array(ids[:6].tolist(), dtype=object), embedding[:6])
    with np.load(tmp_path / "g.npz", allow_pickle=False) as data:
        assert data["image_id"].dtype.kind == "U"
    write_image_features(tmp_path / "h.npz", ids[:4], embedding[:4])
    with pytest.raises(UserError, match="2 of the dataset's 6 images are missing"):
        load_dataset(root, image_features=tmp_path / "h.npz")


def test_a_pairwise_dataset_keeps_the_dataset_contract(tmp_path):
    ds = load_dataset(write_table(tmp_path / "pairs.csv", table_rows()))
    view = ds.fit_view("train", "test_seen")
    assert view.choice_splits == ["train", "test_seen"] and view.validation_split == "test_seen"
    assert (
        view.choices["train"] is ds.choices["train"]
        and view.ground_truth_choices is None
        and view.ratings == {}
    )
    assert "test_unseen" not in ds.fit_view("train").choices
    assert len(ds.fit_choices("train+test_seen")) == 5
    with pytest.raises(UserError, match="holds pairwise choices, not ratings"):
        ds.fit_ratings("train")
    with pytest.raises(UserError, match="no pairwise choices in split 'val_seen'"):
        ds.fit_choices("val_seen")
    # the fingerprint sees the choices
    flipped = pd.DataFrame(table_rows())
    flipped.loc[0, "choice"] = "b"
    (tmp_path / "other").mkdir()
    flipped.to_csv(tmp_path / "other" / "pairs.csv", index=False)
    assert load_dataset(tmp_path / "other" / "pairs.csv").fingerprint() != ds.fingerprint()
    assert load_dataset(tmp_path / "pairs.csv").fingerprint() == ds.fingerprint()
    # dropping an image drops every pair that shows it
    dropped, count = ds.drop_images(np.array([ds.image_index(1)]))
    assert count == 3 and len(dropped.choices["train"]) == 1


def test_a_dataset_needs_training_ratings_or_choices(tmp_path):
    rows = table_rows()
    rows["split"] = ["test_seen"] * 6
    with pytest.raises(UserError, match="no training comparisons"):
        load_dataset(write_table(tmp_path / "pairs.csv", rows))
