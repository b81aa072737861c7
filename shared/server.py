"""HTTP plumbing shared by the project's servers (the env service, the teacher, the completions
server): the error body, a body-size limit, request metrics, bearer-token auth and the handlers
that turn framework errors into the contract's error body."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.wire import ErrorBody, ErrorDetail


def error_response(status: int, code: str, message: str, **extra: Any) -> JSONResponse:
    body = ErrorBody(error=ErrorDetail(code=code, message=message, **extra))
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status)


class BodyLimit:
    """Refuse request bodies over `limit` bytes with 413, before any handler reads them."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _BodyTooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(413, "too_large", f"request body exceeds {self.limit} bytes")
        await response(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


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


def bearer_auth(token: str | None) -> Callable[[Request], Coroutine[Any, Any, None]]:
    """A dependency that requires `Authorization: Bearer <token>` (nothing when `token` is None)."""

    async def authorized(request: Request) -> None:
        if token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.encode(), token.encode()):
            raise _Unauthorized

    return authorized


def install_common(app: FastAPI, metrics: HttpMetrics, max_body_bytes: int) -> None:
    """Body limit, request metrics, and the contract's error body for validation errors, unknown
    routes and failed auth."""
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    app.add_middleware(Observe, metrics=metrics)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return error_response(422, "invalid_request", problems or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(_Unauthorized)
    async def unauthorized(_: Request, __: Exception) -> JSONResponse:
        response = error_response(401, "unauthorized", "missing or wrong bearer token")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response


def map_errors(app: FastAPI, table: dict[type[Exception], tuple[int, str]]) -> None:
    """Answer each exception type with its status and error code, the exception's text as message."""
    for exc_type, (status, code) in table.items():

        async def handler(_: Request, exc: Exception, status: int = status, code: str = code) -> JSONResponse:
            return error_response(status, code, str(exc))

        app.add_exception_handler(exc_type, handler)
