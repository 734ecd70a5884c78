"""What a person sends to the HTTP service: ids given as JSON numbers or strings."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from fastapi.testclient import TestClient
from test_service import assert_one_line

from recsys.models import create_model
from recsys.retrieval.service import create_app


@pytest.fixture(scope="module")
def fitted(small_sim):
    return create_model("user_ridge").fit(small_sim)


@pytest.fixture(scope="module")
def client(small_sim, fitted):
    return TestClient(create_app(fitted, small_sim))


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
