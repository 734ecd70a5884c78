"""HTTP service (FastAPI): similar users and scores from one fitted model, loaded once.

    GET  /health                      model, dataset, user count
    GET  /users/{user_id}/similar?k=  the k most similar users of a fitted user
    GET  /users/{user_id}/recommend?n=&include_rated=  the n images the model scores highest for a fitted user,
                                      among those the user has not rated (``recsys.recommend``)
    POST /users/similar               {"references": [{"image_id", "score"}], "k"}: similar users of a new user
    POST /score                       {"user_id"} or {"references"}, plus {"image_ids"}: predicted scores
    POST /rank                        {"user_id"} or {"references"}, plus {"image_ids"} and/or {"images": [{"name",
                                      "data" (base64)}]}: the candidates best first, with their scores and ranks

Limits (:class:`ServiceLimits`; ``recsys serve`` sets them with the flags named, defaults in brackets):

* a request body is at most ``max_body_bytes`` (``--max-body-bytes``, [262144] = 256 KiB: twice the largest
  request within the other limits, 1000 references and 10,000 image ids, with PAMELA's ids). The size is
  checked before any JSON is parsed: from ``Content-Length`` when the client sends one, else while the body
  streams in. A larger body is answered 413 at once and never parsed (the server reads and discards the
  rest of it, so that the client gets its answer and can reuse the connection);
* a request holds at most ``max_references`` reference ratings (``--max-references``, [1000]; PAMELA's users
  rate about 320 images each) and at most ``max_image_ids`` image ids to score ([10000]); more is a 413. Folding
  in a new user costs cubic time in the number of references (user_ridge solves a k x k system: 10,000
  references took 19 s and 1.9 GB), which is what the reference limit bounds;
* ``k`` is at most 1000 (a 422 above);
* ``POST /rank`` takes at most ``MAX_UPLOADS`` ([32]) uploaded images, base64 in JSON (``{"name": "a.png",
  "data": "iVBOR..."}``); raise ``--max-body-bytes`` to upload more than a few small images. Uploaded images are
  embedded with the encoder of the data's features (``recsys serve --encoder NAME``; without it, uploads are a
  422) through the embedding cache, appended to the data as images without ratings or metadata, and scored by
  the model fitted again with them (``recsys.ranking``): a request with uploads costs one fit of the model, which
  ``--timeout`` bounds (fast fits: user_ridge, profile, mf; a deep model's fit can take longer than the timeout).

Concurrency: health checks are answered on the event loop and never wait for a model. Model calls (fold-in,
scoring, the index search, id look-ups) run in a pool of ``workers`` threads (``--workers``, [4]); numpy,
FAISS and torch release the GIL while they compute. At most ``max_queue`` calls ([64]) wait for a thread;
beyond that a request is answered 503 at once. A call not answered within ``timeout_s`` seconds
(``--timeout``, [10]; waiting included) is answered 504; a thread cannot be stopped, so a call already
running finishes in the background and holds its thread until then (the limits above bound how long that
is). The models only read their fitted state when they predict, so calls run side by side; a FAISS index on
a GPU (the user index, or one the model holds) must not be searched from two threads, and then model calls
take turns. ``workers=1`` serialises every model call. While it serves, the objects loaded before it started
(model, dataset, index) are frozen out of the garbage collector's full collections (``gc.freeze``), which
would otherwise stall every request when a large body's many parsed objects set one off.

Errors: every 4xx and 5xx body is ``{"detail": "one line"}``, and a detail never repeats the request body: 404
for an unknown user or image; 413 for a body or list over a limit; 422 for a malformed body, a value out of
range or k out of range (the first problem, e.g. ``body.references[3].score: Input should be a valid
number``, and how many more there are); 503 when the queue is full; 504 after the timeout; 500 (the
exception's type only) for a bug, with the traceback in the server's log.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations, and the request
# bodies are classes made per app (their list limits are the app's), which a string annotation cannot name.
import asyncio
import base64
import binascii
import gc
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from fastapi import FastAPI, HTTPException, Query
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recsys.data.dataset import Dataset, References
from recsys.errors import UnknownId, UserError
from recsys.models.base import Model
from recsys.retrieval.index import VectorIndex
from recsys.retrieval.similar import SimilarUsers

MAX_K = 1000
#: most images one POST /rank may upload
MAX_UPLOADS = 32
#: Defaults of :class:`ServiceLimits` (and of ``recsys serve``'s flags).
DEFAULT_MAX_BODY_BYTES = 1 << 18
DEFAULT_MAX_REFERENCES = 1000
DEFAULT_MAX_IMAGE_IDS = 10_000
DEFAULT_WORKERS = 4
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_QUEUE = 64
#: The longest ``detail`` sent (longer ones, e.g. naming a very long unknown id, are cut with "...").
MAX_DETAIL_CHARS = 300

T = TypeVar("T")


@dataclass(frozen=True)
class ServiceLimits:
    """How much one request may ask of the service, and how model calls are run (see the module docstring).

    Raises:
        UserError: a value that is not a positive number (naming the ``recsys serve`` flag).
    """

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_references: int = DEFAULT_MAX_REFERENCES
    max_image_ids: int = DEFAULT_MAX_IMAGE_IDS
    workers: int = DEFAULT_WORKERS
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_queue: int = DEFAULT_MAX_QUEUE

    def __post_init__(self) -> None:
        flags = {
            "max_body_bytes": "--max-body-bytes",
            "max_references": "--max-references",
            "max_image_ids": "max_image_ids",
            "workers": "--workers",
            "max_queue": "max_queue",
        }
        for name, flag in flags.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"{flag} must be a positive integer, got {value!r}")
        timeout = self.timeout_s
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 < timeout < float("inf")
        ):
            raise UserError(f"--timeout must be a positive number of seconds, got {timeout!r}")


class Reference(BaseModel):
    image_id: int | str
    score: float


class Upload(BaseModel):
    """A new candidate image: its name (its id in the answer) and its encoded bytes (PNG, JPEG, ...) in base64."""

    name: str = Field(min_length=1, max_length=200)
    data: str = Field(min_length=1)


def request_models(limits: ServiceLimits) -> tuple[type[BaseModel], type[BaseModel], type[BaseModel]]:
    """The bodies of POST /users/similar, POST /score and POST /rank, their lists capped by ``limits``.

    A list over its cap is refused from its length alone, before its items are validated.
    """

    class SimilarRequest(BaseModel):
        references: list[Reference] = Field(min_length=1, max_length=limits.max_references)
        k: int = Field(10, ge=1, le=MAX_K)

    class ScoreRequest(BaseModel):
        user_id: str | None = None
        references: list[Reference] | None = Field(None, max_length=limits.max_references)
        image_ids: list[int | str] = Field(min_length=1, max_length=limits.max_image_ids)

    class RankRequest(BaseModel):
        user_id: str | None = None
        references: list[Reference] | None = Field(None, max_length=limits.max_references)
        image_ids: list[int | str] = Field(default_factory=list, max_length=limits.max_image_ids)
        images: list[Upload] = Field(default_factory=list, max_length=MAX_UPLOADS)

    return SimilarRequest, ScoreRequest, RankRequest


# ---------------------------------------------------------------------- one-line errors
def one_line(text: object, limit: int = MAX_DETAIL_CHARS) -> str:
    """``text`` on one line (whitespace runs become one space), cut to ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _location(loc: tuple | list) -> str:
    """``("body", "references", 3, "score")`` -> ``body.references[3].score``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + one_line(part, 40)
    return out or "request"


#: body lists with a count limit: what they hold, and the limit's name (a longer list is a 413)
_COUNTED_LISTS = {
    "references": ("references", "max_references; recsys serve --max-references"),
    "image_ids": ("image ids", "max_image_ids"),
    "images": ("uploaded images", "MAX_UPLOADS"),
}


def describe_list_over_limit(errors: list[dict[str, Any]]) -> str | None:
    """``"1001 references is over the limit of 1000 (...)"`` when a counted body list is too long, else None."""
    for error in errors:
        loc = tuple(error.get("loc", ()))
        if (
            error.get("type") != "too_long"
            or len(loc) != 2
            or loc[0] != "body"
            or loc[1] not in _COUNTED_LISTS
        ):
            continue
        what, option = _COUNTED_LISTS[loc[1]]
        ctx = error.get("ctx") or {}
        count = ctx.get("actual_length")
        return (
            f"{'too many' if count is None else count} {what} is over the limit of "
            f"{ctx.get('max_length')} ({option})"
        )
    return None


def describe_validation_errors(errors: list[dict[str, Any]]) -> str:
    """The first validation error as ``where: what`` (never the input), and how many more there are."""
    if not errors:
        return "invalid request"
    first = errors[0]
    if first.get("type") == "json_invalid":
        position = first["loc"][-1] if len(first.get("loc", ())) > 1 else "?"
        reason = (first.get("ctx") or {}).get("error", "")
        line = f"body: invalid JSON at character {position}" + (f" ({reason})" if reason else "")
    else:
        line = f"{_location(first.get('loc', ()))}: {first.get('msg', 'invalid value')}"
    if len(errors) > 1:
        line += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    return one_line(line)


def _error(status: int, detail: object, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": one_line(detail)}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Every 4xx/5xx body becomes ``{"detail": "one line"}``; validation errors never echo the input."""

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return _error(exc.status_code, exc.detail, getattr(exc, "headers", None))

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = list(exc.errors())
        over = describe_list_over_limit(errors)
        if over is not None:
            return _error(413, over)
        return _error(422, describe_validation_errors(errors))

    async def server_error(request: Request, exc: Exception) -> JSONResponse:
        # Starlette's ServerErrorMiddleware sends this, then re-raises: the server logs the traceback
        return _error(500, f"internal error ({type(exc).__name__}); the server log has the details")

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, server_error)


