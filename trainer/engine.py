"""A continuous-batching decode loop for a Hugging Face causal LM, the engine under `HFGenerator`.

Every running sequence owns one row of a KV cache and is written at its own position, so a decode
step runs all of them at once, whatever their lengths, and a new sequence joins between two steps
the moment a row and the KV budget allow: its prompt is prefilled on its own, copied into a free
row, and it decodes with the rest from the next step on. Where the prompt begins like a running
sequence (the G episodes of a group start from the same prompt; every turn of an env starts with
the same instructions), the common prefix's keys and values are copied from that row and only the
rest is prefilled. A finished sequence's row is refilled by the last row, so the running rows are
always the first `n` and a step reads views, not copies.

Why our own loop and not transformers' continuous batching: on a CPU its rate hardly grows with
the batch (16 sequences of the tiny test model at 597 tokens/s, where this loop gives 2,524;
`BENCHMARKS.md`, generation engines). The model only has to call `cache.update(keys, values,
layer_idx)` in its attention layers and accept a 4-D additive attention mask, as the Llama, Mistral
and Qwen families of transformers do.

Sampling is the engine's (temperature, top-p); the log-prob reported for a token is its log-prob
under the distribution it was drawn from before the top-p cut, log-softmax(logits / temperature)
(at temperature 0, greedy, the model's own log-softmax), which is what a learner recomputes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from transformers import DynamicCache

from shared.rollout_wire import LogprobsMode
from trainer.generation import Completion, GenerationError, Sampling

log = logging.getLogger(__name__)

ROW_GROWTH = 8  # rows are added this many at a time
LENGTH_GROWTH = 256  # and positions this many


@dataclass
class Sequence:
    """One request: its prompt, its limit, and what was sampled so far."""

    prompt: list[int]
    limit: int
    handle: Any = None
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    finish_reason: Literal["stop", "length"] | None = None
    cancelled: bool = False  # its caller gave up: it leaves at the next step
    policy_version: int = 0  # the weights it was admitted under
    top_k: int = 0  # the most likely tokens to report at each position, with their log-probs
    top: list[list[tuple[int, float]]] = field(default_factory=list)

    @property
    def length(self) -> int:
        return len(self.prompt) + len(self.tokens)

    @property
    def span(self) -> int:
        """The most positions it can need."""
        return len(self.prompt) + self.limit


class EngineError(RuntimeError):
    """A request the engine cannot serve."""


class RowCache:
    """Per-layer key and value tensors of shape [rows, kv_heads, positions, head_dim], grown on demand.

    Between `begin_step` and the end of a forward pass it is the model's `cache`: each layer's new key
    and value for the first `n` rows are written at the rows' own positions, and the keys and values of
    those rows up to the longest come back."""

    def __init__(self, config: Any, dtype: torch.dtype, device: torch.device) -> None:
        self.layers = config.num_hidden_layers
        self.heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.dtype, self.device = dtype, device
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.rows = self.positions = 0
        self._at = torch.zeros(0, dtype=torch.long)
        self._span = 0

    @property
    def bytes_per_position(self) -> int:
        return int(2 * self.layers * self.heads * self.head_dim * torch.finfo(self.dtype).bits // 8)

    @property
    def bytes(self) -> int:
        """What the allocation holds now."""
        return self.rows * self.positions * self.bytes_per_position

    def resize(self, rows: int, positions: int, keep_rows: int, keep_positions: int) -> None:
        """Reallocate, keeping the first `keep_rows` rows up to `keep_positions`. The new tensors are
        all made before the old ones are let go, so a failed allocation leaves the cache as it was."""
        if (rows, positions) == (self.rows, self.positions):
            return
        shape = (rows, self.heads, positions, self.head_dim)

        def relaid(old: list[torch.Tensor]) -> list[torch.Tensor]:
            fresh = []
            for layer in range(self.layers):
                tensor = torch.zeros(shape, dtype=self.dtype, device=self.device)
                if keep_rows and old:
                    tensor[:keep_rows, :, :keep_positions] = old[layer][:keep_rows, :, :keep_positions]
                fresh.append(tensor)
            return fresh

        keys, values = relaid(self.keys), relaid(self.values)
        self.keys, self.values = keys, values
        self.rows, self.positions = rows, positions

    def store(self, row: int, prefill: DynamicCache, length: int) -> None:
        """Copy a prompt's keys and values from its prefill into a row."""
        for layer in range(self.layers):
            self.keys[layer][row, :, :length] = prefill.layers[layer].keys[0]
            self.values[layer][row, :, :length] = prefill.layers[layer].values[0]

    def move(self, source: int, target: int, length: int) -> None:
        for store in (self.keys, self.values):
            for tensor in store:
                tensor[target, :, :length] = tensor[source, :, :length]

    def begin_step(self, at: torch.Tensor) -> torch.Tensor:
        """The next forward pass decodes rows 0..len(at)-1, each writing at its position in `at`;
        returns its additive attention mask, [rows, 1, 1, longest], open up to each row's position."""
        self._at = at
        self._span = int(at.max()) + 1
        positions = torch.arange(self._span, device=self.device)
        mask = torch.zeros(len(at), 1, 1, self._span, dtype=self.dtype, device=self.device)
        return mask.masked_fill_(positions[None, None, None, :] > at[:, None, None, None], torch.finfo(self.dtype).min)

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, **_: Any) -> tuple[Any, Any]:
        n = key_states.shape[0]
        rows = torch.arange(n, device=self.device)
        self.keys[layer_idx][rows, :, self._at] = key_states[:, :, 0]
        self.values[layer_idx][rows, :, self._at] = value_states[:, :, 0]
        return self.keys[layer_idx][:n, :, : self._span], self.values[layer_idx][:n, :, : self._span]


