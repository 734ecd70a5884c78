"""Time the default full leaderboard exactly as a user runs it: ``python -m recsys.cli leaderboard --no-tracking``
(every model and preset, test_seen and test_unseen at 0 and 10 shots, 5 reference draws, the files written) on
the full-size simulated PAMELA. Targets: at most 45 s wall on 2 cores, and no single model over 10 s to fit.

    python benchmarks/leaderboard.py [--repeats 1] [--jobs N] [--models a,b] [--data DIR] [--fit-repeats 0] [--json]

The command runs in a fresh process per repeat (imports, data loading, fits, scoring and report writing all
count), into a temporary workspace. Printed: its wall seconds and CPU seconds (user + system, of the process
and its worker processes; CPU above wall means the cores worked side by side), the load average before it
(other work on the machine inflates wall time), and per model the fit seconds and the predict seconds
(summed over its rows) from its leaderboard.json. With ``--fit-repeats N`` each model is also fitted N more
times, one at a time in this process, and the median of those fits is checked against the limit (a fit in the
leaderboard shares the cores with the other worker). The simulation is built once and cached beforehand, and
timed apart.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: import this checkout's recsys
    sys.path.insert(0, str(ROOT))

from recsys.data import ensure_default_dataset, load_dataset  # noqa: E402
from recsys.errors import UserError  # noqa: E402
from recsys.models import create_model  # noqa: E402

#: the default leaderboard's target on a 2-core machine, wall seconds
TARGET_SECONDS = 45.0
#: no single model may take longer than this to fit on the full-size simulation
FIT_LIMIT_SECONDS = 10.0


def children_cpu_seconds() -> float:
    """User + system CPU seconds of every finished child process of this one (and of their children)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(command: list[str], workspace: Path) -> dict:
    """Run the leaderboard command once; its wall and CPU seconds and the rows of the leaderboard it wrote."""
    load = os.getloadavg()[0]
    cpu_before = children_cpu_seconds()
    start = time.perf_counter()
    done = subprocess.run(
        [*command, "--workspace", str(workspace)], cwd=ROOT, capture_output=True, text=True, check=False
    )
    wall = time.perf_counter() - start
    cpu = children_cpu_seconds() - cpu_before
    if done.returncode != 0:
        sys.exit(f"the leaderboard failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    board = json.loads((workspace / "leaderboards" / "latest" / "leaderboard.json").read_text())
    return {"wall_seconds": wall, "cpu_seconds": cpu, "load_before": load, "rows": board["rows"]}


def per_model_seconds(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per model (in row order): its fit seconds and its predict seconds summed over its rows."""
    out: dict[str, dict[str, float]] = {}
    for row in rows:
        entry = out.setdefault(row["model"], {"fit": row["fit_seconds"], "predict": 0.0})
        entry["predict"] += row["predict_seconds"]
    return out


def refit_seconds(data: Path, models: list[str], repeats: int) -> dict[str, float]:
    """Median seconds of ``repeats`` fits of each model, one at a time in this process."""
    dataset = load_dataset(data)
    out = {}
    for name in models:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            try:
                create_model(name).fit(dataset)
            except (UserError, ValueError):  # a model these data cannot fit: its row says skipped
                break
            times.append(time.perf_counter() - start)
        if times:
            out[name] = statistics.median(times)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="runs of the command; the median wall is judged"
    )
    parser.add_argument("--jobs", type=int, default=None, help="the leaderboard's --jobs (default: its own)")
    parser.add_argument("--models", default=None, help="the leaderboard's --models (default: all)")
    parser.add_argument("--data", type=Path, default=None, help="dataset (default: the simulated PAMELA)")
    parser.add_argument(
        "--fit-repeats", type=int, default=0, help="extra fits of each model, one at a time (default 0)"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args()

    start = time.perf_counter()
    data = args.data or ensure_default_dataset(progress=False)
    prepare_seconds = time.perf_counter() - start
    command = [sys.executable, "-m", "recsys.cli", "leaderboard", "--no-tracking", "--data", str(data)]
    command += ["--jobs", str(args.jobs)] if args.jobs else []
    command += ["--models", args.models] if args.models else []
    runs = []
    for _ in range(max(1, args.repeats)):
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(run_once(command, Path(tmp)))
    wall = statistics.median(r["wall_seconds"] for r in runs)
    seconds = per_model_seconds(runs[-1]["rows"])
    refits = refit_seconds(data, list(seconds), args.fit_repeats) if args.fit_repeats > 0 else {}
    judged = {m: refits.get(m, s["fit"]) for m, s in seconds.items()}
    result = {
        "command": " ".join(["python", *command[1:]]),
        "dataset": str(data),
        "prepare_seconds": round(prepare_seconds, 2),
        "runs": [{k: round(r[k], 2) for k in ("wall_seconds", "cpu_seconds", "load_before")} for r in runs],
        "wall_seconds": round(wall, 2),
        "target_seconds": TARGET_SECONDS,
        "models": {
            m: {"fit": round(s["fit"], 3), "predict": round(s["predict"], 3)}
            | ({"refit_median": round(refits[m], 3)} if m in refits else {})
            for m, s in seconds.items()
        },
        "fit_limit_seconds": FIT_LIMIT_SECONDS,
        "over_fit_limit": sorted(m for m, s in judged.items() if s > FIT_LIMIT_SECONDS),
        "cores": os.cpu_count(),
        "cpu": platform.processor() or platform.machine(),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"$ {result['command']}   (dataset ready in {prepare_seconds:.1f} s)")
    for i, r in enumerate(result["runs"], 1):
        print(
            f"run {i}: wall {r['wall_seconds']:.1f} s, CPU {r['cpu_seconds']:.1f} s "
            f"(load average before: {r['load_before']:.2f} on {result['cores']} cores)"
        )
    verdict = "within" if wall <= TARGET_SECONDS else "OVER"
    print(f"whole run, median wall: {wall:.1f} s ({verdict} the {TARGET_SECONDS:.0f} s target)")
    refit_header = f"  refit x{args.fit_repeats} median" if refits else ""
    print(f"{'model':28s} {'fit s':>7s} {'predict s':>9s}{refit_header}")
    for model, s in result["models"].items():
        refit = f"  {s['refit_median']:8.2f}" if "refit_median" in s else ""
        over = "  OVER the fit limit" if model in result["over_fit_limit"] else ""
        print(f"{model:28s} {s['fit']:7.2f} {s['predict']:9.2f}{refit}{over}")


if __name__ == "__main__":
    main()
