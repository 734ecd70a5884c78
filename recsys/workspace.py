"""The workspace rule: where every command writes, and how an output set is written as a whole.

Every command that writes (``leaderboard``, ``tune``/``study`` storage, ``similar-users``/``serve`` fitted
models, the default MLflow store) writes under one workspace folder: ``--workspace DIR``, else
``$RECSYS_WORKSPACE``, else ``./runs``. Each leaderboard gets its own folder
``WORKSPACE/leaderboards/<UTC time>-<run id>/`` and ``WORKSPACE/leaderboards/latest`` points at the newest
(a symlink, or a ``LATEST`` text file where symlinks cannot be made).

An output set is written into a hidden temporary folder beside its target and renamed into place once every
file is written, under an exclusive lock on the target: an error or an interrupt before the rename leaves the
previous set as it was, and two runs on one folder never interleave. An existing non-empty folder is replaced
only when asked (``overwrite=True``), and then whole.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from recsys.errors import UserError

DEFAULT_WORKSPACE = "runs"
WORKSPACE_ENV = "RECSYS_WORKSPACE"
LEADERBOARDS = "leaderboards"
LATEST = "latest"
LATEST_FILE = "LATEST"

T = TypeVar("T")


def resolve_workspace(workspace: str | Path | None = None) -> Path:
    """The workspace folder: the argument, else ``$RECSYS_WORKSPACE``, else ``./runs``."""
    return Path(workspace or os.environ.get(WORKSPACE_ENV) or DEFAULT_WORKSPACE)


def sqlite_url(workspace: str | Path | None, name: str) -> str:
    """``sqlite:///WORKSPACE/name``: a default database under the workspace."""
    return f"sqlite:///{resolve_workspace(workspace) / name}"


def leaderboard_dir(workspace: str | Path | None, run_id: str, now: float | None = None) -> Path:
    """``WORKSPACE/leaderboards/<UTC time>-<run id>``: names sort in time order."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    return resolve_workspace(workspace) / LEADERBOARDS / f"{stamp}-{run_id}"


def check_target(target: Path, overwrite: bool = False) -> None:
    """Refuse (one line) a target that is a file, or a non-empty folder without ``overwrite``."""
    if target.exists() and not target.is_dir():
        raise UserError(f"{target} exists and is not a folder; choose another --out")
    if not overwrite and target.is_dir() and any(target.iterdir()):
        raise UserError(
            f"{target} exists and is not empty; pass --overwrite to replace it, or choose another --out"
        )


def _lock_path(target: Path) -> Path:
    return target.parent / f".{target.name}.lock"


@contextlib.contextmanager
def exclusive_lock(target: Path) -> Iterator[None]:
    """Hold an exclusive, non-blocking lock on ``target`` (a lock file beside it); a second holder fails."""
    import fcntl

    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(_lock_path(target), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"another run is writing to {target}; wait for it or choose another --out"
            ) from None
        yield
    finally:
        os.close(fd)  # closing releases the lock


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM raises KeyboardInterrupt (so that clean-up runs), in the main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def write_atomically(target: str | Path, write: Callable[[Path], T], *, overwrite: bool = False) -> T:
    """Call ``write(folder)`` on a hidden temporary folder beside ``target``, then rename it to ``target``.

    Under an exclusive lock on ``target``. An existing non-empty ``target`` is refused (``UserError``) unless
    ``overwrite``; then the old set is renamed aside, the new one renamed in, and the old one deleted. Any
    exception or interrupt before the rename removes the temporary folder and leaves ``target`` as it was.
    ``write``'s return value is returned (paths in it should be relative to the folder it was given).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(target), _sigterm_as_interrupt():
        check_target(target, overwrite)
        for stale in target.parent.glob(
            f".{target.name}.tmp-*"
        ):  # left by a killed writer (we hold the lock)
            _remove(stale)
        tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
        aside = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        moved_aside = False
        try:
            result = write(tmp)
            if target.exists():
                os.rename(target, aside)
                moved_aside = True
            os.rename(tmp, target)
        except BaseException:
            _remove(tmp)
            if moved_aside and not target.exists():
                os.rename(aside, target)
            raise
        if moved_aside:
            _remove(aside)
    return result


def update_latest(target: Path) -> Path:
    """Point ``target.parent/latest`` at ``target`` (a relative symlink, replaced atomically; where symlinks
    cannot be made, a ``LATEST`` file holding the folder's name). Never points back at an older folder."""
    parent = target.parent
    with exclusive_lock(parent / LATEST):
        link, text = parent / LATEST, parent / LATEST_FILE
        current = (
            os.readlink(link) if link.is_symlink() else (text.read_text().strip() if text.exists() else "")
        )
        if current and Path(current).name > target.name:
            return link if link.is_symlink() else text
        tmp = parent / f".{LATEST}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            os.symlink(target.name, tmp, target_is_directory=True)
            os.replace(tmp, link)
            return link
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
        tmp.write_text(target.name + "\n")
        os.replace(tmp, text)
        return text
