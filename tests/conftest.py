"""Shared fixtures: a real Redis (never a fake), in-process apps, a shared ALFWorld game cache."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from services.envs.app import create_app
from shared.redis import reachable, redis_server
from shared.settings import EnvServiceSettings


@pytest.fixture(scope="session")
def redis_base_url() -> Iterator[str]:
    """`$REDIS_URL`, else the machine's Redis on 127.0.0.1:6379, else an embedded Valkey."""
    local = "redis://127.0.0.1:6379/0"
    with redis_server(os.environ.get("REDIS_URL") or (local if reachable(local) else None)) as url:
        yield url


@pytest.fixture
def redis_prefix(redis_base_url: str) -> Iterator[str]:
    """A key prefix of this test's own; whatever is left under it is removed afterwards."""
    prefix = f"sdar-test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_base_url)
    for key in client.scan_iter(f"{prefix}*"):
        client.delete(key)
    client.close()


@pytest.fixture(scope="session")
def alfworld_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Generated ALFWorld games, shared by the whole session (solving a game takes seconds);
    `$SDAR_TEST_CACHE_DIR` keeps them across sessions."""
    kept = os.environ.get("SDAR_TEST_CACHE_DIR")
    return Path(kept) if kept else tmp_path_factory.mktemp("sdar-cache")


@pytest.fixture(scope="session")
def sdar_cache(alfworld_cache: Path) -> Path:
    """The session's cache folder for anything generated once (WebShop's title nouns, games)."""
    return alfworld_cache


def settings(**overrides: object) -> EnvServiceSettings:
    return EnvServiceSettings(**{"envs": ["counter"], **overrides})  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def in_process(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """Any of the project's apps in this process, lifespan included, behind an httpx client."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=60) as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


@contextlib.asynccontextmanager
async def serve(app_settings: EnvServiceSettings, **kwargs: object) -> AsyncIterator[httpx.AsyncClient]:
    """The env service app in this process, lifespan included, behind an httpx client."""
    async with in_process(create_app(app_settings, **kwargs)) as client:  # type: ignore[arg-type]
        yield client


def metric(url: str, name: str, **labels: str) -> float:
    """The sum of a service's Prometheus samples `name` whose labels include `labels`, read from its
    `/metrics` with prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )
