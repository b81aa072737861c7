"""The rollout buffer: finished groups in, groups out to learners exactly once, acknowledged only when
the learner's update is checkpointed (DESIGN §6).

Both implementations (`RedisBuffer` on a Redis stream read through a consumer group, `MemoryBuffer`
in this process) keep these rules, and one test suite holds them to it:
- `put` appends a group (zlib-compressed JSON of `shared.rollout_wire.GroupRecord`), once per group
  id: a put retried after a lost reply returns the entry it made the first time.
- `get` hands this consumer up to n groups, never one it already holds: first what its name held
  unacknowledged when it last died (a restarted learner), then groups another consumer has left
  unacknowledged for `claim_idle_ms` (a dead learner's), then new ones. Every `get`, `keepalive` and
  `ack` refreshes the idle time of everything this consumer owns, so a live learner that calls one
  of them more often than `claim_idle_ms` never loses a group to another; a restarted one takes back
  only what it still owns, checked atomically.
- `ack` acknowledges and deletes the groups this consumer holds once their update is checkpointed:
  never delivered again. A group it lost to another consumer is not acknowledged (it is returned).
- A group about to be delivered for more than the `max_deliveries`-th time (its learners keep dying
  on it), or a record that does not parse, goes to the dead-letter stream with the reason, is
  counted (`dead_lettered`) and is never handed out.
- A record of another `schema` is refused: left on the stream for a learner of its own build with
  its delivery count unchanged, logged as an error and counted (`refused_schema`, once by each
  consumer that meets it), never deleted, and not taken again by this consumer in this life.
- A group more than `max_staleness` policy versions older than the learner's is acknowledged
  without being handed out, and counted (`dropped_stale`).
"""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis.asyncio as aioredis

from shared.rollout_wire import SCHEMA, GroupRecord, decode, encode

log = logging.getLogger(__name__)
Fields = dict[bytes, bytes]


@dataclass(frozen=True)
class Delivery:
    id: str
    group: GroupRecord
    deliveries: int = 1
    """How many times this group has been handed out, this time included."""


@dataclass
class BufferStats:
    length: int
    """Groups on the buffer, acknowledged ones excluded."""
    pending: int
    """Handed out and not yet acknowledged (refused records of another schema included)."""
    dropped_stale: int
    dead_lettered: int
    refused_schema: int


@dataclass(frozen=True)
class DeadLetter:
    id: str
    """The entry's id on the main stream."""
    reason: str
    deliveries: int
    payload: bytes
    """The record as it was on the stream."""


class Buffer(Protocol):
    async def put(self, group: GroupRecord) -> str: ...

    async def get(self, count: int, *, policy_version: int, block_ms: int = 0) -> list[Delivery]: ...

    async def keepalive(self) -> None: ...

    async def ack(self, ids: list[str]) -> list[str]: ...

    async def stats(self) -> BufferStats: ...

    async def dead_letters(self) -> list[DeadLetter]: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class PendingEntry:
    """An entry handed out and not acknowledged (what `XPENDING` lists)."""

    id: str
    consumer: str
    deliveries: int
    """Times delivered so far."""
    idle_ms: int


