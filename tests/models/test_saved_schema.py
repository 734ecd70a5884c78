"""Saved state checked against each model's declared schema: a tampered saved model is one line, never a traceback
or other scores; only the arrays the state names are read, their headers and sizes checked first."""

from __future__ import annotations

import io
import json
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from recsys.errors import UserError
from recsys.models import create_model, persistence
from recsys.models.base import Model
from recsys.models.persistence import SavedModelError, fitted_state
from recsys.models.registry import GROUPS
from recsys.models.schema import merged_schema
from recsys.retrieval.similar import fitted_model_dir, load_or_fit_model

#: the models tampered with: a factor model, a kNN (with a sparse matrix) and a torch model
PARAMS = {"mf": {"epochs": 2}, "user_knn": {}, "two_tower": {"epochs": 1, "foldin_steps": 2, "seed": 0}}
#: per model: a key to delete, a key and a JSON value of the wrong kind, a per-user array, a (users, d) array
DAMAGE = {
    "mf": ("user_vecs_", ("history_", 3.5), "user_vecs_", "user_vecs_"),
    "user_knn": ("user_mean_", ("global_", [1.0, 2.0]), "user_mean_", "taste_"),
    "two_tower": ("priors_", ("meta_", 2.0), "demo_", "features_"),
}


@pytest.fixture(scope="module")
def saved(small_sim, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("saved")
    return {name: create_model(name, **p).fit(small_sim).save(folder / name) for name, p in PARAMS.items()}


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def _arrays(directory: Path) -> dict[str, np.ndarray]:
    with np.load(directory / "arrays.npz") as data:
        return {k: data[k] for k in data.files}


def _write_arrays(directory: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(directory / "arrays.npz", "wb") as fh:
        np.savez(fh, **arrays)


def _edit_state(directory: Path, edit) -> None:
    state = json.loads((directory / "state.json").read_text())
    edit(state)
    (directory / "state.json").write_text(json.dumps(state))


def _npy_with_header(array: np.ndarray, shape: tuple[int, ...]) -> bytes:
    """The npy bytes of ``array`` with a header that declares ``shape`` instead (a tampered header)."""
    header = np.lib.format.header_data_from_array_1_0(array) | {"shape": shape}
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, header)
    return out.getvalue() + array.tobytes()


def _replace_member(directory: Path, name: str, data: bytes, compress: int = zipfile.ZIP_STORED) -> None:
    """arrays.npz with member ``name`` replaced by ``data`` (the others as they were)."""
    with zipfile.ZipFile(directory / "arrays.npz") as old:
        members = {info.filename: old.read(info) for info in old.infolist() if info.filename != name}
    with zipfile.ZipFile(directory / "arrays.npz", "w") as new:
        for member, content in members.items():
            new.writestr(member, content)
        new.writestr(name, data, compress_type=compress)


def _refused(directory: Path, match: str, dataset=None) -> str:
    with pytest.raises(SavedModelError, match=match) as err:
        Model.load(directory, dataset)
    message = str(err.value)
    assert isinstance(err.value, UserError) and "\n" not in message and str(directory) in message
    return message


# ------------------------------------------------------------------------------------------ coverage
def test_every_model_declares_the_state_a_fit_produces(small_sim, tmp_path):
    """Each registered model's fitted state is exactly its declared keys, and loads back for the same data
    with the same scores (the checks refuse nothing a fit writes)."""
    deep = {"epochs": 1}
    for name in dict.fromkeys(GROUPS["classical"] + GROUPS["baselines"] + GROUPS["deep"] + ("pal",)):
        params = deep if name in ("two_tower", "pref_tokens", "pal") else {}
        model = create_model(name, **params).fit(small_sim)
        assert set(fitted_state(model)) == set(merged_schema(type(model))), name
        loaded = Model.load(model.save(tmp_path / name), small_sim)
        users = np.flatnonzero(model.known_)[:20]
        if name != "oracle":  # the oracle scores rated pairs only
            np.testing.assert_array_equal(loaded.predict(users, users), model.predict(users, users))
    assert set(merged_schema(type(create_model("mllm_scorer")))) > set(merged_schema(Model))


# ------------------------------------------------------------------------------------------ state.json
@pytest.mark.parametrize("name", list(PARAMS))
def test_a_missing_key_is_one_line(saved, tmp_path, name):
    key = DAMAGE[name][0]
    target = _copy(saved[name], tmp_path / "t")
    _edit_state(target, lambda s: s.pop(key))
    _refused(target, f"state.json has no key {key}")


@pytest.mark.parametrize("name", list(PARAMS))
def test_a_value_of_the_wrong_kind_is_one_line(saved, tmp_path, name):
    key, value = DAMAGE[name][1]
    target = _copy(saved[name], tmp_path / "t")
    _edit_state(target, lambda s: s.update({key: {"value": value}}))
    _refused(target, f"state.json: {key} is ")


def test_an_unexpected_key_and_an_entry_of_another_kind_are_one_line(saved, tmp_path):
    target = _copy(saved["mf"], tmp_path / "t")
    _edit_state(target, lambda s: s.update({"extra_": {"value": 1}}))
    _refused(target, "unexpected key 'extra_'")
    target = _copy(saved["mf"], tmp_path / "u")
    _edit_state(target, lambda s: s.update({"user_vecs_": {"value": [[1.0]]}}))
    _refused(target, r"user_vecs_ is the value .*expected float\[users, factors\+1\]")


# ------------------------------------------------------------------------------------------ arrays.npz
@pytest.mark.parametrize("name", list(PARAMS))
def test_five_rows_of_a_per_user_array_are_one_line(saved, small_sim, tmp_path, name):
    key = DAMAGE[name][2]
    target = _copy(saved[name], tmp_path / "t")
    arrays = _arrays(target)
    arrays[key] = arrays[key][:5]
    _write_arrays(target, arrays)
    _refused(target, rf"arrays.npz: {key} has shape \(5,")
    _refused(target, rf"arrays.npz: {key} has shape \(5,", small_sim)


@pytest.mark.parametrize("name", list(PARAMS))
def test_three_columns_are_one_line_not_other_scores(saved, small_sim, tmp_path, name):
    """Three columns of a (users or images, d) table: refused, with or without the dataset (the other tables and
    the torch module disagree with it), where it used to load and score differently."""
    key = DAMAGE[name][3]
    target = _copy(saved[name], tmp_path / "t")
    arrays = _arrays(target)
    arrays[key] = np.ascontiguousarray(arrays[key][:, :3])
    _write_arrays(target, arrays)
    for dataset in (None, small_sim):
        with pytest.raises(SavedModelError) as err:
            Model.load(target, dataset)
        assert "\n" not in str(err.value) and (
            "arrays.npz" in str(err.value) or "modules.pt" in str(err.value)
        )


def test_wrong_dtype_and_non_finite_values_are_one_line(saved, tmp_path):
    target = _copy(saved["mf"], tmp_path / "t")
    arrays = _arrays(target)
    _write_arrays(target, arrays | {"user_vecs_": arrays["user_vecs_"].astype(np.int64)})
    _refused(target, "user_vecs_ has dtype int64, expected float")
    broken = arrays["user_vecs_"].copy()
    broken[3, 2] = np.nan
    _write_arrays(target, arrays | {"user_vecs_": broken})
    _refused(target, "user_vecs_ holds non-finite values")


def test_an_invalid_sparse_matrix_is_one_line(saved, tmp_path):
    target = _copy(saved["user_knn"], tmp_path / "t")
    arrays = _arrays(target)
    arrays["centred_.indices"] = arrays["centred_.indices"] + 10_000  # columns beyond the images
    _write_arrays(target, arrays)
    _refused(target, "centred_ is not a valid sparse matrix")


def test_a_header_declaring_a_huge_shape_allocates_nothing(saved, tmp_path):
    """Headers declaring 10**12 elements: refused from the header (shape, or size over the cap where the
    dimension is free), before any data is read; neither a MemoryError nor a large allocation."""
    target = _copy(saved["mf"], tmp_path / "t")
    _replace_member(target, "user_vecs_.npy", _npy_with_header(np.zeros(4), (10**12,)))
    tracemalloc.start()
    try:
        _refused(target, r"user_vecs_ has shape \(1000000000000,\)")
        knn = _copy(saved["user_knn"], tmp_path / "k")
        _replace_member(knn, "rated_image_.npy", _npy_with_header(np.zeros(4, np.int64), (10**12,)))
        _refused(knn, "rated_image_ declares 8000000000000 bytes, over the cap")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 * 2**20


def test_an_unnamed_zip_bomb_member_is_never_opened(saved, tmp_path, monkeypatch):
    """A 256 MB member (about 250 kB deflated) that state.json does not name: the model loads, the member is never
    opened, and the load's peak traced memory stays far below its size."""
    target = _copy(saved["mf"], tmp_path / "t")
    with zipfile.ZipFile(target / "arrays.npz", "a", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("bomb.npy", "w", force_zip64=True) as member:
            member.write(_npy_with_header(np.zeros(0, np.uint8), (256 * 2**20,)))
            chunk = bytes(2**20)
            for _ in range(256):
                member.write(chunk)
    assert (target / "arrays.npz").stat().st_size < 2 * 2**20
    opened = []
    original = zipfile.ZipFile.open

    def spy(self, name, *args, **kwargs):
        opened.append(getattr(name, "filename", name))
        return original(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", spy)
    tracemalloc.start()
    try:
        model = Model.load(target)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "bomb.npy" not in opened and "user_vecs_.npy" in opened
    assert peak < 32 * 2**20
    assert model.user_vecs_.shape == _arrays(saved["mf"])["user_vecs_"].shape


def test_a_named_member_over_the_caps_is_refused_before_reading(saved, tmp_path, monkeypatch):
    target = _copy(saved["mf"], tmp_path / "t")
    sizes = {key: array.nbytes for key, array in _arrays(target).items()}
    largest = max(sizes, key=sizes.get)
    size = sizes[largest]
    monkeypatch.setattr(persistence, "MAX_ARRAY_BYTES", size - 1)
    _refused(target, f"arrays.npz: {largest} (unpacks to|declares) .* over the cap of {size - 1}")
    monkeypatch.setattr(persistence, "MAX_ARRAY_BYTES", size)
    Model.load(target)
    monkeypatch.setattr(persistence, "MAX_TOTAL_BYTES", sum(sizes.values()) - 1)
    _refused(target, f"arrays.npz declares {sum(sizes.values())} bytes in all, over the cap")


def test_a_named_member_compressed_like_a_bomb_is_refused(saved, tmp_path):
    target = _copy(saved["mf"], tmp_path / "t")
    zeros = np.zeros_like(_arrays(target)["user_vecs_"])
    out = io.BytesIO()
    np.lib.format.write_array(out, zeros)
    _replace_member(target, "user_vecs_.npy", out.getvalue(), zipfile.ZIP_DEFLATED)
    _refused(target, r"user_vecs_ is compressed \d+:1, over 100:1")


# ------------------------------------------------------------------------------------------ modules.pt
def test_torch_weights_of_other_shapes_or_names_are_one_line(saved, tmp_path):
    target = _copy(saved["two_tower"], tmp_path / "t")
    weights = torch.load(target / "modules.pt", weights_only=True)
    good = dict(weights["net_"])
    weights["net_"]["offset.weight"] = good["offset.weight"][:5]
    torch.save(weights, target / "modules.pt")
    _refused(
        target,
        r"modules.pt: net_.offset.weight is torch.float32 \(5, 32\), expected torch.float32 \(80, 32\)",
    )
    weights["net_"] = good | {"stray.weight": torch.zeros(2)}
    torch.save(weights, target / "modules.pt")
    _refused(target, "modules.pt: net_ has an unexpected tensor 'stray.weight'")
    weights["net_"] = {k: v for k, v in good.items() if k != "prototypes"}
    torch.save(weights, target / "modules.pt")
    _refused(target, "modules.pt: net_.prototypes is missing")


# ------------------------------------------------------------------------------------------ commands
def test_load_or_fit_refits_a_tampered_model_with_one_line(small_sim, tmp_path, capsys):
    params = {"epochs": 2}
    first, directory, fitted = load_or_fit_model(
        "mf", small_sim, params=params, workspace=tmp_path, progress=False
    )
    assert fitted and directory == fitted_model_dir(tmp_path, "mf", first.get_params(), small_sim)
    arrays = _arrays(directory)
    _write_arrays(directory, arrays | {"user_vecs_": np.ascontiguousarray(arrays["user_vecs_"][:, :3])})
    capsys.readouterr()
    again, _, fitted = load_or_fit_model("mf", small_sim, params=params, workspace=tmp_path, progress=False)
    err = capsys.readouterr().err.strip().splitlines()
    assert fitted and len(err) == 1
    assert "unusable" in err[0] and "user_vecs_ has shape (80, 3)" in err[0] and err[0].endswith("refitting")
    users = np.flatnonzero(first.known_)[:10]
    np.testing.assert_array_equal(again.predict(users, users), first.predict(users, users))
    _, _, fitted = load_or_fit_model("mf", small_sim, params=params, workspace=tmp_path, progress=False)
    assert not fitted  # the refitted model was saved whole


# ------------------------------------------------------------------------------------------ ensembles
def test_renamed_dims_keeps_the_data_sizes_and_prefixes_every_other_name():
    from recsys.models.schema import Record, renamed_dims

    assert renamed_dims("float[users, factors+1]", "b0_") == "float[users, b0_factors+1]"
    assert renamed_dims("sparse float~[images, 3]", "b0_") == "sparse float~[images, 3]"
    assert renamed_dims(["int=images", "int=dim", "list[str]", "module"], "b0_") == [
        "int=images",
        "int=b0_dim",
        "list[str]",
        "module",
    ]
    record = renamed_dims(Record("FoldIn", item_vecs="float[images, k]", a="float"), "b1_")
    assert record == Record("FoldIn", item_vecs="float[images, b1_k]", a="float")


def test_a_blend_is_checked_base_by_base(small_sim, tmp_path):
    """blend's state holds its bases' under base<i>__: a round trip gives the same scores; a base's array of the
    wrong shape, or bases_ naming a model that is not a base, is one line."""
    model = create_model("blend", bases="user_ridge,mf").fit(small_sim)
    assert set(fitted_state(model)) == set(model.saved_schema(model.save(tmp_path / "b")))
    users = np.flatnonzero(model.known_)[:20]
    loaded = Model.load(tmp_path / "b", small_sim)
    np.testing.assert_array_equal(loaded.predict(users, users), model.predict(users, users))
    rows = _copy(tmp_path / "b", tmp_path / "rows")
    arrays = _arrays(rows)
    arrays["base1__user_vecs_"] = arrays["base1__user_vecs_"][:5]
    _write_arrays(rows, arrays)
    _refused(rows, "base1__user_vecs_", small_sim)
    named = _copy(tmp_path / "b", tmp_path / "named")
    _edit_state(named, lambda s: s["bases_"].update(value=["oracle", "mf"]))
    _refused(named, "not a base model of blend")


def test_torch_weights_over_the_memory_cap_are_refused_before_they_are_read(saved, tmp_path, monkeypatch):
    """torch reads modules.pt whole: a file larger than the cap is one line, and not a byte of it is read."""
    target = _copy(saved["two_tower"], tmp_path / "big")
    size = (target / "modules.pt").stat().st_size
    monkeypatch.setattr(persistence._Arrays, "total_cap", staticmethod(lambda: size - 1))
    monkeypatch.setattr(persistence, "read_bytes", lambda *a, **k: pytest.fail("modules.pt was read"))
    with pytest.raises(SavedModelError, match=f"modules.pt holds {size} bytes, over the cap of {size - 1}"):
        persistence._read_torch(target / "modules.pt")


def test_an_index_out_of_range_is_refused_when_read(saved, tmp_path):
    """user_knn's rated_image_ indexes the images: a tampered index is one line at load, not an IndexError
    when a user is scored."""
    target = _copy(saved["user_knn"], tmp_path / "index")
    arrays = _arrays(target)
    rated = arrays["rated_image_"].copy()
    rated[3] = 10**6
    _write_arrays(target, arrays | {"rated_image_": rated})
    _refused(target, r"rated_image_ holds indices outside \[0, ")
    from recsys.models.schema import parse_array, renamed_dims

    assert parse_array("int[ratings] < images").below == "images"
    assert renamed_dims("int[n] < k+1", "b0_") == "int[b0_n] < b0_k+1"
