"""The HTTP service: a FastAPI app over a recommender (anything with `recommend_batch(histories, k,
exclude_history)`, e.g. seqrec.serve.Recommender or the ONNX backend's OnnxRecommender).

    GET  /recommend?history=12,7,93&k=10&exclude_history=true      one history (item ids separated by commas)
    POST /recommend  {"histories": [[12, 7, 93], [4, 5]], "k": 10, "exclude_history": false}
        -> {"recommendations": [[{"item": 31, "score": 7.2}, ...], ...]}     one list per history, best first
    GET  /health    liveness: 200 while the process works (503 if the model failed to load)
    GET  /ready     readiness: 200 once the model is loaded and a warm-up scoring call has run, else 503
    GET  /metrics   Prometheus text format: requests by path and status, latencies, batch sizes, scoring time
    GET  /docs      OpenAPI documentation (FastAPI's; the schema at /openapi.json)

Item ids are the dataset's original ids, integers or strings. Every bad request gets a JSON error
{"error": "<one line>"}: 400 malformed JSON, 404 unknown path, 405 wrong method, 408 body not received within
the read timeout, 413 body over max_body_bytes, 414 query string over max_body_bytes, 415 a body that is not
application/json, 422 well-formed but invalid (types are strict: "false" is not a boolean, 1e30 or 2.0 is not an
item id, k must be 1..max_k); an internal error is a JSON 500 (traceback in the server log).

Concurrent /recommend requests are scored together by a MicroBatcher (seqrec.serve.batching); each request is
checked on its own before it joins a batch.

`create_app` takes the recommender itself, or a function that loads it: the app then loads it in the background
once started (/health answers at once, /ready when loaded; a /recommend arriving meanwhile waits up to
load_wait_s for the model, then gets a 503). `app_from_env` is the factory that `seqrec serve
--workers N` gives uvicorn: each worker process builds its app from the settings in the SEQREC_SERVE environment
variable (JSON, written by seqrec.serve.server).
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal, Union

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, WithJsonSchema
from starlette.exceptions import HTTPException

from seqrec.errors import SeqrecError
from seqrec.serve.batching import MicroBatcher
from seqrec.serve.metrics import ServeMetrics

log = logging.getLogger("seqrec.serve")

INT64 = (-2 ** 63, 2 ** 63 - 1)
PATHS = ("/recommend", "/health", "/ready", "/metrics", "/docs", "/openapi.json")
METHODS = ("GET", "POST", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS")
"""The metrics' labels: every other path or method is 'other' (so that random requests cannot create unbounded
label values)."""
ENV_SETTINGS = "SEQREC_SERVE"


# -- schemas --------------------------------------------------------------------------------------------------------

def _item_id(value: Any) -> int | str:
    """An original item id: a JSON integer in the 64-bit range or a non-empty string (never a float or a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"expected an item id (an integer or a string), got {json.dumps(value)}")
    if isinstance(value, int) and not INT64[0] <= value <= INT64[1]:
        raise ValueError(f"item id {value} is outside the 64-bit integer range")
    if isinstance(value, str) and not value:
        raise ValueError("expected an item id, got an empty string")
    return value


ItemId = Annotated[Union[int, str], PlainValidator(_item_id),
                   WithJsonSchema({"anyOf": [{"type": "integer"}, {"type": "string"}]})]
History = Annotated[list[ItemId], Field(min_length=1)]


class RecommendRequest(BaseModel):
    """Histories to recommend for (original item ids, oldest first)."""
    model_config = ConfigDict(strict=True, extra="forbid",
                              json_schema_extra={"examples": [{"histories": [[12, 7, 93]], "k": 10,
                                                               "exclude_history": True}]})
    histories: list[History] = Field(min_length=1, description="one or more histories, each a non-empty list of "
                                     "item ids (integers or strings), oldest first; at most max_batch histories")
    k: int = Field(10, description="items per history, 1..max_k")
    exclude_history: bool = Field(False, description="leave out items that are in the history")


class Recommendation(BaseModel):
    item: Union[int, str]
    score: float


class RecommendResponse(BaseModel):
    recommendations: list[list[Recommendation]] = Field(description="one list per history, best first")


class ErrorResponse(BaseModel):
    error: str


