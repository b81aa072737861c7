"""Rollout ahead of the learner by at most `max_staleness` policy versions (asynchronous training).

Round `k` is the rollout of training step `k`'s tasks. It may start once the learner has finished
`k - max_staleness` steps. With 0, a round starts only after the step before it has been learned:
synchronous, on-policy training, as the reference. With 1, round `k + 1` is played by policy `k`
while the learner trains step `k` on round `k`, so rollout and learning overlap and every sample is
at most one version old when it is trained (prime-rl's `max_off_policy_steps`, TRL's `max_staleness`,
`learners.md` §4). The rounds run one after another in one background task, so the buffer receives
them in order and a learner that takes the oldest groups takes its own round's.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable


class Ahead:
    """Plays rounds `first .. end - 1` with `produce(round)` in the background, each only once the
    learner has finished enough steps (`learned`); `ready(round)` waits for one, and raises what
    stopped the producer if it stopped first."""

    def __init__(
        self,
        produce: Callable[[int], Awaitable[None]],
        *,
        first: int,
        end: int,
        learned: int,
        max_staleness: int,
    ) -> None:
        if max_staleness < 0:
            raise ValueError(f"max_staleness must be at least 0, not {max_staleness}")
        self.produce = produce
        self.first, self.end = first, end
        self.max_staleness = max_staleness
        self._learned = learned
        self._done = first - 1  # every round before `first` is on the buffer already
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="rollout-ahead")

    async def _run(self) -> None:
        try:
            for k in range(self.first, self.end):
                async with self._changed:
                    await self._changed.wait_for(functools.partial(self._allowed, k))
                await self.produce(k)
                async with self._changed:
                    self._done = k
                    self._changed.notify_all()
        finally:  # wakes a `ready` waiting on a round that will not come
            async with self._changed:
                self._changed.notify_all()

    def _allowed(self, round_: int) -> bool:
        return round_ <= self._learned + self.max_staleness

    async def learned(self, steps: int) -> None:
        """The learner has finished `steps` steps (and published that policy): later rounds may start."""
        async with self._changed:
            self._learned = steps
            self._changed.notify_all()

    async def ready(self, round_: int) -> None:
        """Until round `round_` and every one before it are on the buffer."""
        if self._task is None:
            raise RuntimeError("start the producer first")
        task = self._task
        async with self._changed:
            await self._changed.wait_for(lambda: self._done >= round_ or task.done())
        if self._done < round_:
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error
            raise RuntimeError(f"the rollout stopped before round {round_}")

    async def aclose(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
