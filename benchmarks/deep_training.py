"""Fit seconds of the deep models on a dataset (default: the full default simulation), on CPU and CUDA if present.

python benchmarks/deep_training.py [--data DIR] [--models two_tower,pref_tokens,profile] [--threads 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from recsys.data import load_dataset
from recsys.models import create_model
from recsys.models.registry import model_class

DEEP_MODELS = ("two_tower", "pref_tokens", "profile")


def time_fit(name: str, dataset, device: str, seed: int) -> dict:
    """Fit one model once; seconds and the epochs actually run (early stopping)."""
    cls = model_class(name)
    params = {"seed": seed} if "seed" in cls.param_names() else {}
    if device != "none" and "device" in cls.param_names():
        params["device"] = device
    model = create_model(name, **params)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    model.fit(dataset)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    history = getattr(model, "history_", None) or {}
    return {"model": name, "device": device, "fit_seconds": round(seconds, 3),
            "epochs_run": len(history.get("train_loss", [])) or None}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", default=None, help="dataset directory (default: the cached default simulation)"
    )
    parser.add_argument("--models", default=",".join(DEEP_MODELS))
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    dataset = load_dataset(args.data)
    rows = []
    for name in args.models.split(","):
        torch_model = "device" in create_model(name).get_params()
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and torch_model else [])
        for device in devices if torch_model else ["none"]:
            rows.append(time_fit(name, dataset, device, args.seed))
    report = {
        "dataset": dataset.name,
        "n_train_ratings": len(dataset.ratings["train"]),
        "feature_dim": None if dataset.image_features is None else int(dataset.image_features.shape[1]),
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "results": rows,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"{report['dataset']}: {report['n_train_ratings']} train ratings, {args.threads} threads")
        for row in rows:
            print(
                f"  {row['model']:16s} {row['device']:5s} {row['fit_seconds']:8.1f} s  epochs {row['epochs_run']}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
