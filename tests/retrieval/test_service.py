"""The HTTP service: its endpoints and their JSON, request limits (413), one-line errors that never repeat the
input, a pool of model threads that keeps /health and other users answered behind slow calls (503/504), and
``recsys serve``'s flags.

The concurrency tests run the app with uvicorn on 127.0.0.1 (a free port), as ``recsys serve`` does.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient

from recsys.cli import build_parser, main
from recsys.models import create_model
from recsys.retrieval.service import create_app
from recsys.retrieval.similar import SimilarUsers


@pytest.fixture(scope="module")
def fitted(small_sim):
    model = create_model("user_ridge").fit(small_sim)
    return model, SimilarUsers(model, small_sim)


@pytest.fixture(scope="module")
def client(small_sim, fitted):
    model, similar = fitted
    return TestClient(create_app(model, small_sim, similar))


def limits(**values):
    from recsys.retrieval.service import ServiceLimits

    return ServiceLimits(**values)


def references(dataset, n: int) -> list[dict]:
    return [
        {"image_id": int(dataset.image_ids[i % dataset.n_images]), "score": 4.0 if i % 2 else 2.0}
        for i in range(n)
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(app):
    """``app`` served by uvicorn on 127.0.0.1 in a thread; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


class GatedModel:
    """The fitted model, but ``predict`` waits until ``gate`` is set: a model call that hangs."""

    def __init__(self, model):
        self._model = model
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)

    def __getattr__(self, name):
        return getattr(self._model, name)

    def predict(self, user_idx, image_idx):
        self.entered.release()
        assert self.gate.wait(60), "the test never opened the gate"
        return self._model.predict(user_idx, image_idx)


def assert_one_line(response, status: int) -> str:
    """The response is ``status`` with a body of exactly ``{"detail": "one line"}``; returns the line."""
    assert response.status_code == status, response.text[:300]
    body = response.json()
    assert set(body) == {"detail"} and isinstance(body["detail"], str), response.text[:300]
    assert "\n" not in body["detail"] and 0 < len(body["detail"]) <= 300
    return body["detail"]


# ---------------------------------------------------------------------- endpoints
def test_http_api(small_sim, fitted, client):
    model, similar = fitted
    user = small_sim.user_ids[small_sim.train_users()[0]]
    images = small_sim.image_ids[:3].tolist()
    health = client.get("/health").json()
    assert health == {
        "status": "ok",
        "model": "user_ridge",
        "dataset": small_sim.name,
        "simulated": True,
        "users": len(small_sim.train_users()),
        "images": small_sim.n_images,
    }
    got = client.get(f"/users/{user}/similar", params={"k": 3}).json()
    assert len(got) == 3 and got == similar.by_user(user, 3)
    refs = references(small_sim, 10)
    found = client.post("/users/similar", json={"references": refs, "k": 2}).json()
    assert len(found) == 2
    assert found == similar.by_references([r["image_id"] for r in refs], [r["score"] for r in refs], 2)
    response = client.post("/score", json={"user_id": user, "image_ids": images}).json()
    assert set(response) == {"model", "scores"} and response["model"] == "user_ridge"
    scored = response["scores"]
    assert [s["image_id"] for s in scored] == images
    u = small_sim.user_index(user)
    np.testing.assert_allclose(
        [s["score"] for s in scored], model.predict(np.full(3, u), np.arange(3)), rtol=1e-6
    )
    new = client.post("/score", json={"references": refs, "image_ids": images}).json()["scores"]
    assert len(new) == 3
    assert "paths" in client.get("/openapi.json").json()
    # bad input: 4xx with a clear message
    assert client.get("/users/nobody/similar").status_code == 404
    assert client.get(f"/users/{user}/similar", params={"k": 0}).status_code == 422
    assert client.get(f"/users/{user}/similar", params={"k": 10_000}).status_code == 422
    assert client.post("/score", json={"user_id": user, "image_ids": [-5]}).status_code == 404
    assert client.post("/score", json={"image_ids": images}).status_code == 422
    assert client.post("/score", json={"user_id": "nobody", "image_ids": images}).status_code == 404
    assert client.post("/users/similar", json={"references": []}).status_code == 422
    assert (
        client.post(
            "/users/similar", json={"references": [{"image_id": int(images[0]), "score": 99}]}
        ).status_code
        == 422
    )
    assert (
        client.post("/score", content=b"{not json", headers={"content-type": "application/json"}).status_code
        == 422
    )
    unseen = small_sim.user_ids[small_sim.ratings["test_unseen"].user_idx[0]]
    response = client.post("/score", json={"user_id": unseen, "image_ids": images})
    assert response.status_code == 404 and "references" in response.json()["detail"]


