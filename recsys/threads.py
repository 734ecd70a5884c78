"""Thread policy (provisional: being completed in the retrieval refactor)."""

from __future__ import annotations

import os
from contextlib import contextmanager


def configure_torch_threads() -> int:
    import torch

    n = int(os.environ.get("RECSYS_THREADS", "2"))
    torch.set_num_threads(n)
    return n


@contextmanager
def single_threaded_blas():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):
        yield
