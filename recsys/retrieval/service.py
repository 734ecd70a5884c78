"""HTTP service (FastAPI): similar users and scores from one fitted model, loaded once.

    GET  /health                      model, dataset, user count
    GET  /users/{user_id}/similar?k=  the k most similar users of a fitted user
    GET  /users/{user_id}/recommend?n=&include_rated=  the n images the model scores highest for a fitted user,
                                      among those the user has not rated (``recsys.recommend``)
    POST /users/similar               {"references": [{"image_id", "score"}], "k"}: similar users of a new user
    POST /score                       {"user_id"} or {"references"}, plus {"image_ids"}: predicted scores
    POST /rank                        {"user_id"} or {"references"}, plus {"image_ids"} and/or {"images": [{"name",
                                      "data" (base64)}]}: the candidates best first, with their scores and ranks
    GET  /docs                        Swagger UI of the OpenAPI schema (``/openapi.json``), its script and style
                                      served by the service itself from ``static/swagger-ui`` (no internet needed)

Ids: a user or image id in a JSON body may be a JSON number or a string, and is matched to the data's ids
either way (``196`` finds user ``"196"`` of a table whose ids are text, ``"196"`` finds user 196 of one whose
ids are integers; ``Dataset.user_index``); in a path it is text, matched the same way.

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
* ``POST /rank`` takes uploaded images, base64 in JSON (``{"name": "a.png", "data": "iVBOR..."}``), within a
  budget checked before any work starts (the base64 decoded and each image's header read, nothing decoded
  further): at most ``max_uploads`` images ([32]), ``max_upload_bytes`` bytes of them ([8 MiB]) and
  ``max_upload_pixels`` pixels in all (``--max-upload-pixels``, [33554432] = 32 megapixels; this also refuses a
  decompression bomb by its header); over it, 413. Raise ``--max-body-bytes`` to upload more than a few small
  images. Uploads are embedded with the encoder of the data's features (``recsys serve --encoder NAME``;
  without it, uploads are a 422) through the embedding cache, in a pool of their own (below), and scored by the
  fitted model from their features (``Model.with_new_images``): no refit, nothing added to the data.

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

The encoder is loaded in the background as the service starts. Uploads are embedded in a separate pool of
``upload_workers`` threads (``--upload-workers``, [1]) with at most ``upload_queue`` requests waiting ([2]), so
that encoder work never holds a thread of the model pool: a request that finds that pool full is answered 503 at
once (``Retry-After: 1``). On Linux these threads (and torch's threads they start) run at a lower CPU priority
(nice + ``UPLOAD_NICENESS``), so that while both pools compute, the cores go to model calls first. An upload
request whose client goes away (checked every 50 ms while it waits) or that times out is abandoned: its
embedding never starts if it was waiting, and stops at its next batch of ``UPLOAD_BATCH`` images if it was
running. Its scoring then takes one short call of the model pool, within what is left of the same timeout.

Errors: every 4xx and 5xx body is ``{"detail": "one line"}``, and a detail never repeats the request body: 404
for an unknown user or image; 413 for a body or list over a limit; 422 for a malformed body, a value out of
range or k out of range (the first problem, e.g. ``body.references[3].score: Input should be a valid
number``, and how many more there are), or an upload that is not a readable image, or a model that cannot
score new images; 503 when a queue is full; 504 after the timeout; 499 (in the log only) when the client went
away; 500 (the exception's type only) for a bug, with the traceback in the server's log.
"""

# No ``from __future__ import annotations`` here: FastAPI reads the endpoints' annotations, and the request
# bodies are classes made per app (their list limits are the app's), which a string annotation cannot name.
import asyncio
import base64
import binascii
import contextlib
import gc
import io
import os
import sys
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from fastapi import FastAPI, HTTPException, Query
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field, StrictInt, StrictStr
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recsys.data.dataset import Dataset, References
from recsys.errors import UnknownId, UserError
from recsys.models.base import Model
from recsys.retrieval.index import VectorIndex
from recsys.retrieval.similar import SimilarUsers

