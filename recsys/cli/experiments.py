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
from recsys.errors import UserError
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
        "--timeout",
        type=float,
        default=None,
        help="stop starting trials after this many seconds (a trial under way runs to its end)",
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


def _check_budget(args: argparse.Namespace) -> None:
    """--trials and --timeout, before any data are read."""
    if args.trials < 1:
        raise UserError(f"--trials must be at least 1, got {args.trials}")
    if args.timeout is not None and not args.timeout > 0:
        raise UserError(f"--timeout must be a positive number of seconds, got {args.timeout:g}")


def _objective(args: argparse.Namespace) -> Objective:
    return Objective(metric=args.metric, split=args.split, shots=args.shots, draws=args.draws)


def _summary(model: str, handle, added: int, seconds: float, before: dict[int, str]) -> dict:
    """What a tuning session did: the trials that ran in it (new ones, and waiting ones it started) by their
    state, the trials still waiting, and the best so far. ``before``: each trial's state before the session."""
    import optuna

    trials = handle.trials
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    best = handle.best_trial if done else None
    states: dict[str, int] = {}
    for trial in trials:
        if trial.state.name != "WAITING" and before.get(trial.number, "WAITING") == "WAITING":
            states[trial.state.name.lower()] = states.get(trial.state.name.lower(), 0) + 1
    return {
        "model": model,
        "study": handle.study_name,
        "trials_added": sum(states.values()),
        "trials_asked": added,
        "trials_total": len(trials),
        "states_added": states,
        "waiting": sum(t.state == optuna.trial.TrialState.WAITING for t in trials),
        "best_value": None if best is None else best.value,
        "best_trial": None if best is None else best.number,
        "best_params": {} if best is None else best.params,
        "seconds": round(seconds, 2),
    }


def _trials_before(args: argparse.Namespace, study: str) -> dict[int, str]:
    """The state of each trial of the study before this session (none for a new study)."""
    import optuna

    from experiments.tuning import reading_study, resolve_storage

    storage, _ = _stores(args)
    try:
        with reading_study(study):
            trials = optuna.load_study(study_name=study, storage=resolve_storage(storage)).trials
    except KeyError:
        return {}
    return {t.number: t.state.name for t in trials}


def _stores(args: argparse.Namespace) -> tuple[str, str]:
    """The Optuna storage and the MLflow tracking URI: the flags, else ($MLFLOW_TRACKING_URI, else) the
    workspace's SQLite files."""
    import os

    from recsys.workspace import check_writable, resolve_workspace, sqlite_url

    storage = args.storage or sqlite_url(args.workspace, "optuna.db")
    tracking = (
        args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or sqlite_url(args.workspace, "mlflow.db")
    )
    if not args.storage or (not args.no_tracking and tracking == sqlite_url(args.workspace, "mlflow.db")):
        check_writable(resolve_workspace(args.workspace))  # a read-only or full workspace: one line, now
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
    _check_budget(args)
    _stores(args)  # a read-only or full workspace fails here, before the data are read
    ds = dataset_from_args(args)
    name = args.study or study_name(args.model)
    before = _trials_before(args, name)
    start = time.perf_counter()
    handle = _tune(args, ds, args.model, args.study)
    s = _summary(args.model, handle, args.trials, time.perf_counter() - start, before)
    ran = ", ".join(f"{n} {state}" for state, n in sorted(s["states_added"].items()))
    head = (
        f"study {s['study']}: {s['trials_total']} trials ({s['trials_added']} of the {args.trials} asked for "
        f"ran in {s['seconds']:.1f} s{': ' + ran if ran else ''}); "
    )
    if s["best_value"] is None:
        if s["trials_added"] < args.trials and args.timeout is not None:
            why = f"the --timeout of {args.timeout:g} s ran out"
            if s["waiting"]:
                why += f" with {s['waiting']} trial(s) still waiting (the defaults come first); they run next time"
            print(head + f"no trial completed: {why}")
        else:
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
    _check_budget(args)
    _stores(args)  # a read-only or full workspace fails here, before the data are read
    ds = dataset_from_args(args)
    summaries = []
    for model in models:
        name = study_name(model, args.study_prefix)
        before = _trials_before(args, name)
        start = time.perf_counter()
        handle = _tune(args, ds, model, name)
        summaries.append(_summary(model, handle, args.trials, time.perf_counter() - start, before))
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
