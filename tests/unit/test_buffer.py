"""The rollout buffer's delivery rules, one suite run against both implementations (a real Redis
stream and the in-memory twin): in order, exactly once to a live consumer, again to a restarted
one or to another after the holder died, dead-lettered after too many deliveries or when
malformed, refused (and kept) when of another schema, stale groups dropped and counted."""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis

from shared.rollout_wire import SCHEMA, GroupRecord, SamplingSettings, StepSample, Trajectory
from trainer.buffer import Buffer, Fields, MemoryBuffer, MemoryStream, RedisBuffer


def group(policy_version: int = 0, task: int = 0) -> GroupRecord:
    step = StepSample(
        step=0,
        policy_version=policy_version,
        prompt_token_ids=[1, 2, 3],
        response_token_ids=[7, 8],
        sampler_logprobs=[-0.5, -1.25],
        action="inc",
        valid=True,
        env_reward=1.0,
        won=True,
        done=True,
        finish_reason="stop",
    )
    episodes = [Trajectory(episode_id=f"e{i}", steps=[step], end="done", won=True, env_reward=1.0) for i in range(2)]
    return GroupRecord(
        group_id=f"g{task}-v{policy_version}",
        env="counter",
        task_id=f"counter/test/{task}",
        task="count to 1",
        policy_version=policy_version,
        sampling=SamplingSettings(temperature=1.0, top_p=1.0, max_new_tokens=8),
        logprobs_mode="processed_logprobs",
        backend="hf",
        episodes=episodes,
        usable=2,
        created_at=time.time(),
    )


@dataclass
class Store:
    """One stream, and the buffers (consumers) opened on it."""

    opener: Callable[..., Buffer]
    inject: Callable[[Fields], object]
    opened: list[Buffer] = field(default_factory=list)

    def open(self, consumer: str = "learner-0", **settings: Any) -> Buffer:
        buffer = self.opener(consumer=consumer, **settings)
        self.opened.append(buffer)
        return buffer


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def store(request: pytest.FixtureRequest, redis_base_url: str, redis_prefix: str) -> AsyncIterator[Store]:
    if request.param == "memory":
        stream = MemoryStream()
        made = Store(lambda **kw: MemoryBuffer(stream, **kw), stream.append)
    else:
        client = redis.Redis.from_url(redis_base_url)
        made = Store(
            lambda **kw: RedisBuffer(redis_base_url, prefix=redis_prefix, **kw),
            lambda fields: client.xadd(f"{redis_prefix}groups", fields),  # type: ignore[arg-type]
        )
    yield made
    for buffer in made.opened:
        await buffer.close()


async def test_groups_in_and_out_in_order_then_acknowledged(store: Store) -> None:
    buffer = store.open()
    sent = [group(task=i) for i in range(5)]
    ids = [await buffer.put(g) for g in sent]
    first = await buffer.get(3, policy_version=0)
    assert [d.group for d in first] == sent[:3] and [d.id for d in first] == ids[:3]
    assert [d.deliveries for d in first] == [1, 1, 1]
    rest = await buffer.get(10, policy_version=0)
    assert [d.group for d in rest] == sent[3:]
    stats = await buffer.stats()
    assert (stats.length, stats.pending) == (5, 5)
    await buffer.ack([d.id for d in first + rest])
    assert await buffer.get(10, policy_version=0) == []
    assert ((await buffer.stats()).length, (await buffer.stats()).pending) == (0, 0)


async def test_stale_groups_are_dropped_and_counted(store: Store) -> None:
    buffer = store.open()
    for version in (0, 1, 2, 3):
        await buffer.put(group(policy_version=version, task=version))
    delivered = await buffer.get(10, policy_version=3)  # max_staleness 0: only version 3 is on-policy
    assert [d.group.policy_version for d in delivered] == [3]
    stats = await buffer.stats()
    assert (stats.dropped_stale, stats.length) == (3, 1)


