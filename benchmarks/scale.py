"""How the pairwise leaderboard grows with the data: simulated Pick-a-Pic v2 at 100k, 300k and 1M choices (the
published train split has about a million), each model fitted and evaluated in a process of its own, with its
seconds and peak memory. Targets (issue 24): at 1M choices mf, pal, two_tower and pref_tokens within 20 minutes
and 16 GB on the 2-core machine, pref_tokens' fit within 60 s per 100k choices.

    nice python benchmarks/scale.py [--choices 100000,300000,1000000] [--models mf,pal,two_tower,pref_tokens]
        [--out DIR] [--feature-dtype float16] [--json]

Per size: the simulator writes a world of ``ceil(choices / CHOICES_PER_USER)`` users (``recsys data simulate
--pickapic --no-images``: flat JPEGs; features float16 unless ``--feature-dtype float32``; no prompt
embeddings, so ``pal`` runs with one constant prompt: the simulated tastes do not depend on the prompt) into
``OUT/pickapic-<choices>`` (kept: a later run reuses it); then one process loads it (the loader's seconds and
peak memory), and one process per model loads it and runs the leaderboard for that model alone (``recsys
leaderboard --models M --jobs 1``'s protocol: test_seen, test_unseen at 0, 1, 2, 4 and 8 reference choices,
5 draws), so its peak memory (the child's maximum resident set, ``os.wait4``) is the model's (the orchestrating
process stays small: Linux carries a spawning process's resident high-water mark into its child through exec). Printed per model:
fit seconds, fit + evaluate seconds (the leaderboard call, without loading), peak GB, and user choice accuracy
on test_seen and on test_unseen with 8 references; the oracle (the simulator's ground truth) is the ceiling.
"sequential total" is the load plus every model's fit and evaluation, one after another. Last, ``recsys
leaderboard --models <all of them> --no-tracking`` itself (its worker processes as it chooses them: two on two
cores): its wall seconds and the peak of the resident memory of it and its workers together.

Every finished step is appended to ``OUT/scale.jsonl``, so an interrupted run resumes where it stopped (delete the
file, or a world directory, to measure again). All numbers are on SIMULATED data.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

from tqdm.auto import tqdm

#: loaded choices per simulated user (the default 25 prompts of 1-3 comparisons, the published train split's
#: rows that are choices; measured: 100,184 choices from 2,300 users)
CHOICES_PER_USER = 43.56
DEFAULT_CHOICES = "100000,300000,1000000"
DEFAULT_MODELS = "mf,pal,two_tower,pref_tokens"
#: the headline scores of a row (``recsys.evaluation.pairwise``)
SEEN, UNSEEN_SHOTS = "test_seen", 8


def _child(command: list[str], log: Path) -> tuple[float, float, float, int]:
    """Run ``command`` in a process of its own: (seconds, peak GB of its resident memory, peak GB of the resident
    memory of it and its descendants together (sampled twice a second), exit status); output goes to ``log``."""
    start = time.perf_counter()
    peak_tree = [0.0]
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.5):
                peak_tree[0] = max(peak_tree[0], _tree_rss_gb(process.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        stop.set()
        sampler.join()
    process.returncode = os.waitstatus_to_exitcode(status)
    peak = usage.ru_maxrss / 1024**2
    return time.perf_counter() - start, peak, max(peak, peak_tree[0]), process.returncode


def _tree_rss_gb(pid: int) -> float:
    """Resident memory (GB) of process ``pid`` and all its descendants now (from /proc; 0 where it is not)."""
    parent = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parent[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
            except (OSError, ValueError):
                continue
    tree, frontier = {pid}, [pid]
    while frontier:
        children = [child for child, up in parent.items() if up in frontier and child not in tree]
        tree.update(children)
        frontier = children
    pages = 0
    for member in tree:
        try:
            pages += int((Path("/proc") / str(member) / "statm").read_text().split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return pages * os.sysconf("SC_PAGE_SIZE") / 1024**3


def simulate_world(path: Path, users: int, feature_dtype: str) -> None:
    from recsys.data.simulate_pairs import PickapicSimulationConfig, simulate_pickapic

    config = PickapicSimulationConfig(
        seed=0, users=users, detailed_images=False, feature_dtype=feature_dtype, prompt_embeddings=False
    )
    simulate_pickapic(path, config, progress=True)


def load_world(path: Path) -> dict:
    from recsys.data import load_dataset

    start = time.perf_counter()
    ds = load_dataset(path)
    return {"seconds": time.perf_counter() - start, "loaded_choices": sum(len(c) for c in ds.choices.values()),
            "images": ds.n_images, "users": ds.n_users}  # fmt: skip


def run_model(path: Path, model: str) -> dict:
    """The leaderboard for one model: seconds of its fit and of the whole call, and the headline scores."""
    from recsys.data import load_dataset
    from recsys.leaderboard import run_leaderboard

    ds = load_dataset(path)
    start = time.perf_counter()
    board = run_leaderboard(ds, [model], jobs=1, progress=False)
    seconds = time.perf_counter() - start
    scores = {}
    for row in board.rows:
        k = row.shots if row.split != SEEN else None
        if row.split == SEEN or k == UNSEEN_SHOTS:
            key = f"{row.split}" if k is None else f"{row.split}@{k}"
            scores.setdefault(row.model, {})[key] = (row.metrics or {}).get("user_choice_acc")
    fit = next(r.fit_seconds for r in board.rows if r.model == model)
    return {"fit_seconds": fit, "seconds": seconds, "scores": scores}


def measure(out: Path, choices: list[int], models: list[str], feature_dtype: str) -> list[dict]:
    """Every step's record (resumed from ``OUT/scale.jsonl``)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "logs").mkdir(exist_ok=True)
    ledger = out / "scale.jsonl"
    done = [json.loads(line) for line in ledger.read_text().splitlines()] if ledger.is_file() else []
    have = {(r["choices"], r["step"]) for r in done}
    steps = [(n, step) for n in choices for step in ("simulate", "load", *models, "leaderboard")]
    bar = tqdm(steps, desc="scale", unit="step")
    for n, step in bar:
        bar.set_postfix_str(f"{n:,} choices: {step}")
        if (n, step) in have:
            continue
        world = out / f"pickapic-{n}"
        log = out / "logs" / f"{n}-{step}.log"
        here = [sys.executable, __file__]
        if step == "simulate":
            if (world / "simulation.json").is_file():  # simulated by an earlier run: not timed again
                continue
            command = [*here, "--simulate", str(world), str(math.ceil(n / CHOICES_PER_USER)), feature_dtype]
        elif step == "load":
            command = [*here, "--load", str(world)]
        elif step == "leaderboard":  # the command itself, its worker processes as it chooses them
            command = [sys.executable, "-m", "recsys.cli", "leaderboard", "--data", str(world), "--models",
                       ",".join(models), "--no-tracking", "--out", str(out / f"leaderboard-{n}"), "--overwrite"]  # fmt: skip
        else:
            command = [*here, "--model", str(world), step]
        seconds, peak_gb, tree_gb, status = _child(command, log)
        if status != 0:
            raise SystemExit(f"{step} at {n:,} choices failed (exit {status}); see {log}")
        record = {"choices": n, "step": step, "wall_seconds": seconds, "peak_gb": peak_gb, "tree_gb": tree_gb}
        lines = log.read_text().splitlines()
        result = next((json.loads(x[7:]) for x in reversed(lines) if x.startswith("RESULT ")), {})
        record |= result
        done.append(record)
        with open(ledger, "a") as file:
            file.write(json.dumps(record) + "\n")
    return [
        r
        for r in done
        if r["choices"] in choices and r["step"] in ("simulate", "load", *models, "leaderboard")
    ]


