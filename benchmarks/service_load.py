"""A bounded load test of the HTTP service on loopback: requests/s and p50/p99 latency, alone, beside oversized
requests and beside clients uploading images to POST /rank.

    python benchmarks/service_load.py [--data DIR] [--model user_ridge] [--requests 2000] [--concurrency 8]
                                      [--oversized 0.25] [--upload-clients 4] [--uploads-per-request 4]
                                      [--encoder clip:ViT-B-32/random] [--rounds 6] [--check] [--json]

Starts `recsys serve`'s app with uvicorn on 127.0.0.1 (a free port) in this process, with the default
limits (recsys.retrieval.service.ServiceLimits), and stops by itself. Up to three phases on the same server,
from --concurrency client threads, alternating --rounds times (--requests normal requests per phase in all):

  normal  normal requests only: GET /users/{id}/similar?k=10 and POST /score (a fitted user, 20 images),
          alternating.
  mixed   as many normal requests, with --oversized oversized ones per normal one spread evenly among them,
          cycling through: a body of twice --max-body-bytes (with Content-Length), the same without one
          (chunked), 10,000 references (the request of issue 13, 370 KB), as many references as fit in
          --max-body-bytes (over --max-references: the most a client can make the server parse) and 20,000
          image ids. Each must be answered 413.
  uploads as many normal requests, while --upload-clients more clients each post, one after the other, POST
          /rank for a new user with --uploads-per-request new PNGs (--upload-size pixels square, random pixels
          never sent before, so every one is embedded) and 5 image ids. A 503 (the upload pool is full) is
          retried after its Retry-After; 200, 503 and 504 (over --timeout) are the expected answers, and
          --check wants some 200s.

It reports p50/p99 of the normal requests in each phase and their ratios to the normal phase (mixed / normal,
uploads / normal), which should stay within 2x; --check exits with status 1 when one does not, or when a request
got an unexpected status. The oversized bodies are encoded once, before timing, so that the client's own work
(in this process) stays small; the uploads are encoded before each round. `--oversized 0` and
`--upload-clients 0` leave out their phases.

The uploads phase needs the data's image features made by --encoder (default clip:ViT-B-32/random: random
weights, no download, the cost of a real ViT-B-32): they are embedded first when they are not (through the
embedding cache; images are needed). The uploads' own embeddings go to a temporary cache, removed at the end.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import socket
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import uvicorn
from PIL import Image

from recsys.data import load_dataset
from recsys.retrieval.service import ServiceLimits, create_app
from recsys.retrieval.similar import load_or_fit

JSON = {"content-type": "application/json"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def oversized_requests(ds, limits: ServiceLimits, user: str) -> list[tuple[str, dict]]:
    """(kind, httpx keyword arguments of a POST /score) of each oversized request, bodies encoded once."""
    ids = [int(v) for v in ds.image_ids]

    def references(n: int) -> list[dict]:
        return [{"image_id": ids[i % len(ids)], "score": 3.0} for i in range(n)]

    issue = json.dumps({"references": references(10_000), "image_ids": ids[:20]}).encode()
    # as many references as fit in the byte limit: the most a client can make the server parse
    per_reference = len(json.dumps(references(1000))) / 1000
    n = int(limits.max_body_bytes / per_reference)
    while len(filling := json.dumps({"references": references(n), "image_ids": ids[:20]}).encode()) > (
        limits.max_body_bytes
    ):
        n -= 10
    too_many_images = json.dumps({"user_id": user, "image_ids": (ids * 20_000)[:20_000]}).encode()
    filler = json.dumps({"references": references(1)})[:-2].encode()  # unfinished: never parsed anyway
    too_large = filler + b" " * (2 * limits.max_body_bytes - len(filler))
    chunks = [too_large[i : i + 65_536] for i in range(0, len(too_large), 65_536)]
    return [
        (f"{len(too_large)} B body", {"content": too_large, "headers": JSON}),
        (f"{len(too_large)} B chunked body", {"content": chunks, "headers": JSON}),
        (f"10,000 references ({len(issue)} B)", {"content": issue, "headers": JSON}),
        (f"{n} references ({len(filling)} B)", {"content": filling, "headers": JSON}),
        (f"20,000 image ids ({len(too_many_images)} B)", {"content": too_many_images, "headers": JSON}),
    ]


class Phase:
    """Latencies (s) and statuses of one phase's normal, oversized and upload requests, over its rounds."""

    def __init__(self) -> None:
        self.normal: list[float] = []
        self.oversized: list[float] = []
        self.uploads: list[float] = []
        self.normal_status: Counter = Counter()
        self.oversized_status: Counter = Counter()
        self.upload_status: Counter = Counter()
        self.wall = 0.0

    def summary(self) -> dict:
        ms = np.array(self.normal) * 1000
        out = {
            "normal_requests": len(self.normal),
            "oversized_requests": len(self.oversized),
            "normal_requests_per_second": round(len(self.normal) / self.wall, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "normal_errors": len(self.normal) - self.normal_status[200],
        }
        if self.oversized:
            out["oversized_p50_ms"] = round(float(np.percentile(np.array(self.oversized) * 1000, 50)), 2)
            out["oversized_statuses"] = dict(sorted(self.oversized_status.items()))
            out["oversized_not_413"] = sum(
                v for k, v in self.oversized_status.items() if not k.endswith(": 413")
            )
        if self.upload_status:
            out["upload_requests"] = sum(self.upload_status.values())
            out["upload_statuses"] = {str(k): v for k, v in sorted(self.upload_status.items())}
            out["uploads_ranked_per_second"] = round(self.upload_status[200] / self.wall, 2)
            if self.uploads:
                ranked = np.array(self.uploads) * 1000
                out["upload_p50_ms"] = round(float(np.percentile(ranked, 50)), 1)
                out["upload_p99_ms"] = round(float(np.percentile(ranked, 99)), 1)
            out["uploads_unexpected"] = sum(
                v for k, v in self.upload_status.items() if k not in (200, 503, 504)
            )
        return out


def upload_bodies(ds, n_requests: int, per_request: int, size: int, seed: int) -> list[bytes]:
    """POST /rank bodies of a new user (5 references) with ``per_request`` new PNGs each (random pixels: every one
    is new to the embedding cache) and 5 image ids, encoded before timing."""
    rng = np.random.default_rng(seed)
    train = ds.ratings["train"]
    refs = [
        {"image_id": int(ds.image_ids[i]), "score": float(s)}
        for i, s in zip(train.image_idx[:5], train.score[:5], strict=True)
    ]
    ids = [int(v) for v in ds.image_ids[:5]]
    bodies = []
    for r in range(n_requests):
        images = []
        for j in range(per_request):
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, format="PNG")
            images.append(
                {"name": f"s{seed}-r{r}-{j}.png", "data": base64.b64encode(buffer.getvalue()).decode()}
            )
        bodies.append(json.dumps({"references": refs, "image_ids": ids, "images": images}).encode())
    return bodies


