"""Do the models' standings hold beyond one world? The leaderboard on a family of simulated worlds
(``recsys.data.worlds``), as ratings and as pairwise choices, with each model's headline score and rank per
world and a summary over worlds.

    nice python benchmarks/worlds.py [--kinds ratings,choices] [--worlds default,low_rank,...]
        [--rating-models M,...] [--choice-models M,...] [--users 199] [--choice-users 200] [--draws 5]
        [--seed 0] [--jobs auto] [--workspace DIR]

The worlds (what differs from the default world; ``recsys data simulate`` flags in parentheses):

* ``default``: the default world (6 taste groups of rank 6, 16% individual taste, demographics pull groups).
* ``low_rank``: the 6 groups' tastes span only 2 directions (``--taste-rank 2``).
* ``many_groups``: 24 groups whose tastes span 16 directions (``--taste-groups 24 --taste-rank 16``).
* ``individual``: 60% of taste variance is each user's own (``--individual-share 0.6``).
* ``no_demographics``: group membership independent of demographics (``--demographic-weight 0``).
* ``noisy``: rating / perception noise 1.5 times the default's (``--noise-scale 1.5``).
* ``mixture``: each user's shared taste a mixture of the groups (``--membership mixture``).
* ``interaction``: taste also weights products of content attributes (``--taste-form interaction``).
* ``other_features``: features from a 3-layer ReLU net blind to 4 of 12 attributes (``--feature-map relu
  --hidden-attributes 4``).
* ``other_generator``: all changes at once (12 groups of rank 8 mixed per user, 35% individual taste, half
  the demographic pull, interaction taste, random cosine features blind to 2 attributes, noise 1.2).

Headline scores: on ratings user SROCC on ``test_seen`` and on ``test_unseen`` with 10 reference ratings (the
default protocol's queries); on choices user choice accuracy on ``test_seen`` and on ``test_unseen`` with 8
reference choices. Each world is simulated at the given sizes (ratings: PAMELA's shape without PNGs; choices:
the Pick-a-Pic simulator with flat JPEGs), with the same seed, so worlds that differ in one setting share their
images and users' other draws. Per world the script prints every model's score with its 95% bootstrap interval
over users and its rank (1 = best; the oracle, the simulator's ground truth, is the ceiling and is not ranked);
then per kind a summary: each model's mean rank, the worlds where it is best, and the worlds where it is
within the interval of the best (its score at least the lower end of the best model's 95% interval); and per
world the ceiling and the best model's gap to it. Everything (0-reference rows too) is written to
``WORKSPACE/worlds/<UTC time>-<kinds>.json`` (after each world, so an interrupted run keeps what it did;
``--resume FILE`` takes the worlds such a file holds and runs the rest). All numbers are on SIMULATED data.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

from recsys.cli.common import check_params, parse_params
from recsys.data import load_dataset
from recsys.data.worlds import KINDS, World, get_worlds, simulate_world
from recsys.errors import UserError
from recsys.leaderboard import run_leaderboard
from recsys.models.registry import expand_models
from recsys.workspace import resolve_workspace

#: the models the README's comparisons name (the ablations among them), and the ground truth
RATING_MODELS = "ridge,user_ridge,biases,mf,als,item_knn,two_tower,pref_tokens,profile,ablations,oracle"
CHOICE_MODELS = "mf,two_tower,pref_tokens,choices,ablations"
#: per kind: the metric, the shots of new users (0 and the headline k), and the headline columns
HEADLINE = {
    "ratings": ("user_srocc", (0, 10), (("test_seen", None), ("test_unseen", 10))),
    "choices": ("user_choice_acc", (0, 8), (("test_seen", None), ("test_unseen", 8))),
}
ORACLE = "oracle"


def column_name(split: str, shots: int | None) -> str:
    return "seen" if shots is None else f"new@{shots}"


def run_world(world: World, kind: str, models: list[str], args) -> dict:
    """Simulate ``world`` as ``kind`` data, run the leaderboard on it and return its rows and timings."""
    metric, shots, _ = HEADLINE[kind]
    sizes = (
        {"users": args.users, "images": args.images, "ratings_per_user": args.ratings_per_user}
        if kind == "ratings"
        else {"users": args.choice_users, "prompts_per_user": args.prompts_per_user}
    )
    cpu_start = cpu_seconds()
    with tempfile.TemporaryDirectory(prefix="worlds-") as tmp:
        start = time.perf_counter()
        path = simulate_world(world, kind, Path(tmp) / world.name, seed=args.seed, sizes=sizes)
        simulate_seconds = time.perf_counter() - start
        start = time.perf_counter()
        ds = load_dataset(path)
        board = run_leaderboard(
            ds,
            list(models),
            splits=("test_seen", "test_unseen"),
            shots=shots,
            seed=args.seed,
            draws=args.draws,
            progress=False,
            jobs=args.jobs,
            params=args.params,
        )
        leaderboard_seconds = time.perf_counter() - start
    rows = []
    for row in board.rows:
        if row.metrics is None or metric not in row.metrics:
            rows.append({"model": row.model, "split": row.split, "shots": row.shots, "status": row.status})
            continue
        per_user = row.per_user.get(metric, {})
        rows.append(
            {
                "model": row.model,
                "split": row.split,
                "shots": row.shots,
                "value": float(row.metrics[metric]),
                "ci95": [float(v) for v in (row.ci95 or {}).get(metric, [np.nan, np.nan])],
                "users": int(row.metric_users.get(metric, row.n_users)),
                "fit_seconds": round(float(row.fit_seconds), 2),
                "metrics": {m: float(v) for m, v in row.metrics.items()},
                "ci95_all": {m: [float(x) for x in v] for m, v in (row.ci95 or {}).items()},
                # per-user values (averaged over draws) of the headline metric, for paired tests across models
                "per_user": {str(ds.user_ids[u]): float(v) for u, v in per_user.items()},
            }
        )
    return {
        "world": world.name,
        "kind": kind,
        "dataset": ds.name,
        "fingerprint": ds.fingerprint(),
        "settings": world.settings,
        "description": world.description,
        "metric": metric,
        "simulate_seconds": round(simulate_seconds, 1),
        "leaderboard_seconds": round(leaderboard_seconds, 1),
        "cpu_seconds": round(cpu_seconds() - cpu_start, 1),
        "rows": rows,
    }


def headline(result: dict) -> dict[str, dict[str, dict]]:
    """column -> model -> {value, ci95, rank, best, in_ci}: the headline cells of one world, ranked."""
    _, _, columns = HEADLINE[result["kind"]]
    out = {}
    for split, shots in columns:
        cells = {
            r["model"]: dict(r)
            for r in result["rows"]
            if r["split"] == split and r["shots"] == shots and "value" in r
        }
        ranked = [m for m in cells if m != ORACLE]
        if ranked:
            ranks = rankdata([-cells[m]["value"] for m in ranked], method="average")
            best = ranked[int(np.argmin(ranks))]
            floor = cells[best]["ci95"][0]
            for model, rank in zip(ranked, ranks, strict=True):
                cells[model] |= {
                    "rank": float(rank),
                    "best": bool(rank == ranks.min()),
                    "in_ci": bool(cells[model]["value"] >= floor),
                }
        out[column_name(split, shots)] = cells
    return out


def print_world(result: dict, models: list[str]) -> None:
    cells = headline(result)
    print(
        f"\n{result['kind']} world `{result['world']}`: {result['description']}\n"
        f"  {result['dataset']} [SIMULATED]; simulated in {result['simulate_seconds']:.0f} s, leaderboard "
        f"{result['leaderboard_seconds']:.0f} s{'' if 'resumed_from' not in result else ' (taken from --resume)'}; "
        f"{result['metric']} [95% CI], rank (1 = best)"
    )
    head = f"  {'model':<28}" + "".join(f" {c + ' [95% CI]':>27} {'rank':>5}" for c in cells)
    print(head)
    for model in [*[m for m in models if m != ORACLE], ORACLE]:
        line = f"  {model + (' (ceiling)' if model == ORACLE else ''):<28}"
        present = False
        for column in cells.values():
            cell = column.get(model)
            if cell is None:
                line += f" {'-':>27} {'':>5}"
                continue
            present = True
            lo, hi = cell["ci95"]
            rank = f"{cell['rank']:g}" if "rank" in cell else "-"
            line += f" {cell['value']:>8.3f} [{lo:.3f}, {hi:.3f}]{'':>4} {rank:>5}"
        if present:
            print(line)


def summary(results: list[dict], models: list[str]) -> dict:
    """Per model and column: mean rank, worlds best, worlds within the best's interval; per world and column:
    the oracle's score, the best model and its gap to the oracle."""
    per_world = {r["world"]: headline(r) for r in results}
    columns = list(next(iter(per_world.values()))) if per_world else []
    table = {}
    for model in models:
        if model == ORACLE:
            continue
        entry = {}
        for column in columns:
            cells = [w[column][model] for w in per_world.values() if "rank" in w[column].get(model, {})]
            entry[column] = {
                "worlds": len(cells),
                "mean_rank": float(np.mean([c["rank"] for c in cells])) if cells else None,
                "best": sum(c["best"] for c in cells),
                "in_ci": sum(c["in_ci"] for c in cells),
            }
        table[model] = entry
    ceiling = {}
    for world, cells in per_world.items():
        ceiling[world] = {}
        for column in columns:
            ranked = {m: c for m, c in cells[column].items() if "rank" in c}
            best = min(ranked, key=lambda m: ranked[m]["rank"]) if ranked else None
            oracle = cells[column].get(ORACLE, {}).get("value")
            ceiling[world][column] = {
                "oracle": oracle,
                "best_model": best,
                "best": ranked[best]["value"] if best else None,
                "gap": oracle - ranked[best]["value"] if best and oracle is not None else None,
            }
    return {"models": table, "ceiling": ceiling}


