"""Leaderboard output sets are written whole, under a lock, into the workspace (issue 13, items 1 and 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pandas as pd
import pytest
from PIL import Image

import recsys.report.charts as charts
import recsys.report.files as files
from recsys.cli import main
from recsys.errors import UserError
from recsys.leaderboard import run_leaderboard
from recsys.report import write_leaderboard
from recsys.workspace import exclusive_lock

NO_TRACKING = ["--models", "global_mean,ridge", "--shots", "0,1,2", "--draws", "1", "--no-tracking"]


@pytest.fixture(scope="module")
def board(small_sim):
    return run_leaderboard(small_sim, ["global_mean", "ridge"], shots=(0, 1, 2), draws=1, progress=False)


def snapshot(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def hidden(parent) -> list[str]:
    """Temporary or set-aside folders left beside a target (lock files are expected)."""
    return [p.name for p in parent.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock")]


def test_every_file_of_a_set_carries_the_same_run_id(board, tmp_path):
    paths = write_leaderboard(board, tmp_path / "set")
    assert {
        "json",
        "csv",
        "md",
        "png",
        "per_user",
        "predictions",
        "curve_csv",
        "curve_png",
        "best_of_n",
        "breakdown_csv",
        "breakdown_png",
        "breakdown_md",
        "html",
    } <= set(paths)
    run_id = board.run_id
    assert json.loads(paths["json"].read_text())["run_id"] == run_id
    assert (
        f"run `{run_id}`" in paths["md"].read_text()
        and f"run `{run_id}`" in paths["breakdown_md"].read_text()
    )
    assert f"run <code>{run_id}</code>" in paths["html"].read_text()
    for key in ("csv", "per_user", "curve_csv", "breakdown_csv"):
        assert set(pd.read_csv(paths[key], dtype={"run_id": str})["run_id"]) == {run_id}, key
    assert set(pd.read_parquet(paths["predictions"])["run_id"]) == {run_id}
    for key in ("png", "curve_png", "best_of_n", "breakdown_png"):
        assert Image.open(paths[key]).text["run_id"] == run_id, key


def test_an_error_while_writing_leaves_the_previous_set_intact(board, small_sim, tmp_path, monkeypatch):
    out = tmp_path / "set"
    write_leaderboard(board, out)
    before = snapshot(out)

    def broken(*args, **kwargs):
        raise RuntimeError("matplotlib fell over")

    monkeypatch.setattr(charts, "write_chart", broken)  # after json, csv and md are written
    second = run_leaderboard(small_sim, ["global_mean"], shots=(0,), draws=1, progress=False)
    with pytest.raises(RuntimeError, match="fell over"):
        write_leaderboard(second, out, overwrite=True)
    assert snapshot(out) == before
    assert hidden(tmp_path) == []


def test_an_interrupt_while_writing_leaves_the_previous_set_intact(board, tmp_path, monkeypatch):
    out = tmp_path / "set"
    write_leaderboard(board, out)
    before = snapshot(out)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(files, "write_per_user", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_leaderboard(board, out, overwrite=True)
    assert snapshot(out) == before and hidden(tmp_path) == []


def test_a_non_empty_folder_is_refused_unless_overwrite_then_replaced_whole(board, small_sim, tmp_path):
    out = tmp_path / "set"
    write_leaderboard(board, out)
    (out / "stray.txt").write_text("from an older run")
    before = snapshot(out)
    second = run_leaderboard(small_sim, ["global_mean"], shots=(0,), draws=1, progress=False)
    with pytest.raises(UserError, match="not empty; pass --overwrite"):
        write_leaderboard(second, out)
    assert snapshot(out) == before

    paths = write_leaderboard(second, out, overwrite=True)
    assert json.loads(paths["json"].read_text())["run_id"] == second.run_id
    assert not (out / "stray.txt").exists() and not (out / "curve.csv").exists()  # nothing of the old set
    assert hidden(tmp_path) == []


def test_the_cli_refuses_a_non_empty_out_before_fitting(small_sim_dir, tmp_path, capsys):
    out = tmp_path / "set"
    argv = ["leaderboard", "--data", str(small_sim_dir), "--out", str(out), *NO_TRACKING]
    assert main(argv) == 0
    before = snapshot(out)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not empty; pass --overwrite" in err
    assert snapshot(out) == before
    assert main([*argv, "--overwrite"]) == 0
    assert (
        json.loads((out / "leaderboard.json").read_text())["run_id"]
        != json.loads(before["leaderboard.json"])["run_id"]
    )


def test_a_held_lock_makes_a_second_writer_fail_with_one_line(board, small_sim_dir, tmp_path, capsys):
    out = tmp_path / "set"
    with exclusive_lock(out):
        with pytest.raises(UserError, match="another run is writing to"):
            write_leaderboard(board, out)
        argv = ["leaderboard", "--data", str(small_sim_dir), "--out", str(out), *NO_TRACKING]
        assert main(argv) == 2
        err = capsys.readouterr().err
        last = err.strip().splitlines()[-1]  # after the progress bar's lines
        assert last.startswith(f"error: another run is writing to {out}") and err.count("error:") == 1
    assert not out.exists() and hidden(tmp_path) == []
    write_leaderboard(board, out)  # released


def test_default_runs_go_to_new_timestamped_folders_under_the_workspace(
    small_sim_dir, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    argv = ["leaderboard", "--data", str(small_sim_dir), *NO_TRACKING]
    assert main([*argv, "--workspace", "ws"]) == 0
    first = capsys.readouterr().out
    time.sleep(1.1)
    assert main([*argv, "--workspace", "ws"]) == 0
    boards = tmp_path / "ws" / "leaderboards"
    sets = sorted(p for p in boards.iterdir() if not p.name.startswith(".") and p.name != "latest")
    assert len(sets) == 2
    run_ids = [json.loads((s / "leaderboard.json").read_text())["run_id"] for s in sets]
    for folder, run_id in zip(sets, run_ids, strict=True):
        assert folder.name.endswith(f"-{run_id}") and folder.name[:8].isdigit()
    assert (boards / "latest").is_symlink() and (boards / "latest").resolve() == sets[1].resolve()
    assert str(sets[0]) in first or sets[0].name in first
    assert not (tmp_path / "leaderboard").exists() and not (tmp_path / "runs").exists()
    assert hidden(boards) == []

    monkeypatch.setenv("RECSYS_WORKSPACE", str(tmp_path / "env"))
    assert main(argv) == 0
    assert (tmp_path / "env" / "leaderboards" / "latest" / "leaderboard.json").exists()
    monkeypatch.delenv("RECSYS_WORKSPACE")
    assert main(argv) == 0
    assert (tmp_path / "runs" / "leaderboards" / "latest" / "leaderboard.json").exists()  # ./runs by default


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_killed_writer_leaves_the_previous_set_intact(board, small_sim_dir, tmp_path):
    out = tmp_path / "set"
    write_leaderboard(board, out)
    before = snapshot(out)
    flag = tmp_path / "started"
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "import recsys.report.files as files\n"
        "from recsys.cli import main\n"
        "def stall(*args, **kwargs):\n"
        "    Path(sys.argv[2]).write_text('writing')\n"
        "    time.sleep(120)\n"
        "files.write_per_user = stall\n"
        "main(['leaderboard', '--data', sys.argv[1], '--out', sys.argv[3], '--overwrite', '--models',\n"
        "      'global_mean', '--shots', '0', '--draws', '1', '--no-tracking'])\n"
    )
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script, str(small_sim_dir), str(flag), str(out)], env=env)
    try:
        deadline = time.monotonic() + 120
        while not flag.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        assert any(name.startswith(".set.tmp-") for name in hidden(tmp_path))  # mid-write
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert snapshot(out) == before
    write_leaderboard(board, out, overwrite=True)  # the next writer clears the killed one's temporary folder
    assert hidden(tmp_path) == []


def test_tune_and_similar_users_write_under_the_workspace(
    small_sim, small_sim_dir, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tune = [
        "tune",
        "ridge",
        "--data",
        str(small_sim_dir),
        "--trials",
        "1",
        "--no-progress",
        "--workspace",
        "ws",
    ]
    assert main(tune) == 0
    assert (tmp_path / "ws" / "optuna.db").exists() and (tmp_path / "ws" / "mlflow.db").exists()
    user = small_sim.user_ids[small_sim.train_users()[0]]
    monkeypatch.setenv("RECSYS_WORKSPACE", "env")
    assert main(["similar-users", "--data", str(small_sim_dir), "--user", user, "--k", "2", "--json"]) == 0
    assert any((tmp_path / "env" / "models").iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["env", "ws"]  # nothing under ./runs


def test_latest_falls_back_to_a_text_file_and_never_goes_back(tmp_path, monkeypatch):
    from recsys import workspace

    newer, older = tmp_path / "20260102T000000Z-bbb", tmp_path / "20260101T000000Z-aaa"
    assert workspace.update_latest(newer) == tmp_path / "latest"
    assert os.readlink(tmp_path / "latest") == newer.name
    workspace.update_latest(older)  # finished later, but older
    assert os.readlink(tmp_path / "latest") == newer.name

    def no_symlinks(*args, **kwargs):
        raise OSError("symlinks are not supported here")

    monkeypatch.setattr(workspace.os, "symlink", no_symlinks)
    other = tmp_path / "other"
    other.mkdir()
    assert workspace.update_latest(other / newer.name) == other / "LATEST"
    assert (other / "LATEST").read_text() == f"{newer.name}\n"
    assert hidden(other) == []