# ---------------------------------------------------------------------- limits
def test_a_body_over_the_limit_is_413_before_it_is_parsed(small_sim, fitted):
    model, similar = fitted
    client = TestClient(create_app(model, small_sim, similar, limits(max_body_bytes=1000)))
    headers = {"content-type": "application/json"}
    not_json = b"{" + b"x" * 1500  # parsed, it would be a 422
    detail = assert_one_line(client.post("/score", content=not_json, headers=headers), 413)
    assert "1501 bytes" in detail and "limit of 1000 bytes" in detail and "--max-body-bytes" in detail
    # no Content-Length (a chunked body): refused once more than the limit has arrived
    chunked = client.post("/score", content=iter([b"{" + b"x" * 599, b"x" * 600]), headers=headers)
    assert "limit of 1000 bytes" in assert_one_line(chunked, 413)
    # a body of exactly the limit is served
    user = small_sim.user_ids[small_sim.train_users()[0]]
    body = json.dumps({"user_id": user, "image_ids": small_sim.image_ids[:3].tolist()}).encode()
    exact = client.post("/score", content=body + b" " * (1000 - len(body)), headers=headers)
    assert exact.status_code == 200 and len(exact.json()["scores"]) == 3


def test_a_large_body_gets_its_413_over_a_real_connection(small_sim, fitted):
    """Refused from Content-Length without reading it: the client still reads the 413, and the connection
    serves the next request."""
    model, similar = fitted
    big = (
        b'{"references": [' + b'{"image_id": 1, "score": 3.0}, ' * 100_000 + b"]}"
    )  # 3.1 MB; the limit is 256 KiB
    with serving(create_app(model, small_sim, similar)) as base, httpx.Client(timeout=20) as http:
        response = http.post(f"{base}/score", content=big, headers={"content-type": "application/json"})
        detail = assert_one_line(response, 413)
        assert f"of {len(big)} bytes is over the limit of 262144 bytes" in detail
        assert http.get(f"{base}/health").status_code == 200


def test_too_many_references_or_image_ids_are_413_naming_the_limit(small_sim, client):
    user = small_sim.user_ids[small_sim.train_users()[0]]
    images = small_sim.image_ids[:3].tolist()
    over = references(small_sim, 1001)  # the default limit is 1000
    for path, body in (
        ("/users/similar", {"references": over, "k": 3}),
        ("/score", {"references": over, "image_ids": images}),
    ):
        detail = assert_one_line(client.post(path, json=body), 413)
        assert detail.startswith("1001 references is over the limit of 1000") and "--max-references" in detail
    # the largest request within the count limits fits the default byte limit, with room to spare
    many_images = (small_sim.image_ids.tolist() * 13)[:10_000]
    largest = json.dumps({"references": over[:1000], "image_ids": many_images}).encode()
    assert len(largest) < 262_144 / 2
    at_limit = client.post("/score", content=largest, headers={"content-type": "application/json"})
    assert at_limit.status_code == 200 and len(at_limit.json()["scores"]) == 10_000
    # the request of issue 13 (10,000 references) is refused by its size, unparsed
    issue = client.post("/score", json={"references": references(small_sim, 10_000), "image_ids": images})
    assert "is over the limit of 262144 bytes" in assert_one_line(issue, 413)
    detail = assert_one_line(
        client.post("/score", json={"user_id": user, "image_ids": [*many_images, many_images[0]]}), 413
    )
    assert detail.startswith("10001 image ids is over the limit of 10000")


