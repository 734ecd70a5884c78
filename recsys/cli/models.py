"""``recsys models`` (the registered models) and ``recsys explain`` (a user's preference profile)."""

from __future__ import annotations

import argparse

from recsys.cli.common import add_command, add_data_arguments, add_workspace_argument, dataset_from_args
from recsys.errors import UserError


def add_parsers(subparsers) -> None:
    """Add the ``models`` and ``explain`` commands."""
    models = add_command(subparsers, "models")
    models.set_defaults(func=cmd_models)

    explain = add_command(subparsers, "explain")
    add_data_arguments(explain)
    explain.add_argument(
        "--user", required=True, help="user id (a training user; others use --shots references)"
    )
    explain.add_argument("--image", required=True, help="image id")
    explain.add_argument(
        "--shots", type=int, default=10, help="references drawn for a user absent from training"
    )
    explain.add_argument("--top", type=int, default=8, help="contributions to print")
    add_workspace_argument(explain)  # where --encoder writes the data's features
    explain.set_defaults(func=cmd_explain)


def cmd_models(args: argparse.Namespace) -> int:
    from recsys.models.registry import list_models, model_class

    for name in list_models():
        cls = model_class(name)
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        print(f"{name:<22} {doc}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    """Fit the profile model and print a user's profile and the top contributions to one image's score."""
    import numpy as np

    from recsys.data.dataset import References
    from recsys.models.profile import PreferenceProfile

    if args.top < 1:
        raise UserError(f"--top must be at least 1, got {args.top}")
    if args.shots < 0:
        raise UserError(f"--shots must be non-negative, got {args.shots}")
    dataset = dataset_from_args(args)
    user, image = dataset.user_index(args.user), dataset.image_index(args.image)
    model = PreferenceProfile().fit(dataset)
    if model.known_[user]:
        target, how = user, "training history"
    else:  # references drawn from the first split that has the user's ratings
        rated = [r for r in dataset.ratings.values() if (r.user_idx == user).any()]
        if rated:
            rows = np.random.default_rng(args.seed).permutation(np.flatnonzero(rated[0].user_idx == user))
            rows = rows[: args.shots]
            target = References(user, rated[0].image_idx[rows], rated[0].score[rows])
        else:
            target = References(user, np.zeros(0, np.int64), np.zeros(0, np.float32))
        how = f"{len(target)} reference ratings"
    out = model.explain(target, image)
    print(f"user {args.user} ({how}), image {args.image}: predicted score {out['score']:.3f}")
    print(f"  consensus {out['consensus']:+.3f}   user bias {out['bias']:+.3f}")
    print("  profile (largest affinities):")
    for name, value in sorted(out["profile"].items(), key=lambda kv: -abs(kv[1]))[: args.top]:
        print(f"    {name:32s} {value:+.3f}")
    print("  top contributions to this image:")
    for name, value in sorted(out["contributions"].items(), key=lambda kv: -abs(kv[1]))[: args.top]:
        print(f"    {name:32s} {value:+.3f}")
    return 0