class StreamBuffer(abc.ABC):
    """The delivery rules, written once over a few stream primitives that each store implements.
    One call at a time per consumer (a lock), so a `keepalive` on a timer never races a `get`."""

    def __init__(self, consumer: str, max_staleness: int, claim_idle_ms: int, max_deliveries: int) -> None:
        if max_deliveries < 1:
            raise ValueError("max_deliveries must be at least 1")
        self.consumer = consumer
        self.max_staleness = max_staleness
        self.claim_idle_ms = claim_idle_ms
        self.max_deliveries = max_deliveries
        self._held: dict[str, None] = {}  # handed out in this life, not acknowledged (ordered)
        self._refused: set[str] = set()  # of another schema: left alone by this consumer in this life
        self._lock = asyncio.Lock()

    # -- primitives -----------------------------------------------------------------------------

    @abc.abstractmethod
    async def _append(self, group_id: str, fields: Fields) -> str:
        """Append, once per group id: a put retried after a lost reply returns the first entry's id."""

    @abc.abstractmethod
    async def pending(self) -> list[PendingEntry]:
        """Every unacknowledged entry of every consumer, oldest first."""

    @abc.abstractmethod
    async def _idle_others(self, count: int, skip: set[str]) -> list[PendingEntry]:
        """Up to `count` entries of other consumers unacknowledged for at least `claim_idle_ms`, oldest
        first, those in `skip` left out."""

    @abc.abstractmethod
    async def _claim(self, ids: list[str], min_idle_ms: int) -> dict[str, Fields | None]:
        """Take other consumers' entries still idle for `min_idle_ms` over to this consumer, counting a
        delivery; their fields (None for an entry deleted meanwhile)."""

    @abc.abstractmethod
    async def _claim_own(self, ids: list[str]) -> dict[str, Fields | None]:
        """Count a delivery of entries this consumer still owns (checked atomically, so one that another
        consumer has claimed meanwhile is left to it); their fields (None for a deleted entry)."""

    @abc.abstractmethod
    async def _touch(self, ids: list[str]) -> None:
        """Reset the idle time of the entries among `ids` that this consumer still owns; no delivery counted."""

    @abc.abstractmethod
    async def _set_deliveries(self, entry_id: str, deliveries: int) -> None:
        """Put an entry's delivery count back (a refused record was not delivered)."""

    @abc.abstractmethod
    async def _read_new(self, count: int, block_ms: int) -> list[tuple[str, Fields]]: ...

    @abc.abstractmethod
    async def _remove(self, ids: list[str]) -> None:
        """Acknowledge and delete."""

    @abc.abstractmethod
    async def _bury(self, entry_id: str, fields: Fields, reason: str, deliveries: int) -> None:
        """Move an entry to the dead-letter stream and count it."""

    @abc.abstractmethod
    async def _count(self, counter: str, n: int) -> None: ...

    # -- the rules ------------------------------------------------------------------------------

    async def put(self, group: GroupRecord) -> str:
        fields = encode(group)
        decode(fields)  # what a reader will parse
        return await self._append(group.group_id, fields)

    async def _refresh(self) -> list[PendingEntry]:
        """What this consumer owns; the idle time of all of it (held groups, and what a previous life
        left) reset, so that nobody claims it from a live consumer. Groups lost to another consumer
        (this one was silent for longer than `claim_idle_ms`) are dropped from what it holds."""
        owned = [e for e in await self.pending() if e.consumer == self.consumer]
        mine = {p.id for p in owned}
        for lost in [i for i in self._held if i not in mine]:
            log.error("group %s was claimed by another consumer while held here: its update must not be acked", lost)
            del self._held[lost]
        await self._touch([p.id for p in owned if p.id not in self._refused])
        return owned

    async def keepalive(self) -> None:
        """Refresh what this consumer holds: call it more often than `claim_idle_ms` during a long update."""
        async with self._lock:
            await self._refresh()

    async def get(self, count: int, *, policy_version: int, block_ms: int = 0) -> list[Delivery]:
        async with self._lock:
            owned = await self._refresh()
            entries: list[tuple[str, Fields | None, int]] = []
            # what this consumer's name held when it last died: everything it owns but holds or refused
            backlog = [p for p in owned if p.id not in self._held and p.id not in self._refused][:count]
            if backlog:
                claimed = await self._claim_own([p.id for p in backlog])
                entries += [(p.id, claimed[p.id], p.deliveries + 1) for p in backlog if p.id in claimed]
            if len(entries) < count:
                idle = await self._idle_others(count - len(entries), self._refused)
                claimed = await self._claim([p.id for p in idle], self.claim_idle_ms)
                entries += [(p.id, claimed[p.id], p.deliveries + 1) for p in idle if p.id in claimed]
            if len(entries) < count:
                entries += [(i, f, 1) for i, f in await self._read_new(count - len(entries), block_ms)]
            out = []
            for entry_id, fields, deliveries in entries:
                delivery = await self._judge(entry_id, fields, deliveries, policy_version)
                if delivery is not None:
                    self._held[entry_id] = None
                    out.append(delivery)
            return out

    async def _judge(
        self, entry_id: str, fields: Fields | None, deliveries: int, policy_version: int
    ) -> Delivery | None:
        """Deliver an entry, or refuse, bury or drop it."""
        if fields is None:  # deleted since it was delivered
            await self._remove([entry_id])
            return None
        schema = fields.get(b"schema", b"").decode(errors="replace")
        if schema and schema != str(SCHEMA):
            await self._set_deliveries(entry_id, deliveries - 1)  # not delivered: its own build gets it whole
            if entry_id not in self._refused:
                self._refused.add(entry_id)
                await self._count("refused_schema", 1)
                log.error(
                    "rollout record %s has schema %s; this learner reads schema %s: left on the stream for a "
                    "learner of its build",
                    entry_id,
                    schema,
                    SCHEMA,
                )
            return None
        if deliveries > self.max_deliveries:
            why = f"delivered {deliveries} times (max_deliveries {self.max_deliveries})"
            await self._bury(entry_id, fields, why, deliveries)
            return None
        try:
            group = decode(fields)
        except ValueError as e:
            await self._bury(entry_id, fields, f"malformed: {str(e).splitlines()[0][:200]}", deliveries)
            return None
        if policy_version - group.policy_version > self.max_staleness:
            await self._remove([entry_id])
            await self._count("stale", 1)
            return None
        return Delivery(entry_id, group, deliveries)

    async def ack(self, ids: list[str]) -> list[str]:
        """Acknowledge (and delete) groups this consumer holds; returns the ids it does not hold (lost to
        another consumer, or never handed out here), which are left alone."""
        async with self._lock:
            await self._refresh()  # forgets what another consumer has claimed meanwhile
            held = [i for i in ids if i in self._held]
            foreign = [i for i in ids if i not in self._held]
            if foreign:
                log.error("not acknowledging %d group(s) this consumer does not hold: %s", len(foreign), foreign[:5])
            if held:
                await self._remove(held)
                for entry_id in held:
                    del self._held[entry_id]
            return foreign


