"""The HTTP layer of the environment service, written once for every environment (DESIGN §3)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.envs.base import Environment, UnknownResource, UnknownTask
from services.envs.episodes import EpisodeService, NotFound, ServiceError, TooLarge
from services.envs.registry import build_envs
from services.envs.searchqa.env import SearchQAEnvironment
from services.envs.searchqa.retrieval import doc_list
from services.envs.store import EpisodeStore, MemoryEpisodeStore, RedisEpisodeStore
from shared.settings import EnvServiceSettings
from shared.wire import (
    BatchStepRequest,
    BatchStepResponse,
    CreateEpisode,
    EnvInfo,
    Episode,
    EpisodeRecord,
    ErrorBody,
    ErrorDetail,
    Health,
    RetrieveRequest,
    RetrieveResponse,
    StepRequest,
    StepResult,
    TaskInfo,
    TaskList,
)


class _Unauthorized(Exception):
    pass


def _service(request: Request) -> EpisodeService:
    return request.app.state.service  # type: ignore[no-any-return]


Service = Annotated[EpisodeService, Depends(_service)]


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


class Observe:
    """Count requests and time them, labelled by route template (pure ASGI: cheap on the hot path)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
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


class Metrics:
    """Prometheus metrics of one app (its own registry, so apps in one process don't collide)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("sdar_env_requests_total", "HTTP requests", ["route", "status"], registry=self.registry)
        self.latency = Histogram(
            "sdar_env_request_seconds",
            "HTTP request latency",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )
        self.events = Counter(
            "sdar_env_episode_events_total",
            "Episode events (created, step, replay, evicted)",
            ["env", "event"],
            registry=self.registry,
        )
        self.live = Gauge("sdar_env_live_simulators", "Live simulators cached", ["env"], registry=self.registry)
        self.open = Gauge("sdar_env_open_episodes", "Open episodes in the store", registry=self.registry)


def create_app(
    settings: EnvServiceSettings | None = None,
    *,
    envs: dict[str, Environment] | None = None,
    store: EpisodeStore | None = None,
) -> FastAPI:
    """The env service app. `envs` and `store` default to what `settings` names."""
    settings = settings or EnvServiceSettings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        hosted = envs if envs is not None else build_envs(settings)
        episode_store = store or (
            RedisEpisodeStore(
                settings.redis_url, settings.episode_ttl_s, settings.max_open_episodes, settings.redis_prefix
            )
            if settings.redis_url
            else MemoryEpisodeStore(settings.episode_ttl_s, settings.max_open_episodes)
        )
        app.state.service = EpisodeService(
            hosted,
            episode_store,
            live_cache_size=settings.live_cache_size,
            sim_threads=settings.sim_threads,
            max_action_bytes=settings.max_action_bytes,
            on_event=lambda env, event: metrics.events.labels(env, event).inc(),
        )
        try:
            yield
        finally:
            await app.state.service.close()
            await episode_store.close()

    app = FastAPI(title="SDAR environment service", version="1", lifespan=lifespan)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)

    app.add_middleware(Observe, metrics=metrics)

    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, **exc.extra)

    @app.exception_handler(UnknownTask)
    @app.exception_handler(UnknownResource)
    async def unknown_task(_: Request, exc: LookupError) -> JSONResponse:
        return error_response(404, "not_found", str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return error_response(422, "invalid_request", problems or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    async def authorized(request: Request) -> None:
        if settings.token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.encode(), settings.token.encode()):
            raise _Unauthorized

    @app.exception_handler(_Unauthorized)
    async def unauthorized(_: Request, __: Exception) -> JSONResponse:
        response = error_response(401, "unauthorized", "missing or wrong bearer token")
        response.headers["WWW-Authenticate"] = "Bearer"
        return response

    @app.get("/health", response_model=Health)
    async def health(svc: Service) -> Response:
        try:
            await asyncio.wait_for(svc.store.ping(), timeout=2.0)
        except Exception as e:  # noqa: BLE001 - any failure to reach the store is "unhealthy"
            return error_response(503, "store_unreachable", f"{svc.store.kind} store unreachable: {e}")
        body = Health(status="ok", store=svc.store.kind, envs=sorted(svc.envs))
        return JSONResponse(body.model_dump())

    router = APIRouter(dependencies=[Depends(authorized)])

    @router.get("/metrics")
    async def prometheus(svc: Service) -> Response:
        for name, cache in svc.caches.items():
            metrics.live.labels(name).set(len(cache))
        metrics.open.set(await svc.store.count())
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @router.get("/v1/envs", response_model=list[EnvInfo])
    async def list_envs(svc: Service) -> list[EnvInfo]:
        return [
            EnvInfo.model_validate(
                env.settings()
                | {
                    "name": env.name,
                    "backend": env.backend,
                    "version": env.version,
                    "splits": env.splits(),
                    "max_steps": env.max_steps,
                    "settings": env.settings(),
                }
            )
            for env in svc.envs.values()
        ]

    @router.get("/v1/envs/{env}/tasks", response_model=TaskList)
    async def list_tasks(
        env: str,
        svc: Service,
        split: Annotated[str, Query(max_length=64)],
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> TaskList:
        environment = svc.env(env)
        tasks = environment.tasks(split, offset, limit)
        return TaskList(
            tasks=[TaskInfo.model_validate(t, from_attributes=True) for t in tasks],
            total=environment.splits()[split],
        )

    @router.get("/v1/envs/{env}/{collection}/{key}")
    async def lookup(
        env: str,
        collection: Annotated[str, Path(max_length=64)],
        key: Annotated[str, Path(max_length=256)],
        svc: Service,
    ) -> dict[str, Any]:
        """An env-specific resource: `GET /v1/envs/webshop/products/{asin}`."""
        return svc.env(env).lookup(collection, key)

    @router.post("/v1/envs/{env}/episodes", response_model=Episode, status_code=201)
    async def create_episode(env: str, body: CreateEpisode, svc: Service) -> Episode:
        return await svc.create(env, body)

    @router.post("/v1/episodes:step", response_model=BatchStepResponse)
    async def step_many(body: BatchStepRequest, svc: Service) -> BatchStepResponse:
        # Steps of one episode run in request order; different episodes run concurrently.
        by_episode: dict[str, list[int]] = {}
        for i, item in enumerate(body.steps):
            by_episode.setdefault(item.episode_id, []).append(i)
        results: list[StepResult | ErrorBody] = [None] * len(body.steps)  # type: ignore[list-item]

        async def run(indices: list[int]) -> None:
            for i in indices:
                item = body.steps[i]
                try:
                    results[i] = await svc.step(item.episode_id, item.action, item.step)
                except ServiceError as e:
                    results[i] = ErrorBody(error=ErrorDetail(code=e.code, message=e.message, **e.extra))

        await asyncio.gather(*(run(indices) for indices in by_episode.values()))
        return BatchStepResponse(results=results)

    @router.post("/v1/episodes/{episode_id}/step", response_model=StepResult)
    async def step_one(episode_id: str, body: StepRequest, svc: Service) -> StepResult:
        return await svc.step(episode_id, body.action, body.step)

    @router.get("/v1/episodes/{episode_id}", response_model=EpisodeRecord)
    async def get_record(episode_id: str, svc: Service) -> EpisodeRecord:
        return await svc.record(episode_id)

    @router.delete("/v1/episodes/{episode_id}", status_code=204)
    async def delete_episode(episode_id: str, svc: Service) -> Response:
        await svc.delete(episode_id)
        return Response(status_code=204)

    @router.post("/retrieve", response_model=RetrieveResponse)
    async def retrieve(body: RetrieveRequest, svc: Service) -> RetrieveResponse:
        """Search-R1-compatible retrieval over the Search-QA corpus, in either request form."""
        env = svc.envs.get("searchqa")
        if not isinstance(env, SearchQAEnvironment):
            raise NotFound("this server hosts no Search-QA corpus (start it with --envs searchqa)")
        queries = body.queries if body.queries is not None else [body.query or ""]
        for q in queries:
            if len(q.encode()) > svc.max_action_bytes:
                raise TooLarge(f"a query of {len(q.encode())} bytes exceeds the limit of {svc.max_action_bytes}")
        hits = await svc.run(env.retriever.retrieve_many, queries, body.topk)
        if body.query is not None:
            return RetrieveResponse(result=doc_list(hits[0]))
        return RetrieveResponse(result=[[h.search_r1(with_score=body.return_scores) for h in row] for row in hits])

    app.include_router(router)
    return app
