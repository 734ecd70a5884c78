"""Ranking images the data has never seen: a folder (``recsys rank --images DIR``) or uploads (``POST /rank``),
embedded once by the data's encoder and scored by the fitted model from their features, without a refit.

The scores are checked against an independent route: the same images appended to the data (no ratings, no
metadata) and a model fitted on that data, which scores them as it scores any unrated image of its data."""

from __future__ import annotations

import base64
import io
import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from features.embed import embed_image_bytes
from features.encoders import load_encoder
from recsys.cli import main
from recsys.data import References
from recsys.errors import UserError
from recsys.models.base import Model
from recsys.models.mf import MatrixFactorization
from recsys.models.registry import create_model
from recsys.ranking import new_images, rank_images
from recsys.retrieval.service import create_app

#: the encoder of the ``tiny_sim`` fixture (tests/conftest.py)
TINY_ENCODER = "clip:recsys-test-tiny/random"


def pngs(n: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def embedded(names, blobs) -> np.ndarray:
    """The uploads' embedding rows, computed apart from the code under test (no cache)."""
    encoder = load_encoder(TINY_ENCODER, device="cpu")
    items = [(n, b, n) for n, b in zip(names, blobs, strict=True)]
    return embed_image_bytes(items, encoder, use_cache=False, progress=False).embedding


def with_images_appended(data, names, rows):
    """``data`` with the new images appended as images without ratings or metadata (what ``rank`` did before it
    scored new images without a refit): the independent route to their scores."""
    blank = pd.DataFrame(index=range(len(names)), columns=data.images.columns, dtype=object)
    return replace(
        data,
        image_ids=np.concatenate([data.image_ids.astype(object), np.array(names, dtype=object)]),
        images=pd.concat([data.images.astype(object), blank], ignore_index=True),
        image_features=np.vstack([data.image_features, rows]),
        prompt_features=None,  # mf reads no prompts
    )


def refit_scores(data, names, rows, refs: References, known_ids=()) -> dict:
    """image id -> score of the candidates by mf fitted on the data that hold the new images."""
    extended = with_images_appended(data, names, rows)
    model = create_model("mf").fit(extended)
    ids = [*known_ids, *names]
    scores = model.predict_new([refs], [np.array([extended.image_index(i) for i in ids])])[0]
    return dict(zip(ids, scores.tolist(), strict=True))


def test_rank_images_scores_new_images_as_the_data_would_hold_them(tiny_sim):
    _, data = tiny_sim
    names, rows = ["n1.png", "n2.png"], embedded(["n1.png", "n2.png"], pngs(2, seed=3))
    model = create_model("mf").fit(data)
    train = data.ratings["train"]
    refs = References(-1, train.image_idx[:5], train.score[:5])
    known = [int(data.image_ids[4])]
    ranking = rank_images(model, data, known, new=new_images(data, names, rows), references=refs)
    expected = refit_scores(data, names, rows, refs, known)
    assert {r["image_id"]: r["score"] for r in ranking} == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert [r["image_id"] for r in ranking] == sorted(expected, key=lambda i: -expected[i])
    with pytest.raises(UserError, match="has the id of an image"):
        new_images(data, [str(data.image_ids[0])], rows[:1])
    with pytest.raises(UserError, match="same name"):
        new_images(data, ["a.png", "a.png"], rows)
    with pytest.raises(UserError, match="shape"):
        new_images(data, ["c.png"], rows[:1, :3])
    with pytest.raises(UserError, match="no new images"):
        new_images(data, [], rows[:0])


def test_rank_command_on_a_folder_of_new_images(tiny_sim, tmp_path, capsys, monkeypatch, tiny_home):
    root, data = tiny_sim
    monkeypatch.setenv("RECSYS_HOME", str(tiny_home))
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
    workspace = tmp_path / "ws"
    args = [
        "rank",
        "--data",
        str(root),
        "--encoder",
        TINY_ENCODER,
        "--model",
        "mf",
        "--workspace",
        str(workspace),
    ]
    refs = References(-1, train.image_idx[:6], train.score[:6])
    expected = refit_scores(data, names, embedded(names, blobs), refs)
    for _ in range(2):  # the second run reads the embeddings and the fitted model back
        assert main([*args, "--references", str(refs_csv), "--images", str(folder), "--json"]) == 0
        printed = capsys.readouterr().out
        ranking = json.loads(printed[printed.index("[") :])
        assert {r["image_id"]: r["score"] for r in ranking} == pytest.approx(expected, rel=1e-6, abs=1e-6)
        assert [r["image_id"] for r in ranking] == sorted(expected, key=lambda i: -expected[i])
        assert [r["rank"] for r in ranking] == [1, 2, 3, 4]
    # one model, fitted on the data itself: nothing was fitted for the candidates
    assert len(list((workspace / "models").iterdir())) == 1
    # without the data's encoder the new images cannot be compared: one line, exit 2
    assert main(["rank", "--data", str(root), "--references", str(refs_csv), "--images", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "image features" in err and "\n" not in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main([*args, "--references", str(refs_csv), "--images", str(empty)]) == 2
    assert "no image files" in capsys.readouterr().err
    # a model whose image side is per image id says so in one line
    oracle = [*args[:-4], "--model", "oracle", "--workspace", str(workspace)]
    assert main([*oracle, "--references", str(refs_csv), "--images", str(folder)]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bars of embedding the data
    assert line.startswith("error: oracle") and "cannot score new images" in line


def test_post_rank_with_uploads_scores_them_without_a_refit(tiny_sim, monkeypatch, tiny_home):
    _, data = tiny_sim
    monkeypatch.setenv("RECSYS_HOME", str(tiny_home))
    model = create_model("mf").fit(data)
    state = {k: v for k, v in vars(model).items() if k.endswith("_")}
    client = TestClient(create_app(model, data, encoder=TINY_ENCODER))

    names, blobs = ["u1.png", "u2.png", "u3.png"], pngs(3, seed=1)
    train = data.ratings["train"]
    refs = [
        {"image_id": int(data.image_ids[i]), "score": float(s)}
        for i, s in zip(train.image_idx[:5], train.score[:5], strict=True)
    ]
    reference = References(-1, train.image_idx[:5], train.score[:5])
    known = [int(data.image_ids[i]) for i in (7, 9)]
    rows = embedded(names, blobs)
    refit = refit_scores(data, names, rows, reference, known)

    def no_fit(*args, **kwargs):
        raise AssertionError("POST /rank fitted a model")

    monkeypatch.setattr(MatrixFactorization, "fit", no_fit)
    uploads = [{"name": n, "data": base64.b64encode(b).decode()} for n, b in zip(names, blobs, strict=True)]
    answer = client.post("/rank", json={"references": refs, "image_ids": known, "images": uploads})
    assert answer.status_code == 200, answer.text
    got = {r["image_id"]: r["score"] for r in answer.json()["ranking"]}
    # the answer is the fitted model's score of the embedded features...
    direct = model.score_new_images(data.new_image_inputs(rows), references=reference)
    assert [got[n] for n in names] == pytest.approx(direct.tolist(), rel=1e-6, abs=1e-6)
    # ...which is the score a model fitted on data holding the images gives them
    assert got == pytest.approx(refit, rel=1e-6, abs=1e-6)
    # the served model is the same object with the same fitted state
    assert {k: v for k, v in vars(model).items() if k.endswith("_")}.keys() == state.keys()
    assert all(vars(model)[k] is v for k, v in state.items()) and model.n_images_ == data.n_images
    user = data.user_ids[np.flatnonzero(model.known_)[0]]
    answer = client.post("/rank", json={"user_id": str(user), "images": uploads[:2]})
    u = np.full(2, data.user_index(user))
    expected = model.with_new_images(data.new_image_inputs(rows[:2])).predict(u, data.n_images + np.arange(2))
    assert {r["image_id"]: r["score"] for r in answer.json()["ranking"]} == pytest.approx(
        dict(zip(names[:2], expected.tolist(), strict=True)), rel=1e-6, abs=1e-6
    )
    # one-line errors
    alone = client.post("/rank", json={"references": refs, "image_ids": known, "prompt": "a fox"})
    assert alone.status_code == 422 and "upload images with it" in alone.json()["detail"]
    bad = client.post("/rank", json={"references": refs, "images": [{"name": "x.png", "data": "%%%"}]})
    assert bad.status_code == 422 and "not base64" in bad.json()["detail"]
    broken = [{"name": "x.png", "data": base64.b64encode(b"not an image").decode()}]
    answer = client.post("/rank", json={"references": refs, "images": broken})
    assert answer.status_code == 422 and "x.png" in answer.json()["detail"]
    twice = client.post("/rank", json={"references": refs, "images": [uploads[0], uploads[0]]})
    assert twice.status_code == 422 and "same name" in twice.json()["detail"]
    assert client.post("/rank", json={"references": refs}).status_code == 422
    without = TestClient(create_app(model, data))
    answer = without.post("/rank", json={"references": refs, "images": uploads[:1]})
    assert answer.status_code == 422 and "--encoder" in answer.json()["detail"]
    # a model that cannot score new images (every model the service can serve can; so one is made unable)
    monkeypatch.setattr(MatrixFactorization, "_new_image_state", Model._new_image_state)
    answer = client.post("/rank", json={"references": refs, "images": uploads[:1]})
    assert answer.status_code == 422 and answer.json()["detail"].startswith("mf cannot score images")


def test_rank_command_scores_new_images_under_their_prompt(
    tiny_sim, tmp_path, capsys, monkeypatch, tiny_home
):
    """The data's prompts are embedded with its images (--encoder), and --prompt gives the new images' prompt,
    embedded by the same encoder's text tower: pal (conditioned on the prompt) scores them under it, checked
    against the saved model scoring them with the prompt embedded apart; without --prompt, the data's mean
    prompt, which scores them differently."""
    from recsys.retrieval.similar import load_or_fit_model

    root, data = tiny_sim
    assert data.prompt_features is not None and data.prompt_source == f"{TINY_ENCODER} (prompts)"
    monkeypatch.setenv("RECSYS_HOME", str(tiny_home))
    folder = tmp_path / "candidates"
    folder.mkdir()
    names, blobs = ["p1.png", "p2.png", "p3.png"], pngs(3, seed=7)
    for name, blob in zip(names, blobs, strict=True):
        (folder / name).write_bytes(blob)
    user = str(data.user_ids[np.flatnonzero(np.bincount(data.ratings["train"].user_idx))[0]])
    workspace = tmp_path / "ws"
    args = ["rank", "--data", str(root), "--encoder", TINY_ENCODER, "--model", "pal", "--user", user]
    args += ["--workspace", str(workspace), "--images", str(folder), "--json"]

    def ranked(extra: list[str]) -> dict:
        assert main([*args, *extra]) == 0
        printed = capsys.readouterr().out
        return {r["image_id"]: r["score"] for r in json.loads(printed[printed.index("[") :])}

    with_prompt = ranked(["--prompt", "a red fox in the snow"])
    model, _, _ = load_or_fit_model("pal", data, workspace=workspace, progress=False)
    assert model.conditioned()
    text = load_encoder(TINY_ENCODER, device="cpu").encode_text_batch(["a red fox in the snow"])
    prompts = np.repeat(np.asarray(text, np.float32), 3, axis=0)
    new = new_images(data, names, embedded(names, blobs), prompts=prompts)
    expected = {r["image_id"]: r["score"] for r in rank_images(model, data, [], new=new, user_id=user)}
    assert with_prompt == pytest.approx(expected, rel=1e-5, abs=1e-6)
    mean_prompt = ranked([])
    assert mean_prompt != pytest.approx(with_prompt, rel=1e-6, abs=1e-9)
    ids = tmp_path / "ids.txt"
    ids.write_text(f"{data.image_ids[0]}\n")
    assert main([*args[:-3], "--images", str(ids), "--prompt", "a fox"]) == 2
    assert "--prompt gives the prompt of new images" in capsys.readouterr().err


def test_post_rank_scores_uploads_under_their_prompt(tiny_sim, monkeypatch, tiny_home):
    """POST /rank with a prompt: pal scores the uploads under the prompt's embedding by the served encoder."""
    _, data = tiny_sim
    monkeypatch.setenv("RECSYS_HOME", str(tiny_home))
    model = create_model("pal", epochs=3).fit(data)
    client = TestClient(create_app(model, data, encoder=TINY_ENCODER))
    names, blobs = ["q1.png", "q2.png"], pngs(2, seed=2)
    uploads = [{"name": n, "data": base64.b64encode(b).decode()} for n, b in zip(names, blobs, strict=True)]
    user = str(data.user_ids[np.flatnonzero(model.known_)[0]])
    answer = client.post("/rank", json={"user_id": user, "images": uploads, "prompt": "a quiet harbour"})
    assert answer.status_code == 200, answer.text
    text = load_encoder(TINY_ENCODER, device="cpu").encode_text_batch(["a quiet harbour"])
    new = new_images(data, names, embedded(names, blobs), prompts=np.repeat(text, 2, axis=0))
    expected = {r["image_id"]: r["score"] for r in rank_images(model, data, [], new=new, user_id=user)}
    got = {r["image_id"]: r["score"] for r in answer.json()["ranking"]}
    assert got == pytest.approx(expected, rel=1e-5, abs=1e-6)
    plain = client.post("/rank", json={"user_id": user, "images": uploads}).json()["ranking"]
    assert {r["image_id"]: r["score"] for r in plain} != pytest.approx(got, rel=1e-6, abs=1e-9)
    empty = client.post("/rank", json={"user_id": user, "images": uploads, "prompt": ""})
    assert empty.status_code == 422
