"""The scoring core: log-probs equal a direct forward pass (also through a shared prefix), the gate
equals hand-computed values, the skill block survives truncation, and bad items are refused."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from services.teacher.scoring import Item, Scorer, ScoringError, TooLong, gate, prefix_groups
from services.teacher.skills import HEADER
from shared.models import LoadedModel, load_model, tiny_model

TOLERANCE = 1e-5
"""Between a padded batch and a lone forward pass of the same sequence (float32 on the CPU)."""


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    return load_model("tiny")


def direct(model: Any, prompt: list[int], response: list[int]) -> list[float]:
    """Log-probs of `response` after `prompt`, from one unpadded forward pass."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + response])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    return [logp[len(prompt) - 1 + k, t].item() for k, t in enumerate(response)]


def test_the_gate_against_hand_computed_values() -> None:
    teacher, student = torch.tensor([-1.0, -2.0, -0.5, -3.0]), torch.tensor([-2.0, -1.0, -0.5, -0.2])
    gap, g = gate(teacher, student, beta=5.0)
    assert gap.tolist() == pytest.approx([1.0, -1.0, 0.0, -2.8])
    sigmoid = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert g.tolist() == pytest.approx([sigmoid(5.0), sigmoid(-5.0), 0.5, sigmoid(-14.0)], rel=1e-6)
    assert g.tolist()[0] == pytest.approx(0.9933071490757153) and g.tolist()[1] == pytest.approx(0.0066928509242848554)
    _, flat = gate(teacher, student, beta=0.0)  # GRPO+OPSD's un-gated variant: g = 0.5 everywhere
    assert flat.tolist() == [0.5] * 4


def test_log_probs_equal_a_direct_forward_pass(tiny: LoadedModel) -> None:
    tok = tiny.tokenizer
    scorer = Scorer(tok)
    other = tiny_model(tok, seed=1)
    prompts = [
        scorer._template([{"role": "user", "content": text}])
        for text in ["Put a hot apple in the fridge.", "Buy a red shirt under 30 dollars, size large please."]
    ]
    responses = [tok.encode(t, add_special_tokens=False) for t in ["go to microwave 1", "search[red shirt]", "ok"]]
    items = [
        Item(responses[0], prompt_token_ids=prompts[0], skills="- Heat: use the microwave."),
        Item(responses[1], prompt_token_ids=prompts[1]),
        Item(responses[2], messages=[{"role": "user", "content": "Say ok."}], skills="- Be brief."),
    ]
    betas = [5.0, 0.5, 12.0]  # one per item: a batch merges requests of several callers
    scored = scorer.score(items, tiny.model, other, beta=betas, top_k=4)
    for item, s, beta in zip(items, scored, betas, strict=True):
        assert s.gate == pytest.approx([1 / (1 + math.exp(-beta * g)) for g in s.gap], abs=1e-6)
        student_prompt = scorer.student_prompt(item)
        teacher_prompt = scorer.teacher_prompt(item, student_prompt)
        assert s.student_logprobs == pytest.approx(
            direct(tiny.model, student_prompt, item.response_token_ids), abs=TOLERANCE
        )
        assert s.teacher_logprobs == pytest.approx(
            direct(other, teacher_prompt, item.response_token_ids), abs=TOLERANCE
        )
        assert s.teacher_prompt_tokens == len(teacher_prompt)
        assert s.gap == pytest.approx([t - u for t, u in zip(s.teacher_logprobs, s.student_logprobs, strict=True)])
        assert s.top_logprobs is not None and len(s.top_logprobs) == len(item.response_token_ids)
        assert all(len(row) == 4 and row[0][1] >= row[-1][1] for row in s.top_logprobs)
    # the teacher's prompt is the reference's: the header, the skills, a blank line, then the student's
    text = tiny.tokenizer.decode(scorer.teacher_prompt(items[0], prompts[0]))
    assert text.startswith(f"{HEADER}- Heat: use the microwave.\n\n<|im_start|>system\n")
    assert text.endswith("<|im_start|>assistant\n")


def test_prompts_that_begin_alike_are_grouped_by_their_shared_prefix() -> None:
    prompts = [[1, 2, 3, 4, 5], [1, 2, 3, 4, 6, 7], [9, 9], [1, 2, 3]]
    # sorted: [1,2,3] (keeps its last token: 2 shared at most) shares more with nothing than the next two
    # share with each other (4), so it stays alone, as [9,9]
    assert prefix_groups(prompts, 2) == [(4, [0, 1]), (0, [2, 3])]
    assert prefix_groups(prompts, 5) == [(0, [0, 1, 2, 3])]  # below the minimum: nothing shared
    assert prefix_groups(prompts, 0) == [(0, [0, 1, 2, 3])]  # 0: sharing off
    ten = [1] * 10
    # a third prompt that shares 3 tokens would cut the saving from 10 tokens to 2 x 3: it goes alone
    assert prefix_groups([[*ten, 2], [*ten, 3], [1, 1, 1, *[5] * 8]], 2) == [(10, [0, 1]), (0, [2])]
    assert prefix_groups([[*ten, 2], [*ten, 3], [*ten[:8], 5, 5]], 2) == [(8, [0, 1, 2])]  # 2 x 8 >= 1 x 10
    # one that sorts first and shares 3 tokens does not cut the group after it down to 3
    assert prefix_groups([[1, 1, 1, 0], [*ten, 2], [*ten, 3], [*ten, 4]], 2) == [(10, [1, 2, 3]), (0, [0])]
    assert prefix_groups([], 32) == []


