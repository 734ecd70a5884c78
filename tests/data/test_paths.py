"""Image paths read from data stay inside the dataset's image folder: an absolute name, a ``..`` or a link that
leads out is one line naming the file and row (``data validate`` lists it, every other command refuses the
data); a symlinked image folder is fine."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from PIL import Image

from recsys.cli import main
from recsys.data import load_dataset
from recsys.data.paths import resolve_inside
from recsys.data.simulate import SimulationConfig, simulate
from recsys.errors import UserError

TINY = SimulationConfig(seed=3, users=12, images=30, ratings_per_user=10, feature_dim=8, image_size=16)
#: (sessionId, imageName, userId, aestheticScore): the PARA columns the loader reads
PARA_ROWS = [
    ["session1", "a.jpg", "A0", 3.5],
    ["session1", "b.jpg", "A0", 4.0],
    ["session1", "a.jpg", "A1", 2.5],
    ["session2", "c.jpg", "A1", 5.0],
    ["session2", "c.jpg", "A2", 1.0],
    ["session2", "b.jpg", "A2", 3.0],
]


@pytest.fixture(scope="module")
def secret(tmp_path_factory):
    """An image outside every dataset: what an escaping path points at."""
    path = tmp_path_factory.mktemp("outside") / "secret.png"
    Image.new("RGB", (8, 8), (255, 0, 0)).save(path)
    return path


@pytest.fixture(scope="module")
def pamela(tmp_path_factory):
    return simulate(tmp_path_factory.mktemp("pamela") / "sim", TINY, progress=False)


def _retarget(root, entry: int, image_path: str):
    """Set ``image_path`` of one entry of pamela_train.json (and of every entry of the same image)."""
    file = root / "annotations" / "pamela_train.json"
    entries = json.loads(file.read_text())
    image = entries[entry]["image_id"]
    for e in entries:
        if e["image_id"] == image:
            e["image_path"] = image_path
    file.write_text(json.dumps(entries))
    return image


def _copy(src, dst):
    import shutil

    shutil.copytree(src, dst, symlinks=True)
    return dst


def test_resolve_inside_by_hand(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"")
    (tmp_path / "images" / "out.png").symlink_to(tmp_path / "elsewhere.png")
    inside = tmp_path / "images"
    assert resolve_inside(tmp_path, "./images/a.png", inside) == (inside / "a.png").resolve()
    assert resolve_inside(tmp_path, "images/sub/../a.png", inside) == (inside / "a.png").resolve()
    assert resolve_inside(tmp_path, "/etc/passwd", inside) is None
    assert resolve_inside(tmp_path, "images/../../x.png", inside) is None
    assert (
        resolve_inside(tmp_path, "images/../ratings.csv", inside) is None
    )  # inside the data, not the images
    assert resolve_inside(tmp_path, "images/out.png", inside) is None  # a link out of the folder


@pytest.mark.parametrize(
    "name",
    ["absolute", "dotdot", "link"],
)
def test_pamela_escaping_image_path_is_refused_naming_the_row(pamela, secret, tmp_path, name, capsys):
    root = _copy(pamela, tmp_path / "data")
    target = {
        "absolute": str(secret),
        "dotdot": "./images/../../../../../../../../.." + str(secret),
        "link": "./images/innocent.png",
    }[name]
    if name == "link":
        (root / "images" / "innocent.png").symlink_to(secret)
    _retarget(root, 4, target)
    with pytest.raises(UserError) as caught:
        load_dataset(root)
    message = str(caught.value)
    assert f"{root / 'annotations'}: image path {target!r} at pamela_train.json entry " in message
    assert f"leads outside the image folder {root / 'images'}" in message
    # recsys data validate lists it as one problem line
    assert main(["data", "validate", str(root)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert sum("leads outside the image folder" in line for line in err) == 1


def test_atlas_refuses_a_dataset_with_escaping_paths(pamela, secret, tmp_path, capsys):
    root = _copy(pamela, tmp_path / "data")
    _retarget(root, 0, str(secret))
    argv = ["atlas", "--data", str(root), "--model", "mf", "--workspace", str(tmp_path / "ws")]
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and "leads outside the image folder" in lines[0], captured.err
    assert not (tmp_path / "ws").exists()  # refused before anything is fitted or written


def test_a_symlinked_image_folder_is_fine(pamela, tmp_path):
    root = _copy(pamela, tmp_path / "data")
    (root / "images").rename(tmp_path / "images-elsewhere")
    (root / "images").symlink_to(tmp_path / "images-elsewhere")
    ds = load_dataset(root)
    assert ds.images["path"].notna().all()
    assert all(p.startswith(str((tmp_path / "images-elsewhere").resolve())) for p in ds.images["path"])


@pytest.mark.parametrize(("row", "column", "value"), [(1, 1, "../../outside.jpg"), (3, 0, "../../..")])
def test_para_escaping_names_are_refused(tmp_path, row, column, value):
    rows = [list(r) for r in PARA_ROWS]
    rows[row][column] = value
    root = tmp_path / "PARA"
    (root / "annotation").mkdir(parents=True)
    (root / "imgs").mkdir()
    columns = ["sessionId", "imageName", "userId", "aestheticScore"]
    pd.DataFrame(rows, columns=columns).to_csv(root / "annotation" / "PARA-Images.csv", index=False)
    pd.DataFrame({"userId": ["A0", "A1", "A2"]}).to_csv(
        root / "annotation" / "PARA-UserInfo.csv", index=False
    )
    with pytest.raises(UserError, match=rf"PARA-Images.csv: image path .* at row {row} leads outside .*imgs"):
        load_dataset(root, holdout="random:0.2")


def test_lapis_absolute_file_name_is_refused(tmp_path, secret):
    rows = [[101, "a.jpg", 80, 1], [102, "b.jpg", 15, 1], [101, "a.jpg", 55, 2], [103, "c.jpg", 0, 3]]
    rows[0][1] = str(secret)  # the row each image's file name is read from
    (tmp_path / "LAPIS" / "images").mkdir(parents=True)
    path = tmp_path / "LAPIS" / "lapis.csv"
    columns = ["image_id", "image_filename", "rating", "participant_id"]
    pd.DataFrame(rows, columns=columns).to_csv(path, index=False)
    with pytest.raises(UserError, match=r"image path '.*secret.png' at row 0 leads outside"):
        load_dataset(path, holdout="random:0.2")


def test_flickr_escaping_image_pair_is_refused(tmp_path):
    lines = ["A1, x.jpg, 4", "A1, y.jpg, 2", "A2, x.jpg, 5", "A3, y.jpg, 1", "A4, ../../../etc/passwd, 3"]
    folder = tmp_path / "FLICKR-AES"
    (folder / "40K").mkdir(parents=True)
    path = folder / "FLICKR-AES_image_labeled_by_each_worker.csv"
    path.write_text("worker, imagePair, score\n" + "".join(line + "\n" for line in lines))  # as published
    with pytest.raises(UserError, match=r"'../../../etc/passwd' at row 4 leads outside .*40K"):
        load_dataset(folder, holdout="random:0.2")


def test_table_items_path_is_relative_to_the_table_and_contained(tmp_path, secret):
    rows = [(f"u{u}", f"i{i}", float(1 + (u * i) % 5)) for u in range(12) for i in range(10)]
    pd.DataFrame(rows, columns=["user_id", "item_id", "score"]).to_csv(tmp_path / "ratings.csv", index=False)
    (tmp_path / "img").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "img" / "i0.png")
    items = pd.DataFrame({"item_id": [f"i{i}" for i in range(10)], "path": ["img/i0.png"] + [None] * 9})
    items.to_csv(tmp_path / "items.csv", index=False)
    ds = load_dataset(tmp_path / "ratings.csv")
    assert ds.images["path"].iloc[ds.image_index("i0")] == str((tmp_path / "img" / "i0.png").resolve())
    items.loc[3, "path"] = str(secret)
    items.to_csv(tmp_path / "items.csv", index=False)
    with pytest.raises(UserError, match=r"items.csv: image path '.*secret.png' at item i3 leads outside"):
        load_dataset(tmp_path / "ratings.csv")
