"""Time a full study: every registered model (the oracle aside) tuned with the same small trial budget on a
reduced simulated PAMELA; prints measured seconds per model.

    python benchmarks/study.py [--models a,b] [--trials 3] [--users 80] [--images 800]
                               [--ratings-per-user 150] [--feature-dim 64] [--split val_seen] [--json]

Optuna storage and MLflow tracking go to a temporary directory (tracking is on, as in ``recsys study``,
unless --no-tracking).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from experiments.spaces import load_space
from experiments.tuning import Objective, study_name, tune
from recsys.data import load_dataset
from recsys.data.simulate import SimulationConfig, simulate
from recsys.models.registry import expand_models


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models", default=None, help="comma-separated models (default: all registered but oracle)"
    )
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--users", type=int, default=80)
    parser.add_argument("--images", type=int, default=800)
    parser.add_argument("--ratings-per-user", type=int, default=150)
    parser.add_argument("--feature-dim", type=int, default=64)
    parser.add_argument("--split", default="val_seen", choices=["val_seen", "val_unseen"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-tracking", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    models = [m for m in expand_models(args.models.split(",") if args.models else ["all"]) if m != "oracle"]
    for model in models:
        load_space(model)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        config = SimulationConfig(seed=args.seed, users=args.users, images=args.images,
                                  ratings_per_user=args.ratings_per_user, feature_dim=args.feature_dim,
                                  render_images=False)  # fmt: skip
        start = time.perf_counter()
        ds = load_dataset(simulate(Path(tmp) / "sim", config, progress=False))
        simulate_seconds = time.perf_counter() - start
        storage = f"sqlite:///{Path(tmp) / 'optuna.db'}"
        start = time.perf_counter()
        if not args.no_tracking:  # creating the MLflow tables is a one-off cost, timed apart from the models
            from experiments.tracking import Tracker

            Tracker()
        tracking_setup_seconds = time.perf_counter() - start
        per_model, best = {}, {}
        total = time.perf_counter()
        for model in models:
            start = time.perf_counter()
            study = tune(ds, model, trials=args.trials, storage=storage, study=study_name(model, "bench"),
                         objective=Objective(split=args.split), seed=args.seed, tracking=not args.no_tracking,
                         progress=False)  # fmt: skip
            per_model[model] = round(time.perf_counter() - start, 2)
            done = [t for t in study.trials if t.value is not None]
            best[model] = round(study.best_value, 4) if done else None
            if not args.json:
                print(f"  {model:<28} {per_model[model]:>8.2f} s   best user_srocc {best[model]}", flush=True)
        study_seconds = time.perf_counter() - total
    result = {
        "dataset": f"simulated ({args.users} users, {args.images} images, {args.ratings_per_user} ratings/user, "
        f"{args.feature_dim}-d features)",
        "trials_per_model": args.trials,
        "split": args.split,
        "tracking": not args.no_tracking,
        "simulate_seconds": round(simulate_seconds, 2),
        "tracking_setup_seconds": round(tracking_setup_seconds, 2),
        "study_seconds": round(study_seconds, 2),
        "seconds_per_model": per_model,
        "best_value": best,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"simulate: {simulate_seconds:.1f} s; full study ({len(models)} models x {args.trials} trials, "
              f"{args.split}): {study_seconds:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
