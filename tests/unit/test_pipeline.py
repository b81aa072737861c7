"""Rollout ahead of the learner: a round starts only within `max_staleness` of the learner's steps,
rounds land in order, and a producer's error reaches the learner waiting on it."""

from __future__ import annotations

import asyncio

import pytest

from trainer.pipeline import Ahead


class Rounds:
    """A producer that records which rounds started while the learner had finished how many steps."""

    def __init__(self) -> None:
        self.started: list[tuple[int, int]] = []
        self.learned = 0
        self.fail_at: int | None = None

    async def __call__(self, k: int) -> None:
        self.started.append((k, self.learned))
        await asyncio.sleep(0.01)
        if k == self.fail_at:
            raise RuntimeError(f"round {k} broke")


async def drive(max_staleness: int, steps: int = 4, first: int = 0) -> Rounds:
    rounds = Rounds()
    ahead = Ahead(rounds, first=first, end=steps, learned=first, max_staleness=max_staleness)
    ahead.start()
    rounds.learned = first
    try:
        for step in range(first, steps):
            await ahead.ready(step)
            await asyncio.sleep(0.05)  # the learner's step, while the producer may run ahead
            rounds.learned = step + 1
            await ahead.learned(step + 1)
    finally:
        await ahead.aclose()
    return rounds


async def test_synchronous_rounds_start_only_after_the_step_before_is_learned() -> None:
    rounds = await drive(0)
    assert rounds.started == [(0, 0), (1, 1), (2, 2), (3, 3)]


async def test_with_staleness_one_the_next_round_is_played_while_the_learner_trains() -> None:
    rounds = await drive(1)
    assert rounds.started == [(0, 0), (1, 0), (2, 1), (3, 2)]  # round k + 1 by policy k
    assert all(k - learned <= 1 for k, learned in rounds.started)
    two = await drive(2, steps=5)
    assert [k for k, _ in two.started] == [0, 1, 2, 3, 4] and all(k - n <= 2 for k, n in two.started)
    assert (2, 0) in two.started


async def test_a_resumed_run_starts_after_the_rounds_already_made() -> None:
    rounds = Rounds()
    ahead = Ahead(rounds, first=3, end=5, learned=2, max_staleness=1)
    ahead.start()
    await ahead.ready(2)  # made by the killed run: ready at once
    await ahead.ready(3)
    assert rounds.started == [(3, 0)]
    await ahead.aclose()


async def test_a_producers_error_reaches_the_learner() -> None:
    rounds = Rounds()
    rounds.fail_at = 1
    ahead = Ahead(rounds, first=0, end=4, learned=0, max_staleness=1)
    ahead.start()
    await ahead.ready(0)
    with pytest.raises(RuntimeError, match="round 1 broke"):
        await ahead.ready(1)
    with pytest.raises(RuntimeError, match="round 1 broke"):
        await ahead.ready(2)
    await ahead.aclose()
    with pytest.raises(ValueError, match="max_staleness"):
        Ahead(rounds, first=0, end=1, learned=0, max_staleness=-1)
    with pytest.raises(RuntimeError, match="start"):
        await Ahead(rounds, first=0, end=1, learned=0, max_staleness=0).ready(0)