async def test_a_live_consumer_is_never_handed_what_it_holds(store: Store) -> None:
    buffer = store.open(claim_idle_ms=20)
    for i in range(4):
        await buffer.put(group(task=i))
    held = await buffer.get(2, policy_version=0)
    seen = [d.id for d in held]
    for _ in range(3):  # each time past claim_idle_ms: what it holds is idle, and still not handed back
        await asyncio.sleep(0.05)
        seen += [d.id for d in await buffer.get(1, policy_version=0)]
    assert len(seen) == len(set(seen)) == 4
    await asyncio.sleep(0.05)
    assert await buffer.get(10, policy_version=0) == []
    assert (await buffer.stats()).pending == 4


async def test_a_live_consumer_keeps_what_it_holds_from_another(store: Store) -> None:
    holder = store.open("learner-a", claim_idle_ms=300)
    other = store.open("learner-b", claim_idle_ms=300)
    await holder.put(group(task=1))
    [held] = await holder.get(1, policy_version=0)
    for _ in range(4):  # 400 ms holding it, longer than claim_idle_ms, refreshing as a live learner does
        await asyncio.sleep(0.1)
        await holder.keepalive()
    assert await other.get(10, policy_version=0) == []
    await asyncio.sleep(0.4)  # now the holder is silent, as a dead one is
    [claimed] = await other.get(10, policy_version=0)
    assert (claimed.id, claimed.group, claimed.deliveries) == (held.id, held.group, 2)


async def test_a_consumer_killed_before_acknowledging_gets_its_groups_again(store: Store) -> None:
    first = store.open("learner-a")
    for i in range(4):
        await first.put(group(task=i))
    got = await first.get(3, policy_version=0)
    await first.ack([got[0].id])  # its update was checkpointed; the other two were not
    await first.close()  # the learner dies

    restarted = store.open("learner-a")
    again = await restarted.get(10, policy_version=0)
    assert [d.group.task_id for d in again] == [g.group.task_id for g in got[1:]] + ["counter/test/3"]
    assert [d.deliveries for d in again] == [2, 2, 1]
    await restarted.ack([d.id for d in again])
    assert await restarted.get(10, policy_version=0) == []
    once_more = store.open("learner-a")
    assert await once_more.get(10, policy_version=0) == []  # acknowledged groups never come back


async def test_a_restarted_consumer_recovers_more_than_one_get_holds(store: Store) -> None:
    first = store.open("learner-a")
    for i in range(5):
        await first.put(group(task=i))
    assert len(await first.get(5, policy_version=0)) == 5
    restarted = store.open("learner-a")
    tasks = [d.group.task_id for _ in range(3) for d in await restarted.get(2, policy_version=0)]
    assert tasks == [f"counter/test/{i}" for i in range(5)]


async def test_another_consumer_claims_a_dead_consumers_groups(store: Store) -> None:
    dead = store.open("learner-a")
    await dead.put(group())
    [held] = await dead.get(1, policy_version=0)
    other = store.open("learner-b", claim_idle_ms=0)
    [claimed] = await other.get(1, policy_version=0)
    assert claimed.id == held.id and claimed.group == held.group
    await other.ack([claimed.id])
    assert (await other.stats()).length == 0


async def test_a_group_delivered_too_often_goes_to_the_dead_letters(store: Store) -> None:
    await store.open("learner-a").put(group(task=7))
    for life in (1, 2):  # a learner that dies on this group, twice
        [delivery] = await store.open("learner-a", max_deliveries=2).get(1, policy_version=0)
        assert delivery.deliveries == life
    third = store.open("learner-a", max_deliveries=2)
    assert await third.get(10, policy_version=0) == []
    stats = await third.stats()
    assert (stats.dead_lettered, stats.length, stats.pending) == (1, 0, 0)
    [letter] = await third.dead_letters()
    assert letter.reason == "delivered 3 times (max_deliveries 2)" and letter.deliveries == 3
    assert GroupRecord.model_validate_json(zlib.decompress(letter.payload)).task_id == "counter/test/7"
    assert await store.open("learner-a").get(10, policy_version=0) == []


