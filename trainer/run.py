"""`python -m trainer.run`: the main job. Plays groups of episodes, trains on them, evaluates.

With no arguments, on a machine with nothing running, it starts what it needs (the env service as a
local process, an embedded Redis from the pip-installed binary, the teacher in process on the
policy's own model object), trains SmolLM2-135M-Instruct with SDAR on ALFWorld for a few small steps,
evaluates on a few `valid_seen` games at temperature 0.4, and writes `runs/<timestamp>/`:
`config.json`, `metrics.jsonl` (a line per step and per evaluation), `checkpoints/`. Given URLs
(`--env-url`, `--teacher-url`, `--redis-url`) replace the embedded services.

One step, in order: take back any groups this run held when it was killed, roll out the rest of the
step's groups into the buffer (`trainer/rollout.py`), take them from the buffer, train
(`trainer/learner.py`), write the checkpoint, acknowledge the groups, publish the new policy version
to generation (the same model object) and to the teacher. A kill at any point loses nothing and trains
nothing twice: `--resume RUN_DIR` reloads the last checkpoint, acknowledges the groups it had already
trained on, and trains the ones it held but had not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.model_specs import DTYPE_NAMES, ModelNotFound, check_spec

log = logging.getLogger("trainer.run")
ENVS = ("alfworld", "webshop", "searchqa", "counter")
ALGORITHM_TYPES = ("sdar", "grpo", "grpo_opsd", "opsd", "rlsd")
EVAL_TEMPERATURE = 0.4
"""Validation sampling of the reference for ALFWorld and WebShop (Search-QA is greedy)."""


class RunConfig(BaseModel):
    """Everything a run is made of; saved as `RUN_DIR/config.json` and reused by `--resume`."""

    model_config = ConfigDict(extra="forbid")

    env: str = "alfworld"
    model: str = "smollm2"
    steps: int = Field(default=2, ge=1)
    groups: int = Field(default=2, ge=1)
    """Tasks per step (each played `group_size` times)."""
    group_size: int = Field(default=4, ge=2)
    split: str = "train"
    max_turns: int | None = Field(default=2, ge=1)
    """Env steps per episode (None: the env's own limit)."""
    max_new_tokens: int = Field(default=96, ge=1)
    temperature: float = Field(default=1.0, gt=0, le=10)
    eval_split: str | None = None
    """Default: `valid_seen` for ALFWorld, `test` for the others."""
    eval_tasks: int = Field(default=4, ge=0)
    """Validation tasks played once each at the end (0: no evaluation)."""
    eval_every: int = Field(default=0, ge=0)
    """Also evaluate every this many steps (0: only at the end)."""
    concurrency: int = Field(default=64, ge=1)
    """Episodes in flight at once (1 makes the rollouts of a seed reproducible)."""
    seed: int = 0
    keep_checkpoints: int = Field(default=2, ge=1)
    redis_prefix: str = ""
    """Default: `sdar:run:<run name>-<random>:`, so runs never share a stream."""
    consumer: str = "learner-0"
    """The buffer consumer of this run (set once at creation, so a resume takes back what it held)."""
    algorithm: dict[str, Any] = Field(default_factory=lambda: {"type": "sdar"})
    learner: dict[str, Any] = Field(default_factory=dict)


# -- the command line --------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m trainer.run", description="Train an agent with SDAR (or GRPO).")
    p.add_argument("--env", choices=ENVS, default="alfworld")
    p.add_argument("--algorithm", choices=ALGORITHM_TYPES, default="sdar")
    p.add_argument("--model", default="smollm2", help="smollm2 (default), tiny, or a model directory")
    p.add_argument("--steps", type=int, help="training steps (default 2; with --resume: the run's own)")
    p.add_argument("--groups", type=int, default=2, help="tasks per step (default 2)")
    p.add_argument("--group-size", type=int, default=4, help="episodes per task, G (default 4)")
    p.add_argument("--max-turns", type=int, default=2, help="env steps per episode (default 2; 0: the env's)")
    p.add_argument("--max-new-tokens", type=int, default=96, help="tokens per turn (default 96)")
    p.add_argument("--temperature", type=float, default=1.0, help="rollout sampling temperature (default 1.0)")
    p.add_argument("--eval-tasks", type=int, default=4, help="validation tasks at the end (default 4; 0: none)")
    p.add_argument("--eval-every", type=int, default=0, help="evaluate every N steps too (default 0: at the end)")
    p.add_argument("--lr", type=float, default=1e-6, help="learning rate (default 1e-6, the reference's)")
    p.add_argument("--kl-coef", type=float, help="KL coefficient (default the algorithm's, 0.01)")
    p.add_argument("--lam", type=float, help="SDAR's lambda (default 0.01)")
    p.add_argument("--beta", type=float, help="SDAR's gate beta (default 5.0)")
    p.add_argument("--mini-batch-size", type=int, default=256, help="step-samples per optimizer step (256)")
    p.add_argument("--micro-batch-tokens", type=int, default=8192, help="padded tokens per forward pass (8192)")
    p.add_argument("--old-logprobs", choices=["recompute", "sampler"], default="recompute")
    p.add_argument("--aggregation", choices=["global", "legacy"], default="global")
    p.add_argument(
        "--autocast",
        choices=["none", "bfloat16"],
        default="bfloat16",
        help="the learner's forward passes under bfloat16 autocast, weights and optimizer in float32 (default; "
        "the reference trains bf16 mixed precision) or none (float32 throughout)",
    )
    p.add_argument("--dtype", choices=DTYPE_NAMES, default="float32", help="weights (default float32)")
    p.add_argument("--concurrency", type=int, default=64, help="episodes in flight (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where run directories go (default runs/)")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a run from its last checkpoint")
    p.add_argument("--env-url", help="an env service to use (default: one started here)")
    p.add_argument("--teacher-url", help="a teacher service to use (default: the teacher in process)")
    p.add_argument("--redis-url", help="the buffer's Redis (default: $REDIS_URL, else an embedded one)")
    p.add_argument("--cache-dir", type=Path, help="where models and generated games are cached")
    args = p.parse_args(argv)
    if args.steps is not None and args.steps < 1:
        p.error(f"--steps must be at least 1, not {args.steps}")
    for name in ("groups", "max_new_tokens", "concurrency", "mini_batch_size", "micro_batch_tokens"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, not {getattr(args, name)}")
    if args.group_size < 2:
        p.error("--group-size must be at least 2 (GRPO compares the episodes of a group)")
    for name in ("max_turns", "eval_tasks", "eval_every"):
        if getattr(args, name) < 0:
            p.error(f"--{name.replace('_', '-')} must not be negative")
    for flag in ("env_url", "teacher_url"):
        url = getattr(args, flag)
        if url is not None and not url.startswith(("http://", "https://")):
            p.error(f"--{flag.replace('_', '-')} must be an http(s) URL")
    if args.resume is not None and not (args.resume / "config.json").is_file():
        p.error(f"--resume {args.resume}: not a run directory (no config.json)")
    if args.resume is None:
        try:
            check_spec(args.model)
        except ModelNotFound as e:
            p.error(str(e))
    for flag, name in (("env_url", "env service"), ("teacher_url", "teacher service")):
        url = getattr(args, flag)
        if url is not None and not reachable(url):
            p.error(f"cannot reach the {name} at {url} (GET /health)")
    return args


def reachable(url: str) -> bool:
    """Whether a service answers its `/health` (a wrong URL is an error now, not after a long backoff)."""
    import httpx

    try:
        httpx.get(f"{url.rstrip('/')}/health", timeout=5.0)
    except httpx.HTTPError:
        return False
    return True


def config_from(args: argparse.Namespace) -> RunConfig:
    algorithm: dict[str, Any] = {"type": args.algorithm}
    for name in ("kl_coef", "lam", "beta"):
        if getattr(args, name) is not None:
            algorithm[name] = getattr(args, name)
    steps = args.steps or 2
    warmup = 0
    if args.env == "searchqa":  # the reference's Search-QA run: KL 0.001, a warm-up over a tenth of it
        algorithm.setdefault("kl_coef", 0.001)
        warmup = int(0.1 * steps)
    learner = {
        "warmup_steps": warmup,
        "lr": args.lr,
        "mini_batch_size": args.mini_batch_size,
        "micro_batch_tokens": args.micro_batch_tokens,
        "old_logprobs": args.old_logprobs,
        "aggregation": args.aggregation,
        "autocast": args.autocast,
        "seed": args.seed,
    }
    return RunConfig(
        env=args.env,
        model=args.model,
        steps=steps,
        groups=args.groups,
        group_size=args.group_size,
        max_turns=args.max_turns or None,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        eval_tasks=args.eval_tasks,
        eval_every=args.eval_every,
        concurrency=args.concurrency,
        seed=args.seed,
        algorithm=algorithm,
        learner=learner,
    )


# -- the run -----------------------------------------------------------------------------------


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

    def log(self, record: dict[str, Any]) -> None:
        with self.metrics.open("a") as f:
            f.write(json.dumps(record) + "\n")

    async def train(self, env_url: str, redis_url: str) -> dict[str, Any]:
        from tqdm import tqdm

        from shared.envs_client import AsyncEnvClient
        from shared.models import DTYPES, load_model
        from trainer import checkpoint
        from trainer.agents import protocol
        from trainer.algorithms import make
        from trainer.buffer import RedisBuffer
        from trainer.engine import HFGenerator
        from trainer.generation import Sampling
        from trainer.learner import Learner, LearnerConfig
        from trainer.rollout import Roller, RolloutConfig
        from trainer.teacher import HTTPTeacher, LocalTeacher, Teacher

        config, args = self.config, self.args
        algorithm = make(config.algorithm)
        learner_config = LearnerConfig(**config.learner)
        saved = checkpoint.checkpoints(self.dir / "checkpoints")
        progress = checkpoint.Progress(consumer=config.consumer, redis_prefix=config.redis_prefix)
        rng: dict[str, Any] | None = None
        if saved:  # state first, before any iterator or rollout is built
            progress, rng = checkpoint.read_progress(saved[-1])
            print(f"resuming from {saved[-1]} (step {progress.step}, policy version {progress.policy_version})")

        dtype = DTYPES[args.dtype]
        loaded = load_model(str(saved[-1]) if saved else config.model, cache_dir=args.cache_dir, dtype=dtype)
        model, tokenizer = loaded.model, loaded.tokenizer
        ref_model = None
        if algorithm.needs_ref:  # the initial policy, never the checkpoint
            ref_model = load_model(config.model, cache_dir=args.cache_dir, dtype=dtype).model
            ref_model.requires_grad_(False)
        teacher: Teacher | None = None
        if algorithm.needs_teacher:
            teacher = (
                HTTPTeacher(args.teacher_url) if args.teacher_url else LocalTeacher(model, tokenizer, config.model)
            )
            if saved and isinstance(teacher, HTTPTeacher) and teacher.version() < progress.policy_version:
                teacher.publish(saved[-1], progress.policy_version)  # a teacher that outlived us may have it
        learner = Learner(model, algorithm, learner_config, ref_model=ref_model, teacher=teacher)
        if saved:
            checkpoint.load_trainer_state(saved[-1], learner.optimizer, learner.scheduler)
            assert rng is not None
            checkpoint.set_rng_state(rng)
        if saved and isinstance(teacher, LocalTeacher) and progress.policy_version:
            teacher.publish(saved[-1], progress.policy_version)

        sampling = Sampling(config.temperature, 1.0, config.max_new_tokens)
        generator = HFGenerator(model, tokenizer, sampling, seed=config.seed + progress.step)
        generator.policy_version = progress.policy_version
        buffer = RedisBuffer(redis_url, prefix=progress.redis_prefix, consumer=progress.consumer, max_staleness=0)
        rollout_config = RolloutConfig(
            env=config.env,
            group_size=config.group_size,
            max_steps=config.max_turns,
            max_new_tokens=config.max_new_tokens,
            concurrency=config.concurrency,
        )
        last: dict[str, Any] = {}
        evaluation: dict[str, Any] = {}
        try:
            async with AsyncEnvClient(env_url, retries=6) as client:
                total = (await client.tasks(config.env, config.split, 0, 1)).total
                roller = Roller(client, generator, tokenizer, protocol(config.env), buffer, rollout_config)
                bar = tqdm(total=config.steps, initial=progress.step, desc="training steps", unit="step")
                for step in range(progress.step, config.steps):
                    clock = time.perf_counter()
                    # what this run held when it was killed: acknowledged now if the last checkpoint trained it
                    deliveries = await buffer.get(config.groups, policy_version=progress.policy_version)
                    done = set(progress.extra.get("trained", []))
                    if stale := [d.id for d in deliveries if d.id in done]:
                        await buffer.ack(stale)
                        deliveries = [d for d in deliveries if d.id not in done]
                    missing = config.groups - len(deliveries)
                    rollout_s = 0.0
                    if missing:
                        t = time.perf_counter()
                        held = Counter(d.group.task_id for d in deliveries)  # groups finish out of order
                        tasks = list((Counter(task_ids(config, total, step)) - held).elements())
                        generator.engine.rng.manual_seed(config.seed * 1_000_003 + step)  # a step's draws: its own
                        with tqdm(total=missing, desc=f"step {step + 1} rollout", unit="group", leave=False) as rb:
                            summary = await roller.run(tasks, on_group=lambda _: rb.update())
                        if summary.unsaved:
                            raise RuntimeError(f"{summary.unsaved} group(s) could not be written to the buffer")
                        rollout_s = time.perf_counter() - t
                        while len(deliveries) < config.groups:
                            got = await buffer.get(
                                config.groups - len(deliveries), policy_version=progress.policy_version, block_ms=1000
                            )
                            if not got:
                                break
                            deliveries += got
                    print(f"step {step + 1}: learning on {len(deliveries)} groups", flush=True)
                    metrics = await self._learn(learner, buffer, [d.group for d in deliveries], step)
                    progress.step = step + 1
                    progress.policy_version += 1
                    progress.samples_seen += int(metrics.get("training/samples", 0))
                    progress.tokens_seen += int(metrics.get("training/tokens", 0))
                    progress.extra["trained"] = [d.id for d in deliveries]
                    t = time.perf_counter()
                    path = checkpoint.save(
                        self.dir / "checkpoints",
                        progress,
                        model,
                        tokenizer,
                        learner.optimizer,
                        learner.scheduler,
                        keep=config.keep_checkpoints,
                    )
                    metrics["timing_s/save_checkpoint"] = time.perf_counter() - t
                    if lost := await buffer.ack([d.id for d in deliveries]):
                        raise RuntimeError(f"{len(lost)} trained group(s) were claimed by another learner: {lost[:3]}")
                    t = time.perf_counter()
                    generator.policy_version = progress.policy_version  # the same model object: nothing to copy
                    if teacher is not None:
                        teacher.publish(path, progress.policy_version)
                    metrics["timing_s/update_weights"] = time.perf_counter() - t
                    metrics["timing_s/gen"] = rollout_s
                    metrics["timing_s/step_total"] = time.perf_counter() - clock
                    last = {"step": progress.step, "policy_version": progress.policy_version, **metrics}
                    last["groups"] = [d.group.group_id for d in deliveries]
                    self.log(last)
                    bar.update()
                    bar.set_postfix(
                        score=f"{metrics.get('critic/score/mean', 0):.2f}",
                        success=f"{metrics.get('episode/success_rate', 0):.2f}",
                    )
                    if config.eval_every and progress.step % config.eval_every == 0 and progress.step < config.steps:
                        self.log(await self.evaluate(client, model, tokenizer, progress.step))
                bar.close()
                if config.eval_tasks:
                    evaluation = await self.evaluate(client, model, tokenizer, progress.step)
                    self.log(evaluation)
        finally:
            await generator.aclose()
            await buffer.close()
            if teacher is not None:
                teacher.close()
        return {"last": last, "eval": evaluation, "progress": progress}

    async def _learn(self, learner: Any, buffer: Any, groups: list[Any], step: int) -> dict[str, float]:
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
                result = learner.step(groups, step)
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
        """Each of `eval_tasks` validation tasks (spread over the split) played once at temperature 0.4
        (greedy for Search-QA), no skills in the prompt."""
        from tqdm import tqdm

        from shared.rollout_wire import GroupRecord
        from trainer.agents import protocol
        from trainer.buffer import MemoryBuffer
        from trainer.engine import HFGenerator
        from trainer.generation import Sampling
        from trainer.rollout import Roller, RolloutConfig

        config = self.config
        split = config.eval_split or ("valid_seen" if config.env == "alfworld" else "test")
        total = (await client.tasks(config.env, split, 0, 1)).total
        n = min(config.eval_tasks, total)
        tasks = [f"{config.env}/{split}/{i * total // n}" for i in range(n)]
        temperature = 0.0 if config.env == "searchqa" else EVAL_TEMPERATURE
        generator = HFGenerator(model, tokenizer, Sampling(temperature, 1.0, config.max_new_tokens), seed=config.seed)
        rollout_config = RolloutConfig(
            env=config.env, group_size=1, max_steps=config.max_turns, max_new_tokens=config.max_new_tokens
        )
        try:
            roller = Roller(client, generator, tokenizer, protocol(config.env), MemoryBuffer(), rollout_config)
            groups: list[GroupRecord] = []

            def finished(group: GroupRecord) -> None:
                groups.append(group)
                bar.update()

            with tqdm(total=n, desc=f"eval {split}", unit="task", leave=False) as bar:
                await roller.run(tasks, on_group=finished)
        finally:
            await generator.aclose()
        episodes = [(g, e) for g in groups for e in g.episodes if e.usable]
        steps = [s for _, e in episodes for s in e.steps]
        by_label: dict[str, list[bool]] = {}
        for g, e in episodes:
            by_label.setdefault(g.label or "all", []).append(e.won)
        record: dict[str, Any] = {
            "step": step,
            "eval": split,
            "val/success_rate": sum(e.won for _, e in episodes) / max(len(episodes), 1),
            "val/invalid_rate": sum(not s.valid for s in steps) / max(len(steps), 1),
            "val/episode_length": len(steps) / max(len(episodes), 1),
            "val/episodes": len(episodes),
            "val/faulted": sum(not e.usable for g in groups for e in g.episodes),
        }
        record |= {f"val/success_rate/{k}": sum(v) / len(v) for k, v in sorted(by_label.items())}
        return record


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
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from transformers.utils import logging as hf_logging

    from shared.launch import ServiceProcess
    from shared.redis import redis_server

    hf_logging.disable_progress_bar()
    signal.signal(signal.SIGTERM, _interrupt)  # stop what this run started, as on Ctrl-C

    if args.resume is not None:
        directory = args.resume
        try:
            config = RunConfig.model_validate_json((directory / "config.json").read_text())
        except ValidationError as e:
            raise SystemExit(f"python -m trainer.run: error: {directory}/config.json: {e.errors()[0]['msg']}") from None
        if args.steps is not None:  # a resume may extend the run
            config = config.model_copy(update={"steps": args.steps})
            (directory / "config.json").write_text(config.model_dump_json(indent=2))
    else:
        try:
            config = config_from(args)
            from trainer.algorithms import AlgorithmError, make
            from trainer.learner import LearnerConfig

            make(config.algorithm)
            LearnerConfig(**config.learner)
        except (ValidationError, AlgorithmError) as e:
            message = e.errors()[0]["msg"] if isinstance(e, ValidationError) else str(e)
            raise SystemExit(f"python -m trainer.run: error: {message}") from None
        stamp = time.strftime("%Y%m%d-%H%M%S")
        directory = args.runs_dir / f"{stamp}-{config.env}-{config.algorithm['type']}"
        directory.mkdir(parents=True, exist_ok=False)
        salt = uuid.uuid4().hex[:6]
        config = config.model_copy(
            update={"redis_prefix": f"sdar:run:{directory.name}-{salt}:", "consumer": f"learner-{salt}"}
        )
        (directory / "config.json").write_text(config.model_dump_json(indent=2))
    print(f"run directory: {directory}", flush=True)
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
    if result is None:  # the services are stopped; a learner step may still run in its daemon thread
        print(f"\ninterrupted; stopped what this run started. Resume with --resume {directory}", file=sys.stderr)
        sys.stderr.flush()
        os._exit(130)  # not through interpreter shutdown, which would wait on (or abort) that thread
    print("\n".join(summary_lines(result, directory)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