def print_summary(kind: str, results: list[dict], models: list[str]) -> dict:
    done = summary(results, models)
    n = len(results)
    columns = list(next(iter(done["models"].values()))) if done["models"] else []
    print(
        f"\n{kind}: summary over {n} world(s) ({HEADLINE[kind][0]}; rank 1 = best of the measured models; "
        "'in CI' = worlds where the model's score is at least the lower end of the best model's 95% interval)"
    )
    head = f"  {'model':<28}" + "".join(f" {c + ' mean rank':>16} {'best':>5} {'in CI':>6}" for c in columns)
    print(head)
    order = sorted(done["models"], key=lambda m: done["models"][m][columns[-1]]["mean_rank"] or np.inf)
    for model in order:
        line = f"  {model:<28}"
        for column in columns:
            e = done["models"][model][column]
            rank = f"{e['mean_rank']:.1f}" if e["mean_rank"] is not None else "-"
            line += f" {rank:>16} {e['best']:>2}/{e['worlds']:<2} {e['in_ci']:>3}/{e['worlds']:<2}"
        print(line)
    print(f"\n{kind}: the ceiling (oracle, ground truth) and the best measured model per world")
    print(
        f"  {'world':<16}"
        + "".join(f" {c + ' oracle':>13} {'best model':>26} {'score':>6} {'gap':>6}" for c in columns)
    )
    for world, cells in done["ceiling"].items():
        line = f"  {world:<16}"
        for column in columns:
            c = cells[column]
            fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
            line += (
                f" {fmt(c['oracle']):>13} {c['best_model'] or '-':>26} {fmt(c['best']):>6} {fmt(c['gap']):>6}"
            )
        print(line)
    return done


def cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and of its finished children (the leaderboards' workers):
    the run's cost whatever else shares the machine."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def write_json(path: Path, payload: dict) -> None:
    """Write ``payload`` to ``path`` through a temporary file renamed into place (never half-written)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(json.dumps(payload, indent=1))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


#: the arguments that decide a world's result: a resumed run must have the same
RESULT_ARGUMENTS = (
    "params",
    "seed",
    "draws",
    "users",
    "images",
    "ratings_per_user",
    "choice_users",
    "prompts_per_user",
)


def resumed_worlds(args, models: dict[str, list[str]]) -> dict[tuple[str, str], dict]:
    """(kind, world) -> result of the worlds finished in the ``args.resume`` files (none without them); a file of
    other settings or models is refused in one line."""
    found = {}
    for path in args.resume or []:
        try:
            earlier = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise UserError(f"--resume {path}: cannot be read ({type(err).__name__}: {err})") from None
        for name in RESULT_ARGUMENTS:
            # a file written before --params existed ran every model at its defaults
            if earlier.get("arguments", {}).get(name, {} if name == "params" else None) != getattr(
                args, name
            ):
                raise UserError(
                    f"--resume {path}: made with --{name.replace('_', '-')} "
                    f"{earlier.get('arguments', {}).get(name)}, not {getattr(args, name)}"
                )
        for kind in KINDS:
            if kind in earlier and earlier[kind]["models"] != models[kind]:
                raise UserError(f"--resume {path}: its {kind} models are not those of this run")
            for result in earlier.get(kind, {}).get("worlds", []):
                found[(kind, result["world"])] = result | {"resumed_from": str(path)}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kinds", default=",".join(KINDS), help="ratings, choices or both (default: both)")
    parser.add_argument("--worlds", default=None, help="comma-separated world names (default: all)")
    parser.add_argument("--rating-models", default=RATING_MODELS, help=f"default: {RATING_MODELS}")
    parser.add_argument("--choice-models", default=CHOICE_MODELS, help=f"default: {CHOICE_MODELS}")
    parser.add_argument("--users", type=int, default=199, help="ratings: users (default 199, PAMELA's)")
    parser.add_argument("--images", type=int, default=5077, help="ratings: images (default 5077, PAMELA's)")
    parser.add_argument(
        "--ratings-per-user", type=int, default=322, help="ratings: training ratings per user"
    )
    parser.add_argument("--choice-users", type=int, default=200, help="choices: users (default 200)")
    parser.add_argument(
        "--prompts-per-user", type=int, default=25, help="choices: prompts per user (default 25)"
    )
    parser.add_argument("--draws", type=int, default=5, help="reference draws per new user (default 5)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every world and of the protocol")
    parser.add_argument("--jobs", default="auto", help="worker processes per leaderboard (default auto)")
    parser.add_argument(
        "--workspace", type=Path, default=None, help="default: $RECSYS_WORKSPACE, else ./runs"
    )
    parser.add_argument(
        "--params",
        default=None,
        help='JSON hyperparameters per model, as recsys leaderboard takes them, e.g. {"pref_tokens": {"hidden": 128}}: '
        "to judge a model's defaults on the family of worlds",
    )
    parser.add_argument(
        "--resume",
        type=Path,
        action="append",
        default=None,
        help="the JSON of an earlier run with the same seed, draws, sizes and models (repeat for several): its "
        "finished worlds are taken as they are (and printed again), the others are run",
    )
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # each world's table as soon as it is done, even into a file
    args.jobs = args.jobs if args.jobs == "auto" else int(args.jobs)
    try:
        args.params = parse_params(args.params, per_model=True)
        check_params(args.params)
    except UserError as err:
        parser.error(str(err))
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not kinds or any(k not in KINDS for k in kinds):
        parser.error(f"--kinds: choose from {', '.join(KINDS)}")
    try:  # unknown worlds or models, a --resume file of other settings: one line, exit 2
        worlds = get_worlds(args.worlds.split(",") if args.worlds else None)
        models = {
            "ratings": expand_models(args.rating_models.split(",")),
            "choices": expand_models(args.choice_models.split(",")),
        }
        done = resumed_worlds(args, models)
    except UserError as err:
        parser.error(str(err))
    start, cpu_start = time.perf_counter(), cpu_seconds()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    payload = {
        "simulated": True,
        "seed": args.seed,
        "draws": args.draws,
        "arguments": vars(args)
        | {"workspace": str(args.workspace), "resume": [str(p) for p in args.resume or []]},
    }
    out = resolve_workspace(args.workspace) / "worlds" / f"{stamp}-{'-'.join(kinds)}.json"
    for kind in kinds:
        results = []
        payload[kind] = {"models": models[kind], "worlds": results}
        for world in worlds:
            result = done.get((kind, world.name)) or run_world(world, kind, models[kind], args)
            results.append(result)
            print_world(result, models[kind])
            write_json(out, payload | {"complete": False})  # what is done so far survives an interruption
        payload[kind]["summary"] = print_summary(kind, results, models[kind])
    payload["seconds"] = round(time.perf_counter() - start, 1)
    payload["cpu_seconds"] = round(cpu_seconds() - cpu_start, 1)
    write_json(out, payload | {"complete": True})
    ran = [r for kind in kinds for r in payload[kind]["worlds"]]
    resumed = sum("resumed_from" in r for r in ran)
    own = sum(r["simulate_seconds"] + r["leaderboard_seconds"] for r in ran)
    print(
        f"\n{len(worlds)} world(s) x {len(kinds)} kind(s) in {payload['seconds']:.0f} s "
        f"({payload['cpu_seconds']:.0f} CPU s, worker processes included)"
        + (f"; {resumed} taken from --resume" if resumed else "")
        + f"; the worlds' simulations and leaderboards took {own:.0f} s when they ran; wrote {out}"
    )


if __name__ == "__main__":
    main()