def test_a_shared_prefix_gives_the_log_probs_of_whole_prompts(tiny: LoadedModel) -> None:
    """Groups whose prompts share a long prefix (a prompt that is all prefix but its last token, a
    prompt alone) score as each sequence alone, top-k included; in batches cut small, too."""
    g = torch.Generator().manual_seed(0)

    def ids(n: int) -> list[int]:
        return torch.randint(5, len(tiny.tokenizer), (n,), generator=g).tolist()

    head, other = ids(40), ids(35)
    prompts = [head + ids(7), head + ids(1), head + ids(20), other + ids(3), other, ids(12)]
    pairs = [(p, ids(1 + k % 4)) for k, p in enumerate(prompts)]
    scorer = Scorer(tiny.tokenizer, min_shared_prefix=32)
    assert sorted(s for s, _ in prefix_groups(prompts, 32)) == [0, 34, 40]
    for budget in (16384, 60):
        for (lp, top), (p, r) in zip(
            scorer.logprobs(tiny.model, pairs, top_k=3, max_batch_tokens=budget), pairs, strict=True
        ):
            assert lp.tolist() == pytest.approx(direct(tiny.model, p, r), abs=TOLERANCE)
            assert top is not None and [t for t, _ in top[0]] == [
                int(t) for t in tiny.model(torch.tensor([p])).logits[0, -1].topk(3).indices
            ]


def test_without_skills_the_self_teacher_equals_the_student(tiny: LoadedModel) -> None:
    scorer = Scorer(tiny.tokenizer)
    item = Item([10, 20, 30], messages=[{"role": "user", "content": "hello"}])
    [s] = scorer.score([item], tiny.model, tiny.model)
    assert s.student_logprobs == s.teacher_logprobs and s.gate == [0.5, 0.5, 0.5]


@pytest.mark.parametrize("placement", ["prefix", "system"])
def test_truncation_cuts_the_prompt_and_never_the_skills(tiny: LoadedModel, placement: str) -> None:
    tok = tiny.tokenizer
    scorer = Scorer(tok, placement=placement, max_prompt_tokens=120)  # type: ignore[arg-type]
    messages = [{"role": "user", "content": " ".join(f"observation {i}." for i in range(80))}]
    skills = "- Heat in the microwave: take the object first."
    item = Item([5, 6], messages=messages, skills=skills)
    student = scorer.student_prompt(item)
    assert len(student) > 120
    teacher = scorer.teacher_prompt(item, student)
    assert len(teacher) == 120
    text = tok.decode(teacher)
    assert skills in text and "observation 79." in text and "observation 0." not in text
    if placement == "prefix":
        assert text.startswith(f"{HEADER}{skills}\n\n")
    else:
        assert text.startswith(f"<|im_start|>system\n{HEADER}{skills}<|im_end|>")
    with pytest.raises(TooLong, match="skill block alone"):
        Scorer(tok, max_prompt_tokens=16).teacher_prompt(Item([5], messages=messages, skills=skills * 5), student)


def test_bad_items_are_refused(tiny: LoadedModel) -> None:
    scorer = Scorer(tiny.tokenizer, max_prompt_tokens=64)
    vocab = len(tiny.tokenizer)
    with pytest.raises(ScoringError, match="empty"):
        scorer.check(Item([], prompt_token_ids=[1]), 10)
    with pytest.raises(ScoringError, match="outside the vocabulary"):
        scorer.check(Item([vocab], prompt_token_ids=[1]), 10)
    with pytest.raises(ScoringError, match="outside the vocabulary"):
        scorer.check(Item([1], prompt_token_ids=[-1]), 10)
    with pytest.raises(TooLong, match="response of 11 tokens"):
        scorer.check(Item([1] * 11, prompt_token_ids=[1]), 10)
    with pytest.raises(TooLong, match="prompt of 65 tokens"):
        scorer.check(Item([1], prompt_token_ids=[1] * 65), 10)
    with pytest.raises(ScoringError, match="need the prompt's messages"):
        Scorer(tiny.tokenizer, placement="system").teacher_prompt(Item([1], prompt_token_ids=[1], skills="x"), [1])
