"""``recsys data simulate``, ``recsys data validate`` and ``recsys data split``."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

from recsys.cli.common import (
    add_command,
    add_commands,
    add_data_arguments,
    add_table_arguments,
    dataset_from_args,
    prompt_features_arg,
    score_range,
)
from recsys.data.simulate import WORLD_KNOBS, SimulationConfig
from recsys.errors import UserError


def add_parsers(subparsers) -> None:
    """Add the ``data`` command group (``simulate``, ``validate``)."""
    data = add_command(subparsers, "data")
    sub = add_commands(data, "data_command", "recsys data")

    sim = add_command(sub, "simulate")
    sim.add_argument("--out", type=Path, required=True, help="directory to write the dataset to")
    for knob in fields(
        SimulationConfig
    ):  # an option per simulator setting, declared once in SimulationConfig
        if knob.name != "render_images":
            flag = "--" + knob.name.replace("_", "-")
            sim.add_argument(
                flag,
                type=type(knob.default),
                default=knob.default,
                choices=knob.metadata["choices"],
                help=knob.metadata["doc"],
            )
    sim.add_argument(
        "--no-images", action="store_true", help="skip rendering PNGs (with --pickapic: flat JPEGs)"
    )
    sim.add_argument(
        "--feature-dtype",
        choices=("float32", "float16"),
        default="float32",
        help="with --pickapic: the type of image_features.npz's embedding (float16 halves it; default float32)",
    )
    sim.add_argument(
        "--prompt-taste",
        type=float,
        default=None,
        help="with --pickapic: under prompts naming an art style, each person's own taste is multiplied by "
        "1 - 2 x this (0 to 1; default 0: taste does not depend on the prompt)",
    )
    sim.add_argument(
        "--pickapic",
        action="store_true",
        help="write simulated Pick-a-Pic v2 choices instead (data/<split>-*.parquet with JPEGs, "
        "image_features.npz); --seed, --users, --feature-dim and the world's settings (--noise-scale to "
        "--hidden-attributes) apply",
    )
    sim.set_defaults(func=cmd_simulate)

    val = add_command(sub, "validate")
    val.add_argument("path", type=Path, help="PAMELA directory or rating table (CSV/Parquet)")
    val.add_argument("--image-features", type=Path, default=None, help=".npz with image_id and embedding")
    val.add_argument(
        "--prompt-features",
        type=prompt_features_arg,
        default=None,
        help=".npz with image_id and embedding of each image's prompt, or none (default: X.text.npz beside "
        "--image-features X.npz)",
    )
    val.add_argument("--holdout", default=None, help="random:F or users:F for tables without a split column")
    add_table_arguments(val)
    val.add_argument(
        "--score-range", type=score_range, default=None, help="declared score range LOW,HIGH of a table"
    )
    val.add_argument("--seed", type=int, default=0, help="seed of the --holdout split")
    val.add_argument("--json", action="store_true", help="print the summary as JSON")
    val.set_defaults(func=cmd_validate)

    split = add_command(sub, "split")
    add_data_arguments(split)
    split.add_argument(
        "--out",
        type=Path,
        required=True,
        help="the split table to write, .csv or .parquet: user_id, item_id, score, split (on choices user_id, "
        "item_a, item_b, choice, split); put it beside users.csv and items.csv to keep them",
    )
    split.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    split.set_defaults(func=cmd_split)


def cmd_simulate(args: argparse.Namespace) -> int:
    from recsys.data.simulate import simulate

    if args.prompt_taste is not None and not args.pickapic:
        raise UserError("--prompt-taste applies to simulated choices (--pickapic) only")
    if args.pickapic:
        from recsys.data.simulate_pairs import PickapicSimulationConfig, simulate_pickapic

        config = PickapicSimulationConfig(
            seed=args.seed,
            users=args.users,
            feature_dim=args.feature_dim,
            detailed_images=not args.no_images,
            feature_dtype=args.feature_dtype,
            prompt_taste=args.prompt_taste or 0.0,
            **{name: getattr(args, name) for name in WORLD_KNOBS},
        )
        out = simulate_pickapic(args.out, config)
        print(
            f"simulated Pick-a-Pic v2 choices written to {out} (SIMULATED; features: {out / 'image_features.npz'})"
        )
        return 0
    settings = {f.name: getattr(args, f.name) for f in fields(SimulationConfig) if f.name != "render_images"}
    config = SimulationConfig(**settings, render_images=not args.no_images)
    out = simulate(args.out, config)
    report = json.loads((out / "simulation.json").read_text())["calibration"]
    rms = ", ".join(f"{k} {v['rms_difference']:.3f}" for k, v in report.items())
    print(
        f"simulated PAMELA-format data written to {out} (SIMULATED; calibration RMS vs published means: {rms})"
    )
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from recsys.data.validate import constant_scores

    problems: list[str] = []
    ds = dataset_from_args(args, args.path, problems=problems)
    if problems:
        for problem in problems:
            print(f"problem: {problem}", file=sys.stderr)
        print(f"{len(problems)} problem(s) found in {args.path}", file=sys.stderr)
        return 2
    for warning in constant_scores(ds):
        print(f"warning: {warning}", file=sys.stderr)
    summary = ds.summary()
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(
        f"{summary['name']}{'  [SIMULATED]' if ds.simulated else ''}: {summary['users']} users, "
        f"{summary['images']} images ({summary['train_users']} users and {summary['train_images']} images "
        "in train)"
    )
    if summary["splits"]:
        print(
            f"{'split':<12} {'ratings':>8} {'users':>6} {'images':>7} {'mean':>6} {'std':>6}  "
            "quantiles (0,25,50,75,100%)"
        )
    for split, s in summary["splits"].items():
        print(
            f"{split:<12} {s['ratings']:>8} {s['users']:>6} {s['images']:>7} {s['score_mean']:>6.3f} "
            f"{s['score_std']:>6.3f}  {s['score_quantiles']}"
        )
    if summary.get("pairs"):
        print(
            f"{'split':<12} {'choices':>8} {'users':>6} {'images':>7} {'chose a':>8} {'chose b':>8} {'ties':>6}"
        )
    for split, p in summary.get("pairs", {}).items():
        print(
            f"{split:<12} {p['pairs']:>8} {p['users']:>6} {p['images']:>7} {p['chose_a']:>8} {p['chose_b']:>8} "
            f"{p['ties']:>6}"
        )
    if summary["image_features"]:
        print(
            f"image features: {summary['image_features']['dim']}-d from {summary['image_features']['source']}"
        )
    if summary["prompt_features"]:
        prompts = summary["prompt_features"]
        print(f"prompt features: {prompts['dim']}-d from {prompts['source']}")
    print("no problems found")
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    """Write every rating (or choice) with the split it is in, so that other tools use the same split."""
    import io

    from features.cache import atomic_write_bytes

    out = args.out
    if out.suffix not in (".csv", ".parquet"):
        raise UserError(f"--out {out}: name a .csv or .parquet file")
    if out.is_dir():
        raise UserError(f"{out} is a folder; --out names the file to write")
    if out.exists() and not args.overwrite:
        raise UserError(f"{out} exists; pass --overwrite to replace it")
    ds = dataset_from_args(args)
    table = ds.split_table()
    if out.suffix == ".parquet":
        buffer = io.BytesIO()
        table.to_parquet(buffer, index=False)
        atomic_write_bytes(out, buffer.getvalue())
    else:
        atomic_write_bytes(out, table.to_csv(index=False).encode())
    print(f"{ds.name}: {ds.describe_splits()}")
    print(
        f"wrote {len(table):,} rows with their split to {out}; `recsys leaderboard --data {out}` uses this split"
    )
    return 0
