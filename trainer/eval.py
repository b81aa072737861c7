"""`python -m trainer.eval`: evaluate a checkpoint, a run's last checkpoint, or a base model on a
validation split, on its own, and print the paper's table (`trainer/evaluation.py`).

    python -m trainer.eval --checkpoint runs/20261202-0130-alfworld-sdar          # the run's last checkpoint
    python -m trainer.eval --checkpoint runs/.../checkpoints/step-000002 --limit 20
    python -m trainer.eval --model smollm2 --env alfworld --split valid_unseen --limit 10

Given a run (or a checkpoint inside one), its env and rollout settings are the defaults; flags win.
Without `--env-url` it starts the env service as a local process and stops it at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shared.model_specs import DTYPE_NAMES, ModelNotFound, check_spec, torch_device
from trainer.presets import ENVS


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m trainer.eval", description="Evaluate a checkpoint or a model on a validation split."
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--checkpoint", type=Path, metavar="DIR", help="a run directory or one of its checkpoints")
    what.add_argument("--model", help="a base model: smollm2, tiny, or a model directory")
    p.add_argument("--env", choices=ENVS, help="the env (default: the run's; else alfworld)")
    p.add_argument("--split", help="default: the run's evaluation split, else valid_seen (ALFWorld) or test")
    p.add_argument("--limit", type=int, help="tasks, spread evenly over the split (default: all of it)")
    p.add_argument("--temperature", type=float, help="default: 0.4, greedy for Search-QA (the reference's)")
    p.add_argument("--max-turns", type=int, help="env steps per episode (default: the run's; else the env's own)")
    p.add_argument("--max-new-tokens", type=int, help="response tokens per turn (default: the run's; else 512)")
    p.add_argument("--concurrency", type=int, default=64, help="episodes in flight (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=DTYPE_NAMES, default="float32")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write the record as JSON")
    p.add_argument("--env-url", help="an env service to use (default: one started here)")
    p.add_argument("--cache-dir", type=Path, help="where models and generated games are cached")
    args = p.parse_args(argv)
    for name in ("limit", "max_turns", "max_new_tokens", "concurrency"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, not {value}")
    if args.temperature is not None and not 0 <= args.temperature <= 10:
        p.error(f"--temperature must be in [0, 10], not {args.temperature}")
    if args.env_url is not None and not args.env_url.startswith(("http://", "https://")):
        p.error("--env-url must be an http(s) URL")
    try:
        if args.device != "cpu":
            torch_device(args.device)
        args.weights, args.run = locate(args.checkpoint) if args.checkpoint else (args.model, None)
        if args.checkpoint is None:
            check_spec(args.model)
    except (ValueError, ModelNotFound) as e:
        p.error(str(e))
    return args


def locate(path: Path) -> tuple[str, dict[str, Any] | None]:
    """A checkpoint's weights directory and its run's config (None outside a run): `path` is a run
    directory (its last checkpoint) or a checkpoint directory."""
    if (path / "checkpoints").is_dir():
        saved = sorted(p for p in (path / "checkpoints").iterdir() if p.name.startswith("step-"))
        if not saved:
            raise ValueError(f"--checkpoint {path}: the run has no checkpoint yet")
        weights, run = saved[-1], path
    elif (path / "model.safetensors").is_file() or (path / "adapter_model.safetensors").is_file():
        weights, run = path, path.parent.parent
    else:
        raise ValueError(f"--checkpoint {path}: neither a run directory nor a checkpoint (no model.safetensors)")
    config = None
    if (run / "config.json").is_file() and (run / "checkpoints").is_dir():
        try:
            config = json.loads((run / "config.json").read_text())
        except ValueError as e:
            raise ValueError(f"--checkpoint {path}: {run}/config.json does not read: {e}") from None
    return str(weights), config


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """What is evaluated and how: the flags, else the run's config, else the reference's defaults."""
    from trainer.config import EvalConfig, validate

    run = validate(args.run) if args.run is not None else None
    env = args.env or (run.env if run else "alfworld")
    if run is not None and env != run.env:
        run = None  # another env than the run's: its rollout settings do not apply
    evaluation = run.eval if run else EvalConfig()  # no run: the reference's validation
    split = args.split or evaluation.split_for(env)
    temperature = args.temperature if args.temperature is not None else evaluation.temperature_for(env)
    return {
        "env": env,
        "split": split,
        "temperature": temperature,
        "max_turns": args.max_turns or (run.max_turns if run else None),
        "max_new_tokens": args.max_new_tokens or (run.max_new_tokens if run else 512),
        "max_prompt_tokens": run.max_prompt_tokens if run else None,
        "history": run.history if run else None,
    }


async def play(args: argparse.Namespace, chosen: dict[str, Any], env_url: str) -> dict[str, Any]:
    from shared.envs_client import AsyncEnvClient
    from shared.models import DTYPES, load_model
    from trainer.agents import protocol
    from trainer.evaluation import evaluate

    loaded = load_model(args.weights, cache_dir=args.cache_dir, dtype=DTYPES[args.dtype])
    loaded.model.to(torch_device(args.device))
    agent = protocol(chosen["env"])
    if chosen["history"] is not None:
        agent = dataclasses.replace(agent, history=chosen["history"])
    async with AsyncEnvClient(env_url, retries=6) as client:
        total = (await client.tasks(chosen["env"], chosen["split"], 0, 1)).total
        return await evaluate(
            client,
            loaded.model,
            loaded.tokenizer,
            agent,
            env=chosen["env"],
            split=chosen["split"],
            tasks=min(args.limit or total, total),
            temperature=chosen["temperature"],
            max_turns=chosen["max_turns"],
            max_new_tokens=chosen["max_new_tokens"],
            max_prompt_tokens=chosen["max_prompt_tokens"],
            seed=args.seed,
            concurrency=args.concurrency,
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from transformers.utils import logging as hf_logging

    from shared.launch import ServiceProcess
    from trainer.evaluation import table

    hf_logging.disable_progress_bar()
    try:
        chosen = settings(args)
    except ValueError as e:
        raise SystemExit(f"python -m trainer.eval: error: {e}") from None
    print(f"evaluating {args.weights} on {chosen['env']} {chosen['split']} at temperature {chosen['temperature']}")
    with contextlib.ExitStack() as stack:
        env_url = args.env_url
        if env_url is None:
            extra = ["--cache-dir", str(args.cache_dir)] if args.cache_dir else []
            service = ServiceProcess("services.envs", ["--envs", chosen["env"], *extra], die_with_parent=True)
            env_url = stack.enter_context(service).url
        record = asyncio.run(play(args, chosen, env_url))
    record = {"model": args.weights, "env": chosen["env"], "temperature": chosen["temperature"]} | record
    print(table(chosen["env"], record))
    print(f"{record['val/episodes']} episodes, {record['val/faulted']} faulted")
    if args.json is not None:
        args.json.write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
