"""Faults of the environment and of found files, through ``recsys.cli.main``: each ends in one line (exit 2),
or in one line and a rebuild, never a traceback or a hang; the output of a previous run stays intact."""

from __future__ import annotations

import json
import os

import pytest

from recsys.cli import main
from recsys.data import load_dataset


def one_error_line(capsys) -> str:
    """The single ``error: ...`` line of a failed command (and no traceback)."""
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


@pytest.fixture()
def similar(small_sim_dir, tmp_path, capsys):
    """``similar-users`` on the small simulation in a fresh workspace, run once: (argv, its JSON output)."""
    user = str(load_dataset(small_sim_dir).user_ids[0])
    argv = ["similar-users", "--data", str(small_sim_dir), "--workspace", str(tmp_path / "ws"), "--json"]
    argv += ["--user", user]
    assert main(argv) == 0
    return argv, json.loads(capsys.readouterr().out)


# ---------------------------------------------------------------------- JSON depth, non-regular files
def test_deep_params_json_is_one_line(small_sim_dir, capsys):
    deep = '{"alpha": ' + "[" * 30_000 + "]" * 30_000 + "}"
    argv = ["similar-users", "--data", str(small_sim_dir), "--model", "user_ridge", "--params", deep]
    assert main([*argv, "--user", "x"]) == 2
    assert "--params is not valid JSON: nested deeper than 100 levels" in one_error_line(capsys)


@pytest.mark.parametrize("name", ["state.json", "config.json"])
def test_a_deep_saved_json_is_refitted_with_one_line(similar, name, tmp_path, capsys):
    argv, expected = similar
    (file,) = (tmp_path / "ws").rglob(name)
    file.write_text("[" * 30_000 + "]" * 30_000)
    assert main(argv) == 0
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].endswith("; refitting"), captured.err
    assert f"{name} is unreadable (nested deeper than 100 levels" in lines[0]
    assert json.loads(captured.out) == expected


def test_a_fifo_named_state_json_is_refitted_with_one_line(similar, tmp_path, capsys, deadline):
    argv, expected = similar
    (file,) = (tmp_path / "ws").rglob("state.json")
    file.unlink()
    os.mkfifo(file)
    with deadline(60):
        assert main(argv) == 0
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].endswith("; refitting"), captured.err
    assert "state.json: is a FIFO (named pipe)" in lines[0]
    assert json.loads(captured.out) == expected
    assert file.is_file()  # saved again, whole
