"""Overhead of the classical adapters over calling implicit / LightFM directly on the same matrices.

For als, bpr and lightfm: time ``model.fit(dataset)`` against building the wrapped library model with the same
hyperparameters and fitting it on the same matrix (same iterations, one thread). Two overheads are printed:

* ``call``: the library's own ``fit`` as the adapter calls it, against calling it directly: what wrapping costs;
* ``total``: the adapter's whole fit against the direct call. The difference is work the libraries do not do:
  the feature-to-factor map that gives unrated images factors, the demographic prior, calibration to the
  rating scale, and (lightfm) the k-means image clusters.

Also mf's fit seconds per ALS epoch. Median of ``--repeats`` runs.

    OPENBLAS_NUM_THREADS=1 python benchmarks/classical_overhead.py [--data PATH] [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from recsys.data import load_dataset  # noqa: E402
from recsys.models import create_model  # noqa: E402
from recsys.models.implicit_models import likes_matrix  # noqa: E402
from recsys.models.lightfm_model import item_feature_matrix, user_feature_matrix  # noqa: E402


def median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def timed_library_fit(cls) -> tuple[list[float], callable]:
    """Wrap ``cls.fit`` so that every call's seconds are recorded; returns the list and an undo function."""
    original = cls.fit
    seconds: list[float] = []

    def fit(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - start)

    cls.fit = fit
    return seconds, lambda: setattr(cls, "fit", original)


def adapter_seconds(model, dataset, library_cls, repeats: int) -> tuple[float, float]:
    """Median seconds of the adapter's whole fit, and of the library fit inside it."""
    inside, undo = timed_library_fit(library_cls)
    try:
        total = median_seconds(lambda: model.clone().fit(dataset), repeats)
    finally:
        undo()
    return total, float(np.median(inside))


def overheads(direct: float, total: float, call: float) -> dict:
    return {"direct_s": direct, "adapter_s": total, "library_call_in_adapter_s": call,
            "call_overhead_pct": 100 * (call / direct - 1), "total_overhead_pct": 100 * (total / direct - 1)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="dataset path (default: the simulated PAMELA)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    dataset = load_dataset(args.data)
    ratings = dataset.ratings["train"]
    rows = {}
    for name in ("als", "bpr"):
        model = create_model(name, seed=0)
        matrix = likes_matrix(ratings, dataset.n_users, dataset.n_images, model.like_threshold,
                              confidence=model.confidence_weighted)  # fmt: skip
        direct = median_seconds(lambda m=model, x=matrix: m.build().fit(x, show_progress=False), args.repeats)
        rows[name] = overheads(direct, *adapter_seconds(model, dataset, type(model.build()), args.repeats))
    model = create_model("lightfm", seed=0)
    interactions = model.interactions(dataset)
    items, _ = item_feature_matrix(dataset, model.cluster_sizes, model.seed)
    users = user_feature_matrix(dataset.users, dataset.ratings["train"].user_idx)

    def direct_lightfm():
        model.build().fit(
            interactions, user_features=users, item_features=items, epochs=model.epochs, num_threads=1
        )

    direct = median_seconds(direct_lightfm, args.repeats)
    rows["lightfm"] = overheads(direct, *adapter_seconds(model, dataset, type(model.build()), args.repeats))
    mf = create_model("mf", seed=0)
    seconds = median_seconds(lambda: mf.fit(dataset), args.repeats)
    epochs = max(1, len(mf.history_))
    rows["mf"] = {"fit_s": seconds, "epochs": epochs, "seconds_per_epoch": seconds / epochs}
    out = {"dataset": dataset.name, "train_ratings": len(ratings), "repeats": args.repeats, "models": rows}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"{dataset.name}: {len(ratings)} training ratings, median of {args.repeats}")
    for name in ("als", "bpr", "lightfm"):
        r = rows[name]
        print(
            f"{name:8s} direct {r['direct_s']:.3f}s  library call in adapter {r['library_call_in_adapter_s']:.3f}s "
            f"(call overhead {r['call_overhead_pct']:+.1f}%)  whole adapter fit {r['adapter_s']:.3f}s "
            f"(total {r['total_overhead_pct']:+.1f}%)"
        )
    r = rows["mf"]
    print(
        f"mf       fit {r['fit_s']:.3f}s over {r['epochs']} epochs = {r['seconds_per_epoch']:.3f}s per epoch"
    )


if __name__ == "__main__":
    main()
