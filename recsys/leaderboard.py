"""The leaderboard: fit each model once under the one data policy, score it with the one evaluator on every split."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from recsys.data.dataset import Dataset
from recsys.errors import UserError
from recsys.evaluation.evaluator import DEFAULT_DRAWS, Evaluator, Result
from recsys.models.base import DATA_POLICY
from recsys.models.registry import GROUPS, create_model, expand_models

DEFAULT_SPLITS = ("test_seen", "test_unseen")


def new_run_id() -> str:
    """A short random id that ties a leaderboard's files (json, csv, per-user, predictions) together."""
    return uuid.uuid4().hex[:12]


@dataclass
class Leaderboard:
    """Rows of results plus what is needed to reproduce them.

    ``tuned`` maps each tuned model to its study (name, objective and stopping epoch); ``fit_split`` is the split
    every model fitted on (``train``, or ``train+val_seen`` for a tuned refit).
    """

    dataset: Dataset
    seed: int
    shots: tuple[int, ...]
    draws: int = DEFAULT_DRAWS
    fit_split: str = DATA_POLICY.fit_split
    rows: list[Result] = field(default_factory=list)
    params: dict[str, dict] = field(default_factory=dict)
    tuned: dict[str, dict] = field(default_factory=dict)
    run_id: str = field(default_factory=new_run_id)
    protocol: str = "default"
    fixed_queries: bool = True

    def provenance(self) -> dict:
        """Run id, dataset name and simulated flag: the columns every per-row file carries."""
        return {
            "run_id": self.run_id,
            "dataset": self.dataset.name,
            "simulated": bool(self.dataset.simulated),
        }

    def to_json(self) -> dict:
        return {
            "run_id": self.run_id,
            "dataset": {
                "name": self.dataset.name,
                "simulated": self.dataset.simulated,
                "fingerprint": self.dataset.fingerprint(),
                "image_features": self.dataset.feature_source,
            },
            "protocol": {
                "seed": self.seed,
                "shots": list(self.shots),
                "draws": self.draws,
                "name": self.protocol,
                "queries": (
                    "the same for every k: all but max(shots) ratings of each new user, per draw"
                    if self.fixed_queries
                    else "every rating of the new user but its k references, per draw"
                ),
            },
            "data_policy": {
                "fit_split": self.fit_split,
                "validation_split": None if "val_seen" in self.fit_split else DATA_POLICY.validation_split,
                "statement": DATA_POLICY.describe(),
            },
            "params": self.params,
            "tuned": self.tuned,
            "rows": [r.to_json() for r in self.rows],
        }


def default_models(dataset: Dataset) -> list[str]:
    """Every registered model (baselines, classical, deep, ablations), the oracle only where a ground truth exists."""
    return [m for m in GROUPS["all"] if m != "oracle" or dataset.ground_truth is not None]


def skipped_rows(
    evaluator: Evaluator, model: str, splits: Sequence[str], reason: str, fit_split: str
) -> list[Result]:
    """One ``skipped`` row (no metrics, the reason) per split and k for a model that could not fit the data."""
    context = {"fit_seconds": 0.0, "fit_split": fit_split, "validation_split": None}
    return [
        evaluator._failed(model, split, k, "skipped", reason, context)
        for split in splits
        for k in evaluator.tasks(split)
    ]


def run_leaderboard(
    dataset: Dataset,
    models: Sequence[str] | None = None,
    *,
    splits: Sequence[str] | None = None,
    shots: Sequence[int] = (0, 10),
    seed: int = 0,
    draws: int = DEFAULT_DRAWS,
    params: dict[str, dict] | None = None,
    fit_split: str = DATA_POLICY.fit_split,
    tuned: Mapping[str, dict] | None = None,
    progress: bool = True,
    protocol: str = "default",
    fixed_queries: bool = True,
) -> Leaderboard:
    """Fit every model on ``fit_split`` (validating, where a model does, on the policy's validation split) and
    evaluate it on ``splits`` with ``draws`` reference draws per new user.

    ``splits=None`` evaluates those of ``DEFAULT_SPLITS`` the dataset has (an error if it has neither); an
    explicitly requested split the dataset lacks is an error naming the splits it has. A model that cannot fit
    these data (no image features, no metadata: a ``UserError`` or ``ValueError`` from its fit) gets a
    ``skipped`` row per split with the reason, and one that cannot score new users an ``unsupported`` row,
    instead of stopping the run. ``tuned`` (model -> study record, from
    ``experiments.tuning``) marks the rows of tuned models with their study. ``protocol`` names the preset the
    arguments came from (``recsys.evaluation.protocols``); ``fixed_queries`` as in ``Evaluator``.
    """
    models = expand_models(models) if models else default_models(dataset)  # unknown names fail before any fit
    if "oracle" in models and dataset.ground_truth is None:
        print(f"oracle skipped: {dataset.name} has no ground truth (only simulated data do)")
        models.remove("oracle")
    params = params or {}
    tuned = dict(tuned or {})
    if splits is None:
        splits = [s for s in DEFAULT_SPLITS if s in dataset.ratings] or list(DEFAULT_SPLITS)
    missing = [s for s in splits if s not in dataset.ratings]
    if missing:
        raise UserError(
            f"{dataset.name} has no split(s) {', '.join(missing)}; it has {', '.join(dataset.splits)}"
        )
    if draws < 1:
        raise UserError(f"--draws must be at least 1, got {draws}")
    evaluator = Evaluator(dataset, shots=shots, seed=seed, draws=draws, fixed_queries=fixed_queries)
    board = Leaderboard(
        dataset=dataset,
        seed=seed,
        shots=tuple(shots),
        draws=draws,
        fit_split=fit_split,
        tuned=tuned,
        protocol=protocol,
        fixed_queries=fixed_queries,
    )
    bar = tqdm(models, desc="models", unit="model", disable=not progress)
    for name in bar:
        bar.set_postfix_str(f"fitting {name}")
        model = create_model(name, **params.get(name, {}))
        board.params[name] = model.get_params()
        start = time.perf_counter()
        try:
            model.fit(dataset, fit_split)
        except (UserError, ValueError) as err:  # the model cannot run on these data (features, metadata)
            board.rows += skipped_rows(evaluator, name, splits, str(err), fit_split)
            continue
        fit_seconds = time.perf_counter() - start
        bar.set_postfix_str(f"scoring {name}")
        study = tuned.get(name, {}).get("study")
        for split in splits:
            for k in evaluator.tasks(split):
                row = evaluator.evaluate(model, split, k, fit_seconds=fit_seconds)
                row.tuned_study = study
                board.rows.append(row)
    return board
