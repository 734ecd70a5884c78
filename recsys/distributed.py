"""Runs over several processes started by ``torchrun``: the process group, each process's rank and device, and
the collective steps the commands share.

``torchrun --nproc_per_node N -m recsys.cli COMMAND ...`` starts N copies of a command with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address in their environment. The commands that split their
work (``recsys features embed``, ``recsys train``) open the process group with :func:`process_group`: gloo for
CPU tensors, and NCCL for CUDA tensors when torch sees a GPU, each rank then on ``cuda:LOCAL_RANK``. Without
torchrun (no ``WORLD_SIZE``, or 1) nothing here does anything and a command runs as one process, as before.

A rank that fails must not leave the others waiting at a collective for ever: :func:`together` runs a local
step (one without collectives of its own) on every rank and then tells every rank which ranks failed; each failed
rank raises its own error and the others a one-line ``UserError`` naming the failed ranks, so every process ends
with an error.

torch is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from recsys.errors import UserError

T = TypeVar("T")


def launched() -> bool:
    """Whether this process is one of several started by torchrun (``WORLD_SIZE`` above 1)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        raise UserError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not an integer") from None


def local_rank() -> int:
    """This process's rank on its machine (``LOCAL_RANK``, 0 when unset): the index of its GPU."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def rank_and_world() -> tuple[int, int]:
    """(rank, number of processes) of the initialised process group; (0, 1) when there is none."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Whether this process is rank 0 (or the only one): the one that writes and prints."""
    return rank_and_world()[0] == 0


@contextmanager
def process_group(what: str) -> Iterator[None]:
    """Within the block, the default process group of a torchrun launch (none without torchrun).

    The backend is ``cpu:gloo,cuda:nccl`` when torch sees a GPU (each rank then on ``cuda:LOCAL_RANK``), else
    ``gloo``. A group someone else opened is used as it is and left open.
    """
    if not launched():
        yield
        return
    from recsys.extras import require

    require("deep", f"{what} under torchrun")
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        yield
        return
    if not dist.is_available():
        raise UserError(f"{what} under torchrun needs torch.distributed, which this torch build lacks")
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank())
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend)
    try:
        yield
    finally:
        dist.destroy_process_group()


def rank_device(device: str) -> str:
    """The device a rank works on: ``auto`` and ``cuda`` become ``cuda:LOCAL_RANK`` when there are several ranks
    and a GPU (``auto`` is ``cpu`` without one); any other device, or a single process, stays as asked."""
    import torch

    if rank_and_world()[1] == 1 or device not in ("auto", "cuda"):
        return device
    if device == "auto" and not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{local_rank()}"


def failed_ranks(failed: bool) -> list[int]:
    """Collective: every rank says whether it failed; returns the ranks that did (the same list on every rank)."""
    import torch
    import torch.distributed as dist

    rank, world = rank_and_world()
    flags = torch.zeros(world, dtype=torch.int32)
    flags[rank] = int(failed)
    dist.all_reduce(flags)  # a CPU tensor: gloo, whatever the backend of CUDA tensors
    return [int(r) for r in torch.nonzero(flags).flatten().tolist()]


@contextmanager
def together(what: str) -> Iterator[None]:
    """Run the block on every rank, then wait for all of them (a barrier); when any rank failed, every rank
    raises: the failed ranks their own error, the others a ``UserError`` naming the failed ranks.

    The block must hold no collective of its own (a rank failing before it would leave the others waiting in
    it); where one fails amid collectives (a data-parallel fit) it should just raise: its process ends and
    torchrun stops the others. An interrupt (KeyboardInterrupt, SystemExit) is not caught either. Without a
    process group of several ranks the block just runs.
    """
    if rank_and_world()[1] == 1:
        yield
        return
    error: Exception | None = None
    try:
        yield
    except Exception as err:  # held until every rank has reported, then raised
        error = err
    failed = failed_ranks(error is not None)
    if error is not None:
        raise error
    if failed:
        ranks = ", ".join(map(str, failed))
        raise UserError(f"{what} failed on rank {ranks} (its error is printed above)")


def rank_zero_first(load: Callable[[], T], what: str) -> T:
    """``load()`` on rank 0 first, then on the first process of each other machine (``LOCAL_RANK`` 0), then on
    the rest: for a step that fills a cache once (the simulated default dataset) that the others then read,
    whether the machines share the cache's file system or each has its own."""
    rank, world = rank_and_world()
    if world == 1:
        return load()
    phase = 0 if rank == 0 else 1 if local_rank() == 0 else 2
    result = None
    for turn in range(3):
        with together(what):
            if phase == turn:
                result = load()
    return result
