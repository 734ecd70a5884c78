"""``recsys tune`` and ``recsys study``: hyperparameter search under the one protocol."""

from __future__ import annotations

import argparse
import json
import logging
import time

from experiments.tuning import DEFAULT_STUDY_PREFIX, Objective, study_name
from recsys.cli.common import (
    add_command,
    add_data_arguments,
    add_models_argument,
    add_tracking_arguments,
    add_workspace_argument,
    dataset_from_args,
    positive_int,
)
from recsys.evaluation.evaluator import DEFAULT_DRAWS
from recsys.extras import require


def _add_search_arguments(parser: argparse.ArgumentParser) -> None:
    add_data_arguments(parser)
    parser.add_argument("--trials", type=int, default=20, help="trials to add to each study")
    parser.add_argument(
        "--storage",
        default=None,
        help="Optuna storage URL (postgresql://... to share a study); default: sqlite:///WORKSPACE/optuna.db",
    )
    parser.add_argument("--metric", default="user_srocc", help="validation metric to optimise")
    parser.add_argument(
        "--split",
        default="val_seen",
        choices=["val_seen", "val_unseen"],
        help="validation split measured by every trial",
    )
    parser.add_argument("--shots", type=int, default=10, help="reference ratings per new user on val_unseen")
    parser.add_argument(
        "--draws", type=positive_int, default=DEFAULT_DRAWS, help="reference draws per new user on val_unseen"
    )
    parser.add_argument(
        "--timeout", type=float, default=None, help="stop starting trials after this many seconds"
    )
    add_tracking_arguments(parser, "the trials")
    add_workspace_argument(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_parsers(subparsers) -> None:
    """Add the ``tune`` and ``study`` commands."""
    tune = add_command(subparsers, "tune")
    tune.add_argument("model", help="registered model name (its space: experiments/spaces/MODEL.toml)")
    tune.add_argument("--study", default=None, help=f"study name; default: {DEFAULT_STUDY_PREFIX}-MODEL")
    _add_search_arguments(tune)
    tune.set_defaults(func=cmd_tune)

    study = add_command(subparsers, "study")
    add_models_argument(study, "baselines, classical and deep but the oracle")
    study.add_argument("--study-prefix", default=DEFAULT_STUDY_PREFIX, help="studies are named PREFIX-MODEL")
    study.add_argument("--json", action="store_true", help="print the summary as JSON")
    _add_search_arguments(study)
    study.set_defaults(func=cmd_study)


def _quiet() -> None:
    for name in ("mlflow", "alembic", "optuna"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _objective(args: argparse.Namespace) -> Objective:
    return Objective(metric=args.metric, split=args.split, shots=args.shots, draws=args.draws)


def _summary(model: str, handle, added: int, seconds: float) -> dict:
    import optuna

    done = [t for t in handle.trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = handle.best_trial if done else None
    return {
        "model": model,
        "study": handle.study_name,
        "trials_added": added,
        "trials_total": len(handle.trials),
        "best_value": None if best is None else best.value,
        "best_trial": None if best is None else best.number,
        "best_params": {} if best is None else best.params,
        "seconds": round(seconds, 2),
    }


def _stores(args: argparse.Namespace) -> tuple[str, str]:
    """The Optuna storage and the MLflow tracking URI: the flags, else ($MLFLOW_TRACKING_URI, else) the
    workspace's SQLite files."""
    import os

    from recsys.workspace import sqlite_url

    storage = args.storage or sqlite_url(args.workspace, "optuna.db")
    tracking = (
        args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or sqlite_url(args.workspace, "mlflow.db")
    )
    return storage, tracking


def _tune(args: argparse.Namespace, ds, model: str, study: str | None):
    from experiments.tuning import tune

    storage, tracking_uri = _stores(args)
    return tune(
        ds,
        model,
        trials=args.trials,
        storage=storage,
        study=study,
        objective=_objective(args),
        seed=args.seed,
        tracking_uri=tracking_uri,
        tracking=not args.no_tracking,
        timeout=args.timeout,
        progress=not args.no_progress,
    )


def cmd_tune(args: argparse.Namespace) -> int:
    require("experiments", "recsys tune")
    _quiet()
    ds = dataset_from_args(args)
    start = time.perf_counter()
    handle = _tune(args, ds, args.model, args.study)
    s = _summary(args.model, handle, args.trials, time.perf_counter() - start)
    head = f"study {s['study']}: {s['trials_total']} trials ({args.trials} added in {s['seconds']:.1f} s); "
    if s["best_value"] is None:
        print(head + "no trial completed (see the failed trials' `invalid` reasons in the study)")
        return 0
    print(
        head + f"best {args.metric} on {args.split} = {s['best_value']:.4f} (trial {s['best_trial']}) "
        f"with {s['best_params']}"
    )
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from experiments.spaces import load_space
    from recsys.models.registry import expand_models

    require("experiments", "recsys study")
    _quiet()
    # default: every model but the oracle (nothing to tune) and the ablations (they share their parent's space)
    models = [m for m in expand_models(args.models or ["baselines", "classical", "deep"]) if m != "oracle"]
    for model in models:  # fail fast: every space must load before any fitting
        load_space(model)
    ds = dataset_from_args(args)
    summaries = []
    for model in models:
        start = time.perf_counter()
        handle = _tune(args, ds, model, study_name(model, args.study_prefix))
        summaries.append(_summary(model, handle, args.trials, time.perf_counter() - start))
    if args.json:
        print(json.dumps(summaries, indent=2))
        return 0
    print(
        f"{'model':<26} {'trials':>6} {args.metric + ' (' + args.split + ')':>26} {'seconds':>8}  best parameters"
    )
    for s in summaries:
        value = "-" if s["best_value"] is None else f"{s['best_value']:.4f}"
        print(f"{s['model']:<26} {s['trials_total']:>6} {value:>26} {s['seconds']:>8.1f}  {s['best_params']}")
    prefix = f" --study-prefix {args.study_prefix}" if args.study_prefix != DEFAULT_STUDY_PREFIX else ""
    print(f"\nrefit and test with: recsys leaderboard --tuned --models {','.join(models)}{prefix}")
    return 0