async def test_a_malformed_record_goes_to_the_dead_letters_not_fatal(store: Store) -> None:
    buffer = store.open()
    await buffer.put(group(task=1))
    store.inject({b"g": b"not zlib", b"v": b"0", b"schema": str(SCHEMA).encode()})
    await buffer.put(group(task=2))
    delivered = await buffer.get(10, policy_version=0)
    assert [d.group.task_id for d in delivered] == ["counter/test/1", "counter/test/2"]
    stats = await buffer.stats()
    assert (stats.dead_lettered, stats.length) == (1, 2)
    [letter] = await buffer.dead_letters()
    assert letter.reason.startswith("malformed") and letter.payload == b"not zlib"


async def test_a_record_of_another_schema_is_refused_and_left_on_the_stream(store: Store) -> None:
    buffer = store.open("learner-a", claim_idle_ms=0)
    newer = {b"g": zlib.compress(b'{"schema": 3, "what": "a later build"}'), b"v": b"0", b"schema": b"3"}
    store.inject(newer)
    await buffer.put(group(task=1))
    assert [d.group.task_id for d in await buffer.get(10, policy_version=0)] == ["counter/test/1"]
    for _ in range(3):
        assert await buffer.get(10, policy_version=0) == []
    stats = await buffer.stats()
    assert (stats.refused_schema, stats.dead_lettered, stats.length) == (1, 0, 2)  # counted once, never deleted
    assert await buffer.dead_letters() == []


async def test_a_bad_group_is_refused_on_the_way_in(store: Store) -> None:
    bad = group()
    bad.episodes[0].steps[0].sampler_logprobs.append(0.0)  # one log-prob too many
    buffer = store.open()
    with pytest.raises(ValueError, match="one sampler log-prob per response token"):
        await buffer.put(bad)
    assert (await buffer.stats()).length == 0


async def test_a_restarted_consumer_never_takes_back_what_a_live_one_claimed(store: Store) -> None:
    dead = store.open("learner-a")
    for i in range(4):
        await dead.put(group(task=i))
    assert len(await dead.get(4, policy_version=0)) == 4  # then it dies holding all four
    await asyncio.sleep(0.3)  # long enough for any other consumer to claim them
    restarted = store.open("learner-a", claim_idle_ms=200)
    [first] = await restarted.get(1, policy_version=0)  # recovering one at a time; the rest stays its own
    other = store.open("learner-b", claim_idle_ms=200)
    assert await other.get(10, policy_version=0) == []  # refreshed by the restarted owner: not idle, not claimable
    rest = [d.id for _ in range(3) for d in await restarted.get(1, policy_version=0)]
    assert len({first.id, *rest}) == 4 and (await other.stats()).pending == 4


async def test_a_group_one_consumer_lost_is_not_acknowledged_by_it(store: Store) -> None:
    slow = store.open("learner-a", claim_idle_ms=0)
    await slow.put(group(task=1))
    [held] = await slow.get(1, policy_version=0)
    other = store.open("learner-b", claim_idle_ms=0)
    [claimed] = await other.get(1, policy_version=0)  # learner-a was silent too long: learner-b has it now
    assert claimed.id == held.id and claimed.deliveries == 2
    assert await slow.ack([held.id]) == [held.id]  # refused: not deleted under its new holder
    assert (await other.stats()).pending == 1
    assert await other.ack([claimed.id]) == []
    assert (await other.stats()).length == 0


async def test_a_group_put_twice_is_on_the_stream_once(store: Store) -> None:
    buffer = store.open()
    sent = group(task=3)
    first = await buffer.put(sent)
    assert await buffer.put(sent) == first  # a put retried after its reply was lost
    assert [d.id for d in await buffer.get(10, policy_version=0)] == [first]
    assert (await buffer.stats()).length == 1


async def test_refusing_a_record_of_another_schema_counts_no_delivery(store: Store) -> None:
    store.inject({b"g": zlib.compress(b"{}"), b"v": b"0", b"schema": b"3"})
    a, b = store.open("learner-a", claim_idle_ms=0), store.open("learner-b", claim_idle_ms=0)
    for _ in range(3):
        assert await a.get(10, policy_version=0) == [] and await b.get(10, policy_version=0) == []
    [entry] = await a.pending()
    assert entry.deliveries == 0  # handed to learners of the wrong build only: its own build gets it fresh
    stats = await a.stats()
    assert (stats.refused_schema, stats.dead_lettered, stats.length) == (2, 0, 1)  # once by each consumer that met it
