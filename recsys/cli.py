"""The ``recsys`` command: data, features, models, leaderboard.

Errors a user can cause print one line (``error: ...``) and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from recsys.errors import UserError


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected non-negative integers, got {text!r}")
    return values


def _name_list(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError("expected a comma-separated list of names")
    return values


def _score_range(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH, got {text!r}") from None
    if not lo < hi:
        raise argparse.ArgumentTypeError(f"LOW must be below HIGH, got {text!r}")
    return lo, hi


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """--data, --image-features, --holdout, --score-range, --seed: how every command finds its dataset."""
    parser.add_argument("--data", type=Path, default=None,
                        help="PAMELA directory or rating table (CSV/Parquet); default: the simulated PAMELA (cached)")  # fmt: skip
    parser.add_argument("--image-features", type=Path, default=None, help=".npz with image_id and embedding")
    parser.add_argument("--encoder", default=None,
                        help="embed images with this encoder (e.g. clip:ViT-B-32/laion2b_s34b_b79k) before fitting")  # fmt: skip
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="local open_clip state dict for --encoder"
    )
    parser.add_argument(
        "--holdout", default=None, help="random:F or users:F for tables without a split column"
    )
    parser.add_argument(
        "--score-range", type=_score_range, default=None, help="declared score range LOW,HIGH of a table"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of holdouts, reference draws and bootstrap")


def dataset_from_args(args: argparse.Namespace):
    """The dataset named by ``add_data_arguments`` flags, embedded through the cache when --encoder is given."""
    from recsys.data import load_dataset

    if args.encoder and args.image_features:
        raise UserError("pass either --image-features or --encoder, not both")
    ds = load_dataset(args.data, image_features=args.image_features, holdout=args.holdout, seed=args.seed,
                      score_range=args.score_range)  # fmt: skip
    if args.encoder:
        from features.embed import embed_dataset_features

        ds = embed_dataset_features(ds, args.encoder, checkpoint=args.checkpoint)
    return ds


# ---------------------------------------------------------------------- commands
def cmd_simulate(args: argparse.Namespace) -> int:
    from recsys.data.simulate import SimulationConfig, simulate

    config = SimulationConfig(seed=args.seed, users=args.users, images=args.images,
                              ratings_per_user=args.ratings_per_user, feature_dim=args.feature_dim,
                              image_size=args.image_size, render_images=not args.no_images)  # fmt: skip
    out = simulate(args.out, config)
    report = json.loads((out / "simulation.json").read_text())["calibration"]
    rms = ", ".join(f"{k} {v['rms_difference']:.3f}" for k, v in report.items())
    print(
        f"simulated PAMELA-format data written to {out} (SIMULATED; calibration RMS vs published means: {rms})"
    )
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from recsys.data import load_dataset

    problems: list[str] = []
    ds = load_dataset(args.path, image_features=args.image_features, holdout=args.holdout, seed=args.seed,
                      score_range=args.score_range, problems=problems)  # fmt: skip
    if problems:
        for problem in problems:
            print(f"problem: {problem}", file=sys.stderr)
        print(f"{len(problems)} problem(s) found in {args.path}", file=sys.stderr)
        return 2
    summary = ds.summary()
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{summary['name']}{'  [SIMULATED]' if ds.simulated else ''}: {summary['users']} users, "
          f"{summary['images']} images ({summary['train_users']} users and {summary['train_images']} images in train)")  # fmt: skip
    print(
        f"{'split':<12} {'ratings':>8} {'users':>6} {'images':>7} {'mean':>6} {'std':>6}  quantiles (0,25,50,75,100%)"
    )
    for split, s in summary["splits"].items():
        print(f"{split:<12} {s['ratings']:>8} {s['users']:>6} {s['images']:>7} {s['score_mean']:>6.3f} "
              f"{s['score_std']:>6.3f}  {s['score_quantiles']}")  # fmt: skip
    if summary["image_features"]:
        print(
            f"image features: {summary['image_features']['dim']}-d from {summary['image_features']['source']}"
        )
    print("no problems found")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from recsys.models.registry import list_models, model_class

    for name in list_models():
        cls = model_class(name)
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        print(f"{name:<22} {doc}")
    return 0


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from recsys.leaderboard import default_models, run_leaderboard
    from recsys.models.registry import expand_models
    from recsys.report import format_table, write_leaderboard

    ds = dataset_from_args(args)
    params = json.loads(args.params) if args.params else {}
    if not isinstance(params, dict):
        raise UserError('--params must be a JSON object: {"model": {"param": value}}')
    models, fit_split = expand_models(args.models) if args.models else default_models(ds), "train"
    if args.tuned:
        from experiments.tuning import tuned_params

        tuned = tuned_params(
            [m for m in models if m != "oracle"], storage=args.storage, study_prefix=args.study_prefix
        )
        params = {name: tuned.get(name, {}) | params.get(name, {}) for name in models}
        fit_split = "+".join(
            s for s in ("train", "val_seen") if s in ds.ratings
        )  # refit with validation ratings
    board = run_leaderboard(
        ds, models, splits=args.splits, shots=args.shots, seed=args.seed, params=params, fit_split=fit_split
    )
    paths = write_leaderboard(board, args.out)
    from experiments.reported import reported_table_markdown

    paths["md"].write_text(paths["md"].read_text() + "\n" + reported_table_markdown())
    print(format_table(board))
    print(f"\nwrote {', '.join(str(p) for p in paths.values())}")
    if not args.no_tracking:
        from experiments.tracking import log_leaderboard, resolve_tracking_uri

        run_id = log_leaderboard(board, paths, tracking_uri=args.tracking_uri)
        print(
            f"tracked as MLflow run {run_id} in {resolve_tracking_uri(args.tracking_uri)} (open with `mlflow ui`)"
        )
    return 0


def _print_neighbours(neighbours: list[dict], as_json: bool, key: str) -> None:
    if as_json:
        print(json.dumps(neighbours, indent=2))
        return
    for rank, n in enumerate(neighbours, 1):
        extra = "  ".join(
            f"{k}: {', '.join(v) if isinstance(v, list) else v}"
            for k, v in n.items()
            if k not in (key, "score") and v not in (None, [])
        )
        print(f"{rank:>3}. {n[key]:<14} {n['score']:.3f}  {extra}")


def cmd_similar_users(args: argparse.Namespace) -> int:
    from recsys.retrieval.similar import load_or_fit

    ds = dataset_from_args(args)
    params = json.loads(args.params) if args.params else {}
    _, similar = load_or_fit(args.model, ds, params=params, workspace=args.workspace, progress=not args.json)
    _print_neighbours(similar.by_user(args.user, args.k), args.json, "user_id")
    return 0


def cmd_similar_images(args: argparse.Namespace) -> int:
    from recsys.retrieval.similar import SimilarImages

    ds = dataset_from_args(args)
    _print_neighbours(SimilarImages(ds).by_image(args.image, args.k), args.json, "image_id")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from recsys.retrieval.service import create_app
    from recsys.retrieval.similar import load_or_fit

    ds = dataset_from_args(args)
    params = json.loads(args.params) if args.params else {}
    model, similar = load_or_fit(args.model, ds, params=params, workspace=args.workspace)
    uvicorn.run(create_app(model, ds, similar), host=args.host, port=args.port, log_level="info")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recsys", description="Personalised image-rating prediction and similar-user search."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="simulate or validate datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    sim = data_sub.add_parser("simulate", help="write simulated PAMELA-format data with a known ground truth")
    sim.add_argument("--out", type=Path, required=True)
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--users", type=int, default=199)
    sim.add_argument("--images", type=int, default=5077)
    sim.add_argument("--ratings-per-user", type=int, default=322, help="training ratings per training user")
    sim.add_argument("--feature-dim", type=int, default=512)
    sim.add_argument("--image-size", type=int, default=96)
    sim.add_argument("--no-images", action="store_true", help="skip rendering PNGs")
    sim.set_defaults(func=cmd_simulate)
    val = data_sub.add_parser("validate", help="check a dataset and print a summary or its problems")
    val.add_argument("path", type=Path)
    val.add_argument("--image-features", type=Path, default=None)
    val.add_argument("--holdout", default=None)
    val.add_argument("--score-range", type=_score_range, default=None)
    val.add_argument("--seed", type=int, default=0)
    val.add_argument("--json", action="store_true")
    val.set_defaults(func=cmd_validate)

    models = sub.add_parser("models", help="list registered models")
    models.set_defaults(func=cmd_models)

    board = sub.add_parser("leaderboard", help="fit models and evaluate them under one protocol")
    add_data_arguments(board)
    board.add_argument(
        "--models",
        type=_name_list,
        default=None,
        help="comma-separated models or groups (baselines, classical, deep, ablations, all); default all",
    )
    board.add_argument(
        "--shots", type=_int_list, default=[0, 10], help="reference ratings per new user (default 0,10)"
    )
    board.add_argument("--splits", type=_name_list, default=["test_seen", "test_unseen"])
    board.add_argument(
        "--params", default=None, help='JSON hyperparameters per model, e.g. {"ridge": {"alpha": 10}}'
    )
    board.add_argument("--out", type=Path, default=Path("leaderboard"))
    board.add_argument(
        "--tuned", action="store_true", help="use each model's best study parameters; refit on train+val_seen"
    )
    board.add_argument(
        "--storage", default=None, help="Optuna storage of the studies (default sqlite:///runs/optuna.db)"
    )
    board.add_argument("--study-prefix", default="recsys", help="studies are named PREFIX-MODEL")
    board.add_argument(
        "--tracking-uri", default=None, help="MLflow tracking URI (default sqlite:///runs/mlflow.db)"
    )
    board.add_argument("--no-tracking", action="store_true", help="do not log the leaderboard to MLflow")
    board.set_defaults(func=cmd_leaderboard)

    for command, func, help_text in (
        ("similar-users", cmd_similar_users, "the users with the most similar taste to a user"),
        ("similar-images", cmd_similar_images, "the images most similar to an image (by features)"),
        ("serve", cmd_serve, "HTTP service: similar users and scores (FastAPI)"),
    ):
        p = sub.add_parser(command, help=help_text)
        add_data_arguments(p)
        if command == "similar-images":
            p.add_argument("--image", required=True, help="external image id")
        else:
            p.add_argument(
                "--model", default="user_ridge", help="a model with taste vectors (default user_ridge)"
            )
            p.add_argument("--params", default=None, help="JSON hyperparameters of the model")
            p.add_argument(
                "--workspace",
                type=Path,
                default=Path("runs"),
                help="where fitted models and indexes are kept",
            )
        if command == "serve":
            p.add_argument("--host", default="127.0.0.1")
            p.add_argument("--port", type=int, default=8000)
        else:
            if command == "similar-users":
                p.add_argument("--user", required=True, help="external user id")
            p.add_argument("--k", type=int, default=10)
            p.add_argument("--json", action="store_true", help="print JSON, most similar first")
        p.set_defaults(func=func)

    from experiments.cli import add_experiment_parsers
    from recsys.models.profile import add_explain_parser

    add_experiment_parsers(sub)
    add_explain_parser(sub)

    try:
        from features.cli import add_features_parser
    except ImportError:  # the features package is optional at import time
        add_features_parser = None
    if add_features_parser is not None:
        add_features_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
