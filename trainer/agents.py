"""The agent protocol per environment (DESIGN §4; reference: verl-agent's prompts and projections,
anchors.md §1.2-1.3, sdar.md §1 and §7): how a step's prompt is written, how the model's turn
becomes the action the env receives, and when a turn is invalid.

The prompts are in our words with the reference's structure: the task, the current observation,
the admissible actions where the env has them, the last steps of history (2; 4 for Search-QA),
and the tag instructions (`<think>` then `<action>`; Search-QA `<search>` or `<answer>`).

Projection, as the reference's:
- ALFWorld / WebShop: the turn is lower-cased and the first `<action>...</action>` is the action; a
  turn without one sends its last 30 (WebShop 20) characters and is invalid; it is also invalid
  without `<think>...</think>` or with CJK characters. Admissibility is the env's business.
- Search-QA: the turn is cut after the first `</search>` or `</answer>`; the first search block,
  else the first answer block, is re-emitted as `<search>q</search>` / `<answer>a</answer>`; without
  either the env receives `""`. It is invalid with neither, with both, or with a repeated tag.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ACTION = re.compile(r"<action>(.*?)</action>", re.DOTALL)
THINK = re.compile(r"<think>.*?</think>", re.DOTALL)
CJK = re.compile(r"[\u4e00-\u9fff]")
SEARCH = re.compile(r"<search>(.*?)</search>", re.DOTALL)
ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


@dataclass
class Turn:
    """One step of an episode, as the history shows it."""

    observation: str
    """What the agent saw before acting."""
    action: str
    """What the env received."""
    result: str = ""
    """What the env answered (Search-QA's history shows the retrieved information)."""


@dataclass
class Projection:
    action: str
    """What the env receives."""
    valid: bool


@dataclass
class AgentProtocol:
    """Prompts and projection of one env."""

    env: str
    history: int = 2
    fallback_chars: int = 30
    invalid_penalty: float = 0.1
    """Subtracted per invalid step by the trainer (reward shaping is the trainer's, not the env's)."""
    success_reward: float = 10.0
    """Reward of a won episode (Search-QA: the exact match itself, 1)."""

    def prompt(self, task: str, observation: str, admissible: list[str] | None, past: list[Turn]) -> str:
        raise NotImplementedError

    def project(self, text: str) -> Projection:
        lowered = text.lower()
        m = ACTION.search(lowered)
        if m is None:
            return Projection(lowered[-self.fallback_chars :], False)
        valid = THINK.search(lowered) is not None and CJK.search(text) is None
        return Projection(m.group(1).strip(), valid)

    def episode_reward(self, won: bool, env_reward: float) -> float:
        return self.success_reward * float(won)

    @staticmethod
    def actions(admissible: list[str] | None, drop: tuple[str, ...] = ()) -> str:
        return ", ".join(f"'{a}'" for a in (admissible or []) if a not in drop)

    def recent(self, past: list[Turn]) -> str:
        start = max(0, len(past) - self.history)
        return "\n".join(
            f"[Observation {i + 1}: '{t.observation}', Action {i + 1}: '{t.action}']"
            for i, t in enumerate(past[start:], start=start)
        )


class Alfworld(AgentProtocol):
    def prompt(self, task: str, observation: str, admissible: list[str] | None, past: list[Turn]) -> str:
        actions = self.actions(admissible, drop=("help",))  # the reference hides `help`
        head = "You are an expert agent acting in ALFRED, a simulated household."
        if past:
            head += (
                f" Your task is to: {task}\nYou have taken {len(past)} step(s) so far. Your most recent "
                f"{min(len(past), self.history)} observations and the actions you took:\n{self.recent(past)}\n"
                f"This is step {len(past) + 1}. The current observation is: {observation}"
            )
        else:
            head += f" The current observation is: {observation}"
        return (
            f"{head}\nThe admissible actions now are: [{actions}].\n"
            "Reason step by step about the situation first, inside <think> </think> tags. Then choose one "
            "admissible action for this step and write it inside <action> </action> tags."
        )


class Webshop(AgentProtocol):
    def prompt(self, task: str, observation: str, admissible: list[str] | None, past: list[Turn]) -> str:
        head = f"You are an expert shopping agent in the WebShop online store. Your task is to: {task}."
        if past:
            head += (
                f"\nYou have taken {len(past)} step(s) so far. Your most recent "
                f"{min(len(past), self.history)} observations and the actions you took:\n{self.recent(past)}\n"
                f"This is step {len(past) + 1}."
            )
        return (
            f"{head}\nThe current page is: {observation}\nThe admissible actions now are: "
            f"[{self.actions(admissible)}].\nThink carefully about which admissible action moves the "
            "purchase forward, inside <think> </think> tags. Then write that one action inside "
            "<action> </action> tags."
        )


class SearchQA(AgentProtocol):
    def prompt(self, task: str, observation: str, admissible: list[str] | None, past: list[Turn]) -> str:
        question = task.strip()
        if not question.endswith("?"):
            question += "?"
        head = f"You are an expert agent who answers the given question step by step. Your question: {question}"
        if past:
            start = max(0, len(past) - self.history)
            history = "\n".join(
                f"Step {i + 1}:{t.action} {t.result}\n" for i, t in enumerate(past[start:], start=start)
            )
            head += f"\nYour previous steps ({len(past)} so far; the most recent shown):\n{history}"
        return (
            f"{head}\nFirst reason inside <think> </think> tags. Then do exactly one of these two: "
            "(1) if some knowledge is missing, search for it with <search> your query </search>, and the "
            "results will come back between <information> and </information>; (2) if you know enough, give "
            "the final answer inside <answer> </answer> tags, without explanations. For example, "
            "<answer>Beijing</answer>."
        )

    def project(self, text: str) -> Projection:
        cut = min((i + len(t) for t in ("</search>", "</answer>") if (i := text.find(t)) >= 0), default=len(text))
        kept = text[:cut]
        search, answer = SEARCH.search(kept), ANSWER.search(kept)
        tags = [t for t in ("<search>", "<answer>") if t in text]
        repeated = any(text.count(t) > 1 for t in ("<search>", "<answer>"))
        if search is not None:
            action = f"<search>{search.group(1).strip()}</search>"
        elif answer is not None:
            action = f"<answer>{answer.group(1).strip()}</answer>"
        else:
            return Projection("", False)
        return Projection(action, len(tags) == 1 and not repeated)

    def episode_reward(self, won: bool, env_reward: float) -> float:
        return env_reward


PROTOCOLS: dict[str, AgentProtocol] = {
    "alfworld": Alfworld("alfworld", history=2, fallback_chars=30, invalid_penalty=0.1),
    "webshop": Webshop("webshop", history=2, fallback_chars=20, invalid_penalty=0.1),
    "searchqa": SearchQA("searchqa", history=4, invalid_penalty=0.01, success_reward=1.0),
    "counter": Alfworld("counter", history=2),
}


def protocol(env: str) -> AgentProtocol:
    try:
        return PROTOCOLS[env]
    except KeyError:
        raise ValueError(f"no agent protocol for env {env!r}; known: {sorted(PROTOCOLS)}") from None
