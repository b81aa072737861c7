"""Where ALFWorld game files come from: generated on demand, or an official download.

Both sources lay games out as the official release does, `<root>/json_2.1.1/<split>/<trial>/`, and
both answer the same three questions: the splits and their sizes, a task's type, and the game file
of `(split, index)`.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from services.envs.alfworld import generator
from services.envs.alfworld.engine import TextWorldEngine, TextWorldPool
from services.envs.alfworld.expert import Expert, to_dialect

TASK_TYPES = generator.TASK_TYPES
EXPERT_STEP_LIMIT = 50
MAX_ATTEMPTS = 20


@dataclass(frozen=True)
class Dialect:
    """The PDDL domain and text grammar of one ALFWorld data release."""

    name: str
    domain: str
    grammar: str

    @classmethod
    def load(cls, name: str) -> Dialect:
        if name == "2.1.2":
            data = resources.files("alfworld") / "data"
            return cls(name, (data / "alfred.pddl").read_text(), (data / "alfred.twl2").read_text())
        folder = legacy_dialect_dir()
        if not (folder / "alfred.twl2").is_file():
            raise FileNotFoundError(
                f"the 2.1.1 dialect's grammar is not at {folder}; it comes from the alfworld 0.3.5 wheel, "
                "fetched by the set-up script (scripts/setup)"
            )
        return cls(name, (folder / "alfred.pddl").read_text(), (folder / "alfred.twl2").read_text())


def legacy_dialect_dir() -> Path:
    """Where set-up puts the 2.1.1 domain and grammar (from the alfworld 0.3.5 wheel)."""
    return Path(os.environ.get("SDAR_ALFWORLD_LEGACY_DIR", Path(sys.prefix) / "share" / "sdar" / "alfworld-2.1.1"))


class GameSource(ABC):
    @abstractmethod
    def splits(self) -> dict[str, int]: ...

    @abstractmethod
    def task_type(self, split: str, index: int) -> str: ...

    @abstractmethod
    def gamefile(self, split: str, index: int) -> Path:
        """The game file of a task, ready to load (blocking; may generate it)."""


class SolvabilityError(RuntimeError):
    pass


class GeneratedGames(GameSource):
    """Games generated from the panel schedule, written once under `root` and checked solvable.

    A game is served only after ALFWorld's own hand-coded expert won it within the 50-step limit
    (`expert.py`); its commands are stored as the game's `walkthrough`. A draw that the expert does
    not win moves to the next attempt, deterministically, so every machine serves the same game.
    (TextWorld's optimal planner would also do, but takes minutes on some large kitchens.)
    """

    def __init__(self, root: Path, dialect: Dialect) -> None:
        self.root = root / "json_2.1.1"
        self.dialect = dialect
        self._solver_dialect = dialect if dialect.name == "2.1.2" else Dialect.load("2.1.2")
        self.checkers = TextWorldPool(max_engines=2, facts=True)
        self._locks = [threading.Lock() for _ in range(64)]
        self._paths: dict[tuple[str, int], Path] = {}  # resolved games: at most one per panel item

    def splits(self) -> dict[str, int]:
        return {split: len(generator.panel(split)) for split in generator.SPLITS}

    def task_type(self, split: str, index: int) -> str:
        return generator.panel(split)[index].task_type

    def gamefile(self, split: str, index: int) -> Path:
        known = self._paths.get((split, index))
        if known is not None:
            return known
        slot = generator.panel(split)[index]
        with self._locks[index % len(self._locks)]:
            self._paths[split, index] = path = self._resolve(slot)
            return path

    def _resolve(self, slot: generator.TaskSlot) -> Path:
        """The first draw of a slot that the expert wins: from the cache, or generated and checked."""
        split, index = slot.split, slot.index
        attempt = 0
        while True:
            game = generator.generate(slot, attempt)
            path = self.root / split / game.folder / "game.tw-pddl"
            if path.is_file():
                return path
            walkthrough = self._solve(game)
            if walkthrough is not None:
                return generator.write_game(game, self.root, self.dialect.domain, self.dialect.grammar, walkthrough)
            attempt = game.attempt + 1
            if attempt >= MAX_ATTEMPTS:
                raise SolvabilityError(f"the expert won no draw of alfworld/{split}/{index} in {attempt} attempts")

    def _solve(self, game: generator.GeneratedGame) -> list[str] | None:
        """The expert's winning commands in this source's dialect, or None if it does not win."""
        commands = self._play(game, self._solver_dialect, None)
        if commands is None or self.dialect.name == "2.1.2":
            return commands
        translated = [to_dialect(c, self.dialect.name) for c in commands]
        return translated if self._play(game, self.dialect, translated) else None

    def _play(self, game: generator.GeneratedGame, dialect: Dialect, commands: list[str] | None) -> list[str] | None:
        """Play `game` in `dialect`: the given commands, or the expert's. The commands if they win."""
        slot = game.slot
        staging = self.root.parent / "staging" / f"{slot.split}-{slot.index}-{game.attempt}-{dialect.name}"
        staging.mkdir(parents=True, exist_ok=True)
        path = staging / "game.tw-pddl"
        path.write_text(json.dumps(game.game_data(dialect.domain, dialect.grammar)))
        (staging / "traj_data.json").write_text(json.dumps(game.traj_data()))
        engine = self.checkers.acquire(path)
        try:
            engine.load(path)
            state = engine.reset()
            if commands is None:
                return self._expert(game, path, state, engine)
            for command in commands:
                state, _, _ = engine.step(command)
            return commands if state["won"] else None
        finally:
            engine.gamefile = None  # the staging file goes away; don't match it again
            self.checkers.release(engine)
            for file in staging.iterdir():
                file.unlink()
            staging.rmdir()

    @staticmethod
    def _expert(game: generator.GeneratedGame, path: Path, state: Any, engine: TextWorldEngine) -> list[str] | None:
        expert = Expert(seed=f"alfworld-expert/{game.slot.split}/{game.slot.index}/{game.attempt}")
        try:
            expert.reset(str(path))
            expert.observe(state.feedback)
            commands = ["look"]  # AlfredExpert's first command, before the expert has acted
            state, _, done = engine.step("look")
            while not done and len(commands) < EXPERT_STEP_LIMIT:
                commands.append(expert.next_command(state, commands[-1]))
                state, _, done = engine.step(commands[-1])
        except Exception:  # noqa: BLE001 - the expert gives up by raising; that draw is unsolved
            return None
        return commands if state["won"] else None


class OfficialGames(GameSource):
    """Game files of an official download (`$ALFWORLD_DATA`), collected as `AlfredTWEnv` does:
    `traj_data.json` beside `game.tw-pddl`, no `movable` or `Sliced` trials, solvable games only,
    the six task types; ordered by path so an index means the same game everywhere."""

    def __init__(self, data_root: Path) -> None:
        self.data_root = data_root
        self._games: dict[str, list[tuple[Path, str]]] = {}
        for split in generator.SPLITS:
            self._games[split] = self._collect(data_root / "json_2.1.1" / split)
        if not any(self._games.values()):
            raise FileNotFoundError(f"no ALFWorld games under {data_root}/json_2.1.1/{{{','.join(generator.SPLITS)}}}")

    @staticmethod
    def _collect(folder: Path) -> list[tuple[Path, str]]:
        games = []
        for traj in sorted(folder.rglob("traj_data.json")):
            trial = traj.parent
            if "movable" in str(trial) or "Sliced" in str(trial):
                continue
            gamefile = trial / "game.tw-pddl"
            if not gamefile.is_file():
                continue
            task_type = json.loads(traj.read_text()).get("task_type")
            if task_type not in TASK_TYPES:
                continue
            if not json.loads(gamefile.read_text()).get("solvable", False):
                continue
            games.append((gamefile, task_type))
        return games

    def splits(self) -> dict[str, int]:
        return {split: len(games) for split, games in self._games.items() if games}

    def task_type(self, split: str, index: int) -> str:
        return self._games[split][index][1]

    def gamefile(self, split: str, index: int) -> Path:
        return self._games[split][index][0]
