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
import errno
import os
import re
import shutil
import signal
import socket
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


#: errors of the file system that the user can fix (permissions, a read-only or full disk, a path that is in the
#: way): the CLI prints them as one line naming the path (``storage_error``)
STORAGE_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "EACCES",
        "EPERM",
        "EROFS",
        "ENOSPC",
        "EDQUOT",
        "EFBIG",
        "ENOTDIR",
        "EISDIR",
        "ENAMETOOLONG",
        "ELOOP",
        "ENOENT",
        "EEXIST",
        "ENOTEMPTY",
        "EMLINK",
        "ETXTBSY",
    )  # fmt: skip
    if hasattr(errno, name)
)


def storage_error(err: OSError, where_to: str = "") -> str | None:
    """One line for a file-system error the user can fix (``STORAGE_ERRNOS``), naming the path and what to
    do; None for any other error. ``where_to`` names the option that chooses another place, if any."""
    if err.errno not in STORAGE_ERRNOS:
        return None
    path = err.filename if err.filename is not None else "a file"
    if err.filename2 is not None:
        path = f"{path} -> {err.filename2}"
    advice = {
        errno.ENOSPC: "free some space",
        errno.EDQUOT: "free some space (the disk quota is reached)",
        errno.EROFS: "",
        errno.EACCES: "check its permissions",
        errno.EPERM: "check its permissions",
    }.get(err.errno, "check the path")
    advice = " or ".join(part for part in (advice, where_to) if part) or "write somewhere else"
    return f"{path}: {err.strerror or os.strerror(err.errno)}; {advice}"


def _naming(err: OSError, path: Path) -> None:
    """Give ``err`` ``path`` as its file name when it has none (a failed write or flush names no file)."""
    if err.errno is not None and err.filename is None:
        err.filename = str(path)


#: the free space below which a place counts as full before anything is written there
MIN_FREE_BYTES = 1 << 20


def check_writable(folder: str | Path) -> Path:
    """Raise the ``OSError`` a write into ``folder`` would meet (a read-only file system, no write permission,
    a file in the way, a full disk), before any work and without writing anything: the checks run on the
    nearest existing folder on the way to ``folder``, which is created later by whoever writes there."""
    folder = Path(folder)
    existing = folder.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(existing))
    stats = os.statvfs(existing)
    if stats.f_flag & getattr(os, "ST_RDONLY", 1):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(folder))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(existing))
    if stats.f_bavail * stats.f_frsize < MIN_FREE_BYTES:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(folder))
    return folder


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
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


# ---------------------------------------------------------------------- temporary siblings and their clean-up
#: ``.NAME.tmp-RANDOM-PID@HOST`` (being written) or ``.NAME.old-RANDOM-PID@HOST`` (the previous set, moved aside
#: for a moment); names of older versions end at RANDOM
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-[0-9a-f]{8}(?:-(?P<pid>\d+)@(?P<host>.+))?$")


def temporary_sibling(target: str | Path, kind: str = "tmp") -> Path:
    """A hidden path beside ``target`` for writing it whole (``kind`` tmp) or for moving its previous version
    aside (``kind`` old), named after the writing process so that ``remove_stale`` can tell whether it is
    still at work."""
    target = Path(target)
    return (
        target.parent / f".{target.name}.{kind}-{uuid.uuid4().hex[:8]}-{os.getpid()}@{socket.gethostname()}"
    )


def pid_alive(pid: int) -> bool:
    """True when a process with that id exists on this machine (of any user)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _lock_held(lock: Path) -> bool:
    """True when another process holds ``lock`` (an ``exclusive_lock`` file)."""
    import fcntl

    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _writer_alive(match: re.Match, folder: Path) -> bool:
    """Whether the writer of a temporary sibling may still be at work: its process on this machine, any on
    another (it cannot be asked), and for an older name without a process, whoever holds the target's lock."""
    if match["pid"] is not None:
        return match["host"] != socket.gethostname() or pid_alive(int(match["pid"]))
    return _lock_held(folder / f".{match['name']}.lock")


def remove_stale(folder: str | Path) -> list[Path]:
    """Remove the temporary siblings in ``folder`` left by writers that died (SIGKILL, a lost machine) and
    return them: a half-written ``.NAME.tmp-*`` is deleted; a ``.NAME.old-*`` (a previous version moved aside)
    is deleted when ``NAME`` exists and moved back to ``NAME`` when it does not (the writer died between the two
    renames). Those of live writers are left alone."""
    folder = Path(folder)
    removed = []
    try:
        entries = [entry for entry in os.scandir(folder) if entry.name.startswith(".")]
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if match is None or _writer_alive(match, folder):
            continue
        path, target = Path(entry.path), folder / match["name"]
        if match["kind"] == "old" and not target.exists():
            with contextlib.suppress(OSError):
                os.rename(path, target)
            continue
        _remove(path)
        removed.append(path)
    return removed


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
        remove_stale(target.parent)  # what killed writers left here (this target's and other runs')
        check_target(target, overwrite)
        tmp, aside = temporary_sibling(target), temporary_sibling(target, "old")
        tmp.mkdir()
        moved_aside = False
        try:
            result = write(tmp)
            if target.exists():
                os.rename(target, aside)
                moved_aside = True
            os.rename(tmp, target)
        except BaseException as err:
            _remove(tmp)
            if moved_aside and not target.exists():
                os.rename(aside, target)
            if isinstance(err, OSError):
                _naming(err, target)
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
        tmp = temporary_sibling(parent / LATEST)
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
