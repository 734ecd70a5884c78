"""``recsys models`` (the registered models), ``recsys train`` (fit one model and save it, data parallel under
torchrun) and ``recsys explain`` (a user's preference profile)."""

from __future__ import annotations

import argparse
from pathlib import Path

from recsys.cli.common import (
    add_command,
    add_data_arguments,
    add_workspace_argument,
    check_params,
    dataset_from_args,
    parse_params,
)
from recsys.errors import UserError


def add_parsers(subparsers) -> None:
    """Add the ``models``, ``train`` and ``explain`` commands."""
    models = add_command(subparsers, "models")
    models.set_defaults(func=cmd_models)

    train = add_command(subparsers, "train")
    add_data_arguments(train)
    train.add_argument("--model", required=True, help="a registered model (`recsys models` lists them)")
    train.add_argument(
        "--params", default=None, help='JSON hyperparameters of the model, e.g. {"epochs": 20}'
    )
    train.add_argument(
        "--out",
        type=Path,
        default=None,
        help="folder of the saved model (refused when it is not empty, unless --overwrite); default: "
        "WORKSPACE/models/MODEL-KEY, the folder similar-users, rank and serve reload it from",
    )
    train.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    add_workspace_argument(train)
    train.set_defaults(func=cmd_train)

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


def cmd_train(args: argparse.Namespace) -> int:
    """Fit one model on the data's training split and save it. Under torchrun the torch models train data
    parallel (``recsys.models.torch_utils.train_loop``) and rank 0 saves; other models refuse to run there."""
    import time

    from recsys.distributed import is_main, launched, process_group, rank_and_world, rank_zero_first, together
    from recsys.models.registry import create_model
    from recsys.retrieval.similar import fitted_model_dir
    from recsys.workspace import check_target, resolve_workspace

    params = parse_params(args.params)
    check_params({args.model: params})  # an unknown model or parameter fails before any data is read
    if args.out is not None:
        check_target(args.out, args.overwrite)
    model = create_model(args.model, **params)
    if launched() and not _trains_data_parallel(model):
        raise UserError(
            f"{args.model} does not train across processes (the torch models two_tower, pref_tokens, pal and "
            "pal_a do); run `recsys train` without torchrun"
        )
    with process_group("recsys train"):
        if args.data is None:  # the simulated default is written once, by rank 0, then read by every rank
            from recsys.data import ensure_default_dataset

            rank_zero_first(ensure_default_dataset, "simulating the default data")
        # on every rank at once: with --encoder the ranks share the embedding out (features.embed)
        dataset = dataset_from_args(args)
        out = args.out or fitted_model_dir(
            resolve_workspace(args.workspace), args.model, model.get_params(), dataset
        )
        start = time.perf_counter()
        # not inside `together`: a process failing amid the gradients' collectives ends, and torchrun stops the rest
        model.fit(dataset)
        seconds = time.perf_counter() - start
        with together(f"saving {args.model}"):
            if is_main():
                model.save(out)
        if is_main():
            world = rank_and_world()[1]
            how = f"{world} processes" if world > 1 else "1 process"
            print(f"fitted {args.model} on {dataset.name} in {seconds:.1f} s ({how}); saved to {out}")
    return 0


def _trains_data_parallel(model) -> bool:
    """Whether the model trains through ``torch_utils.train_loop`` (its hyperparameters are ``TrainParams``)."""
    from recsys.models.torch_utils import TrainParams

    return issubclass(type(model).Params, TrainParams)


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
