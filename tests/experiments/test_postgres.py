"""Two workers share one study through a real PostgreSQL server (skipped where none can be started)."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import optuna
import pytest


def _pg_bin(tool: str) -> str | None:
    found = shutil.which(tool)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    pytest.importorskip("psycopg2", reason="psycopg2-binary is not installed (pip install psycopg2-binary)")
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl); apt-get install postgresql")
    # PostgreSQL refuses to run as root: run it as the `postgres` user where we are root
    prefix: list[str] = []
    if os.geteuid() == 0:
        if not shutil.which("runuser"):
            pytest.skip("running as root without runuser: cannot start PostgreSQL as another user")
        try:
            import pwd

            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to run the server")
        prefix = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="recsys-pg-"))
    data, log = root / "data", root / "server.log"
    if prefix:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    port = _free_port()
    try:
        subprocess.run([*prefix, initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                       check=True, capture_output=True, timeout=120)  # fmt: skip
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o",
                        f"-p {port} -c listen_addresses=127.0.0.1 -k {root}", "start"],
                       check=True, capture_output=True, timeout=120)  # fmt: skip
    except (OSError, subprocess.SubprocessError) as err:
        detail = getattr(err, "stderr", b"") or b""
        shutil.rmtree(root, ignore_errors=True)
        pytest.skip(f"could not start PostgreSQL: {err} {detail.decode(errors='replace')[-300:]}")
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*prefix, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True, timeout=60
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_two_workers_share_one_study(postgres_url, small_sim, small_sim_dir):
    from experiments.tuning import tune

    # this process creates the study (and enqueues the defaults) ...
    tune(small_sim, "ridge", trials=2, storage=postgres_url, study="shared", tracking=False, progress=False)
    # ... then a second process and this one work on it at the same time
    argv = [sys.executable, "-m", "recsys.cli", "tune", "ridge", "--data", str(small_sim_dir), "--seed", "1",
            "--storage", postgres_url, "--study", "shared", "--trials", "3", "--no-tracking", "--no-progress"]  # fmt: skip
    other = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        tune(small_sim, "ridge", trials=3, storage=postgres_url, study="shared", seed=2, tracking=False,
             progress=False)  # fmt: skip
        _, err = other.communicate(timeout=300)
    finally:
        other.kill()
    assert other.returncode == 0, err
    study = optuna.load_study(study_name="shared", storage=postgres_url)
    assert len(study.trials) == 8
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    workers = {t.user_attrs["worker"] for t in study.trials}
    assert (
        len(workers) == 2 and f"{socket.gethostname()}:{other.pid}" in workers
    )  # both processes' trials landed
    assert study.trials[0].params == {"alpha": 3.0}
    assert sum(bool(t.user_attrs.get("defaults")) for t in study.trials) == 1