MAX_K = 1000
#: the longest prompt POST /rank embeds (the text encoder truncates far shorter ones anyway)
MAX_PROMPT_CHARS = 2000
#: Defaults of :class:`ServiceLimits` (and of ``recsys serve``'s flags).
DEFAULT_MAX_BODY_BYTES = 1 << 18
DEFAULT_MAX_REFERENCES = 1000
DEFAULT_MAX_IMAGE_IDS = 10_000
DEFAULT_WORKERS = 4
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_QUEUE = 64
DEFAULT_MAX_UPLOADS = 32
DEFAULT_MAX_UPLOAD_BYTES = 8 << 20
DEFAULT_MAX_UPLOAD_PIXELS = 1 << 25
DEFAULT_UPLOAD_WORKERS = 1
DEFAULT_UPLOAD_QUEUE = 2
#: uploads embedded per encoder call; an abandoned upload request stops between two such batches
UPLOAD_BATCH = 8
#: how much lower the encoder threads' CPU priority is than the model threads' (Linux nice value)
UPLOAD_NICENESS = 10
#: how often (s) a waiting upload request checks whether its client went away
DISCONNECT_POLL_S = 0.05
#: The longest ``detail`` sent (longer ones, e.g. naming a very long unknown id, are cut with "...").
MAX_DETAIL_CHARS = 300

#: Swagger UI's script, style and icon (swagger-ui-dist, Apache-2.0; its LICENSE and NOTICE beside them)
SWAGGER_UI_DIR = Path(__file__).parent / "static" / "swagger-ui"
#: where the app serves them
DOCS_ASSETS_URL = "/docs-assets"

T = TypeVar("T")

#: A user or image id in a JSON body: a number or a string, matched to the data's ids either way (a JSON
#: true or 1.5 is a 422, not an id)
Id = StrictInt | StrictStr


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
    max_uploads: int = DEFAULT_MAX_UPLOADS
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_upload_pixels: int = DEFAULT_MAX_UPLOAD_PIXELS
    upload_workers: int = DEFAULT_UPLOAD_WORKERS
    upload_queue: int = DEFAULT_UPLOAD_QUEUE

    def __post_init__(self) -> None:
        flags = {
            "max_body_bytes": "--max-body-bytes",
            "max_references": "--max-references",
            "max_image_ids": "max_image_ids",
            "workers": "--workers",
            "max_queue": "max_queue",
            "max_uploads": "max_uploads",
            "max_upload_bytes": "max_upload_bytes",
            "max_upload_pixels": "--max-upload-pixels",
            "upload_workers": "--upload-workers",
            "upload_queue": "upload_queue",
        }
        for name, flag in flags.items():
            value = getattr(self, name)
            low = 0 if name == "upload_queue" else 1
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                kind = "a non-negative" if low == 0 else "a positive"
                raise UserError(f"{flag} must be {kind} integer, got {value!r}")
        timeout = self.timeout_s
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 < timeout < float("inf")
        ):
            raise UserError(f"--timeout must be a positive number of seconds, got {timeout!r}")


class Reference(BaseModel):
    """One rating of a new user: an image of the data and the score the person gave it."""

    image_id: Id
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
        user_id: Id | None = None
        references: list[Reference] | None = Field(None, max_length=limits.max_references)
        image_ids: list[Id] = Field(min_length=1, max_length=limits.max_image_ids)

    class RankRequest(BaseModel):
        user_id: Id | None = None
        references: list[Reference] | None = Field(None, max_length=limits.max_references)
        image_ids: list[Id] = Field(default_factory=list, max_length=limits.max_image_ids)
        images: list[Upload] = Field(default_factory=list, max_length=limits.max_uploads)
        prompt: str | None = Field(
            None,
            min_length=1,
            max_length=MAX_PROMPT_CHARS,
            description="the prompt the uploaded images were generated from (for models conditioned on it, pal); "
            "without it they are scored under the data's mean prompt",
        )

    return SimilarRequest, ScoreRequest, RankRequest


class Health(BaseModel):
    """What ``GET /health`` answers."""

    status: str = Field(description='"ok" while the service answers')
    model: str = Field(description="the served model's name")
    dataset: str = Field(description="the data it was fitted on (simulated data say so in the name)")
    simulated: bool = Field(description="whether the data are simulated (not real people)")
    users: int = Field(description="fitted users: those the model was fitted on, found by id")
    images: int = Field(description="images of the data")


class ErrorDetail(BaseModel):
    """Every 4xx and 5xx answer: one line that never repeats the request."""

    detail: str = Field(description="what went wrong, in one line")


#: the errors every model route may answer (``install_error_handlers`` makes each body an ErrorDetail)
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorDetail, "description": description}
    for status, description in [
        (404, "An unknown user or image, or a user the model was not fitted on."),
        (413, "A body or a list over a limit of the service (the detail names it)."),
        (422, "A malformed body, a value out of range, or a body not sent as JSON (the first problem)."),
        (503, "Every model thread is busy and the queue is full: retry."),
        (504, "The model did not answer within the service's timeout."),
    ]
}


