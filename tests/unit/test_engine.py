"""The continuous-batching engine and the generator over it, against the model run the plain way
(the whole sequence through the model, no cache, one sequence at a time)."""

from __future__ import annotations

import asyncio
import copy
import math

import pytest
import torch

from shared.models import LoadedModel, load_model, tiny_model
from trainer.engine import Engine, EngineError, HFGenerator, Sequence, cumulative, inverse_cdf, stop_token_ids
from trainer.generation import GenerationError, Sampling


@pytest.fixture(scope="module")
def tiny() -> LoadedModel:
    return load_model("tiny")


def prompts(*lengths: int) -> list[list[int]]:
    generator = torch.Generator().manual_seed(sum(lengths))
    return [torch.randint(100, 5000, (n,), generator=generator).tolist() for n in lengths]


@torch.no_grad()
def model_logprobs(tiny: LoadedModel, ids: list[int]) -> torch.Tensor:
    """log-softmax of the model's next-token logits at every position."""
    return torch.log_softmax(tiny.model(torch.tensor([ids])).logits[0].float(), dim=-1)


def greedy(tiny: LoadedModel, prompt: list[int], limit: int) -> tuple[list[int], list[float]]:
    ids, logprobs = list(prompt), []
    for _ in range(limit):
        row = model_logprobs(tiny, ids)[-1]
        token = int(row.argmax())
        ids.append(token)
        logprobs.append(float(row[token]))
    return ids[len(prompt) :], logprobs


def test_sequences_that_join_and_leave_a_running_batch_decode_as_if_alone(tiny: LoadedModel) -> None:
    engine = Engine(tiny.model, stop_ids=set(), temperature=0, max_rows=8)
    a, b, c, d, e = (
        Sequence(p, limit) for p, limit in zip(prompts(5, 37, 300, 12, 90), (20, 6, 15, 20, 3), strict=True)
    )
    finished: list[Sequence] = []
    assert engine.admit(a) and engine.admit(b)
    for _ in range(3):
        finished += engine.step()
    assert engine.admit(c)
    for _ in range(4):  # b finishes here, and c moves into its row
        finished += engine.step()
    assert b in finished and engine.running == [a, c]
    assert engine.admit(d) and engine.admit(e)
    while engine.running:
        finished += engine.step()
    assert len(finished) == 5
    for sequence in (a, b, c, d, e):
        tokens, logprobs = greedy(tiny, sequence.prompt, sequence.limit)
        assert sequence.tokens == tokens
        assert sequence.logprobs == pytest.approx(logprobs, abs=1e-4)
        assert sequence.finish_reason == "length"


def test_a_prompt_that_begins_like_a_running_sequence_reuses_its_cache(tiny: LoadedModel) -> None:
    engine = Engine(tiny.model, stop_ids=set(), temperature=0, max_rows=8)
    head, tail, other = prompts(120, 30, 40)
    first = Sequence(head + tail, 12)
    assert engine.admit(first) and engine.reused == 0
    for _ in range(4):
        engine.step()
    same = Sequence(head + tail, 12)  # a group's G episodes start from one prompt
    branch = Sequence(head + other, 12)  # the next turn of an env: the same instructions, another state
    follow = Sequence(head + tail + first.tokens[:3] + other[:5], 12)  # and a conversation that goes on
    short = Sequence(head[:10] + other, 12)  # too little in common to bother
    for sequence in (same, branch, follow, short):
        assert engine.admit(sequence)
    assert engine.reused == 149 + 120 + 153 and engine.prefilled == 150 + 1 + 40 + 5 + 50
    while engine.running:
        engine.step()
    for sequence in (first, same, branch, follow, short):
        tokens, logprobs = greedy(tiny, sequence.prompt, sequence.limit)
        assert sequence.tokens == tokens
        assert sequence.logprobs == pytest.approx(logprobs, abs=1e-4)


