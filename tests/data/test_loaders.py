"""Loaders: PAMELA directories, features files and rating tables, with every bad input the issue lists."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from recsys.cli import main
from recsys.data import load_dataset
from recsys.data.features_file import write_image_features
from recsys.errors import UserError


def entry(user: str, image: int, score: float, **extra) -> dict:
    out = {
        "image_path": f"./images/{image}.png",
        "image_id": image,
        "participant_id": user,
        "image_metadata": {"group": "landscape", "style": None, "category": "AI image", "prompt": "a lake",
                           "type": "Photorealism"},
        "user_demographics": {"age": 28, "age_binned": "twenties", "gender": "male", "nationality": "Italy"},
        "quality_label": "good",
        "original_score": score,
    }  # fmt: skip
    out.update(extra)
    return out


def write_pamela(root, splits: dict[str, list]) -> None:
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split, entries in splits.items():
        (root / "annotations" / f"pamela_{split}.json").write_text(json.dumps(entries))


def good_splits() -> dict[str, list]:
    return {
        "train": [entry("a", 1, 3.0), entry("a", 2, 4.0), entry("b", 1, 2.5), entry("b", 3, 1.0)],
        "test_seen": [entry("a", 10, 3.5), entry("b", 11, 2.0)],
        "test_unseen": [entry("c", 1, 5.0), entry("c", 10, 4.0)],
    }


def test_loads_a_pamela_directory(tmp_path):
    write_pamela(tmp_path, good_splits())
    ds = load_dataset(tmp_path)
    assert ds.pamela_semantics and not ds.simulated
    assert ds.splits == ["train", "test_seen", "test_unseen"]
    assert list(ds.user_ids) == ["a", "b", "c"]
    assert ds.image_ids.dtype == np.int64 and sorted(ds.image_ids) == [1, 2, 3, 10, 11]
    train = ds.ratings["train"]
    assert ds.user_ids[train.user_idx].tolist() == ["a", "a", "b", "b"]
    assert ds.image_ids[train.image_idx].tolist() == [1, 2, 1, 3]
    np.testing.assert_allclose(train.score, [3.0, 4.0, 2.5, 1.0])
    assert ds.users.loc[0, "nationality"] == "Italy" and ds.users.loc[0, "age"] == 28
    assert ds.images.loc[0, "group"] == "landscape" and ds.images["path"].isna().all()  # no images/ dir


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s["train"].append(entry("a", 5, float("nan"))), "NaN"),
        (lambda s: s["train"].append(entry("a", 5, 7.5)), "outside the declared range"),
        (lambda s: s["train"].append(entry("a", 1, 2.0)), "duplicate"),
        (lambda s: s["test_unseen"].append(entry("a", 12, 2.0)), "also rate in train"),
        (lambda s: s["test_seen"].append(entry("b", 2, 2.0)), "also appear in train"),
        (lambda s: s["test_seen"].append(entry("z", 12, 2.0)), "no training ratings"),
        (lambda s: s["train"].append({"image_id": 4, "participant_id": "a"}), "lacks field"),
    ],
)
def test_bad_inputs_are_one_line_errors(tmp_path, mutate, message):
    splits = good_splits()
    mutate(splits)
    write_pamela(tmp_path, splits)
    with pytest.raises(UserError, match=message) as err:
        load_dataset(tmp_path)
    assert "\n" not in str(err.value)
    assert "pamela_" in str(err.value)  # names the file


def test_malformed_json_and_missing_files(tmp_path):
    write_pamela(tmp_path, good_splits())
    (tmp_path / "annotations" / "pamela_test_seen.json").write_text('[{"image_id": 1,')
    with pytest.raises(UserError, match=r"pamela_test_seen.json: malformed JSON at line 1"):
        load_dataset(tmp_path)
    (tmp_path / "annotations" / "pamela_train.json").unlink()
    with pytest.raises(UserError, match="pamela_train.json: missing"):
        load_dataset(tmp_path)
    with pytest.raises(UserError, match="no such file"):
        load_dataset(tmp_path / "nope")


def test_cli_error_is_one_line_and_exit_2(tmp_path, capsys):
    splits = good_splits()
    splits["train"].append(entry("a", 1, 2.0))
    write_pamela(tmp_path, splits)
    assert main(["data", "validate", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "duplicate" in err


def test_validate_prints_summary(tmp_path, capsys):
    write_pamela(tmp_path, good_splits())
    assert main(["data", "validate", str(tmp_path), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["splits"]["train"]["ratings"] == 4 and summary["users"] == 3


def test_features_file_alignment_and_missing_images(tmp_path):
    write_pamela(tmp_path, good_splits())
    ids = np.array([11, 10, 3, 2, 1, 99])
    emb = np.arange(len(ids) * 4, dtype=np.float32).reshape(len(ids), 4)
    write_image_features(tmp_path / "f.npz", ids, emb)
    ds = load_dataset(tmp_path, image_features=tmp_path / "f.npz")
    for idx, image_id in enumerate(ds.image_ids):
        np.testing.assert_array_equal(ds.image_features[idx], emb[list(ids).index(image_id)])
    write_image_features(tmp_path / "g.npz", ids[2:], emb[2:])
    with pytest.raises(UserError, match=r"2 of the dataset's 5 images are missing .*first: 10, 11"):
        load_dataset(tmp_path, image_features=tmp_path / "g.npz")
    np.savez(tmp_path / "h.npz", image_id=ids)
    with pytest.raises(UserError, match="lacks array"):
        load_dataset(tmp_path, image_features=tmp_path / "h.npz")


def test_prompt_features_beside_the_image_features_are_read(tmp_path, capsys):
    """X.text.npz beside X.npz is read into prompt_features (each image's prompt), aligned like the image
    features; --prompt-features names another file; a file missing images is one line, exit 2."""
    write_pamela(tmp_path, good_splits())
    ids = np.array([11, 10, 3, 2, 1])
    write_image_features(tmp_path / "f.npz", ids, np.ones((5, 4), np.float32) + np.arange(5)[:, None])
    assert load_dataset(tmp_path, image_features=tmp_path / "f.npz").prompt_features is None
    prompts = np.arange(10, dtype=np.float32).reshape(5, 2) + 1
    write_image_features(tmp_path / "f.text.npz", ids, prompts)
    ds = load_dataset(tmp_path, image_features=tmp_path / "f.npz")
    assert ds.prompt_source == str(tmp_path / "f.text.npz")
    for idx, image_id in enumerate(ds.image_ids):
        np.testing.assert_array_equal(ds.prompt_features[idx], prompts[list(ids).index(image_id)])
    assert ds.summary()["prompt_features"] == {"dim": 2, "source": str(tmp_path / "f.text.npz")}
    assert (
        load_dataset(tmp_path, image_features=tmp_path / "f.npz", prompt_features=False).prompt_features
        is None
    )
    other = load_dataset(tmp_path, image_features=tmp_path / "f.npz", prompt_features=tmp_path / "f.npz")
    assert other.prompt_features.shape == (5, 4) and other.fingerprint() != ds.fingerprint()
    write_image_features(tmp_path / "short.npz", ids[1:], prompts[1:])
    (tmp_path / "short.bad.json").write_text(
        json.dumps({"left_out": [{"image_id": 11, "reason": "no prompt"}]})
    )
    no_prompt = load_dataset(
        tmp_path, image_features=tmp_path / "f.npz", prompt_features=tmp_path / "short.npz"
    )
    np.testing.assert_array_equal(no_prompt.prompt_features[no_prompt.image_index(11)], 0.0)
    assert len(no_prompt.ratings["test_seen"]) == 2  # its ratings stay: only its prompt is unknown
    (tmp_path / "short.bad.json").unlink()
    assert main(["data", "validate", str(tmp_path), "--image-features", str(tmp_path / "f.npz")]) == 0
    assert "prompt features: 2-d from" in capsys.readouterr().out
    assert main(["data", "validate", str(tmp_path), "--image-features", str(tmp_path / "f.npz"),
                 "--prompt-features", "none"]) == 0  # fmt: skip
    assert "prompt features" not in capsys.readouterr().out
    assert main(["data", "validate", str(tmp_path), "--prompt-features", str(tmp_path / "short.npz")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "short.npz: 1 of the dataset's 5 images are missing" in err


def make_table(tmp_path, n_users=30, n_items=40, seed=0):
    rng = np.random.default_rng(seed)
    rows = [
        (f"u{u}", i, float(rng.integers(1, 6)))
        for u in range(n_users)
        for i in rng.choice(n_items, 15, replace=False)
    ]
    table = pd.DataFrame(rows, columns=["user_id", "item_id", "score"])
    table.to_csv(tmp_path / "ratings.csv", index=False)
    pd.DataFrame({"user_id": [f"u{u}" for u in range(n_users)], "age": rng.integers(18, 70, n_users),
                  "country": rng.choice(["x", "y"], n_users)}).to_csv(tmp_path / "users.csv", index=False)  # fmt: skip
    pd.DataFrame({"item_id": range(n_items), "genre": rng.choice(["a", "b", "c"], n_items)}).to_csv(
        tmp_path / "items.csv", index=False
    )
    return table


def test_table_random_holdout(tmp_path):
    table = make_table(tmp_path)
    ds = load_dataset(tmp_path, holdout="random:0.2", seed=1)
    assert not ds.pamela_semantics
    sizes = {s: len(r) for s, r in ds.ratings.items()}
    assert sum(sizes.values()) == len(table)
    assert abs(sizes["test_seen"] - 0.2 * len(table)) <= 3
    assert set(ds.ratings["test_seen"].user_idx) <= set(ds.ratings["train"].user_idx)
    assert list(ds.users.columns) == ["age", "country"] and ds.users["age"].notna().all()
    assert ds.image_ids.dtype == np.int64
    again = load_dataset(tmp_path, holdout="random:0.2", seed=1)
    np.testing.assert_array_equal(again.ratings["test_seen"].image_idx, ds.ratings["test_seen"].image_idx)


def test_table_user_holdout_and_explicit_split(tmp_path):
    table = make_table(tmp_path)
    ds = load_dataset(tmp_path, holdout="users:0.2", seed=0)
    assert not set(ds.ratings["test_unseen"].user_idx) & set(ds.ratings["train"].user_idx)
    assert len(np.unique(ds.ratings["test_unseen"].user_idx)) == 6
    table["split"] = "train"
    table.loc[table.user_id == "u0", "split"] = "test_unseen"
    table.to_parquet(tmp_path / "r.parquet")
    ds = load_dataset(tmp_path / "r.parquet")
    assert ds.user_ids[np.unique(ds.ratings["test_unseen"].user_idx)].tolist() == ["u0"]
    with pytest.raises(UserError, match="drop --holdout"):
        load_dataset(tmp_path / "r.parquet", holdout="random:0.2")


def test_table_bad_inputs(tmp_path):
    make_table(tmp_path)
    with pytest.raises(UserError, match="--holdout"):
        load_dataset(tmp_path, holdout="random:2")
    pd.DataFrame({"user": [1], "item_id": [1], "score": [1]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(UserError, match="lacks column"):
        load_dataset(tmp_path / "bad.csv")
    pd.DataFrame({"user_id": [1, 1], "item_id": [1, 1], "score": [1, 2], "split": ["train", "train"]}).to_csv(
        tmp_path / "dup.csv", index=False
    )
    with pytest.raises(UserError, match="duplicate"):
        load_dataset(tmp_path / "dup.csv")
    pd.DataFrame({"user_id": [1, 2], "item_id": [1, 1], "score": [1, 9]}).to_csv(
        tmp_path / "rng.csv", index=False
    )
    with pytest.raises(UserError, match="outside the declared range"):
        load_dataset(tmp_path / "rng.csv", score_range=(1, 5))


def test_images_left_out_of_a_features_file_drop_their_ratings(tmp_path, capsys):
    write_pamela(tmp_path, good_splits())
    ids = np.array([1, 2, 3, 10])  # image 11 could not be decoded
    write_image_features(tmp_path / "f.npz", ids, np.ones((4, 3), np.float32))
    (tmp_path / "f.bad.json").write_text(
        json.dumps({"left_out": [{"image_id": 11, "path": "x.png", "reason": "truncated"}]})
    )
    ds = load_dataset(tmp_path, image_features=tmp_path / "f.npz")
    assert 11 not in ds.image_ids[ds.ratings["test_seen"].image_idx]
    assert len(ds.ratings["test_seen"]) == 1
    assert "dropped 1 ratings of 1 image(s)" in capsys.readouterr().out


# ---------------------------------------------------------------------- leaks across splits (issue 11)
def _val(splits: dict, split: str, *entries) -> None:
    splits.setdefault(split, []).extend(entries)


LEAKS = {
    "same pair in val_seen and test_seen": (
        ("val_seen", entry("a", 10, 3.0)),
        "pair(s) of test_seen also in val_seen: user a / image 10",
    ),
    "val_seen image also in test_seen": (
        ("val_seen", entry("b", 10, 3.0)),
        "image(s) of test_seen also in val_seen: 10",
    ),
    "val_seen image in train": (
        ("val_seen", entry("a", 3, 3.0)),
        "image(s) of seen split val_seen also appear in train",
    ),
    "val_unseen user also in test_unseen": (
        ("val_unseen", entry("c", 2, 3.0)),
        "user(s) of test_unseen also in val_unseen: c",
    ),
    "val_unseen user in train": (
        ("val_unseen", entry("a", 20, 3.0)),
        "user(s) of unseen split val_unseen also rate in train",
    ),
}


@pytest.mark.parametrize("leak", list(LEAKS))
def test_every_leak_across_splits_fails_validation(tmp_path, leak, capsys):
    (split, extra), message = LEAKS[leak]
    splits = good_splits()
    _val(splits, split, extra)
    write_pamela(tmp_path, splits)
    problems: list[str] = []
    load_dataset(tmp_path, problems=problems)
    assert any(message in p for p in problems), problems
    with pytest.raises(UserError):
        load_dataset(tmp_path)
    assert main(["data", "validate", str(tmp_path)]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_the_good_fixture_has_no_leak(tmp_path):
    splits = good_splits()
    _val(splits, "val_seen", entry("a", 12, 3.0), entry("b", 13, 2.0))
    _val(splits, "val_unseen", entry("d", 1, 3.0))
    write_pamela(tmp_path, splits)
    problems: list[str] = []
    load_dataset(tmp_path, problems=problems)
    assert problems == []


@pytest.mark.parametrize("split", ["test_seen", "val_seen", "test_unseen"])
def test_an_empty_split_file_is_one_line_exit_2(tmp_path, capsys, split):
    splits = good_splits()
    splits[split] = []
    write_pamela(tmp_path, splits)
    assert main(["data", "validate", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"pamela_{split}.json: no ratings (an empty split)" in err and "Traceback" not in err
    argv = ["leaderboard", "--data", str(tmp_path), "--models", "global_mean", "--no-tracking"]
    assert main([*argv, "--out", str(tmp_path / "board")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "no ratings" in err


def test_a_table_pair_in_train_and_test_seen_fails(tmp_path):
    rows = {
        "user_id": ["u", "u", "u", "v"],
        "item_id": [1, 2, 1, 3],
        "score": [1.0, 2.0, 3.0, 4.0],
        "split": ["train", "train", "test_seen", "train"],
    }
    pd.DataFrame(rows).to_csv(tmp_path / "leak.csv", index=False)
    problems: list[str] = []
    load_dataset(tmp_path / "leak.csv", problems=problems)
    assert any("pair(s) of test_seen also in train: user u / image 1" in p for p in problems), problems


def test_table_duplicates_are_checked_before_the_holdout(tmp_path):
    """A pair rated twice fails on the whole table, whichever splits a holdout would put its ratings in."""
    table = make_table(tmp_path)
    duplicated = pd.concat([table, table.iloc[[0]]], ignore_index=True)
    duplicated.to_csv(tmp_path / "ratings.csv", index=False)
    for seed in range(3):
        problems: list[str] = []
        load_dataset(tmp_path, holdout="random:0.3", seed=seed, problems=problems)
        assert any("duplicate (user, image) pair" in p and "ratings.csv:" in p for p in problems), problems