def upload_clients(phase: Phase, base: str, bodies: list[bytes], clients: int, stop: threading.Event):
    """Start ``clients`` threads that post the upload bodies one after the other until ``stop``; a 503 is retried
    after its Retry-After. Returns the threads."""
    lock = threading.Lock()
    queue = iter(bodies)

    def client() -> None:
        with httpx.Client(timeout=60) as http:
            while not stop.is_set():
                with lock:
                    body = next(queue, None)
                if body is None:
                    return
                start = time.perf_counter()
                response = http.post(f"{base}/rank", content=body, headers=JSON)
                elapsed = time.perf_counter() - start
                with lock:
                    phase.upload_status[response.status_code] += 1
                    if response.status_code == 200:
                        phase.uploads.append(elapsed)
                if response.status_code == 503:
                    stop.wait(float(response.headers.get("retry-after", 1)))

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    return threads


def run_phase(
    phase: Phase, base: str, ds, n_normal: int, n_oversized: int, oversized, concurrency: int, seed: int
) -> None:
    """Send one round of a phase: ``n_normal`` normal requests with ``n_oversized`` oversized ones spread
    evenly among them, from ``concurrency`` client threads."""
    rng = np.random.default_rng(seed)
    users = ds.user_ids[ds.train_users()]
    lock = threading.Lock()
    plan: list[str | int] = ["normal"] * n_normal
    for j in range(n_oversized):
        plan.insert(round((j + 0.5) * len(plan) / n_oversized), j % len(oversized))

    def one(i: int, kind: str | int, client: httpx.Client) -> None:
        with lock:
            user = str(users[rng.integers(len(users))])
            images = [int(v) for v in ds.image_ids[rng.integers(0, ds.n_images, 20)]]
        start = time.perf_counter()
        if kind != "normal":
            name, kwargs = oversized[kind]
            if isinstance(kwargs["content"], list):  # a fresh iterator: no Content-Length
                kwargs = {**kwargs, "content": iter(kwargs["content"])}
            response = client.post(f"{base}/score", **kwargs)
        elif i % 2:
            response = client.get(f"{base}/users/{user}/similar", params={"k": 10})
        else:
            response = client.post(f"{base}/score", json={"user_id": user, "image_ids": images})
        elapsed = time.perf_counter() - start
        with lock:
            if kind != "normal":
                phase.oversized.append(elapsed)
                phase.oversized_status[f"{name}: {response.status_code}"] += 1
            else:
                phase.normal.append(elapsed)
                phase.normal_status[response.status_code] += 1

    with httpx.Client(timeout=30, limits=httpx.Limits(max_connections=concurrency)) as client:
        start = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(lambda item: one(item[0], item[1], client), enumerate(plan)))
        phase.wall += time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=None, help="dataset (default: the simulated PAMELA)")
    parser.add_argument("--model", default="user_ridge")
    parser.add_argument("--requests", type=int, default=2000, help="normal requests per phase")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument(
        "--oversized", type=float, default=0.25, help="oversized requests per normal one in the mixed phase"
    )
    parser.add_argument(
        "--upload-clients", type=int, default=4, help="clients posting uploads in the uploads phase (0: none)"
    )
    parser.add_argument("--uploads-per-request", type=int, default=4, help="new images per upload request")
    parser.add_argument("--upload-size", type=int, default=64, help="side of the uploaded PNGs, in pixels")
    parser.add_argument(
        "--encoder", default="clip:ViT-B-32/random", help="encoder of the data's features and the uploads"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=6,
        help="the phases alternate this many times (drifts in a shared machine's load then weigh on both alike)",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 unless within 2x and all statuses right")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    ds = load_dataset(args.data)
    encoder = None
    if args.upload_clients > 0:
        from features.embed import embed_dataset_features

        encoder = args.encoder
        if ds.feature_source != encoder:
            ds = embed_dataset_features(ds, encoder, progress=not args.json)
    with tempfile.TemporaryDirectory() as workspace:
        model, similar = load_or_fit(args.model, ds, workspace=Path(workspace), progress=False)
    upload_cache = tempfile.TemporaryDirectory()
    os.environ["RECSYS_HOME"] = upload_cache.name  # the uploads' embeddings: a temporary cache
    limits = ServiceLimits()
    port = free_port()
    app = create_app(model, ds, similar, limits, encoder=encoder)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)

    user = str(ds.user_ids[ds.train_users()[0]])
    oversized = oversized_requests(ds, limits, user)
    per_round = [len(r) for r in np.array_split(np.arange(args.requests), args.rounds)]
    phases = {"normal": Phase()}
    if args.oversized > 0:
        phases["mixed"] = Phase()
    if args.upload_clients > 0:
        phases["uploads"] = Phase()
    try:
        run_phase(
            Phase(), base, ds, min(50, args.requests), 0, oversized, args.concurrency, seed=99
        )  # warm-up
        if encoder is not None:  # the encoder loads as the service starts: wait until an upload is ranked
            warm = upload_bodies(ds, 1, 1, args.upload_size, seed=99)[0]
            deadline = time.time() + 300
            while httpx.post(f"{base}/rank", content=warm, headers=JSON, timeout=120).status_code != 200:
                assert time.time() < deadline, "the service ranked no upload within 300 s"
                time.sleep(1)
        for r, n in enumerate(per_round):
            run_phase(phases["normal"], base, ds, n, 0, oversized, args.concurrency, seed=r)
            if "mixed" in phases:
                extra = round(args.oversized * n)
                run_phase(phases["mixed"], base, ds, n, extra, oversized, args.concurrency, seed=r)
            if "uploads" in phases:
                bodies = upload_bodies(ds, 400, args.uploads_per_request, args.upload_size, seed=r)
                stop = threading.Event()
                clients = upload_clients(phases["uploads"], base, bodies, args.upload_clients, stop)
                try:
                    run_phase(phases["uploads"], base, ds, n, 0, oversized, args.concurrency, seed=r)
                finally:
                    stop.set()
                    for client in clients:
                        client.join(timeout=120)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        upload_cache.cleanup()

    summaries = {name: phase.summary() for name, phase in phases.items()}
    result: dict = {
        "model": args.model,
        "dataset": ds.name,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "limits": {
            "max_body_bytes": limits.max_body_bytes,
            "max_references": limits.max_references,
            "workers": limits.workers,
            "upload_workers": limits.upload_workers,
            "upload_queue": limits.upload_queue,
        },
        **summaries,
    }
    if encoder is not None:
        result["uploads_phase"] = {
            "encoder": encoder,
            "clients": args.upload_clients,
            "images_per_request": args.uploads_per_request,
            "image_size": args.upload_size,
        }
    ok = all(
        p["normal_errors"] == 0 and p.get("oversized_not_413", 0) == 0 and p.get("uploads_unexpected", 0) == 0
        for p in summaries.values()
    )
    if "uploads" in summaries:  # the upload clients must have been served too, not only turned away
        ok = ok and summaries["uploads"]["upload_statuses"].get("200", 0) > 0
    within = []
    for phase, prefix in (("mixed", ""), ("uploads", "uploads_")):
        if phase in summaries:
            for q in ("p50", "p99"):
                ratio = summaries[phase][f"{q}_ms"] / summaries["normal"][f"{q}_ms"]
                result[f"{prefix}{q}_ratio"] = round(ratio, 2)
                within.append(ratio <= 2)
    if within:
        result["within_2x"] = all(within)
        ok = ok and result["within_2x"]
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            if isinstance(value, dict):
                print(f"{key}:")
                for k, v in value.items():
                    print(f"  {k}: {v}")
            else:
                print(f"{key}: {value}")
    return 1 if args.check and not ok else 0


if __name__ == "__main__":
    raise SystemExit(main())