def _whole_number(value: Any) -> Any:
    """Query parameter k: digits only (no '10.0', '1e3', '1_000' or sign)."""
    if isinstance(value, str) and not re.fullmatch(r"[0-9]{1,18}", value):
        raise ValueError(f"expected a whole number such as 10, got {value!r}")
    return value


QueryInt = Annotated[int, BeforeValidator(_whole_number)]


def _query_item(token: str) -> int | str:
    """An item id written in a query string: an integer when canonical ('12', '-3'; not '012'), else a string,
    as seqrec.data.vocab reads ids from files."""
    if re.fullmatch(r"-?(0|[1-9][0-9]{0,18})", token):
        value = int(token)
        if INT64[0] <= value <= INT64[1]:
            return value
    return token


# -- errors ---------------------------------------------------------------------------------------------------------

def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _where(loc: tuple) -> str:
    """('body', 'histories', 0, 1) -> 'histories[0][1]'; ('query', 'k') -> 'k'."""
    parts = [p for p in loc if p not in ("body", "query")]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "request body"


def _show(value: Any, width: int = 60) -> str:
    """A value in an error message: as JSON, cut to `width` characters."""
    text = json.dumps(value, default=repr)
    return text if len(text) <= width else text[:width - 3] + "..."


def _validation_message(exc: RequestValidationError) -> tuple[int, str]:
    errors = exc.errors()
    for e in errors:
        if e.get("type") == "json_invalid":
            reason = (e.get("ctx") or {}).get("error", "")
            return 400, f"request body: invalid JSON ({reason})" if reason else "request body: invalid JSON"
    parts = []
    for e in errors[:3]:
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        if e.get("type") in ("model_attributes_type", "dict_type") and tuple(e.get("loc", ())) == ("body",):
            msg = (f"expected a JSON object such as {{\"histories\": [[12, 7, 93]], \"k\": 10}}, got "
                   f"{_show(e.get('input'))}")
        elif e.get("type") == "missing" and tuple(e.get("loc", ())) == ("body",):
            msg = 'expected a JSON object such as {"histories": [[12, 7, 93]], "k": 10}, got an empty body'
        elif e.get("type") == "extra_forbidden":
            msg = "unknown field; valid: histories, k, exclude_history"
        elif "input" in e and e.get("type") not in ("value_error",):
            msg += f" (got {_show(e['input'])})"
        parts.append(f"{_where(tuple(e.get('loc', ())))}: {msg}")
    more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
    return 422, "; ".join(parts) + more


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        content_type = request.headers.get("content-type", "")
        if request.method == "POST" and "json" not in content_type.lower():
            return _error(415, f"request body: expected Content-Type: application/json, got "
                               f"{content_type or 'none'} (curl: -H 'Content-Type: application/json')")
        return _error(*_validation_message(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        message = exc.detail
        if exc.status_code == 404 and message == "Not Found":
            message = f"unknown path {request.url.path}; valid: /recommend, /health, /ready, /metrics, /docs"
        elif exc.status_code == 405 and message == "Method Not Allowed":
            message = f"method {request.method} is not allowed for {request.url.path}"
        return _error(exc.status_code, str(message), getattr(exc, "headers", None))

    @app.exception_handler(SeqrecError)
    async def bad_input(request: Request, exc: SeqrecError):
        return _error(422, str(exc))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        log.error("internal error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error(500, f"internal error ({type(exc).__name__}); the server log has the details")


# -- the request guard: size limits, read timeout, metrics, batch arrivals ----------------------------------------

class BodyTimeout(HTTPException):
    def __init__(self, seconds: float):
        super().__init__(408, f"request body not received within {seconds:g} s (read timeout)",
                         headers={"connection": "close"})


class BodyTooLarge(HTTPException):
    def __init__(self, limit: int):
        super().__init__(413, f"request body larger than {limit} bytes (max_body_bytes)",
                         headers={"connection": "close"})


class RequestGuard:
    """ASGI middleware around every HTTP request: refuses bodies over max_body_bytes (413; the body is read and
    discarded first, for up to read_timeout_s, so that the client can read the answer), query strings over it
    (414), bodies not received within read_timeout_s (408); records the request in the metrics; announces
    /recommend requests to the batcher."""

    def __init__(self, app, serving: "Serving"):
        self.app = app
        self.serving = serving

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        s = self.serving
        t0 = time.perf_counter()
        path = scope["path"]
        status = [500]          # what an exception escaping the app becomes

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        arrival = s.batcher.announce() if path == "/recommend" and s.ready else None
        if arrival is not None:
            scope["seqrec.arrival"] = arrival
        try:
            length = _content_length(scope)
            if length is not None and length > s.max_body_bytes:
                if not _expects_continue(scope):        # the client is sending the body: take it first
                    await _discard_body(receive, asyncio.get_running_loop().time() + s.read_timeout_s)
                err = BodyTooLarge(s.max_body_bytes)
                return await _error(413, err.detail, err.headers)(scope, receive, send_status)
            if len(scope.get("query_string", b"")) > s.max_body_bytes:
                return await _error(414, f"query string longer than {s.max_body_bytes} bytes; send the "
                                         f"histories in a POST body")(scope, receive, send_status)
            await self.app(scope, _limited(receive, s.max_body_bytes, s.read_timeout_s), send_status)
        finally:
            if arrival is not None:
                s.batcher.settle(arrival)
            method = scope["method"] if scope["method"] in METHODS else "other"
            s.metrics.observe_request(method, path if path in PATHS else "other", status[0], time.perf_counter() - t0)


def _content_length(scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None      # the HTTP parser has refused anything else
    return None


def _expects_continue(scope) -> bool:
    return any(name == b"expect" and value.lower() == b"100-continue" for name, value in scope["headers"])


def _limited(receive, limit: int, timeout_s: float):
    """receive() that raises BodyTimeout when the whole body has not arrived within timeout_s of the first call,
    and BodyTooLarge past `limit` bytes (a chunked body has no Content-Length to check first), after reading and
    discarding the rest of the body so that the client can read the answer."""
    received = 0
    deadline = None

    async def wrapped():
        nonlocal received, deadline
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = loop.time() + timeout_s
        message = await _receive_until(receive, deadline)
        if message is None:
            raise BodyTimeout(timeout_s)
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                if message.get("more_body", False):
                    await _discard_body(receive, deadline)
                raise BodyTooLarge(limit)
        return message

    return wrapped


async def _receive_until(receive, deadline: float):
    """receive()'s next message, or None when it has not come by `deadline` (event-loop time)."""
    try:
        return await asyncio.wait_for(receive(), max(deadline - asyncio.get_running_loop().time(), 0.001))
    except asyncio.TimeoutError:
        return None


async def _discard_body(receive, deadline: float) -> None:
    """Read the rest of the request body (until `deadline`) and drop it."""
    while True:
        message = await _receive_until(receive, deadline)
        if message is None or message["type"] != "http.request" or not message.get("more_body", False):
            return


# -- the serving state ----------------------------------------------------------------------------------------------

def check_settings(max_batch: int = 256, max_wait_ms: float = 2.0, max_body_bytes: int = 1_000_000,
                   max_k: int = 1000, read_timeout_s: float = 10.0, load_wait_s: float = 30.0) -> None:
    """create_app's settings, each named with its `seqrec serve` option in the SeqrecError."""
    for name, value in (("max_batch", max_batch), ("max_body_bytes", max_body_bytes), ("max_k", max_k)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SeqrecError(f"{name} (--{name.replace('_', '-')}): expected a positive integer, got {value!r}")
    if not (isinstance(max_wait_ms, (int, float)) and 0 <= max_wait_ms <= 1000):
        raise SeqrecError(f"max_wait_ms (--max-wait-ms): expected milliseconds in 0..1000, got {max_wait_ms!r}")
    if not (isinstance(read_timeout_s, (int, float)) and read_timeout_s > 0):
        raise SeqrecError(f"read_timeout_s (--read-timeout-s): expected a positive number of seconds, got "
                          f"{read_timeout_s!r}")
    if isinstance(load_wait_s, bool) or not (isinstance(load_wait_s, (int, float)) and load_wait_s >= 0):
        raise SeqrecError(f"load_wait_s (--load-wait-s): expected a number of seconds >= 0, got {load_wait_s!r}")


class Serving:
    """What the routes share: the recommender (once loaded), the batcher, the metrics and the limits."""

    def __init__(self, recommender, max_batch: int, max_wait_ms: float, max_body_bytes: int, max_k: int,
                 read_timeout_s: float, load_wait_s: float):
        if callable(getattr(recommender, "recommend_batch", None)):
            self.recommender, self.load = recommender, None
        elif callable(recommender):
            self.recommender, self.load = None, recommender
        else:
            raise TypeError("create_app: expected a recommender (with recommend_batch) or a function loading one")
        check_settings(max_batch, max_wait_ms, max_body_bytes, max_k, read_timeout_s, load_wait_s)
        self.max_batch, self.max_body_bytes, self.max_k = max_batch, max_body_bytes, max_k
        self.read_timeout_s, self.load_wait_s = read_timeout_s, load_wait_s
        self.metrics = ServeMetrics()
        self.batcher = MicroBatcher(self._score, max_batch, max_wait_ms, on_batch=self.metrics.observe_batch)
        self.ready = False
        self.failed: str | None = None
        self.settled = asyncio.Event()      # set when start() has ended, ready or failed

    def _score(self, histories, k, exclude_history):
        return self.recommender.recommend_batch(histories, k, exclude_history)

    @property
    def n_items(self) -> int | None:
        return getattr(self.recommender, "n_items", None)

    async def start(self) -> None:
        """Load (when given a loader) and warm up in the scoring thread, then mark the app ready."""
        try:
            if self.recommender is None:
                self.recommender = await self.batcher.run_in_worker(self.load)
            await self.batcher.run_in_worker(_warm_up, self.recommender)
        except Exception as e:      # the process stays up to say so on /health and /ready
            self.failed = f"{type(e).__name__}: {e}" if not isinstance(e, SeqrecError) else str(e)
            log.error("the model could not be loaded: %s", self.failed, exc_info=not isinstance(e, SeqrecError))
        else:
            self.ready = True
            self.metrics.ready.set(1)
            log.info("ready: %s", type(self.recommender).__name__)
        finally:
            self.settled.set()      # ends the waits of requests that arrived while loading, either way

    def check(self, histories: list, k: int) -> None:
        """A request's own errors, found before it joins a batch (SeqrecError -> 422)."""
        limits = {"max_k": self.max_k, "the model's number of items": self.n_items,
                  "the k of the exported ONNX graph": getattr(self.recommender, "k", None)}    # OnnxRecommender
        reason, limit = min(((r, v) for r, v in limits.items() if v), key=lambda rv: rv[1])
        if not 1 <= k <= limit:
            raise SeqrecError(f"k: expected an integer in 1..{limit} ({reason}), got {k}")
        if len(histories) > self.max_batch:
            raise SeqrecError(f"histories: at most {self.max_batch} per request (max_batch), got "
                              f"{len(histories)}; send several requests")
        encode = getattr(self.recommender, "encode_histories", None)   # Recommender's: unknown ids are errors
        if encode is not None:
            encode(histories)

    async def recommend(self, request: Request, histories: list, k: int, exclude_history: bool) -> Response:
        if not self.ready and self.load_wait_s > 0:     # after a failed load, `settled` is set: no wait
            # `--workers N` share one socket, so a request can reach a worker that is still loading while /ready,
            # answered by another worker, says 200: it waits for this worker's model instead of failing
            try:
                await asyncio.wait_for(self.settled.wait(), self.load_wait_s)
            except asyncio.TimeoutError:
                pass
        if not self.ready:
            return _error(503, self.failed or "the model is loading; see /ready")
        self.check(histories, k)
        rows = await self.batcher.submit(histories, k, exclude_history, request.scope.get("seqrec.arrival"))
        body = {"recommendations": [[{"item": item, "score": score} for item, score in row] for row in rows]}
        return Response(json.dumps(body, allow_nan=False, default=_plain, separators=(",", ":")),
                        media_type="application/json")


def _plain(value):
    """numpy scalars (item ids, scores) as JSON numbers or strings."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _warm_up(recommender) -> None:
    """One scoring call before the app says it is ready (the first call pays for lazy initialisation)."""
    warm_up = getattr(recommender, "warm_up", None)
    if warm_up is not None:
        warm_up()
        return
    vocab = getattr(recommender, "item_vocab", None)      # seqrec.data.vocab.Vocabulary: original ids
    first = vocab.decode([1]).tolist()[0] if vocab is not None else 1
    recommender.recommend_batch([[first]], 10, False)


# -- the app --------------------------------------------------------------------------------------------------------

def create_app(recommender, max_batch: int = 256, max_wait_ms: float = 2.0, max_body_bytes: int = 1_000_000,
               max_k: int = 1000, read_timeout_s: float = 10.0, load_wait_s: float = 30.0) -> FastAPI:
    """The service over `recommender` (or over what the function `recommender` returns, loaded in the background
    at start-up).

    max_batch:       most histories scored in one call (and in one request)
    max_wait_ms:     longest a request waits for others to join its batch
    max_body_bytes:  largest request body (and query string) accepted
    max_k:           largest k accepted (and never more than the model's items)
    read_timeout_s:  a request body must have arrived within this many seconds
    load_wait_s:     a /recommend arriving while the model loads waits up to this many seconds for it, then 503
                     (0: 503 at once)
    """
    serving = Serving(recommender, max_batch, max_wait_ms, max_body_bytes, max_k, read_timeout_s, load_wait_s)

    async def lifespan(app: FastAPI):
        serving.batcher.start()
        starting = asyncio.get_running_loop().create_task(serving.start())
        try:
            yield
        finally:
            starting.cancel()
            await serving.batcher.stop()

    app = FastAPI(title="seqrec", summary="Sequential recommendation: top-k next items for item histories",
                  version=_version(), lifespan=lifespan)
    app.state.serving = serving
    _add_error_handlers(app)
    app.add_middleware(RequestGuard, serving=serving)
    errors = {code: {"model": ErrorResponse} for code in (400, 413, 415, 422, 503)}

    @app.get("/recommend", response_model=RecommendResponse, responses=errors,
             summary="Top-k items for one history")
    async def recommend_get(request: Request,
                            history: str = Query(description="item ids, oldest first, separated by commas, "
                                                 "e.g. 12,7,93"),
                            k: Annotated[QueryInt, Query(description="items to return, 1..max_k")] = 10,
                            exclude_history: Literal["true", "false", "1", "0"] = Query(
                                "false", description="leave out items that are in the history")):
        tokens = [t.strip() for t in history.split(",")]
        if "" in tokens:
            raise SeqrecError(f"history: empty item id at position {tokens.index('') + 1} of {history[:60]!r}; "
                              f"expected ids separated by commas, e.g. 12,7,93")
        return await serving.recommend(request, [[_query_item(t) for t in tokens]], k,
                                       exclude_history in ("true", "1"))

    @app.post("/recommend", response_model=RecommendResponse, responses=errors,
              summary="Top-k items for each of several histories")
    async def recommend_post(request: Request, body: RecommendRequest):
        return await serving.recommend(request, body.histories, body.k, body.exclude_history)

    @app.get("/health", summary="Liveness")
    async def health():
        if serving.failed:
            return _error(503, serving.failed)
        return {"status": "ok"}

    @app.get("/ready", summary="Readiness: model loaded and warmed up")
    async def ready():
        if not serving.ready:
            return JSONResponse({"status": "failed" if serving.failed else "loading",
                                 "error": serving.failed or "the model is loading"}, status_code=503)
        return {"status": "ready", "model": type(serving.recommender).__name__, "n_items": serving.n_items,
                "max_batch": serving.max_batch, "max_k": serving.max_k}

    @app.get("/metrics", summary="Prometheus metrics (text format)")
    async def metrics():
        body, content_type = serving.metrics.render()
        return Response(body, media_type=content_type)

    return app


def _version() -> str:
    from seqrec import __version__
    return __version__


# -- the factory for uvicorn workers --------------------------------------------------------------------------------

def app_from_env() -> FastAPI:
    """The app of one `seqrec serve --workers N` worker: settings from the SEQREC_SERVE environment variable (JSON:
    checkpoint, backend, max_batch, max_wait_ms, max_body_bytes, max_k, read_timeout_s, load_wait_s); the
    recommender is loaded in the background, so the worker answers /health at once and /ready when loaded."""
    from seqrec.serve.server import loader
    raw = os.environ.get(ENV_SETTINGS)
    if not raw:
        raise SeqrecError(f"{ENV_SETTINGS}: not set; start the service with `seqrec serve CHECKPOINT`")
    settings = json.loads(raw)
    load: Callable = loader(settings.pop("checkpoint"), settings.pop("backend", "torch"))
    return create_app(load, **settings)


__all__ = ["create_app", "app_from_env", "RecommendRequest", "RecommendResponse"]
