"""What an environment provides to the service: a task panel and simulators that speak text.

An `Environment` lists tasks and opens a `Simulator` on one. A simulator is blocking, single-threaded
game logic; the service runs it in worker threads, caches it, and rebuilds it by replaying actions
from reset when a replica has none. So a simulator must be deterministic: the same task and the same
actions give the same observations, in any process.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Task:
    task_id: str
    split: str
    index: int
    task_type: str | None = None
    data_source: str | None = None
    category: str | None = None


@dataclass
class Opening:
    """The state right after reset."""

    task: str
    """The goal text."""
    observation: str
    admissible_actions: list[str] | None
    info: dict[str, Any] = field(default_factory=dict)
    audit: dict[str, Any] = field(default_factory=dict)
    """Fields for the episode record only (the expert's plan, the goal's answer)."""


@dataclass
class Transition:
    """What one action did. `done` means the game itself ended (won or lost), not the step limit."""

    observation: str
    reward: float
    done: bool
    won: bool
    admissible_actions: list[str] | None
    info: dict[str, Any] = field(default_factory=dict)
    audit: dict[str, Any] = field(default_factory=dict)
    """Fields for the episode record only (a purchase and its reward terms), never sent in results."""


class Simulator(ABC):
    """A live game of one episode."""

    @abstractmethod
    def reset(self) -> Opening: ...

    @abstractmethod
    def step(self, action: str) -> Transition: ...

    def close(self) -> None:
        """Give back what the simulator holds; it is not used afterwards. Must be quick: the
        service calls it on the event loop."""


class EnvBusy(RuntimeError):
    """The environment has no capacity for another simulator right now; retry later."""


class EnvUpstreamError(RuntimeError):
    """A service the environment depends on (a remote retriever) refused or garbled a request."""


class UnknownTask(LookupError):
    """No such task in this environment."""


class UnknownResource(LookupError):
    """No such env-specific resource."""


class Environment(ABC):
    """One environment: its panel of tasks and a factory of simulators."""

    name: str
    backend: str
    version: str
    max_steps: int

    def settings(self) -> dict[str, Any]:
        """Env-specific settings shown in `GET /v1/envs` (e.g. the text dialect)."""
        return {}

    @abstractmethod
    def splits(self) -> dict[str, int]:
        """Split name -> number of tasks."""

    @abstractmethod
    def task(self, split: str, index: int) -> Task:
        """The task at `(split, index)`; raises `UnknownTask`."""

    def task_by_id(self, task_id: str) -> Task:
        """Resolve `<env>/<split>/<index>`; raises `UnknownTask`."""
        env, _, rest = task_id.partition("/")
        split, _, index = rest.rpartition("/")
        if env != self.name or not split or not index.isdigit():
            raise UnknownTask(f"no task {task_id!r} in env {self.name!r} (expected '{self.name}/<split>/<index>')")
        return self.task(split, int(index))

    def tasks(self, split: str, offset: int, limit: int) -> list[Task]:
        size = self.splits().get(split)
        if size is None:
            raise UnknownTask(f"no split {split!r} in env {self.name!r}; splits: {sorted(self.splits())}")
        return [self.task(split, i) for i in range(offset, min(size, offset + limit))]

    def check_index(self, split: str, index: int) -> None:
        size = self.splits().get(split)
        if size is None:
            raise UnknownTask(f"no split {split!r} in env {self.name!r}; splits: {sorted(self.splits())}")
        if not 0 <= index < size:
            raise UnknownTask(f"index {index} out of range for {self.name}/{split} (0..{size - 1})")

    @abstractmethod
    def open(self, task: Task) -> Simulator:
        """A new simulator on `task`, not yet reset. Blocking."""

    def lookup(self, collection: str, key: str) -> dict[str, Any]:
        """An env-specific resource, served at `GET /v1/envs/{env}/{collection}/{key}` (WebShop's
        products); raises `UnknownResource`."""
        raise UnknownResource(f"env {self.name!r} has no collection {collection!r}")

    def close(self) -> None:
        """Free what the environment holds (simulator pools, files)."""
