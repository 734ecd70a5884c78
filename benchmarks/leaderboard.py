"""Time the default leaderboard (every model and preset, test_seen and test_unseen at 0 and 10 shots, 5 reference
draws per new user, worker processes as `recsys leaderboard` uses them) on full-size simulated PAMELA.
Targets: the whole run (load, fit, evaluate, write) at most 45 s on 2 cores, and no single model over 10 s to fit.

    python benchmarks/leaderboard.py [--models a,b] [--jobs auto] [--fit-repeats 3] [--json]

Simulation time is reported separately (the leaderboard command simulates once and caches). Each model's
fit seconds are the median of its fit inside the leaderboard and ``--fit-repeats - 1`` more fits of a fresh
copy on the same data in this process (repeat on a loaded machine); models over the limit are named.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

from recsys.data import load_dataset
from recsys.data.simulate import SimulationConfig, simulate
from recsys.leaderboard import run_leaderboard
from recsys.models import create_model
from recsys.models.registry import expand_models
from recsys.report import write_leaderboard

#: no single model may take longer than this to fit on the full-size simulation
FIT_LIMIT_SECONDS = 10.0
#: the whole default leaderboard on the 2-core machine
TARGET_SECONDS = 45


def fit_seconds(board, dataset, repeats: int) -> dict[str, float]:
    """Median fit seconds per model: its fit in the leaderboard and ``repeats - 1`` fits of a new copy."""
    out = {}
    for model, first in {r.model: r.fit_seconds for r in board.rows}.items():
        times = [first]
        for _ in range(repeats - 1):
            start = time.perf_counter()
            create_model(model).fit(dataset)
            times.append(time.perf_counter() - start)
        out[model] = statistics.median(times)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models", default="all", help="comma-separated models or groups (default: all, as the leaderboard)"
    )
    parser.add_argument("--jobs", default="auto", help="worker processes (default auto, as the leaderboard)")
    parser.add_argument(
        "--fit-repeats", type=int, default=1, help="fits per model whose median is reported (default 1)"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        path = simulate(Path(tmp) / "sim", SimulationConfig(seed=0), progress=False)
        simulate_seconds = time.perf_counter() - start
        start = time.perf_counter()
        ds = load_dataset(path)
        models = expand_models(args.models.split(","))
        jobs = args.jobs if args.jobs == "auto" else int(args.jobs)
        board = run_leaderboard(ds, models, progress=False, jobs=jobs)
        write_leaderboard(board, Path(tmp) / "board")
        leaderboard_seconds = time.perf_counter() - start
        fits = fit_seconds(board, ds, max(1, args.fit_repeats))
    result = {
        "dataset": ds.name + " (simulated)",
        "models": models,
        "simulate_seconds": round(simulate_seconds, 2),
        "leaderboard_seconds": round(leaderboard_seconds, 2),
        "fit_seconds": {model: round(seconds, 3) for model, seconds in fits.items()},
        "fit_repeats": max(1, args.fit_repeats),
        "fit_limit_seconds": FIT_LIMIT_SECONDS,
        "over_fit_limit": sorted(m for m, seconds in fits.items() if seconds > FIT_LIMIT_SECONDS),
        "target_seconds": TARGET_SECONDS,
        "jobs": args.jobs,
        "cpu": platform.processor() or platform.machine(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"simulate full-size PAMELA (with PNGs): {simulate_seconds:.1f} s")
        print(
            f"leaderboard ({', '.join(models)}; load, fit, evaluate, write): {leaderboard_seconds:.1f} s (target <= {TARGET_SECONDS} s)"
        )
        for model, seconds in result["fit_seconds"].items():
            over = f"  OVER the {FIT_LIMIT_SECONDS:.0f} s fit limit" if seconds > FIT_LIMIT_SECONDS else ""
            print(f"  fit {model}: {seconds:.2f} s{over}")


if __name__ == "__main__":
    main()
