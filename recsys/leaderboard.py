"""The leaderboard: fit each model once on train, score it with the one evaluator on every split."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from recsys.data.dataset import Dataset
from recsys.errors import UserError
from recsys.evaluation.evaluator import Evaluator, Result
from recsys.models.registry import GROUPS, create_model, expand_models

DEFAULT_SPLITS = ("test_seen", "test_unseen")


@dataclass
class Leaderboard:
    """Rows of results plus what is needed to reproduce them."""

    dataset: Dataset
    seed: int
    shots: tuple[int, ...]
    rows: list[Result] = field(default_factory=list)
    params: dict[str, dict] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "dataset": {
                "name": self.dataset.name,
                "simulated": self.dataset.simulated,
                "fingerprint": self.dataset.fingerprint(),
                "image_features": self.dataset.feature_source,
            },
            "protocol": {"seed": self.seed, "shots": list(self.shots)},
            "params": self.params,
            "rows": [r.to_json() for r in self.rows],
        }


def default_models(dataset: Dataset) -> list[str]:
    """Every registered model (baselines, classical, deep, ablations), the oracle only where a ground truth exists."""
    return [m for m in GROUPS["all"] if m != "oracle" or dataset.ground_truth is not None]


def run_leaderboard(
    dataset: Dataset,
    models: Sequence[str] | None = None,
    *,
    splits: Sequence[str] = DEFAULT_SPLITS,
    shots: Sequence[int] = (0, 10),
    seed: int = 0,
    params: dict[str, dict] | None = None,
    fit_split: str = "train",
    progress: bool = True,
) -> Leaderboard:
    """Fit every model on ``fit_split`` and evaluate it on ``splits``.

    A split the dataset lacks is an error naming the splits it has; a model that cannot score new users gets
    an ``unsupported`` row instead of stopping the run.
    """
    models = expand_models(models) if models else default_models(dataset)  # unknown names fail before any fit
    if "oracle" in models and dataset.ground_truth is None:
        print(f"oracle skipped: {dataset.name} has no ground truth (only simulated data do)")
        models.remove("oracle")
    params = params or {}
    missing = [s for s in splits if s not in dataset.ratings]
    if missing:
        raise UserError(
            f"{dataset.name} has no split(s) {', '.join(missing)}; it has {', '.join(dataset.splits)}"
        )
    evaluator = Evaluator(dataset, shots=shots, seed=seed)
    board = Leaderboard(dataset=dataset, seed=seed, shots=tuple(shots))
    bar = tqdm(models, desc="models", unit="model", disable=not progress)
    for name in bar:
        bar.set_postfix_str(f"fitting {name}")
        model = create_model(name, **params.get(name, {}))
        board.params[name] = model.get_params()
        start = time.perf_counter()
        model.fit(dataset, fit_split)
        fit_seconds = time.perf_counter() - start
        bar.set_postfix_str(f"scoring {name}")
        for split in splits:
            for k in evaluator.tasks(split):
                board.rows.append(evaluator.evaluate(model, split, k, fit_seconds=fit_seconds))
    return board
