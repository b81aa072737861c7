"""HTTP plumbing shared by the project's servers (the env service, the teacher, the completions
server): the error body, a body-size limit, strict JSON, request metrics, bearer-token auth and the
handlers that turn framework errors into the contract's error body."""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.wire import ErrorBody, ErrorDetail


def error_response(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    body = ErrorBody(error=ErrorDetail(code=code, message=message, **extra))
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status)


LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # after decoding, a valid pair is one code point
ESCAPED_SUSPECT = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")


def strict_json(body: bytes) -> Any:
    """A request body as JSON, refusing what `json.loads` lets through and nothing downstream can
    take: bytes that are not UTF-8, lone surrogates (`"\\ud800"`, which no encoder writes back), NUL
    characters, `NaN` and infinities (`1e999` too), integers over Python's digit limit, nesting past
    the recursion limit. Each is a `json.JSONDecodeError`, which FastAPI answers with a 422."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise json.JSONDecodeError("the body is not valid UTF-8", "", e.start) from None
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except json.JSONDecodeError:
        raise
    except RecursionError:
        raise json.JSONDecodeError("the body is nested too deeply", "", 0) from None
    except ValueError as e:  # an integer of over 4300 digits, a non-finite number
        raise json.JSONDecodeError(str(e), "", 0) from None
    # a NUL or a lone surrogate can only arrive as a \u escape (raw, it is not JSON or not UTF-8): walk
    # the parsed value only when the text has such an escape
    stack = [value] if ESCAPED_SUSPECT.search(text) else []
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if LONE_SURROGATE.search(node):
                raise json.JSONDecodeError("a string holds a lone UTF-16 surrogate (like \\ud800)", "", 0)
            if "\x00" in node:  # no text the services take (actions, prompts, queries, paths) has one
                raise json.JSONDecodeError("a string holds a NUL character (\\u0000)", "", 0)
        elif isinstance(node, dict):
            stack.extend(node)
            stack.extend(v for v in node.values() if isinstance(v, str | dict | list))
        elif isinstance(node, list):  # token ids: thousands of integers, skipped without a push
            stack.extend(v for v in node if isinstance(v, str | dict | list))
    return value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite(text: str) -> float:
    number = float(text)
    if number in (float("inf"), float("-inf")):
        raise ValueError(f"the number {text[:40]} is out of range")
    return number


class _StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = strict_json(await self.body())
        return self._json


class StrictJsonRoute(APIRoute):
    """A route whose JSON body goes through `strict_json`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Any]]:
        handler = super().get_route_handler()

        async def strict(request: Request) -> Any:
            return await handler(_StrictJsonRequest(request.scope, request.receive))

        return strict


ERROR_STATUSES = {
    401: "missing or wrong bearer token (when the service has one)",
    404: "no such resource",
    409: "in conflict with the current state",
    413: "request body over the size limit",
    422: "invalid request",
    429: "at capacity: retry later",
    502: "an upstream service answered badly: retry",
    503: "a dependency is unreachable or not ready: retry",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, each with the contract's error body."""
    return {s: {"model": ErrorBody, "description": ERROR_STATUSES[s]} for s in statuses}


def text(description: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for a 200 that is (also) `text/plain`."""
    return {200: {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}}


def api_router(token: str | None) -> APIRouter:
    """The routes of a service behind its bearer token, with strict JSON bodies; every route says
    in its OpenAPI that it may answer 401, 413 and 422 with the error body."""
    return APIRouter(
        dependencies=[Depends(bearer_auth(token))], route_class=StrictJsonRoute, responses=errors(401, 413, 422)
    )


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413, before any handler reads them: at once when
    the declared length is over it, and a body sent in chunks (no length) is read up to the limit
    first and handed on whole."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:  # the server holds the body to its declared length
            if declared.isdigit() and int(declared) > self.limit:
                await self._refuse(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        chunks, seen = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.limit:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        whole: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay() -> Message:
            return whole.pop() if whole else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(413, "too_large", f"request body exceeds {self.limit} bytes")
        await response(scope, receive, send)


class HttpMetrics:
    """Prometheus request metrics of one app, in its own registry (apps in one process don't
    collide); services add their own metrics to `registry`."""

    def __init__(self, prefix: str) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            f"{prefix}_requests_total", "HTTP requests", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            f"{prefix}_request_seconds",
            "HTTP request latency",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )


class Observe:
    """Count requests and time them, labelled by route template (pure ASGI: cheap on the hot path)."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            path = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(path, str(status)).inc()
            self.metrics.latency.labels(path).observe(time.perf_counter() - start)


class _Unauthorized(Exception):
    pass


def bearer_ok(header: str, token: str | None) -> bool:
    """Whether an `Authorization` header carries `Bearer <token>` (any header, when `token` is None),
    compared in constant time."""
    if token is None:
        return True
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(given.encode(), token.encode())


def bearer_auth(token: str | None) -> Callable[[Request], Coroutine[Any, Any, None]]:
    """A dependency that requires `Authorization: Bearer <token>` (nothing when `token` is None)."""

    async def authorized(request: Request) -> None:
        if not bearer_ok(request.headers.get("authorization", ""), token):
            raise _Unauthorized

    return authorized


def install_common(app: FastAPI, metrics: HttpMetrics, max_body_bytes: int) -> None:
    """Body limit, request metrics, and the contract's error body for validation errors, unknown
    routes and failed auth."""
    app.router.route_class = StrictJsonRoute
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    app.add_middleware(Observe, metrics=metrics)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", "; ".join(map(problem, exc.errors())) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(_Unauthorized)
    async def unauthorized(_: Request, __: Exception) -> JSONResponse:
        response = error_response(401, "unauthorized", "missing or wrong bearer token")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response


def problem(error: Any) -> str:
    """One validation error as `location: message` (and the JSON parser's reason)."""
    where = ".".join(str(p) for p in error.get("loc", ()))
    reason = (error.get("ctx") or {}).get("error") if error.get("type") == "json_invalid" else None
    return f"{where}: {error.get('msg', 'invalid')}" + (f" ({reason})" if reason else "")


def map_errors(app: FastAPI, table: dict[type[Exception], tuple[int, str]]) -> None:
    """Answer each exception type with its status and error code, the exception's text as message."""
    for exc_type, (status, code) in table.items():

        async def handler(_: Request, exc: Exception, status: int = status, code: str = code) -> JSONResponse:
            return error_response(status, code, str(exc))

        app.add_exception_handler(exc_type, handler)


def serve(app: FastAPI, host: str, port: int, name: str) -> None:
    """Run `app` under uvicorn until stopped, printing `<name> listening on http://HOST:PORT` once it
    is up (the port the system chose, for `--port 0`)."""
    import uvicorn

    class Announcing(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:
                for server in self.servers:
                    for sock in server.sockets:
                        bound_host, bound_port = sock.getsockname()[:2]
                        print(f"{name} listening on http://{bound_host}:{bound_port}", flush=True)

    Announcing(uvicorn.Config(app, host=host, port=port, log_level="warning")).run()


PAGE_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; "
    "img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
"""The pages' Content-Security-Policy: their own inline script and style, requests to their own
origin only, nothing loaded from anywhere else (no CDN: they work offline)."""


def install_page(app: FastAPI, path: Any) -> None:
    """`GET /`: the HTML page at `path` (a file beside the service), with `PAGE_POLICY`."""
    from fastapi.responses import HTMLResponse

    html = path.read_text()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(html, headers={"content-security-policy": PAGE_POLICY, "x-content-type-options": "nosniff"})
