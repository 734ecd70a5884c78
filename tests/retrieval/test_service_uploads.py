"""Uploads to POST /rank: a budget checked before any work (bytes, count, pixels: 413), their own pool of encoder
threads (503 at once when it is full, while /score keeps answering), and abandoned work cancelled (a client that
goes away or times out leaves no encoder work behind). Served by uvicorn on 127.0.0.1, as ``recsys serve`` does."""

from __future__ import annotations

import base64
import io
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from test_service import assert_one_line, limits, serving

import features.embed
from features.embed import embed_image_bytes
from recsys.models import create_model
from recsys.retrieval import service
from recsys.retrieval.service import UploadEmbedder, create_app

#: the encoder of the ``tiny_sim`` fixture (tests/conftest.py)
TINY_ENCODER = "clip:recsys-test-tiny/random"


def png(size: tuple[int, int] = (16, 16), seed: int = 0) -> str:
    """A PNG of random pixels, base64."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


class GatedEmbedder(UploadEmbedder):
    """The real embedder, but each request waits at ``gate`` before it embeds; counts the batches it encodes."""

    def __init__(self, *args) -> None:
        super().__init__(*args)
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)
        self.encoder_calls = 0

    def embed(self, uploads, cancel):
        self.entered.release()
        assert self.gate.wait(60), "the test never opened the gate"
        return super().embed(uploads, cancel)


@pytest.fixture(scope="module")
def served(tiny_sim):
    _, data = tiny_sim
    return create_model("user_ridge").fit(data), data


def rank_body(data, n: int, seed: int = 0) -> dict:
    train = data.ratings["train"]
    refs = [{"image_id": int(data.image_ids[i]), "score": 3.0} for i in train.image_idx[:4]]
    uploads = [{"name": f"up{seed}-{i}.png", "data": png(seed=seed * 100 + i)} for i in range(n)]
    return {"references": refs, "images": uploads}


def gated_app(monkeypatch, served, **values):
    model, data = served
    gated = GatedEmbedder(TINY_ENCODER)
    monkeypatch.setattr(service, "UploadEmbedder", lambda *args: gated)

    def counted(*args, **kwargs):
        gated.encoder_calls += 1
        return embed_image_bytes(*args, **kwargs)

    monkeypatch.setattr(features.embed, "embed_image_bytes", counted)
    return create_app(model, data, limits=limits(**values), encoder=TINY_ENCODER), gated


def wait_until(condition, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_the_upload_budget_is_checked_before_any_work(served, monkeypatch, tiny_home):
    monkeypatch.setenv("RECSYS_HOME", str(tiny_home))
    model, data = served
    app = create_app(model, data, limits=limits(max_uploads=3, max_upload_pixels=1000), encoder=TINY_ENCODER)
    app.state.upload_pool.run = None  # any work submitted would fail: the budget must refuse before it
    client = TestClient(app)
    detail = assert_one_line(client.post("/rank", json=rank_body(data, 4)), 413)
    assert detail == "4 uploaded images is over the limit of 3 (max_uploads)"
    # 16 x 16 and 16 x 16 pixels are 512; a third makes 768, a 32 x 32 one 1024 > 1000
    body = rank_body(data, 2)
    body["images"].append({"name": "big.png", "data": png((32, 32))})
    detail = assert_one_line(client.post("/rank", json=body), 413)
    assert (
        "over 1000 pixels" in detail and "images[2] (big.png)" in detail and "--max-upload-pixels" in detail
    )
    # a decompression bomb is refused by its header: 20,000 x 20,000 pixels in a few kB
    buffer = io.BytesIO()
    Image.new("1", (20_000, 20_000)).save(buffer, format="PNG")
    assert len(buffer.getvalue()) < 100_000
    bomb = {**body, "images": [{"name": "bomb.png", "data": base64.b64encode(buffer.getvalue()).decode()}]}
    big = TestClient(create_app(model, data, limits=limits(max_body_bytes=1 << 20), encoder=TINY_ENCODER))
    assert "bomb.png" in assert_one_line(big.post("/rank", json=bomb), 413)
    small = create_app(model, data, limits=limits(max_upload_bytes=100), encoder=TINY_ENCODER)
    assert "max_upload_bytes" in assert_one_line(
        TestClient(small).post("/rank", json=rank_body(data, 1)), 413
    )
    with pytest.raises(service.UserError, match="--upload-workers must be a positive integer"):
        limits(upload_workers=0)


def test_a_busy_upload_pool_is_503_at_once_and_score_keeps_answering(served, monkeypatch, tiny_home):
    monkeypatch.setenv("RECSYS_HOME", str(tiny_home))
    _, data = served
    app, gated = gated_app(monkeypatch, served, upload_workers=1, upload_queue=1, timeout_s=30)
    user = str(data.user_ids[data.train_users()[0]])
    score = {"user_id": user, "image_ids": [int(i) for i in data.image_ids[:5]]}
    with serving(app) as base, ThreadPoolExecutor(2) as background:
        try:
            waiting = [
                background.submit(httpx.post, f"{base}/rank", json=rank_body(data, 2, seed), timeout=30)
                for seed in (1, 2)
            ]
            assert gated.entered.acquire(timeout=10)  # one embeds (held at the gate), one waits
            wait_until(lambda: app.state.upload_pool.pending == 2)
            start = time.perf_counter()
            detail = assert_one_line(httpx.post(f"{base}/rank", json=rank_body(data, 2, 3), timeout=10), 503)
            assert time.perf_counter() - start < 2 and detail.startswith(
                "the service is busy: 2 upload requests"
            )
            for _ in range(5):  # the model pool is free: /score is answered while the encoder is held
                start = time.perf_counter()
                assert httpx.post(f"{base}/score", json=score, timeout=10).status_code == 200
                assert time.perf_counter() - start < 2
        finally:
            gated.gate.set()
        assert [f.result().status_code for f in waiting] == [200, 200]


def test_abandoned_upload_work_never_runs(served, monkeypatch, tiny_home):
    """A waiting request whose client goes away, and one that times out, leave no encoder work: the first never
    starts; a running one whose client went away stops before its next batch."""
    monkeypatch.setenv("RECSYS_HOME", str(tiny_home))
    _, data = served
    app, gated = gated_app(monkeypatch, served, upload_workers=1, upload_queue=2, timeout_s=30)
    pool = app.state.upload_pool
    with serving(app) as base, ThreadPoolExecutor(1) as background:
        try:
            first = background.submit(httpx.post, f"{base}/rank", json=rank_body(data, 1, 1), timeout=30)
            assert gated.entered.acquire(timeout=10)
            # a second request waits for the encoder thread; its client gives up after 0.5 s and goes away
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(f"{base}/rank", json=rank_body(data, 1, 2), timeout=0.5)
            wait_until(lambda: pool.pending == 1)  # its work was dropped from the queue
        finally:
            gated.gate.set()
        assert first.result().status_code == 200
        assert gated.encoder_calls == 1  # only the first request's batch was embedded
        # a running request whose client goes away: it stops at its next batch, never reaching the encoder
        gated.gate.clear()
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{base}/rank", json=rank_body(data, 1, 4), timeout=0.5)
        assert gated.entered.acquire(timeout=10)
        time.sleep(0.2)  # the server notices the disconnection within DISCONNECT_POLL_S
        gated.gate.set()
        wait_until(lambda: pool.pending == 0)
        assert gated.encoder_calls == 1
    # a request over the timeout is answered 504 and its waiting work is dropped too
    app, gated = gated_app(monkeypatch, served, upload_workers=1, upload_queue=1, timeout_s=0.5)
    pool = app.state.upload_pool
    with serving(app) as base, ThreadPoolExecutor(1) as background:
        try:
            first = background.submit(httpx.post, f"{base}/rank", json=rank_body(data, 1, 5), timeout=30)
            assert gated.entered.acquire(timeout=10)
            detail = assert_one_line(httpx.post(f"{base}/rank", json=rank_body(data, 1, 6), timeout=10), 504)
            assert detail.startswith("the image encoder did not answer within 0.5 s")
            wait_until(lambda: pool.pending <= 1)
        finally:
            gated.gate.set()
        assert first.result().status_code == 504  # it too waited past the timeout at the gate
        wait_until(lambda: pool.pending == 0)
        assert gated.encoder_calls == 0  # both abandoned before their first batch


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a nice value per thread is Linux's")
def test_upload_threads_run_at_a_lower_cpu_priority(served):
    import asyncio
    import os

    from recsys.retrieval.service import UPLOAD_NICENESS

    model, data = served
    app = create_app(model, data, encoder=TINY_ENCODER)

    def nice() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    async def both():
        return await app.state.pool.run(nice), await app.state.upload_pool.run(nice)

    model_nice, upload_nice = asyncio.run(both())
    assert model_nice == nice() and upload_nice == min(19, nice() + UPLOAD_NICENESS)
