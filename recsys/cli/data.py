"""``recsys data simulate`` and ``recsys data validate``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from recsys.cli.common import add_command, add_commands, dataset_from_args, score_range


def add_parsers(subparsers) -> None:
    """Add the ``data`` command group (``simulate``, ``validate``)."""
    data = add_command(
        subparsers,
        "data",
        help="simulate or validate datasets",
        example="recsys data simulate --out data/sim\nrecsys data validate data/sim",
    )
    sub = add_commands(data, "data_command", "recsys data")

    sim = add_command(
        sub,
        "simulate",
        help="write simulated PAMELA-format data with a known ground truth",
        example="recsys data simulate --out data/sim --users 50 --images 500 --no-images",
    )
    sim.add_argument("--out", type=Path, required=True, help="directory to write the dataset to")
    sim.add_argument("--seed", type=int, default=0, help="seed of the simulated world and its ratings")
    sim.add_argument("--users", type=int, default=199, help="number of users")
    sim.add_argument("--images", type=int, default=5077, help="number of images")
    sim.add_argument("--ratings-per-user", type=int, default=322, help="training ratings per training user")
    sim.add_argument("--feature-dim", type=int, default=512, help="dimension of the image features")
    sim.add_argument("--image-size", type=int, default=96, help="side of the rendered PNGs in pixels")
    sim.add_argument("--no-images", action="store_true", help="skip rendering PNGs")
    sim.set_defaults(func=cmd_simulate)

    val = add_command(
        sub,
        "validate",
        help="check a dataset and print a summary or its problems",
        example="recsys data validate /data/PAMELA --json",
    )
    val.add_argument("path", type=Path, help="PAMELA directory or rating table (CSV/Parquet)")
    val.add_argument("--image-features", type=Path, default=None, help=".npz with image_id and embedding")
    val.add_argument("--holdout", default=None, help="random:F or users:F for tables without a split column")
    val.add_argument(
        "--score-range", type=score_range, default=None, help="declared score range LOW,HIGH of a table"
    )
    val.add_argument("--seed", type=int, default=0, help="seed of the --holdout split")
    val.add_argument("--json", action="store_true", help="print the summary as JSON")
    val.set_defaults(func=cmd_validate)


def cmd_simulate(args: argparse.Namespace) -> int:
    from recsys.data.simulate import SimulationConfig, simulate

    config = SimulationConfig(
        seed=args.seed,
        users=args.users,
        images=args.images,
        ratings_per_user=args.ratings_per_user,
        feature_dim=args.feature_dim,
        image_size=args.image_size,
        render_images=not args.no_images,
    )
    out = simulate(args.out, config)
    report = json.loads((out / "simulation.json").read_text())["calibration"]
    rms = ", ".join(f"{k} {v['rms_difference']:.3f}" for k, v in report.items())
    print(
        f"simulated PAMELA-format data written to {out} (SIMULATED; calibration RMS vs published means: {rms})"
    )
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    problems: list[str] = []
    ds = dataset_from_args(args, args.path, problems=problems)
    if problems:
        for problem in problems:
            print(f"problem: {problem}", file=sys.stderr)
        print(f"{len(problems)} problem(s) found in {args.path}", file=sys.stderr)
        return 2
    summary = ds.summary()
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(
        f"{summary['name']}{'  [SIMULATED]' if ds.simulated else ''}: {summary['users']} users, "
        f"{summary['images']} images ({summary['train_users']} users and {summary['train_images']} images "
        "in train)"
    )
    print(
        f"{'split':<12} {'ratings':>8} {'users':>6} {'images':>7} {'mean':>6} {'std':>6}  quantiles (0,25,50,75,100%)"
    )
    for split, s in summary["splits"].items():
        print(
            f"{split:<12} {s['ratings']:>8} {s['users']:>6} {s['images']:>7} {s['score_mean']:>6.3f} "
            f"{s['score_std']:>6.3f}  {s['score_quantiles']}"
        )
    if summary["image_features"]:
        print(
            f"image features: {summary['image_features']['dim']}-d from {summary['image_features']['source']}"
        )
    print("no problems found")
    return 0
