"""The learner step on the tiny model: reward shaping, faulted episodes, the global token-mean across
micro-batches, old log-probs, and that a step moves the policy the way the advantages say."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Sequence
from typing import Any

import pytest
import torch

from shared.models import load_model
from shared.rollout_wire import GroupRecord, SamplingSettings, StepSample, Trajectory
from trainer.algorithms import make
from trainer.learner import Learner, LearnerConfig, response_logprobs, shape


@pytest.fixture(scope="module")
def tiny() -> Any:
    return load_model("tiny")


def step_sample(
    n: int, prompt: list[int], response: list[int], *, valid: bool = True, done: bool = False
) -> StepSample:
    return StepSample(
        step=n,
        policy_version=0,
        prompt_token_ids=prompt,
        response_token_ids=response,
        sampler_logprobs=[-1.0] * len(response),
        action="inc",
        valid=valid,
        env_reward=0.0,
        won=False,
        done=done,
        finish_reason="stop",
    )


def episode(
    turns: Sequence[tuple[list[int], list[int], bool]], won: bool, *, fault: bool = False, reward: float = 0.0
) -> Trajectory:
    steps = [step_sample(i, p, r, valid=v, done=i == len(turns) - 1) for i, (p, r, v) in enumerate(turns)]
    return Trajectory(
        episode_id=uuid.uuid4().hex,
        steps=steps,
        end="fault" if fault else "done",
        fault="EnvServiceError: gone" if fault else None,
        won=won,
        env_reward=reward,
    )


def group(env: str, episodes: list[Trajectory]) -> GroupRecord:
    return GroupRecord(
        group_id=uuid.uuid4().hex,
        env=env,
        task_id=f"{env}/train/0",
        task="heat some egg and put it in garbagecan",
        task_type="pick_heat_then_place_in_recep" if env == "alfworld" else None,
        data_source="nq" if env == "searchqa" else None,
        policy_version=0,
        sampling=SamplingSettings(temperature=1.0, top_p=1.0, max_new_tokens=16),
        logprobs_mode="processed_logprobs",
        backend="hf",
        episodes=episodes,
        usable=sum(e.usable for e in episodes),
        created_at=0.0,
    )


def varied_groups(seed: int = 0) -> list[GroupRecord]:
    """Two ALFWorld groups whose samples differ in prompt and response length (so splits matter)."""
    g = torch.Generator().manual_seed(seed)

    def ids(n: int) -> list[int]:
        return torch.randint(3, 2000, (n,), generator=g).tolist()

    out = []
    for _ in range(2):
        eps = []
        for k in range(4):
            turns = [(ids(5 + 3 * k + t), ids(2 + 4 * ((k + t) % 3)), (k + t) % 4 != 0) for t in range(2)]
            eps.append(episode(turns, won=k % 2 == 0))
        out.append(group("alfworld", eps))
    return out


def test_rewards_are_shaped_as_the_reference() -> None:
    alf = group(
        "alfworld", [episode([([1], [2], True), ([1], [2], False)], won=True), episode([([1], [2], True)], won=False)]
    )
    scores = [s.score for s in shape([alf]).samples]
    assert scores == pytest.approx([10.0, 10.0 - 0.1, 0.0])  # 10 x won, minus 0.1 on the invalid step only
    qa = group(
        "searchqa",
        [episode([([1], [2], False), ([1], [2], True)], won=True, reward=1.0), episode([([1], [2], True)], won=False)],
    )
    assert [s.score for s in shape([qa]).samples] == pytest.approx([1.0 - 0.01, 1.0, 0.0])  # exact match; 0.01
    counter = group(
        "counter", [episode([([1], [2], True)], won=True, reward=0.5), episode([([1], [2], False)], won=False)]
    )
    assert [s.score for s in shape([counter]).samples] == pytest.approx([0.5, -0.1])  # another env: its own reward
    assert [s.score for s in shape([counter], invalid_penalty=0.0).samples] == pytest.approx([0.5, 0.0])


def test_faulted_episodes_and_thin_groups_never_reach_the_loss(tiny: Any) -> None:
    clean = varied_groups()
    faulted = [g.model_copy(deep=True) for g in clean]
    faulted[0].episodes.append(episode([([7] * 40, [9] * 30, True)], won=True, fault=True))
    faulted[0].usable = 4
    thin = group(
        "alfworld", [episode([([5], [6], True)], won=True), episode([([5], [6], True)], won=False, fault=True)]
    )
    batch = shape([*faulted, thin])
    assert batch.faulted == 2 and batch.dropped_groups == 1 and len(batch.samples) == len(shape(clean).samples)

    def grads(groups: list[GroupRecord]) -> list[torch.Tensor]:
        model = copy.deepcopy(tiny.model)
        learner = Learner(model, make({"type": "grpo", "kl_coef": 0.0}), LearnerConfig())
        p = learner.prepare(groups, 0)
        learner.backward(p, p.minis[0])
        return [q.grad.clone() for q in model.parameters() if q.grad is not None]

    for a, b in zip(grads(clean), grads([*faulted, thin]), strict=True):
        assert torch.allclose(a, b, atol=1e-7)


@pytest.mark.parametrize("algorithm", ["grpo", "sdar"])
def test_the_update_does_not_depend_on_the_micro_batch_split(tiny: Any, algorithm: str) -> None:
    from trainer.teacher import LocalTeacher

    groups = varied_groups()
    longest = max(len(s.prompt) + len(s.response) for s in shape(groups).samples)

    def grads(budget: int, aggregation: str = "global") -> tuple[int, list[torch.Tensor]]:
        model = copy.deepcopy(tiny.model)
        teacher = LocalTeacher(model, tiny.tokenizer, "tiny")
        config = LearnerConfig(micro_batch_tokens=budget, aggregation=aggregation)  # type: ignore[arg-type]
        learner = Learner(model, make({"type": algorithm}), config, ref_model=tiny.model, teacher=teacher)
        p = learner.prepare(groups, 0)
        from trainer.learner import micro_batches

        lengths = [s.length for s in p.batch.samples]
        count = len(list(micro_batches(p.minis[0], lengths, budget, True)))
        learner.backward(p, p.minis[0])
        return count, [q.grad.clone() for q in model.parameters() if q.grad is not None]

    n1, one = grads(100_000)
    n2, two = grads(longest * 8)
    n5, five = grads(longest * 3)
    assert (n1, n2) == (1, 2) and n5 >= 5
    for a, b, c in zip(one, two, five, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4) and torch.allclose(a, c, atol=1e-6, rtol=1e-4)
    _, legacy = grads(longest * 3, "legacy")  # the reference's mean of micro-batch means: split-dependent
    assert not all(torch.allclose(a, b, atol=1e-6, rtol=1e-4) for a, b in zip(one, legacy, strict=True))
    _, legacy_one = grads(100_000, "legacy")  # ... and the same as ours with a single micro-batch
    assert all(torch.allclose(a, b, atol=1e-6, rtol=1e-4) for a, b in zip(one, legacy_one, strict=True))


def test_a_step_raises_what_the_advantages_favour_and_lowers_the_rest(tiny: Any) -> None:
    model = copy.deepcopy(tiny.model)
    good, bad = [4, 5, 6, 7], [8, 9, 10, 11]
    prompt = [1, 20, 30, 40]
    groups = [group("alfworld", [episode([(prompt, good, True)], won=True), episode([(prompt, bad, True)], won=False)])]
    learner = Learner(model, make({"type": "grpo"}), LearnerConfig(lr=1e-3), ref_model=tiny.model)
    samples = shape(groups).samples

    def logprob_sums() -> list[float]:
        with torch.no_grad():
            lp, _, mask = response_logprobs(model, samples, with_entropy=False)
        return (lp * mask).sum(1).tolist()

    before = logprob_sums()
    metrics = learner.step(groups, 0)
    after = logprob_sums()
    assert after[0] > before[0] + 0.01 and after[1] < before[1] - 0.01
    # one mini-batch: the old log-probs are the first forward's, so the ratio is exactly 1
    assert metrics["actor/ppo_kl"] == 0.0 and metrics["actor/pg_clipfrac"] == 0.0
    for name in ("actor/pg_loss", "actor/entropy", "actor/kl_loss", "actor/grad_norm", "actor/lr", "critic/score/mean"):
        assert name in metrics
    assert metrics["episode/success_rate"] == 0.5 and metrics["training/samples"] == 2


def test_old_logprobs_of_later_mini_batches_are_recomputed_before_the_first_update(tiny: Any) -> None:
    model = copy.deepcopy(tiny.model)
    groups = varied_groups()
    learner = Learner(model, make({"type": "grpo", "kl_coef": 0.0}), LearnerConfig(mini_batch_size=4))
    p = learner.prepare(groups, 0)
    samples = p.batch.samples
    assert len(p.minis) == 4 and set(p.old) == {i for mini in p.minis[1:] for i in mini}
    with torch.no_grad():
        for i in p.minis[1]:
            lp, _, _ = response_logprobs(model, [samples[i]], with_entropy=False)
            assert torch.allclose(p.old[i], lp[0], atol=1e-5)
    sampler = Learner(
        copy.deepcopy(tiny.model), make({"type": "grpo", "kl_coef": 0.0}), LearnerConfig(old_logprobs="sampler")
    )
    q = sampler.prepare(groups, 0)
    assert all(torch.equal(q.old[i], torch.tensor(s.sampler_logprobs)) for i, s in enumerate(q.batch.samples))
    metrics = sampler.step(groups, 0)
    assert metrics["training/rollout_probs_diff_mean"] > 0 and metrics["training/rollout_mismatch_kl"] > 0


def test_a_learner_refuses_an_algorithm_without_its_signals(tiny: Any) -> None:
    with pytest.raises(ValueError, match="needs the initial policy"):
        Learner(tiny.model, make({"type": "grpo"}), LearnerConfig())
    with pytest.raises(ValueError, match="needs a teacher"):
        Learner(tiny.model, make({"type": "sdar"}), LearnerConfig(), ref_model=tiny.model)


def test_the_mismatch_is_zero_when_the_sampler_and_learner_agree(tiny: Any) -> None:
    groups = varied_groups()
    with torch.no_grad():
        for g in groups:  # give every step the learner's own log-probs as the sampler's
            for e in g.episodes:
                for s in e.steps:
                    sample = shape(
                        [group("alfworld", [episode([(s.prompt_token_ids, s.response_token_ids, True)], True)] * 2)]
                    )
                    lp, _, _ = response_logprobs(tiny.model, sample.samples[:1], with_entropy=False)
                    s.sampler_logprobs = lp[0].tolist()
    learner = Learner(
        copy.deepcopy(tiny.model), make({"type": "grpo", "kl_coef": 0.0}), LearnerConfig(mini_batch_size=5, lr=1e-3)
    )
    metrics = learner.step(groups, 0)
    assert metrics["training/rollout_probs_diff_mean"] < 1e-5 and abs(metrics["training/rollout_mismatch_kl"]) < 1e-6
    assert metrics["actor/ppo_kl"] != 0.0  # later mini-batches ran after an update: their ratio moved


def test_chunked_logits_give_the_same_logprobs_entropy_and_update(tiny: Any) -> None:
    """Logits made a few positions at a time (and recomputed in backward) change nothing but memory."""
    groups = varied_groups(seed=3)
    samples = shape(groups).samples
    samples[1].temperature = 0.7  # each position divides by its own sample's temperature

    def run(chunk: int) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        model = copy.deepcopy(tiny.model)
        lp, entropy, mask = response_logprobs(model, samples, with_entropy=True, logits_chunk=chunk)
        assert entropy is not None
        ((lp * mask).sum() + 0.3 * (entropy * mask).sum()).backward()  # type: ignore[no-untyped-call]
        return lp.detach(), entropy.detach(), [q.grad.clone() for q in model.parameters() if q.grad is not None]

    whole_lp, whole_entropy, whole_grads = run(0)
    total = sum(len(s.response) for s in samples)
    for chunk in (1, 5, total - 1):
        lp, entropy, grads = run(chunk)
        assert torch.allclose(lp, whole_lp, atol=1e-5) and torch.allclose(entropy, whole_entropy, atol=1e-5)
        for a, b in zip(grads, whole_grads, strict=True):  # float32 sums in another order: 1e-6 relative
            assert float((a - b).norm() / b.norm()) < 1e-5
    with torch.no_grad():
        lp, _, _ = response_logprobs(tiny.model, samples[1:2], with_entropy=False, logits_chunk=2)
    one = samples[1]
    ids = torch.tensor([one.prompt + one.response])
    logits = tiny.model(ids).logits[0, len(one.prompt) - 1 : -1].float() / 0.7
    expected = torch.log_softmax(logits, -1).gather(1, torch.tensor(one.response)[:, None]).squeeze(1)
    assert torch.allclose(lp[0], expected.detach(), atol=1e-5)  # the log-probs themselves, at T 0.7


def test_gradient_checkpointing_changes_memory_not_the_update(tiny: Any) -> None:
    groups = varied_groups(seed=4)

    def grads(checkpointing: bool) -> list[torch.Tensor]:
        model = copy.deepcopy(tiny.model)
        config = LearnerConfig(gradient_checkpointing=checkpointing)
        learner = Learner(model, make({"type": "grpo", "kl_coef": 0.0}), config)
        assert model.is_activation_checkpointing == checkpointing
        p = learner.prepare(groups, 0)
        model.train()
        learner.backward(p, p.minis[0])
        return [q.grad.clone() for q in model.parameters() if q.grad is not None]

    for a, b in zip(grads(True), grads(False), strict=True):
        assert float((a - b).norm() / b.norm()) < 1e-5


def test_off_policy_samples_weigh_their_policy_gradient_by_truncated_importance_sampling(tiny: Any) -> None:
    """Samples a policy `k` versions older drew: each policy-gradient token is weighed by
    `min(pi_old / mu, cap)`. With the sampler's log-probs set to the learner's own minus `log c`, every
    weight is `c` (or the cap), so the policy-gradient part of the gradient scales by exactly that."""
    groups = varied_groups()
    samples = shape(groups).samples
    with torch.no_grad():
        own = [response_logprobs(tiny.model, [s], with_entropy=False)[0][0] for s in samples]
    algorithm = make({"type": "grpo", "kl_coef": 0.0, "entropy_coef": 0.0})  # the gradient is the PG term's alone

    def grads(c: float, *, stale: bool, cap: float = 2.0, correction: str = "truncate") -> list[torch.Tensor]:
        held = copy.deepcopy(groups)
        lps = iter(own)
        for g in held:
            for e in g.episodes:
                for s in e.steps:
                    s.sampler_logprobs = (next(lps) - torch.log(torch.tensor(c))).tolist()
                    s.policy_version = 3 if stale else 5
        model = copy.deepcopy(tiny.model)
        config = LearnerConfig(is_cap=cap, is_correction=correction)  # type: ignore[arg-type]
        learner = Learner(model, algorithm, config)
        p = learner.prepare(held, 0, policy_version=5)
        learner.backward(p, p.minis[0])
        return [q.grad.clone() for q in model.parameters() if q.grad is not None]

    def scaled(a: list[torch.Tensor], b: list[torch.Tensor], factor: float) -> bool:
        return all(torch.allclose(x * factor, y, atol=1e-7, rtol=1e-4) for x, y in zip(a, b, strict=True))

    on_policy = grads(1.5, stale=False)  # the sampler's log-probs play no part on-policy
    assert scaled(on_policy, grads(1.0, stale=False), 1.0)
    assert scaled(on_policy, grads(1.5, stale=True), 1.5)  # weight 1.5 on every token
    assert scaled(on_policy, grads(3.0, stale=True), 2.0)  # 3.0, truncated at the cap
    assert scaled(on_policy, grads(3.0, stale=True, cap=4.0), 3.0)
    assert scaled(on_policy, grads(3.0, stale=True, correction="none"), 1.0)


def test_a_step_reports_staleness_and_the_importance_weights(tiny: Any) -> None:
    groups = varied_groups()
    for version, g in zip((2, 3), groups, strict=True):  # one group a version behind the learner's 3
        for e in g.episodes:
            for s in e.steps:
                s.policy_version = version
                s.sampler_logprobs = [-30.0] * len(s.response_token_ids)  # far below the learner's: over the cap
    learner = Learner(copy.deepcopy(tiny.model), make({"type": "grpo", "kl_coef": 0.0}), LearnerConfig(is_cap=1.5))
    metrics = learner.step(groups, 0, policy_version=3)
    stale = sum(len(e.steps) for e in groups[0].episodes) / sum(len(e.steps) for g in groups for e in g.episodes)
    assert metrics["off_policy/stale_sample_ratio"] == pytest.approx(stale)
    assert metrics["off_policy/staleness_max"] == 1.0
    assert metrics["off_policy/staleness_mean"] == pytest.approx(stale)
    assert metrics["off_policy/is_weight_mean"] == 1.5 and metrics["off_policy/is_truncated_ratio"] == 1.0
    plain = Learner(copy.deepcopy(tiny.model), make({"type": "grpo", "kl_coef": 0.0}), LearnerConfig()).step(groups, 0)
    assert not any(k.startswith("off_policy/") for k in plain)  # no policy version: nothing is off-policy
    with pytest.raises(ValueError, match="newer than the learner's 2"):
        learner.step(groups, 1, policy_version=2)
    hot = groups[0].sampling.model_copy(update={"temperature": 0.7})
    raw = [g.model_copy(update={"logprobs_mode": "raw_logprobs", "sampling": hot}) for g in groups]
    with pytest.raises(ValueError, match=r"raw .* sampler log-probs"):
        learner.step(raw, 1, policy_version=3)