def test_the_reference_limit_is_configurable(small_sim, fitted):
    model, similar = fitted
    client = TestClient(create_app(model, small_sim, similar, limits(max_references=5)))
    images = small_sim.image_ids[:2].tolist()
    detail = assert_one_line(
        client.post("/score", json={"references": references(small_sim, 6), "image_ids": images}), 413
    )
    assert detail.startswith("6 references is over the limit of 5")
    ok = client.post("/score", json={"references": references(small_sim, 5), "image_ids": images})
    assert ok.status_code == 200


@pytest.mark.parametrize(
    "values",
    [
        {"max_body_bytes": 0},
        {"max_references": -1},
        {"workers": 0},
        {"timeout_s": 0},
        {"timeout_s": float("nan")},
        {"max_queue": 0},
        {"workers": 1.5},
    ],
)
def test_bad_limits_are_user_errors(values):
    from recsys.errors import UserError

    with pytest.raises(UserError, match="must be a positive"):
        limits(**values)


# ---------------------------------------------------------------------- one-line errors
def test_validation_errors_are_one_line_and_never_echo_the_input(small_sim, client):
    marker = "ECHO" + "z" * 5000
    user = small_sim.user_ids[small_sim.train_users()[0]]
    cases = [
        (
            ("post", "/users/similar", {"json": {"references": [{"image_id": 1, "score": marker}] * 50}}),
            "body.references[0].score: Input should be a valid number",
            "(and 49 more errors)",
        ),
        (
            ("post", "/score", {"json": {"user_id": user, "image_ids": {"a": marker}}}),
            "body.image_ids: Input should be a valid list",
            "",
        ),
        (
            (
                "post",
                "/score",
                {"content": b"{" + marker.encode(), "headers": {"content-type": "application/json"}},
            ),
            "body: invalid JSON at character 1 (Expecting property name enclosed in double quotes)",
            "",
        ),
        (
            ("get", f"/users/{user}/similar", {"params": {"k": marker}}),
            "query.k: Input should be a valid integer",
            "",
        ),
        (
            ("post", "/users/similar", {"json": {"references": [], "note": marker}}),
            "body.references: List should have at least 1 item",
            "",
        ),
    ]
    for (method, path, kwargs), start, end in cases:
        response = getattr(client, method)(path, **kwargs)
        detail = assert_one_line(response, 422)
        assert detail.startswith(start) and detail.endswith(end), detail
        assert "ECHO" not in response.text and len(response.content) < 400


def test_every_error_is_one_line_json(small_sim, fitted, client):
    model, similar = fitted
    assert assert_one_line(client.get("/no/such/path"), 404) == "Not Found"
    assert assert_one_line(client.get("/score"), 405) == "Method Not Allowed"
    long_id = "u" * 5000  # an unknown id is named, cut short
    detail = assert_one_line(client.get(f"/users/{long_id}/similar"), 404)
    assert detail.startswith("unknown user id 'uuu") and detail.endswith("...")

    class Broken:
        name = "broken"

        def __getattr__(self, name):
            return getattr(model, name)

        def predict(self, user_idx, image_idx):
            raise RuntimeError("a bug\nwith a second line")

    broken = TestClient(create_app(Broken(), small_sim, similar), raise_server_exceptions=False)
    user = small_sim.user_ids[small_sim.train_users()[0]]
    response = broken.post("/score", json={"user_id": user, "image_ids": small_sim.image_ids[:2].tolist()})
    assert assert_one_line(response, 500) == "internal error (RuntimeError); the server log has the details"


