"""An interrupt always ends ``recsys`` with status 130 (143 for SIGTERM) and one line, whenever it arrives: during
the imports, during the work (a library may swallow the KeyboardInterrupt), in worker processes, or while the
interpreter shuts down after the work (where it used to be lost: exit 0); the previous output stays intact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}


def run_script(body: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``body`` (it defines ``fake_main`` or patches things), then the ``recsys`` program's entry point."""
    script = textwrap.dedent(body) + "\nfrom recsys.cli import console\nconsole.run()\n"
    return subprocess.run([sys.executable, "-c", script, *args], env=ENV, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


FAKE_MAIN = """
import atexit, os, signal, sys, time
import recsys.cli

def install(main):
    recsys.cli.main = main
"""


def test_an_interrupt_while_the_interpreter_shuts_down_is_not_lost():
    proc = run_script(
        FAKE_MAIN
        + """
def fake_main():
    atexit.register(lambda: os.kill(os.getpid(), signal.SIGINT))  # Ctrl-C after the work, at exit
    print("done")
    return 0

install(fake_main)
"""
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (130, "done\n", "interrupted\n")


def test_an_interrupt_a_library_swallowed_still_ends_with_130():
    proc = run_script(
        FAKE_MAIN
        + """
def fake_main():
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(30)
    except KeyboardInterrupt:
        pass  # what a broad clean-up in a library does
    print("done")
    return 0

install(fake_main)
"""
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (130, "done\n", "interrupted\n")


def test_sigterm_ends_with_143():
    proc = run_script(
        FAKE_MAIN
        + """
def fake_main():
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(30)
    return 0

install(fake_main)
"""
    )
    assert (proc.returncode, proc.stderr) == (143, "interrupted\n")


def test_an_interrupt_during_the_imports_is_one_line_not_a_traceback():
    proc = run_script(
        """
import importlib.abc, os, signal, sys

class Trip(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "recsys.cli.atlas":  # Ctrl-C while the command modules are being imported
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, Trip())
sys.argv = ["recsys", "models"]
"""
    )
    assert (proc.returncode, proc.stdout, proc.stderr) == (130, "", "interrupted\n")


def test_a_finished_command_keeps_its_status():
    proc = run_script('import sys\nsys.argv = ["recsys", "models"]\n')
    assert proc.returncode == 0 and proc.stderr == "" and "mf" in proc.stdout


STALLED_FIT = """
import sys, time
from pathlib import Path
from recsys.models.baselines import GlobalMean

flag = Path(sys.argv[1])

def stall(self, *args, **kwargs):
    flag.write_text("fitting")
    time.sleep(120)

GlobalMean._fit = stall
sys.argv = ["recsys", "leaderboard", "--data", sys.argv[2], "--out", sys.argv[3], "--overwrite",
            "--models", "global_mean", "--shots", "0", "--draws", "1", "--no-tracking"]
"""


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_ctrl_c_in_a_leaderboard_is_130_and_the_previous_set_stays(small_sim_dir, tmp_path):
    from recsys.cli import main

    out, flag = tmp_path / "set", tmp_path / "fitting"
    argv = ["leaderboard", "--data", str(small_sim_dir), "--out", str(out), "--models", "global_mean"]
    assert main([*argv, "--shots", "0", "--draws", "1", "--no-tracking"]) == 0
    before = _snapshot(out)
    script = STALLED_FIT + "\nfrom recsys.cli import console\nconsole.run()\n"
    proc = subprocess.Popen([sys.executable, "-c", script, str(flag), str(small_sim_dir), str(out)], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not flag.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert err.splitlines()[-1] == "interrupted" and "Traceback" not in err
    assert _snapshot(out) == before
    assert [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name] == []


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            if f"\nPPid:\t{pid}\n" in status:
                found.append(int(entry.name))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_ctrl_c_to_the_whole_group_with_worker_processes_is_one_line(small_sim_dir, tmp_path):
    """A terminal's Ctrl-C reaches the parent and its spawned workers: the workers ignore it, the parent
    stops them and ends with 130; no worker prints a traceback."""
    argv = [sys.executable, "-m", "recsys.cli", "leaderboard", "--data", str(small_sim_dir), "--models",
            "two_tower,pref_tokens,mf,user_ridge", "--jobs", "2", "--no-tracking", "--out", str(tmp_path / "b")]  # fmt: skip
    proc = subprocess.Popen(argv, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 180
        while len(_children(proc.pid)) < 3:  # the two workers and the executor's resource tracker
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.2)
        time.sleep(3.0)  # the workers are importing or fitting
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and err.splitlines()[-1] == "interrupted"
    assert not (tmp_path / "b").exists()
