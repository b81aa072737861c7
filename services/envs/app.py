"""The HTTP layer of the environment service, written once for every environment (DESIGN §3)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import pathlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import redis.exceptions as redis
from fastapi import Depends, FastAPI, Path, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest

from services.envs.base import Environment, UnknownResource, UnknownTask
from services.envs.episodes import EpisodeService, NotFound, ServiceError, TooLarge
from services.envs.openenv import install_openenv
from services.envs.registry import build_envs
from services.envs.searchqa.env import SearchQAEnvironment
from services.envs.searchqa.retrieval import doc_list
from services.envs.store import EpisodeStore, MemoryEpisodeStore, RedisEpisodeStore
from shared.rollout_wire import GroupRecord, decode
from shared.server import HttpMetrics, api_router, error_response, errors, install_common, install_page, text
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

log = logging.getLogger("services.envs")


def _service(request: Request) -> EpisodeService:
    return request.app.state.service  # type: ignore[no-any-return]


Service = Annotated[EpisodeService, Depends(_service)]


class Metrics(HttpMetrics):
    def __init__(self) -> None:
        super().__init__("sdar_env")
        self.events = Counter(
            "sdar_env_episode_events_total",
            "Episode events (created, step, replay, evicted)",
            ["env", "event"],
            registry=self.registry,
        )
        self.live = Gauge("sdar_env_live_simulators", "Live simulators cached", ["env"], registry=self.registry)
        self.open = Gauge("sdar_env_open_episodes", "Open episodes in the store", registry=self.registry)


def unreachable(exc: BaseException) -> JSONResponse:
    response = error_response(503, "store_unreachable", f"the episode store is unreachable: {exc}")
    response.headers["Retry-After"] = "1"
    return response


async def wait_for_store(store: EpisodeStore, wait_s: float) -> None:
    """Until the store answers, at most `wait_s` seconds, saying so once; then `StoreUnreachable`, so
    that a service never comes up to fail every request."""
    deadline = time.monotonic() + wait_s
    said = False
    while True:
        try:
            await asyncio.wait_for(store.ping(), timeout=2.0)
            return
        except (OSError, TimeoutError, redis.RedisError) as e:
            if time.monotonic() >= deadline:
                raise StoreUnreachable(f"the {store.kind} store is unreachable after {wait_s:g} s: {e}") from None
            if not said:
                log.warning("waiting up to %g s for the %s store: %s", wait_s, store.kind, e)
                said = True
        await asyncio.sleep(0.5)


class StoreUnreachable(RuntimeError):
    pass


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
        try:
            await wait_for_store(episode_store, settings.redis_wait_s)
        except BaseException:
            await episode_store.close()
            raise
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
    install_common(app, metrics, settings.max_body_bytes)
    install_page(app, pathlib.Path(__file__).with_name("page.html"))  # the episode viewer, over the routes below

    @app.exception_handler(ServiceError)
    async def service_error(_: Request, exc: ServiceError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, **exc.extra)

    @app.exception_handler(redis.ConnectionError)
    @app.exception_handler(redis.TimeoutError)
    async def store_down(_: Request, exc: redis.RedisError) -> JSONResponse:
        return unreachable(exc)  # retryable: every step is idempotent, and the service heals

    @app.exception_handler(UnknownTask)
    @app.exception_handler(UnknownResource)
    async def unknown_task(_: Request, exc: LookupError) -> JSONResponse:
        return error_response(404, "not_found", str(exc))

    @app.get("/health", response_model=Health, responses=errors(503))
    async def health(svc: Service) -> Response:
        try:
            await asyncio.wait_for(svc.store.ping(), timeout=2.0)
        except Exception as e:  # noqa: BLE001 - any failure to reach the store is "unhealthy"
            return unreachable(e)
        body = Health(status="ok", store=svc.store.kind, envs=sorted(svc.envs))
        return JSONResponse(body.model_dump())

    router = api_router(settings.token)
    install_openenv(app, router, settings.token, settings.max_body_bytes)

    @router.get("/metrics", response_class=PlainTextResponse, responses=text("Prometheus metrics"))
    async def prometheus(svc: Service) -> Response:
        for name, cache in svc.caches.items():
            metrics.live.labels(name).set(len(cache))
        with contextlib.suppress(redis.RedisError, OSError):  # the rest of the metrics, even with the store down
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

    @router.get("/v1/envs/{env}/tasks", response_model=TaskList, responses=errors(404))
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

    @router.get("/v1/envs/{env}/{collection}/{key}", responses=errors(404))
    async def lookup(
        env: str,
        collection: Annotated[str, Path(max_length=64)],
        key: Annotated[str, Path(max_length=256)],
        svc: Service,
    ) -> dict[str, Any]:
        """An env-specific resource: `GET /v1/envs/webshop/products/{asin}`."""
        return svc.env(env).lookup(collection, key)

    @router.post(
        "/v1/envs/{env}/episodes", response_model=Episode, status_code=201, responses=errors(404, 409, 429, 502, 503)
    )
    async def create_episode(env: str, body: CreateEpisode, svc: Service) -> Episode:
        return await svc.create(env, body)

    @router.post("/v1/episodes:step", response_model=BatchStepResponse, responses=errors(503))
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

        # every episode's steps run to the end, then a store outage fails the batch as a whole (a 503 the
        # client retries: the steps applied answer their recorded results again)
        outcomes = await asyncio.gather(*(run(indices) for indices in by_episode.values()), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return BatchStepResponse(results=results)

    @router.post("/v1/episodes/{episode_id}/step", response_model=StepResult, responses=errors(404, 409, 502, 503))
    async def step_one(episode_id: str, body: StepRequest, svc: Service) -> StepResult:
        return await svc.step(episode_id, body.action, body.step)

    @router.get("/v1/episodes/{episode_id}", response_model=EpisodeRecord, responses=errors(404, 503))
    async def get_record(episode_id: str, svc: Service) -> EpisodeRecord:
        return await svc.record(episode_id)

    @router.get("/v1/groups/{entry_id}", response_model=GroupRecord, responses=errors(404, 422, 503))
    async def get_group(
        entry_id: Annotated[str, Path(pattern=r"^[0-9]{1,20}-[0-9]{1,20}$")],
        stream: Annotated[str, Query(min_length=1, max_length=256)],
        svc: Service,
    ) -> GroupRecord:
        """A group on a rollout buffer (a run's `<redis_prefix>groups` stream, on this service's Redis),
        by its entry id: for the episode viewer. Trained groups are deleted from the buffer."""
        if not isinstance(svc.store, RedisEpisodeStore):
            raise NotFound("this service keeps its episodes in process: it has no Redis to read a buffer from")
        try:
            fields = await svc.store.stream_entry(stream, entry_id)
        except redis.ResponseError as e:  # not a stream, or an id past Redis's range
            raise NotFound(f"cannot read group {entry_id} from {stream}: {e}") from None
        if fields is None:
            raise NotFound(f"no group {entry_id} on {stream} (never written, or trained and deleted)")
        try:
            return decode(fields)
        except ValueError as e:
            raise ServiceError(f"entry {entry_id} of {stream} is not a group record ({type(e).__name__})") from None

    @router.delete("/v1/episodes/{episode_id}", status_code=204, responses=errors(404, 503))
    async def delete_episode(episode_id: str, svc: Service) -> Response:
        await svc.delete(episode_id)
        return Response(status_code=204)

    @router.post("/retrieve", response_model=RetrieveResponse, responses=errors(404, 502, 503))
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
