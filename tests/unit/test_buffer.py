"""The rollout buffer on a real Redis stream (and its in-memory twin): groups in and out, delivered
again to a consumer that died before acknowledging, never after, stale groups dropped and counted."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import redis

from shared.rollout_wire import EpisodeRecord, GroupRecord, StepSample
from trainer.buffer import Buffer, MemoryBuffer, RedisBuffer


def group(policy_version: int = 0, task: int = 0) -> GroupRecord:
    step = StepSample(
        step=0,
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
    episodes = [
        EpisodeRecord(episode_id=f"e{i}", steps=[step], won=True, env_reward=1.0, truncated=False) for i in range(2)
    ]
    return GroupRecord(
        group_id=f"g{task}-v{policy_version}",
        env="counter",
        task_id=f"counter/test/{task}",
        policy_version=policy_version,
        episodes=episodes,
        created_at=time.time(),
    )


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def buffer(request: pytest.FixtureRequest, redis_base_url: str, redis_prefix: str) -> AsyncIterator[Buffer]:
    made: Buffer = MemoryBuffer() if request.param == "memory" else RedisBuffer(redis_base_url, prefix=redis_prefix)
    yield made
    await made.close()


async def test_groups_in_and_out_in_order_then_acknowledged(buffer: Buffer) -> None:
    sent = [group(task=i) for i in range(5)]
    ids = [await buffer.put(g) for g in sent]
    first = await buffer.get(3, policy_version=0)
    assert [d.group for d in first] == sent[:3] and [d.id for d in first] == ids[:3]
    rest = await buffer.get(10, policy_version=0)
    assert [d.group for d in rest] == sent[3:]
    stats = await buffer.stats()
    assert (stats.length, stats.pending) == (5, 5)
    await buffer.ack([d.id for d in first + rest])
    assert await buffer.get(10, policy_version=0) == []
    assert (await buffer.stats()).length == 0


async def test_stale_groups_are_dropped_and_counted(buffer: Buffer) -> None:
    for version in (0, 1, 2, 3):
        await buffer.put(group(policy_version=version, task=version))
    delivered = await buffer.get(10, policy_version=3)  # max_staleness 0: only version 3 is on-policy
    assert [d.group.policy_version for d in delivered] == [3]
    assert (await buffer.stats()).dropped_stale == 3


@pytest.mark.redis
async def test_a_consumer_killed_before_acknowledging_gets_its_groups_again(
    redis_base_url: str, redis_prefix: str
) -> None:
    first = RedisBuffer(redis_base_url, prefix=redis_prefix, consumer="learner-a")
    for i in range(4):
        await first.put(group(task=i))
    got = await first.get(3, policy_version=0)
    await first.ack([got[0].id])  # its update was checkpointed; the other two were not
    await first.close()  # the learner dies

    restarted = RedisBuffer(redis_base_url, prefix=redis_prefix, consumer="learner-a")
    again = await restarted.get(10, policy_version=0)
    assert [d.group.task_id for d in again] == [g.group.task_id for g in got[1:]] + ["counter/test/3"]
    await restarted.ack([d.id for d in again])
    assert await restarted.get(10, policy_version=0) == []
    await restarted.close()
    once_more = RedisBuffer(redis_base_url, prefix=redis_prefix, consumer="learner-a")
    assert await once_more.get(10, policy_version=0) == []  # acknowledged groups never come back
    await once_more.close()


@pytest.mark.redis
async def test_another_consumer_claims_a_dead_consumers_groups(redis_base_url: str, redis_prefix: str) -> None:
    dead = RedisBuffer(redis_base_url, prefix=redis_prefix, consumer="learner-a")
    await dead.put(group())
    [held] = await dead.get(1, policy_version=0)
    await dead.close()
    other = RedisBuffer(redis_base_url, prefix=redis_prefix, consumer="learner-b", claim_idle_ms=0)
    [claimed] = await other.get(1, policy_version=0)
    assert claimed.id == held.id and claimed.group == held.group
    await other.ack([claimed.id])
    await other.close()


@pytest.mark.redis
async def test_a_malformed_record_is_dropped_and_counted_not_fatal(redis_base_url: str, redis_prefix: str) -> None:
    buffer = RedisBuffer(redis_base_url, prefix=redis_prefix)
    await buffer.put(group(task=1))
    client = redis.Redis.from_url(redis_base_url)
    client.xadd(f"{redis_prefix}groups", {"g": b"not zlib", "v": 0})
    client.close()
    await buffer.put(group(task=2))
    delivered = await buffer.get(10, policy_version=0)
    assert [d.group.task_id for d in delivered] == ["counter/test/1", "counter/test/2"]
    assert (await buffer.stats()).dropped_malformed == 1
    await buffer.close()


async def test_the_memory_buffer_validates_on_the_way_in() -> None:
    bad = group()
    bad.episodes[0].steps[0].sampler_logprobs.append(0.0)  # one log-prob too many
    with pytest.raises(ValueError, match="one sampler log-prob per response token"):
        await MemoryBuffer().put(bad)
