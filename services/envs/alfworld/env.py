"""ALFWorld as an `Environment`: the native engine (the default) or the real one, over generated or
official game files."""

from __future__ import annotations

import functools
import json
import os
from importlib.metadata import version
from pathlib import Path
from typing import Any

from services.envs.alfworld.engine import Engine, NativePool, Pool, TextWorldPool
from services.envs.alfworld.games import Dialect, GameSource, GeneratedGames, OfficialGames
from services.envs.alfworld.generator import GENERATOR_VERSION
from services.envs.alfworld.native import NATIVE_VERSION
from services.envs.base import Environment, Opening, Simulator, Task, Transition, UnknownTask
from shared.settings import EnvServiceSettings

TASK_PREFIX = "Your task is to: "


def goal_of(intro: str) -> str:
    """The goal text of the intro: what follows `Your task is to: `, without the final period."""
    return intro.rpartition(TASK_PREFIX)[2].strip().removesuffix(".")


def official_download() -> Path | None:
    """`$ALFWORLD_DATA` if it holds a download. (Importing `alfworld` sets the variable to an empty
    default folder, so being set is not enough.)"""
    folder = os.environ.get("ALFWORLD_DATA")
    if folder and (Path(folder) / "json_2.1.1").is_dir():
        return Path(folder)
    return None


@functools.lru_cache(maxsize=4096)
def trial_facts(gamefile: Path) -> tuple[tuple[str, ...], tuple[tuple[str, Any], ...]]:
    """A trial's walkthrough (empty if the file has none) and `pddl_params`, read once per game
    rather than at every reset and replay."""
    walkthrough = json.loads(gamefile.read_text()).get("walkthrough") or []
    traj = json.loads((gamefile.parent / "traj_data.json").read_text())
    return tuple(walkthrough), tuple(sorted(traj.get("pddl_params", {}).items()))


class AlfworldSimulator(Simulator):
    def __init__(self, pool: Pool, gamefile: Path, task_type: str) -> None:
        self.pool = pool
        self.gamefile = gamefile
        self.task_type = task_type
        self.engine: Engine | None = None

    def reset(self) -> Opening:
        if self.engine is None:
            self.engine = self.pool.acquire(self.gamefile)  # type: ignore[assignment]
            self.engine.load(self.gamefile)
        walkthrough, pddl_params = trial_facts(self.gamefile)
        state = self.engine.reset(plan=not walkthrough)
        plan = list(walkthrough) or list(state.get("policy_commands") or [])
        return Opening(
            task=goal_of(state.feedback),
            observation=state.feedback,
            admissible_actions=list(state["admissible_commands"]),
            info={"task_type": self.task_type, "won": False},
            audit={
                "expert_plan": plan,
                "task_type": self.task_type,
                "pddl_params": dict(pddl_params),
                "gamefile": str(self.gamefile),
            },
        )

    def step(self, action: str) -> Transition:
        assert self.engine is not None, "reset() first"
        state, score, done = self.engine.step(action)
        won = bool(state["won"])
        return Transition(
            observation=state.feedback,
            reward=score,
            done=done,
            won=won,
            admissible_actions=list(state["admissible_commands"]),
            info={"task_type": self.task_type, "won": won},
        )

    def close(self) -> None:
        if self.engine is not None:
            self.pool.release(self.engine)  # type: ignore[arg-type]
            self.engine = None


class AlfworldEnvironment(Environment):
    name = "alfworld"
    max_steps = 50

    def __init__(self, games: GameSource, pool: Pool, dialect: str, backend: str = "native") -> None:
        self.games = games
        self.pool = pool
        self.dialect = dialect
        self.backend = backend  # episode records carry it; a replay refuses another backend
        kind = "official" if isinstance(games, OfficialGames) else f"generated-{GENERATOR_VERSION}"
        engine = f"native-{NATIVE_VERSION}" if backend == "native" else f"textworld-{version('textworld')}"
        self.version = f"alfworld-{version('alfworld')}+{engine}+{kind}+{dialect}"

    @classmethod
    def from_settings(cls, settings: EnvServiceSettings) -> AlfworldEnvironment:
        pool: Pool
        if settings.alfworld_backend == "native":
            pool = NativePool()
        else:
            pool = TextWorldPool(max_engines=settings.live_cache_size + settings.sim_threads + 4)
        games: GameSource
        data = settings.alfworld_data or official_download()
        if data is not None:
            games = OfficialGames(data)
            dialect = "official"
        else:
            dialect = settings.alfworld_dialect
            root = settings.cache_dir / "alfworld" / f"generated-{GENERATOR_VERSION}-{dialect}"
            games = GeneratedGames(root, Dialect.load(dialect))
        return cls(games, pool, dialect, settings.alfworld_backend)

    def settings(self) -> dict[str, Any]:
        source = "official" if isinstance(self.games, OfficialGames) else "generated"
        return {"dialect": self.dialect, "games": source}

    def splits(self) -> dict[str, int]:
        return self.games.splits()

    def task(self, split: str, index: int) -> Task:
        self.check_index(split, index)
        return Task(f"alfworld/{split}/{index}", split, index, task_type=self.games.task_type(split, index))

    def open(self, task: Task) -> Simulator:
        try:
            gamefile = self.games.gamefile(task.split, task.index)
        except (KeyError, IndexError):
            raise UnknownTask(task.task_id) from None
        return AlfworldSimulator(self.pool, gamefile, self.games.task_type(task.split, task.index))
