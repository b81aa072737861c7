"""Learner benchmark: one learner step of `sdar` against `grpo` on the same batch, and each against the
bare forward + backward + optimizer step of the same tokens with no padding (the limit), side by side
in one run; then the share of padding tokens with and without length bucketing.

    python -m benchmarks.learner [--model smollm2] [--samples 8] [--repeats 2] [--autocast bfloat16]
    python -m benchmarks.learner --memory    # peak memory of a step, logits whole or in chunks

The batch is ALFWorld-like: groups of step-samples whose prompts run 600-720 tokens and responses
20-64 tokens (what SmolLM2's ALFWorld turns measure), random token ids, labelled with a task type so
the teacher retrieves the skills. Each configuration runs `--repeats` times on a fresh copy of the
model after a warm-up; the median counts.
"""

from __future__ import annotations

import argparse
import copy
import random
import uuid
from typing import Any

import torch

from benchmarks.teacher_scoring import timed
from services.teacher.scoring import prefix_groups
from shared.models import load_model
from shared.rollout_wire import GroupRecord, SamplingSettings, StepSample, Trajectory
from trainer.algorithms import make
from trainer.learner import Learner, LearnerConfig, Sample, micro_batches, response_logprobs, shape
from trainer.teacher import LocalTeacher, requests