# ---------------------------------------------------------------------- the body limit
class BodyLimitMiddleware:
    """Answer 413 for a request body over ``max_bytes`` before the app (and its JSON parser) sees it.

    A ``Content-Length`` over the limit is refused without reading the body (the server discards what the
    client still sends); a body without one is read up to the limit, then refused. A body within the limit is
    handed to the app as read.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _too_large(self, scope: Scope, receive: Receive, send: Send, size: int | None) -> None:
        detail = (
            f"request body {'' if size is None else f'of {size} bytes '}is over the limit of "
            f"{self.max_bytes} bytes (max_body_bytes; recsys serve --max-body-bytes)"
        )
        await _error(413, detail)(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None and length.strip().isdigit() and int(length) > self.max_bytes:
            await self._too_large(scope, receive, send, int(length))
            return
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self.max_bytes:
                await self._too_large(scope, receive, send, None)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        first: Message | None = {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        async def replay() -> Message:
            nonlocal first
            if first is not None:
                message, first = first, None
                return message
            return await receive()

        await self.app(scope, replay, send)


# ---------------------------------------------------------------------- the model pool
class ModelPool:
    """Model calls in ``workers`` threads: at most ``max_queue`` waiting, each answered within ``timeout_s``.

    :meth:`run` awaits a call without blocking the event loop. A full queue raises HTTPException 503 at
    once, a call not done within the timeout (waiting included) 504; a call that has not started by then
    never starts, one that has finishes in the background and frees its thread when done.
    """

    def __init__(self, workers: int, timeout_s: float, max_queue: int, *, serial: bool = False) -> None:
        self.workers = workers
        self.timeout_s = timeout_s
        self.max_queue = max_queue
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="recsys-model")
        self._lock = threading.Lock()
        self._pending = 0  # calls submitted and not yet done (queued, running, or timed out but running)
        self._serial = threading.Lock() if serial else nullcontext()

    @property
    def pending(self) -> int:
        """Calls queued or running, including timed-out calls still running."""
        return self._pending

    def _done(self, _: Future) -> None:
        with self._lock:
            self._pending -= 1

    def _call(self, fn: Callable[[], T]) -> T:
        with self._serial:
            return fn()

    async def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` in a worker thread; HTTPException 503 (queue full) or 504 (timeout)."""
        with self._lock:
            if self._pending >= self.workers + self.max_queue:
                raise HTTPException(
                    503,
                    f"the service is busy: {self._pending} model calls are running or waiting "
                    f"(workers + max_queue = {self.workers + self.max_queue}); retry later",
                )
            self._pending += 1
        try:
            future = self._executor.submit(self._call, fn)
        except RuntimeError:  # shut down
            with self._lock:
                self._pending -= 1
            raise HTTPException(503, "the service is shutting down") from None
        future.add_done_callback(self._done)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout_s)
        except TimeoutError:
            future.cancel()  # a call still waiting never runs
            raise HTTPException(
                504,
                f"the model did not answer within {self.timeout_s:g} s (timeout_s; recsys serve --timeout); "
                "send fewer references or image ids, or retry later",
            ) from None

    def shutdown(self) -> None:
        """Stop taking calls; calls still waiting are cancelled, running ones finish in their threads."""
        self._executor.shutdown(wait=False, cancel_futures=True)


