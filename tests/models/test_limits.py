"""Hyperparameter upper bounds, the memory estimate refused before allocation, and degenerate data (scores
that are all equal, scores that overflow float32) that every model must fit or skip with a reason."""

from __future__ import annotations

import json
import shutil
import tracemalloc
import typing
from dataclasses import fields

import numpy as np
import pandas as pd
import pytest

from experiments.spaces import load_space
from recsys.cli import main
from recsys.data import load_dataset
from recsys.data.simulate import SimulationConfig, simulate
from recsys.errors import UserError
from recsys.evaluation.evaluator import Evaluator
from recsys.leaderboard import ModelTask, fit_and_score
from recsys.models import create_model, list_models
from recsys.models.params import (
    MAX_INT,
    SIZE_BOUNDS,
    DataSizes,
    MemoryEstimateError,
    bounds,
    check_memory,
)
from recsys.models.registry import GROUPS, model_class


def integer_fields(name: str):
    cls = model_class(name).Params
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        kind = hints[f.name]
        if kind is int or typing.get_origin(kind) is tuple:
            yield f, kind


@pytest.mark.parametrize("name", list_models())
def test_every_integer_hyperparameter_has_an_upper_bound_that_is_enforced(name):
    for f, kind in integer_fields(name):
        high = bounds(f.name, f.metadata, kind)["high"]
        assert high is not None and high <= max(MAX_INT, SIZE_BOUNDS["seed"][1]), (name, f.name)
        too_big = high + 1
        value = (too_big,) if typing.get_origin(kind) is tuple else too_big
        with pytest.raises(UserError, match=rf"^{name}: (each value of )?{f.name} must be <= {high}, got "):
            create_model(name, **{f.name: value})


@pytest.mark.parametrize("name", [m for m in list_models() if m != "mllm_scorer"])
def test_defaults_and_search_spaces_lie_within_the_bounds(name):
    create_model(name)  # the defaults validate
    for param in load_space(name).params.values():
        if param.type == "int":
            create_model(name, **{param.name: int(param.high)})


def test_the_probe_values_are_refused_in_one_line():
    with pytest.raises(UserError, match=r"^mf: factors must be <= 1024, got 100000000$"):
        create_model("mf", factors=100_000_000)
    with pytest.raises(UserError, match=r"^two_tower: n_prototypes must be <= 1024"):
        create_model("two_tower", n_prototypes=10**6)
    with pytest.raises(UserError, match=r"^mf: seed must be >= 0, got -1$"):
        create_model("mf", seed=-1)
    assert SIZE_BOUNDS["epochs"][1] >= 1000  # far above any search space


def test_memory_estimate_is_refused_before_the_model_allocates(small_sim, monkeypatch):
    model = create_model("mf", factors=512)

    def allocating(*args, **kwargs):
        raise AssertionError("the fit started")

    monkeypatch.setattr(model, "_fit", allocating)
    monkeypatch.setattr("recsys.models.params.available_memory", lambda: 2**30)  # 1 GiB left
    with pytest.raises(MemoryEstimateError) as caught:
        model.fit(small_sim)
    message = str(caught.value)
    assert message.startswith("mf: factors=512 needs about ") and "more than the 1.0 GiB available" in message
    assert "80 users, 800 images and 64 image features" in message and message.endswith("lower factors")


def test_memory_estimate_by_hand():
    params = create_model("two_tower", dim=32, hidden=128, n_prototypes=8).params
    sizes = DataSizes(users=10, images=100, features=64, ratings=1000)
    assert params.memory_bytes(sizes) == 4 * 8 * (32 + 128 + 8) * (10 + 100 + 64)
    mf = create_model("mf", factors=15).params
    assert mf.memory_bytes(sizes) == 4 * 8 * 15 * 174 + 2 * 8 * 100 * 16**2 + 3 * 8 * 1000 * 16
    check_memory("mf", mf, sizes, available=mf.memory_bytes(sizes))  # exactly enough is enough
    with pytest.raises(MemoryEstimateError):
        check_memory("mf", mf, sizes, available=mf.memory_bytes(sizes) - 1)


