"""`python -m trainer.run`: the main job. Plays groups of episodes, trains on them, evaluates.

With no arguments, on a machine with nothing running, it starts what it needs (the env service as a
local process, an embedded Redis from the pip-installed binary, the teacher in process on the
policy's own model object), trains SmolLM2-135M-Instruct with SDAR on ALFWorld for a few small steps,
evaluates on a few `valid_seen` games at temperature 0.4, and writes `runs/<timestamp>/`:
`config.json`, `metrics.jsonl` (a line per step and per evaluation), `tensorboard/`, `plots/`,
`README.md` (a summary), `checkpoints/`. A run starts from a preset (`trainer/presets.py`) changed by
flags and `--set KEY=VALUE`; its config is `trainer/config.py`'s `RunConfig`. Given URLs
(`--env-url`, `--teacher-url`, `--redis-url`) replace the embedded services.

One step, in order: take back any groups this run held when it was killed, roll out the rest of the
step's groups into the buffer (`trainer/rollout.py`), take them from the buffer, train
(`trainer/learner.py`), write the checkpoint, acknowledge the groups, publish the new policy version
to generation (the same model object) and to the teacher. A kill at any point loses nothing and trains
nothing twice: `--resume RUN_DIR` reloads the last checkpoint, acknowledges the groups it had already
trained on, and trains the ones it held but had not.

With `--max-staleness N` (N >= 1) the rollout runs ahead (`trainer/pipeline.py`): round k + 1 is
played while step k trains, on a copy of the weights that gets each new policy between two decode
steps, and the learner corrects the samples older than itself by truncated importance sampling.

Under `torchrun --nproc-per-node N`, the first process does all of the above and hands each step's
groups to the others; every process trains its share of each mini-batch (`trainer/learner.py`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import dataclasses
import datetime
import importlib.util
import json
import logging
import os
import random
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.envs_client import replica_urls
from shared.model_specs import DTYPE_NAMES, ModelNotFound, check_spec
from trainer.presets import ENVS

if TYPE_CHECKING:
    from trainer.config import RunConfig

log = logging.getLogger("trainer.run")
ALGORITHM_TYPES = ("sdar", "grpo", "grpo_opsd", "opsd", "rlsd")

FLAGS = {
    "env": "env",
    "algorithm": "algorithm.type",
    "model": "model",
    "dtype": "dtype",
    "device": "device",
    "steps": "steps",
    "groups": "groups",
    "group_size": "group_size",
    "max_turns": "max_turns",
    "max_new_tokens": "max_new_tokens",
    "temperature": "temperature",
    "eval_tasks": "eval.tasks",
    "eval_every": "eval.every",
    "lr": "learner.lr",
    "kl_coef": "algorithm.kl_coef",
    "lam": "algorithm.lam",
    "beta": "algorithm.beta",
    "mini_batch_size": "learner.mini_batch_size",
    "micro_batch_tokens": "learner.micro_batch_tokens",
    "old_logprobs": "learner.old_logprobs",
    "aggregation": "learner.aggregation",
    "autocast": "learner.autocast",
    "concurrency": "concurrency",
    "seed": "seed",
    "lora_rank": "lora.rank",
    "max_staleness": "max_staleness",
}
"""Each config flag and the `RunConfig` field it sets (`--set` reaches every field)."""


# -- the command line --------------------------------------------------------------------------


class RunError(RuntimeError):
    """A run that cannot go on for a reason the user can act on: one line, no traceback."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m trainer.run",
        description="Train an agent with SDAR (or GRPO). A run starts from a preset (--list-presets "
        "shows them); flags and --set KEY=VALUE change any of its fields.",
        epilog="Example: python -m trainer.run --preset alfworld --model DIR --set learner.lr=2e-6 --set eval.every=5",
    )
    p.add_argument("--preset", default=None, help="the starting config (default cpu-demo; see --list-presets)")
    p.add_argument("--list-presets", action="store_true", help="print the presets and their settings, and exit")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set any config field, dotted (learner.lr=2e-6, algorithm.beta=3, eval.every=5); repeatable, "
        "applied after the flags",
    )
    p.add_argument("--env", choices=ENVS)
    p.add_argument("--algorithm", choices=ALGORITHM_TYPES, help="the algorithm (the presets': sdar)")
    p.add_argument("--model", help="smollm2 (default), tiny, or a model directory")
    p.add_argument("--dtype", choices=DTYPE_NAMES, help="weights (default float32)")
    p.add_argument("--device", help="cpu (default), cuda (under torchrun: each process its LOCAL_RANK's GPU) or cuda:N")
    p.add_argument("--steps", type=int, help="training steps (with --resume: extends the run to this many)")
    p.add_argument("--groups", type=int, help="tasks per step")
    p.add_argument("--group-size", type=int, help="episodes per task, G")
    p.add_argument("--max-turns", type=int, help="env steps per episode (0: the env's limit)")
    p.add_argument("--max-new-tokens", type=int, help="response tokens per turn")
    p.add_argument("--temperature", type=float, help="rollout sampling temperature (default 1.0)")
    p.add_argument("--eval-tasks", type=int, help="validation tasks (0: no evaluation)")
    p.add_argument("--eval-every", type=int, help="evaluate every N steps too (0: only at the end)")
    p.add_argument("--lr", type=float, help="learning rate (default 1e-6, the reference's)")
    p.add_argument("--kl-coef", type=float, help="KL coefficient (the reference's: 0.01; 0.001 Search-QA)")
    p.add_argument("--lam", type=float, help="SDAR's lambda (default 0.01)")
    p.add_argument("--beta", type=float, help="SDAR's gate beta (default 5.0)")
    p.add_argument("--mini-batch-size", type=int, help="step-samples per optimizer step")
    p.add_argument("--micro-batch-tokens", type=int, help="padded tokens per forward pass (default 8192)")
    p.add_argument("--old-logprobs", choices=["recompute", "sampler"])
    p.add_argument("--aggregation", choices=["global", "legacy"])
    p.add_argument(
        "--autocast",
        choices=["none", "bfloat16"],
        help="the learner's forward passes under bfloat16 autocast, weights and optimizer in float32 (default; "
        "the reference trains bf16 mixed precision) or none (float32 throughout)",
    )
    p.add_argument("--lora-rank", type=int, help="train a LoRA adapter of this rank (default: all the weights)")
    p.add_argument("--concurrency", type=int, help="episodes in flight (default 64)")
    p.add_argument(
        "--max-staleness",
        type=int,
        help="0: synchronous on-policy (default, the reference); N: rollout goes on while the learner trains, "
        "at most N policy versions ahead (off-policy samples get truncated importance weights)",
    )
    p.add_argument("--seed", type=int)
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where run directories go (default runs/)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a run from its last checkpoint")
    p.add_argument("--env-url", help="an env service to use (default: one started here)")
    p.add_argument("--teacher-url", help="a teacher service to use (default: the teacher in process)")
    p.add_argument(
        "--openai-url",
        help="generate on this OpenAI-compatible completions server (python -m trainer.openai_server), which "
        "is handed every new checkpoint through POST /v1/policy (default: generate in process)",
    )
    p.add_argument(
        "--weight-sync",
        choices=["policy", "lora"],
        default="policy",
        help="how --openai-url gets each checkpoint: policy (POST /v1/policy, the project's server; default) or "
        "lora (vLLM's /v1/load_lora_adapter, adapters named policy-v<N>; with --lora-rank)",
    )
    p.add_argument("--redis-url", help="the buffer's Redis (default: $REDIS_URL, else an embedded one)")
    p.add_argument("--cache-dir", type=Path, help="where models and generated games are cached")
    args = p.parse_args(argv)
    if args.list_presets:
        return args
    for flag in ("env_url", "teacher_url", "openai_url"):
        url = getattr(args, flag)
        urls = replica_urls(url) if flag == "env_url" and url is not None else [url]  # env replicas
        if url is not None and not all(u.startswith(("http://", "https://")) for u in urls):
            p.error(
                f"--{flag.replace('_', '-')} must be an http(s) URL"
                + (" (or several, by commas)" if flag == "env_url" else "")
            )
    args.config = None
    try:
        overrides = override_fields(args)
        if args.resume is None:
            args.config = build_config(args.preset, overrides)
            check_spec(args.config.model)
        else:
            check_resume(args.resume, args.preset, overrides)
    except (ValueError, ModelNotFound) as e:
        p.error(str(e))
    if args.config is not None and args.config.device != "cpu":
        from shared.model_specs import torch_device

        try:
            torch_device(args.config.device)
        except ValueError as e:
            p.error(str(e))
    if args.weight_sync == "lora" and (args.openai_url is None or (args.config and args.config.lora is None)):
        p.error("--weight-sync lora needs --openai-url and a LoRA run (--lora-rank)")
    for flag, name in (
        ("env_url", "env service"),
        ("teacher_url", "teacher service"),
        ("openai_url", "completions server"),
    ):
        url = getattr(args, flag)
        for one in replica_urls(url) if url is not None else []:
            if not reachable(one):
                p.error(f"cannot reach the {name} at {one} (GET /health)")
    return args


