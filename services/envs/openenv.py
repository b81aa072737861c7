"""OpenEnv's session protocol on the env service, so that agents written for OpenEnv (`openenv-core`'s
`EnvClient`, TRL's environment integration) play our environments unchanged.

OpenEnv keeps an episode in a WebSocket session (`/ws`): the client sends JSON messages
`{"type": "reset", "data": {...}}`, `{"type": "step", "data": {"action": "..."}}`, `{"type": "state"}`
and `{"type": "close"}`, and the server answers `{"type": "observation", "data": {"observation": {...},
"reward": r, "done": d}}`, `{"type": "state", "data": {...}}` or `{"type": "error", "data": {"message":
..., "code": ...}}`. Clients also read `GET /schema` (the action, observation and state JSON schemas)
and `GET /metadata`.

Here a session is a view of one of our stateless episodes, nothing more: `reset` creates an episode
in the store (`data`: `env`, then `task_id`, or `split` and `index` or `seed`, and `max_steps` and
`episode_id`, as `POST /v1/envs/{env}/episodes` takes them), and each `step` is the idempotent
`step(episode_id, action, n)` with the session's count. So an episode outlives its socket: a client
whose replica died connects to another and sends `reset` with the same `episode_id`, and the session
picks the episode up where it stood (its last observation and step count). `close` deletes the
episode; a socket that drops without it leaves the episode to expire as any other.

A bad message (not JSON, not text, an unknown type, a field too many, a step before reset, an action
the env refuses) gets an error message and the session goes on; the socket is never dropped for it.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import redis.exceptions as redis
from fastapi import APIRouter, FastAPI, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.envs.base import UnknownResource, UnknownTask
from services.envs.episodes import EpisodeService, NotFound, ServiceError
from shared.server import bearer_ok, strict_json
from shared.wire import CreateEpisode, Episode, StepResult

log = logging.getLogger("services.envs.openenv")


class Reset(BaseModel):
    """`reset`'s data: which task, as `POST /v1/envs/{env}/episodes` (`seed` picks an index)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    env: str | None = Field(default=None, max_length=64)
    """Default: the first env this service hosts."""
    task_id: str | None = Field(default=None, max_length=256)
    split: str | None = Field(default=None, max_length=64)
    index: int | None = Field(default=None, ge=0)
    seed: int | None = None
    """With no `task_id` or `index`: the task `seed` modulo the split's size (split default `train`)."""
    max_steps: int | None = Field(default=None, ge=1, le=10_000)
    episode_id: str | None = Field(default=None, min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    """An episode that exists is picked up where it stands (a client back from a dead replica)."""


class Action(BaseModel):
    """`step`'s data."""

    model_config = ConfigDict(extra="forbid", strict=True)

    action: str
    """The action text, as `POST /v1/episodes/{id}/step` takes it."""


class Observation(BaseModel):
    """What each `reset` and `step` shows (beside the reward and `done`)."""

    text: str
    """The env's observation text."""
    admissible_actions: list[str] | None
    won: bool = False
    truncated: bool = False
    episode_id: str
    step: int
    """Actions applied so far."""
    task: str | None = None
    """The goal text (on `reset`)."""
    info: dict[str, Any] = Field(default_factory=dict)


class State(BaseModel):
    """A session's state, which `state` answers: the episode it views and its step count."""

    episode_id: str | None = None
    step_count: int = 0
    env: str | None = None
    task_id: str | None = None
    done: bool = False


class SessionError(Exception):
    def __init__(self, message: str, code: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.code, self.reason = code, reason


def _error(message: str, code: str, reason: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"message": message, "code": code}
    if reason is not None:
        data["reason"] = reason  # our own error code (`episode_done`, `store_unreachable`, ...)
    return {"type": "error", "data": data}


def _reply(observation: Observation, reward: float, done: bool) -> dict[str, Any]:
    return {"type": "observation", "data": {"observation": observation.model_dump(), "reward": reward, "done": done}}


def _observed(result: StepResult) -> dict[str, Any]:
    """A step's reply."""
    observation = Observation(
        text=result.observation,
        admissible_actions=result.admissible_actions,
        won=result.won,
        truncated=result.truncated,
        episode_id=result.episode_id,
        step=result.step,
        info=result.info,
    )
    return _reply(observation, result.reward, result.done)


def _opened(episode: Episode) -> dict[str, Any]:
    """An episode's opening, as a reply."""
    observation = Observation(
        text=episode.observation,
        admissible_actions=episode.admissible_actions,
        episode_id=episode.episode_id,
        step=0,
        task=episode.task,
        info=episode.info,
    )
    return _reply(observation, 0.0, False)


async def _reset(service: EpisodeService, session: State, data: Reset) -> dict[str, Any]:
    if data.episode_id is not None:
        try:
            record = await service.record(data.episode_id)  # an episode that exists: picked up where it stands
        except NotFound:
            record = None
        if record is not None:
            if data.env is not None and record.env != data.env:
                raise SessionError(
                    f"episode {data.episode_id} is a {record.env} episode, not {data.env}", "VALIDATION_ERROR"
                )
            session.episode_id, session.env, session.task_id = record.episode_id, record.env, record.task_id
            session.step_count, session.done = record.step, record.done
            return _observed(record.results[-1]) if record.results else _opened(record)
    env_name = data.env or next(iter(service.envs))
    env = service.env(env_name)
    index = data.index
    split = data.split
    if data.task_id is None and index is None:
        split = split or "train"
        sizes = env.splits()
        if split not in sizes:
            raise SessionError(f"no split {split!r} in {env_name}; there are {', '.join(sizes)}", "VALIDATION_ERROR")
        index = (data.seed or 0) % sizes[split]
    request = CreateEpisode(
        task_id=data.task_id, split=split, index=index, max_steps=data.max_steps, episode_id=data.episode_id
    )
    episode = await service.create(env_name, request)
    session.episode_id, session.env, session.task_id = episode.episode_id, episode.env, episode.task_id
    session.step_count, session.done = 0, False
    return _opened(episode)


async def _step(service: EpisodeService, session: State, data: Action) -> dict[str, Any]:
    if session.episode_id is None:
        raise SessionError("no episode in this session: send reset first", "SESSION_ERROR")
    result = await service.step(session.episode_id, data.action, session.step_count)
    session.step_count, session.done = result.step, result.done
    return _observed(result)


async def _answer(service: EpisodeService, session: State, raw: bytes) -> dict[str, Any] | None:
    """The reply to one message (None: the client closed the session)."""
    try:
        message = strict_json(raw)  # as every HTTP route: UTF-8, no NaN, NUL, lone surrogate, deep nesting
    except ValueError as e:
        return _error(f"Invalid JSON: {e}", "INVALID_JSON")
    if not isinstance(message, dict):
        return _error("a message is a JSON object with a type", "VALIDATION_ERROR")
    kind = message.get("type")
    extra = sorted(set(message) - {"type", "data"})
    if extra:
        return _error(f"unknown field(s) {', '.join(extra)}: a message has a type and data", "VALIDATION_ERROR")
    data = message.get("data", {})
    try:
        if kind == "reset":
            return await _reset(service, session, Reset.model_validate(data if data is not None else {}))
        if kind == "step":
            return await _step(service, session, Action.model_validate(data))
        if kind == "state":
            return {"type": "state", "data": session.model_dump()}
        if kind == "close":
            if session.episode_id is not None:
                with contextlib.suppress(ServiceError):  # already gone (expired, or closed over HTTP)
                    await service.delete(session.episode_id)
            return None
        return _error(f"Unknown message type: {kind}", "UNKNOWN_TYPE")
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "data"
        return _error(f"{kind} data: {where}: {first['msg']}", "VALIDATION_ERROR")
    except SessionError as e:
        return _error(str(e), e.code, e.reason)
    except ServiceError as e:
        code = "CAPACITY_REACHED" if e.status == 429 else "EXECUTION_ERROR"
        return _error(e.message, code, e.code)
    except (UnknownTask, UnknownResource) as e:
        return _error(str(e), "EXECUTION_ERROR", "not_found")
    except (redis.ConnectionError, redis.TimeoutError) as e:
        return _error(f"the episode store is unreachable: {e}", "EXECUTION_ERROR", "store_unreachable")


def install_openenv(app: FastAPI, router: APIRouter, token: str | None, max_message_bytes: int) -> None:
    """`/ws` on `app`, and `/schema` and `/metadata` on `router` (behind the token, as every route but
    `/health`), for the env service whose `state.service` they use."""

    @app.websocket("/ws")
    async def session(websocket: WebSocket) -> None:
        if not bearer_ok(websocket.headers.get("authorization", ""), token):
            await websocket.close(code=1008, reason="missing or wrong bearer token")
            return
        await websocket.accept()
        service: EpisodeService = websocket.app.state.service
        state = State()
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                text = message.get("text")
                raw = text.encode() if text is not None else message.get("bytes") or b""
                if len(raw) > max_message_bytes:
                    reply: dict[str, Any] | None = _error(
                        f"a message of {len(raw)} bytes exceeds the limit of {max_message_bytes}",
                        "VALIDATION_ERROR",
                    )
                else:
                    try:
                        reply = await _answer(service, state, raw)
                    except Exception as e:
                        log.exception("openenv session: a message failed")
                        reply = _error(f"the service failed on this message ({type(e).__name__})", "EXECUTION_ERROR")
                if reply is None:
                    await websocket.close()
                    return
                await websocket.send_json(reply)
        except WebSocketDisconnect:
            return

    @router.get("/schema", tags=["OpenEnv"])
    async def schema() -> dict[str, Any]:
        """The JSON schemas of a session's actions, observations and state (OpenEnv's `/schema`)."""
        return {
            "action": Action.model_json_schema(),
            "observation": Observation.model_json_schema(),
            "state": State.model_json_schema(),
        }

    @router.get("/metadata", tags=["OpenEnv"])
    async def metadata() -> dict[str, Any]:
        """What this service is (OpenEnv's `/metadata`)."""
        envs = ", ".join(sorted(app.state.service.envs))
        return {
            "name": "sdar-envs",
            "description": f"SDAR environment service hosting {envs}; episodes are stateless and shared by replicas",
            "version": "1",
            "readme_content": None,
            "author": None,
            "documentation_url": None,
        }
