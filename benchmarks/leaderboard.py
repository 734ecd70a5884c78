"""Time the default leaderboard (baselines, test_seen and test_unseen at 0 and 10 shots) on full-size
simulated PAMELA. Target: under 60 s on 2 cores.

    python benchmarks/leaderboard.py [--models a,b] [--json]

Simulation time is reported separately (the leaderboard command simulates once and caches).
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from recsys.data import load_dataset
from recsys.data.simulate import SimulationConfig, simulate
from recsys.leaderboard import run_leaderboard
from recsys.models.registry import expand_models
from recsys.report import write_leaderboard


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--models", default="baselines", help="comma-separated models or groups (default: baselines)"
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
        board = run_leaderboard(ds, models, progress=False)
        write_leaderboard(board, Path(tmp) / "board")
        leaderboard_seconds = time.perf_counter() - start
    result = {
        "dataset": ds.name + " (simulated)",
        "models": models,
        "simulate_seconds": round(simulate_seconds, 2),
        "leaderboard_seconds": round(leaderboard_seconds, 2),
        "fit_seconds": {r.model: round(r.fit_seconds, 3) for r in board.rows},
        "target_seconds": 60,
        "cpu": platform.processor() or platform.machine(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"simulate full-size PAMELA (with PNGs): {simulate_seconds:.1f} s")
        print(
            f"leaderboard ({', '.join(models)}; load, fit, evaluate, write): {leaderboard_seconds:.1f} s (target < 60 s)"
        )
        for model, seconds in result["fit_seconds"].items():
            print(f"  fit {model}: {seconds:.2f} s")


if __name__ == "__main__":
    main()