def batch(
    samples: int, group_size: int, vocab: int, seed: int = 0, responses: tuple[int, int] = (20, 64)
) -> list[GroupRecord]:
    rng = random.Random(seed)
    groups = []
    for _ in range(max(1, samples // group_size)):
        episodes = []
        for k in range(group_size):
            prompt = [rng.randrange(100, vocab) for _ in range(rng.randint(600, 720))]
            response = [rng.randrange(100, vocab) for _ in range(rng.randint(*responses))]
            step = StepSample(
                step=0,
                policy_version=0,
                prompt_token_ids=prompt,
                response_token_ids=response,
                sampler_logprobs=[-2.0] * len(response),
                action="look",
                valid=k % 3 != 0,
                env_reward=0.0,
                won=k % 2 == 0,
                done=True,
                finish_reason="stop",
            )
            episodes.append(
                Trajectory(episode_id=uuid.uuid4().hex, steps=[step], end="done", won=k % 2 == 0, env_reward=0)
            )
        groups.append(
            GroupRecord(
                group_id=uuid.uuid4().hex,
                env="alfworld",
                task_id="alfworld/train/0",
                task="heat some egg and put it in garbagecan",
                task_type="pick_heat_then_place_in_recep",
                policy_version=0,
                sampling=SamplingSettings(temperature=1.0, top_p=1.0, max_new_tokens=64),
                logprobs_mode="processed_logprobs",
                backend="hf",
                episodes=episodes,
                usable=group_size,
                created_at=0.0,
            )
        )
    return groups


def bare_step(model: Any, samples: list[Sample], autocast: bool) -> None:
    """The limit: forward and backward of each sample alone (no padding), one AdamW step."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=0.01)
    total = sum(len(s.response) for s in samples)
    model.train()
    for s in samples:
        logprobs, _, mask = response_logprobs(model, [s], with_entropy=False, autocast=autocast)
        (-(logprobs * mask).sum() / total).backward()  # type: ignore[no-untyped-call]
    optimizer.step()
    model.eval()


def peak_rss_during(fn: Any) -> tuple[float, float]:
    """`fn()`'s peak resident memory above what the process held before it (MiB, sampled every
    2 ms), and its seconds."""
    import threading
    import time

    import psutil

    process = psutil.Process()
    start = process.memory_info().rss
    peak = start
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            time.sleep(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    clock = time.perf_counter()
    fn()
    seconds = time.perf_counter() - clock
    done.set()
    watcher.join()
    return (peak - start) / 2**20, seconds


def memory_one(model_name: str, chunk: int, autocast: str, checkpointing: bool) -> None:
    """One learner step (grpo, no reference) in this fresh process; prints its peak memory as JSON."""
    import json

    loaded = load_model(model_name)
    groups = batch(8, 4, len(loaded.tokenizer), seed=2, responses=(384, 512))
    config = LearnerConfig(
        autocast=autocast,  # type: ignore[arg-type]
        logits_chunk=chunk,
        gradient_checkpointing=checkpointing,
    )
    learner = Learner(loaded.model, make({"type": "grpo", "kl_coef": 0.0}), config)
    learner.step(groups, 0)  # warm-up: the optimizer's state exists after it
    import ctypes

    ctypes.CDLL("libc.so.6").malloc_trim(0)  # what the warm-up freed goes back, so the step's peak shows
    mib, seconds = peak_rss_during(lambda: learner.step(groups, 1))
    tokens = sum(len(s.response) for s in shape(groups).samples)
    print(json.dumps({"peak_mib": mib, "seconds": seconds, "response_tokens": tokens}))


def memory(model_name: str, autocast: str) -> None:
    """Peak memory of a learner step with the logits whole and in chunks, each in a fresh process."""
    import json
    import subprocess
    import sys

    print("| logits_chunk | gradient checkpointing | response tokens | peak above the loaded model, MiB | step s |")
    print("|---|---|---|---|---|")
    for chunk, checkpointing in ((0, False), (1024, False), (256, False), (1024, True)):
        command = [sys.executable, "-m", "benchmarks.learner", "--model", model_name, "--autocast", autocast]
        command += ["--memory-one", str(chunk)] + ["--checkpointing"] * checkpointing
        out = subprocess.run(command, capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        name = "0 (whole)" if chunk == 0 else str(chunk)
        print(
            f"| {name} | {'yes' if checkpointing else 'no'} | {r['response_tokens']} | {r['peak_mib']:.0f} | "
            f"{r['seconds']:.1f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.learner", description=__doc__)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--autocast", choices=["none", "bfloat16"], default="bfloat16")
    parser.add_argument("--memory", action="store_true", help="peak memory with and without logit chunks")
    parser.add_argument("--memory-one", type=int, metavar="CHUNK", help=argparse.SUPPRESS)
    parser.add_argument("--checkpointing", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_one is not None:
        return memory_one(args.model, args.memory_one, args.autocast, args.checkpointing)
    if args.memory:
        return memory(args.model, args.autocast)
    loaded = load_model(args.model)
    groups = batch(args.samples, args.group_size, len(loaded.tokenizer))
    samples = shape(groups).samples
    tokens = sum(s.length for s in samples)
    config = LearnerConfig(autocast=args.autocast)
    print(f"{args.model}, {len(samples)} samples, {tokens} tokens, autocast {args.autocast}")

    phases: dict[str, dict[str, float]] = {}

    def learner_step(name: str, algorithm: dict[str, Any]) -> float:
        model = copy.deepcopy(loaded.model)
        chosen = make(algorithm)
        teacher = LocalTeacher(model, loaded.tokenizer, args.model) if chosen.needs_teacher else None
        learner = Learner(model, chosen, config, ref_model=loaded.model, teacher=teacher)
        runs: list[dict[str, float]] = []
        seconds = timed(lambda: runs.append(learner.step(groups, len(runs))), args.repeats)
        phases[name] = {k: v for k, v in runs[-1].items() if k.startswith("timing_s/")}
        return seconds

    bare_model = copy.deepcopy(loaded.model)
    results = {
        "bare": timed(lambda: bare_step(bare_model, samples, config.autocast == "bfloat16"), args.repeats),
        "grpo, kl_coef 0": learner_step("grpo, kl_coef 0", {"type": "grpo", "kl_coef": 0.0}),
        "grpo": learner_step("grpo", {"type": "grpo"}),
        "sdar": learner_step("sdar", {"type": "sdar"}),
    }
    print("| step | s | samples/s | tokens/s | vs bare | reference s | teacher s | update s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, seconds in results.items():
        phase = phases.get(name, {})
        cells = [f"{phase[k]:.1f}" if k in phase else "-" for k in ("timing_s/ref", "timing_s/teacher")]
        cells.append(f"{phase.get('timing_s/update_actor', seconds):.1f}")
        print(
            f"| {name} | {seconds:.1f} | {len(samples) / seconds:.2f} | {tokens / seconds:.0f} | "
            f"{seconds / results['bare']:.2f} | {' | '.join(cells)} |"
        )
    print(f"sdar / grpo: {results['sdar'] / results['grpo']:.2f}")
    service = LocalTeacher(loaded.model, loaded.tokenizer, args.model).service
    pairs = [pair for r in requests([s.query for s in samples]) for pair in service.teacher_pairs(r)]
    student, privileged = sum(len(s.prompt) for s in samples), sum(len(p) for p, _ in pairs)
    print(f"prompt tokens: student {student}, teacher {privileged} ({privileged / student:.2f}x)")
    groups_of = prefix_groups([p for p, _ in pairs], service.scorer.min_shared_prefix)
    run = privileged - sum((len(members) - 1) * shared for shared, members in groups_of)
    print(f"teacher prompt tokens run, shared prefixes once: {run} ({run / student:.2f}x the student's)")

    big = shape(batch(256, 8, len(loaded.tokenizer), seed=1)).samples
    lengths = [s.length for s in big]
    for bucket in (False, True):
        padded = sum(len(m) * max(lengths[i] for i in m) for m in micro_batches(range(len(big)), lengths, 8192, bucket))
        share = 1 - sum(lengths) / padded
        print(f"padding share over 256 samples, 8192-token micro-batches, bucket={bucket}: {share:.1%}")


if __name__ == "__main__":
    main()
