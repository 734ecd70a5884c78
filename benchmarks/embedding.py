"""Throughput of the embedding pipeline against a bare open_clip forward pass, and the cached re-run time.

    python benchmarks/embedding.py [--encoder clip:ViT-B-32/random] [--images 256] [--device auto] [--json]

- bare forward: open_clip's ``encode_image`` on the same batches, images decoded and preprocessed beforehand
  (untimed): the model's own speed.
- pipeline: ``features.embed.embed_images`` from files (decoding threads, batching, normalising, no cache).
  Overhead % = pipeline time / bare time - 1; target under 10%. On a CPU, decoding competes with the model
  for the same cores, so the overhead there is at least the decode time over the model time; the
  decode-only figure shows that share.
- decode + forward in series: what a CPU run cannot beat (decoding and the model share the cores); the
  pipeline's own cost (threads, batching, normalising, writing) is its time beyond that.
- cached re-run: a second ``embed_images`` call over the same files after a cold run filled the cache; the
  target is well under 1 s per 1,000 images.

Without ``--data`` it writes its own PNGs (smooth random pictures, ``--image-size`` pixels square). The
encoder ``clip:recsys-tiny/random`` (a 32 px toy CLIP) measures the pipeline's fixed costs alone.
No weights are downloaded unless a pretrained tag is named.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from features.embed import embed_images
from features.encoders import TINY_ARCHITECTURE, load_encoder, register_architecture

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def write_pngs(directory: Path, count: int, size: int, seed: int = 0) -> list[Path]:
    """``count`` smooth random RGB pictures (upsampled 8x8 noise), which compress like real images."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        coarse = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        image = coarse.resize((size, size), Image.Resampling.BICUBIC)
        path = directory / f"bench-{i:05d}.png"
        image.save(path)
        paths.append(path)
    return paths


def bare_forward_seconds(encoder, batches: list[torch.Tensor]) -> float:
    """Seconds for open_clip's encode_image over pre-made batches, with the pipeline's precision rule."""
    model, device = encoder.model, encoder.device
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)
        if device.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )
    start = time.perf_counter()
    with torch.inference_mode(), autocast:
        for batch in batches:
            model.encode_image(batch.to(device)).float().cpu()  # .cpu() waits for the GPU
    return time.perf_counter() - start


def decode_only_seconds(encoder, paths: list[Path], workers: int) -> float:
    """Seconds to decode and preprocess every file in ``workers`` threads (no model)."""

    def load(path):
        with Image.open(path) as image:
            image.load()
            return encoder.preprocess(image)

    start = time.perf_counter()
    if workers > 0:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(load, paths))
    else:
        list(map(load, paths))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--encoder", default="clip:ViT-B-32/random")
    parser.add_argument("--checkpoint", type=Path, default=None)
    parser.add_argument("--images", type=int, default=256, help="how many images to embed")
    parser.add_argument("--image-size", type=int, default=512, help="side of the generated PNGs, pixels")
    parser.add_argument("--data", type=Path, default=None, help="a directory of images to use instead")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workers", type=int, default=None, help="decoding threads (default: min(8, CPUs))")
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats; the best one counts")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    workers = min(8, os.cpu_count() or 1) if args.workers is None else args.workers
    register_architecture("recsys-tiny", TINY_ARCHITECTURE)

    with tempfile.TemporaryDirectory() as tmp:
        if args.data is not None:
            paths = sorted(p for p in args.data.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[
                : args.images
            ]
            if not paths:
                raise SystemExit(f"error: no images ({', '.join(IMAGE_SUFFIXES)}) under {args.data}")
        else:
            paths = write_pngs(Path(tmp) / "images", args.images, args.image_size)
        ids = np.arange(len(paths), dtype=np.int64)
        encoder = load_encoder(args.encoder, checkpoint=args.checkpoint, device=args.device)

        pixels = [encoder.preprocess(Image.open(p)) for p in paths]
        batches = [
            torch.stack(pixels[i : i + args.batch_size]) for i in range(0, len(pixels), args.batch_size)
        ]
        bare_forward_seconds(encoder, batches[:1])  # warm-up: allocator, kernels, lazy init

        bare, pipeline = [], []
        for _ in range(max(1, args.repeats)):  # interleaved, so drifting machine load hits both alike
            bare.append(bare_forward_seconds(encoder, batches))
            start = time.perf_counter()
            embed_images(paths, ids, encoder, batch_size=args.batch_size, num_workers=workers,
                         use_cache=False, progress=False)  # fmt: skip
            pipeline.append(time.perf_counter() - start)
        decode_seconds = decode_only_seconds(encoder, paths, workers)

        cache_dir = Path(tmp) / "cache"
        start = time.perf_counter()
        cold = embed_images(paths, ids, encoder, batch_size=args.batch_size, num_workers=workers,
                            cache_dir=cache_dir, progress=False)  # fmt: skip
        cold_seconds = time.perf_counter() - start
        start = time.perf_counter()
        warm = embed_images(paths, ids, encoder, batch_size=args.batch_size, num_workers=workers,
                            cache_dir=cache_dir, progress=False)  # fmt: skip
        cached_seconds = time.perf_counter() - start
        assert warm.computed_chunks == 0 and np.array_equal(warm.embedding, cold.embedding)

    n = len(paths)
    bare_s, pipeline_s = min(bare), min(pipeline)
    result = {
        "encoder": args.encoder,
        "device": str(encoder.device),
        "images": n,
        "image_size": None if args.data else args.image_size,
        "batch_size": args.batch_size,
        "workers": workers,
        "torch_threads": torch.get_num_threads(),
        "bare_forward_images_per_s": round(n / bare_s, 1),
        "pipeline_images_per_s": round(n / pipeline_s, 1),
        "pipeline_overhead_percent": round(100 * (pipeline_s / bare_s - 1), 1),
        "decode_only_images_per_s": round(n / decode_seconds, 1),
        # on a CPU decoding and the model share the cores, so decode + forward is the pipeline's floor
        "overhead_vs_decode_plus_forward_percent": round(
            100 * (pipeline_s / (bare_s + decode_seconds) - 1), 1
        ),
        "cold_cached_run_seconds": round(cold_seconds, 3),
        "cached_rerun_seconds": round(cached_seconds, 4),
        "cached_rerun_seconds_per_1000_images": round(1000 * cached_seconds / n, 4),
        "target_overhead_percent": 10,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"{n} images, {args.encoder} on {encoder.device}, batch {args.batch_size}, {workers} decoding threads, "
          f"{torch.get_num_threads()} torch threads")  # fmt: skip
    print(f"bare open_clip forward:   {result['bare_forward_images_per_s']:.1f} images/s")
    print(f"pipeline (files -> npz):  {result['pipeline_images_per_s']:.1f} images/s "
          f"(overhead {result['pipeline_overhead_percent']:+.1f}%, target < 10%)")  # fmt: skip
    print(f"decode + preprocess only: {result['decode_only_images_per_s']:.1f} images/s "
          f"(pipeline vs decode + forward in series: {result['overhead_vs_decode_plus_forward_percent']:+.1f}%)")  # fmt: skip
    print(f"cached re-run:            {cached_seconds:.3f} s "
          f"({result['cached_rerun_seconds_per_1000_images']:.3f} s per 1000 images)")  # fmt: skip


if __name__ == "__main__":
    main()