def table(records: list[dict], models: list[str]) -> str:
    """The records as a markdown table, sizes ascending."""
    lines = [
        "| choices (loaded) | step | fit s | fit + evaluate s | peak GB | user_choice_acc test_seen | "
        f"test_unseen @{UNSEEN_SHOTS} |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for n in sorted({r["choices"] for r in records}):
        rows = {r["step"]: r for r in records if r["choices"] == n}
        loaded = rows.get("load", {}).get("loaded_choices")
        label = f"{n:,}" + (f" ({loaded:,})" if loaded else "")
        if "simulate" in rows:
            r = rows["simulate"]
            lines.append(f"| {label} | simulate | | {r['wall_seconds']:.0f} | {r['peak_gb']:.1f} | | |")
        if "load" in rows:
            r = rows["load"]
            lines.append(f"| {label} | load | | {r['seconds']:.0f} | {r['peak_gb']:.1f} | | |")
        oracle = {}
        for model in models:
            if model not in rows:
                continue
            r = rows[model]
            s = r["scores"].get(model, {})
            oracle = r["scores"].get("oracle", oracle)
            lines.append(
                f"| {label} | {model} | {r['fit_seconds']:.0f} | {r['seconds']:.0f} | {r['peak_gb']:.1f} | "
                f"{_score(s.get(SEEN))} | {_score(s.get(f'test_unseen@{UNSEEN_SHOTS}'))} |"
            )
        if oracle:
            lines.append(
                f"| {label} | oracle (ceiling) | | | | {_score(oracle.get(SEEN))} | "
                f"{_score(oracle.get(f'test_unseen@{UNSEEN_SHOTS}'))} |"
            )
        if "load" in rows and all(m in rows for m in models):
            total = rows["load"]["seconds"] + sum(rows[m]["seconds"] for m in models)
            peak = max(rows[m]["peak_gb"] for m in models)
            lines.append(f"| {label} | sequential total | | {total:.0f} | {peak:.1f} | | |")
        if "leaderboard" in rows:
            r = rows["leaderboard"]
            lines.append(
                f"| {label} | `recsys leaderboard` (load, fit, evaluate, write) | | {r['wall_seconds']:.0f} | "
                f"{r['tree_gb']:.1f} (all processes) | | |"
            )
    return "\n".join(lines)


def _score(value) -> str:
    return "" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--choices", default=DEFAULT_CHOICES, help=f"sizes (default {DEFAULT_CHOICES})")
    parser.add_argument("--models", default=DEFAULT_MODELS, help=f"models (default {DEFAULT_MODELS})")
    parser.add_argument("--out", type=Path, default=Path("scale-bench"), help="worlds, logs and the ledger")
    parser.add_argument("--feature-dtype", choices=("float16", "float32"), default="float16")
    parser.add_argument("--json", action="store_true", help="print the records as JSON")
    # the child processes' entry points
    parser.add_argument("--simulate", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--load", help=argparse.SUPPRESS)
    parser.add_argument("--model", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.simulate:
        simulate_world(Path(args.simulate[0]), int(args.simulate[1]), args.simulate[2])
        return
    if args.load:
        print("RESULT " + json.dumps(load_world(Path(args.load))))
        return
    if args.model:
        print("RESULT " + json.dumps(run_model(Path(args.model[0]), args.model[1])))
        return
    try:
        choices = [int(n) for n in args.choices.split(",")]
    except ValueError:
        parser.error(f"--choices {args.choices}: comma-separated integers, e.g. {DEFAULT_CHOICES}")
    if min(choices) < 1000:
        parser.error("--choices: at least 1000 choices per size")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    records = measure(args.out, choices, models, args.feature_dtype)
    if args.json:
        print(json.dumps(records))
        return
    print(
        f"simulated Pick-a-Pic v2 (SIMULATED data; {args.feature_dtype} features), "
        f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}"
    )
    print(table(records, models))


if __name__ == "__main__":
    main()