class Engine:
    """Prefill, decode and sample for up to `max_rows` sequences at once; not thread-safe (one
    thread drives it)."""

    def __init__(
        self,
        model: Any,
        *,
        stop_ids: set[int],
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_rows: int = 64,
        max_context: int = 4096,
        kv_cache_gib: float = 2.0,
        min_shared_prefix: int = 16,
        seed: int = 0,
    ) -> None:
        self.model = model
        self.min_shared_prefix = min_shared_prefix  # a shorter common prefix is prefilled again, not copied
        self.stop_ids = stop_ids
        self.temperature, self.top_p = temperature, top_p
        self.max_rows, self.max_context = max_rows, max_context
        parameter = next(model.parameters())
        self.device = parameter.device
        self.cache = RowCache(model.config, parameter.dtype, self.device)
        self.budget = int(kv_cache_gib * 2**30)
        self.running: list[Sequence] = []  # running[i] owns row i
        self.rng = torch.Generator(device=self.device).manual_seed(seed)
        self.prefilled = self.reused = 0  # prompt tokens run through the model, and taken from a row
        self.steps = 0  # decode steps run

    def check(self, sequence: Sequence) -> None:
        """Raise `EngineError` for a request that could never run."""
        if not sequence.prompt:
            raise EngineError("the prompt is empty")
        if sequence.limit < 1:
            raise EngineError("max_new_tokens must be at least 1")
        if sequence.span > self.max_context:
            raise EngineError(
                f"prompt ({len(sequence.prompt)}) + max_new_tokens ({sequence.limit}) exceed "
                f"the context of {self.max_context} tokens"
            )
        if sequence.span * self.cache.bytes_per_position > self.budget:
            raise EngineError(f"one sequence of {sequence.span} positions exceeds the KV cache budget")

    def fits(self, sequence: Sequence) -> bool:
        """Whether a row and the KV budget have room for it now."""
        return self._layout(sequence) is not None

    def _layout(self, sequence: Sequence) -> tuple[int, int] | None:
        """The cache shape that holds the running sequences and `sequence` within the KV budget, or None.

        The current shape when it has room; otherwise a new one, grown in whole steps (rows by
        ROW_GROWTH, positions by LENGTH_GROWTH) as far as the budget allows and exact where a whole step
        would not fit. Rows may shrink to make room for longer positions (the running rows are always
        the first ones), so a longer request waits only until the budget holds it, never for the batch
        to drain."""
        rows = len(self.running) + 1
        if rows > self.max_rows:
            return None
        span = max([sequence.span, *(s.span for s in self.running)])
        if rows <= self.cache.rows and span <= self.cache.positions:
            return self.cache.rows, self.cache.positions
        per_row = self.cache.bytes_per_position
        if rows * span * per_row > self.budget:
            return None
        positions = min(self.max_context, round_up(max(span, self.cache.positions), LENGTH_GROWTH))
        if rows * positions * per_row > self.budget:
            positions = max(span, min(positions, self.budget // (rows * per_row)))
        affordable = self.budget // (positions * per_row)
        return min(self.max_rows, round_up(rows, ROW_GROWTH), affordable), positions

    @torch.inference_mode()
    def admit(self, sequence: Sequence) -> bool:
        """Prefill a sequence and sample its first token; True if it runs on, False if already done."""
        self.check(sequence)
        layout = self._layout(sequence)
        if layout is None:
            raise EngineError(f"no row or KV budget for a sequence of {sequence.span} positions now (check fits)")
        prefill = DynamicCache(config=self.model.config)
        source, shared = self._shared_prefix(sequence)
        if shared:  # start from a running row's keys and values for the prefix they have in common
            for layer in range(self.cache.layers):
                keys = self.cache.keys[layer][source : source + 1, :, :shared]
                prefill.update(keys, self.cache.values[layer][source : source + 1, :, :shared], layer)  # copies
        self.prefilled += len(sequence.prompt) - shared
        self.reused += shared
        ids = torch.tensor([sequence.prompt[shared:]], device=self.device)
        logits = self.model(input_ids=ids, cache=prefill, use_cache=True, logits_to_keep=1).logits[:, -1]
        self._record([sequence], logits)
        if sequence.finish_reason:
            return False
        row = len(self.running)
        self.cache.resize(*layout, row, max((s.length for s in self.running), default=0))
        self.cache.store(row, prefill, len(sequence.prompt))
        self.running.append(sequence)
        return True

    def _shared_prefix(self, sequence: Sequence) -> tuple[int, int]:
        """The running row whose cached tokens share the longest prefix with the sequence's prompt, and
        its length (0 when under `min_shared_prefix`; never the whole prompt, whose last token must run
        for its logits). Only a row admitted under the same policy version qualifies: after a weight
        update, an older row's keys and values are the old weights'."""
        prompt = sequence.prompt
        best, source = 0, -1
        for row, other in enumerate(self.running):
            if other.policy_version != sequence.policy_version:
                continue
            cached = (other.prompt + other.tokens)[: other.length - 1]  # the last token is not in the cache yet
            length = common_prefix(prompt, cached)
            if length > best:
                best, source = length, row
        best = min(best, len(prompt) - 1)
        return (source, best) if best >= self.min_shared_prefix else (-1, 0)

    @torch.inference_mode()
    def step(self) -> list[Sequence]:
        """One decode step for every running sequence; returns those that finished (and frees their rows)."""
        if not self.running:
            return []
        self.steps += 1
        at = torch.tensor([s.length - 1 for s in self.running], device=self.device)
        mask = self.cache.begin_step(at)
        ids = torch.tensor([[s.tokens[-1]] for s in self.running], device=self.device)
        logits = self.model(
            input_ids=ids, position_ids=at[:, None], attention_mask=mask, cache=self.cache, use_cache=True
        ).logits[:, -1]
        self._record(self.running, logits)
        done = [row for row, s in enumerate(self.running) if s.finish_reason]
        finished = [self.running[row] for row in done]
        for row in reversed(done):
            self.remove(row)
        return finished

    def remove(self, row: int) -> Sequence:
        """Free a row: the last running sequence moves into it."""
        last = len(self.running) - 1
        if row != last:
            self.cache.move(last, row, self.running[last].length)
            self.running[row] = self.running[last]
        return self.running.pop()

    def _record(self, sequences: list[Sequence], logits: torch.Tensor) -> None:
        tokens, logprobs = self.sample(logits.float())
        if k := max(s.top_k for s in sequences):  # under the same log-softmax as the sampled token's
            scaled = logits.float() if self.temperature in (0, 1) else logits.float() / self.temperature
            values, indices = torch.log_softmax(scaled, dim=-1).topk(k, dim=-1)
            for sequence, ids, lps in zip(sequences, indices.tolist(), values.tolist(), strict=True):
                if sequence.top_k:
                    sequence.top.append(list(zip(ids, lps, strict=True))[: sequence.top_k])
        for sequence, token, logprob in zip(sequences, tokens.tolist(), logprobs.tolist(), strict=True):
            sequence.tokens.append(token)
            sequence.logprobs.append(logprob)
            if token in self.stop_ids:
                sequence.finish_reason = "stop"
            elif len(sequence.tokens) >= sequence.limit:
                sequence.finish_reason = "length"

    def sample(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A token per row and its log-prob under log-softmax(logits / temperature)."""
        if self.temperature == 0:
            logp = torch.log_softmax(logits, dim=-1)
            tokens = logp.argmax(dim=-1)
            return tokens, logp.gather(-1, tokens[:, None])[:, 0]
        logp = torch.log_softmax(logits if self.temperature == 1 else logits / self.temperature, dim=-1)
        probs = logp.exp()
        if self.top_p < 1.0:
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            outside = sorted_probs.cumsum(dim=-1) - sorted_probs > self.top_p  # the most likely always stays
            probs = probs.scatter(-1, order, sorted_probs.masked_fill(outside, 0.0))
        # Inverse-CDF sampling: one uniform draw a row (torch.multinomial draws one per vocabulary
        # entry, and on a CPU that costs more than the tiny model's forward pass).
        uniforms = torch.rand((len(probs), 1), generator=self.rng, device=self.device, dtype=torch.float64)
        tokens = inverse_cdf(probs, uniforms)
        return tokens, logp.gather(-1, tokens[:, None])[:, 0]


def round_up(n: int, step: int) -> int:
    return -(-n // step) * step


def cumulative(probs: torch.Tensor) -> torch.Tensor:
    """The CDF along the last axis in float64: in float32, the cumulative sum of a 150k vocabulary
    rounds the tail's small masses near 1.0 to 0 or to twice their size."""
    return probs.double().cumsum(dim=-1)


def inverse_cdf(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """The token of each row whose interval of the (unnormalised) CDF holds `uniforms` ([rows, 1], in
    [0, 1)) scaled to the row's mass. The first entry whose cumulative mass exceeds the draw has mass of
    its own, so a token without mass (cut by top-p) is never drawn."""
    cdf = cumulative(probs)
    total = cdf[:, -1:]
    draw = torch.minimum(uniforms.double() * total, total * (1 - 2**-40))
    return torch.searchsorted(cdf, draw, right=True)[:, 0]


def common_prefix(a: list[int], b: list[int]) -> int:
    """The length of the longest common prefix (a binary search over list slices, which compare in C)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle - 1
    return low


# -- the generator over it ---------------------------------------------------------------------


def stop_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """The tokens that end a turn: the generation config's `eos_token_id` (an id or a list) and the
    tokenizer's end-of-sequence token."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = configured if isinstance(configured, list) else [configured]
    return {int(i) for i in [*ids, tokenizer.eos_token_id] if i is not None}


class HFGenerator:
    """Continuous batching over an in-process Hugging Face causal LM: one thread drives the engine,
    `generate` is awaited from any event loop. A cancelled request leaves the batch at the next step.

    Its model may be the learner's own object (synchronous training: nothing runs while the learner
    trains) or a copy of its own (asynchronous training), into which `load_weights` copies each new
    policy between two decode steps."""

    logprobs_mode: LogprobsMode = "processed_logprobs"
    backend = "hf"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        sampling: Sampling = Sampling(),
        *,
        max_concurrency: int = 64,
        max_context: int = 4096,
        kv_cache_gib: float = 2.0,
        seed: int = 0,
    ) -> None:
        self.sampling = sampling
        self.max_context = max_context
        self.policy_version = 0
        self.cancelled = 0  # requests whose callers gave up
        self.engine = Engine(
            model,
            stop_ids=stop_token_ids(model, tokenizer),
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            max_rows=max_concurrency,
            max_context=max_context,
            kv_cache_gib=kv_cache_gib,
            seed=seed,
        )
        self._inbox: queue.SimpleQueue[Sequence | None] = queue.SimpleQueue()
        self._jobs: queue.SimpleQueue[tuple[Callable[[], None], asyncio.AbstractEventLoop, asyncio.Future[None]]]
        self._jobs = queue.SimpleQueue()
        self._waiting: collections.deque[Sequence] = collections.deque()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="hf-generator", daemon=True)
        self._thread.start()

    async def generate(
        self, prompt_ids: list[int], max_new_tokens: int | None = None, *, top_logprobs: int = 0
    ) -> Completion:
        """A completion of `prompt_ids`; `top_logprobs`: also the most likely tokens at each position."""
        if self._closed.is_set():
            raise GenerationError("the generator is closed")
        sequence = Sequence(list(prompt_ids), max_new_tokens or self.sampling.max_new_tokens, top_k=top_logprobs)
        try:
            self.engine.check(sequence)
        except EngineError as e:
            raise GenerationError(str(e)) from e
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Completion] = loop.create_future()
        sequence.handle = (loop, future)
        self._inbox.put(sequence)
        try:
            return await future
        except asyncio.CancelledError:
            sequence.cancelled = True
            raise

    async def load_weights(self, model: Any, version: int) -> None:
        """Copy `model`'s weights (the learner's, of the same architecture) into this generator's model
        between two decode steps, as policy `version`: sequences admitted from then on carry it. The
        running ones go on with the new weights (their first token's version stays theirs, the oldest,
        as vLLM's `pause(mode="keep")` does)."""
        if self._closed.is_set():
            raise GenerationError("the generator is closed")
        if model is self.engine.model:
            raise ValueError("load_weights copies from another model object; this generator shares the learner's")

        def copy() -> None:
            with torch.no_grad():
                self.engine.model.load_state_dict(model.state_dict())
            self.policy_version = version

        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._jobs.put((copy, loop, done))
        self._inbox.put(None)  # wakes an idle loop
        await done

    def _run_jobs(self) -> None:
        """Weight copies asked for, run here between two steps, each answered on its caller's loop."""
        while True:
            try:
                job, loop, done = self._jobs.get_nowait()
            except queue.Empty:
                return
            try:
                job()
            except Exception as e:
                log.exception("weight copy failed")
                outcome: BaseException | None = GenerationError(f"weight copy failed: {e}")
            else:
                outcome = None
            with contextlib.suppress(RuntimeError):  # the caller's loop is gone
                loop.call_soon_threadsafe(_settle, done, outcome)

    def _loop(self) -> None:
        engine = self.engine
        while not self._closed.is_set():
            self._take(block=not self._waiting and not engine.running)
            self._run_jobs()
            self._drop_cancelled()
            while self._waiting and engine.fits(self._waiting[0]):
                sequence = self._waiting.popleft()
                sequence.policy_version = self.policy_version  # the weights its first token comes from
                try:
                    if not engine.admit(sequence):
                        _answer(sequence)
                except Exception as e:
                    log.exception("prefill failed")
                    _answer(sequence, GenerationError(f"prefill failed: {e}"))
            try:
                finished = engine.step()
            except Exception as e:
                log.exception("decode step failed")
                failed, engine.running = engine.running, []
                for sequence in failed:
                    _answer(sequence, GenerationError(f"decode step failed: {e}"))
                continue
            for sequence in finished:
                _answer(sequence)

    def _take(self, *, block: bool) -> None:
        """Move what arrived into the waiting line; wait a little for something when idle."""
        try:
            item = self._inbox.get(timeout=0.05) if block else self._inbox.get_nowait()
            while item is not None:
                self._waiting.append(item)
                item = self._inbox.get_nowait()
        except queue.Empty:
            pass

    def _drop_cancelled(self) -> None:
        if any(s.cancelled for s in self._waiting):
            self.cancelled += sum(s.cancelled for s in self._waiting)
            self._waiting = collections.deque(s for s in self._waiting if not s.cancelled)
        for row in reversed(range(len(self.engine.running))):
            if self.engine.running[row].cancelled:
                self.engine.remove(row)
                self.cancelled += 1

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._inbox.put(None)
        self._thread.join()
        self._take(block=False)
        left = [*self._waiting, *self.engine.running]
        self._waiting.clear()
        self.engine.running = []
        for sequence in left:
            _answer(sequence, GenerationError("the generator was closed"))
        while not self._jobs.empty():
            _, loop, done = self._jobs.get_nowait()
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, done, GenerationError("the generator was closed"))


def _answer(sequence: Sequence, error: GenerationError | None = None) -> None:
    """Settle a sequence's future, on its own event loop."""
    loop, future = sequence.handle
    outcome: Completion | GenerationError = error or Completion(
        sequence.tokens,
        sequence.logprobs,
        sequence.finish_reason or "length",
        sequence.policy_version,
        sequence.top if sequence.top_k else None,
    )
    with contextlib.suppress(RuntimeError):  # the caller's loop is gone: nobody is waiting
        loop.call_soon_threadsafe(_settle, future, outcome)


def _settle(future: asyncio.Future[Any], outcome: Any) -> None:
    """The future's result, or its exception when `outcome` is one."""
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
