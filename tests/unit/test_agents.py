"""The agent protocol: prompts carry the reference's information, projections and validity follow
the reference's rules, and an invalid turn sends the reference's fallback."""

from __future__ import annotations

import pytest

from trainer.agents import Turn, protocol

ADMISSIBLE = ["go to fridge 1", "look", "help", "inventory"]


def test_alfworld_prompt_task_observation_actions_and_two_steps_of_history() -> None:
    alfworld = protocol("alfworld")
    first = alfworld.prompt("put a hot egg in garbagecan", "You are in the middle of a room.", ADMISSIBLE, [])
    assert "You are in the middle of a room." in first and "'go to fridge 1', 'look', 'inventory'" in first
    assert "'help'" not in first  # the reference hides help
    assert "<think> </think>" in first and "<action> </action>" in first
    past = [Turn(f"obs {i}", f"act {i}") for i in range(3)]
    later = alfworld.prompt("put a hot egg in garbagecan", "obs 3", ADMISSIBLE, past)
    assert "Your task is to: put a hot egg in garbagecan" in later and "You have taken 3 step(s)" in later
    assert "[Observation 2: 'obs 1', Action 2: 'act 1']" in later and "[Observation 3: 'obs 2'" in later
    assert "obs 0" not in later and "This is step 4. The current observation is: obs 3" in later


def test_searchqa_prompt_question_mark_and_four_steps_of_history() -> None:
    search = protocol("searchqa")
    first = search.prompt("who founded kuhaven press", "who founded kuhaven press", None, [])
    assert "Your question: who founded kuhaven press?" in first
    assert "<search> your query </search>" in first and "<answer>Beijing</answer>" in first
    past = [Turn("", f"<search>q{i}</search>", f"<information>r{i}</information>") for i in range(6)]
    later = search.prompt("q", "", None, past)
    assert "Step 3:<search>q2</search> <information>r2</information>" in later and "Step 6:" in later
    assert "q1</search>" not in later


@pytest.mark.parametrize(
    ("text", "action", "valid"),
    [
        ("<think>the egg is cold</think><action>Go To Fridge 1</action>", "go to fridge 1", True),
        ("<action>look</action>", "look", False),  # no reasoning
        ("<think>冰箱</think><action>look</action>", "look", False),  # CJK
        ("<think>a</think><action> open drawer 1 </action><action>look</action>", "open drawer 1", True),
        ("I will go to the fridge now and open it", " to the fridge now and open it", False),  # last 30 chars
    ],
)
def test_alfworld_projection(text: str, action: str, valid: bool) -> None:
    projected = protocol("alfworld").project(text)
    assert (projected.action, projected.valid) == (action, valid)


def test_webshop_fallback_is_the_last_20_characters() -> None:
    projected = protocol("webshop").project("I should search for a red shirt please")
    assert (projected.action, projected.valid) == ("r a red shirt please", False)
    assert (
        protocol("webshop").project("<think>x</think><action>search[red shirt]</action>").action == "search[red shirt]"
    )


@pytest.mark.parametrize(
    ("text", "action", "valid"),
    [
        ("<think>x</think><search> Kuhaven river </search>", "<search>Kuhaven river</search>", True),
        ("<think>x</think><answer> Drua </answer>", "<answer>Drua</answer>", True),
        ("<search>a</search> then <answer>b</answer>", "<search>a</search>", False),  # both tags
        ("<search>a</search><search>b</search>", "<search>a</search>", False),  # a repeated tag
        ("<answer>b</answer> later <search>a</search>", "<answer>b</answer>", False),
        ("no tags at all", "", False),
        ("<search>unfinished", "", False),
    ],
)
def test_searchqa_projection(text: str, action: str, valid: bool) -> None:
    projected = protocol("searchqa").project(text)
    assert (projected.action, projected.valid) == (action, valid)


def test_rewards_and_penalties_per_env() -> None:
    assert protocol("alfworld").episode_reward(True, 1.0) == 10.0 and protocol("webshop").invalid_penalty == 0.1
    assert protocol("searchqa").episode_reward(False, 1.0) == 1.0 and protocol("searchqa").invalid_penalty == 0.01
    with pytest.raises(ValueError, match="no agent protocol"):
        protocol("chess")