@pytest.mark.parametrize("temperature", [1.0, 0.7, 1.6])
def test_sampled_logprobs_are_the_models_at_the_sampling_temperature(tiny: LoadedModel, temperature: float) -> None:
    engine = Engine(tiny.model, stop_ids=set(), temperature=temperature, max_rows=4, seed=3)
    sequences = [Sequence(p, 12) for p in prompts(7, 64, 19)]
    for s in sequences:
        engine.admit(s)
    while engine.running:
        engine.step()
    for s in sequences:
        with torch.no_grad():
            logits = tiny.model(torch.tensor([s.prompt + s.tokens])).logits[0].float()
        row = torch.log_softmax(logits / temperature, dim=-1)  # the distribution each token was drawn from
        expected = [float(row[len(s.prompt) - 1 + k, t]) for k, t in enumerate(s.tokens)]
        assert s.logprobs == pytest.approx(expected, abs=1e-4)
        untempered = [float(torch.log_softmax(logits, -1)[len(s.prompt) - 1 + k, t]) for k, t in enumerate(s.tokens)]
        if temperature != 1.0:
            assert max(abs(a - b) for a, b in zip(s.logprobs, untempered, strict=True)) > 1e-3
    assert len({tuple(s.tokens) for s in sequences}) == 3


def test_a_bfloat16_model_samples_with_its_own_logprobs(tiny: LoadedModel) -> None:
    model = load_model("tiny", dtype=torch.bfloat16).model
    engine = Engine(model, stop_ids=set(), temperature=1.0, max_rows=4, seed=5)
    sequences = [Sequence(p, 10) for p in prompts(33, 8, 200)]
    for s in sequences:
        engine.admit(s)
    while engine.running:
        engine.step()
    assert engine.cache.keys[0].dtype == torch.bfloat16
    for s in sequences:
        with torch.no_grad():
            row = torch.log_softmax(model(torch.tensor([s.prompt + s.tokens])).logits[0].float(), dim=-1)
        expected = [float(row[len(s.prompt) - 1 + k, t]) for k, t in enumerate(s.tokens)]
        assert s.logprobs == pytest.approx(expected, abs=0.01)  # bf16: the cached path rounds a little differently


def test_a_stop_token_ends_a_turn(tiny: LoadedModel) -> None:
    (prompt,) = prompts(20)
    tokens, _ = greedy(tiny, prompt, 6)
    engine = Engine(tiny.model, stop_ids={tokens[3]}, temperature=0)
    sequence = Sequence(prompt, 6)
    engine.admit(sequence)
    while engine.running:
        engine.step()
    assert sequence.tokens == tokens[: tokens.index(tokens[3]) + 1] and sequence.finish_reason == "stop"


def test_a_one_token_turn_never_takes_a_row(tiny: LoadedModel) -> None:
    engine = Engine(tiny.model, stop_ids=set(), temperature=0)
    sequence = Sequence(prompts(9)[0], 1)
    assert not engine.admit(sequence)
    assert len(sequence.tokens) == 1 and sequence.finish_reason == "length" and not engine.running


def test_the_sampler_draws_from_the_distribution() -> None:
    engine = Engine(load_model("tiny").model, stop_ids=set(), temperature=1.0, top_p=1.0, seed=0)
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05, 0.0])
    logits = probs.clamp_min(1e-30).log().expand(40_000, -1)
    tokens, logprobs = engine.sample(logits)
    share = torch.bincount(tokens, minlength=5).float() / len(tokens)
    assert share.tolist() == pytest.approx(probs.tolist(), abs=0.01)
    assert share[4].item() == 0.0  # a token without mass is never drawn
    assert logprobs[tokens == 0].tolist() == pytest.approx([math.log(0.5)] * int((tokens == 0).sum()), abs=1e-5)


