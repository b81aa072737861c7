"""The episode store: where an episode's record lives, so that any replica can serve any step.

One short interface, two implementations: `RedisEpisodeStore` (shared by replicas; what survives a
replica's death) and `MemoryEpisodeStore` (one embedded server). Both give the same guarantees:

- `append` is an atomic compare-and-set on the number of steps, so two concurrent requests for one
  step cannot both apply;
- an episode idle for `ttl_s` disappears with everything it held;
- `create` refuses beyond `capacity` open episodes.

Records are JSON-able dicts: a static `head` written at creation, then one `{"action", "result"}`
per step.
"""

from __future__ import annotations

import asyncio
import json
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis


class StoreFull(Exception):
    """The store holds `capacity` open episodes already."""


@dataclass
class StoredEpisode:
    head: dict[str, Any]
    steps: list[dict[str, Any]]
    done: bool
    updated_at: float


@dataclass(frozen=True)
class Appended:
    """Outcome of `append`: `ok`, or the step count found instead (`None` if the episode is gone)."""

    ok: bool
    current_step: int | None = None
    done: bool = False


class EpisodeStore(ABC):
    kind: str

    def __init__(self, ttl_s: float, capacity: int) -> None:
        self.ttl_s = ttl_s
        self.capacity = capacity

    @abstractmethod
    async def create(self, episode_id: str, head: dict[str, Any]) -> bool:
        """Store a new episode; False if the id exists. Raises `StoreFull`."""

    @abstractmethod
    async def get(self, episode_id: str) -> StoredEpisode | None: ...

    @abstractmethod
    async def append(self, episode_id: str, expected_step: int, step: dict[str, Any], done: bool) -> Appended:
        """Add step number `expected_step` if exactly that many are stored and the episode is not done."""

    @abstractmethod
    async def delete(self, episode_id: str) -> bool: ...

    @abstractmethod
    async def count(self) -> int:
        """Open (unexpired) episodes."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise if the store cannot be reached."""

    async def close(self) -> None:
        return None


class MemoryEpisodeStore(EpisodeStore):
    """Episodes in this process, oldest-touched first, swept lazily on every call."""

    kind = "memory"

    def __init__(self, ttl_s: float, capacity: int) -> None:
        super().__init__(ttl_s, capacity)
        self._episodes: OrderedDict[str, tuple[float, StoredEpisode]] = OrderedDict()
        self._lock = asyncio.Lock()

    def _sweep(self) -> None:
        now = time.monotonic()
        while self._episodes:
            episode_id, (expires, _) = next(iter(self._episodes.items()))
            if expires > now:
                break
            del self._episodes[episode_id]

    def _touch(self, episode_id: str, episode: StoredEpisode) -> None:
        self._episodes[episode_id] = (time.monotonic() + self.ttl_s, episode)
        self._episodes.move_to_end(episode_id)

    async def create(self, episode_id: str, head: dict[str, Any]) -> bool:
        async with self._lock:
            self._sweep()
            if episode_id in self._episodes:
                return False
            if len(self._episodes) >= self.capacity:
                raise StoreFull
            self._touch(episode_id, StoredEpisode(head, [], False, head["created_at"]))
            return True

    async def get(self, episode_id: str) -> StoredEpisode | None:
        async with self._lock:
            self._sweep()
            entry = self._episodes.get(episode_id)
            if entry is None:
                return None
            episode = entry[1]
            return StoredEpisode(episode.head, list(episode.steps), episode.done, episode.updated_at)

    async def append(self, episode_id: str, expected_step: int, step: dict[str, Any], done: bool) -> Appended:
        async with self._lock:
            self._sweep()
            entry = self._episodes.get(episode_id)
            if entry is None:
                return Appended(False)
            episode = entry[1]
            if len(episode.steps) != expected_step or episode.done:
                return Appended(False, len(episode.steps), episode.done)
            episode.steps.append(step)
            episode.done = done
            episode.updated_at = time.time()
            self._touch(episode_id, episode)
            return Appended(True, expected_step + 1, done)

    async def delete(self, episode_id: str) -> bool:
        async with self._lock:
            self._sweep()
            return self._episodes.pop(episode_id, None) is not None

    async def count(self) -> int:
        async with self._lock:
            self._sweep()
            return len(self._episodes)

    async def ping(self) -> None:
        return None


# Redis layout, all under one prefix:
#   {p}ep:{id}        hash: head (JSON), n (steps applied), done (0/1), updated_at
#   {p}ep:{id}:steps  list of JSON steps
#   {p}open           sorted set: episode id -> expiry (ms, server clock); counts open episodes
# Every write refreshes the TTL of the episode's keys and of the set, so nothing outlives the last
# episode by more than one TTL.

_NOW_MS = "local t = redis.call('TIME'); local now = t[1] * 1000 + math.floor(t[2] / 1000)"