# ---------------------------------------------------------------------- the model pool
def test_one_hanging_model_call_holds_up_no_other_user(small_sim, fitted):
    model, similar = fitted
    gated = GatedModel(model)
    user, other = small_sim.user_ids[small_sim.train_users()[:2]]
    images = small_sim.image_ids[:3].tolist()
    with serving(create_app(gated, small_sim, similar)) as base, ThreadPoolExecutor(1) as background:
        try:
            hanging = background.submit(
                httpx.post, f"{base}/score", json={"user_id": user, "image_ids": images}, timeout=30
            )
            assert gated.entered.acquire(timeout=10)
            start = time.perf_counter()
            assert httpx.get(f"{base}/health", timeout=5).status_code == 200
            found = httpx.get(f"{base}/users/{other}/similar", params={"k": 3}, timeout=5)
            assert found.status_code == 200 and len(found.json()) == 3
            refs = references(small_sim, 10)
            folded = httpx.post(f"{base}/users/similar", json={"references": refs, "k": 2}, timeout=5)
            assert folded.status_code == 200 and len(folded.json()) == 2
            assert time.perf_counter() - start < 5
            assert not hanging.done()
        finally:
            gated.gate.set()
        assert hanging.result().status_code == 200


def test_health_is_answered_while_every_model_thread_hangs(small_sim, fitted):
    """More hanging calls than a thread pool holds (anyio's default is 40 threads): /health answers at once."""
    model, similar = fitted
    gated = GatedModel(model)
    user = small_sim.user_ids[small_sim.train_users()[0]]
    images = small_sim.image_ids[:3].tolist()
    n = 45
    with serving(create_app(gated, small_sim, similar)) as base, ThreadPoolExecutor(n) as background:
        try:
            hanging = [
                background.submit(
                    httpx.post, f"{base}/score", json={"user_id": user, "image_ids": images}, timeout=60
                )
                for _ in range(n)
            ]
            assert gated.entered.acquire(timeout=10)
            time.sleep(0.5)  # the others arrive and wait
            # the gate opens only after this answer: a /health queued behind the model calls would never come
            # back and time out (a generous limit, so that a loaded machine does not fail the test)
            health = httpx.get(f"{base}/health", timeout=10)
            assert health.status_code == 200 and health.json()["status"] == "ok"
        finally:
            gated.gate.set()
        assert [f.result().status_code for f in hanging] == [200] * n


def test_a_call_over_the_timeout_is_504_and_frees_its_thread_when_done(small_sim, fitted):
    model, similar = fitted
    gated = GatedModel(model)
    app = create_app(gated, small_sim, similar, limits(workers=1, timeout_s=0.5))
    user = small_sim.user_ids[small_sim.train_users()[0]]
    body = {"user_id": user, "image_ids": small_sim.image_ids[:3].tolist()}
    with serving(app) as base:
        try:
            start = time.perf_counter()
            response = httpx.post(f"{base}/score", json=body, timeout=10)
            assert 0.5 <= time.perf_counter() - start < 5
            detail = assert_one_line(response, 504)
            assert detail.startswith("the model did not answer within 0.5 s") and "--timeout" in detail
            assert httpx.get(f"{base}/health", timeout=3).status_code == 200
        finally:
            gated.gate.set()
        deadline = time.monotonic() + 10
        while app.state.pool.pending and time.monotonic() < deadline:
            time.sleep(0.02)
        assert app.state.pool.pending == 0
        assert httpx.post(f"{base}/score", json=body, timeout=10).status_code == 200


def test_a_full_queue_is_503_at_once(small_sim, fitted):
    model, similar = fitted
    gated = GatedModel(model)
    app = create_app(gated, small_sim, similar, limits(workers=1, max_queue=1, timeout_s=30))
    user = small_sim.user_ids[small_sim.train_users()[0]]
    body = {"user_id": user, "image_ids": small_sim.image_ids[:3].tolist()}
    with serving(app) as base, ThreadPoolExecutor(2) as background:
        try:
            waiting = [
                background.submit(httpx.post, f"{base}/score", json=body, timeout=30) for _ in range(2)
            ]
            assert gated.entered.acquire(timeout=10)
            deadline = time.monotonic() + 10
            while app.state.pool.pending < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            start = time.perf_counter()
            detail = assert_one_line(httpx.post(f"{base}/score", json=body, timeout=10), 503)
            assert time.perf_counter() - start < 2 and detail.startswith("the service is busy")
        finally:
            gated.gate.set()
        assert [f.result().status_code for f in waiting] == [200, 200]


