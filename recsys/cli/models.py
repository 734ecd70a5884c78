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


def model_catalogue() -> list[dict[str, str]]:
    """Per registered model: name, group, role, what it needs beyond ratings or choices, what it supports, why
    it cannot run on this machine (empty when it can) and the first line of its class's docstring. A model
    whose extra is missing is not imported: what it supports and its description are then unknown here."""
    from recsys.extras import MissingExtra
    from recsys.models.capabilities import model_supports
    from recsys.models.registry import (
        list_models,
        model_class,
        model_group,
        model_needs,
        model_role,
        unavailable_reason,
    )

    out = []
    for name in list_models():
        reason = unavailable_reason(name)  # a model of a missing extra is listed with the install command
        try:
            cls = model_class(name)
        except MissingExtra:
            cls = None
        out.append(
            {
                "model": name,
                "group": model_group(name),
                "role": model_role(name) or "",
                "needs": ", ".join(model_needs(name)) or "-",
                "unavailable": reason or "",
                "supports": "?" if cls is None else ", ".join(model_supports(name)),
                "about": (cls.__doc__ or "").strip().splitlines()[0]
                if cls is not None and cls.__doc__
                else "",
            }
        )
    return out


def cmd_models(args: argparse.Namespace) -> int:
    rows = model_catalogue()
    columns = ("model", "group", "role", "needs", "supports", "about")
    widths = {c: max(len(c), *(len(r[c]) for r in rows)) for c in columns[:-1]}
    print("  ".join(f"{c:<{widths[c]}}" for c in columns[:-1]) + "  about")
    for row in rows:
        print("  ".join(f"{row[c]:<{widths[c]}}" for c in columns[:-1]) + f"  {row['about']}")
    for row in rows:
        if row["unavailable"]:
            print(f"{row['model']} cannot run here: {row['unavailable']}")
    print(
        "\nneeds: beyond ratings or choices (a model whose need is missing gets a skipped or unsupported row); no "
        "model needs demographics: those with a prior for new users use them when present. supports: what it "
        "fits on (ratings, choices), whether it scores new users from references, whether it gives taste "
        "vectors (similar-users, atlas); ? when its extra is missing. role: ceiling (never best), consensus "
        "(the best-of-n reference)."
    )
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
