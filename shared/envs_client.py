"""Python clients of the environment service, sync (`EnvClient`) and async (`AsyncEnvClient`).

Every call is safe to retry, so both clients retry transport failures and 429/502/503/504 answers
with exponential backoff: steps are idempotent (a step index with the action already recorded
returns the recorded result), and `create` sends a client-chosen `episode_id`, so a retried create
returns the episode it already made instead of a second one.

A client may be given several replicas of one env service (a list, or URLs joined by commas): every
replica serves every episode (they share the store), so an episode's calls go to the replica its id
hashes to (where its live simulator is likely cached), and a call that fails there is tried on the
next replica at once; the backoff comes after a whole round of replicas has failed.
"""

from __future__ import annotations

import asyncio
import time
import uuid
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
from pydantic import TypeAdapter

from shared.wire import (
    RETRY_STATUSES,
    BatchStepItem,
    BatchStepRequest,
    BatchStepResponse,
    CreateEpisode,
    EnvInfo,
    Episode,
    EpisodeRecord,
    ErrorBody,
    Health,
    StepRequest,
    StepResult,
    TaskList,
)

T = TypeVar("T")


class EnvServiceError(Exception):
    """An error answer of the service: HTTP status, error code, message."""

    def __init__(self, status: int, code: str, message: str, current_step: int | None = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.current_step = current_step


@dataclass
class _Call(Generic[T]):
    """One request and how to read its answer; the same for both clients."""

    method: str
    path: str
    parse: Callable[[httpx.Response], T]
    json: Any = None
    params: dict[str, Any] = field(default_factory=dict)
    ok_statuses: frozenset[int] = frozenset()
    """Error statuses that mean success on a retry (e.g. 404 for a retried DELETE)."""
    key: str | None = None
    """The episode it is about: its calls start on the same replica."""


def _error(response: httpx.Response) -> EnvServiceError:
    try:
        detail = ErrorBody.model_validate(response.json()).error
        return EnvServiceError(response.status_code, detail.code, detail.message, detail.current_step)
    except Exception:  # noqa: BLE001 - a non-JSON error page (a proxy's) is still an error
        return EnvServiceError(response.status_code, "http_error", response.text[:500])


def _model(model: type[Any]) -> Callable[[httpx.Response], Any]:
    return lambda r: model.model_validate(r.json())


_ENV_LIST = TypeAdapter(list[EnvInfo])


class _Calls:
    """The service's routes as `_Call`s."""

    @staticmethod
    def health() -> _Call[Health]:
        return _Call("GET", "/health", _model(Health))

    @staticmethod
    def envs() -> _Call[list[EnvInfo]]:
        return _Call("GET", "/v1/envs", lambda r: _ENV_LIST.validate_python(r.json()))

    @staticmethod
    def tasks(env: str, split: str, offset: int, limit: int) -> _Call[TaskList]:
        params = {"split": split, "offset": offset, "limit": limit}
        return _Call("GET", f"/v1/envs/{env}/tasks", _model(TaskList), params=params)

    @staticmethod
    def create(env: str, request: CreateEpisode) -> _Call[Episode]:
        body = request.model_dump(exclude_none=True)
        return _Call("POST", f"/v1/envs/{env}/episodes", _model(Episode), json=body, key=request.episode_id)

    @staticmethod
    def step(episode_id: str, action: str, step: int) -> _Call[StepResult]:
        body = StepRequest(action=action, step=step).model_dump()
        return _Call("POST", f"/v1/episodes/{episode_id}/step", _model(StepResult), json=body, key=episode_id)

    @staticmethod
    def step_many(items: list[BatchStepItem]) -> _Call[list[StepResult | ErrorBody]]:
        body = BatchStepRequest(steps=items).model_dump()
        return _Call(
            "POST", "/v1/episodes:step", lambda r: BatchStepResponse.model_validate(r.json()).results, json=body
        )

    @staticmethod
    def record(episode_id: str) -> _Call[EpisodeRecord]:
        return _Call("GET", f"/v1/episodes/{episode_id}", _model(EpisodeRecord), key=episode_id)

    @staticmethod
    def lookup(env: str, collection: str, key: str) -> _Call[dict[str, Any]]:
        return _Call("GET", f"/v1/envs/{env}/{collection}/{key}", lambda r: dict(r.json()))

    @staticmethod
    def delete(episode_id: str) -> _Call[None]:
        return _Call(
            "DELETE", f"/v1/episodes/{episode_id}", lambda r: None, ok_statuses=frozenset({404}), key=episode_id
        )


def _create_request(
    task_id: str | None, split: str | None, index: int | None, max_steps: int | None, episode_id: str | None
) -> CreateEpisode:
    return CreateEpisode(
        task_id=task_id, split=split, index=index, max_steps=max_steps, episode_id=episode_id or uuid.uuid4().hex
    )


def replica_urls(base_url: str | Sequence[str]) -> list[str]:
    """One URL, several joined by commas, or a list of them: the replicas, each without a final `/`."""
    urls = base_url.split(",") if isinstance(base_url, str) else list(base_url)
    urls = [u.strip().rstrip("/") for u in urls if u.strip()]
    if not urls:
        raise ValueError("no env service URL given")
    return urls


class _Base:
    def __init__(
        self, base_url: str | Sequence[str], token: str | None, timeout: float, retries: int, backoff_s: float
    ) -> None:
        self.urls = replica_urls(base_url)
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout = timeout
        self.retries = retries
        self.backoff_s = backoff_s
        self._turn = 0  # calls about no episode take the replicas in turn

    def _replica(self, call: _Call[Any], attempt: int) -> int:
        """Which replica attempt `attempt` of `call` goes to: its episode's, then the next ones."""
        if attempt == 0 and call.key is None:
            self._turn += 1
        start = zlib.crc32(call.key.encode()) if call.key is not None else self._turn
        return (start + attempt) % len(self.urls)

    def _pause(self, attempt: int) -> float:
        """The wait before attempt `attempt + 1`: none between replicas of a round, then the backoff."""
        rounds, place = divmod(attempt, len(self.urls))
        return float(self.backoff_s * 2**rounds) if place == len(self.urls) - 1 else 0.0

    def _settle(
        self, call: _Call[Any], answer: httpx.Response | httpx.TransportError, attempt: int
    ) -> httpx.Response | None:
        """The retry rule, the same for both clients: the response when it is final and good, None
        when another attempt is worth it; raises a final error. `retries` counts rounds of replicas."""
        last = attempt >= (self.retries + 1) * len(self.urls) - 1
        if isinstance(answer, httpx.TransportError):
            if last:
                raise answer
            return None
        if answer.is_success or (attempt > 0 and answer.status_code in call.ok_statuses):
            return answer
        if answer.status_code in RETRY_STATUSES and not last:
            return None
        raise _error(answer)


class EnvClient(_Base):
    """Blocking client. Use as a context manager, or call `close()`."""

    def __init__(
        self,
        base_url: str | Sequence[str],
        token: str | None = None,
        *,
        timeout: float = 120.0,
        retries: int = 4,
        backoff_s: float = 0.25,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, token, timeout, retries, backoff_s)
        self._https = [
            httpx.Client(base_url=url, headers=self.headers, timeout=timeout, transport=transport) for url in self.urls
        ]

    def __enter__(self) -> EnvClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for http in self._https:
            http.close()

    def _send(self, call: _Call[T]) -> T:
        attempt = 0
        while True:
            http = self._https[self._replica(call, attempt)]
            try:
                answer: httpx.Response | httpx.TransportError = http.request(
                    call.method, call.path, json=call.json, params=call.params or None
                )
            except httpx.TransportError as e:
                answer = e
            final = self._settle(call, answer, attempt)
            if final is not None:
                return call.parse(final)
            time.sleep(self._pause(attempt))
            attempt += 1

    def health(self) -> Health:
        return self._send(_Calls.health())

    def envs(self) -> list[EnvInfo]:
        return self._send(_Calls.envs())

    def tasks(self, env: str, split: str, offset: int = 0, limit: int = 100) -> TaskList:
        return self._send(_Calls.tasks(env, split, offset, limit))

    def create(
        self,
        env: str,
        *,
        task_id: str | None = None,
        split: str | None = None,
        index: int | None = None,
        max_steps: int | None = None,
        episode_id: str | None = None,
    ) -> Episode:
        return self._send(_Calls.create(env, _create_request(task_id, split, index, max_steps, episode_id)))

    def step(self, episode_id: str, action: str, step: int) -> StepResult:
        return self._send(_Calls.step(episode_id, action, step))

    def step_many(self, items: list[BatchStepItem]) -> list[StepResult | ErrorBody]:
        return self._send(_Calls.step_many(items))

    def record(self, episode_id: str) -> EpisodeRecord:
        return self._send(_Calls.record(episode_id))

    def lookup(self, env: str, collection: str, key: str) -> dict[str, Any]:
        """An env-specific resource, e.g. `lookup("webshop", "products", asin)`."""
        return self._send(_Calls.lookup(env, collection, key))

    def delete(self, episode_id: str) -> None:
        self._send(_Calls.delete(episode_id))


class AsyncEnvClient(_Base):
    """Async client. Use as an async context manager, or call `aclose()`."""

    def __init__(
        self,
        base_url: str | Sequence[str],
        token: str | None = None,
        *,
        timeout: float = 120.0,
        retries: int = 4,
        backoff_s: float = 0.25,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(base_url, token, timeout, retries, backoff_s)
        self._https = [
            httpx.AsyncClient(base_url=url, headers=self.headers, timeout=timeout, transport=transport)
            for url in self.urls
        ]

    async def __aenter__(self) -> AsyncEnvClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for http in self._https:
            await http.aclose()

    async def _send(self, call: _Call[T]) -> T:
        attempt = 0
        while True:
            http = self._https[self._replica(call, attempt)]
            try:
                answer: httpx.Response | httpx.TransportError = await http.request(
                    call.method, call.path, json=call.json, params=call.params or None
                )
            except httpx.TransportError as e:
                answer = e
            final = self._settle(call, answer, attempt)
            if final is not None:
                return call.parse(final)
            await asyncio.sleep(self._pause(attempt))
            attempt += 1

    async def health(self) -> Health:
        return await self._send(_Calls.health())

    async def envs(self) -> list[EnvInfo]:
        return await self._send(_Calls.envs())

    async def tasks(self, env: str, split: str, offset: int = 0, limit: int = 100) -> TaskList:
        return await self._send(_Calls.tasks(env, split, offset, limit))

    async def create(
        self,
        env: str,
        *,
        task_id: str | None = None,
        split: str | None = None,
        index: int | None = None,
        max_steps: int | None = None,
        episode_id: str | None = None,
    ) -> Episode:
        return await self._send(_Calls.create(env, _create_request(task_id, split, index, max_steps, episode_id)))

    async def step(self, episode_id: str, action: str, step: int) -> StepResult:
        return await self._send(_Calls.step(episode_id, action, step))

    async def step_many(self, items: list[BatchStepItem]) -> list[StepResult | ErrorBody]:
        return await self._send(_Calls.step_many(items))

    async def record(self, episode_id: str) -> EpisodeRecord:
        return await self._send(_Calls.record(episode_id))

    async def lookup(self, env: str, collection: str, key: str) -> dict[str, Any]:
        """An env-specific resource, e.g. `await lookup("webshop", "products", asin)`."""
        return await self._send(_Calls.lookup(env, collection, key))

    async def delete(self, episode_id: str) -> None:
        await self._send(_Calls.delete(episode_id))