# Appends a group once: a put retried after a lost reply (or redis-py's own retry) returns the first id.
# KEYS: the stream, the group's marker; ARGV: the marker's lifetime (s), then field, value, ...
_APPEND_ONCE = """
local seen = redis.call('GET', KEYS[2])
if seen then return seen end
local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
redis.call('SET', KEYS[2], id, 'EX', ARGV[1])
return id
"""
# Claims (or, with ARGV[3] = '1', only touches) the entries among ARGV[4:] that ARGV[2] still owns.
# KEYS: the stream; ARGV: group, consumer, touch-only flag, ids. Returns id, fields, id, fields, ...
_CLAIM_OWN = """
local out = {}
for i = 4, #ARGV do
  local row = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)[1]
  if row and row[2] == ARGV[2] then
    if ARGV[3] == '1' then
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    else
      local entries = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i])
      table.insert(out, ARGV[i])
      table.insert(out, entries[1] and entries[1][2] or {})
    end
  end
end
return out
"""


class RedisBuffer(StreamBuffer):
    """Groups on a Redis stream (`{prefix}groups`), read through a consumer group; the dead-letter
    stream is `{prefix}dead`, the counters are the hash `{prefix}counters`, and `{prefix}put:<group id>`
    marks a group written (for a week)."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "sdar:rollout:",
        consumer: str = "learner-0",
        group: str = "learners",
        max_staleness: int = 0,
        claim_idle_ms: int = 60_000,
        max_deliveries: int = 3,
    ) -> None:
        super().__init__(consumer, max_staleness, claim_idle_ms, max_deliveries)
        self.redis: Any = aioredis.Redis.from_url(url)
        self.prefix = prefix
        self.stream = f"{prefix}groups"
        self.dead = f"{prefix}dead"
        self.counters = f"{prefix}counters"
        self.group = group
        self._append_once = self.redis.register_script(_APPEND_ONCE)
        self._claim_own_script = self.redis.register_script(_CLAIM_OWN)
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

    async def _append(self, group_id: str, fields: Fields) -> str:
        await self._ensure()
        flat = [x for pair in fields.items() for x in pair]
        marker = f"{self.prefix}put:{group_id}"
        return _text(await self._append_once(keys=[self.stream, marker], args=[7 * 86400, *flat]))

    async def pending(self) -> list[PendingEntry]:
        await self._ensure()
        out, start = [], "-"
        while True:
            rows = await self.redis.xpending_range(self.stream, self.group, start, "+", 1000)
            out += [_pending_entry(r) for r in rows]
            if len(rows) < 1000:
                return out
            start = f"({_text(rows[-1]['message_id'])}"

    async def _idle_others(self, count: int, skip: set[str]) -> list[PendingEntry]:
        await self._ensure()
        out: list[PendingEntry] = []
        start = "-"
        while len(out) < count:
            rows = await self.redis.xpending_range(self.stream, self.group, start, "+", 256, idle=self.claim_idle_ms)
            for row in map(_pending_entry, rows):
                if row.consumer != self.consumer and row.id not in skip:
                    out.append(row)
            if len(rows) < 256:
                break
            start = f"({_text(rows[-1]['message_id'])}"
        return out[:count]

    async def _claim(self, ids: list[str], min_idle_ms: int) -> dict[str, Fields | None]:
        if not ids:
            return {}
        claimed = await self.redis.xclaim(self.stream, self.group, self.consumer, min_idle_ms, ids)
        return {_text(i): (f or None) for i, f in claimed}

    async def _claim_own(self, ids: list[str]) -> dict[str, Fields | None]:
        if not ids:
            return {}
        flat = await self._claim_own_script(keys=[self.stream], args=[self.group, self.consumer, "0", *ids])
        out: dict[str, Fields | None] = {}
        for entry_id, values in zip(flat[::2], flat[1::2], strict=True):
            out[_text(entry_id)] = dict(zip(values[::2], values[1::2], strict=True)) or None
        return out

    async def _touch(self, ids: list[str]) -> None:
        if ids:
            await self._claim_own_script(keys=[self.stream], args=[self.group, self.consumer, "1", *ids])

    async def _set_deliveries(self, entry_id: str, deliveries: int) -> None:
        await self.redis.xclaim(
            self.stream, self.group, self.consumer, 0, [entry_id], retrycount=deliveries, justid=True
        )

    async def _read_new(self, count: int, block_ms: int) -> list[tuple[str, Fields]]:
        await self._ensure()
        block = block_ms if block_ms > 0 else None
        reply = await self.redis.xreadgroup(self.group, self.consumer, {self.stream: ">"}, count=count, block=block)
        return [(_text(i), f) for i, f in (reply[0][1] if reply else [])]

    async def _remove(self, ids: list[str]) -> None:
        await self._ensure()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xack(self.stream, self.group, *ids)
            pipe.xdel(self.stream, *ids)
            await pipe.execute()

    async def _bury(self, entry_id: str, fields: Fields, reason: str, deliveries: int) -> None:
        log.error("rollout record %s goes to the dead-letter stream %s: %s", entry_id, self.dead, reason)
        letter = {b"id": entry_id.encode(), b"reason": reason.encode(), b"deliveries": str(deliveries).encode()}
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xadd(self.dead, {**letter, b"g": fields.get(b"g", b"")})
            pipe.xack(self.stream, self.group, entry_id)
            pipe.xdel(self.stream, entry_id)
            pipe.hincrby(self.counters, "dead_letter", 1)
            await pipe.execute()

    async def _count(self, counter: str, n: int) -> None:
        await self.redis.hincrby(self.counters, counter, n)

    async def stats(self) -> BufferStats:
        await self._ensure()
        counters = await self.redis.hgetall(self.counters)
        pending = await self.redis.xpending(self.stream, self.group)
        return BufferStats(
            length=await self.redis.xlen(self.stream),
            pending=int(pending["pending"]),
            dropped_stale=int(counters.get(b"stale", 0)),
            dead_lettered=int(counters.get(b"dead_letter", 0)),
            refused_schema=int(counters.get(b"refused_schema", 0)),
        )

    async def dead_letters(self) -> list[DeadLetter]:
        rows = await self.redis.xrange(self.dead)
        return [DeadLetter(f[b"id"].decode(), f[b"reason"].decode(), int(f[b"deliveries"]), f[b"g"]) for _, f in rows]

    async def close(self) -> None:
        await self.redis.aclose()


def _pending_entry(row: dict[str, Any]) -> PendingEntry:
    return PendingEntry(
        _text(row["message_id"]), _text(row["consumer"]), int(row["times_delivered"]), int(row["time_since_delivered"])
    )


@dataclass
class _Entry:
    fields: Fields
    owner: str | None = None
    delivered_at: float = 0.0
    deliveries: int = 0


@dataclass
class MemoryStream:
    """What a Redis stream with one consumer group holds, in this process: several `MemoryBuffer`s
    over one `MemoryStream` are several consumers, and a new one under a name is that consumer
    restarted."""

    entries: dict[str, _Entry] = field(default_factory=dict)
    unread: deque[str] = field(default_factory=deque)
    dead: list[DeadLetter] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)
    written: dict[str, str] = field(default_factory=dict)
    """Group id -> entry id: what was put."""
    last: int = 0

    def append(self, fields: Fields) -> str:
        self.last += 1
        entry_id = f"{self.last}-0"
        self.entries[entry_id] = _Entry(dict(fields))
        self.unread.append(entry_id)
        return entry_id


class MemoryBuffer(StreamBuffer):
    """The same buffer in this process (tests, single-process runs)."""

    def __init__(
        self,
        stream: MemoryStream | None = None,
        *,
        consumer: str = "learner-0",
        max_staleness: int = 0,
        claim_idle_ms: int = 60_000,
        max_deliveries: int = 3,
    ) -> None:
        super().__init__(consumer, max_staleness, claim_idle_ms, max_deliveries)
        self.stream = stream or MemoryStream()

    @staticmethod
    def _now_ms() -> float:
        return time.monotonic() * 1000

    async def _append(self, group_id: str, fields: Fields) -> str:
        if group_id not in self.stream.written:
            self.stream.written[group_id] = self.stream.append(fields)
        return self.stream.written[group_id]

    async def pending(self) -> list[PendingEntry]:
        now = self._now_ms()
        return [
            PendingEntry(i, e.owner, e.deliveries, int(now - e.delivered_at))
            for i, e in self.stream.entries.items()
            if e.owner is not None
        ]

    async def _idle_others(self, count: int, skip: set[str]) -> list[PendingEntry]:
        idle = [
            e
            for e in await self.pending()
            if e.consumer != self.consumer and e.idle_ms >= self.claim_idle_ms and e.id not in skip
        ]
        return idle[:count]

    def _take(self, ids: list[str], allowed: Callable[[_Entry], bool]) -> dict[str, Fields | None]:
        """Take the entries among `ids` that `allowed` lets through over to this consumer, counting a delivery."""
        now, out = self._now_ms(), dict[str, Fields | None]()
        for entry_id in ids:
            entry = self.stream.entries.get(entry_id)
            if entry is not None and allowed(entry):
                entry.owner, entry.delivered_at, entry.deliveries = self.consumer, now, entry.deliveries + 1
                out[entry_id] = entry.fields
        return out

    async def _claim(self, ids: list[str], min_idle_ms: int) -> dict[str, Fields | None]:
        now = self._now_ms()
        return self._take(ids, lambda e: e.owner is not None and now - e.delivered_at >= min_idle_ms)

    async def _claim_own(self, ids: list[str]) -> dict[str, Fields | None]:
        return self._take(ids, lambda e: e.owner == self.consumer)

    async def _touch(self, ids: list[str]) -> None:
        now = self._now_ms()
        for entry_id in ids:
            entry = self.stream.entries.get(entry_id)
            if entry is not None and entry.owner == self.consumer:
                entry.delivered_at = now

    async def _set_deliveries(self, entry_id: str, deliveries: int) -> None:
        entry = self.stream.entries.get(entry_id)
        if entry is not None:
            entry.deliveries = deliveries

    async def _read_new(self, count: int, block_ms: int) -> list[tuple[str, Fields]]:
        deadline = self._now_ms() + block_ms
        while not self.stream.unread and self._now_ms() < deadline:
            await asyncio.sleep(0.01)
        out: list[tuple[str, Fields]] = []
        while self.stream.unread and len(out) < count:
            entry_id = self.stream.unread.popleft()
            entry = self.stream.entries.get(entry_id)
            if entry is not None:
                entry.owner, entry.delivered_at, entry.deliveries = self.consumer, self._now_ms(), 1
                out.append((entry_id, entry.fields))
        return out

    async def _remove(self, ids: list[str]) -> None:
        for entry_id in ids:
            self.stream.entries.pop(entry_id, None)

    async def _bury(self, entry_id: str, fields: Fields, reason: str, deliveries: int) -> None:
        log.error("rollout record %s goes to the dead-letter list: %s", entry_id, reason)
        self.stream.dead.append(DeadLetter(entry_id, reason, deliveries, fields.get(b"g", b"")))
        self.stream.entries.pop(entry_id, None)
        await self._count("dead_letter", 1)

    async def _count(self, counter: str, n: int) -> None:
        self.stream.counters[counter] = self.stream.counters.get(counter, 0) + n

    async def stats(self) -> BufferStats:
        counters = self.stream.counters
        return BufferStats(
            length=len(self.stream.entries),
            pending=len(await self.pending()),
            dropped_stale=counters.get("stale", 0),
            dead_lettered=counters.get("dead_letter", 0),
            refused_schema=counters.get("refused_schema", 0),
        )

    async def dead_letters(self) -> list[DeadLetter]:
        return list(self.stream.dead)

    async def close(self) -> None:
        return None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