@pytest.mark.parametrize("serial", [False, True])
def test_model_calls_run_side_by_side_unless_serial(serial):
    import asyncio

    from recsys.retrieval.service import ModelPool

    pool = ModelPool(2, timeout_s=10, max_queue=4, serial=serial)
    lock = threading.Lock()
    running, most = 0, 0

    def call():
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.2)
        with lock:
            running -= 1
        return True

    async def both():
        return await asyncio.gather(pool.run(call), pool.run(call))

    try:
        assert asyncio.run(both()) == [True, True]
    finally:
        pool.shutdown()
    assert most == (1 if serial else 2)


# ---------------------------------------------------------------------- recsys serve
def test_serve_flags_default_to_the_service_limits():
    from recsys.retrieval.service import ServiceLimits

    args = build_parser().parse_args(["serve"])
    default = ServiceLimits()
    assert (args.max_body_bytes, args.max_references, args.workers, args.timeout) == (
        default.max_body_bytes,
        default.max_references,
        default.workers,
        default.timeout_s,
    )


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--port", "99999"], "error: --port must be between 1 and 65535, got 99999"),
        (["--host", "192.0.2.1"], "error: cannot listen on 192.0.2.1:8000 (Cannot assign requested address)"),
        (["--workers", "0"], "error: --workers must be a positive integer, got 0"),
        (["--timeout", "0"], "error: --timeout must be a positive number of seconds, got 0.0"),
        (["--max-references", "0"], "error: --max-references must be a positive integer, got 0"),
        (["--max-body-bytes", "-1"], "error: --max-body-bytes must be a positive integer, got -1"),
    ],
)
def test_serve_refuses_bad_flags_in_one_line(flags, message, small_sim_dir, tmp_path, capsys):
    argv = ["serve", "--data", str(small_sim_dir), "--workspace", str(tmp_path), *flags]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err


def test_serve_refuses_a_port_in_use_in_one_line(small_sim_dir, tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        argv = ["serve", "--data", str(small_sim_dir), "--workspace", str(tmp_path), "--port", str(port)]
        assert main(argv) == 2
    err = capsys.readouterr().err
    assert (
        err
        == f"error: cannot listen on 127.0.0.1:{port} (Address already in use); pick another --host or --port\n"
    )


@pytest.mark.parametrize("port", ["99999", "0"])
def test_serve_bad_port_from_the_installed_command_has_no_traceback(port, small_sim_dir, tmp_path):
    """In a subprocess with a timeout: a server that accepted port 0 would otherwise serve for ever."""
    proc = subprocess.run(
        [sys.executable, "-m", "recsys.cli", "serve", "--data", str(small_sim_dir)]
        + ["--workspace", str(tmp_path), "--port", port],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr == f"error: --port must be between 1 and 65535, got {port}\n"


def test_serve_applies_its_flags(small_sim, small_sim_dir, tmp_path):
    port = free_port()
    command = [sys.executable, "-m", "recsys.cli", "serve", "--data", str(small_sim_dir)]
    command += ["--workspace", str(tmp_path), "--port", str(port), "--max-references", "5"]
    command += ["--max-body-bytes", "4000", "--workers", "2", "--timeout", "5"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "recsys serve did not answer /health"
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        images = small_sim.image_ids[:2].tolist()
        over = httpx.post(f"{base}/score", json={"references": references(small_sim, 6), "image_ids": images})
        assert assert_one_line(over, 413).startswith("6 references is over the limit of 5")
        big = httpx.post(f"{base}/score", content=b" " * 4001, headers={"content-type": "application/json"})
        assert "limit of 4000 bytes" in assert_one_line(big, 413)
        ok = httpx.post(f"{base}/score", json={"references": references(small_sim, 5), "image_ids": images})
        assert ok.status_code == 200 and len(ok.json()["scores"]) == 2
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
