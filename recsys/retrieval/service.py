"""HTTP service (FastAPI): similar users and scores from one fitted model, loaded once.

    GET  /health                      model, dataset, user count
    GET  /users/{user_id}/similar?k=  the k most similar users of a fitted user
    POST /users/similar               {"references": [{"image_id", "score"}], "k"}: similar users of a new user
    POST /score                       {"user_id"} or {"references"}, plus {"image_ids"}: predicted scores

Bad input is a 4xx with a one-line ``detail``: 404 for an unknown user or image, 422 for a malformed body or
k out of range. Requests are served concurrently; model calls are serialised by a lock because not every
model's predict is thread-safe (torch modules, lazily built caches).
"""

from __future__ import annotations

import threading

import numpy as np
from fastapi import FastAPI, HTTPException, Query
from pydantic import BaseModel, Field

from recsys.data.dataset import Dataset, References
from recsys.errors import UnknownId, UserError
from recsys.models.base import Model
from recsys.retrieval.similar import SimilarUsers

MAX_K = 1000
MAX_IMAGES = 10_000


class Reference(BaseModel):
    image_id: int | str
    score: float


class SimilarRequest(BaseModel):
    references: list[Reference] = Field(min_length=1, max_length=MAX_IMAGES)
    k: int = Field(10, ge=1, le=MAX_K)


class ScoreRequest(BaseModel):
    user_id: str | None = None
    references: list[Reference] | None = Field(None, max_length=MAX_IMAGES)
    image_ids: list[int | str] = Field(min_length=1, max_length=MAX_IMAGES)


def create_app(model: Model, dataset: Dataset, similar: SimilarUsers | None = None) -> FastAPI:
    """A FastAPI app serving ``model`` (fitted on ``dataset``); the user index is built once here if not given."""
    similar = similar or SimilarUsers(model, dataset)
    lock = threading.Lock()
    known = np.zeros(dataset.n_users, dtype=bool)
    known[dataset.train_users()] = True
    app = FastAPI(
        title="recsys similar users",
        description=f"{model.name} on {dataset.name}" + (" (SIMULATED data)" if dataset.simulated else ""),
    )

    def image_indices(image_ids) -> np.ndarray:
        try:
            return np.array([dataset.image_index(i) for i in image_ids], np.int64)
        except UnknownId as err:
            raise HTTPException(404, str(err)) from None

    def references_of(refs: list[Reference], user_idx: int = -1) -> References:
        scores = np.array([r.score for r in refs], np.float32)
        lo, hi = dataset.score_range
        if not np.isfinite(scores).all() or (scores < lo).any() or (scores > hi).any():
            raise HTTPException(422, f"reference scores must lie in [{lo:g}, {hi:g}]")
        return References(user_idx, image_indices([r.image_id for r in refs]), scores)

    def run(call):
        try:
            with lock:
                return call()
        except UnknownId as err:
            raise HTTPException(404, str(err)) from None
        except UserError as err:
            raise HTTPException(422, str(err)) from None

    @app.get("/health")
    def health() -> dict:
        return {
            "status": "ok",
            "model": model.name,
            "dataset": dataset.name,
            "simulated": dataset.simulated,
            "users": int(known.sum()),
            "images": dataset.n_images,
        }

    @app.get("/users/{user_id}/similar")
    def similar_to_user(user_id: str, k: int = Query(10, ge=1, le=MAX_K)) -> list[dict]:
        return run(lambda: similar.by_user(user_id, k))

    @app.post("/users/similar")
    def similar_to_references(body: SimilarRequest) -> list[dict]:
        refs = references_of(body.references)
        return run(
            lambda: similar.by_references(dataset.image_ids[refs.image_idx].tolist(), refs.score, body.k)
        )

    @app.post("/score")
    def score(body: ScoreRequest) -> dict:
        if (body.user_id is None) == (body.references is None):
            raise HTTPException(
                422, "give either user_id (a fitted user) or references (a new user), not both"
            )
        images = image_indices(body.image_ids)
        if body.user_id is not None:
            try:
                user = dataset.user_index(body.user_id)
            except UnknownId as err:
                raise HTTPException(404, str(err)) from None
            if not known[user]:
                raise HTTPException(
                    404, f"user {body.user_id!r} was not fitted; send their references instead"
                )
            scores = run(lambda: model.predict(np.full(len(images), user), images))
        else:
            refs = references_of(body.references)
            scores = run(lambda: model.predict_new([refs], [images])[0])
        return {
            "model": model.name,
            "scores": [
                {"image_id": i, "score": float(s)} for i, s in zip(body.image_ids, scores, strict=True)
            ],
        }

    return app
