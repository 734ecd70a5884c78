"""What a person reads about the HTTP service and sends to it: ``/docs`` rendered with no internet (its assets
served by the app, checked in headless Chromium with every other host unreachable), a summary and a
description on every route, ids given as JSON numbers or strings, and every ``curl`` command of the README's
service sections run against a live server on simulated data."""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import tomllib
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from test_service import assert_one_line, serving

from recsys.models import create_model
from recsys.retrieval.service import EXAMPLES, SWAGGER_UI_DIR, Health, create_app

README = Path(__file__).resolve().parents[2] / "README.md"
#: the README sections whose curl commands are run (the service's endpoints are documented in them)
SERVICE_SECTIONS = ("## Recommendations (top-N)", "## Similar users")
#: the encoder of the ``tiny_sim`` fixture (tests/conftest.py)
TINY_ENCODER = "clip:recsys-test-tiny/random"
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
    # errors are documented as they are answered: {"detail": "one line"}, never FastAPI's validation list
    for path, method, op in operations:
        errors = {status: r for status, r in op["responses"].items() if status[0] in "45"}
        assert path == "/health" or {"404", "413", "422", "503", "504"} <= set(errors), f"{method} {path}"
        for answer in errors.values():
            schema = answer["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorDetail"}
    assert "HTTPValidationError" not in client.get("/openapi.json").json()["components"]["schemas"]


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


# ---------------------------------------------------------------------- the README's curl commands
def _complete(command: str) -> bool:
    """Whether ``command`` is a whole shell command (no open quote, no line continuation)."""
    if command.rstrip().endswith("\\"):
        return False
    try:
        shlex.split(command, comments=True)
    except ValueError:  # an open quote: the command goes on on the next line
        return False
    return True


def readme_curl_commands() -> list[str]:
    """Every ``curl`` command in the bash blocks of the README's service sections, as written there."""
    text = README.read_text()
    commands = []
    for heading in SERVICE_SECTIONS:
        start = text.index(f"\n{heading}\n")
        end = text.find("\n## ", start + 1)
        for block in re.findall(r"```bash\n(.*?)```", text[start:end], re.S):
            lines = block.splitlines()
            i = 0
            while i < len(lines):
                if lines[i].startswith("curl "):
                    command = lines[i]
                    while not _complete(command):
                        i += 1
                        command += "\n" + lines[i]
                    commands.append(command)
                i += 1
    return commands


def _same_shape(answer, example, where: str = "answer") -> None:
    """``answer`` has the keys of the documented ``example`` (dicts), and each item of a list has those of
    the example's first item; a neighbour's ``shared_*`` keys name the data's own category columns (and may
    list none)."""
    if isinstance(example, dict):
        assert isinstance(answer, dict), f"{where}: {answer!r} is not an object"
        shared = {key for key in example if key.startswith("shared_")}
        if shared:
            assert all(key.startswith("shared_") for key in set(answer) - set(example)), where
            assert set(example) - shared <= set(answer), where
        else:
            assert set(answer) == set(example), f"{where}: keys {sorted(answer)} != {sorted(example)}"
        for key in set(example) & set(answer):
            _same_shape(answer[key], example[key], f"{where}.{key}")
    elif isinstance(example, list):
        assert isinstance(answer, list), f"{where}: {answer!r} is not a list"
        # the categories two people share may be none; every other list answers with something
        assert answer or where.rsplit(".", 1)[-1].startswith("shared_"), f"{where} is empty"
        for i, item in enumerate(answer):
            _same_shape(item, example[0], f"{where}[{i}]")


#: the documented example (``EXAMPLES``) each route's answer must match
ROUTE_EXAMPLES = {
    "/users/{user_id}/similar": "similar",
    "/users/{user_id}/recommend": "recommend",
    "/users/similar": "similar",
    "/score": "score",
    "/rank": "rank",
}


def _route(path: str, templates: list[str]) -> str:
    """The route template (``/users/{user_id}/similar``) that a called path matches; a fixed path first."""
    for template in sorted(templates, key=lambda t: "{" in t):
        if re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), path):
            return template
    raise AssertionError(f"{path} is no route of the service")