def test_top_p_keeps_the_smallest_set_over_p_and_reports_the_full_logprob() -> None:
    engine = Engine(load_model("tiny").model, stop_ids=set(), temperature=0.5, top_p=0.7, seed=0)
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    tokens, logprobs = engine.sample(p.log().expand(20_000, -1))
    # At T = 0.5 the distribution is p^2 / sum(p^2) = [0.25, 0.09, 0.0225, 0.0025] / 0.365: 0.685 alone is
    # under 0.7, so the first two stay, and are drawn 0.25 : 0.09.
    share = torch.bincount(tokens, minlength=4).float() / len(tokens)
    assert share.tolist() == pytest.approx([0.25 / 0.34, 0.09 / 0.34, 0.0, 0.0], abs=0.015)
    drawn = int((tokens == 1).sum())
    assert logprobs[tokens == 1].tolist() == pytest.approx([math.log(0.09 / 0.365)] * drawn, abs=1e-5)


def test_the_cdf_keeps_the_tail_of_a_large_vocabulary() -> None:
    vocabulary = 150_000
    probs = torch.full((1, vocabulary), 2e-8)
    probs[0, 0] = 1 - 2e-8 * (vocabulary - 1)  # the tail: masses far below float32's step near 1.0
    masses = torch.diff(cumulative(probs), dim=-1)[0]
    assert masses.dtype == torch.float64
    assert torch.allclose(masses, torch.full_like(masses, 2e-8), rtol=1e-4, atol=0)
    float32 = torch.diff(probs.cumsum(dim=-1), dim=-1)[0]  # what a float32 CDF would give them
    # near 1.0 float32 steps by 6e-8: each tail mass comes out as 0 or a whole step, wrong by 100% or more
    assert ((float32.double() - 2e-8).abs() / 2e-8).min() >= 0.99
    # and the sampler draws from the float64 one: a draw in the tail lands on the tail token it points at
    head = 1 - 2e-8 * (vocabulary - 1)
    uniforms = torch.tensor([[0.5], [head + 2e-8 * 1000.5], [head + 2e-8 * 120_000.5]], dtype=torch.float64)
    assert inverse_cdf(probs.expand(3, -1), uniforms).tolist() == [0, 1001, 120_001]


def test_a_zero_temperature_is_greedy() -> None:
    engine = Engine(load_model("tiny").model, stop_ids=set(), temperature=0)
    logits = torch.tensor([[0.1, 2.0, -1.0], [3.0, 0.0, 0.0]])
    tokens, logprobs = engine.sample(logits)
    assert tokens.tolist() == [1, 0]
    assert logprobs.tolist() == pytest.approx(torch.log_softmax(logits, -1)[[0, 1], [1, 0]].tolist())


@pytest.mark.parametrize(
    ("prompt", "limit", "fragment"),
    [([], 4, "empty"), ([5] * 10, 0, "at least 1"), ([5] * 60, 5, "context of 64")],
)
def test_requests_that_cannot_run_are_refused(tiny: LoadedModel, prompt: list[int], limit: int, fragment: str) -> None:
    engine = Engine(tiny.model, stop_ids=set(), max_context=64)
    with pytest.raises(EngineError, match=fragment):
        engine.check(Sequence(prompt, limit))
    assert not engine.running and engine.cache.rows == 0


PER_POSITION = 2 * 2 * 2 * 16 * 4  # k and v, 2 layers, 2 kv heads, head_dim 16, float32


def test_the_kv_budget_and_the_rows_bound_admission(tiny: LoadedModel) -> None:
    engine = Engine(tiny.model, stop_ids=set(), max_rows=8, kv_cache_gib=8 * 256 * PER_POSITION / 2**30)
    assert engine.cache.bytes_per_position == PER_POSITION
    with pytest.raises(EngineError, match="budget"):
        engine.check(Sequence([5] * 2000, 100))
    first, second = Sequence(prompts(100)[0], 50), Sequence(prompts(150)[0], 50)
    assert engine.fits(first) and engine.admit(first)
    assert engine.fits(second)  # 8 rows of 256 positions fit the budget
    assert engine.fits(Sequence([5] * 300, 10))  # and so do 2 rows of 512
    engine.max_rows = 1
    assert not engine.fits(second)