def override_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields the flags given and each `--set` (after them) change, as nested dicts."""
    from trainer.presets import assignment, merge, nested

    overrides: dict[str, Any] = {}
    for name, path in FLAGS.items():
        value = getattr(args, name)
        if value is not None:
            if name == "max_turns" and value == 0:
                value = None
            overrides = merge(overrides, nested(path.split("."), value))
    for text in args.set:
        overrides = merge(overrides, nested(*assignment(text)))
    return overrides


def build_config(preset: str | None, overrides: dict[str, Any]) -> Any:
    """The preset with the overrides, validated: a `RunConfig`, or a one-line `ValueError`."""
    from trainer.config import validate  # pydantic models of the algorithms: torch, once the flags parse
    from trainer.presets import DEFAULT, resolve

    config = validate(resolve(preset or DEFAULT, overrides))
    for name in config.loggers:
        if name != "tensorboard" and importlib.util.find_spec(name) is None:
            raise ValueError(f"loggers: {name} is not installed (pip install {name}), or leave it out")
    return config


def check_resume(directory: Path, preset: str | None, overrides: dict[str, Any]) -> None:
    """A resumed run keeps its config: flags may repeat its values (the same command line with
    `--resume`), and only `steps` may change."""
    if not (directory / "config.json").is_file():
        raise ValueError(f"--resume {directory}: not a run directory (no config.json)")
    if preset is not None:
        raise ValueError("--resume continues a run with its own config.json; --preset does not apply")
    try:
        saved = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"--resume {directory}: config.json does not read: {e}") from None

    def walk(over: dict[str, Any], have: Any, path: str) -> None:
        for key, value in over.items():
            here = f"{path}{key}"
            old = have.get(key) if isinstance(have, dict) else None
            if isinstance(value, dict):
                walk(value, old, f"{here}.")
            elif here != "steps" and old != value:
                raise ValueError(
                    f"--resume: {here} is {old!r} in {directory}/config.json, not {value!r}; "
                    "a resumed run keeps its config (only --steps may change)"
                )

    walk(overrides, saved, "")


def reachable(url: str) -> bool:
    """Whether a service answers its `/health` (a wrong URL is an error now, not after a long backoff)."""
    import httpx

    try:
        httpx.get(f"{url.rstrip('/')}/health", timeout=5.0)
    except httpx.HTTPError:
        return False
    return True


# -- the run -----------------------------------------------------------------------------------


def agent(config: RunConfig) -> Any:
    """The env's agent protocol, with the run's history length."""
    from trainer.agents import protocol

    chosen = protocol(config.env)
    return chosen if config.history is None else dataclasses.replace(chosen, history=config.history)


def task_ids(config: RunConfig, total: int, step: int) -> list[str]:
    """The step's tasks: a seeded draw from the split, the same for a step on every run of a seed (so a
    resumed run rolls out what the uninterrupted one would)."""
    rng = random.Random(config.seed * 1_000_003 + step)
    return [f"{config.env}/{config.split}/{rng.randrange(total)}" for _ in range(config.groups)]


class Run:
    """A run directory and what the run has started; `train` is the loop."""

    def __init__(self, config: RunConfig, directory: Path, args: argparse.Namespace) -> None:
        self.config = config
        self.dir = directory
        self.args = args
        self.metrics = directory / "metrics.jsonl"
        self.report: Any = None
        self.rank, self.world = process_rank()

    def share(self, message: Any) -> Any:
        """Under torchrun: the first process's `message` (the step's groups, or None when the run
        ends) to every process; alone: `message`."""
        if self.world == 1:
            return message
        import torch.distributed as dist

        box = [message]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def follow(self, learner: Any) -> None:
        """A process other than the first: train its share of each step's groups until the run ends
        (the first process rolls out, checkpoints, evaluates and publishes)."""
        from trainer.checkpoint import PREFIX
        from trainer.teacher import HTTPTeacher

        while (message := self.share(None)) is not None:
            groups, step, version = message
            if isinstance(learner.teacher, HTTPTeacher) and version:  # what the first process published
                learner.teacher.published = (self.dir / "checkpoints" / f"{PREFIX}{step:06d}", version)
            learner.step(groups, step, version)
            if learner.sharded:  # the first process gathers the optimizer state for its checkpoint
                learner.trainer_state()

    def log(self, record: dict[str, Any]) -> None:
        """A line of `metrics.jsonl`, and the same to TensorBoard (and the loggers asked for); an
        evaluation redraws the plots."""
        with self.metrics.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.report is not None:
            self.report.log(record)

    async def train(self, env_url: str, redis_url: str) -> dict[str, Any]:
        from tqdm import tqdm

        from shared.envs_client import AsyncEnvClient
        from shared.model_specs import torch_device
        from shared.models import DTYPES, load_model
        from trainer import checkpoint
        from trainer.adapters import attach
        from trainer.buffer import RedisBuffer
        from trainer.engine import HFGenerator
        from trainer.generation import OpenAIGenerator, Sampling
        from trainer.learner import Learner
        from trainer.pipeline import Ahead
        from trainer.report import Report
        from trainer.rollout import Roller, RolloutConfig
        from trainer.teacher import HTTPTeacher, LocalTeacher, Teacher

        config, args = self.config, self.args
        algorithm, learner_config = config.algorithm, config.learner
        saved = checkpoint.checkpoints(self.dir / "checkpoints")
        progress = checkpoint.Progress(consumer=config.consumer, redis_prefix=config.redis_prefix)
        rng: dict[str, Any] | None = None
        if saved:  # state first, before any iterator or rollout is built
            progress, rng = checkpoint.read_progress(saved[-1])
            print(f"resuming from {saved[-1]} (step {progress.step}, policy version {progress.policy_version})")

        if self.rank == 0:
            self.report = Report(self.dir, config.model_dump(), start_step=progress.step, loggers=config.loggers)
        try:
            dtype, device = DTYPES[config.dtype], torch_device(config.device)
        except ValueError as e:
            raise RunError(str(e)) from None
        loaded = load_model(
            str(saved[-1]) if saved else config.model, cache_dir=args.cache_dir, dtype=dtype, trainable=True
        )
        model, tokenizer = loaded.model.to(device), loaded.tokenizer
        if config.lora is not None and not saved:
            model = attach(model, config.lora, config.model)
        ref_model = None
        if algorithm.needs_ref and config.lora is None:  # the initial policy, never the checkpoint (LoRA: the base)
            ref_model = load_model(config.model, cache_dir=args.cache_dir, dtype=dtype).model.to(device)
            ref_model.requires_grad_(False)
        teacher: Teacher | None = None
        if algorithm.needs_teacher and learner_config.sharding == "fsdp" and self.world > 1 and not args.teacher_url:
            raise RunError(
                "learner.sharding=fsdp needs the teacher service (--teacher-url): the in-process teacher scores "
                "on every process with whole weights, which FSDP shards"
            )
        if algorithm.needs_teacher:
            if args.teacher_url:  # the run's own policy on it: its base for a new run, its last checkpoint
                teacher = HTTPTeacher(args.teacher_url, run=config.redis_prefix[:256] or None)
                if self.rank == 0:
                    teacher.begin(saved[-1] if saved else None, progress.policy_version)
            else:
                teacher = LocalTeacher(model, tokenizer, config.model)
        learner = Learner(model, algorithm, learner_config, ref_model=ref_model, teacher=teacher)
        if saved:
            learner.load_trainer_state(checkpoint.trainer_state(saved[-1]))
            assert rng is not None
            checkpoint.set_rng_state(rng)
        if saved and isinstance(teacher, LocalTeacher) and progress.policy_version:
            teacher.publish(saved[-1], progress.policy_version)
        if self.rank != 0:
            self.follow(learner)
            return {}
        policy = learner.policy  # the whole weights (under FSDP a copy, which every step refreshes)

        sampling = Sampling(config.temperature, 1.0, config.max_new_tokens)
        generator: HFGenerator | OpenAIGenerator
        if args.weight_sync == "lora" and config.lora is None:
            raise RunError("--weight-sync lora needs a LoRA run (--lora-rank); this one trains all the weights")
        if args.openai_url:
            generator = OpenAIGenerator(
                args.openai_url,
                config.model,
                sampling,
                weight_sync=args.weight_sync,
                keep_adapters=config.max_staleness + 1,  # the adapters requests in flight may still name
            )
            await generator.check_model()  # another model's server: a one-line error, before anything runs
            await self.sync_server(generator, saved[-1] if saved else None, progress.policy_version)
        else:  # the learner's own model object, or (rolling out while it trains) a copy of its own
            sampler = policy if not config.max_staleness else copy.deepcopy(policy).requires_grad_(False)
            generator = HFGenerator(sampler, tokenizer, sampling, seed=config.seed + progress.step)
        generator.policy_version = progress.policy_version
        buffer = RedisBuffer(
            redis_url, prefix=progress.redis_prefix, consumer=progress.consumer, max_staleness=config.max_staleness
        )
        rollout_config = RolloutConfig(
            env=config.env,
            group_size=config.group_size,
            max_steps=config.max_turns,
            max_new_tokens=config.max_new_tokens,
            max_prompt_tokens=config.max_prompt_tokens,
            concurrency=config.concurrency,
        )
        last: dict[str, Any] = {}
        evaluation: dict[str, Any] = {}
        ahead: Ahead | None = None
        try:
            async with AsyncEnvClient(env_url, retries=6) as client:
                total = (await client.tasks(config.env, config.split, 0, 1)).total
                roller = Roller(client, generator, tokenizer, agent(config), buffer, rollout_config)
                # what this run held when it was killed: acknowledged now if the last checkpoint trained it
                held = await buffer.get(config.groups, policy_version=progress.policy_version)
                done = set(progress.extra.get("trained", []))
                if stale := [d.id for d in held if d.id in done]:
                    await buffer.ack(stale)
                    held = [d for d in held if d.id not in done]
                # the rounds already on the buffer (a killed asynchronous run made some ahead)
                made = (await buffer.stats()).length
                first = progress.step + made // config.groups
                rollout_s: dict[int, float] = {}

                async def produce(k: int) -> None:
                    """Round k: step k's tasks played into the buffer (the first round only what is missing)."""
                    t = time.perf_counter()
                    tasks = task_ids(config, total, k)
                    if k == first and k == progress.step:  # groups finish out of order: count what is held
                        tasks = list((Counter(tasks) - Counter(d.group.task_id for d in held)).elements())
                    elif k == first:  # a round a killed run left half-made: the rest of its count
                        tasks = tasks[made % config.groups :]
                    if isinstance(generator, HFGenerator):  # a round's draws: its own
                        generator.engine.rng.manual_seed(config.seed * 1_000_003 + k)
                    with tqdm(total=len(tasks), desc=f"round {k + 1} rollout", unit="group", leave=False) as rb:
                        summary = await roller.run(tasks, on_group=lambda _: rb.update())
                    if summary.episodes and summary.ends["fault"] == summary.episodes:
                        raise RunError(  # a server on old weights, a sampling mismatch: nothing to learn
                            f"every episode of round {k + 1} faulted (the warnings above say why)"
                        )
                    if summary.unsaved:
                        raise RuntimeError(f"{summary.unsaved} group(s) could not be written to the buffer")
                    rollout_s[k] = time.perf_counter() - t

                ahead = Ahead(
                    produce,
                    first=first,
                    end=config.steps,
                    learned=progress.step,
                    max_staleness=config.max_staleness,
                )
                ahead.start()
                bar = tqdm(total=config.steps, initial=progress.step, desc="training steps", unit="step")
                for step in range(progress.step, config.steps):
                    clock = time.perf_counter()
                    await ahead.ready(step)  # this step's round is on the buffer
                    waited = time.perf_counter() - clock
                    deliveries, held = held, []
                    while len(deliveries) < config.groups:  # the oldest groups: this round's
                        got = await buffer.get(config.groups - len(deliveries), policy_version=progress.policy_version)
                        if not got:
                            break
                        deliveries += got
                    print(f"step {step + 1}: learning on {len(deliveries)} groups", flush=True)
                    groups = self.share(([d.group for d in deliveries], step, progress.policy_version))[0]
                    metrics = await self._learn(learner, buffer, groups, step, progress.policy_version)
                    progress.step = step + 1
                    progress.policy_version += 1
                    progress.samples_seen += int(metrics.get("training/samples", 0))
                    progress.tokens_seen += int(metrics.get("training/tokens", 0))
                    progress.extra["trained"] = [d.id for d in deliveries]
                    t = time.perf_counter()
                    path = checkpoint.save(
                        self.dir / "checkpoints",
                        progress,
                        policy,
                        tokenizer,
                        learner.trainer_state(),
                        keep=config.keep_checkpoints,
                        merge=config.lora is not None and config.lora.save_merged,
                    )
                    metrics["timing_s/save_checkpoint"] = time.perf_counter() - t
                    if lost := await buffer.ack([d.id for d in deliveries]):
                        raise RuntimeError(f"{len(lost)} trained group(s) were claimed by another learner: {lost[:3]}")
                    t = time.perf_counter()
                    if isinstance(generator, OpenAIGenerator):  # the server loads the checkpoint just written
                        await generator.publish(str(path.resolve()), progress.policy_version)
                    elif generator.engine.model is policy:  # the same model object: nothing to copy
                        generator.policy_version = progress.policy_version
                    else:  # its own copy, which goes on generating: the weights go in between two steps
                        await generator.load_weights(policy, progress.policy_version)
                    if teacher is not None:
                        teacher.publish(path, progress.policy_version)
                    metrics["timing_s/update_weights"] = time.perf_counter() - t
                    metrics["timing_s/gen"] = rollout_s.pop(step, 0.0)
                    metrics["timing_s/wait_rollout"] = waited
                    metrics["training/dropped_stale_groups"] = float((await buffer.stats()).dropped_stale)
                    metrics["timing_s/step_total"] = time.perf_counter() - clock
                    last = {"step": progress.step, "policy_version": progress.policy_version, **metrics}
                    last["groups"] = [d.group.group_id for d in deliveries]
                    self.log(last)
                    bar.update()
                    bar.set_postfix(
                        score=f"{metrics.get('critic/score/mean', 0):.2f}",
                        success=f"{metrics.get('episode/success_rate', 0):.2f}",
                    )
                    every = config.eval.every
                    if config.eval.tasks and every and progress.step % every == 0 and progress.step < config.steps:
                        self.log(await self.evaluate(client, policy, tokenizer, progress.step))
                    await ahead.learned(progress.step)  # the next rounds may start
                bar.close()
                if config.eval.tasks:
                    evaluation = await self.evaluate(client, policy, tokenizer, progress.step)
                    self.log(evaluation)
        finally:
            self.share(None)  # the other processes stop
            if ahead is not None:
                await ahead.aclose()
            await generator.aclose()
            await buffer.close()
            if teacher is not None:
                teacher.close()
            self.report.close()
        return {"last": last, "eval": evaluation, "progress": progress}

    @staticmethod
    async def sync_server(generator: Any, last: Path | None, version: int) -> None:
        """A completions server starts on this run's policy: a fresh run's, or its last checkpoint's
        (loaded unless the server already has it); a server on a newer policy is another run's.
        vLLM (`weight_sync="lora"`) says no version: a resumed run loads its adapter again."""
        if generator.weight_sync == "lora":
            if last is not None and version:
                await generator.publish(str(last.resolve()), version)
            return
        served = int((await generator.server_policy())["policy_version"])
        if served > version:
            raise RunError(
                f"the completions server at --openai-url serves policy version {served}, newer than this run's "
                f"{version}: it serves another run (restart it)"
            )
        if served < version and last is not None:
            print(f"the completions server is on policy version {served}: loading {last}")
            await generator.publish(str(last.resolve()), version)

    async def _learn(self, learner: Any, buffer: Any, groups: list[Any], step: int, version: int) -> dict[str, float]:
        """The learner step in a worker thread, the buffer kept alive meanwhile (no one claims a live
        learner's groups)."""
        loop = asyncio.get_running_loop()
        work: asyncio.Future[dict[str, float]] = loop.create_future()

        def settle(result: dict[str, float] | None, error: BaseException | None) -> None:
            if work.done():
                return
            if error is not None:
                work.set_exception(error)
            else:
                work.set_result(result or {})

        def run() -> None:
            try:
                result = learner.step(groups, step, version)
            except BaseException as e:  # noqa: BLE001 - handed to the awaiting loop
                loop.call_soon_threadsafe(settle, None, e)
            else:
                loop.call_soon_threadsafe(settle, result, None)

        # a daemon thread, so Ctrl-C or SIGTERM stops the run now, not after the step (the default
        # executor's threads are joined at exit)
        threading.Thread(target=run, name="learner-step", daemon=True).start()
        while not work.done():
            await asyncio.wait({work}, timeout=10.0)
            if not work.done():
                await buffer.keepalive()
        return dict(work.result())

    async def evaluate(self, client: Any, model: Any, tokenizer: Any, step: int) -> dict[str, Any]:
        """The validation split, as the reference evaluates (`trainer/evaluation.py`)."""
        from trainer.evaluation import evaluate

        config = self.config
        record = await evaluate(
            client,
            model,
            tokenizer,
            agent(config),
            env=config.env,
            split=config.eval.split_for(config.env),
            tasks=config.eval.tasks,
            temperature=config.eval.temperature_for(config.env),
            max_turns=config.max_turns,
            max_new_tokens=config.max_new_tokens,
            max_prompt_tokens=config.max_prompt_tokens,
            seed=config.seed,
            concurrency=config.concurrency,
        )
        return {"step": step} | record


