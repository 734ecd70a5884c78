"""Shared helpers of the deep models: seeding, device choice, the consensus base score, losses, training loop.

The training loop runs data parallel when the process is one of several started by torchrun (an initialised
process group, ``recsys.distributed``): see ``train_loop``. A single process trains as it always did.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from recsys.data.choices import Choices
from recsys.data.dataset import Dataset, Ratings
from recsys.data.encodings import ImageInputs, with_intercept
from recsys.distributed import local_rank, rank_and_world
from recsys.models.base import Model, append_rows
from recsys.models.linear import consensus_map, linear_map_spec
from recsys.models.params import DEVICES, Hyperparameters, at_least_one, hyper, non_negative, positive
from recsys.threads import configure_torch_threads


class TrainParams(Hyperparameters):
    """Hyperparameters of every model trained by ``train_loop``: epochs, Adam, early stopping, device and seed."""

    epochs: int = at_least_one(30, "maximum training epochs")
    lr: float = positive(5e-3, "Adam learning rate")
    weight_decay: float = non_negative(1e-5, "Adam weight decay")
    patience: int = at_least_one(4, "epochs without validation improvement before stopping")
    device: str = hyper("auto", choices=DEVICES, doc="auto (CUDA when present), cpu or cuda")
    seed: int = hyper(0, doc="seed of initialisation and of the training order")


class DeepParams(TrainParams):
    """Hyperparameters every deep rating model shares: training, the contrastive loss and the consensus base."""

    contrastive_weight: float = non_negative(
        0.5, "weight of the contrastive preference loss (0 turns it off)"
    )
    temperature: float = positive(0.5, "temperature of the preference loss (score units)")
    base_alpha: float = positive(3.0, "ridge penalty of the consensus base score")


class ImageTower(torch.nn.Module):
    """The image tower of the deep models: an MLP over the image embedding plus embeddings of the categorical
    metadata codes (type / group / style) -> (z (n x dim), a scalar image bias (n,))."""

    def __init__(self, n_features: int, meta_sizes, *, hidden: int, dim: int, dropout: float) -> None:
        super().__init__()
        self.image_in = torch.nn.Linear(n_features, hidden)
        self.meta = torch.nn.ModuleList(torch.nn.Embedding(size, hidden) for size in meta_sizes)
        self.image_out = torch.nn.Sequential(
            torch.nn.GELU(), torch.nn.Dropout(dropout), torch.nn.Linear(hidden, dim + 1)
        )

    def forward(self, features: torch.Tensor, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.image_in(features)
        for j, emb in enumerate(self.meta):
            hidden = hidden + emb(codes[:, j])
        out = self.image_out(hidden)
        return out[:, :-1], out[:, -1]


def set_image_inputs(model, dataset: Dataset, data: Ratings | Choices) -> None:
    """The inputs every deep model keeps (saved with it): the consensus base score of each image (``base_``;
    zeros on choices, which have no rating scale) and its map (``base_map_``, None on choices), the image features
    (``features_``), the metadata codes and their sizes (``codes_``, ``meta_``) and the demographics of every user
    (``demo_``, encoded on the users of ``data``)."""
    model.base_map_ = None
    model.base_ = np.zeros(dataset.n_images, np.float32)
    if isinstance(data, Ratings):
        model.base_map_ = consensus_map(dataset.image_design(), data, model.base_alpha)
        model.base_ = model.base_map_.scores(dataset.image_design()).astype(np.float32)
    model.features_ = dataset.image_inputs()
    metadata = dataset.metadata()
    model.codes_ = metadata.codes.copy()
    model.meta_ = {"meta_sizes": metadata.sizes}
    model.demo_ = with_intercept(dataset.user_design(data.user_idx))


def input_tensors(model, device) -> dict[str, torch.Tensor]:
    """The inputs of ``set_image_inputs`` as tensors on ``device``."""
    return {
        "features": torch.as_tensor(model.features_, device=device),
        "codes": torch.as_tensor(model.codes_, device=device),
        "demo": torch.as_tensor(model.demo_, device=device),
        "base": torch.as_tensor(model.base_, device=device),
    }


class DeepModel(Model):
    """Base of the deep models over frozen image features (``DeepParams``)."""

    state_schema: ClassVar[dict[str, Any]] = {
        "base_map_": [linear_map_spec("design", "1"), "None"],
        "base_": "float[images]",
        "features_": "float[images, inputs]",
        "codes_": "int[images, columns]",
        "meta_": {"meta_sizes": "list[int]"},
        "demo_": "float[users+1, demo]",
        "history_": "dict",
        "net_": "module",
    }

    def _start_fit(self, dataset: Dataset, data: Ratings | Choices):
        """Seeds everything, chooses the device and keeps the inputs (``set_image_inputs``); returns the seeded
        torch generator, the device and the inputs as tensors on it."""
        generator = seed_everything(self.seed)
        device = choose_device(self.device)
        set_image_inputs(self, dataset, data)
        return generator, device, input_tensors(self, device)

    def _cpu_inputs(self) -> dict[str, torch.Tensor]:
        """The kept inputs as CPU tensors (scoring and folding run on the CPU)."""
        return input_tensors(self, torch.device("cpu"))

    def _new_image_state(self, inputs: ImageInputs) -> dict:
        """The kept inputs with new images' rows: their base score from ``base_map_``, features and codes. A
        subclass adds what it computes from them (its image tower's output, its tensors)."""
        base = np.zeros(len(inputs)) if self.base_map_ is None else self.base_map_.scores(inputs.design())
        return {
            "base_": append_rows(self.base_, base),
            "features_": append_rows(self.features_, inputs.inputs()),
            "codes_": append_rows(self.codes_, inputs.metadata.codes),
        }


class TowerParams(DeepParams):
    """``DeepParams`` plus the image tower's sizes (``ImageTower``)."""

    dim: int = at_least_one(32, "taste / image embedding size")
    hidden: int = at_least_one(128, "hidden width of the image tower")
    dropout: float = hyper(0.1, low=0, high=1, high_open=True, doc="dropout in the image tower")


@contextmanager
def deterministic_algorithms() -> Iterator[None]:
    """Inside the block torch sums in a fixed order (e.g. the scatter-add gradient of a gather), so a fit gives the
    same numbers every time whatever the thread count; the previous setting comes back after it."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; returns a CPU torch generator for deterministic sampling."""
    random.seed(seed)
    np.random.seed(seed % (2**32))  # noqa: NPY002 - seeds third-party code that uses the legacy global state
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def choose_device(device: str = "auto") -> torch.device:
    """``auto``: CUDA when present, else CPU (threads as ``recsys.threads.configure_torch_threads`` says). Under
    torchrun (several ranks) ``cuda`` is the rank's own GPU, ``cuda:LOCAL_RANK``."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and rank_and_world()[1] > 1:
        device = f"cuda:{local_rank()}"
    if device == "cpu":
        configure_torch_threads()
    return torch.device(device)


def preference_loss(
    pred: torch.Tensor, target: torch.Tensor, group: torch.Tensor, temperature: float = 0.5, n_shifts: int = 8
) -> torch.Tensor:
    """Contrastive preference loss: logistic loss on score differences of pairs of one user with different scores.

    The batch is sorted by ``group`` (the user); each item is paired with the next ``n_shifts`` items of the same
    user (O(batch x n_shifts) pairs rather than all). For a pair with ``target[i] > target[j]`` the loss is
    ``log(1 + exp(-(pred[i] - pred[j]) / temperature))`` weighted by the target gap (capped at 1), averaged over
    pairs. Zero when the batch has no such pair.
    """
    order = torch.argsort(group, stable=True)
    pred, target, group = pred[order], target[order], group[order]
    losses, weights = [], []
    for shift in range(1, min(n_shifts, len(pred) - 1) + 1):
        gap = target[shift:] - target[:-shift]
        valid = (group[shift:] == group[:-shift]) & (gap != 0)
        sign = torch.sign(gap)
        diff = sign * (pred[shift:] - pred[:-shift]) / temperature
        weight = gap.abs().clamp(max=1.0) * valid
        losses.append(torch.nn.functional.softplus(-diff) * weight)
        weights.append(weight)
    if not weights:
        return pred.sum() * 0.0
    total = torch.cat(weights).sum()
    if total <= 0:
        return pred.sum() * 0.0
    return torch.cat(losses).sum() / total


def fit_module(model, net: torch.nn.Module, step, n_batches: int, validate=None, shuffle=None) -> None:
    """Train ``net`` with ``train_loop`` under the model's ``DeepParams``; keeps the best state and the history
    (``model.history_``), and leaves the module on the CPU in eval mode as ``model.net_``. ``shuffle()`` starts
    each epoch (it draws the epoch's order); with it the fit can run data parallel under torchrun."""
    model.history_ = train_loop(
        step,
        n_batches,
        net.parameters(),
        epochs=model.epochs,
        lr=model.lr,
        weight_decay=model.weight_decay,
        validate=validate,
        patience=model.patience,
        desc=model.name,
        state=net.state_dict,
        restore=net.load_state_dict,
        shuffle=shuffle,
        module=net,
    )
    net.eval()
    model.net_ = net.cpu()


def own_draws(generator: np.random.Generator, seed: int) -> np.random.Generator:
    """The generator of a rank's own random draws within its batches (e.g. which ratings an episode holds):
    ``generator`` itself in a single process, so that nothing changes there; under data-parallel training one
    seeded by (seed, rank), so that ``generator`` draws only the epochs' orders, the same on every rank."""
    rank, world = rank_and_world()
    return generator if world == 1 else np.random.default_rng([seed % 2**32, rank])


def rank_batches(n_batches: int, rank: int, world: int) -> list[int]:
    """The batches rank ``rank`` of ``world`` takes in every epoch: batch b goes to rank b mod world, and a rank
    short of one repeats batches from the start (as torch's DistributedSampler pads), so that every rank takes
    the same number of steps, ceil(n_batches / world): each step averages gradients over all ranks."""
    return [(rank + k * world) % n_batches for k in range(-(-n_batches // world))]


class _StepModule(torch.nn.Module):
    """One training step as the forward pass of a module holding ``net``: DistributedDataParallel averages the
    gradients of what a forward pass through it computed, and the steps reach ``net`` through its own methods."""

    def __init__(self, net: torch.nn.Module, step: Callable[[int], torch.Tensor]) -> None:
        super().__init__()
        self.net = net
        self.step = step

    def forward(self, batch: int) -> torch.Tensor:
        return self.step(batch)


def _data_parallel(
    module: torch.nn.Module, step: Callable[[int], torch.Tensor]
) -> Callable[[int], torch.Tensor]:
    """``step`` through DistributedDataParallel over ``module`` (whose parameters it broadcasts from rank 0)."""
    from torch.nn.parallel import DistributedDataParallel

    device = next(module.parameters()).device
    return DistributedDataParallel(
        _StepModule(module, step),
        device_ids=[device.index] if device.type == "cuda" else None,
        # every step uses the same parameters, which may leave some unused (pref_tokens' choice gap on ratings)
        static_graph=True,
    )


def _mean_over_ranks(total: float, count: int) -> float:
    """sum(total) / sum(count) over the ranks: the same value on every rank."""
    import torch.distributed as dist

    both = torch.tensor([total, float(count)], dtype=torch.float64)
    dist.all_reduce(both)
    return float(both[0] / both[1])


def train_loop(
    step: Callable[[int], torch.Tensor],
    n_batches: int,
    parameters,
    *,
    epochs: int,
    lr: float,
    weight_decay: float = 0.0,
    validate: Callable[[], float] | None = None,
    patience: int = 3,
    desc: str = "train",
    state: Callable[[], dict] | None = None,
    restore: Callable[[dict], None] | None = None,
    shuffle: Callable[[], None] | None = None,
    module: torch.nn.Module | None = None,
) -> dict:
    """Adam over ``epochs`` x ``n_batches`` calls of ``step(batch_index) -> loss``, with early stopping.

    ``shuffle()`` runs at the start of every epoch, before its first step (it draws the epoch's order).
    ``validate() -> loss`` (lower is better) runs after each epoch; the best state (``state()``) is restored
    (``restore``) at the end and training stops after ``patience`` epochs without improvement.
    Returns a history dict (train and validation losses per epoch, best epoch).

    Under torchrun (a process group of several ranks) training is data parallel, which needs ``module`` (the
    network the steps train) and ``shuffle``: ``module`` is wrapped in DistributedDataParallel (rank 0's
    parameters broadcast, gradients averaged over the ranks at every step), each rank takes its share of every
    epoch's batches (``rank_batches``), the train and validation losses are averaged over the ranks (every rank
    stops at the same epoch and restores the same state) and torch's own random draws (dropout) differ per rank.
    One step then averages the gradients of N batches: N times the batch, 1/N of the steps per epoch. Every
    rank ends with the same parameters.
    """
    rank, world = rank_and_world()
    run, batches = step, range(n_batches)
    if world > 1:
        if module is None or shuffle is None:
            raise ValueError("data-parallel training needs the module and a shuffle that starts each epoch")
        run, batches = _data_parallel(module, step), rank_batches(n_batches, rank, world)
        if rank:
            torch.manual_seed(torch.initial_seed() + rank)
    optimiser = torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    history = {"train_loss": [], "val_loss": [], "best_epoch": None}
    best, best_state, waited = math.inf, None, 0
    bar = tqdm(range(epochs), desc=desc, disable=None if rank == 0 else True, leave=False)
    for epoch in bar:
        if shuffle is not None:
            shuffle()
        total = 0.0
        for b in batches:
            optimiser.zero_grad()
            loss = run(b)
            loss.backward()
            optimiser.step()
            total += float(loss.detach())
        if world > 1:
            history["train_loss"].append(_mean_over_ranks(total, len(batches)))
        else:
            history["train_loss"].append(total / max(n_batches, 1))
        postfix = {"loss": f"{history['train_loss'][-1]:.4f}"}
        if validate is not None:
            val = float(validate())
            if world > 1:
                val = _mean_over_ranks(val, 1)
            history["val_loss"].append(val)
            postfix["val"] = f"{val:.4f}"
            if val < best - 1e-5:
                best, waited, history["best_epoch"] = val, 0, epoch
                if state is not None:
                    best_state = {k: v.detach().clone() for k, v in state().items()}
            else:
                waited += 1
        bar.set_postfix(postfix)
        if validate is not None and waited >= patience:
            break
    if best_state is not None and restore is not None:
        restore(best_state)
    return history