_CREATE = f"""
{_NOW_MS}
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then return -1 end
redis.call('HSET', KEYS[1], 'head', ARGV[1], 'n', 0, 'done', 0, 'updated_at', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], now + ttl, ARGV[4])
redis.call('PEXPIRE', KEYS[2], ttl)
return 1
"""

_APPEND = f"""
{_NOW_MS}
local ttl = tonumber(ARGV[4])
if redis.call('EXISTS', KEYS[1]) == 0 then return {{-1, 0}} end
local n = tonumber(redis.call('HGET', KEYS[1], 'n'))
local done = tonumber(redis.call('HGET', KEYS[1], 'done'))
if n ~= tonumber(ARGV[1]) or done == 1 then return {{n, done}} end
redis.call('RPUSH', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[1], 'n', n + 1, 'done', ARGV[3], 'updated_at', ARGV[6])
redis.call('PEXPIRE', KEYS[1], ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('ZADD', KEYS[3], now + ttl, ARGV[5])
redis.call('PEXPIRE', KEYS[3], ttl)
return {{-2, tonumber(ARGV[3])}}
"""

_COUNT = f"""
{_NOW_MS}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"""


class RedisEpisodeStore(EpisodeStore):
    """Episodes in Redis, shared by every replica that uses the same URL and prefix."""

    kind = "redis"

    def __init__(self, url: str, ttl_s: float, capacity: int, prefix: str = "sdar:envs:") -> None:
        super().__init__(ttl_s, capacity)
        self.prefix = prefix
        # a bounded pool that makes a caller wait for a connection, rather than fail with "Too many
        # connections" when a thousand steps arrive at once
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=64, timeout=20, decode_responses=True, socket_timeout=10, socket_connect_timeout=5
        )
        self._redis = aioredis.Redis.from_pool(pool)  # closed with it
        # the health check's own connection, so a pool busy with steps never reads as a store that is down
        self._health = aioredis.Redis.from_pool(
            aioredis.BlockingConnectionPool.from_url(
                url, max_connections=2, timeout=2, socket_timeout=2, socket_connect_timeout=2
            )
        )
        # raw (bytes) reads of other streams on this Redis, for the episode viewer: a pool of their own
        self._raw = aioredis.Redis.from_pool(
            aioredis.BlockingConnectionPool.from_url(url, max_connections=4, timeout=5, socket_timeout=5)
        )
        self._create = self._redis.register_script(_CREATE)
        self._append = self._redis.register_script(_APPEND)
        self._count = self._redis.register_script(_COUNT)
        self._open_key = f"{prefix}open"

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl_s * 1000))

    async def stream_entry(self, stream: str, entry_id: str) -> dict[bytes, bytes] | None:
        """One entry of a stream on this Redis, its fields as bytes (a rollout buffer's group, for the
        episode viewer), or None; on a small pool of raw connections, never the episodes' or the health check's."""
        entries: Any = await self._raw.xrange(stream, entry_id, entry_id, count=1)
        return dict(entries[0][1]) if entries else None

    def _keys(self, episode_id: str) -> tuple[str, str]:
        key = f"{self.prefix}ep:{episode_id}"
        return key, f"{key}:steps"

    async def create(self, episode_id: str, head: dict[str, Any]) -> bool:
        key, _ = self._keys(episode_id)
        created = await self._create(
            keys=[key, self._open_key],
            args=[json.dumps(head), self._ttl_ms, self.capacity, episode_id, head["created_at"]],
        )
        if created == -1:
            raise StoreFull
        return bool(created == 1)

    async def get(self, episode_id: str) -> StoredEpisode | None:
        key, steps_key = self._keys(episode_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(key)
            pipe.lrange(steps_key, 0, -1)
            fields, steps = await pipe.execute()
        if not fields:
            return None
        n = int(fields["n"])
        return StoredEpisode(
            head=json.loads(fields["head"]),
            steps=[json.loads(s) for s in steps[:n]],
            done=fields["done"] == "1",
            updated_at=float(fields["updated_at"]),
        )

    async def append(self, episode_id: str, expected_step: int, step: dict[str, Any], done: bool) -> Appended:
        key, steps_key = self._keys(episode_id)
        current, now_done = await self._append(
            keys=[key, steps_key, self._open_key],
            args=[expected_step, json.dumps(step), int(done), self._ttl_ms, episode_id, time.time()],
        )
        if current == -2:
            return Appended(True, expected_step + 1, bool(now_done))
        if current == -1:
            return Appended(False)
        return Appended(False, int(current), bool(now_done))

    async def delete(self, episode_id: str) -> bool:
        key, steps_key = self._keys(episode_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(key, steps_key)
            pipe.zrem(self._open_key, episode_id)
            deleted, _ = await pipe.execute()
        return bool(deleted)

    async def count(self) -> int:
        return int(await self._count(keys=[self._open_key]))

    async def ping(self) -> None:
        await self._health.ping()

    async def close(self) -> None:
        await self._redis.aclose()
        await self._health.aclose()
        await self._raw.aclose()
