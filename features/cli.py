"""``recsys features ...``: embed a dataset's images (and prompts) with an image-text encoder.

    recsys features embed --data DIR --encoder clip:ViT-B-32/laion2b_s34b_b79k [--checkpoint PATH]
        [--out FILE.npz] [--batch-size N] [--device auto|cpu|cuda] [--text] [--skip-bad-images]
        [--cache-dir DIR] [--workers N]
    recsys features encoders

Errors a user can cause are ``recsys.errors.UserError``; ``recsys.cli.main`` prints them as one line, exit 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def _int_at_least(minimum: int, wording: str):
    """An argparse type for integers >= ``minimum``; ``wording`` names the expectation in the error."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {wording}, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "an integer >= 0")


def add_features_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``features`` command group (``embed``, ``encoders``) to ``recsys``'s subparsers."""
    features = subparsers.add_parser("features", help="embed images and prompts with an image-text encoder")
    sub = features.add_subparsers(dest="features_command", required=True)

    embed = sub.add_parser(
        "embed",
        help="write image (and prompt) embeddings of a dataset to an .npz features file",
        description="Embed every image of a dataset; results are cached per chunk, so a second run is "
        "served from the cache and an interrupted run resumes.",
    )
    embed.add_argument("--data", type=Path, default=None,
                       help="PAMELA directory or rating table (default: the simulated PAMELA)")  # fmt: skip
    embed.add_argument("--encoder", required=True,
                       help="clip:ARCH/TAG, e.g. clip:ViT-B-32/laion2b_s34b_b79k (TAG random: untrained)")  # fmt: skip
    embed.add_argument("--checkpoint", type=Path, default=None,
                       help="local open_clip state dict to load instead of fetching the tag's weights")  # fmt: skip
    embed.add_argument("--out", type=Path, default=None,
                       help="output .npz (default: DATA/features/ENCODER.npz); prompts go beside it as NAME.text.npz")  # fmt: skip
    embed.add_argument("--batch-size", type=_positive_int, default=64, help="images per forward pass")
    embed.add_argument("--device", default="auto", help="auto (GPU when there is one), cpu, cuda or cuda:N")
    embed.add_argument("--text", action="store_true", help="also embed the prompts")
    embed.add_argument("--skip-bad-images", action="store_true",
                       help="leave unreadable images out, listed beside the output as NAME.bad.json, instead of failing")  # fmt: skip
    embed.add_argument("--cache-dir", type=Path, default=None,
                       help="chunk cache (default: $RECSYS_HOME/embeddings or ~/.cache/recsys/embeddings)")  # fmt: skip
    embed.add_argument("--workers", type=_non_negative_int, default=None,
                       help="image decoding threads (default: min(8, CPUs); 0: decode in the main thread)")  # fmt: skip
    embed.add_argument("--no-progress", action="store_true", help="no progress bar")
    embed.set_defaults(func=cmd_features_embed)

    encoders = sub.add_parser("encoders", help="list the encoder names open_clip can fetch weights for")
    encoders.add_argument(
        "--random", action="store_true", help="also list clip:ARCH/random for every architecture"
    )
    encoders.set_defaults(func=cmd_features_encoders)
    return features


def cmd_features_embed(args: argparse.Namespace) -> int:
    """Handler of ``recsys features embed``: load the dataset, embed it, print where the files went."""
    import json

    import numpy as np

    from features.embed import bad_sidecar_path, embed_dataset, text_output_path
    from recsys.data import load_dataset

    ds = load_dataset(args.data)
    out = embed_dataset(ds, args.encoder, checkpoint=args.checkpoint, out=args.out, text=args.text,
                        batch_size=args.batch_size, device=args.device, num_workers=args.workers,
                        cache_dir=args.cache_dir, skip_bad_images=args.skip_bad_images,
                        progress=not args.no_progress)  # fmt: skip
    outputs = [out, text_output_path(out)] if args.text else [out]
    for path in outputs:
        with np.load(path, allow_pickle=False) as data:
            n, dim = data["embedding"].shape
        print(f"wrote {n} embeddings ({dim}-d, {args.encoder}) to {path}")
        sidecar = bad_sidecar_path(path)
        if sidecar.is_file():
            count = json.loads(sidecar.read_text())["count"]
            print(f"  {count} left out (unreadable image or no prompt), listed in {sidecar}")
    return 0


def cmd_features_encoders(args: argparse.Namespace) -> int:
    """Handler of ``recsys features encoders``: one encoder name per line."""
    from features.encoders import list_encoders

    for name in list_encoders(include_random=args.random):
        print(name)
    return 0
