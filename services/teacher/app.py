"""The teacher service over HTTP (DESIGN §5): skills, retrieval, scoring, the policy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from services.teacher.scoring import ScoringError, TooLong
from services.teacher.service import Batcher, PolicyConflict, PolicyError, TeacherService, retrieved
from services.teacher.skills import SkillError
from shared.server import HttpMetrics, api_router, errors, install_common, install_page, map_errors, text
from shared.settings import TeacherSettings
from shared.teacher_wire import (
    LoadPolicy,
    PolicyInfo,
    RetrievedSkills,
    RetrieveSkills,
    ScoreRequest,
    ScoreResponse,
    SkillInfo,
    SkillList,
)

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics(HttpMetrics):
    def __init__(self) -> None:
        super().__init__("sdar_teacher")
        self.batch_items = Histogram(
            "sdar_teacher_batch_items", "Items per scoring pass", registry=self.registry, buckets=BATCH_BUCKETS
        )
        self.batch_requests = Histogram(
            "sdar_teacher_batch_requests",
            "Requests merged into one scoring pass",
            registry=self.registry,
            buckets=BATCH_BUCKETS,
        )
        self.tokens = Counter("sdar_teacher_scored_tokens_total", "Response tokens scored", registry=self.registry)


def as_table(response: ScoreResponse) -> str:
    """A score response for reading at a terminal: the skills, then one row per response token."""
    lines = [f"policy version {response.policy_version}"]
    for n, item in enumerate(response.items):
        lines.append(f"\nitem {n}: {item.teacher_prompt_tokens} teacher prompt tokens; skills:")
        lines += [f"  {s.id}  ({s.why})" for s in item.retrieved] or ["  (none)"]
        lines.append(f"  {'#':>4}  {'token':<16} {'student':>9} {'teacher':>9} {'gap':>8} {'gate':>6}")
        rows = zip(item.tokens, item.student_logprobs, item.teacher_logprobs, item.gap, item.gate, strict=True)
        for i, (token, student, teacher, gap, gate) in enumerate(rows):
            lines.append(f"  {i:>4}  {token!r:<16} {student:>9.3f} {teacher:>9.3f} {gap:>+8.3f} {gate:>6.3f}")
    return "\n".join(lines) + "\n"


def _service(request: Request) -> TeacherService:
    return request.app.state.service  # type: ignore[no-any-return]


Service = Annotated[TeacherService, Depends(_service)]


def create_app(settings: TeacherSettings | None = None, *, service: TeacherService | None = None) -> FastAPI:
    """The teacher app; `service` (a loaded model) defaults to what `settings` names."""
    settings = settings or TeacherSettings()
    metrics = Metrics()
    reload_lock = asyncio.Lock()

    def on_batch(items: int, requests: int) -> None:
        metrics.batch_items.observe(items)
        metrics.batch_requests.observe(requests)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        teacher = service if service is not None else await asyncio.to_thread(TeacherService, settings)
        app.state.service = teacher
        app.state.batcher = Batcher(
            teacher, max_items=settings.max_batch_items, wait_s=settings.batch_wait_ms / 1000, on_batch=on_batch
        )
        app.state.batcher.start()
        try:
            yield
        finally:
            await app.state.batcher.stop()

    app = FastAPI(title="SDAR teacher service", version="1", lifespan=lifespan)
    install_common(app, metrics, max_body_bytes=64 << 20)

    map_errors(
        app,
        {
            TooLong: (413, "too_large"),
            ScoringError: (422, "invalid_request"),
            SkillError: (422, "invalid_request"),
            PolicyError: (422, "invalid_request"),
            PolicyConflict: (409, "version_conflict"),
        },
    )

    install_page(app, Path(__file__).with_name("page.html"))  # the debugging page, over /v1/score

    @app.get("/health")
    async def health(svc: Service) -> dict[str, object]:
        return {"status": "ok", "model": svc.loaded.spec, "policy_version": svc.policy.version}

    router = api_router(settings.token)

    @router.get("/metrics", response_class=PlainTextResponse, responses=text("Prometheus metrics"))
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @router.get("/v1/skills", response_model=SkillList)
    async def list_skills(svc: Service, env: Annotated[str | None, Query(max_length=32)] = None) -> SkillList:
        return SkillList(skills=[SkillInfo.model_validate(s.public()) for s in svc.skills.library(env)])

    @router.post("/v1/skills/retrieve", response_model=RetrievedSkills)
    async def retrieve_skills(body: RetrieveSkills, svc: Service) -> RetrievedSkills:
        mode = body.mode or settings.skills_mode
        chosen = await asyncio.to_thread(
            svc.skills.retrieve, body.env, body.task, body.metadata, mode=mode, top_k=body.top_k
        )
        return RetrievedSkills(skills=retrieved(chosen), mode=mode)

    @router.post(
        "/v1/score",
        response_model=ScoreResponse,
        responses=text("`?format=table`: the scores as a table"),
    )
    async def score(
        body: ScoreRequest, request: Request, format: Annotated[Literal["json", "table"], Query()] = "json"
    ) -> Response:
        response: ScoreResponse = await request.app.state.batcher.score(body)
        metrics.tokens.inc(sum(len(item.student_logprobs) for item in response.items))
        if format == "table":
            return PlainTextResponse(as_table(response))
        return JSONResponse(response.model_dump(mode="json"))

    @router.get("/v1/policy", response_model=PolicyInfo)
    async def get_policy(svc: Service) -> PolicyInfo:
        return policy_info(svc)

    @router.post("/v1/policy", response_model=PolicyInfo, responses=errors(409))
    async def load_policy(body: LoadPolicy, svc: Service) -> PolicyInfo:
        async with reload_lock:  # one load at a time; scoring goes on with the old version meanwhile
            await asyncio.to_thread(svc.load_policy, body.path, body.version, body.run, body.take_over)
        return policy_info(svc)

    def policy_info(svc: TeacherService) -> PolicyInfo:
        return PolicyInfo(
            model=svc.loaded.spec,
            path=svc.policy.path,
            policy_version=svc.policy.version,
            run=svc.policy.run,
            teacher_mode=settings.teacher_mode,
            teacher_model=settings.teacher_model,
        )

    app.include_router(router)
    return app
