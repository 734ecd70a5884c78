"""``recsys atlas``: a self-contained HTML report of a model's taste groups (see ``recsys.atlas``)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from recsys.cli import common
from recsys.errors import UserError
from recsys.workspace import check_writable

#: the folder under the workspace that atlases go to by default
ATLASES = "atlases"


def add_parsers(subparsers) -> None:
    """Add the ``atlas`` command."""
    atlas = common.add_command(subparsers, "atlas")
    common.add_data_arguments(atlas)
    atlas.add_argument(
        "--model", required=True, help="a model with taste vectors (two_tower groups by its prototypes)"
    )
    atlas.add_argument(
        "--params", default=None, help='JSON hyperparameters of the model, e.g. {"epochs": 10}'
    )
    atlas.add_argument(
        "--groups",
        type=int,
        default=None,
        help="number of k-means groups of the user vectors, at least 2 (default 6; two_tower with prototypes "
        "groups users by their main prototype instead)",
    )
    atlas.add_argument(
        "--min-ratings",
        type=int,
        default=3,
        help="ratings by a group's members an image needs to be listed among the group's likes",
    )
    atlas.add_argument(
        "--out",
        type=Path,
        default=None,
        help="the HTML file to write (default: WORKSPACE/atlases/<UTC time>-<model>.html); an existing file "
        "is refused unless --overwrite",
    )
    atlas.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    common.add_fit_on_argument(atlas)
    common.add_workspace_argument(atlas)
    atlas.set_defaults(func=cmd_atlas)


def cmd_atlas(args: argparse.Namespace) -> int:
    from features.cache import atomic_write_text
    from recsys.atlas import build_atlas, check_taste_model, render_html
    from recsys.retrieval.similar import load_or_fit_model

    if args.groups is not None and args.groups < 2:
        raise UserError(f"--groups must be at least 2, got {args.groups}")
    if args.min_ratings < 1:
        raise UserError(f"--min-ratings must be at least 1, got {args.min_ratings}")
    if args.out is not None and args.out.is_dir():
        raise UserError(f"{args.out} is a folder; --out names the HTML file to write")
    if args.out is not None and args.out.exists() and not args.overwrite:
        raise UserError(f"{args.out} exists; pass --overwrite to replace it")
    params = common.parse_params(args.params)
    common.check_params({args.model: params})
    workspace = common.workspace_for_models(args)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = args.out or workspace / ATLASES / f"{stamp}-{args.model}.html"
    check_writable(out.parent)  # a read-only or full place fails now, not after the fit
    check_taste_model(args.model)  # before the data is read and the model fitted
    ds = common.fit_data(common.dataset_from_args(args), args.fit_on)
    model, _, _ = load_or_fit_model(args.model, ds, params=params, workspace=workspace, fit_on=args.fit_on)
    print(f"grouping {len(ds.train_users())} users and writing the atlas")
    atlas = build_atlas(model, ds, k=args.groups or 6, seed=args.seed, min_ratings=args.min_ratings)
    if args.groups is not None and atlas.groups.by_prototype:
        print(f"--groups {args.groups} is not used: {model.name}'s groups are its prototypes")
    atomic_write_text(out, render_html(atlas))
    sizes = ", ".join(str(int((atlas.groups.labels == g).sum())) for g in range(atlas.groups.n_groups))
    print(f"wrote the atlas of {atlas.groups.n_groups} groups ({sizes} users) to {out}")
    return 0