def write_config(directory: Path, config: Any) -> None:
    """`config.json`, replaced whole (a reader never sees half of it)."""
    tmp = directory / f".config.json.{os.getpid()}"
    tmp.write_text(config.model_dump_json(indent=2))
    tmp.replace(directory / "config.json")


def start_processes() -> tuple[int, int]:
    """Under torchrun (`WORLD_SIZE` > 1): join its process group and give `(rank, world size)`;
    alone: `(0, 1)`. The group is gloo's, and NCCL's for CUDA tensors where there is a GPU (objects
    and host tensors still go through gloo)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    import torch
    import torch.distributed as dist

    # the other processes wait in a collective while the first rolls out and evaluates: a long timeout
    timeout = datetime.timedelta(hours=2)
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("cpu:gloo,cuda:nccl", timeout=timeout)
    else:
        dist.init_process_group("gloo", timeout=timeout)
    return dist.get_rank(), dist.get_world_size()


def process_rank() -> tuple[int, int]:
    """`(rank, world size)` under torchrun's process group, else `(0, 1)`."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def summary_lines(result: dict[str, Any], directory: Path) -> list[str]:
    last, evaluation, progress = result["last"], result["eval"], result["progress"]
    lines = [f"steps: {progress.step} (policy version {progress.policy_version}, {progress.samples_seen} samples)"]
    if last:
        lines.append(
            f"last step: score {last.get('critic/score/mean', 0):.3f}, "
            f"success {last.get('episode/success_rate', 0):.2f}, "
            f"valid actions {last.get('episode/valid_action_ratio', 0):.2f}, pg_loss {last.get('actor/pg_loss', 0):.4f}"
        )
        if "sdar/gate_mean" in last:
            lines.append(
                f"SDAR gate: mean {last['sdar/gate_mean']:.3f}, active {last['sdar/gate_active_ratio']:.3f}, "
                f"teacher gap {last['sdar/teacher_gap_mean']:.3f}"
            )
    if evaluation:
        lines.append(
            f"eval on {evaluation['eval']}: success {evaluation['val/success_rate']:.2f} over "
            f"{evaluation['val/episodes']} episodes, invalid rate {evaluation['val/invalid_rate']:.2f}, "
            f"mean length {evaluation['val/episode_length']:.1f}"
        )
    lines.append(f"run directory: {directory}")
    return lines


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    from trainer.generation import GenerationError  # no torch

    args = parse_args(argv)
    if args.list_presets:
        from trainer.presets import listing

        print(listing())
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from transformers.utils import logging as hf_logging

    from shared.launch import ServiceProcess
    from shared.redis import redis_server
    from trainer.config import validate

    hf_logging.disable_progress_bar()
    signal.signal(signal.SIGTERM, _interrupt)  # stop what this run started, as on Ctrl-C

    rank, world = start_processes()
    if rank != 0:  # the first process names the run
        import torch.distributed as dist

        box: list[Any] = [None]
        dist.broadcast_object_list(box, src=0)
        directory, config, args.teacher_url = Path(box[0][0]), validate(box[0][1]), box[0][2]
    elif args.resume is not None:
        directory = args.resume
        try:
            fields = json.loads((directory / "config.json").read_text())
            if args.steps is not None:  # a resume may extend the run
                fields["steps"] = args.steps
            config = validate(fields)
        except (ValueError, TypeError) as e:
            raise SystemExit(f"python -m trainer.run: error: {directory}/config.json: {e}") from None
        write_config(directory, config)
    else:
        config = args.config
        stamp = time.strftime("%Y%m%d-%H%M%S")
        directory = args.runs_dir / f"{stamp}-{config.env}-{config.algorithm.type}"
        directory.mkdir(parents=True, exist_ok=False)
        salt = uuid.uuid4().hex[:6]
        config = config.model_copy(
            update={"redis_prefix": f"sdar:run:{directory.name}-{salt}:", "consumer": f"learner-{salt}"}
        )
        write_config(directory, config)
    if rank == 0:
        print(f"config:\n{config.model_dump_json(indent=2)}", flush=True)
        print(f"run directory: {directory}" + (f" ({world} learner processes)" if world > 1 else ""), flush=True)
        given = args.env_url or args.teacher_url or args.redis_url or os.environ.get("REDIS_URL")
        if not given:
            from trainer.stack import running_stack  # given URLs win; then a running stack; then our own

            found, why = running_stack(config.env, config.model, config.algorithm.needs_teacher)
            if found is not None:
                teacher = f", teacher {found.teacher_url}" if found.teacher_url else ""
                print(
                    f"using the running stack: env service {found.env_url}, Redis {found.redis_url}{teacher}",
                    flush=True,
                )
                args.env_url, args.redis_url, args.teacher_url = found.env_url, found.redis_url, found.teacher_url
            else:
                print(f"no running stack to use ({why}): starting the embedded services", flush=True)
    if rank == 0 and world > 1:  # the run, and the teacher every process scores with
        import torch.distributed as dist

        dist.broadcast_object_list([(str(directory), config.model_dump(), args.teacher_url)], src=0)
    if rank != 0:  # the first process rolls out, checkpoints, evaluates and reports
        asyncio.run(Run(config, directory, args).train("", ""))
        return 0
    run = Run(config, directory, args)
    with contextlib.ExitStack() as stack:
        try:
            env_url = args.env_url
            if env_url is None:
                print(f"starting the env service (python -m services.envs --envs {config.env}) ...", flush=True)
                extra = ["--cache-dir", str(args.cache_dir)] if args.cache_dir else []
                service = ServiceProcess("services.envs", ["--envs", config.env, *extra], die_with_parent=True)
                env_url = stack.enter_context(service).url
            redis_url = stack.enter_context(redis_server(args.redis_url, die_with_parent=True))
            result = asyncio.run(run.train(env_url, redis_url))
        except KeyboardInterrupt:
            result = None
        except (RunError, GenerationError) as e:  # the services it started are stopped by now
            raise SystemExit(f"python -m trainer.run: error: {e}") from None
    if result is None:  # the services are stopped; a learner step may still run in its daemon thread
        print(f"\ninterrupted; stopped what this run started. Resume with --resume {directory}", file=sys.stderr)
        sys.stderr.flush()
        os._exit(130)  # not through interpreter shutdown, which would wait on (or abort) that thread
    lines = summary_lines(result, directory)
    run.report.finish(lines)
    print("\n".join(lines))
    print(f"plots: {directory / 'plots'}; summary: {directory / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
