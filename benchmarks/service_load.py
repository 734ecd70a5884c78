"""A bounded load test of the HTTP service on loopback: requests/s and p50/p99 latency.

    python benchmarks/service_load.py [--data DIR] [--model user_ridge] [--requests 2000] [--concurrency 8] [--json]

Starts `recsys serve`'s app with uvicorn on 127.0.0.1 (a free port) in this process, sends a fixed number of
requests (a mix of GET /users/{id}/similar and POST /score) from a thread pool, and stops by itself.
"""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import uvicorn

from recsys.data import load_dataset
from recsys.retrieval.service import create_app
from recsys.retrieval.similar import load_or_fit


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=None, help="dataset (default: the simulated PAMELA)")
    parser.add_argument("--model", default="user_ridge")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    ds = load_dataset(args.data)
    with tempfile.TemporaryDirectory() as workspace:
        model, similar = load_or_fit(args.model, ds, workspace=Path(workspace), progress=False)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(model, ds, similar), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)

    rng = np.random.default_rng(0)
    users = ds.user_ids[ds.train_users()]
    latencies: list[float] = []
    errors = 0

    def one(i: int, client: httpx.Client) -> None:
        nonlocal errors
        user = str(users[rng.integers(len(users))])
        start = time.perf_counter()
        if i % 2:
            response = client.get(f"{base}/users/{user}/similar", params={"k": 10})
        else:
            images = [int(v) for v in ds.image_ids[rng.integers(0, ds.n_images, 20)]]
            response = client.post(f"{base}/score", json={"user_id": user, "image_ids": images})
        latencies.append(time.perf_counter() - start)
        errors += response.status_code != 200

    with httpx.Client(timeout=10) as client:
        start = time.perf_counter()
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(lambda i: one(i, client), range(args.requests)))
        wall = time.perf_counter() - start
    server.should_exit = True
    thread.join(timeout=10)
    ms = np.array(latencies) * 1000
    result = {
        "model": args.model, "dataset": ds.name, "requests": args.requests, "concurrency": args.concurrency,
        "errors": errors, "requests_per_second": round(args.requests / wall, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2), "p99_ms": round(float(np.percentile(ms, 99)), 2),
    }  # fmt: skip
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
