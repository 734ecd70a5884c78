"""How many threads the suite's numeric libraries use: the one place that decides it.

* FAISS (OpenMP; the ``faiss-cpu`` wheel's BLAS shares that pool, so one setting covers both):
  ``RECSYS_FAISS_THREADS``, else ``OMP_NUM_THREADS`` (its first level, as in ``"4,2"``), else the cores
  this process may run on. Set once per process, the first time an index is built or loaded
  (:func:`ensure_faiss_threads_configured`), or explicitly with :func:`configure_faiss_threads`.
* torch (intra-op threads): ``RECSYS_THREADS``, else 2 capped at the cores available
  (:func:`configure_torch_threads`).
* BLAS inside a library that runs its own thread pool (implicit): one BLAS thread, by
  :func:`single_threaded_blas`, since a BLAS pool inside each of its threads oversubscribes the cores.
* A leaderboard fit (:func:`single_threaded`): one thread for BLAS, OpenMP and torch, in the leaderboard's
  own process and in its workers alike. A BLAS reduction split over two threads sums in another order than
  one thread does (predictions then differ in the last bits), so the rows must not depend on ``--jobs``
  or on the cores of the machine.

"The cores available" is this process's affinity mask, not the host's core count: containers and
``taskset`` give a process fewer cores than the machine has, and OpenMP's default would oversubscribe them.

FAISS, torch and threadpoolctl are imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from recsys.errors import UserError

#: Environment variable that sets the FAISS thread count (a positive integer).
FAISS_THREADS_ENV_VAR = "RECSYS_FAISS_THREADS"
#: Environment variable that sets the torch thread count (a positive integer).
TORCH_THREADS_ENV_VAR = "RECSYS_THREADS"
#: torch threads when ``RECSYS_THREADS`` is unset (capped at the cores available).
DEFAULT_TORCH_THREADS = 2

_faiss_threads: int | None = None
#: torch threads inside :func:`single_threaded` (None outside it: the environment and the default decide)
_pinned_torch_threads: int | None = None


class ThreadSettingError(UserError, ValueError):
    """A thread count (argument or environment variable) that is not a positive integer."""


def available_cores() -> int:
    """Number of CPU cores this process may run on (its affinity mask, not the host's core count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS and Windows have no sched_getaffinity
        return max(1, os.cpu_count() or 1)


def threads_from_environment(*names: str) -> int | None:
    """The thread count set by the first of ``names`` that is set and non-empty; None when none is.

    A value may be a comma-separated list such as ``OMP_NUM_THREADS="4,2"`` (nested levels): the first
    level is ours.

    Raises:
        ThreadSettingError: the first variable that is set is not a positive integer.
    """
    for name in names:
        raw = os.environ.get(name, "").strip()
        if not raw:
            continue
        first = raw.split(",")[0].strip()
        if not first.isdigit() or int(first) < 1:
            raise ThreadSettingError(
                f"environment variable {name}={raw!r} must be a positive integer number of threads"
            )
        return int(first)
    return None


def _check_count(n_threads: object) -> int:
    if isinstance(n_threads, bool) or not isinstance(n_threads, int) or n_threads < 1:
        raise ThreadSettingError(f"n_threads must be a positive integer, got {n_threads!r}")
    return n_threads


def configure_faiss_threads(n_threads: int | None = None) -> int:
    """Set the number of threads FAISS builds and searches with, and return it.

    Args:
        n_threads: explicit thread count; ``None`` reads ``RECSYS_FAISS_THREADS``, then
            ``OMP_NUM_THREADS``, and otherwise uses :func:`available_cores`.

    Raises:
        ThreadSettingError: (a ValueError) ``n_threads`` or the environment variable is not a positive
            integer.
    """
    global _faiss_threads
    if n_threads is None:
        n_threads = threads_from_environment(FAISS_THREADS_ENV_VAR, "OMP_NUM_THREADS") or available_cores()
    n_threads = _check_count(n_threads)
    import faiss

    faiss.omp_set_num_threads(n_threads)
    _faiss_threads = n_threads
    return n_threads


def ensure_faiss_threads_configured() -> int:
    """Configure FAISS threads from the environment the first time it is called; later calls keep the setting."""
    if _faiss_threads is None:
        return configure_faiss_threads()
    return _faiss_threads


def configure_torch_threads(n_threads: int | None = None) -> int:
    """Set torch's intra-op thread count, and return it.

    Args:
        n_threads: explicit thread count; ``None`` uses 1 inside :func:`single_threaded`, else reads
            ``RECSYS_THREADS``, and otherwise uses :data:`DEFAULT_TORCH_THREADS` capped at
            :func:`available_cores`.

    Raises:
        ThreadSettingError: (a ValueError) ``n_threads`` or ``RECSYS_THREADS`` is not a positive integer.
    """
    if n_threads is None:
        n_threads = (
            _pinned_torch_threads
            or threads_from_environment(TORCH_THREADS_ENV_VAR)
            or min(DEFAULT_TORCH_THREADS, available_cores())
        )
    n_threads = _check_count(n_threads)
    import torch

    torch.set_num_threads(n_threads)
    return n_threads


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Limit BLAS (OpenBLAS, MKL, BLIS) to one thread inside the block, restoring the limits after it."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):
        yield


@contextmanager
def single_threaded() -> Iterator[None]:
    """One thread for BLAS (NumPy's and SciPy's), OpenMP and torch inside the block; the limits before it are
    restored after it.

    Results then do not depend on how many threads a library would choose on this machine: a BLAS product
    split over two threads sums in another order than on one, which changes predictions in their last bits.
    """
    global _pinned_torch_threads
    import scipy.linalg  # noqa: F401  (loads SciPy's own BLAS, so that the limit below reaches it too)
    from threadpoolctl import threadpool_limits

    torch = sys.modules.get("torch")
    torch_before = torch.get_num_threads() if torch is not None else None
    pinned_before, _pinned_torch_threads = _pinned_torch_threads, 1
    try:
        if torch is not None:
            torch.set_num_threads(1)
        with threadpool_limits(1):
            yield
    finally:
        _pinned_torch_threads = pinned_before
        torch = sys.modules.get("torch")
        if torch is not None and torch_before is not None:
            torch.set_num_threads(torch_before)
        elif torch is not None:  # first imported inside the block: the count it would have had
            torch.set_num_threads(min(DEFAULT_TORCH_THREADS, available_cores()))
