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


# ---------------------------------------------------------------------- read-only or full workspace, --out in the way
class _FileSystem:
    """What ``os.statvfs`` says of a file system: read-only, or with ``free`` bytes left."""

    def __init__(self, read_only: bool = False, free: int = 10**12):
        self.f_flag = os.ST_RDONLY if read_only else 0
        self.f_bavail, self.f_frsize = free, 1


def _snapshot(root) -> dict:
    return {str(p): (p.is_dir(), p.stat().st_size) for p in [root, *root.rglob("*")]} if root.exists() else {}


def _commands(sim, ws):
    data = ["--data", str(sim), "--workspace", str(ws)]
    return {
        "leaderboard": ["leaderboard", *data, "--models", "global_mean", "--no-tracking"],
        "similar-users": ["similar-users", *data, "--user", "x"],
        "atlas": ["atlas", *data, "--model", "mf"],
        "tune": ["tune", "ridge", *data, "--trials", "1", "--no-progress"],
    }


@pytest.mark.parametrize(
    ("state", "says"),
    [
        (_FileSystem(read_only=True), "Read-only file system; choose another "),
        (_FileSystem(free=1000), "No space left on device; free some space or choose another "),
    ],
    ids=["read-only", "full"],
)
@pytest.mark.parametrize("command", ["leaderboard", "similar-users", "atlas", "tune"])
def test_a_read_only_or_full_workspace_is_one_line_before_any_work(
    small_sim_dir, tmp_path, monkeypatch, capsys, state, says, command
):
    ws = tmp_path / "ws"
    monkeypatch.setattr(os, "statvfs", lambda path: state)
    monkeypatch.setattr("recsys.data.load_dataset", lambda *a, **k: pytest.fail("the data were read"))
    assert main(_commands(small_sim_dir, ws)[command]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: {ws}") and says in line and "--workspace" in line
    assert not ws.exists()


def test_a_disk_that_fills_while_a_leaderboard_is_written_is_one_line_and_the_old_set_stays(
    small_sim_dir, tmp_path, monkeypatch, capsys
):
    import errno

    import recsys.report.files as report  # where write_files looks write_per_user up

    out = tmp_path / "board"
    argv = ["leaderboard", "--data", str(small_sim_dir), "--models", "global_mean", "--no-tracking"]
    argv += ["--shots", "0", "--draws", "1", "--out", str(out)]
    assert main(argv) == 0
    before, _ = _snapshot(out), capsys.readouterr()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # a failed write names no file

    monkeypatch.setattr(report, "write_per_user", full)
    assert main([*argv, "--overwrite"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]  # the rest: progress bars
    assert lines == [
        f"error: {out}: No space left on device; free some space or choose another --out or --workspace"
    ]
    assert "Traceback" not in err
    assert _snapshot(out) == before
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name] == []


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (
            ["data", "simulate", "--out", "{file}", "--users", "10", "--images", "20"],
            "{file}: Not a directory",
        ),
        (
            ["atlas", "--data", "{sim}", "--model", "mf", "--out", "{file}/atlas.html"],
            "{file}: Not a directory",
        ),
        (
            ["leaderboard", "--data", "{sim}", "--out", "{file}", "--no-tracking"],
            "{file} exists and is not a folder",
        ),
    ],
    ids=["simulate", "atlas", "leaderboard"],
)
def test_out_naming_an_existing_file_is_one_line(small_sim_dir, tmp_path, monkeypatch, capsys, argv, says):
    monkeypatch.chdir(tmp_path)
    file = tmp_path / "a-file"
    file.write_text("mine")
    values = {"{file}": str(file), "{sim}": str(small_sim_dir)}
    argv = [values.get(a, a.replace("{file}", str(file))) for a in argv]
    assert main(argv) == 2
    assert says.replace("{file}", str(file)) in one_error_line(capsys)
    assert file.read_text() == "mine"


def test_explain_top_must_be_positive(capsys, monkeypatch):
    monkeypatch.setattr("recsys.data.load_dataset", lambda *a, **k: pytest.fail("the data were read"))
    assert main(["explain", "--user", "u", "--image", "i", "--top", "-5"]) == 2
    assert one_error_line(capsys) == "error: --top must be at least 1, got -5"