def _holds_gpu_index(*objects: object) -> bool:
    """Whether any of ``objects`` is, or has an attribute that is, a VectorIndex searched on a GPU."""
    for obj in objects:
        for value in (obj, *getattr(obj, "__dict__", {}).values()):
            if isinstance(value, VectorIndex) and getattr(value, "device_", "cpu") == "cuda":
                return True
    return False


# ---------------------------------------------------------------------- the app
def create_app(
    model: Model,
    dataset: Dataset,
    similar: SimilarUsers | None = None,
    limits: ServiceLimits | None = None,
    *,
    encoder: str | None = None,
    checkpoint: str | None = None,
) -> FastAPI:
    """A FastAPI app serving ``model`` (fitted on ``dataset``); the user index is built once here if not given.

    Args:
        limits: request limits, workers and timeout; the defaults of :class:`ServiceLimits` when None.
        encoder, checkpoint: the encoder of the data's image features, which embeds images uploaded to
            ``POST /rank`` (loaded on the first upload); None: uploads are refused.
    """
    similar = similar or SimilarUsers(model, dataset)
    limits = limits or ServiceLimits()
    pool = ModelPool(
        limits.workers,
        limits.timeout_s,
        limits.max_queue,
        serial=_holds_gpu_index(model, similar, similar.index),
    )
    SimilarRequest, ScoreRequest, RankRequest = request_models(limits)
    known = np.zeros(dataset.n_users, dtype=bool)
    known[dataset.train_users()] = True
    health_body = {
        "status": "ok",
        "model": model.name,
        "dataset": dataset.name,
        "simulated": dataset.simulated,
        "users": int(known.sum()),
        "images": dataset.n_images,
    }

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # The model, dataset and index are loaded by now and live as long as the server. Frozen out of the
        # cyclic garbage collector's full collections (which the many objects a large JSON body parses into
        # set off), they are not scanned again: such a collection stalled every request for 0.1-0.4 s.
        gc.freeze()
        try:
            yield
        finally:
            pool.shutdown()
            gc.unfreeze()

    app = FastAPI(
        title="recsys similar users",
        description=f"{model.name} on {dataset.name}" + (" (SIMULATED data)" if dataset.simulated else ""),
        lifespan=lifespan,
    )
    app.state.pool = pool
    app.state.limits = limits
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=limits.max_body_bytes)

    def image_indices(image_ids) -> np.ndarray:
        return np.array([dataset.image_index(i) for i in image_ids], np.int64)

    def references_of(refs: list[Reference], user_idx: int = -1) -> References:
        scores = np.array([r.score for r in refs], np.float32)
        lo, hi = dataset.score_range
        if not np.isfinite(scores).all() or (scores < lo).any() or (scores > hi).any():
            raise HTTPException(422, f"reference scores must lie in [{lo:g}, {hi:g}]")
        return References(user_idx, image_indices([r.image_id for r in refs]), scores)

    async def run(call: Callable[[], T]) -> T:
        try:
            return await pool.run(call)
        except UnknownId as err:
            raise HTTPException(404, str(err)) from None
        except UserError as err:
            raise HTTPException(422, str(err)) from None

    @app.get("/health")
    async def health() -> dict:
        return dict(health_body)

    @app.get("/users/{user_id}/similar")
    async def similar_to_user(user_id: str, k: int = Query(10, ge=1, le=MAX_K)) -> list[dict]:
        return await run(lambda: similar.by_user(user_id, k))

    @app.get("/users/{user_id}/recommend")
    async def recommend_to_user(
        user_id: str, n: int = Query(10, ge=1, le=MAX_K), include_rated: bool = False
    ) -> dict:
        from recsys.recommend import recommend

        def call() -> list[dict]:
            if not model.known_[dataset.user_index(user_id)]:
                raise HTTPException(
                    404, f"user {user_id!r} was not fitted; no recommendations without ratings"
                )
            return recommend(model, dataset, user_id=user_id, n=n, include_rated=include_rated)

        return {"model": model.name, "user_id": user_id, "recommendations": await run(call)}

    @app.post("/users/similar")
    async def similar_to_references(body: SimilarRequest) -> list[dict]:
        def call() -> list[dict]:
            refs = references_of(body.references)
            return similar.by_references(dataset.image_ids[refs.image_idx].tolist(), refs.score, body.k)

        return await run(call)

    @app.post("/score")
    async def score(body: ScoreRequest) -> dict:
        if (body.user_id is None) == (body.references is None):
            raise HTTPException(
                422, "give either user_id (a fitted user) or references (a new user), not both"
            )

        def call() -> np.ndarray:
            images = image_indices(body.image_ids)
            if body.user_id is not None:
                user = dataset.user_index(body.user_id)
                if not known[user]:
                    raise HTTPException(
                        404, f"user {body.user_id!r} was not fitted; send their references instead"
                    )
                return model.predict(np.full(len(images), user), images)
            refs = references_of(body.references)
            return model.predict_new([refs], [images])[0]

        scores = await run(call)
        return {
            "model": model.name,
            "scores": [
                {"image_id": i, "score": float(s)} for i, s in zip(body.image_ids, scores, strict=True)
            ],
        }

    encoders: dict[str, Any] = {}
    encoder_lock = threading.Lock()

    def embed_uploads(uploads: list[tuple[str, bytes]]) -> np.ndarray:
        """Embedding rows of uploaded images, by the data's encoder through the embedding cache."""
        from features.embed import embed_image_bytes
        from features.encoders import load_encoder
        from recsys.ranking import check_encoder

        name = check_encoder(dataset, encoder)
        with encoder_lock:
            if name not in encoders:
                encoders[name] = load_encoder(name, checkpoint=checkpoint)
        items = [(n, blob, f"images[{i}] ({n})") for i, (n, blob) in enumerate(uploads)]
        return embed_image_bytes(items, encoders[name], progress=False, num_workers=0).embedding

    def refit(data: Dataset) -> Model:
        return model if data is dataset else model.clone().fit(data)

    @app.post("/rank")
    async def rank(body: RankRequest) -> dict:
        from recsys.ranking import rank_candidates

        if (body.user_id is None) == (body.references is None):
            raise HTTPException(
                422, "give either user_id (a fitted user) or references (a new user), not both"
            )
        if not body.image_ids and not body.images:
            raise HTTPException(422, "give candidates: image_ids of the data, images to upload, or both")
        uploads = []
        for i, upload in enumerate(body.images):
            try:
                uploads.append((upload.name, base64.b64decode(upload.data, validate=True)))
            except binascii.Error:
                raise HTTPException(422, f"body.images[{i}].data: not base64") from None

        def call() -> list[dict]:
            refs = None if body.references is None else references_of(body.references)
            new = None
            if uploads:
                new = ([n for n, _ in uploads], embed_uploads(uploads))
            return rank_candidates(
                refit, dataset, list(body.image_ids), new_images=new, user_id=body.user_id, references=refs
            )

        return {"model": model.name, "ranking": await run(call)}

    return app
