"""ALFWorld's own hand-coded expert, made reproducible and fluent in the 2.1.2 dialect.

`alfworld.agents.expert.HandCodedTWAgent` (what `AlfredExpert(HANDCODED)` runs) has two flaws in
alfworld 0.4.2 that matter for serving generated games:

- its state tracking recognises putting an object down by the word `put` (the 2.1.1 command),
  while its policies issue `move` (2.1.2); after a `move` it still believes it holds the object, so
  it fails most pick-two games. We show it the `put` spelling of the last command.
- when stuck it picks a random admissible command from the global `random`; we give it a seeded
  generator of its own, so the same game gets the same trajectory on every machine.

The decisions are the package's policies'; only those two points differ.
"""

from __future__ import annotations

import random
from typing import Any

from alfworld.agents.expert.handcoded_expert_tw import HandCodedTWAgent


def as_put(command: str) -> str:
    """The 2.1.1 spelling of a 2.1.2 `move X to Y` command, as the expert's tracker expects it."""
    return "put " + command.removeprefix("move ") if command.startswith("move ") else command


class Expert(HandCodedTWAgent):  # type: ignore[misc]
    def __init__(self, seed: str, max_steps: int = 200) -> None:
        super().__init__(max_steps=max_steps)
        self.rng = random.Random(seed)

    def next_command(self, state: Any, last_command: str) -> str:
        """The expert's next command after `last_command` led to `state` (as `AlfredExpert.act`)."""
        action: str = self.policy.act(state, as_put(last_command))
        admissible = state["admissible_commands"]
        if action == last_command or (last_command == "look" and action not in admissible):
            return str(self.rng.choice(admissible))
        return action if action in admissible else "look"


def to_dialect(command: str, dialect: str) -> str:
    """A 2.1.2 command in `dialect` (2.1.1 puts with `put X in/on Y`)."""
    if dialect == "2.1.1" and command.startswith("move ") and " to " in command:
        obj, _, receptacle = command.removeprefix("move ").rpartition(" to ")
        return f"put {obj} in/on {receptacle}"
    return command
