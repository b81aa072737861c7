"""Generation behind one interface, token-in / token-out: a prompt's token ids in; the sampled token
ids and their sampler log-probs out. Text is never re-tokenized for training.

`HFGenerator` runs a Hugging Face model in this process under our continuous-batching engine
(`trainer.engine`): every pending request is batched with the others, and a new request joins the
running batch between two decode steps as soon as a row and the KV budget allow, instead of
waiting for the batch to finish. Sampling (temperature, top-p) is fixed per generator; a turn stops
at one of the model's stop tokens (its generation config's `eos_token_id`, one or a list, and the
tokenizer's) or at `max_new_tokens`.

The log-prob of every sampled token is the sampler's: `log_softmax(logits / temperature)`, taken
before any top-p cut (greedy at temperature 0: the model's log-softmax). vLLM returns the same
quantity when run with `--logprobs-mode processed_logprobs`; its default, `raw_logprobs`, is taken
before temperature. Each generator says which it returns (`logprobs_mode`), and every completion
carries the policy version that sampled its first token (`policy_version`; versions only go up, so
that is the oldest one a turn can straddle).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import queue
import threading
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from shared.rollout_wire import LogprobsMode
from trainer.engine import Engine, EngineError, Sequence

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256


@dataclass(frozen=True)
class Completion:
    token_ids: list[int]
    logprobs: list[float]
    finish_reason: Literal["stop", "length"]
    policy_version: int = 0
    """The policy version that sampled the first token."""


class Generator(Protocol):
    sampling: Sampling
    max_context: int
    """Prompt plus new tokens, at most."""
    policy_version: int
    """The version of the weights it samples with now; whoever updates the weights sets it."""
    logprobs_mode: LogprobsMode
    backend: str
    """Where the tokens come from, for the record (`hf`, `openai <url>`)."""

    async def generate(self, prompt_ids: list[int], max_new_tokens: int | None = None) -> Completion: ...

    async def aclose(self) -> None:
        """Release what the generator holds; waiting requests fail."""


class GenerationError(RuntimeError):
    """The backend failed a request."""


def stop_token_ids(model: Any, tokenizer: Any) -> set[int]:
    """The tokens that end a turn: the generation config's `eos_token_id` (an id or a list) and the
    tokenizer's end-of-sequence token."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = configured if isinstance(configured, list) else [configured]
    return {int(i) for i in [*ids, tokenizer.eos_token_id] if i is not None}


class HFGenerator:
    """Continuous batching over an in-process Hugging Face causal LM: one thread drives the engine,
    `generate` is awaited from any event loop. A cancelled request leaves the batch at the next step."""

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
        self._waiting: collections.deque[Sequence] = collections.deque()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="hf-generator", daemon=True)
        self._thread.start()

    async def generate(self, prompt_ids: list[int], max_new_tokens: int | None = None) -> Completion:
        if self._closed.is_set():
            raise GenerationError("the generator is closed")
        sequence = Sequence(list(prompt_ids), max_new_tokens or self.sampling.max_new_tokens)
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

    def _loop(self) -> None:
        engine = self.engine
        while not self._closed.is_set():
            self._take(block=not self._waiting and not engine.running)
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


def _answer(sequence: Sequence, error: GenerationError | None = None) -> None:
    """Settle a sequence's future, on its own event loop."""
    loop, future = sequence.handle
    outcome: Completion | GenerationError = error or Completion(
        sequence.tokens, sequence.logprobs, sequence.finish_reason or "length", sequence.policy_version
    )
    with contextlib.suppress(RuntimeError):  # the caller's loop is gone: nobody is waiting
        loop.call_soon_threadsafe(_settle, future, outcome)


def _settle(future: asyncio.Future[Completion], outcome: Completion | BaseException) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


class OpenAIGenerator:
    """Any OpenAI-compatible completions server that returns token ids (vLLM with
    `return_tokens_as_token_ids`, SGLang, or `python -m trainer.openai_server`): the prompt goes as
    token ids, the sampled ids and their log-probs come back; nothing is re-tokenized.

    `logprobs_mode` is what the server returns: run vLLM with `--logprobs-mode processed_logprobs`
    (its default `raw_logprobs` is before temperature). A server that states its mode in the reply
    (`python -m trainer.openai_server` does) and states another one fails the request."""

    def __init__(
        self,
        base_url: str,
        model: str,
        sampling: Sampling = Sampling(),
        *,
        api_key: str | None = None,
        timeout_s: float = 300.0,
        retries: int = 3,
        max_context: int = 4096,
        logprobs_mode: LogprobsMode = "processed_logprobs",
    ) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s)
        self._errors = (httpx.TransportError,)
        self.model = model
        self.sampling = sampling
        self.retries = retries
        self.max_context = max_context
        self.logprobs_mode = logprobs_mode
        self.backend = f"openai {base_url}"
        self.policy_version = 0

    async def generate(self, prompt_ids: list[int], max_new_tokens: int | None = None) -> Completion:
        body = {
            "model": self.model,
            "prompt": list(prompt_ids),
            "max_tokens": max_new_tokens or self.sampling.max_new_tokens,
            "temperature": self.sampling.temperature,
            "top_p": self.sampling.top_p,
            "logprobs": 0,
            "return_tokens_as_token_ids": True,
        }
        version = self.policy_version
        for attempt in range(self.retries + 1):
            try:
                response = await self._client.post("/v1/completions", json=body)
            except self._errors as e:
                if attempt == self.retries:
                    raise GenerationError(f"completions server unreachable: {e}") from e
                await asyncio.sleep(0.2 * 2**attempt)
                continue
            if response.status_code in (429, 502, 503, 504) and attempt < self.retries:
                await asyncio.sleep(0.2 * 2**attempt)
                continue
            if response.status_code != 200:
                raise GenerationError(f"completions server answered {response.status_code}: {response.text[:300]}")
            return self._completion(response.json(), version)
        raise AssertionError("unreachable")

    def _completion(self, reply: dict[str, Any], version: int) -> Completion:
        stated = reply.get("logprobs_mode", self.logprobs_mode) if isinstance(reply, dict) else self.logprobs_mode
        if stated != self.logprobs_mode:
            raise GenerationError(f"the server returns {stated}, not the {self.logprobs_mode} this client expects")
        try:
            choice = reply["choices"][0]
            logprobs = choice["logprobs"]
            ids = [int(str(t).removeprefix("token_id:")) for t in logprobs["tokens"]]
            values = [float(v) for v in logprobs["token_logprobs"]]
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise GenerationError(f"no token ids and log-probs in the reply ({e}): {str(reply)[:300]}") from e
        reason: Literal["stop", "length"] = "length" if choice.get("finish_reason") == "length" else "stop"
        return Completion(ids, values, reason, version)

    async def aclose(self) -> None:
        await self._client.aclose()
