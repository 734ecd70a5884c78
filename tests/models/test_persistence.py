"""Saved models: nothing in a saved folder can run code when loaded; broken folders are one clear error."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest

from recsys.errors import UserError
from recsys.models import create_model
from recsys.models.base import Model
from recsys.models.persistence import SAVE_FORMAT, SavedModelError

MARKER_NAME = "crafted-file-ran"


class _Exploit:
    """Unpickling this object creates a marker file: what a malicious saved model would do instead."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def saved(small_sim, tmp_path_factory) -> Path:
    return create_model("user_ridge").fit(small_sim).save(tmp_path_factory.mktemp("saved") / "user_ridge")


@pytest.fixture(scope="module")
def saved_torch(small_sim, tmp_path_factory) -> Path:
    model = create_model("two_tower", epochs=1, foldin_steps=2, seed=0).fit(small_sim)
    return model.save(tmp_path_factory.mktemp("saved") / "two_tower")


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_saved_model_has_no_pickle(saved, saved_torch):
    assert sorted(p.name for p in saved.iterdir()) == ["arrays.npz", "config.json", "state.json"]
    assert sorted(p.name for p in saved_torch.iterdir()) == [
        "arrays.npz",
        "config.json",
        "modules.pt",
        "state.json",
    ]
    config = json.loads((saved / "config.json").read_text())
    assert config["format"] == SAVE_FORMAT and config["model"] == "user_ridge"


def test_a_pickled_object_array_in_the_npz_is_refused_and_never_run(saved, tmp_path):
    target = _copy(saved, tmp_path / "crafted")
    marker = tmp_path / MARKER_NAME
    payload = np.empty(1, dtype=object)
    payload[0] = _Exploit(marker)
    with np.load(saved / "arrays.npz") as data:
        arrays = {k: data[k] for k in data.files}
    with open(target / "arrays.npz", "wb") as fh:
        np.savez(fh, **(arrays | {"weights_": payload}))
    with pytest.raises(SavedModelError, match="arrays.npz: weights_ holds Python objects"):
        Model.load(target)
    assert not marker.exists()


def test_a_pickle_in_the_torch_weights_is_refused_and_never_run(saved_torch, tmp_path):
    target = _copy(saved_torch, tmp_path / "crafted")
    marker = tmp_path / MARKER_NAME
    # a plain pickle where torch weights belong, and a torch zip archive whose data.pkl is the exploit
    (target / "modules.pt").write_bytes(pickle.dumps({"net_": _Exploit(marker)}))
    with pytest.raises(SavedModelError, match="modules.pt is unreadable or unsafe"):
        Model.load(target)
    with zipfile.ZipFile(target / "modules.pt", "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"net_": _Exploit(marker)}))
        archive.writestr("archive/version", "3\n")
    with pytest.raises(SavedModelError):
        Model.load(target)
    assert not marker.exists()


def test_a_stray_state_pkl_is_ignored(saved, tmp_path):
    """The old layout's state.pkl is never opened, whatever it holds."""
    target = _copy(saved, tmp_path / "old")
    marker = tmp_path / MARKER_NAME
    (target / "state.pkl").write_bytes(pickle.dumps(_Exploit(marker)))
    Model.load(target)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "config.json").unlink(), "config.json is missing"),
        (lambda d: (d / "config.json").write_text("{not json"), "config.json is unreadable"),
        (
            lambda d: (d / "arrays.npz").write_bytes((d / "arrays.npz").read_bytes()[:100]),
            "arrays.npz is unreadable",
        ),
        (lambda d: (d / "state.json").write_text("[]"), "state.json is not a state index"),
        (lambda d: _set_config(d, format=999), "format 999 by a newer version"),
        (lambda d: _set_config(d, format=1), "old format 1"),
        # format 2 kept no image-side maps: a model saved then cannot score new images; refit
        (lambda d: _set_config(d, format=2), r"old format 2 \(this version reads 3\); refit"),
        (lambda d: _set_config(d, model="no_such_model"), "unknown model"),
        (
            lambda d: _set_config(d, model="ridge", params={"alpha": 3.0}),
            "holds a UserRidge model, not ridge",
        ),
        (
            lambda d: (d / "state.json").write_text('{"bias_": {"array": "nope"}}'),
            "state.json has no key known_",
        ),
    ],
)
def test_broken_saved_models_are_one_line_errors(saved, tmp_path, damage, message):
    target = _copy(saved, tmp_path / "broken")
    damage(target)
    with pytest.raises(SavedModelError, match=message) as err:
        Model.load(target)
    assert isinstance(err.value, UserError) and "\n" not in str(err.value)


def test_truncated_torch_weights_are_one_line_errors(saved_torch, tmp_path):
    target = _copy(saved_torch, tmp_path / "broken")
    (target / "modules.pt").write_bytes((target / "modules.pt").read_bytes()[:200])
    with pytest.raises(SavedModelError) as err:
        Model.load(target)
    assert "\n" not in str(err.value)


def test_saving_over_a_model_replaces_it_whole(small_sim, tmp_path):
    first = create_model("ridge", alpha=1.0).fit(small_sim).save(tmp_path / "m")
    create_model("user_ridge").fit(small_sim).save(first)
    assert Model.load(first).name == "user_ridge"
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def _set_config(directory: Path, **changes) -> None:
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps(config | changes))
