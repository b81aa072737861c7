"""Generation behind one interface, token-in / token-out: a prompt's token ids in; the sampled token
ids and their sampler log-probs out. Text is never re-tokenized for training.

`HFGenerator` runs a Hugging Face model in this process with transformers' continuous batching:
every pending request is batched with the others, and a new request joins the running batch as
soon as there is room (a paged KV cache), instead of waiting for the batch to finish. Sampling
(temperature, top-p) is fixed per generator; a turn stops at the tokenizer's end-of-turn token or
at `max_new_tokens`.
"""

from __future__ import annotations

import asyncio
import math
import threading
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from transformers import GenerationConfig
from transformers.generation.configuration_utils import ContinuousBatchingConfig


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


class Generator(Protocol):
    async def generate(self, prompt_ids: list[int], max_new_tokens: int | None = None) -> Completion: ...

    async def aclose(self) -> None:
        """Release what the generator holds; waiting requests fail."""


class GenerationError(RuntimeError):
    """The backend failed a request."""


class HFGenerator:
    """Continuous batching over an in-process Hugging Face causal LM."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        sampling: Sampling = Sampling(),
        *,
        max_concurrency: int = 64,
        max_context: int = 4096,
        kv_cache_gib: float = 2.0,
        page_size: int = 256,
        seed: int = 0,
    ) -> None:
        self.tokenizer = tokenizer
        self.sampling = sampling
        self.stop_ids = {tokenizer.eos_token_id}
        config = GenerationConfig(
            max_new_tokens=sampling.max_new_tokens,
            do_sample=sampling.temperature > 0,
            temperature=sampling.temperature if sampling.temperature > 0 else None,
            top_p=sampling.top_p,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
        )
        # The paged KV cache holds what the concurrent requests need, up to `kv_cache_gib`.
        cfg = model.config
        heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        per_token = 2 * cfg.num_hidden_layers * heads * head_dim * next(model.parameters()).element_size()
        tokens = min(max_concurrency * max_context, int(kv_cache_gib * 2**30 / per_token))
        blocks = max(1, math.ceil(tokens / page_size))
        batching = ContinuousBatchingConfig(
            return_logprobs=True,
            seed=seed,
            page_size=page_size,
            num_blocks=blocks,
            max_batch_tokens=max(512, max_concurrency * 8),
        )
        self._manager = model.init_continuous_batching(generation_config=config, continuous_batching_config=batching)
        self._manager.start()
        self._futures: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Future[Completion], int]] = {}
        self._lock = threading.Lock()
        self._count = 0
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read, name="hf-generator-results", daemon=True)
        self._reader.start()

    async def generate(self, prompt_ids: list[int], max_new_tokens: int | None = None) -> Completion:
        if self._closed.is_set():
            raise GenerationError("the generator is closed")
        limit = max_new_tokens or self.sampling.max_new_tokens
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Completion] = loop.create_future()
        with self._lock:
            self._count += 1
            request_id = f"r{self._count}"
            self._futures[request_id] = (loop, future, limit)
        self._manager.add_request(list(prompt_ids), request_id=request_id, max_new_tokens=limit)
        return await future

    def _read(self) -> None:
        while not self._closed.is_set():
            result = self._manager.get_result(timeout=0.05)
            if result is None:
                if not self._manager.is_running():  # its loop died: no result will come
                    self._fail_all(GenerationError("the generation loop stopped (see the log for why)"))
                continue
            with self._lock:
                waiting = self._futures.pop(result.request_id, None)
            if waiting is None:
                continue
            loop, future, limit = waiting
            outcome: Completion | BaseException
            if result.error:
                outcome = GenerationError(str(result.error))
            else:
                tokens = list(result.generated_tokens)
                stopped = bool(tokens) and tokens[-1] in self.stop_ids
                reason: Literal["stop", "length"] = "stop" if stopped or len(tokens) < limit else "length"
                outcome = Completion(tokens, [float(x) for x in result.logprobs], reason)
            loop.call_soon_threadsafe(_settle, future, outcome)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        self._reader.join(timeout=5)
        self._manager.stop(block=True)
        self._fail_all(GenerationError("the generator was closed"))

    def _fail_all(self, error: GenerationError) -> None:
        with self._lock:
            waiting, self._futures = list(self._futures.values()), {}
        for loop, future, _ in waiting:
            loop.call_soon_threadsafe(_settle, future, error)


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
    token ids, the sampled ids and their log-probs come back; nothing is re-tokenized."""

    def __init__(
        self,
        base_url: str,
        model: str,
        sampling: Sampling = Sampling(),
        *,
        api_key: str | None = None,
        timeout_s: float = 300.0,
        retries: int = 3,
    ) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s)
        self._errors = (httpx.TransportError,)
        self.model = model
        self.sampling = sampling
        self.retries = retries

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
            return self._completion(response.json())
        raise AssertionError("unreachable")

    @staticmethod
    def _completion(reply: dict[str, Any]) -> Completion:
        try:
            choice = reply["choices"][0]
            logprobs = choice["logprobs"]
            ids = [int(str(t).removeprefix("token_id:")) for t in logprobs["tokens"]]
            values = [float(v) for v in logprobs["token_logprobs"]]
        except (KeyError, IndexError, TypeError, ValueError) as e:
            raise GenerationError(f"no token ids and log-probs in the reply ({e}): {str(reply)[:300]}") from e
        reason: Literal["stop", "length"] = "length" if choice.get("finish_reason") == "length" else "stop"
        return Completion(ids, values, reason)

    async def aclose(self) -> None:
        await self._client.aclose()
