"""The rollout buffer: finished groups in, batches out, acknowledged only when the learner's update
is checkpointed (DESIGN §6).

`RedisBuffer` keeps groups on a Redis stream read through a consumer group:
- `put` appends a group (zlib-compressed JSON of `shared.rollout_wire.GroupRecord`);
- `get` hands out up to n groups: first, once per consumer life, the groups delivered to this
  consumer name and never acknowledged (a restarted learner gets them again), then groups another
  consumer left pending longer than `claim_idle_ms` (a dead learner's), then new ones;
- `ack` acknowledges and deletes groups once their update is checkpointed: never delivered again;
- a group more than `max_staleness` policy versions older than the learner's is acknowledged
  without being handed out, and counted (`dropped_stale`); so is a record that fails validation
  (`dropped_malformed`).

`MemoryBuffer` has the same interface, in this process only (tests, single-process runs).
"""

from __future__ import annotations

import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis.asyncio as aioredis
from pydantic import ValidationError

from shared.rollout_wire import SCHEMA, GroupRecord


@dataclass(frozen=True)
class Delivery:
    id: str
    group: GroupRecord


@dataclass
class BufferStats:
    length: int
    """Groups on the buffer, acknowledged ones excluded."""
    pending: int
    """Handed out and not yet acknowledged."""
    dropped_stale: int
    dropped_malformed: int


class Buffer(Protocol):
    async def put(self, group: GroupRecord) -> str: ...

    async def get(self, count: int, *, policy_version: int, block_ms: int = 0) -> list[Delivery]: ...

    async def ack(self, ids: list[str]) -> None: ...

    async def stats(self) -> BufferStats: ...

    async def close(self) -> None: ...


def encode(group: GroupRecord) -> bytes:
    return zlib.compress(group.model_dump_json(by_alias=True).encode(), 6)


def decode(payload: bytes) -> GroupRecord:
    return GroupRecord.model_validate_json(zlib.decompress(payload))


def stale(group: GroupRecord, policy_version: int, max_staleness: int) -> bool:
    return policy_version - group.policy_version > max_staleness


class RedisBuffer:
    def __init__(
        self,
        url: str,
        *,
        prefix: str = "sdar:rollout:",
        consumer: str = "learner-0",
        group: str = "learners",
        max_staleness: int = 0,
        claim_idle_ms: int = 60_000,
    ) -> None:
        self.redis: Any = aioredis.Redis.from_url(url)
        self.stream = f"{prefix}groups"
        self.counters = f"{prefix}dropped"
        self.group = group
        self.consumer = consumer
        self.max_staleness = max_staleness
        self.claim_idle_ms = claim_idle_ms
        self._own_pending_read = False
        self._ready = False

    async def _ensure(self) -> None:
        if self._ready:
            return
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except aioredis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise
        self._ready = True

    async def put(self, group: GroupRecord) -> str:
        await self._ensure()
        fields = {"g": encode(group), "v": group.policy_version, "schema": SCHEMA}
        entry_id = await self.redis.xadd(self.stream, fields)
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

    async def get(self, count: int, *, policy_version: int, block_ms: int = 0) -> list[Delivery]:
        await self._ensure()
        out: list[Delivery] = []
        if not self._own_pending_read:  # what this consumer name held when it died
            self._own_pending_read = True
            out += await self._read("0", count)
        if len(out) < count:
            claimed = await self.redis.xautoclaim(
                self.stream, self.group, self.consumer, self.claim_idle_ms, "0-0", count=count - len(out)
            )
            out += await self._keep(claimed[1])
        if len(out) < count:
            out += await self._read(">", count - len(out), block_ms)
        fresh = []
        for delivery in out:
            if stale(delivery.group, policy_version, self.max_staleness):
                await self._drop([delivery.id], "stale")
            else:
                fresh.append(delivery)
        return fresh

    async def _read(self, start: str, count: int, block_ms: int = 0) -> list[Delivery]:
        block = block_ms if start == ">" and block_ms > 0 else None
        reply = await self.redis.xreadgroup(self.group, self.consumer, {self.stream: start}, count=count, block=block)
        entries = reply[0][1] if reply else []
        return await self._keep(entries)

    async def _keep(self, entries: list[Any]) -> list[Delivery]:
        out = []
        for raw_id, fields in entries:
            entry_id = raw_id.decode() if isinstance(raw_id, bytes) else str(raw_id)
            if not fields:  # deleted since it was delivered
                continue
            try:
                out.append(Delivery(entry_id, decode(fields[b"g"])))
            except (KeyError, zlib.error, ValidationError, ValueError):
                await self._drop([entry_id], "malformed")
        return out

    async def _drop(self, ids: list[str], why: str) -> None:
        await self.ack(ids)
        await self.redis.hincrby(self.counters, why, len(ids))

    async def ack(self, ids: list[str]) -> None:
        if ids:
            await self._ensure()
            await self.redis.xack(self.stream, self.group, *ids)
            await self.redis.xdel(self.stream, *ids)

    async def stats(self) -> BufferStats:
        await self._ensure()
        counters = await self.redis.hgetall(self.counters)
        pending = await self.redis.xpending(self.stream, self.group)
        return BufferStats(
            length=await self.redis.xlen(self.stream),
            pending=int(pending["pending"]),
            dropped_stale=int(counters.get(b"stale", 0)),
            dropped_malformed=int(counters.get(b"malformed", 0)),
        )

    async def close(self) -> None:
        await self.redis.aclose()


@dataclass
class MemoryBuffer:
    max_staleness: int = 0
    _queue: deque[Delivery] = field(default_factory=deque)
    _pending: dict[str, Delivery] = field(default_factory=dict)
    _count: int = 0
    _dropped_stale: int = 0

    async def put(self, group: GroupRecord) -> str:
        decode(encode(group))  # the same validation a Redis round trip gives
        self._count += 1
        entry_id = f"{self._count}-0"
        self._queue.append(Delivery(entry_id, group))
        return entry_id

    async def get(self, count: int, *, policy_version: int, block_ms: int = 0) -> list[Delivery]:
        out: list[Delivery] = []
        while self._queue and len(out) < count:
            delivery = self._queue.popleft()
            if stale(delivery.group, policy_version, self.max_staleness):
                self._dropped_stale += 1
                continue
            self._pending[delivery.id] = delivery
            out.append(delivery)
        return out

    async def ack(self, ids: list[str]) -> None:
        for entry_id in ids:
            self._pending.pop(entry_id, None)

    async def stats(self) -> BufferStats:
        return BufferStats(len(self._queue) + len(self._pending), len(self._pending), self._dropped_stale, 0)

    async def close(self) -> None:
        return None