def test_mf_estimate_covers_the_measured_peak(small_sim):
    """tracemalloc sees every numpy allocation: the estimate is an upper bound within a small factor."""
    small_sim.image_design(required=False)  # built once per dataset, outside the measured fit
    model = create_model("mf", factors=64, epochs=2)
    tracemalloc.start()
    try:
        model.fit(small_sim)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    sizes = DataSizes(small_sim.n_users, small_sim.n_images, 64, len(small_sim.ratings["train"]))
    estimate = model.params.memory_bytes(sizes)
    assert peak <= estimate <= 4 * peak, (peak, estimate)


# ---------------------------------------------------------------------- degenerate data
@pytest.fixture(scope="module")
def constant_data(tmp_path_factory):
    """A simulated PAMELA folder (features, metadata, demographics) whose every score is 5, and a plain rating
    table whose every score is 3."""
    root = tmp_path_factory.mktemp("constant")
    config = SimulationConfig(
        seed=3, users=30, images=80, ratings_per_user=30, feature_dim=8, render_images=False
    )
    pamela = simulate(root / "sim", config, progress=False)
    shutil.rmtree(pamela / "simulation")  # no ground truth: the data are no longer the simulator's
    for file in (pamela / "annotations").glob("*.json"):
        entries = json.loads(file.read_text())
        for entry in entries:
            entry["original_score"] = 5.0
        file.write_text(json.dumps(entries))
    rng = np.random.default_rng(0)
    rows = [(f"u{u}", f"i{i}", 3.0) for u in range(40) for i in rng.choice(60, 25, replace=False)]
    pd.DataFrame(rows, columns=["user_id", "item_id", "score"]).to_csv(root / "constant.csv", index=False)
    return {"pamela": pamela, "table": root / "constant.csv"}


#: models trained by gradient steps are given few steps here: the data have nothing to learn
QUICK = {"epochs": 2, "foldin_steps": 2}


@pytest.mark.parametrize("data", ["pamela", "table"])
def test_every_model_fits_a_constant_table_or_skips_it_with_a_reason(constant_data, data):
    dataset = load_dataset(constant_data[data])
    constant = 5.0 if data == "pamela" else 3.0
    evaluator = Evaluator(dataset, shots=[0, 10], n_bootstrap=10, draws=1)
    splits = [s for s in dataset.splits if s.startswith("test")]
    exact = set(GROUPS["baselines"]) | {"biases", "mf", "user_knn", "item_knn", "profile"}
    for name in list_models():
        takes = model_class(name).param_names()
        params = {k: v for k, v in QUICK.items() if k in takes and name != "mf"}
        rows = fit_and_score(ModelTask(name, params), evaluator, splits, "train")
        for row in rows:
            assert row.status in ("ok", "skipped", "unsupported"), (name, row.status, row.reason)
            if row.status != "ok":
                assert row.reason, name
                continue
            assert np.isfinite(row.metrics["rmse"]), name
            if name in exact:  # closed-form fits of a constant predict the constant
                assert row.metrics["rmse"] < 1e-3, (name, row.split, row.metrics["rmse"])
    assert constant in (3.0, 5.0)


def test_data_validate_warns_about_a_constant_table_in_one_line(constant_data, capsys):
    assert main(["data", "validate", str(constant_data["table"])]) == 0
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        "warning: table (constant.csv): every score of train, val_seen, val_unseen, test_seen, test_unseen is 3; "
        "the models fit, but there is no order to learn and the correlation metrics are undefined"
    ]
    assert captured.out.splitlines()[-1] == "no problems found"


def test_a_score_beyond_float32_is_one_problem_line(tmp_path, capsys):
    rng = np.random.default_rng(1)
    rows = [(f"u{u}", f"i{i}", float(rng.integers(1, 6))) for u in range(30) for i in range(20)]
    table = pd.DataFrame(rows, columns=["user_id", "item_id", "score"])
    table.loc[7, "score"] = 1e308
    table.to_csv(tmp_path / "ratings.csv", index=False)
    assert main(["data", "validate", str(tmp_path / "ratings.csv")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"problem: {tmp_path / 'ratings.csv'}: score 1e+308 at row(s) 7 overflows the 32-bit floats scores are "
        "stored in (largest 3.403e+38); rescale the scores",
        f"1 problem(s) found in {tmp_path / 'ratings.csv'}",
    ]
    argv = ["leaderboard", "--data", str(tmp_path / "ratings.csv"), "--models", "mf", "--no-tracking"]
    assert main([*argv, "--out", str(tmp_path / "board")]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "overflows the 32-bit floats" in lines[0]
    assert not (tmp_path / "board").exists()
