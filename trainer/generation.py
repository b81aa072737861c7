"""Generation behind one interface, token-in / token-out: a prompt's token ids in; the sampled token
ids and their sampler log-probs out. Text is never re-tokenized for training.

Two implementations: `trainer.engine.HFGenerator` runs a Hugging Face model in this process on our
continuous-batching engine (kept there, so that this module imports no torch); `OpenAIGenerator`
asks any OpenAI-compatible completions server. Sampling (temperature, top-p) is fixed per generator.

The log-prob of every sampled token is the sampler's: `log_softmax(logits / temperature)`, taken
before any top-p cut (greedy at temperature 0: the model's log-softmax). vLLM returns the same
quantity when run with `--logprobs-mode processed_logprobs`; its default, `raw_logprobs`, is taken
before temperature. Each generator says which it returns (`logprobs_mode`), and every completion
carries the policy version that sampled its first token (`policy_version`; versions only go up, so
that is the oldest one a turn can straddle).
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from shared.rollout_wire import LogprobsMode
from shared.wire import RETRY_STATUSES


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
    top_logprobs: list[list[tuple[int, float]]] | None = None
    """When asked for: the most likely `(token_id, logprob)` at each position, most likely first."""


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


log = logging.getLogger(__name__)
ADAPTER_NAME = re.compile(r"policy-v(\d{1,12})")
"""Adapters published to a server are named by the policy version they hold (vLLM's runtime LoRA)."""


def named_version(name: str) -> int | None:
    """The policy version in an adapter name `policy-v<N>`, else None."""
    m = ADAPTER_NAME.fullmatch(name)
    return int(m.group(1)) if m else None


class GenerationError(RuntimeError):
    """The backend failed a request."""


class StalePolicy(GenerationError):
    """The server sampled with an older policy than the learner published."""


class OpenAIGenerator:
    """Any OpenAI-compatible completions server that returns token ids (vLLM with
    `return_tokens_as_token_ids`, SGLang, or `python -m trainer.openai_server`): the prompt goes as
    token ids, the sampled ids and their log-probs come back; nothing is re-tokenized.

    `logprobs_mode` is what the server returns: run vLLM with `--logprobs-mode processed_logprobs`
    (its default `raw_logprobs` is before temperature). A server that states its mode in the reply
    (`python -m trainer.openai_server` does) and states another one fails the request.

    `publish` hands the server a new policy, a checkpoint directory to load: `weight_sync="policy"`
    through `POST /v1/policy` (the project's server's route, and the teacher's); `"lora"` through
    vLLM's runtime adapter loading (`POST /v1/load_lora_adapter`, the server started with
    `--enable-lora` and `VLLM_ALLOW_RUNTIME_LORA_UPDATING=1`), the adapter named `policy-v<N>`,
    requests then naming it as their model, the oldest of the `keep_adapters` loaded unloaded (keep
    more than one in asynchronous training, where requests on the previous adapter are still in
    flight; vLLM's `--max-loras` must hold them). A request sent after a publish and answered by an
    older policy than the published one (its `policy_version`, or the version in its adapter name) is
    refused (`StalePolicy`): no silent off-policy samples. A request sent before it may be answered by
    the policy it was sent to."""

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
        transport: Any = None,
        weight_sync: Literal["policy", "lora"] = "policy",
        keep_adapters: int = 1,
    ) -> None:
        import httpx

        if keep_adapters < 1:
            raise ValueError(f"keep_adapters must be at least 1, not {keep_adapters}")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        base_url = base_url.rstrip("/").removesuffix("/v1")  # the usual OpenAI base URL names /v1 too
        self._client = httpx.AsyncClient(base_url=base_url, headers=headers, timeout=timeout_s, transport=transport)
        self._errors = (httpx.TransportError,)
        self.model = model
        self.sampling = sampling
        self.retries = retries
        self.max_context = max_context
        self.logprobs_mode = logprobs_mode
        self.backend = f"openai {base_url}"
        self.policy_version = 0
        self.weight_sync = weight_sync
        self.keep_adapters = keep_adapters
        self._adapters: list[str] = []  # loaded by this client, oldest first

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
            if response.status_code in RETRY_STATUSES and attempt < self.retries:
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
        stated_version = reply.get("policy_version")
        if not isinstance(stated_version, int) and isinstance(reply.get("model"), str):
            stated_version = named_version(reply["model"])  # vLLM names the adapter that sampled
        if isinstance(stated_version, int):
            if stated_version < version:
                raise StalePolicy(
                    f"the completions server sampled with policy version {stated_version}, older than the "
                    f"published {version}: refused"
                )
            version = stated_version
        return Completion(ids, values, reason, version)

    async def _call(self, method: str, route: str, **kwargs: Any) -> Any:
        try:
            return await self._client.request(method, route, **kwargs)
        except self._errors as e:
            raise GenerationError(f"completions server unreachable ({method} {route}): {e}") from e

    async def check_model(self) -> None:
        """Refuse a server that does not serve this client's model (`GET /v1/models`): its replies
        would be another model's tokens."""
        response = await self._call("GET", "/v1/models")
        if response.status_code != 200:
            raise GenerationError(f"GET /v1/models answered {response.status_code}: {response.text[:300]}")
        try:
            served = [str(m["id"]) for m in response.json()["data"]]
        except (KeyError, TypeError, ValueError) as e:
            raise GenerationError(f"GET /v1/models gave no model list ({e}): {response.text[:300]}") from None
        if self.model not in served:
            raise GenerationError(
                f"the completions server serves {', '.join(map(repr, served)) or 'no model'}, not {self.model!r}"
            )

    async def server_policy(self) -> dict[str, Any]:
        """The server's `GET /v1/policy`: its model, checkpoint path and policy version."""
        response = await self._call("GET", "/v1/policy")
        if response.status_code != 200:
            raise GenerationError(f"GET /v1/policy answered {response.status_code}: {response.text[:300]}")
        info: dict[str, Any] = response.json()
        return info

    async def publish(self, checkpoint: str, version: int) -> None:
        """The server loads `checkpoint` as policy `version`; later replies must come from it."""
        if self.weight_sync == "lora":
            return await self._publish_adapter(checkpoint, version)
        body = {"path": checkpoint, "version": version}
        response = await self._call("POST", "/v1/policy", json=body, timeout=600.0)
        if response.status_code != 200:
            raise GenerationError(f"the completions server refused policy {version}: {response.text[:300]}")
        served = response.json().get("policy_version")
        if served != version:
            raise GenerationError(f"the completions server serves policy version {served}, not {version}")
        self.policy_version = version

    async def _publish_adapter(self, checkpoint: str, version: int) -> None:
        name = f"policy-v{version}"
        body = {"lora_name": name, "lora_path": checkpoint}
        response = await self._call("POST", "/v1/load_lora_adapter", json=body, timeout=600.0)
        held = response.status_code in (400, 409) and "already" in response.text  # a resumed run's, still there
        if response.status_code != 200 and not held:
            raise GenerationError(f"the completions server refused adapter {name}: {response.text[:300]}")
        self.model, self.policy_version = name, version
        if name not in self._adapters:
            self._adapters.append(name)
        while len(self._adapters) > self.keep_adapters:  # free the oldest slot; a failure costs a slot
            oldest = self._adapters.pop(0)
            try:
                await self._client.post("/v1/unload_lora_adapter", json={"lora_name": oldest})
            except self._errors as e:
                log.warning("could not unload adapter %s: %s", oldest, e)

    async def aclose(self) -> None:
        await self._client.aclose()
