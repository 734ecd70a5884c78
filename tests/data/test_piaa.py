"""PIAA datasets (PARA, LAPIS, FLICKR-AES): loaders on fixtures written in the published formats."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from recsys.cli import main
from recsys.data import load_dataset
from recsys.errors import UserError

PARA_IMAGE_COLUMNS = [
    "sessionId",
    "imageName",
    "userId",
    "aestheticScore",
    "qualityScore",
    "compositionScore",
    "colorScore",
    "dofScore",
    "contentScore",
    "lightScore",
    "isObjectEmphasis",
    "imgEmotion",
    "difficultyOfJudgment",
    "contentPreference",
    "willingnessToShare",
    "semantic",
]
PARA_USER_COLUMNS = [
    "userId",
    "age",
    "gender",
    "EducationalLevel",
    "artExperience",
    "photographyExperience",
    "personality-E",
    "personality-A",
    "personality-N",
    "personality-O",
    "personality-C",
]


def ratings_by_id(ds) -> set[tuple]:
    """Every rating of every split as (user id, image id, score)."""
    out = set()
    for r in ds.ratings.values():
        for u, i, s in zip(r.user_idx, r.image_idx, r.score, strict=True):
            out.add((ds.user_ids[u], ds.image_ids[i], float(s)))
    return out


# --------------------------------------------------------------------------------------------- PARA
def para_rows() -> list[tuple]:
    # (sessionId, imageName, userId, aestheticScore, semantic)
    return [
        ("session1", "iaa_pub1_.jpg", "A0", 3.5, "portrait"),
        ("session1", "iaa_pub2_.jpg", "A0", 4.0, "animal"),
        ("session1", "iaa_pub1_.jpg", "A1", 2.5, "portrait"),
        ("session2", "iaa_pub3_.jpg", "A1", 5.0, "scene"),
        ("session2", "iaa_pub3_.jpg", "A2", 1.0, "scene"),
        ("session2", "iaa_pub2_.jpg", "A2", 3.0, "animal"),
    ]


def write_para(root, rows=None, users=True):
    (root / "annotation").mkdir(parents=True, exist_ok=True)
    records = []
    for session, name, user, score, semantic in rows or para_rows():
        # the per-rating judgements other than aestheticScore are written as published and must not be read
        records.append(
            [session, name, user, score, 3.0, 3.0, 3.0, 3.0, 3.0, 3.0, "True", "joy", 1, 3, 3, semantic]
        )
    pd.DataFrame(records, columns=PARA_IMAGE_COLUMNS).to_csv(
        root / "annotation" / "PARA-Images.csv", index=False
    )
    if users:
        pd.DataFrame(
            [
                ["A0", "18-21", "male", "junior_college", "proficient", "beginner", 5, 6, 4, 7, 5],
                ["A1", "22-25", "female", "university", "beginner", "competent", 3, 4, 6, 5, 6],
                ["A2", "30-34", "female", "university", "competent", "beginner", 7, 5, 3, 6, 4],
            ],
            columns=PARA_USER_COLUMNS,
        ).to_csv(root / "annotation" / "PARA-UserInfo.csv", index=False)
    return root


def test_loads_para(tmp_path):
    root = write_para(tmp_path / "PARA")
    (root / "imgs" / "session2").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(root / "imgs" / "session2" / "iaa_pub3_.jpg")
    ds = load_dataset(root, holdout="random:0.2")
    assert ds.name == "PARA (PARA)" and ds.score_range == (1.0, 5.0) and ds.root == root.resolve()
    assert ratings_by_id(ds) == {
        ("A0", "iaa_pub1_.jpg", 3.5),
        ("A0", "iaa_pub2_.jpg", 4.0),
        ("A1", "iaa_pub1_.jpg", 2.5),
        ("A1", "iaa_pub3_.jpg", 5.0),
        ("A2", "iaa_pub3_.jpg", 1.0),
        ("A2", "iaa_pub2_.jpg", 3.0),
    }
    assert ds.image_ids.tolist() == ["iaa_pub1_.jpg", "iaa_pub2_.jpg", "iaa_pub3_.jpg"]
    assert ds.images["semantic"].tolist() == ["portrait", "animal", "scene"]
    assert "qualityScore" not in ds.images.columns and "qualityScore" not in ds.users.columns
    assert ds.images["path"].isna().tolist() == [True, True, False]
    assert ds.images["path"].tolist()[2].endswith("imgs/session2/iaa_pub3_.jpg")
    a1 = ds.users.iloc[ds.user_index("A1")]
    assert a1["gender"] == "female" and a1["personality-N"] == 6 and a1["EducationalLevel"] == "university"
    assert list(ds.users.columns) == PARA_USER_COLUMNS[1:]


@pytest.mark.parametrize(
    ("rows", "users", "message"),
    [
        (
            para_rows() + [("session2", "iaa_pub4_.jpg", "A0", 5.5, "scene")],
            True,
            "PARA-Images.csv: score 5.5 outside the declared range [1, 5] at row(s) 6",
        ),
        (
            para_rows() + [("session1", "iaa_pub1_.jpg", "A0", 2.0, "portrait")],
            True,
            "duplicate (user, image) pair user A0 / image iaa_pub1_.jpg (rows 0 and 6)",
        ),
        (
            para_rows() + [("session1", "iaa_pub4_.jpg", "A0", None, "portrait")],
            True,
            "PARA-Images.csv: score is NaN or infinite at row(s) 6",
        ),
        (None, False, "PARA-UserInfo.csv: missing"),
    ],
)
def test_bad_para_inputs_are_one_line_errors(tmp_path, rows, users, message):
    write_para(tmp_path, rows, users)
    with pytest.raises(UserError, match=re.escape(message)) as err:
        load_dataset(tmp_path)
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------------------------- LAPIS
LAPIS_COLUMNS = [
    "image_id",
    "image_filename",
    "rating",
    "response time",
    "participant_id",
    "age",
    "nationality",
    "demo_gender",
    "demo_edu",
    "demo_colorblind",
    "Art Interest VAIAK",
    "imgs_known",
    "artist",
    "title",
    "genre",
    "style",
    "4_styles",
    "2_styles",
]


#: LAPIS image id: (file name, [artist, title, genre, style, 4_styles, 2_styles])
LAPIS_IMAGES = {
    101: ("Monet_1.jpg", ["Monet", "Water Lilies", "landscape", "Impressionism", "modern", "figurative"]),
    102: (
        "Pollock_3.jpg",
        ["Pollock", "No. 5", "abstract", "Abstract Expressionism", "contemporary", "abstract"],
    ),
    103: (
        "Vermeer_2.jpg",
        ["Vermeer", "Milkmaid", "genre painting", "Baroque", "early modern", "figurative"],
    ),
}


def lapis_row(image: int, score, response_time: float, user: int, demographics: list, known: int) -> list:
    """One row in LAPIS_COLUMNS order: the rating, the rater's demographics and the image's metadata."""
    name, metadata = LAPIS_IMAGES[image]
    return [image, name, score, response_time, user, *demographics, known, *metadata]


def lapis_rows() -> list[list]:
    belgian = [24, "Belgian", "female", "master", "no", 4.5]
    dutch = [61, "Dutch", "male", "bachelor", "yes", 2.0]
    return [
        lapis_row(101, 80, 2.1, 1, belgian, 0),
        lapis_row(102, 15, 3.4, 1, belgian, 1),
        lapis_row(101, 55, 1.7, 2, [None] * 6, 0),  # a rater without demographics
        lapis_row(102, 100, 2.9, 3, dutch, 0),
        lapis_row(103, 0, 5.0, 3, dutch, 1),
    ]


def write_lapis(root, rows=None, columns=None):
    (root / "annotation").mkdir(parents=True, exist_ok=True)
    path = root / "annotation" / "LAPIS_individualratings_metaANDdemodata.csv"
    pd.DataFrame(rows or lapis_rows(), columns=columns or LAPIS_COLUMNS).to_csv(path, index=False)
    return path


def test_loads_lapis(tmp_path):
    path = write_lapis(tmp_path / "LAPIS")
    (tmp_path / "LAPIS" / "images").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "LAPIS" / "images" / "Pollock_3.jpg")
    for where in (path, tmp_path / "LAPIS"):  # the CSV itself, or the folder it came in
        ds = load_dataset(where, holdout="random:0.2")
        assert ds.score_range == (0.0, 100.0) and ds.image_ids.dtype == np.int64
        assert ds.root == (tmp_path / "LAPIS").resolve()  # features go to LAPIS/features/, not annotation/
        assert ratings_by_id(ds) == {
            (1, 101, 80.0),
            (1, 102, 15.0),
            (2, 101, 55.0),
            (3, 102, 100.0),
            (3, 103, 0.0),
        }
        assert ds.images["genre"].tolist() == ["landscape", "abstract", "genre painting"]
        assert pd.isna(ds.images["path"].tolist()[0]) and ds.images["path"].tolist()[1].endswith(
            "Pollock_3.jpg"
        )
        assert ds.users["nationality"].tolist()[0] == "Belgian" and pd.isna(
            ds.users["nationality"].tolist()[1]
        )
        assert ds.users["Art Interest VAIAK"].tolist()[2] == 2.0
        assert "response time" not in ds.users.columns and "imgs_known" not in ds.users.columns


def test_lapis_with_split_vaiak_items(tmp_path):
    columns = [c for c in LAPIS_COLUMNS if c != "Art Interest VAIAK"]
    vaiak = [f"VAIAK{i}" for i in range(1, 8)] + [f"2VAIAK{i}" for i in range(1, 5)]
    rows = [
        [v for c, v in zip(LAPIS_COLUMNS, r, strict=True) if c != "Art Interest VAIAK"] + list(range(11))
        for r in lapis_rows()
    ]
    write_lapis(tmp_path, rows, columns + vaiak)
    ds = load_dataset(tmp_path, holdout="random:0.2")
    assert ds.users["VAIAK3"].tolist() == [2, 2, 2] and ds.users["2VAIAK4"].tolist() == [10, 10, 10]


def test_bad_lapis_rating_is_a_one_line_error(tmp_path):
    rows = lapis_rows()
    rows[3][2] = 101
    write_lapis(tmp_path, rows)
    with pytest.raises(
        UserError, match=re.escape("score 101 outside the declared range [0, 100] at row(s) 3")
    ):
        load_dataset(tmp_path)


# --------------------------------------------------------------------------------------------- FLICKR-AES
def write_flickr(root, lines: list[str]):
    root.mkdir(parents=True, exist_ok=True)
    path = root / "FLICKR-AES_image_labeled_by_each_worker.csv"
    path.write_text("worker, imagePair, score\n" + "".join(line + "\n" for line in lines))  # as published
    return path


FLICKR_LINES = [
    "A1WORKERX, farm1_100_200.jpg, 4",
    "A1WORKERX, farm2_300_400.jpg, 2",
    "A2WORKERY, farm1_100_200.jpg, 5",
    "A3WORKERZ, farm2_300_400.jpg, 1",
]


def test_loads_flickr_aes(tmp_path):
    path = write_flickr(tmp_path / "FLICKR-AES", FLICKR_LINES)
    (path.parent / "40K").mkdir()
    Image.new("RGB", (4, 4)).save(path.parent / "40K" / "farm2_300_400.jpg")
    ds = load_dataset(path.parent, holdout="random:0.2")
    assert ds.name == "FLICKR-AES (FLICKR-AES_image_labeled_by_each_worker.csv)"
    assert ratings_by_id(ds) == {
        ("A1WORKERX", "farm1_100_200.jpg", 4.0),
        ("A1WORKERX", "farm2_300_400.jpg", 2.0),
        ("A2WORKERY", "farm1_100_200.jpg", 5.0),
        ("A3WORKERZ", "farm2_300_400.jpg", 1.0),
    }
    assert pd.isna(ds.images["path"].tolist()[0]) and ds.images["path"].tolist()[1].endswith(
        "40K/farm2_300_400.jpg"
    )
    assert ds.score_range == (1.0, 5.0) and ds.users.shape == (3, 0)


def test_flickr_aes_holds_out_new_users_by_default(tmp_path):
    lines = [f"W{u:02d}, img{(u * 7 + k) % 30}.jpg, {1 + (u + k) % 5}" for u in range(20) for k in range(6)]
    ds = load_dataset(write_flickr(tmp_path, lines))
    assert ds.splits == ["train", "val_unseen", "test_unseen"]
    # users:0.1 of 20 workers: round(2.0) = 2 test_unseen, round(1.8) = 2 val_unseen
    assert len(np.unique(ds.ratings["test_unseen"].user_idx)) == 2
    assert len(np.unique(ds.ratings["val_unseen"].user_idx)) == 2


def test_bad_flickr_aes_inputs_are_one_line_errors(tmp_path, capsys):
    write_flickr(tmp_path, [*FLICKR_LINES, "A2WORKERY, farm9_1_1.jpg, 6"])
    with pytest.raises(
        UserError, match=re.escape("score 6 outside the declared range [1, 5] at row(s) 4")
    ) as err:
        load_dataset(tmp_path, holdout="random:0.2")
    assert "\n" not in str(err.value) and "FLICKR-AES_image_labeled_by_each_worker.csv" in str(err.value)
    assert main(["data", "validate", str(tmp_path), "--holdout", "random:0.2"]) == 2
    assert "Traceback" not in capsys.readouterr().err
    write_flickr(tmp_path / "ok", FLICKR_LINES)
    assert main(["data", "validate", str(tmp_path / "ok"), "--holdout", "random:0.2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["users"] == 3
