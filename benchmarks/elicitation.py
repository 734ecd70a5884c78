"""Which images should a new person rate first? Each elicitation strategy against random references, on the
same queries: the k-curve of user SROCC on test_unseen (k = 1..20 by default), per model.

    python benchmarks/elicitation.py [--data DIR] [--models mf,profile,two_tower] [--pool 40] [--draws 5]

Each new user's queries are fixed first, exactly as for random references (all but the first ``--pool`` of
their ratings in each seeded draw); every strategy, random included, picks its references from that pool
(``recsys.evaluation.elicitation``). For each strategy the script prints user SROCC at some k, its mean over
k = 1..20, the gain over random (mean over k), and a Wilcoxon signed-rank p-value over users of each user's
gain averaged over k (per-user values are averaged over the draws first), raw and Holm-corrected over the
strategies of the model. It writes curve.csv, elicitation.json
and elicitation.png (one panel per model) into a new folder ``WORKSPACE/elicitation/<UTC time>-<id>/`` (or
``--out``). Without ``--data`` it runs on the default simulated dataset: its numbers are SIMULATED.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data import load_dataset
from recsys.errors import UserError
from recsys.evaluation.elicitation import ELICITATION_SHOTS, STRATEGIES
from recsys.evaluation.evaluator import Evaluator
from recsys.evaluation.stats import holm, wilcoxon_p
from recsys.models.registry import create_model
from recsys.report.charts import png_metadata, pyplot
from recsys.workspace import resolve_workspace, write_atomically

METRIC = "user_srocc"
PRINTED_SHOTS = (1, 2, 3, 5, 10, 15, 20)


def run(dataset, models, strategies, shots, pool, draws, seed, split="test_unseen"):
    """Rows of the curve (model, strategy, k, value, interval, users, queries) and per-user values."""
    rows, per_user, fits = [], {}, {}
    for name in models:
        start = time.perf_counter()
        model = create_model(name).fit(dataset)
        fits[name] = time.perf_counter() - start
        for strategy in strategies:
            evaluator = Evaluator(
                dataset, shots=shots, seed=seed, draws=draws, references=strategy, reference_pool=pool
            )
            start = time.perf_counter()
            for k in shots:
                result = evaluator.evaluate(model, split, k)
                row = {"model": name, "strategy": strategy, "shots": k, "status": result.status}
                if result.metrics is not None:
                    lo, hi = result.ci95[METRIC]
                    row |= {"value": result.metrics[METRIC], "lo": lo, "hi": hi}
                    row |= {"n_users": result.metric_users[METRIC], "n_queries": result.n_ratings}
                    per_user[(name, strategy, k)] = result.per_user[METRIC]
                else:
                    row["reason"] = result.reason
                rows.append(row)
            print(f"{name:<10} {strategy:<13} {time.perf_counter() - start:6.1f} s", flush=True)
    return pd.DataFrame(rows), per_user, fits


def gains(per_user, model, strategy, shots) -> tuple[float, float, int]:
    """Mean over users of each user's gain over random averaged over k, its Wilcoxon p-value
    (``recsys.evaluation.stats.wilcoxon_p``: NaN with fewer than 5 users or no difference), and the users."""
    keys = [(model, strategy, k) for k in shots] + [(model, "random", k) for k in shots]
    if not all(key in per_user for key in keys):
        return float("nan"), float("nan"), 0
    users = set.intersection(*(set(per_user[key]) for key in keys))
    diff = np.array(
        [
            np.mean([per_user[(model, strategy, k)][u] - per_user[(model, "random", k)][u] for k in shots])
            for u in users
        ]
    )
    return float(diff.mean()) if len(diff) else float("nan"), wilcoxon_p(diff), len(diff)


def summary(table: pd.DataFrame, per_user, shots) -> list[dict]:
    out = []
    for (model, strategy), part in table.groupby(["model", "strategy"], sort=False):
        if (part["status"] != "ok").any():
            out.append(
                {
                    "model": model,
                    "strategy": strategy,
                    "status": "unsupported",
                    "reason": part["reason"].iloc[0],
                }
            )
            continue
        curve = part.set_index("shots")["value"]
        gain, p, users = gains(per_user, model, strategy, shots) if strategy != "random" else (0.0, np.nan, 0)
        out.append(
            {
                "model": model,
                "strategy": strategy,
                "status": "ok",
                "curve": {int(k): float(v) for k, v in curve.items()},
                "mean": float(curve.mean()),
                "gain_over_random": gain,
                "wilcoxon_p": p,
                "paired_users": users,
            }
        )
    for model in dict.fromkeys(row["model"] for row in out):  # Holm over each model's strategies
        tested = [r for r in out if r["model"] == model and r["status"] == "ok" and r["strategy"] != "random"]
        for row, adjusted in zip(tested, holm([r["wilcoxon_p"] for r in tested]), strict=True):
            row["wilcoxon_p_holm"] = float(adjusted)
    return out


def print_summary(rows: list[dict], shots) -> None:
    printed = [k for k in PRINTED_SHOTS if k in shots]
    head = f"{'model':<10} {'strategy':<13}" + "".join(f"{'k=' + str(k):>7}" for k in printed)
    print(f"\n{METRIC} on test_unseen\n" + head + f"{'mean':>8}{'gain':>8}{'p':>10}{'p Holm':>10}")
    for row in rows:
        if row["status"] != "ok":
            print(f"{row['model']:<10} {row['strategy']:<13} unsupported: {row['reason']}")
            continue
        cells = "".join(f"{row['curve'][k]:7.3f}" for k in printed)
        tail = (
            ""
            if row["strategy"] == "random"
            else f"{row['gain_over_random']:+8.3f}{row['wilcoxon_p']:10.2g}{row['wilcoxon_p_holm']:10.2g}"
        )
        print(f"{row['model']:<10} {row['strategy']:<13}{cells}{row['mean']:8.3f}{tail}")


def plot(table: pd.DataFrame, title: str, path: Path, run_id: str) -> None:
    plt = pyplot()
    models = list(dict.fromkeys(table["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(5.2 * len(models), 4.4), squeeze=False, sharey=True)
    colours = dict(zip(STRATEGIES, ("#444444", "tab:blue", "tab:orange", "tab:green"), strict=True))
    for ax, model in zip(axes[0], models, strict=True):
        for strategy, line in table[(table["model"] == model) & (table["status"] == "ok")].groupby(
            "strategy", sort=False
        ):
            line = line.sort_values("shots")
            style = ":" if strategy == "random" else "-"
            ax.plot(
                line["shots"],
                line["value"],
                style,
                color=colours[strategy],
                marker="o",
                markersize=3,
                label=strategy,
            )
            ax.fill_between(
                line["shots"], line["lo"], line["hi"], color=colours[strategy], alpha=0.07, linewidth=0
            )
        ax.set_title(model, fontsize=10)
        ax.set_xlabel("k (references asked)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"{METRIC} on the same queries (95% over users)")
    axes[0][0].legend(fontsize=8, frameon=False, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=70, metadata=png_metadata(run_id))
    plt.close(fig)


def _finite(value):
    """JSON has no NaN: a p-value that could not be computed is null."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return None if isinstance(value, float) and np.isnan(value) else value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="dataset (default: the simulated default, SIMULATED)")
    parser.add_argument("--models", default="mf,profile,two_tower")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument(
        "--shots", default=f"{ELICITATION_SHOTS[0]}-{ELICITATION_SHOTS[-1]}", help="FIRST-LAST"
    )
    parser.add_argument("--pool", type=int, default=40, help="ratings per new user kept out of the queries")
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workspace", default=None)
    parser.add_argument("--out", type=Path, default=None, help="folder to write (default: a new run folder)")
    args = parser.parse_args(argv)
    first, last = (int(v) for v in args.shots.split("-"))
    shots = tuple(range(first, last + 1))
    strategies = ["random"] + [s for s in args.strategies.split(",") if s != "random"]
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        raise UserError(f"unknown strategy {unknown[0]!r}; known: {', '.join(STRATEGIES)}")
    dataset = load_dataset(args.data)
    label = dataset.name + (", SIMULATED data" if dataset.simulated else "")
    run_id = uuid.uuid4().hex[:12]
    start = time.perf_counter()
    table, per_user, fits = run(
        dataset, args.models.split(","), strategies, shots, args.pool, args.draws, args.seed
    )
    rows = summary(table, per_user, shots)
    print_summary(rows, shots)
    print(
        f"\n{label}; pool {args.pool}, {args.draws} draws, seed {args.seed}; {time.perf_counter() - start:.0f} s"
    )
    title = f"Elicitation on {label}: each strategy against random on the same queries; run {run_id}"
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = args.out or resolve_workspace(args.workspace) / "elicitation" / f"{stamp}-{run_id}"

    def write(folder: Path) -> None:
        table.assign(run_id=run_id, dataset=dataset.name, simulated=dataset.simulated).to_csv(
            folder / "curve.csv", index=False
        )
        record = {"run_id": run_id, "dataset": dataset.name, "simulated": dataset.simulated, "pool": args.pool,
                  "draws": args.draws, "seed": args.seed, "metric": METRIC, "fit_seconds": fits, "rows": rows}  # fmt: skip
        (folder / "elicitation.json").write_text(
            json.dumps(_finite(record), indent=2, allow_nan=False) + "\n"
        )
        plot(table, title, folder / "elicitation.png", run_id)

    write_atomically(target, write)
    print(f"wrote {target}: curve.csv, elicitation.json, elicitation.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
