"""The real ALFWorld engine's transcripts, the oracle of the native engine's differential suite.

`python -m tests.alfworld_transcripts` plays every game of `GAMES` on TextWorld (seeded random walks
over the admissible commands mixed with invalid and malformed ones, and the expert's winning runs)
and writes `tests/data/alfworld_transcripts.json.gz` (a few minutes). The file is keyed by the
generator version and the engine versions; the test fails until it is regenerated after a change of
either. `play(...)` plays the same commands on either engine, so the sweep compares them live.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

from services.envs.alfworld import generator
from services.envs.alfworld.engine import NativeEngine, TextWorldEngine
from services.envs.alfworld.games import Dialect, GeneratedGames
from shared.settings import default_cache_dir

GOLDEN = Path(__file__).parent / "data" / "alfworld_transcripts.json.gz"
DIALECTS = ("2.1.2", "2.1.1")
PER_TYPE = 4  # games per (split, task type): two per dialect
WALK_STEPS = 30
# What a careless policy sends: blanks, unknown verbs, half commands, other dialects' commands,
# padded commands (valid once stripped) and case changes (invalid: matching is exact).
ODD_COMMANDS = (
    "",
    "   ",
    "help",
    "look",
    "inventory",
    " look ",
    "\tinventory",
    "LOOK",
    "Look",
    "jump",
    "go to",
    "go to nowhere 1",
    "take",
    "take the apple",
    "examine",
    "open drawer 999",
    "move it to there",
    "put apple 1 in/on countertop 1",
    "move apple 1 to countertop 1",
    "heat everything",
    "use",
    "think: I should look around",
    "go to countertop 1.",
    "ällo wörld",
)


@dataclass(frozen=True)
class Case:
    split: str
    index: int
    dialect: str
    walk: str  # "random", "busy" (handling things more than walking) or "expert"


def cases() -> list[Case]:
    """Every task type of every panel, both dialects; a random walk for each game, and for one game in
    two a busy walk and the expert's run."""
    out = []
    for split in generator.SPLITS:
        picked: dict[str, list[int]] = {}
        for slot in generator.panel(split):
            if len(picked.setdefault(slot.task_type, [])) < PER_TYPE:
                picked[slot.task_type].append(slot.index)
        for task_type in generator.TASK_TYPES:
            for n, index in enumerate(picked[task_type]):
                dialect = DIALECTS[n % 2]
                out.append(Case(split, index, dialect, "random"))
                if n < 2:
                    out.append(Case(split, index, dialect, "busy"))
                    out.append(Case(split, index, dialect, "expert"))
    return out


def game_data(split: str, index: int, attempt: int, dialect: str) -> dict[str, Any]:
    """A generated game's file content, rebuilt from its panel slot and attempt (no solving)."""
    game = generator.generate(generator.panel(split)[index], attempt)
    if game.attempt != attempt:
        raise ValueError(f"{split}/{index} attempt {attempt} does not fit its slot")
    d = Dialect.load(dialect)
    return game.game_data(d.domain, d.grammar)


Engine = TextWorldEngine | NativeEngine


def play(
    engine: Engine, data: dict[str, Any], commands: Callable[[int, list[str]], str | None]
) -> list[dict[str, Any]]:
    """Reset then step while `commands(step, admissible)` gives a command; every observation."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "game.tw-pddl"
        path.write_text(json.dumps(data))
        engine.load(path)
        state = engine.reset()
        steps = [_frame(None, state, 0.0, False)]
        while (command := commands(len(steps) - 1, list(state["admissible_commands"]))) is not None:
            state, score, done = engine.step(command)
            steps.append(_frame(command, state, score, done))
        engine.gamefile = None  # the file is gone; never match it again
    return steps


def _frame(command: str | None, state: Any, reward: float, done: bool) -> dict[str, Any]:
    return {
        "command": command,
        "observation": state.feedback,
        "admissible": list(state["admissible_commands"]),
        "won": bool(state["won"]),
        "done": bool(done),
        "reward": float(reward),
    }


def random_walk(seed: str, n: int = WALK_STEPS, busy: bool = False) -> Callable[[int, list[str]], str | None]:
    """Uniform over the admissible commands three times in four, else an odd command or one that was
    admissible earlier in the walk (often no longer). A busy walk mostly picks what is not `go to`:
    taking, putting back, opening, heating, using, examining, looking, so object states pile up."""
    rng = random.Random(seed)
    earlier: list[str] = []

    def choose(step: int, admissible: list[str]) -> str | None:
        if step >= n:
            return None
        earlier.extend(admissible)
        draw = rng.random()
        handling = [c for c in admissible if not c.startswith("go to ")]
        if busy and handling and draw < 0.6:
            return rng.choice(handling)
        if draw < 0.75:
            return rng.choice(admissible)
        if draw < 0.9:
            return rng.choice(ODD_COMMANDS)
        return rng.choice(earlier)

    return choose


def scripted(commands: list[str]) -> Callable[[int, list[str]], str | None]:
    return lambda step, _: commands[step] if step < len(commands) else None


def header() -> dict[str, str]:
    return {
        "generator": generator.GENERATOR_VERSION,
        "alfworld": version("alfworld"),
        "textworld": version("textworld"),
    }


def record(cache: Path) -> dict[str, Any]:
    engine = TextWorldEngine()
    sources = {
        d: GeneratedGames(cache / "alfworld" / f"generated-{generator.GENERATOR_VERSION}-{d}", Dialect.load(d))
        for d in DIALECTS
    }
    games = []
    for case in cases():
        if case.walk == "expert":
            gamefile = sources[case.dialect].gamefile(case.split, case.index)
            saved = json.loads(gamefile.read_text())
            attempt = json.loads((gamefile.parent / "traj_data.json").read_text())["generator"]["attempt"]
            commands = scripted(list(saved["walkthrough"]))
        else:
            attempt = generator.generate(generator.panel(case.split)[case.index]).attempt
            seed = f"alfworld-transcript/{case.split}/{case.index}/{case.dialect}/{case.walk}"
            commands = random_walk(seed, busy=case.walk == "busy")
        steps = play(engine, game_data(case.split, case.index, attempt, case.dialect), commands)
        task_type = generator.panel(case.split)[case.index].task_type
        games.append(vars(case) | {"attempt": attempt, "task_type": task_type, "steps": steps})
        print(f"{case.split}/{case.index} {case.dialect} {case.walk}: {len(steps) - 1} steps", file=sys.stderr)
    return {"versions": header(), "games": games}


def load() -> dict[str, Any]:
    with gzip.open(GOLDEN, "rt") as f:
        data: dict[str, Any] = json.load(f)
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir(), help="where generated games are kept")
    args = parser.parse_args()
    data = record(args.cache_dir)
    with gzip.GzipFile(GOLDEN, "wb", mtime=0) as f:  # byte-identical when nothing changed
        f.write(json.dumps(data, sort_keys=True).encode())
    total = sum(len(g["steps"]) - 1 for g in data["games"])
    print(f"wrote {GOLDEN}: {len(data['games'])} transcripts, {total} steps", file=sys.stderr)


if __name__ == "__main__":
    main()