def test_no_allocation_passes_a_budget_that_is_not_a_whole_number_of_steps(tiny: LoadedModel) -> None:
    budget = 3 * 300 * PER_POSITION + 123  # 3 rows of 300 positions and change: no whole growth step
    engine = Engine(tiny.model, stop_ids=set(), temperature=0, max_rows=8, kv_cache_gib=budget / 2**30)
    first = Sequence(prompts(200)[0], 80)  # 280 positions: a whole step of 512 would be over the budget
    assert engine.admit(first) and engine.cache.bytes <= budget
    assert engine.cache.positions >= 280
    for n in (30, 60, 90):
        sequence = Sequence(prompts(n)[0], 40)
        if engine.fits(sequence):
            assert engine.admit(sequence) and engine.cache.bytes <= budget
    assert len(engine.running) == 3  # as many as the budget holds at 280 positions: 3 x 280 x bytes <= budget
    assert not engine.fits(Sequence(prompts(10)[0], 10))
    while engine.running:
        engine.step()
        assert engine.cache.bytes <= budget


def test_a_longer_request_is_placed_as_soon_as_the_budget_holds_it(tiny: LoadedModel) -> None:
    engine = Engine(tiny.model, stop_ids=set(), temperature=0, max_rows=8, kv_cache_gib=8 * 256 * PER_POSITION / 2**30)
    short = [Sequence(p, 30) for p in prompts(20, 25)]
    for sequence in short:
        assert engine.admit(sequence)
    assert (engine.cache.rows, engine.cache.positions) == (8, 256)  # the whole budget, in short rows
    long = Sequence(prompts(600)[0], 20)  # 3 rows of 620+ positions: the rows shrink to make room
    assert engine.fits(long) and engine.admit(long)
    assert engine.cache.positions >= 620 and engine.cache.bytes <= engine.budget
    while engine.running:
        engine.step()
    for sequence in (*short, long):
        tokens, logprobs = greedy(tiny, sequence.prompt, sequence.limit)
        assert sequence.tokens == tokens and sequence.logprobs == pytest.approx(logprobs, abs=1e-4)


