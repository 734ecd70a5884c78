"""``recsys train``, and the deep models trained data parallel under torchrun: two gloo processes on the CPU end
with identical parameters, and the saved model scores about as well as a single process's fit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recsys.cli import main
from recsys.models import create_model
from recsys.models.base import Model
from recsys.models.torch_utils import rank_batches, train_loop
from recsys.retrieval.similar import fitted_model_dir, load_or_fit_model

ROOT = Path(__file__).resolve().parents[2]
#: the fits under torchrun: two_tower as test_two_tower.py fits it; pref_tokens, pal and pal_a briefly (their steps
#: draw episodes per rank, and leave a parameter unused on ratings)
FITS = {
    "two_tower": {"epochs": 6, "seed": 0},
    "pref_tokens": {"epochs": 2},
    "pal": {"epochs": 2},
    "pal_a": {"epochs": 2},
}


@pytest.mark.parametrize(("n_batches", "world"), [(5, 2), (6, 2), (7, 3), (1, 2), (4, 1)])
def test_each_rank_takes_the_same_number_of_batches_and_together_all(n_batches, world):
    shares = [rank_batches(n_batches, rank, world) for rank in range(world)]
    assert {len(share) for share in shares} == {-(-n_batches // world)}
    assert set().union(*shares) == set(range(n_batches))
    for rank, share in enumerate(shares):  # batch b to rank b mod world, then padding from the start
        assert share[: len(range(rank, n_batches, world))] == list(range(rank, n_batches, world))


def test_a_single_process_loop_calls_shuffle_then_every_batch_in_order():
    import torch

    calls = []
    weight = torch.nn.Parameter(torch.zeros(1))

    def step(b: int):
        calls.append(b)
        return (weight - b) ** 2

    history = train_loop(step, 3, [weight], epochs=2, lr=0.1, shuffle=lambda: calls.append("shuffle"))
    assert calls == ["shuffle", 0, 1, 2, "shuffle", 0, 1, 2]
    assert len(history["train_loss"]) == 2


@pytest.fixture(scope="module")
def ddp_fits(small_sim_dir, tmp_path_factory):
    """Each model of FITS trained by ``recsys train`` in two processes: (folder, completed process)."""
    out = tmp_path_factory.mktemp("ddp")
    runs = [
        [
            "train",
            "--model",
            name,
            "--data",
            str(small_sim_dir),
            "--out",
            str(out / name),
            "--params",
            json.dumps(params),
        ]  # fmt: skip
        for name, params in FITS.items()
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(ROOT / "tests" / "models" / "torchrun_fit.py"), str(out), json.dumps(runs)]  # fmt: skip
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return out, proc


def test_both_ranks_end_with_identical_parameters(ddp_fits):
    out, proc = ddp_fits
    for i, name in enumerate(FITS):
        assert f"fitted {name} on simulated PAMELA (seed 7) in " in proc.stdout
        assert proc.stdout.count(f"fitted {name} ") == 1  # rank 0 alone prints (and saves)
        with np.load(out / f"rank0-{i}.npz") as rank0, np.load(out / f"rank1-{i}.npz") as rank1:
            assert rank0.files == rank1.files and rank0.files
            for key in rank0.files:
                np.testing.assert_array_equal(rank0[key], rank1[key], err_msg=f"{name}: {key}")
        saved = Model.load(out / name)  # rank 0's parameters are the saved ones
        with np.load(out / f"rank0-{i}.npz") as rank0:
            for key, value in saved.net_.state_dict().items():
                np.testing.assert_array_equal(value.numpy(), rank0[key])


def test_data_parallel_two_tower_scores_like_a_single_process_fit(ddp_fits, small_sim, evaluator, floors):
    out, _ = ddp_fits
    parallel = Model.load(out / "two_tower")
    single = create_model("two_tower", **FITS["two_tower"]).fit(small_sim)
    for split, shots in (("test_seen", None), ("test_unseen", 10)):
        scores = [evaluator.evaluate(m, split, shots).metrics["pairwise_acc"] for m in (parallel, single)]
        # not identical: each step averages two ranks' batches, so the steps and their number differ
        assert abs(scores[0] - scores[1]) < 0.03, (split, scores)
        assert scores[0] > max(floors.values()), (split, scores)


def test_train_saves_where_similar_users_reloads_it(small_sim_dir, small_sim, tmp_path, capsys):
    assert (
        main(["train", "--model", "profile", "--data", str(small_sim_dir), "--workspace", str(tmp_path)]) == 0
    )
    folder = fitted_model_dir(tmp_path, "profile", create_model("profile").get_params(), small_sim)
    assert f"saved to {folder}" in capsys.readouterr().out
    model, directory, fitted_now = load_or_fit_model("profile", small_sim, workspace=tmp_path, progress=False)
    assert directory == folder and not fitted_now
    expected = create_model("profile").fit(small_sim)
    test = small_sim.ratings["test_seen"]
    np.testing.assert_array_equal(
        model.predict(test.user_idx, test.image_idx), expected.predict(test.user_idx, test.image_idx)
    )


def test_train_refuses_a_full_out_folder_and_untorch_models_under_torchrun(tmp_path, capsys, monkeypatch):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    assert main(["train", "--model", "profile", "--out", str(tmp_path / "full")]) == 2
    assert "exists and is not empty; pass --overwrite" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", "--model", "profile", "--out", str(tmp_path / "new")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: profile does not train across processes") and err.count("\n") == 1
