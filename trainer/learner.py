"""The learner: one training step over a batch of groups, top to bottom (sdar.md §4).

1. Flatten the groups into step-samples; faulted episodes never enter, nor groups left with fewer than
   two usable episodes.
2. Shape rewards as the reference: the episode's reward (ALFWorld and WebShop `10 * won`, Search-QA the
   exact match, other envs the last env reward) minus the step's own invalid-action penalty (0.1;
   Search-QA 0.01).
3. GRPO advantages over all step-samples of a group.
4. Signals before any update, without gradient: the initial policy's log-probs (when the algorithm
   has a KL term), the teacher's under the privileged prompt (when it needs one), and the old
   log-probs recomputed with the current weights (or the sampler's, `old_logprobs="sampler"`). The
   first mini-batch's old log-probs are its own first forward, the weights not having moved yet;
   only later mini-batches are recomputed up front. The sampler/learner mismatch is logged.
   Samples an older policy drew (asynchronous training, `policy_version` given) weigh their
   policy-gradient tokens by truncated importance sampling against the sampler's log-probs
   (`is_correction`, `is_cap`); on-policy samples keep weight 1, so synchronous training is the
   reference's arithmetic.
5. Mini-batches of `mini_batch_size` step-samples (a seeded shuffle per step), one optimizer step
   each, each cut into micro-batches of at most `micro_batch_tokens` padded tokens (sorted by length,
   so little goes to padding). The token-mean is global over the mini-batch: every micro-batch's sums
   are divided by the mini-batch's token count, so the update does not depend on the split
   (`aggregation="legacy"` reproduces the reference's scaled mean of micro-batch means).
6. AdamW with gradient clipping; the statistics under verl's names.

Checkpointing, acknowledging the groups and publishing the new weights are the caller's
(`trainer/run.py`), in that order.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch.nn.utils.rnn import pad_sequence
from torch.utils.checkpoint import checkpoint

from shared.model_specs import body
from shared.rollout_wire import GroupRecord
from trainer import losses
from trainer.adapters import base_only, is_adapted
from trainer.algorithms import Algorithm, Signals
from trainer.teacher import Query, Teacher

LOGITS_CHUNK = 1024
"""Response positions whose logits are made at once, by default (`LearnerConfig.logits_chunk`)."""

WON_REWARD_ENVS = {"alfworld": 10.0, "webshop": 10.0}
"""Envs whose episode reward is `scale * won` (the reference's env packages)."""
INVALID_PENALTY = {"searchqa": 0.01}
"""Invalid-action penalty per env; 0.1 for the rest (`apply_invalid_action_penalty`)."""
DEFAULT_INVALID_PENALTY = 0.1
WEIGHT_SUM, STALE_TOKENS, TRUNCATED_TOKENS = "_is/weight_sum", "_is/stale_tokens", "_is/truncated_tokens"
"""Raw sums over the off-policy tokens that `Learner.backward` hands `Learner.step` (not metrics)."""


class LearnerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lr: float = Field(default=1e-6, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_steps: int = Field(default=0, ge=0)
    """Linear warm-up of the learning rate over this many training steps, then constant (the
    scheduler steps once a training step, however many mini-batches it has, as verl's actor). Step
    `n` (from 0) trains at `lr * (n + 1) / warmup_steps`: the first is not wasted at 0, as it is
    under transformers' `get_constant_schedule_with_warmup`."""
    grad_clip: float = Field(default=1.0, gt=0)
    mini_batch_size: int = Field(default=256, ge=1)
    """Step-samples per optimizer step (`ppo_mini_batch_size`)."""
    micro_batch_tokens: int = Field(default=8192, ge=1)
    """Padded tokens (prompt and response) per forward pass; a longer sample goes alone."""
    old_logprobs: Literal["recompute", "sampler"] = "recompute"
    aggregation: Literal["global", "legacy"] = "global"
    bucket: bool = True
    """Sort each mini-batch by length before cutting micro-batches (less padding)."""
    invalid_penalty: float | None = Field(default=None, ge=0)
    """Default: the env's (`INVALID_PENALTY`)."""
    logits_chunk: int = Field(default=LOGITS_CHUNK, ge=0)
    """Response positions whose vocabulary logits are made at once, each chunk recomputed in the
    backward pass rather than kept (0: all of a micro-batch's at once, and kept)."""
    gradient_checkpointing: bool = False
    """Keep only each layer's input for the backward pass and recompute the rest (Hugging Face's
    gradient checkpointing): much less memory for about one more forward pass of time."""
    autocast: Literal["none", "bfloat16"] = "none"
    """Run the learner's forward passes under bfloat16 autocast (weights and optimizer stay float32)."""
    is_correction: Literal["truncate", "none"] = "truncate"
    """For samples an older policy drew (asynchronous training): `truncate` weighs each of their
    policy-gradient tokens by `min(pi_old / mu, is_cap)`, `pi_old` the recomputed old log-prob and
    `mu` the sampler's (token-level truncated IS); `none` trains them as if on-policy. With
    `old_logprobs="sampler"` the PPO ratio is already taken against mu and no weight applies."""
    is_cap: float = Field(default=2.0, gt=0)
    """The importance weights' cap (verl's and ms-swift's default threshold, 2.0)."""
    sharding: Literal["replicate", "fsdp"] = "replicate"
    """On several processes (torchrun): `replicate` keeps a whole copy of the weights and the
    optimizer on each and sums the gradients; `fsdp` shards them over the processes (FSDP2,
    `trainer/sharding.py`), the first process keeping a whole copy of the weights for generation,
    evaluation and checkpoints. Alone, both are the same."""
    seed: int = 0


@dataclass
class Sample:
    """One step-sample, shaped for the loss."""

    prompt: list[int]
    response: list[int]
    sampler_logprobs: list[float]
    score: float
    group: str
    query: Query
    valid: bool
    temperature: float = 1.0
    """The sampling temperature: the learner's log-probs are `log_softmax(logits / temperature)`, the
    quantity the sampler reported (verl divides the logits the same way); 0 (greedy) counts as 1."""
    policy_version: int = 0
    """The policy version that sampled it (its first token's)."""
    processed_logprobs: bool = True
    """Whether `sampler_logprobs` are after temperature, comparable with the learner's (always at
    temperature 1; not for vLLM's default `raw_logprobs` at another temperature)."""

    @property
    def length(self) -> int:
        return len(self.prompt) + len(self.response)


@dataclass
class Batch:
    """What a step trains on, and what it dropped."""

    samples: list[Sample] = field(default_factory=list)
    episodes: int = 0
    won: int = 0
    faulted: int = 0
    dropped_groups: int = 0


def episode_reward(env: str, won: bool, env_reward: float) -> float:
    if env in WON_REWARD_ENVS:
        return WON_REWARD_ENVS[env] * float(won)
    return env_reward


def shape(groups: Sequence[GroupRecord], invalid_penalty: float | None = None) -> Batch:
    """Step-samples with the reference's shaped scores; faulted episodes and groups with fewer than two
    usable episodes are left out (and counted)."""
    batch = Batch()
    for group in groups:
        usable = [e for e in group.episodes if e.usable]
        batch.faulted += len(group.episodes) - len(usable)
        if len(usable) < 2:
            batch.dropped_groups += 1
            continue
        penalty = (
            INVALID_PENALTY.get(group.env, DEFAULT_INVALID_PENALTY) if invalid_penalty is None else invalid_penalty
        )
        labels = {k: v for k in ("task_type", "category", "data_source") if (v := getattr(group, k)) is not None}
        for episode in usable:
            batch.episodes += 1
            batch.won += episode.won
            reward = episode_reward(group.env, episode.won, episode.env_reward)
            for s in episode.steps:
                if not s.response_token_ids:
                    continue  # nothing was sampled: no token to train
                batch.samples.append(
                    Sample(
                        prompt=s.prompt_token_ids,
                        response=s.response_token_ids,
                        sampler_logprobs=s.sampler_logprobs,
                        score=reward - penalty * (not s.valid),
                        group=group.group_id,
                        query=Query(s.prompt_token_ids, s.response_token_ids, group.env, group.task, labels),
                        valid=s.valid,
                        temperature=group.sampling.temperature or 1.0,
                        policy_version=s.policy_version,
                        processed_logprobs=group.logprobs_mode == "processed_logprobs"
                        or group.sampling.temperature in (0.0, 1.0),
                    )
                )
    return batch


def micro_batches(indices: Sequence[int], lengths: Sequence[int], budget: int, bucket: bool) -> Iterator[list[int]]:
    """Cut `indices` into runs whose padded size (rows x longest) stays within `budget` tokens; with
    `bucket`, longest first so that neighbours have similar lengths."""
    order = sorted(indices, key=lambda i: -lengths[i]) if bucket else list(indices)
    current: list[int] = []
    longest = 0
    for i in order:
        if current and (len(current) + 1) * max(longest, lengths[i]) > budget:
            yield current
            current, longest = [], 0
        current.append(i)
        longest = max(longest, lengths[i])
    if current:
        yield current


def padded(rows: Sequence[Any], device: torch.device) -> torch.Tensor:
    """Right-padded `[B, T]` float32 rows (lists or 1-d tensors)."""
    width = max(len(r) for r in rows)
    out = torch.zeros((len(rows), width), dtype=torch.float32, device=device)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.as_tensor(r, dtype=torch.float32, device=device)
    return out


def _chunk_stats(
    head: Any, hidden: torch.Tensor, targets: torch.Tensor, temperature: torch.Tensor, with_entropy: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    logits = head(hidden).float() / temperature[:, None]
    logp = torch.log_softmax(logits, dim=-1)
    chosen = logp.gather(1, targets[:, None]).squeeze(1)
    entropy = -(logp.exp() * logp).sum(dim=-1) if with_entropy else torch.zeros_like(chosen)
    return chosen, entropy


def token_stats(
    head: Any,
    hidden: torch.Tensor,
    targets: torch.Tensor,
    temperature: torch.Tensor,
    *,
    with_entropy: bool,
    chunk: int = LOGITS_CHUNK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The log-prob of each target and the entropy at each position, `[N]` each, from hidden states
    `[N, H]`, `chunk` positions at a time (0: all at once), so the `[N, V]` logits never exist whole.
    Under gradient each chunk is checkpointed: its logits are made again in the backward pass rather
    than kept, so the memory held for backward is the hidden states, not the logits."""
    n = hidden.shape[0]
    size = chunk if 0 < chunk < n else n
    chosen, entropy = [], []
    for start in range(0, n, size):
        piece = (hidden[start : start + size], targets[start : start + size], temperature[start : start + size])
        if size < n and torch.is_grad_enabled() and hidden.requires_grad:
            c, e = checkpoint(_chunk_stats, head, *piece, with_entropy, use_reentrant=False)
        else:
            c, e = _chunk_stats(head, *piece, with_entropy)
        chosen.append(c)
        entropy.append(e)
    return torch.cat(chosen), torch.cat(entropy)


class Scorer(torch.nn.Module):
    """A causal LM's response statistics as one module's forward: the decoder body, then the output
    head at the response positions only. One forward is what FSDP needs: its root hooks (gathering
    the embeddings, the final norm and the head) run around this, which they would not if the body and
    the head were called apart (`trainer/sharding.py`)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        ids: torch.Tensor,
        attention: torch.Tensor,
        positions: torch.Tensor,
        targets: torch.Tensor,
        temperature: torch.Tensor,
        with_entropy: bool,
        chunk: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = body(self.model)(input_ids=ids, attention_mask=attention).last_hidden_state
        head = self.model.get_output_embeddings()
        at = hidden.flatten(0, 1)[positions]
        return token_stats(head, at, targets, temperature, with_entropy=with_entropy, chunk=chunk)


def response_logprobs(
    model: Any,
    samples: Sequence[Sample],
    *,
    with_entropy: bool,
    autocast: bool = False,
    logits_chunk: int = LOGITS_CHUNK,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """`(logprobs_B_T, entropy_B_T or None, mask_B_T)` of the samples' response tokens under `model`
    (a causal LM, or its `Scorer`), right-padded; logits are made only at response positions,
    `logits_chunk` at a time."""
    scorer = model if isinstance(model, Scorer) else Scorer(model)
    device = next(scorer.parameters()).device
    width = max(s.length for s in samples)
    pad = 0
    ids = torch.full((len(samples), width), pad, dtype=torch.long, device=device)
    attention = torch.zeros((len(samples), width), dtype=torch.long, device=device)
    for row, s in enumerate(samples):
        ids[row, : s.length] = torch.tensor(s.prompt + s.response, device=device)
        attention[row, : s.length] = 1
    targets = torch.tensor([t for s in samples for t in s.response], device=device)
    temperature = torch.tensor([s.temperature for s in samples for _ in s.response], device=device)
    # token t is predicted at position t - 1, in the flattened [B * T] hidden states
    positions = torch.tensor(
        [row * width + t for row, s in enumerate(samples) for t in range(len(s.prompt) - 1, s.length - 1)],
        device=device,
    )
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
        chosen, entropies = scorer(ids, attention, positions, targets, temperature, with_entropy, logits_chunk)
    lengths = [len(s.response) for s in samples]
    mask = padded([[1.0] * n for n in lengths], device)
    logprobs = pad_sequence(list(torch.split(chosen, lengths)), batch_first=True)
    entropy = pad_sequence(list(torch.split(entropies, lengths)), batch_first=True) if with_entropy else None
    return logprobs, entropy, mask


@dataclass
class Prepared:
    """A step's batch with everything computed before the first update."""

    batch: Batch
    scores: torch.Tensor
    advantages: torch.Tensor
    ref: dict[int, torch.Tensor]
    """By sample index, this process's samples only (so the teacher's and the reference's)."""
    teacher: dict[int, torch.Tensor]
    old: dict[int, torch.Tensor]
    """Old log-probs by sample index; the first mini-batch's are filled in by its own forward."""
    learner_old: dict[int, torch.Tensor]
    """The learner's own log-probs at the sampling weights, where known (for the mismatch metrics)."""
    minis: list[list[int]]
    step: int
    timing: dict[str, float]
    behind: list[int] = field(default_factory=list)
    """By sample index: how many policy versions older than the learner's its sampler was (0 when
    the step was given no `policy_version`)."""


class Learner:
    """Owns the policy's optimizer; `step` trains on a batch of groups and returns its metrics."""

    def __init__(
        self,
        model: Any,
        algorithm: Algorithm,
        config: LearnerConfig,
        *,
        ref_model: Any | None = None,
        teacher: Teacher | None = None,
    ) -> None:
        if algorithm.needs_ref and ref_model is None and not is_adapted(model):
            raise ValueError(f"{algorithm.type} with kl_coef > 0 needs the initial policy as ref_model (or LoRA)")
        if algorithm.needs_teacher and teacher is None:
            raise ValueError(f"{algorithm.type} needs a teacher")
        self.model = model
        self.algorithm = algorithm
        self.config = config
        self.ref_model = ref_model
        self.teacher = teacher
        self.params = [p for p in model.parameters() if p.requires_grad]
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.rank = torch.distributed.get_rank() if distributed else 0
        self.world = torch.distributed.get_world_size() if distributed else 1
        if self.world > 1:  # every process starts from the first one's weights (a LoRA init is random)
            with torch.no_grad():
                for q in model.parameters():
                    torch.distributed.broadcast(q.data, src=0)
        if config.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.scorer = Scorer(model)
        self.ref_scorer = Scorer(ref_model) if ref_model is not None else None
        self.sharded = config.sharding == "fsdp" and self.world > 1
        self.full: Any | None = None
        """Under FSDP, the first process's whole copy of the weights, refreshed after every step."""
        self.empty_passes = 0
        """Under FSDP, the empty micro-batches this process has run to keep pace with the others."""
        if self.sharded:
            from trainer import sharding

            if self.rank == 0:
                self.full = copy.deepcopy(model).requires_grad_(False)
            sharding.shard(self.scorer)
            if self.ref_scorer is not None:
                sharding.shard(self.ref_scorer)
            self.params = [p for p in model.parameters() if p.requires_grad]  # now the shards
        self.optimizer = torch.optim.AdamW(self.params, lr=config.lr, weight_decay=config.weight_decay)
        warmup = config.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda n: min(1.0, (n + 1) / warmup) if warmup else 1.0
        )

    @property
    def policy(self) -> Any:
        """The whole current policy: the trained model itself, or under FSDP the first process's copy
        (None on the others)."""
        return self.full if self.sharded else self.model

    def _even(self, micros: list[list[int]]) -> list[list[int] | None]:
        """Under FSDP, `micros` and as many empty micro-batches (None) as make every process's count
        the same (each forward and backward pass is collective); otherwise `micros`."""
        if not self.sharded:
            return list(micros)
        from trainer import sharding

        device = next(self.model.parameters()).device
        empty = sharding.micro_batch_count(len(micros), device) - len(micros)
        self.empty_passes += empty
        return [*micros, *[None] * empty]

    def _logprobs(self, scorer: Any, samples: Sequence[Sample], indices: Sequence[int]) -> dict[int, torch.Tensor]:
        """The response log-probs of `samples[i]` for each of `indices` under `scorer`, without
        gradient, in micro-batches."""
        out: dict[int, torch.Tensor] = {}
        lengths = [s.length for s in samples]
        with torch.no_grad():
            for micro in self._even(list(micro_batches(indices, lengths, self.config.micro_batch_tokens, True))):
                lp, _, _ = response_logprobs(
                    scorer,
                    [samples[i] for i in micro or [0]],  # an empty one: any sample, its result unused
                    with_entropy=False,
                    autocast=self.autocast,
                    logits_chunk=self.config.logits_chunk,
                )
                for row, i in enumerate(micro or []):
                    out[i] = lp[row, : len(samples[i].response)]
        return out

    def portion(self, mini: Sequence[int]) -> list[int]:
        """This process's share of a mini-batch: every `world`-th sample from its `rank`."""
        return list(mini[self.rank :: self.world])

    def all_reduce(self, values: torch.Tensor) -> torch.Tensor:
        """Summed over the processes (as is, alone)."""
        if self.world > 1:
            torch.distributed.all_reduce(values)
        return values

    @property
    def autocast(self) -> bool:
        return self.config.autocast == "bfloat16"

    def prepare(self, groups: Sequence[GroupRecord], step: int, policy_version: int | None = None) -> Prepared:
        """Steps 1-4: samples, advantages, and the signals computed before any update."""
        cfg, algorithm = self.config, self.algorithm
        device = next(self.model.parameters()).device
        timing: dict[str, float] = {}
        batch = shape(groups, cfg.invalid_penalty)
        samples = batch.samples
        behind = [0 if policy_version is None else policy_version - s.policy_version for s in samples]
        if newer := [b for b in behind if b < 0]:
            raise ValueError(f"{len(newer)} sample(s) come from a policy newer than the learner's {policy_version}")
        if self.corrects and (
            raw := sum(b > 0 and not s.processed_logprobs for s, b in zip(samples, behind, strict=True))
        ):
            raise ValueError(
                f"{raw} off-policy sample(s) have raw (pre-temperature) sampler log-probs: truncated IS needs "
                "processed ones (vLLM --logprobs-mode processed_logprobs), or is_correction none"
            )
        scores = torch.tensor([s.score for s in samples], dtype=torch.float32)
        advantages = losses.group_advantages(scores, [s.group for s in samples]).to(device)
        rng = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        order = torch.randperm(len(samples), generator=rng).tolist()
        minis = [order[i : i + cfg.mini_batch_size] for i in range(0, len(order), cfg.mini_batch_size)]
        mine = sorted(i for mini in minis for i in self.portion(mini))  # all of them on one process
        ref: dict[int, torch.Tensor] = {}
        if algorithm.needs_ref and (mine or self.sharded):  # under FSDP every process takes part
            t = time.perf_counter()
            if self.ref_scorer is not None:
                ref = self._logprobs(self.ref_scorer, samples, mine)
            else:  # LoRA: the initial policy is the base, the adapter switched off
                with base_only(self.model):
                    ref = self._logprobs(self.scorer, samples, mine)
            timing["timing_s/ref"] = time.perf_counter() - t
        teacher: dict[int, torch.Tensor] = {}
        if algorithm.needs_teacher and mine:
            assert self.teacher is not None
            t = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.autocast):
                scored = self.teacher.logprobs([samples[i].query for i in mine])
            teacher = {i: torch.tensor(x, device=device) for i, x in zip(mine, scored, strict=True)}
            timing["timing_s/teacher"] = time.perf_counter() - t
        old: dict[int, torch.Tensor] = {}
        if cfg.old_logprobs == "sampler":
            old = {i: torch.tensor(samples[i].sampler_logprobs, device=device) for i in mine}
        elif len(minis) > 1:  # the first mini-batch's come from its own forward, before the weights move
            t = time.perf_counter()
            old = self._logprobs(self.scorer, samples, [i for mini in minis[1:] for i in self.portion(mini)])
            timing["timing_s/old_log_prob"] = time.perf_counter() - t
        learner_old = {} if cfg.old_logprobs == "sampler" else dict(old)
        return Prepared(batch, scores, advantages, ref, teacher, old, learner_old, minis, step, timing, behind)

    @property
    def corrects(self) -> bool:
        """Whether off-policy samples get importance weights."""
        return self.config.is_correction == "truncate" and self.config.old_logprobs == "recompute"

    def is_weights(self, p: Prepared, micro: Sequence[int], like: torch.Tensor) -> torch.Tensor | None:
        """The micro-batch's truncated importance weights `[B, T]` (1 for on-policy rows and padding),
        or None when every row is on-policy or no correction applies."""
        if not self.corrects or not any(p.behind[i] for i in micro):
            return None
        samples = p.batch.samples
        weights = torch.ones_like(like, dtype=torch.float32)
        for row, i in enumerate(micro):
            if p.behind[i]:
                n = len(samples[i].response)
                sampled = torch.tensor(samples[i].sampler_logprobs, device=like.device)
                weights[row, :n] = losses.truncated_is_weights(p.old[i].float(), sampled, cap=self.config.is_cap)
        return weights

    def backward(self, p: Prepared, mini: Sequence[int]) -> dict[str, float]:
        """Step 5 for one mini-batch: its gradients, accumulated over micro-batches, and its statistics
        (each the mini-batch's token-mean). Leaves the optimizer step to the caller. On several
        processes this one takes its `portion` of the mini-batch; the token count that every term
        divides by is summed over the processes first, and so are the statistics (the gradients are
        the caller's to sum)."""
        cfg, samples = self.config, p.batch.samples
        device = next(self.model.parameters()).device
        lengths = [s.length for s in samples]
        portion = self.portion(mini)
        local = torch.tensor([float(sum(len(samples[i].response) for i in portion))], dtype=torch.float64)
        tokens = float(self.all_reduce(local)[0])
        sums: dict[str, float] = {"training/padded_tokens": 0.0}
        runs = self._even(list(micro_batches(portion, lengths, cfg.micro_batch_tokens, cfg.bucket)))
        for n, micro in enumerate(runs):
            if self.sharded:  # the gradients are reduced once, after the mini-batch's last backward
                from trainer import sharding

                sharding.gradient_sync(self.scorer, n == len(runs) - 1)
            chunk = [samples[i] for i in micro or [0]]
            logprobs, entropy, mask = response_logprobs(
                self.scorer, chunk, with_entropy=True, autocast=self.autocast, logits_chunk=cfg.logits_chunk
            )
            assert entropy is not None
            if micro is None:  # an empty micro-batch (FSDP): its passes, and no gradient
                (logprobs.sum() * 0.0 + entropy.sum() * 0.0).backward()  # type: ignore[no-untyped-call]
                continue
            sums["training/padded_tokens"] += len(micro) * max(lengths[i] for i in micro)
            if list(mini) == p.minis[0]:  # the weights have not moved yet: this forward is the old policy's
                for row, i in enumerate(micro):
                    p.learner_old[i] = logprobs[row, : len(samples[i].response)].detach()
                    p.old.setdefault(i, p.learner_old[i])
            signals = Signals(
                logprobs=logprobs,
                entropy=entropy,
                old_logprobs=padded([p.old[i] for i in micro], device),
                advantages=p.advantages[list(micro)],
                mask=mask,
                ref_logprobs=padded([p.ref[i] for i in micro], device) if p.ref else None,
                teacher_logprobs=padded([p.teacher[i] for i in micro], device) if p.teacher else None,
                step=p.step,
                is_weights=self.is_weights(p, micro, mask),
            )
            if signals.is_weights is not None:  # raw sums over the off-policy tokens, for `step`'s means
                stale = mask * torch.tensor([float(p.behind[i] > 0) for i in micro], device=device)[:, None]
                for key, value in (
                    (WEIGHT_SUM, signals.is_weights * stale),
                    (STALE_TOKENS, stale),
                    (TRUNCATED_TOKENS, (signals.is_weights >= cfg.is_cap).float() * stale),
                ):
                    sums[key] = sums.get(key, 0.0) + float(value.sum())
            if cfg.aggregation == "global":
                loss, stats = self.algorithm.loss(signals, float(tokens))
            else:  # the reference: each micro-batch's own token-mean, scaled by its share of samples
                loss, stats = self.algorithm.loss(signals, None)
                share = len(micro) / len(mini)
                loss, stats = loss * share, {k: v * share for k, v in stats.items()}
            loss.backward()  # type: ignore[no-untyped-call]
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + float(v)
        if self.world > 1:  # a process with no sample in this mini-batch has no statistics to add
            every: list[dict[str, float]] = [{} for _ in range(self.world)]
            torch.distributed.all_gather_object(every, sums)
            sums = {k: sum(d.get(k, 0.0) for d in every) for k in sorted({k for d in every for k in d})}
        return sums

    def _sum_gradients(self) -> None:
        """Every process's gradients summed into each (each already divided by the global token count,
        so the sum is the whole mini-batch's gradient), in one flat buffer."""
        if self.world == 1 or self.sharded:  # FSDP has reduced them in the backward pass
            return
        grads = []
        for q in self.params:
            if q.grad is None:
                q.grad = torch.zeros_like(q)
            grads.append(q.grad)
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        start = 0
        for g in grads:
            g.copy_(flat[start : start + g.numel()].view_as(g))
            start += g.numel()

    def trainer_state(self) -> dict[str, Any]:
        """The optimizer's and the scheduler's state, whole (under FSDP on the first process only, and
        every process calls this), as a single process's `state_dict()`s: it loads on any number."""
        if self.sharded:
            from trainer import sharding

            optimizer = sharding.gather_optimizer(self.scorer, self.optimizer)
        else:
            optimizer = self.optimizer.state_dict()
        return {"optimizer": optimizer, "scheduler": self.scheduler.state_dict()}

    def load_trainer_state(self, state: dict[str, Any]) -> None:
        """`trainer_state`'s, from a run on any number of processes."""
        if self.sharded:
            from trainer import sharding

            sharding.optimizer_for(self.scorer, self.optimizer, state["optimizer"])
        else:
            self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    def step(self, groups: Sequence[GroupRecord], step: int, policy_version: int | None = None) -> dict[str, float]:
        """Train on `groups`: one optimizer step per mini-batch. Returns the step's metrics. Given the
        learner's `policy_version`, samples of older versions are off-policy (`is_correction`)."""
        clock = time.perf_counter()
        p = self.prepare(groups, step, policy_version)
        batch, samples = p.batch, p.batch.samples
        metrics: dict[str, float] = {
            "training/groups": float(len(groups)),
            "training/dropped_groups": float(batch.dropped_groups),
            "training/faulted_episodes": float(batch.faulted),
            "episode/success_rate": batch.won / max(batch.episodes, 1),
            "training/samples": float(len(samples)),
        }
        if not samples:
            return metrics
        t = time.perf_counter()
        self.model.train()
        sums: dict[str, float] = {}
        grad_norms = []
        total_tokens = sum(len(s.response) for s in samples)
        padded_tokens = 0.0
        off_policy = dict.fromkeys((WEIGHT_SUM, STALE_TOKENS, TRUNCATED_TOKENS), 0.0)
        for mini in p.minis:
            share = sum(len(samples[i].response) for i in mini) / total_tokens  # a step's stats: its token-mean
            stats = self.backward(p, mini)
            self._sum_gradients()
            padded_tokens += stats.pop("training/padded_tokens")
            for key in off_policy:
                off_policy[key] += stats.pop(key, 0.0)
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v * share
            norm = torch.nn.utils.clip_grad_norm_(self.params, self.config.grad_clip)
            grad_norms.append(float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm))
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        metrics["actor/lr"] = float(self.scheduler.get_last_lr()[0])
        self.scheduler.step()  # once a training step, as verl's actor: warm-up counts steps, not mini-batches
        self.model.eval()
        if self.sharded:  # the first process's whole copy takes the new weights
            from trainer import sharding

            state = sharding.gather_model(self.scorer)
            if self.full is not None:
                self.full.load_state_dict(state)
        p.timing["timing_s/update_actor"] = time.perf_counter() - t

        # the sampler against the learner at the same weights, on the same tokens
        device = p.advantages.device
        known = sorted(p.learner_old)  # this process's samples; summed over the processes below
        sampled = torch.tensor([x for i in known for x in samples[i].sampler_logprobs], device=device)
        learner = torch.cat([p.learner_old[i].float() for i in known]) if known else sampled
        log_ratio = learner - sampled  # k3 of KL(sampler || learner) on the sampler's tokens
        mismatch = self.all_reduce(
            torch.tensor(
                [
                    float((sampled.exp() - learner.exp()).abs().sum()),
                    float((log_ratio.exp() - log_ratio - 1).sum()),
                    float(len(sampled)),
                ],
                dtype=torch.float64,
            )
        )
        response_lengths = torch.tensor([len(s.response) for s in samples], dtype=torch.float32)
        metrics |= sums | {
            "actor/grad_norm": sum(grad_norms) / len(grad_norms),
            "critic/score/mean": float(p.scores.mean()),
            "critic/advantages/mean": float(p.advantages.mean()),
            "critic/advantages/max": float(p.advantages.max()),
            "critic/advantages/min": float(p.advantages.min()),
            "episode/valid_action_ratio": sum(s.valid for s in samples) / len(samples),
            "response_length/mean": float(response_lengths.mean()),
            "response_length/max": float(response_lengths.max()),
            "num_turns/mean": len(samples) / max(batch.episodes, 1),
            "training/tokens": float(response_lengths.sum()),
            "training/padding_share": 1.0 - sum(s.length for s in samples) / max(padded_tokens, 1.0),
        }
        if policy_version is not None:
            behind = torch.tensor(p.behind, dtype=torch.float32)
            metrics["off_policy/stale_sample_ratio"] = float((behind > 0).float().mean())
            metrics["off_policy/staleness_mean"] = float(behind.mean())
            metrics["off_policy/staleness_max"] = float(behind.max())
        if off_policy[STALE_TOKENS] > 0:
            metrics["off_policy/is_weight_mean"] = off_policy[WEIGHT_SUM] / off_policy[STALE_TOKENS]
            metrics["off_policy/is_truncated_ratio"] = off_policy[TRUNCATED_TOKENS] / off_policy[STALE_TOKENS]
        if mismatch[2] > 0:  # known only where the learner recomputed the old log-probs
            metrics["training/rollout_probs_diff_mean"] = float(mismatch[0] / mismatch[2])
            metrics["training/rollout_mismatch_kl"] = float(mismatch[1] / mismatch[2])
        p.timing["timing_s/step"] = time.perf_counter() - clock
        return metrics | p.timing
