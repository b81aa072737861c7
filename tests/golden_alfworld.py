"""Golden fingerprints of sample ALFWorld panel items; run as a script it prints them as JSON.

The test runs this in processes with different hash seeds and compares with the committed
`tests/data/alfworld_golden.json`; `python -m tests.golden_alfworld > tests/data/alfworld_golden.json`
rewrites it after a deliberate generator change (bump `GENERATOR_VERSION` then).
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

from services.envs.alfworld import generator
from services.envs.alfworld.engine import TextWorldEngine
from services.envs.alfworld.games import Dialect

SAMPLES = [
    ("train", 0),
    ("train", 1234),
    ("train", 3552),
    ("valid_seen", 7),
    ("valid_seen", 139),
    ("valid_unseen", 0),
    ("valid_unseen", 100),
]
OBSERVED = [("valid_seen", 7), ("valid_unseen", 100)]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def fingerprints() -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    dialect = Dialect.load("2.1.2")
    for split, index in SAMPLES:
        game = generator.generate(generator.panel(split)[index])
        entry = {
            "task_type": game.task.task_type,
            "goal": game.goal,
            "folder": game.folder,
            "problem_sha256": sha(game.problem),
            "traj_sha256": sha(json.dumps(game.traj_data(), sort_keys=True)),
        }
        if (split, index) in OBSERVED:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "game.tw-pddl"
                path.write_text(json.dumps(game.game_data(dialect.domain, dialect.grammar)))
                engine = TextWorldEngine()
                engine.load(path)
                state = engine.reset()
                entry["observation_sha256"] = sha(state.feedback + "\n" + "\n".join(state["admissible_commands"]))
        out[f"{split}/{index}"] = entry
    return out


if __name__ == "__main__":
    json.dump(fingerprints(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
