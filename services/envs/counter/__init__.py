"""`counter`: a tiny deterministic environment for tests, benchmarks and smoke checks.

Task `i` of a split asks to count up to `i % 7 + 1`. Actions: `inc`, `dec`, and `sleep <s>`
(0 < s <= 5), which holds the simulator for `s` seconds: a slow step, to show that the service
keeps answering while one is in flight. Anything else is `Nothing happens.`
"""

from __future__ import annotations

import time

from services.envs.base import Environment, Opening, Simulator, Task, Transition, UnknownTask

SPLITS = {"train": 1000, "test": 100}
ACTIONS = ["dec", "inc"]


class CounterSimulator(Simulator):
    def __init__(self, target: int) -> None:
        self.target = target
        self.value = 0

    def reset(self) -> Opening:
        self.value = 0
        return Opening(
            task=f"count to {self.target}",
            observation=f"The counter shows 0. Your task is to: count to {self.target}.",
            admissible_actions=list(ACTIONS),
            audit={"expert_plan": ["inc"] * self.target},
            info={"task_type": "count"},
        )

    def step(self, action: str) -> Transition:
        command = action.strip()
        if command == "inc":
            self.value += 1
        elif command == "dec":
            self.value -= 1
        elif command.startswith("sleep ") and _seconds(command) is not None:
            time.sleep(_seconds(command) or 0.0)
        else:
            return Transition("Nothing happens.", 0.0, False, False, list(ACTIONS))
        won = self.value == self.target
        return Transition(f"The counter shows {self.value}.", 1.0 if won else 0.0, won, won, list(ACTIONS))


def _seconds(command: str) -> float | None:
    try:
        seconds = float(command.removeprefix("sleep "))
    except ValueError:
        return None
    return seconds if 0 < seconds <= 5 else None


class CounterEnvironment(Environment):
    name = "counter"
    backend = "python"
    version = "1"
    max_steps = 20

    def splits(self) -> dict[str, int]:
        return dict(SPLITS)

    def task(self, split: str, index: int) -> Task:
        self.check_index(split, index)
        return Task(f"counter/{split}/{index}", split, index, task_type="count")

    def open(self, task: Task) -> Simulator:
        if task.split not in SPLITS:
            raise UnknownTask(task.task_id)
        return CounterSimulator(task.index % 7 + 1)
