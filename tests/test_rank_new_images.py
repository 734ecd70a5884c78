"""Ranking images the data has never seen: a folder (``recsys rank --images DIR``) or uploads (``POST /rank``),
embedded by the data's encoder and scored by the model fitted with them as images without ratings."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from features.embed import embed_dataset_features, embed_image_bytes
from features.encoders import TINY_ARCHITECTURE, load_encoder, register_architecture
from recsys.cli import main
from recsys.data import References, load_dataset
from recsys.data.simulate import SimulationConfig, simulate
from recsys.errors import UserError
from recsys.models.registry import create_model
from recsys.ranking import with_new_images
from recsys.retrieval.service import create_app

TINY = "clip:recsys-test-tiny/random"


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def sim(tmp_path_factory, home):
    register_architecture("recsys-test-tiny", TINY_ARCHITECTURE)
    config = SimulationConfig(seed=5, users=30, images=40, ratings_per_user=15, feature_dim=8, image_size=16)
    root = simulate(tmp_path_factory.mktemp("sim") / "pamela", config, progress=False)
    data = embed_dataset_features(
        load_dataset(root), TINY, device="cpu", cache_dir=home / "embeddings", progress=False, workspace=home
    )
    return root, data


def pngs(n: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def expected_order(data, names, blobs, refs: References, known_ids=()) -> list:
    """The order of a fresh mf fit on the data with the new images, by its own predict_new scores."""
    encoder = load_encoder(TINY, device="cpu")
    items = [(n, b, n) for n, b in zip(names, blobs, strict=True)]
    rows = embed_image_bytes(items, encoder, use_cache=False, progress=False).embedding
    extended = with_new_images(data, names, rows)
    model = create_model("mf").fit(extended)
    ids = [*known_ids, *names]
    scores = model.predict_new([refs], [np.array([extended.image_index(i) for i in ids])])[0]
    return [ids[i] for i in np.argsort(-scores, kind="stable")]


def test_with_new_images_appends_images_without_ratings_or_metadata(sim):
    _, data = sim
    rows = np.ones((2, data.image_features.shape[1]), np.float32)
    extended = with_new_images(data, ["a.png", "b.png"], rows)
    assert extended.n_images == data.n_images + 2 and extended.image_index("b.png") == data.n_images + 1
    assert extended.image_index(int(data.image_ids[3])) == 3  # old ids keep their indices
    np.testing.assert_array_equal(extended.image_features[-2:], rows)
    assert extended.metadata().onehot[-2:].sum() == 0  # no type, group or style
    assert {s: len(r) for s, r in extended.ratings.items()} == {s: len(r) for s, r in data.ratings.items()}
    with pytest.raises(UserError, match="has the id of an image"):
        with_new_images(data, [str(data.image_ids[0])], rows[:1])
    with pytest.raises(UserError, match="shape"):
        with_new_images(data, ["c.png"], rows[:, :3])


def test_rank_command_on_a_folder_of_new_images(sim, tmp_path, capsys, monkeypatch, home):
    root, data = sim
    monkeypatch.setenv("RECSYS_HOME", str(home))
    folder = tmp_path / "candidates"
    folder.mkdir()
    names = ["c1.png", "c2.png", "c3.png", "c4.png"]
    blobs = pngs(4)
    for name, blob in zip(names, blobs, strict=True):
        (folder / name).write_bytes(blob)
    (folder / "notes.txt").write_text("not an image")
    train = data.ratings["train"]
    refs_csv = tmp_path / "refs.csv"
    items = data.image_ids[train.image_idx[:6]]
    pd.DataFrame({"item_id": items, "score": train.score[:6]}).to_csv(refs_csv, index=False)
    args = [
        "rank",
        "--data",
        str(root),
        "--encoder",
        TINY,
        "--model",
        "mf",
        "--workspace",
        str(tmp_path / "ws"),
    ]
    assert main([*args, "--references", str(refs_csv), "--images", str(folder), "--json"]) == 0
    printed = capsys.readouterr().out
    ranking = json.loads(printed[printed.index("[") :])
    refs = References(-1, train.image_idx[:6], train.score[:6])
    assert [r["image_id"] for r in ranking] == expected_order(data, names, blobs, refs)
    assert [r["rank"] for r in ranking] == [1, 2, 3, 4]
    # without the data's encoder the new images cannot be compared: one line, exit 2
    assert main(["rank", "--data", str(root), "--references", str(refs_csv), "--images", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "image features" in err and "\n" not in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*args, "--references", str(refs_csv), "--images", str(empty)]) == 2
    assert "no image files" in capsys.readouterr().err


def test_post_rank_with_uploads(sim, monkeypatch, home):
    _, data = sim
    monkeypatch.setenv("RECSYS_HOME", str(home))
    model = create_model("mf").fit(data)
    client = TestClient(create_app(model, data, encoder=TINY))
    names, blobs = ["u1.png", "u2.png", "u3.png"], pngs(3, seed=1)
    train = data.ratings["train"]
    refs = [
        {"image_id": int(data.image_ids[i]), "score": float(s)}
        for i, s in zip(train.image_idx[:5], train.score[:5], strict=True)
    ]
    known = [int(data.image_ids[i]) for i in (7, 9)]
    uploads = [{"name": n, "data": base64.b64encode(b).decode()} for n, b in zip(names, blobs, strict=True)]
    answer = client.post("/rank", json={"references": refs, "image_ids": known, "images": uploads})
    assert answer.status_code == 200, answer.text
    ranking = answer.json()["ranking"]
    expected = expected_order(data, names, blobs, References(-1, train.image_idx[:5], train.score[:5]), known)
    assert [r["image_id"] for r in ranking] == expected
    # one-line errors
    bad = client.post("/rank", json={"references": refs, "images": [{"name": "x.png", "data": "%%%"}]})
    assert bad.status_code == 422 and "not base64" in bad.json()["detail"]
    broken = [{"name": "x.png", "data": base64.b64encode(b"not an image").decode()}]
    answer = client.post("/rank", json={"references": refs, "images": broken})
    assert answer.status_code == 422 and "x.png" in answer.json()["detail"]
    assert client.post("/rank", json={"references": refs}).status_code == 422
    without = TestClient(create_app(model, data))
    answer = without.post("/rank", json={"references": refs, "images": uploads[:1]})
    assert answer.status_code == 422 and "--encoder" in answer.json()["detail"]
