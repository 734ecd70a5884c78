"""Temporary folders that a killed writer left (``.NAME.tmp-*`` in ``leaderboards/`` after SIGKILL) are removed
by the next run in that folder; a live writer's are left alone; a previous set moved aside is put back."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from recsys.cli import main
from recsys.workspace import exclusive_lock, remove_stale, temporary_sibling, write_atomically


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _named(folder, name: str, kind: str, pid: int | None, host: str | None = None):
    suffix = "" if pid is None else f"-{pid}@{host or socket.gethostname()}"
    path = folder / f".{name}.{kind}-0123abcd{suffix}"
    path.mkdir()
    (path / "part.csv").write_text("half")
    return path


def test_only_dead_writers_leftovers_are_removed(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        dead = _named(tmp_path, "run-a", "tmp", _dead_pid())
        alive = _named(tmp_path, "run-b", "tmp", sleeper.pid)
        elsewhere = _named(tmp_path, "run-c", "tmp", _dead_pid(), host="another-machine")
        legacy = _named(tmp_path, "run-d", "tmp", None)  # an older version's name: the lock tells
        locked = _named(tmp_path, "run-e", "tmp", None)
        aside = _named(tmp_path, "run-f", "old", _dead_pid())  # died between its two renames
        (tmp_path / "run-g").mkdir()
        aside_done = _named(tmp_path, "run-g", "old", _dead_pid())  # died after the new set was in place
        with exclusive_lock(tmp_path / "run-e"):
            removed = remove_stale(tmp_path)
        assert sorted(p.name for p in removed) == sorted([dead.name, legacy.name, aside_done.name])
        assert alive.exists() and elsewhere.exists() and locked.exists()
        assert not aside.exists() and (tmp_path / "run-f" / "part.csv").read_text() == "half"  # put back
        assert (tmp_path / "run-g").is_dir() and not aside_done.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_write_atomically_sweeps_its_folder_and_names_its_own_temporary(tmp_path):
    stale = _named(tmp_path, "20250101T000000Z-0123456789ab", "tmp", None)
    seen = []

    def write(folder):
        seen.append(folder.name)
        (folder / "leaderboard.json").write_text("{}")

    write_atomically(tmp_path / "20260101T000000Z-abcdefabcdef", write)
    assert not stale.exists()
    assert seen[0].startswith(".20260101T000000Z-abcdefabcdef.tmp-") and seen[0].endswith(
        f"-{os.getpid()}@{socket.gethostname()}"
    )
    assert sorted(p.name for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name) == []
    assert temporary_sibling(tmp_path / "x", "old").name.startswith(".x.old-")


STALLED_WRITER = (
    "import sys, time\n"
    "from pathlib import Path\n"
    "import recsys.report.files as report\n"
    "from recsys.cli import main\n"
    "def stall(*args, **kwargs):\n"
    "    Path(sys.argv[2]).write_text('writing')\n"
    "    time.sleep(120)\n"
    "report.write_per_user = stall\n"
    "main(['leaderboard', '--data', sys.argv[1], '--workspace', sys.argv[3], '--models', 'global_mean',\n"
    "      '--shots', '0', '--draws', '1', '--no-tracking'])\n"
)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_a_leaderboard_killed_mid_write_leaves_nothing_after_the_next_run(small_sim_dir, tmp_path, capsys):
    workspace, flag = tmp_path / "ws", tmp_path / "started"
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    argv = [sys.executable, "-c", STALLED_WRITER, str(small_sim_dir), str(flag), str(workspace)]
    proc = subprocess.Popen(argv, env=env)
    try:
        deadline = time.monotonic() + 120
        while not flag.exists():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    boards = workspace / "leaderboards"
    assert [p.name for p in boards.iterdir() if ".tmp-" in p.name]  # what the probe found
    argv = ["leaderboard", "--data", str(small_sim_dir), "--workspace", str(workspace), "--models"]
    assert main([*argv, "global_mean", "--shots", "0", "--draws", "1", "--no-tracking"]) == 0
    assert [p.name for p in boards.iterdir() if ".tmp-" in p.name or ".old-" in p.name] == []
    assert len([p for p in boards.iterdir() if not p.name.startswith(".") and p.name != "latest"]) == 1
