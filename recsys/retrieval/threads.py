"""How many threads FAISS uses, decided once per process from the environment.

FAISS parallelises with OpenMP; the ``faiss-cpu`` wheel's BLAS shares that OpenMP pool, so one
setting covers both. By default OpenMP may see every core of the host rather than the cores this
process is allowed to run on (containers, ``taskset``), which oversubscribes small machines.
"""

from __future__ import annotations

import os

import faiss

#: Environment variable that sets the FAISS thread count for this suite (a positive integer).
THREADS_ENV_VAR = "RECSYS_FAISS_THREADS"

_configured_threads: int | None = None


def available_cores() -> int:
    """Number of CPU cores this process may run on (its affinity mask, not the host's core count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS and Windows have no sched_getaffinity
        return max(1, os.cpu_count() or 1)


def _threads_from_environment() -> int:
    for name in (THREADS_ENV_VAR, "OMP_NUM_THREADS"):
        raw = os.environ.get(name, "").strip()
        if not raw:
            continue
        # OMP_NUM_THREADS may be a list such as "4,2" (nested levels): the first level is ours.
        first = raw.split(",")[0].strip()
        if not first.isdigit() or int(first) < 1:
            raise ValueError(
                f"environment variable {name}={raw!r} must be a positive integer number of threads"
            )
        return int(first)
    return available_cores()


def configure_faiss_threads(n_threads: int | None = None) -> int:
    """Set the number of threads FAISS searches and builds with, and return it.

    Args:
        n_threads: explicit thread count; ``None`` reads ``RECSYS_FAISS_THREADS``, then
            ``OMP_NUM_THREADS``, and otherwise uses the cores in this process's affinity mask.

    Returns:
        The thread count now in effect.

    Raises:
        ValueError: ``n_threads`` or the environment variable is not a positive integer.
    """
    global _configured_threads
    if n_threads is None:
        n_threads = _threads_from_environment()
    elif isinstance(n_threads, bool) or not isinstance(n_threads, int) or n_threads < 1:
        raise ValueError(f"n_threads must be a positive integer, got {n_threads!r}")
    faiss.omp_set_num_threads(n_threads)
    _configured_threads = n_threads
    return n_threads


def ensure_faiss_threads_configured() -> int:
    """Configure FAISS threads from the environment the first time it is called; later calls keep the setting."""
    if _configured_threads is None:
        return configure_faiss_threads()
    return _configured_threads