def test_the_readme_curl_commands_answer_as_documented(tiny_sim, tiny_home, tmp_path, monkeypatch):
    """Each curl command is run by bash as the README writes it, against uvicorn serving user_ridge with the
    encoder of the data's features; only the port and the README's example ids (a user and two images of
    PAMELA) are replaced by ones of the simulated data."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not on PATH: the README's curl commands were not run")
    monkeypatch.setenv("RECSYS_HOME", str(tiny_home))
    _, data = tiny_sim
    model = create_model("user_ridge").fit(data)
    commands = readme_curl_commands()
    assert len(commands) >= 7, commands
    train = data.ratings["train"]
    user = int(np.bincount(train.user_idx).argmax())  # the user with the most ratings: has a taste
    ids = {
        "p_1a2b3c4d": str(data.user_ids[user]),
        "1049071": str(data.image_ids[train.image_idx[0]]),
        "1494357": str(data.image_ids[train.image_idx[1]]),
    }
    assert len(set(ids.values())) == 3
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "new.png")  # the file the README's upload sends
    wrap = "curl() { command curl -w '\\n%{http_code}' \"$@\"; }\n"  # the status code after the body
    called = set()
    app = create_app(model, data, encoder=TINY_ENCODER)
    templates = list(app.openapi()["paths"])
    with serving(app) as base:
        for command in commands:
            script = command.replace("localhost:8000", base.removeprefix("http://"))
            for readme_id, our_id in ids.items():
                script = re.sub(rf"\b{readme_id}\b", our_id, script)
            run = subprocess.run(
                ["bash", "-c", wrap + script], cwd=tmp_path, capture_output=True, text=True, timeout=120
            )
            assert run.returncode == 0, f"{command}\n{run.stderr}"
            body, _, status = run.stdout.rpartition("\n")
            assert status.startswith("2"), f"{command}\nanswered {status}: {body}"
            answer = json.loads(body)
            path = re.search(r"localhost:8000(/[^ '?]*)", command).group(1)
            if path == "/health":
                assert set(answer) == set(Health.model_fields) and answer["users"] == len(data.train_users())
                called.add(path)
                continue
            route = _route(path, templates)
            name = ROUTE_EXAMPLES[route]
            _same_shape(answer, EXAMPLES[name][200]["content"]["application/json"]["example"])
            called.add(route)
            asked = re.search(r'[?&]n=(\d+)|[?&]k=(\d+)|"k": (\d+)', script)
            if asked:  # as many as asked for (the data hold more than that)
                count = int(next(group for group in asked.groups() if group))
                listed = answer["recommendations"] if name == "recommend" else answer
                assert len(listed) == count, command
            if name == "score":
                expected = model.predict(
                    np.full(2, user),
                    np.array([data.image_index(int(ids[i])) for i in ("1049071", "1494357")]),
                )
                np.testing.assert_allclose([row["score"] for row in answer["scores"]], expected, rtol=1e-6)
            if name == "rank" and "new.png" in command:
                assert sorted(map(str, (row["image_id"] for row in answer["ranking"]))) == sorted(
                    [ids["1494357"], "new.png"]
                )
    assert called == set(templates)  # every endpoint has a README command


def test_the_readme_curl_commands_are_read_whole():
    """Commands over several lines (an open quote, a trailing backslash) are read whole, and every one that
    sends a body says it is JSON (without it the service answers 422, as the test above checks)."""
    commands = readme_curl_commands()
    rank = [command for command in commands if "new.png" in command]
    assert len(rank) == 1 and rank[0].count("\n") == 1 and rank[0].endswith("base64 -w0 new.png)\"'\"}]}'")
    continued = [command for command in commands if "\\\n" in command]
    assert len(continued) == 3 and all(command.rstrip().endswith("}'") for command in continued)
    assert all("-d " not in command or "Content-Type: application/json" in command for command in commands)
