"""An OpenAI-compatible completions server over the in-process Hugging Face generator.

    python -m trainer.openai_server --model tiny|smollm2|PATH --port 8003 [--temperature 1.0 --top-p 1.0]

`POST /v1/completions` takes a prompt as token ids (or text, tokenized without special tokens),
`max_tokens`, `logprobs` and vLLM's `return_tokens_as_token_ids`, and answers in the completions
format: per choice the text, `logprobs.tokens` (`"token_id:<id>"` strings with
`return_tokens_as_token_ids`, as vLLM writes them), `logprobs.token_logprobs` (the sampler's) and
`finish_reason`. The log-probs are the sampler's, log_softmax(logits / temperature) before any top-p
cut, what vLLM calls `processed_logprobs`: every reply says so in `logprobs_mode`, which
`OpenAIGenerator` checks. Sampling is the server's (one continuous batch serves every request): a request
asking for another temperature or top-p is refused rather than silently sampled differently.
`GET /v1/models` lists the one model.

The policy it samples with is versioned, as the teacher's (`GET`/`POST /v1/policy`): a `POST` with a
checkpoint directory (full weights, or a LoRA adapter, merged) and a version higher than the current
one loads it aside, waits for the requests in flight, swaps the weights in, and goes on; a bad
checkpoint is a 4xx and the policy that was serving keeps serving. Every reply states the
`policy_version` that sampled it. vLLM's control routes are here too, so that client code written
for a vLLM server runs against this one: `POST /pause` (`mode=wait` only, new requests wait and
those in flight finish; vLLM's default is `abort`), `POST /resume`, `GET /is_paused`, and its
runtime LoRA loading (what `OpenAIGenerator(weight_sync="lora")` drives),
`POST /v1/load_lora_adapter` (`{"lora_name": "policy-v<N>", "lora_path": DIR}`: the adapter, merged,
becomes version N, and replies name it as their `model`) and `POST /v1/unload_lora_adapter`.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import FastAPI, Query, Request, Response
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from shared.model_specs import DTYPE_NAMES, BadCheckpoint, ModelNotFound, check_spec, shown
from shared.server import HttpMetrics, api_router, errors, install_common, map_errors, serve, text
from shared.teacher_wire import LoadCheckpoint
from trainer.generation import GenerationError, Sampling, named_version

if TYPE_CHECKING:
    from shared.models import LoadedModel


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)  # OpenAI clients send fields we do not use

    model: str | None = None
    prompt: list[int] | str
    max_tokens: int = Field(default=16, ge=1, le=32768)
    temperature: float | None = Field(default=None, ge=0.0, le=10.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    logprobs: int | None = Field(default=None, ge=0, le=5)
    return_tokens_as_token_ids: bool = False
    n: int = Field(default=1, ge=1, le=1)
    stream: bool = False
    # OpenAI's fields that this server does not do: refused when set, never silently dropped
    stop: str | list[str] | None = None
    echo: bool = False
    best_of: int | None = None
    suffix: str | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    seed: int | None = None

    def unsupported(self) -> list[str]:
        """The fields set that this server would otherwise ignore."""
        given = {
            "stop": bool(self.stop),
            "echo": self.echo,
            "best_of": self.best_of not in (None, 1),
            "suffix": bool(self.suffix),
            "presence_penalty": self.presence_penalty != 0,
            "frequency_penalty": self.frequency_penalty != 0,
            "logit_bias": bool(self.logit_bias),
            "seed": self.seed is not None,
            "stream": self.stream,
        }
        return [name for name, used in given.items() if used]


class SamplingMismatch(ValueError):
    pass


class PolicyConflict(ValueError):
    """A version that is not newer than the current one."""


class UnknownAdapter(LookupError):
    pass


class UnknownModel(LookupError):
    pass


class LoraAdapter(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    lora_name: str = Field(min_length=1, max_length=200)
    lora_path: str | None = Field(default=None, min_length=1, max_length=4096)


def adapter_version(name: str) -> int:
    """The policy version an adapter name `policy-v<N>` stands for."""
    version = named_version(name)
    if version is None:
        raise SamplingMismatch(f"adapters here are policy versions, named policy-v<N>, not {name!r}")
    return version


class Gate:
    """Who may generate: closed while a client has paused the server (`/pause`) or a weight swap is
    under way, each on its own, so that neither reopens what the other closed. `drain` closes it
    for a swap and waits until the requests inside have finished."""

    def __init__(self) -> None:
        self.inside = 0
        self.client_paused = False
        self.swapping = False
        self.open = asyncio.Event()
        self.open.set()
        self.idle = asyncio.Event()
        self.idle.set()

    def _update(self) -> None:
        if self.client_paused or self.swapping:
            self.open.clear()
        else:
            self.open.set()

    @asynccontextmanager
    async def enter(self) -> AsyncIterator[None]:
        while not self.open.is_set():  # reopened and closed again before this waiter ran: wait again
            await self.open.wait()
        self.inside += 1
        self.idle.clear()
        try:
            yield
        finally:
            self.inside -= 1
            if self.inside == 0:
                self.idle.set()

    async def _wait_idle(self) -> None:
        while self.inside:
            await self.idle.wait()

    async def pause(self) -> None:
        """A client's pause (vLLM's `mode=wait`): new requests wait, those inside finish."""
        self.client_paused = True
        self._update()
        await self._wait_idle()

    def resume(self) -> None:
        self.client_paused = False
        self._update()

    @asynccontextmanager
    async def drain(self) -> AsyncIterator[None]:
        """Nothing generates inside this block."""
        self.swapping = True
        self._update()
        try:
            await self._wait_idle()
            yield
        finally:
            self.swapping = False
            self._update()

    @property
    def paused(self) -> bool:
        return self.client_paused


def checkpoint_state(path: str, served: Any, cache_dir: Path | None) -> dict[str, Any]:
    """The weights of the checkpoint at `path` (a LoRA adapter merged into its base) as a state dict
    for the `served` model, or `BadCheckpoint` saying why not. Blocking."""
    from shared.models import load_checkpoint

    model = load_checkpoint(path, cache_dir=cache_dir, dtype=next(served.parameters()).dtype)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    state: dict[str, Any] = model.state_dict()
    want = served.state_dict()
    if set(state) != set(want) or any(state[k].shape != want[k].shape for k in want):
        raise BadCheckpoint(f"{shown(path)} holds another architecture than the served model")
    return state


def create_app(
    loaded: LoadedModel,
    sampling: Sampling,
    *,
    token: str | None = None,
    max_context: int = 4096,
    cache_dir: Path | None = None,
) -> FastAPI:
    metrics = HttpMetrics("sdar_generation")
    tokenizer = loaded.tokenizer
    gate = Gate()
    policy: dict[str, Any] = {"version": 0, "path": loaded.path, "name": None, "names": set()}
    """The version, where its weights came from, the adapter name it was loaded as (if any), and the
    adapter names loaded and not unloaded since."""
    reload_lock = asyncio.Lock()

    from trainer.engine import HFGenerator  # torch: imported only once the flags are checked

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.generator = HFGenerator(loaded.model, tokenizer, sampling, max_context=max_context)
        try:
            yield
        finally:
            await app.state.generator.aclose()

    app = FastAPI(title="SDAR OpenAI-compatible generation", version="1", lifespan=lifespan)
    install_common(app, metrics, max_body_bytes=16 << 20)

    map_errors(
        app,
        {
            SamplingMismatch: (422, "invalid_request"),
            GenerationError: (503, "generation_failed"),
            BadCheckpoint: (422, "bad_checkpoint"),
            PolicyConflict: (409, "policy_conflict"),
            UnknownAdapter: (404, "not_found"),
            UnknownModel: (404, "model_not_found"),
        },
    )

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "model": loaded.spec}

    router = api_router(token)

    @router.get("/metrics", response_class=PlainTextResponse, responses=text("Prometheus metrics"))
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def served_names() -> list[str]:
        """The model, then the adapter names it answers to (vLLM lists its adapters as models)."""
        return [loaded.spec, *sorted(policy["names"])]

    @router.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": n, "object": "model", "owned_by": "sdar"} for n in served_names()]}

    @router.post("/v1/completions", responses=errors(404, 503))
    async def completions(body: CompletionRequest, request: Request) -> dict[str, Any]:
        if body.model is not None and body.model not in served_names():
            raise UnknownModel(f"the model {body.model!r} does not exist here; this server serves {loaded.spec!r}")
        if refused := body.unsupported():
            raise SamplingMismatch(f"{', '.join(refused)}: not supported by this server (leave unset)")
        if body.temperature is not None and body.temperature != sampling.temperature:
            raise SamplingMismatch(f"this server samples at temperature {sampling.temperature}, not {body.temperature}")
        if body.top_p is not None and body.top_p != sampling.top_p:
            raise SamplingMismatch(f"this server samples with top_p {sampling.top_p}, not {body.top_p}")
        ids = body.prompt if isinstance(body.prompt, list) else tokenizer.encode(body.prompt, add_special_tokens=False)
        if not ids:
            raise SamplingMismatch("the prompt is empty")
        if any(not 0 <= t < len(tokenizer) for t in ids):
            raise SamplingMismatch(f"prompt token ids must be in 0..{len(tokenizer) - 1}")
        if len(ids) + body.max_tokens > max_context:
            raise SamplingMismatch(f"prompt ({len(ids)}) + max_tokens ({body.max_tokens}) exceed {max_context} tokens")
        async with gate.enter():  # a weight swap waits for this request, so one version samples it all
            version, name = policy["version"], policy["name"] or loaded.spec
            completion = await request.app.state.generator.generate(
                list(ids), body.max_tokens, top_logprobs=body.logprobs or 0
            )

        def token(t: int) -> str:
            return f"token_id:{t}" if body.return_tokens_as_token_ids else tokenizer.decode([t])

        tokens = [token(t) for t in completion.token_ids]
        choice: dict[str, Any] = {
            "index": 0,
            "text": tokenizer.decode(completion.token_ids, skip_special_tokens=True),
            "finish_reason": completion.finish_reason,
            "logprobs": None,
        }
        if body.logprobs is not None:
            top = None
            if completion.top_logprobs is not None:  # OpenAI's shape: one {token: logprob} per position
                top = [{token(t): lp for t, lp in row} for row in completion.top_logprobs]
            choice["logprobs"] = {"tokens": tokens, "token_logprobs": completion.logprobs, "top_logprobs": top}
        return {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": name,
            "logprobs_mode": request.app.state.generator.logprobs_mode,
            "policy_version": version,
            "choices": [choice],
            "usage": {
                "prompt_tokens": len(ids),
                "completion_tokens": len(completion.token_ids),
                "total_tokens": len(ids) + len(completion.token_ids),
            },
        }

    def policy_info() -> dict[str, Any]:
        return {
            "model": loaded.spec,
            "path": policy["path"],
            "policy_version": policy["version"],
            "paused": gate.paused,
        }

    @router.get("/v1/policy")
    async def get_policy() -> dict[str, Any]:
        return policy_info()

    async def swap(path: str, version: int | None, name: str | None = None) -> None:
        """Load `path` aside, then swap it in as `version` once the requests in flight are done."""
        async with reload_lock:  # one load at a time; generation goes on with the old weights meanwhile
            version = policy["version"] + 1 if version is None else version
            if version <= policy["version"]:
                raise PolicyConflict(f"version {version} is not newer than the current {policy['version']}")
            state = await asyncio.to_thread(checkpoint_state, path, loaded.model, cache_dir)
            async with gate.drain():
                await asyncio.to_thread(loaded.model.load_state_dict, state)
                policy.update(version=version, path=str(Path(path).expanduser()), name=name)
                if name is not None:
                    policy["names"].add(name)

    @router.post("/v1/policy", responses=errors(409))
    async def load_policy(body: LoadCheckpoint) -> dict[str, Any]:
        await swap(body.path, body.version)
        return policy_info()

    @router.post("/v1/load_lora_adapter", responses=errors(409))
    async def load_lora_adapter(body: LoraAdapter) -> dict[str, Any]:
        """vLLM's runtime adapter loading, for one policy: the adapter named `policy-v<N>` (merged)
        becomes version N, and replies name it as their `model`, as vLLM's do."""
        if body.lora_path is None:
            raise SamplingMismatch("lora_path is required")
        await swap(body.lora_path, adapter_version(body.lora_name), body.lora_name)
        return policy_info()

    @router.post("/v1/unload_lora_adapter", responses=errors(404, 409))
    async def unload_lora_adapter(body: LoraAdapter) -> dict[str, Any]:
        """An older version's name is forgotten (one policy is held); the current one stays."""
        if body.lora_name == policy["name"]:
            raise PolicyConflict(f"{body.lora_name} is the policy being served")
        if body.lora_name not in policy["names"]:
            raise UnknownAdapter(f"no adapter {body.lora_name!r} is loaded")
        policy["names"].discard(body.lora_name)
        return policy_info()

    @router.post("/pause")
    async def pause(mode: Annotated[Literal["wait"], Query()] = "wait") -> dict[str, Any]:
        """vLLM's route; `wait` (new requests wait, those in flight finish) is the one mode here, and the
        default (vLLM's default is `abort`, which this server does not do)."""
        await gate.pause()
        return {"is_paused": True}

    @router.post("/resume")
    async def resume() -> dict[str, Any]:
        gate.resume()
        return {"is_paused": False}

    @router.get("/is_paused")
    async def is_paused() -> dict[str, Any]:
        return {"is_paused": gate.paused}

    app.include_router(router)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m trainer.openai_server", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2", help="smollm2 (default), tiny, or a model directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8003)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--max-context", type=int, default=4096)
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default="float32", help="weights (default float32)")
    parser.add_argument("--token", help="bearer token required on every route but /health")
    parser.add_argument("--cache-dir", type=Path)
    args = parser.parse_args(argv)
    if not 0 <= args.temperature <= 10 or not 0 < args.top_p <= 1:
        parser.error("--temperature must be in [0, 10] and --top-p in (0, 1]")
    if not 0 <= args.port < 65536 or args.max_context < 16:
        parser.error("--port must be 0..65535 (0: any free port) and --max-context at least 16")
    try:
        check_spec(args.model)
    except ModelNotFound as e:
        parser.error(str(e))
    from shared.models import DTYPES, load_model  # torch and transformers, after the flags

    loaded = load_model(args.model, cache_dir=args.cache_dir, dtype=DTYPES[args.dtype])
    sampling = Sampling(args.temperature, args.top_p)
    app = create_app(loaded, sampling, token=args.token, max_context=args.max_context, cache_dir=args.cache_dir)
    serve(app, args.host, args.port, "completions server")


if __name__ == "__main__":
    main()
