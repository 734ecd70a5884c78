"""``recsys features embed`` and ``recsys features encoders``: image-text encoder embeddings.

Nothing here imports torch until a command runs: ``recsys --help`` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from recsys.cli.common import (
    add_command,
    add_commands,
    add_workspace_argument,
    non_negative_int,
    positive_float,
    positive_int,
)

#: features.embed.DEFAULT_CHUNK_SIZE, without importing torch for `recsys --help`
DEFAULT_CHUNK_SIZE = 1024


def add_parsers(subparsers) -> None:
    """Add the ``features`` command group (``embed``, ``encoders``)."""
    features = add_command(subparsers, "features")
    sub = add_commands(features, "features_command", "recsys features")

    embed = add_command(sub, "embed")
    embed.add_argument(
        "--data",
        type=Path,
        default=None,
        help="PAMELA directory or rating table; default: the simulated PAMELA",
    )
    embed.add_argument(
        "--encoder",
        required=True,
        help="clip:ARCH/TAG, e.g. clip:ViT-B-32/laion2b_s34b_b79k (TAG random: untrained; with --checkpoint "
        "clip:ARCH will do)",
    )
    embed.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="local open_clip state dict to load instead of fetching the tag's weights",
    )
    embed.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output .npz, prompts beside it as NAME.text.npz; default: WORKSPACE/features/DATA-DIGEST/ENCODER.npz",
    )
    add_workspace_argument(embed)
    embed.add_argument("--batch-size", type=positive_int, default=64, help="images per forward pass")
    embed.add_argument(
        "--chunk-size",
        type=positive_int,
        default=DEFAULT_CHUNK_SIZE,
        help="images per cache file: an interrupted run resumes from its last whole chunk (a run with another "
        "size recomputes)",
    )
    embed.add_argument(
        "--device",
        default="auto",
        help="auto (GPU when there is one), cpu, cuda or cuda:N; under torchrun auto and cuda are each "
        "process's own GPU, cuda:LOCAL_RANK",
    )
    embed.add_argument("--text", action="store_true", help="also embed the prompts")
    embed.add_argument(
        "--skip-bad-images",
        action="store_true",
        help="leave unreadable images out, listed beside the output as NAME.bad.json, instead of failing",
    )
    embed.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="chunk cache; default: $RECSYS_HOME/embeddings or ~/.cache/recsys/embeddings",
    )
    embed.add_argument(
        "--cache-max-gb",
        type=positive_float,
        default=None,
        help="size bound of the cache in gigabytes: the least recently used chunks are deleted beyond it "
        "(default: $RECSYS_CACHE_MAX_GB, else 10)",
    )
    embed.add_argument(
        "--workers",
        type=non_negative_int,
        default=None,
        help="image decoding threads (0: decode in the main thread); default: min(8, CPUs)",
    )
    embed.add_argument("--no-progress", action="store_true", help="no progress bar")
    embed.set_defaults(func=cmd_features_embed)

    encoders = add_command(sub, "encoders")
    encoders.add_argument(
        "--random", action="store_true", help="also list clip:ARCH/random for every architecture"
    )
    encoders.set_defaults(func=cmd_features_encoders)


def cmd_features_embed(args: argparse.Namespace) -> int:
    """Load the dataset, embed it, print where the files went. Under torchrun every rank embeds its share of
    the chunks into the cache and rank 0 writes the files and prints (``features.embed.embed_dataset``)."""
    from recsys.distributed import is_main, process_group
    from recsys.extras import require

    require("deep", "recsys features embed")
    with process_group("recsys features embed"):
        out = _embed(args)
        if is_main():
            _print_outputs(args, out)
    return 0


def _embed(args: argparse.Namespace) -> Path:
    from features.embed import BadImagesError, embed_dataset
    from recsys.data import load_dataset
    from recsys.distributed import rank_zero_first

    if args.data is None:  # the simulated default is written once, by rank 0, then read by every rank
        from recsys.data import ensure_default_dataset

        rank_zero_first(ensure_default_dataset, "simulating the default data")
    ds = load_dataset(args.data)
    # the options named as embed_dataset's keywords pass through as they are
    same = ("checkpoint", "out", "text", "batch_size", "chunk_size", "device", "cache_dir", "cache_max_gb")
    same += ("skip_bad_images",)
    settings = {name: getattr(args, name) for name in same} | {"workspace": args.workspace}
    try:
        return embed_dataset(
            ds, args.encoder, num_workers=args.workers, progress=not args.no_progress, **settings
        )
    except BadImagesError as err:
        raise err.remedy(
            "fix or remove them, or pass --skip-bad-images to leave them out (listed in X.bad.json)"
        ) from None


def _print_outputs(args: argparse.Namespace, out: Path) -> None:
    import numpy as np

    from features.embed import bad_sidecar_path, text_output_path
    from recsys.files import read_json

    outputs = [out, text_output_path(out)] if args.text else [out]
    for path in outputs:
        with np.load(path, allow_pickle=False) as data:
            n, dim = data["embedding"].shape
        print(f"wrote {n} embeddings ({dim}-d, {args.encoder}) to {path}")
        sidecar = bad_sidecar_path(path)
        if sidecar.is_file():
            count = read_json(sidecar, "a list of left-out images")["count"]
            print(f"  {count} left out (unreadable image or no prompt), listed in {sidecar}")


def cmd_features_encoders(args: argparse.Namespace) -> int:
    """One encoder name per line."""
    from recsys.extras import require

    require("deep", "recsys features encoders")
    from features.encoders import list_encoders

    for name in list_encoders(include_random=args.random):
        print(name)
    return 0