def _example(example: Any, description: str) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route whose 200 body is ``example`` (shown in the schema and in /docs), and its
    errors."""
    ok = {"description": description, "content": {"application/json": {"example": example}}}
    return {200: ok, **_ERRORS}


_NEIGHBOUR = {
    "user_id": "p_1a2b3c4d",
    "score": 0.83,
    "shared_group": ["portrait"],
    "shared_style": ["watercolour"],
    "co_rated": 12,
    "agreement": 0.61,
}
#: the documented 200 bodies of the routes (their keys are the ones the code returns)
EXAMPLES = {
    "similar": _example(
        [_NEIGHBOUR],
        "The k most similar fitted users, most similar first: the cosine similarity of their taste vectors "
        "(score), the categories (e.g. group, style) both rate above their own average, how many images both "
        "rated (co_rated) and their Pearson agreement on those (null under 3).",
    ),
    "recommend": _example(
        {
            "model": "mf",
            "user_id": "p_1a2b3c4d",
            "recommendations": [{"rank": 1, "image_id": 1494357, "score": 4.2, "rated": False}],
        },
        "The n highest-scored images, best first; rated says whether the user rated the image in the data the "
        "model was fitted on (only true with include_rated=true).",
    ),
    "score": _example(
        {"model": "user_ridge", "scores": [{"image_id": 1494357, "score": 3.7}]},
        "One predicted score per image id, in the order of the request's image_ids.",
    ),
    "rank": _example(
        {
            "model": "user_ridge",
            "ranking": [
                {"rank": 1, "image_id": "new.png", "score": 4.1},
                {"rank": 2, "image_id": 1494357, "score": 3.7},
            ],
        },
        "The candidates best first; an uploaded image is named by its name.",
    ),
}


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
    "images": ("uploaded images", "max_uploads"),
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


def _is_body_error(errors: list[dict[str, Any]]) -> bool:
    """Whether any validation error is about the request body."""
    return any(tuple(error.get("loc", ()))[:1] == ("body",) for error in errors)


def _is_json_type(content_type: str) -> bool:
    """Whether a Content-Type header names JSON (``application/json``, ``application/x+json``), as FastAPI
    decides whether to parse a body as JSON."""
    kind = content_type.split(";")[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


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
        content_type = request.headers.get("content-type", "")
        if _is_body_error(errors) and not _is_json_type(content_type):
            # FastAPI reads a body of another type as a form: its errors would not say what is wrong
            got = one_line(content_type.split(";")[0], 60) or "none"
            return _error(
                422,
                f"the body must be JSON sent with Content-Type: application/json (got {got}; "
                "curl: -H 'Content-Type: application/json')",
            )
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


# ---------------------------------------------------------------------- the pools
class Abandoned(Exception):
    """Raised inside work whose request was abandoned (the client went away or the request timed out)."""


class ModelPool:
    """Calls in ``workers`` threads: at most ``max_queue`` waiting, each answered within ``timeout_s``.

    :meth:`run` awaits a call without blocking the event loop. A full queue raises HTTPException 503 at
    once, a call not done within the timeout (waiting included) 504; a call that has not started by then
    never starts, one that has finishes in the background and frees its thread when done (or stops early, when
    it checks the ``cancel`` event it was given). ``what``, ``who`` and ``limits`` name the calls, what answers
    them and the limits in messages: the service has one pool for model calls and one for embedding uploads.
    ``niceness`` > 0 lowers the CPU priority of the pool's threads (and of the threads they start: torch's) on
    Linux, so that its work yields the cores to the other pool's.
    """

    def __init__(
        self,
        workers: int,
        timeout_s: float,
        max_queue: int,
        *,
        serial: bool = False,
        what: str = "model calls",
        who: str = "model",
        limits: str = "workers + max_queue",
        niceness: int = 0,
    ) -> None:
        self.workers = workers
        self.timeout_s = timeout_s
        self.max_queue = max_queue
        self.what, self.who, self.limits = what, who, limits
        self._executor = ThreadPoolExecutor(
            workers,
            thread_name_prefix=f"recsys-{what.split()[0]}",
            initializer=_lower_thread_priority if niceness else None,
            initargs=(niceness,),
        )
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

    async def run(
        self,
        fn: Callable[[], T],
        *,
        timeout_s: float | None = None,
        cancel: threading.Event | None = None,
        gone: Callable[[], Awaitable[bool]] | None = None,
    ) -> T:
        """``fn()`` in a worker thread; HTTPException 503 (queue full), 504 (timeout: ``timeout_s``, else the
        pool's) or 499 (``gone()``, polled while waiting, says the client went away). On 504 or 499 a call still
        waiting never runs and ``cancel`` is set, for a running call that checks it."""
        with self._lock:
            if self._pending >= self.workers + self.max_queue:
                raise HTTPException(
                    503,
                    f"the service is busy: {self._pending} {self.what} are running or waiting "
                    f"({self.limits} = {self.workers + self.max_queue}); retry later",
                    headers={"Retry-After": "1"},
                )
            self._pending += 1
        try:
            future = self._executor.submit(self._call, fn)
        except RuntimeError:  # shut down
            with self._lock:
                self._pending -= 1
            raise HTTPException(503, "the service is shutting down") from None
        future.add_done_callback(self._done)
        waiting = asyncio.wrap_future(future)
        # the error of a call abandoned before it ended is read here, so that asyncio does not log it
        waiting.add_done_callback(lambda f: f.cancelled() or f.exception())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self.timeout_s if timeout_s is None else timeout_s)
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise TimeoutError
                poll = remaining if gone is None else min(remaining, DISCONNECT_POLL_S)
                done, _ = await asyncio.wait({waiting}, timeout=poll)
                if done:
                    return waiting.result()
                if gone is not None and await gone():
                    self._abandon(future, cancel)
                    raise HTTPException(499, "the client went away; its request was abandoned")
        except TimeoutError:
            self._abandon(future, cancel)
            raise HTTPException(
                504,
                f"the {self.who} did not answer within {self.timeout_s:g} s (timeout_s; recsys serve --timeout); "
                "send fewer references, image ids or uploads, or retry later",
            ) from None
        except asyncio.CancelledError:  # the server cancelled the request
            self._abandon(future, cancel)
            raise

    @staticmethod
    def _abandon(future: Future, cancel: threading.Event | None) -> None:
        future.cancel()  # a call still waiting never runs
        if cancel is not None:
            cancel.set()  # a running call that checks it stops

    def shutdown(self) -> None:
        """Stop taking calls; calls still waiting are cancelled, running ones finish in their threads."""
        self._executor.shutdown(wait=False, cancel_futures=True)


def _lower_thread_priority(niceness: int) -> None:
    """Raise the calling thread's nice value by ``niceness`` (Linux only: there a nice value is per thread, and
    threads it starts inherit it; elsewhere it would apply to the whole process, so nothing is done)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)


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
            ``POST /rank`` (loaded in the background when the service starts, else by the first upload;
            ``UploadEmbedder``); None: uploads are refused.
    """
    similar = similar or SimilarUsers(model, dataset)
    limits = limits or ServiceLimits()
    pool = ModelPool(
        limits.workers,
        limits.timeout_s,
        limits.max_queue,
        serial=_holds_gpu_index(model, similar, similar.index),
    )
    upload_pool = ModelPool(
        limits.upload_workers,
        limits.timeout_s,
        limits.upload_queue,
        what="upload requests",
        who="image encoder",
        limits="upload_workers + upload_queue",
        niceness=UPLOAD_NICENESS,
    )
    embedder = UploadEmbedder(encoder, checkpoint) if encoder is not None else None
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
        if (
            embedder is not None
        ):  # the encoder loads while the service starts answering, not in the first upload
            threading.Thread(target=embedder.preload, name="recsys-encoder-load", daemon=True).start()
        try:
            yield
        finally:
            pool.shutdown()
            upload_pool.shutdown()
            gc.unfreeze()

    app = FastAPI(
        title="recsys: similar users, recommendations, scores",
        description=(
            f"{model.name} on {dataset.name}"
            + (" (SIMULATED data)" if dataset.simulated else "")
            + '. Ids in a JSON body may be numbers or strings; every error is {"detail": "one line"}.'
        ),
        lifespan=lifespan,
        docs_url=None,  # served below with local assets: the default page loads them from a CDN
        redoc_url=None,  # ReDoc's script would come from a CDN too
    )
    app.mount(DOCS_ASSETS_URL, StaticFiles(directory=SWAGGER_UI_DIR), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")  # behind a proxy that mounts the app on a path
        return get_swagger_ui_html(
            openapi_url=root + (app.openapi_url or "/openapi.json"),
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_ASSETS_URL}/favicon-32x32.png",
        )

    app.state.pool = pool
    app.state.upload_pool = upload_pool
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

    async def run(call: Callable[[], T], on: ModelPool = pool, **options: Any) -> T:
        try:
            return await on.run(call, **options)
        except UnknownId as err:
            raise HTTPException(404, str(err)) from None
        except UserError as err:
            raise HTTPException(422, str(err)) from None

    @app.get(
        "/health",
        summary="Whether the service is up, and what it serves",
        description="The model, the data and how many users and images they hold. Answered at once, even while "
        "every model thread is busy.",
        response_model=Health,
        response_description="The service's model and data, and how many users and images they hold.",
    )
    async def health() -> dict:
        return dict(health_body)

    @app.get(
        "/users/{user_id}/similar",
        summary="The users most similar to a fitted user",
        description="The k fitted users whose taste vectors are closest (cosine) to this user's, most similar "
        "first, never the user itself. 404 for an unknown user; 422 for a user without training ratings (send "
        "their references to POST /users/similar) or k outside 1..1000.",
        responses=EXAMPLES["similar"],
    )
    async def similar_to_user(user_id: str, k: int = Query(10, ge=1, le=MAX_K)) -> list[dict]:
        return await run(lambda: similar.by_user(user_id, k))

    @app.get(
        "/users/{user_id}/recommend",
        summary="The n images the model scores highest for a fitted user",
        description="Every image of the data scored by the model for this user; the images the user rated in the "
        "data the model was fitted on are left out unless include_rated=true; best first, equal scores in the "
        "data's order of images. 404 for an unknown user or one the model was not fitted on.",
        responses=EXAMPLES["recommend"],
    )
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

        recommendations = await run(call)
        own_id = dataset.user_ids[[dataset.user_index(user_id)]].tolist()[
            0
        ]  # as the data holds it: 196, not "196"
        return {"model": model.name, "user_id": own_id, "recommendations": recommendations}

    @app.post(
        "/users/similar",
        summary="The users most similar to a new user, from reference ratings",
        description="The new user is folded into the model's taste space from their references (image ids of the "
        "data and the scores they gave), then the k nearest fitted users are found. 404 for an unknown image; "
        "422 for a score outside the data's range; 413 for more references than the service allows.",
        responses=EXAMPLES["similar"],
    )
    async def similar_to_references(body: SimilarRequest) -> list[dict]:
        def call() -> list[dict]:
            refs = references_of(body.references)
            return similar.by_references(dataset.image_ids[refs.image_idx].tolist(), refs.score, body.k)

        return await run(call)

    @app.post(
        "/score",
        summary="Predicted scores of images for a fitted or a new user",
        description="Give either user_id (a fitted user) or references (a new user, folded in without a refit), "
        "and the image_ids to score. 404 for an unknown user or image, or a user the model was not fitted on.",
        responses=EXAMPLES["score"],
    )
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

    @app.post(
        "/rank",
        summary="A person's candidate images, best first",
        description="Give either user_id or references, and candidates: image_ids of the data and/or new images "
        'uploaded as base64 in JSON ({"name", "data"}), embedded by the encoder named by recsys serve --encoder '
        "and scored from their features (no refit). Uploads are checked against a budget of count, bytes and "
        "pixels before any work starts (413 over it).",
        responses=EXAMPLES["rank"],
    )
    async def rank(body: RankRequest, request: Request) -> dict:
        from recsys.ranking import check_encoder, check_new_names, new_images, rank_images

        if (body.user_id is None) == (body.references is None):
            raise HTTPException(
                422, "give either user_id (a fitted user) or references (a new user), not both"
            )
        if not body.image_ids and not body.images:
            raise HTTPException(422, "give candidates: image_ids of the data, images to upload, or both")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limits.timeout_s
        if body.prompt is not None and (not body.images or dataset.prompt_features is None):
            raise HTTPException(
                422,
                "prompt gives the prompt of uploaded images"
                + (f"; {dataset.name} has no prompt features" if body.images else ": upload images with it"),
            )
        rows = prompts = None
        names = [upload.name for upload in body.images]
        if body.images:
            try:
                check_encoder(dataset, encoder)
                check_new_names(dataset, names)
            except UserError as err:
                raise HTTPException(422, str(err)) from None
            blobs = check_upload_budget(body.images, limits)  # before any work: bytes, count, pixels
            cancel = threading.Event()
            rows = await run(
                lambda: embedder.embed(list(zip(names, blobs, strict=True)), cancel),
                upload_pool,
                cancel=cancel,
                gone=request.is_disconnected,
            )
            if body.prompt is not None:
                text = await run(lambda: embedder.embed_prompt(body.prompt), upload_pool)
                prompts = np.repeat(text, len(names), axis=0)

        def call() -> list[dict]:
            refs = None if body.references is None else references_of(body.references)
            new = None if rows is None else new_images(dataset, names, rows, prompts=prompts)
            return rank_images(
                model, dataset, list(body.image_ids), new=new, user_id=body.user_id, references=refs
            )

        ranking = await run(call, timeout_s=max(deadline - loop.time(), 1e-3))
        return {"model": model.name, "ranking": ranking}

    return app


class UploadEmbedder:
    """Embeds uploaded images with the encoder of the data's features (``encoder``, ``checkpoint``; loaded on the
    first upload), through the embedding cache, ``UPLOAD_BATCH`` images per encoder call: an abandoned request
    (its ``cancel`` event set) stops before its next batch."""

    def __init__(self, encoder: str, checkpoint: str | None = None) -> None:
        self.encoder_name = encoder
        self.checkpoint = checkpoint
        self._encoder: Any = None
        self._lock = threading.Lock()

    def encoder(self) -> Any:
        """The loaded encoder (loaded once, by the first caller)."""
        from features.encoders import load_encoder

        with self._lock:
            if self._encoder is None:
                self._encoder = load_encoder(self.encoder_name, checkpoint=self.checkpoint)
            return self._encoder

    def preload(self) -> None:
        """Load the encoder now (at the service's start); a failure is left for the first upload to report."""
        try:
            self.encoder()
        except Exception:  # the first upload loads it again and answers the error in one line
            pass

    def embed_prompt(self, prompt: str) -> np.ndarray:
        """The encoder's text embedding of one prompt (float32, 1 x d), as the data's prompts were embedded."""
        return np.asarray(self.encoder().encode_text_batch([prompt]), np.float32)

    def embed(self, uploads: list[tuple[str, bytes]], cancel: threading.Event) -> np.ndarray:
        """Embedding rows (float32, one per upload, in order) of (name, bytes) uploads.

        Raises:
            Abandoned: ``cancel`` was set (checked before each batch).
            UserError: an upload is not a readable image (naming it).
        """
        from features.embed import embed_image_bytes

        rows = []
        for start in range(0, len(uploads), UPLOAD_BATCH):
            if cancel.is_set():
                raise Abandoned
            batch = uploads[start : start + UPLOAD_BATCH]
            items = [(n, blob, f"images[{start + i}] ({n})") for i, (n, blob) in enumerate(batch)]
            rows.append(embed_image_bytes(items, self.encoder(), progress=False, num_workers=0).embedding)
        return np.vstack(rows)


def check_upload_budget(uploads: list[Upload], limits: ServiceLimits) -> list[bytes]:
    """The decoded bytes of ``uploads``, after checking the request's budget from their bytes and image headers
    alone (nothing is decoded beyond a header): HTTPException 422 for data that is not base64 or not an image,
    413 over ``max_upload_bytes`` or ``max_upload_pixels`` (which also refuses a decompression bomb)."""
    from PIL import Image

    blobs, total = [], 0
    for i, upload in enumerate(uploads):
        try:
            blob = base64.b64decode(upload.data, validate=True)
        except binascii.Error:
            raise HTTPException(422, f"body.images[{i}].data: not base64") from None
        total += len(blob)
        if total > limits.max_upload_bytes:
            raise HTTPException(
                413, f"the uploads are over the limit of {limits.max_upload_bytes} bytes (max_upload_bytes)"
            )
        blobs.append(blob)
    pixels = 0
    for i, (upload, blob) in enumerate(zip(uploads, blobs, strict=True)):
        try:
            with Image.open(io.BytesIO(blob)) as image:  # reads the header only
                width, height = image.size
        except Image.DecompressionBombError:
            width = height = limits.max_upload_pixels + 1
        except Exception as err:  # PIL raises many types for data that is not an image
            raise HTTPException(
                422, f"body.images[{i}] ({upload.name}): not a readable image ({type(err).__name__})"
            ) from None
        pixels += width * height
        if pixels > limits.max_upload_pixels:
            raise HTTPException(
                413,
                f"the uploads hold over {limits.max_upload_pixels} pixels by images[{i}] ({upload.name}) "
                "(max_upload_pixels; recsys serve --max-upload-pixels)",
            )
    return blobs
