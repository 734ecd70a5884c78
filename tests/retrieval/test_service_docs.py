"""What a person reads about the HTTP service and sends to it: ``/docs`` rendered with no internet (its assets
served by the app, checked in headless Chromium with every other host unreachable), a summary and a
description on every route, ids given as JSON numbers or strings, and a body sent without a JSON content type
answered with a 422 that says so."""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import re
import shutil
import subprocess
import tomllib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from test_service import assert_one_line, serving

from recsys.models import create_model
from recsys.retrieval.service import SWAGGER_UI_DIR, create_app

README = Path(__file__).resolve().parents[2] / "README.md"
#: Chromium with every host but 127.0.0.1 unresolvable: only the server under test answers
OFFLINE_CHROMIUM = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]


@pytest.fixture(scope="module")
def fitted(small_sim):
    return create_model("user_ridge").fit(small_sim)


@pytest.fixture(scope="module")
def client(small_sim, fitted):
    return TestClient(create_app(fitted, small_sim))


# ---------------------------------------------------------------------- the schema and /docs
def test_every_route_has_a_summary_and_a_description(client):
    paths = client.get("/openapi.json").json()["paths"]
    operations = [(path, method, op) for path, ops in paths.items() for method, op in ops.items()]
    assert {(path, method) for path, method, _ in operations} == {
        ("/health", "get"),
        ("/users/{user_id}/similar", "get"),
        ("/users/{user_id}/recommend", "get"),
        ("/users/similar", "post"),
        ("/score", "post"),
        ("/rank", "post"),
    }
    for path, method, op in operations:
        assert op.get("summary", "").strip(), f"{method} {path} has no summary"
        assert len(op.get("description", "").strip()) > 40, f"{method} {path} has no description"
        ok = op["responses"]["200"]
        assert ok["description"] != "Successful Response", f"{method} {path}: its answer is not described"
        assert "example" in ok["content"]["application/json"] or path == "/health"
    health = paths["/health"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert health == {"$ref": "#/components/schemas/Health"}


class _Assets(HTMLParser):
    """The URLs a page loads: ``src`` of scripts and images, ``href`` of links."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        values = dict(attrs)
        if tag in ("script", "img") and values.get("src"):
            self.urls.append(values["src"])
        if tag == "link" and values.get("href"):
            self.urls.append(values["href"])


def test_docs_assets_are_served_by_the_app_itself(client):
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    parser = _Assets()
    parser.feed(page.text)
    assert len(parser.urls) == 3  # the script, the style, the icon
    for url in parser.urls:
        assert url.startswith("/") and not url.startswith("//"), f"{url} is not served by the app"
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert asset.content == (SWAGGER_UI_DIR / url.rsplit("/", 1)[1]).read_bytes()
    assert "https://" not in page.text and "http://" not in page.text
    assert "url: '/openapi.json'" in page.text
    assert client.get("/redoc").status_code == 404  # ReDoc would load its script from a CDN
    # the licence travels with the vendored files, and an installed wheel has them (package data)
    assert "Apache License" in (SWAGGER_UI_DIR / "LICENSE").read_text()
    declared = tomllib.loads((README.parent / "pyproject.toml").read_text())["tool"]["setuptools"]
    patterns = declared["package-data"]["recsys"]
    for url in [*parser.urls, "/docs-assets/LICENSE", "/docs-assets/NOTICE"]:
        packaged = f"retrieval/static/swagger-ui/{url.rsplit('/', 1)[1]}"
        assert any(fnmatch.fnmatch(packaged, pattern) for pattern in patterns), packaged
    # behind a proxy that mounts the app on a path, the page asks for its assets and schema under that path
    mounted = TestClient(client.app, root_path="/api").get("/docs").text
    assert 'src="/api/docs-assets/swagger-ui-bundle.js"' in mounted and "url: '/api/openapi.json'" in mounted


def _render(chromium: str, url: str) -> str:
    flags = [chromium, *OFFLINE_CHROMIUM, "--virtual-time-budget=15000", "--dump-dom", url]
    return subprocess.run(flags, capture_output=True, text=True, timeout=90, check=True).stdout


def test_docs_render_offline_in_chromium(small_sim, fitted):
    """The rendered page lists every operation; the same check fails for FastAPI's default /docs, whose
    assets come from a CDN that this browser cannot reach."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not on PATH: /docs was not rendered in a browser")
    with serving(create_app(fitted, small_sim)) as base:
        dom = _render(chromium, f"{base}/docs")
    rendered = set(re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', dom))
    assert rendered == {
        "/health",
        "/users/{user_id}/similar",
        "/users/{user_id}/recommend",
        "/users/similar",
        "/score",
        "/rank",
    }
    assert "The users most similar to a fitted user" in dom  # a summary, shown beside its path
    default = FastAPI()
    default.get("/health")(lambda: {"status": "ok"})
    with serving(default) as base:
        dom = _render(chromium, f"{base}/docs")
    assert "cdn.jsdelivr.net" in dom and "opblock-summary-path" not in dom


# ---------------------------------------------------------------------- ids as numbers or strings
@pytest.fixture(scope="module")
def text_ids(small_sim):
    """small_sim with text ids that look like numbers ("196", as in a table whose id column mixes kinds)."""
    users = np.array([str(100 + i) for i in range(small_sim.n_users)], dtype=object)
    images = np.array([str(5000 + i) for i in range(small_sim.n_images)], dtype=object)
    data = dataclasses.replace(small_sim, user_ids=users, image_ids=images)
    return data, create_model("user_ridge").fit(data)


def test_ids_in_json_may_be_numbers_or_strings(text_ids):
    data, model = text_ids
    client = TestClient(create_app(model, data))
    user = int(data.train_users()[0])
    user_id = data.user_ids[user]
    images = np.arange(5)
    expected = model.predict(np.full(5, user), images)
    for sent_user, sent_images in [
        (int(user_id), [int(data.image_ids[i]) for i in images]),
        (user_id, [str(data.image_ids[i]) for i in images]),
    ]:
        answer = client.post("/score", json={"user_id": sent_user, "image_ids": sent_images})
        assert answer.status_code == 200, answer.text
        scores = [row["score"] for row in answer.json()["scores"]]
        np.testing.assert_allclose(scores, expected, rtol=1e-6)
        ranked = client.post("/rank", json={"user_id": sent_user, "image_ids": sent_images}).json()["ranking"]
        assert [row["image_id"] for row in ranked] == [data.image_ids[i] for i in np.argsort(-expected)]
    refs = [{"image_id": int(data.image_ids[i]), "score": 4.0} for i in range(3)]
    same = [{"image_id": str(data.image_ids[i]), "score": 4.0} for i in range(3)]
    by_number = client.post("/users/similar", json={"references": refs, "k": 5})
    assert (
        by_number.status_code == 200
        and by_number.json() == client.post("/users/similar", json={"references": same, "k": 5}).json()
    )
    # in a path an id is text, matched to the data's ids the same way
    assert client.get(f"/users/{user_id}/similar?k=3").status_code == 200
    assert client.get(f"/users/{user_id}/recommend?n=3").status_code == 200
    assert data.user_index(int(user_id)) == user == data.user_index(np.int64(user_id))
    # an unknown number is a 404 naming it; a JSON true or 1.5 is no id
    assert "99999" in assert_one_line(
        client.post("/score", json={"user_id": 99999, "image_ids": [5000]}), 404
    )
    for bad in (True, 1.5):
        detail = assert_one_line(client.post("/score", json={"user_id": bad, "image_ids": [5000]}), 422)
        assert detail.startswith("body.user_id")


def test_ids_given_as_strings_find_integer_ids(small_sim, client, fitted):
    assert small_sim.image_ids.dtype.kind == "i"
    user = int(small_sim.train_users()[0])
    ids = small_sim.image_ids[:3]
    answer = client.post(
        "/score", json={"user_id": small_sim.user_ids[user], "image_ids": [str(i) for i in ids]}
    )
    assert answer.status_code == 200, answer.text
    np.testing.assert_allclose(
        [row["score"] for row in answer.json()["scores"]],
        fitted.predict(np.full(3, user), np.arange(3)),
        rtol=1e-6,
    )


def test_a_body_without_a_json_content_type_is_a_422_that_says_so(client, small_sim):
    body = json.dumps({"user_id": small_sim.user_ids[0], "image_ids": [int(small_sim.image_ids[0])]})
    for headers, got in [({"content-type": "application/x-www-form-urlencoded"}, "got application/x-www-"), ({}, "got none")]:  # fmt: skip
        detail = assert_one_line(client.post("/score", content=body, headers=headers), 422)
        assert "Content-Type: application/json" in detail and got in detail
    ok = client.post("/score", content=body, headers={"content-type": "application/json"})
    assert ok.status_code == 200