def test_a_failed_allocation_leaves_the_running_batch_as_it_was(
    tiny: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = Engine(tiny.model, stop_ids=set(), temperature=0, max_rows=8)
    running = Sequence(prompts(40)[0], 12)
    assert engine.admit(running)
    engine.step()
    shape = (engine.cache.rows, engine.cache.positions)
    zeros, made = torch.zeros, []

    def failing_zeros(*args: object, **kwargs: object) -> torch.Tensor:
        made.append(1)
        if len(made) == 3:  # half-way through re-laying the cache's layers
            raise RuntimeError("out of memory")
        return zeros(*args, **kwargs)  # type: ignore[call-overload, no-any-return]

    monkeypatch.setattr(torch, "zeros", failing_zeros)
    with pytest.raises(RuntimeError, match="out of memory"):
        engine.cache.resize(16, 768, 1, running.length)
    monkeypatch.setattr(torch, "zeros", zeros)
    assert (engine.cache.rows, engine.cache.positions) == shape and engine.running == [running]
    assert all(t.shape[0] == shape[0] and t.shape[2] == shape[1] for t in engine.cache.keys + engine.cache.values)
    while engine.running:
        engine.step()
    tokens, logprobs = greedy(tiny, running.prompt, running.limit)
    assert running.tokens == tokens and running.logprobs == pytest.approx(logprobs, abs=1e-4)


def test_stop_tokens_come_from_the_generation_config(tiny: LoadedModel) -> None:
    model = load_model("tiny").model
    model.generation_config.eos_token_id = [7, 11]
    assert stop_token_ids(model, tiny.tokenizer) == {7, 11, tiny.tokenizer.eos_token_id}
    model.generation_config.eos_token_id = None
    assert stop_token_ids(model, tiny.tokenizer) == {tiny.tokenizer.eos_token_id}


async def test_the_generator_serves_more_requests_than_rows(tiny: LoadedModel) -> None:
    generator = HFGenerator(tiny.model, tiny.tokenizer, Sampling(temperature=0, max_new_tokens=5), max_concurrency=3)
    try:
        batch = prompts(*range(4, 40, 3))
        completions = await asyncio.gather(*(generator.generate(p) for p in batch))
    finally:
        await generator.aclose()
    for prompt, completion in zip(batch, completions, strict=True):
        tokens, logprobs = greedy(tiny, prompt, 5)
        assert completion.token_ids == tokens and completion.logprobs == pytest.approx(logprobs, abs=1e-4)
        assert completion.finish_reason == "length"


async def test_new_weights_load_between_steps_and_tag_what_follows(tiny: LoadedModel) -> None:
    """Asynchronous training: the generator samples on a copy of the learner's model, and each new
    policy is copied in while a long request is mid-decode; a request admitted after it samples the
    new weights, carries the new version, and shares no cache with a row of the old weights."""
    learner = tiny_model(tiny.tokenizer, seed=1)
    generator = HFGenerator(copy.deepcopy(tiny.model), tiny.tokenizer, Sampling(temperature=0, max_new_tokens=6))
    try:
        head = prompts(60)[0]
        running = asyncio.ensure_future(generator.generate(head, 1500))  # still decoding through the swap
        await asyncio.sleep(0.2)
        reused = generator.engine.reused
        await generator.load_weights(learner, 7)
        assert not running.done()
        after = await generator.generate([*head, 11, 12])  # shares 60 tokens with the running row
        assert after.policy_version == 7 and generator.engine.reused == reused  # the old row's cache is not reused
        new = LoadedModel(learner, tiny.tokenizer, "tiny", "tiny")
        tokens, logprobs = greedy(new, [*head, 11, 12], 6)
        assert after.token_ids == tokens and after.logprobs == pytest.approx(logprobs, abs=1e-4)
        assert (await running).policy_version == 0  # its first token's version: the oldest
        with pytest.raises(ValueError, match="another model object"):
            await generator.load_weights(generator.engine.model, 8)
    finally:
        await generator.aclose()
    with pytest.raises(GenerationError, match="closed"):
        await generator.load_weights(learner, 8)


async def test_a_cancelled_request_leaves_the_batch(tiny: LoadedModel) -> None:
    generator = HFGenerator(tiny.model, tiny.tokenizer, Sampling(temperature=0), max_concurrency=2)
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(generator.generate(prompts(30)[0], 2000), timeout=0.3)
        # The cancelled request is dropped before anything that arrives after it is admitted.
        short = await generator.generate(prompts(10)[0], 4)
        assert len(short.token_ids) == 4
        assert generator.cancelled == 1 and not generator.engine.running
        assert generator.engine.steps < 2000  # it stopped early, not after decoding its 2,000 tokens
    finally:
        await generator.aclose()


async def test_bad_requests_and_a_closed_generator_are_clear_errors(tiny: LoadedModel) -> None:
    generator = HFGenerator(tiny.model, tiny.tokenizer, Sampling(max_new_tokens=8), max_context=32)
    with pytest.raises(GenerationError, match="context of 32"):
        await generator.generate([5] * 30)
    with pytest.raises(GenerationError, match="empty"):
        await generator.generate([])
    await generator.aclose()
    generator = HFGenerator(tiny.model, tiny.tokenizer, Sampling(max_new_tokens=8))
    pending = asyncio.ensure_future(generator.generate([5] * 4, 3000))
    await asyncio.sleep(0.1)
    await generator.aclose()
    with pytest.raises(GenerationError, match="closed"):
        await pending
    with pytest.raises(GenerationError, match="closed"):
        await generator.generate([5] * 4)


def test_the_cache_never_grows_past_the_budget(tiny: LoadedModel) -> None:
    per_position = tiny.model.config.num_hidden_layers * 2 * 2 * 16 * 4
    engine = Engine(tiny.model, stop_ids=set(), max_rows=8, kv_cache_gib=2 * 256 * per_position / 2**30)
    assert engine.admit(Sequence(prompts(100)[0], 50))
    assert (engine.cache.rows, engine.cache.positions) == (2, 256)  # not the 8 rows a growth step would add
    assert engine.fits(Sequence(prompts(90)[0], 50)) and not engine.fits(Sequence([5] * 300, 10))
