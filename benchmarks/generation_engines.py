"""Generation throughput: our continuous-batching engine (`HFGenerator`) against transformers' own
continuous batching (`init_continuous_batching`, the generator's engine before), same model,
same requests, in one run.

    python -m benchmarks.generation_engines [--model tiny|smollm2|PATH] [--prompt 300] [--new 64]

For each batch size, that many requests of `--prompt` random prompt tokens arrive at once and each
samples `--new` tokens (temperature 1, log-probs kept, no stop token); tokens per second counts
the sampled tokens over the wall time from the first request to the last answer, prefill included.
The engines alternate `--rounds` times; the median is reported.

    python -m benchmarks.generation_engines --model smollm2 --dtypes

compares instead our engine's weights in float32 and bfloat16 (one prompt's prefill, and a decode
step of 16 sequences), alternating in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from transformers import GenerationConfig
from transformers.generation.configuration_utils import ContinuousBatchingConfig

from shared.models import DTYPES, load_model
from trainer.engine import Engine, HFGenerator, Sequence
from trainer.generation import Sampling


def ours(model: Any, tokenizer: Any, new: int) -> tuple[Callable[[list[list[int]]], int], Callable[[], None]]:
    generator = HFGenerator(model, tokenizer, Sampling(max_new_tokens=new), max_concurrency=64)
    generator.engine.stop_ids = set()  # every request samples exactly `new` tokens

    def run(prompts: list[list[int]]) -> int:
        async def all_of() -> int:
            done = await asyncio.gather(*(generator.generate(p) for p in prompts))
            return sum(len(c.token_ids) for c in done)

        return asyncio.run(all_of())

    return run, generator.close


def transformers_cb(
    model: Any, tokenizer: Any, new: int
) -> tuple[Callable[[list[list[int]]], int], Callable[[], None]]:
    config = GenerationConfig(max_new_tokens=new, do_sample=True, temperature=1.0, top_p=1.0, eos_token_id=-1)
    batching = ContinuousBatchingConfig(return_logprobs=True, page_size=256, num_blocks=64, max_batch_tokens=512)
    manager = model.init_continuous_batching(generation_config=config, continuous_batching_config=batching)
    manager.start()
    counter = iter(range(10**9))

    def run(prompts: list[list[int]]) -> int:
        ids = [f"r{next(counter)}" for _ in prompts]
        for request_id, prompt in zip(ids, prompts, strict=True):
            manager.add_request(prompt, request_id=request_id, max_new_tokens=new)
        tokens, pending = 0, set(ids)
        while pending:
            result = manager.get_result(timeout=60)
            if result is None:
                raise RuntimeError("transformers' continuous batching stalled")
            pending.discard(result.request_id)
            tokens += len(result.generated_tokens)
        return tokens

    return run, lambda: manager.stop(block=True)


def dtypes(args: argparse.Namespace) -> None:
    """Prefill and decode-step time of our engine with float32 and bfloat16 weights."""
    rng = torch.Generator().manual_seed(0)
    models = {name: load_model(args.model, dtype=dtype).model for name, dtype in DTYPES.items()}
    vocab = models["float32"].config.vocab_size
    times: dict[str, dict[str, list[float]]] = {name: {"prefill": [], "step": []} for name in models}
    for _ in range(args.rounds):
        prompts = [torch.randint(100, vocab, (args.prompt,), generator=rng).tolist() for _ in range(16)]
        for name, model in models.items():
            engine = Engine(model, stop_ids=set(), max_rows=16)
            start = time.perf_counter()
            for prompt in prompts:
                engine.admit(Sequence(prompt, args.new))
            times[name]["prefill"].append((time.perf_counter() - start) / len(prompts))
            start = time.perf_counter()
            for _ in range(8):
                engine.step()
            times[name]["step"].append((time.perf_counter() - start) / 8)
    print(f"model {args.model}, {args.prompt}-token prompts; medians of {args.rounds} alternating rounds\n")
    print("| weights | prefill of one prompt | decode step, 16 sequences |\n|---|---|---|")
    for name, measured in times.items():
        prefill, step = statistics.median(measured["prefill"]), statistics.median(measured["step"])
        print(f"| {name} | {prefill * 1000:.0f} ms | {step * 1000:.0f} ms |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--prompt", type=int, default=300, help="prompt tokens per request")
    parser.add_argument("--new", type=int, default=64, help="sampled tokens per request")
    parser.add_argument("--batches", default="1,4,16")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dtypes", action="store_true", help="compare float32 and bfloat16 weights instead")
    args = parser.parse_args()
    if args.dtypes:
        dtypes(args)
        return
    loaded = load_model(args.model)
    engines = {
        "ours": ours(loaded.model, loaded.tokenizer, args.new),
        "transformers CB": transformers_cb(loaded.model, loaded.tokenizer, args.new),
    }
    rng = torch.Generator().manual_seed(0)
    vocab = len(loaded.tokenizer)
    for run, _ in engines.values():  # warm-up
        run([torch.randint(100, vocab, (args.prompt,), generator=rng).tolist()])
    print(f"model {args.model}, {args.prompt} prompt tokens, {args.new} sampled tokens a request\n")
    print("| requests at once | ours tokens/s | transformers CB tokens/s | ours / transformers |\n|---|---|---|---|")
    for size in (int(b) for b in args.batches.split(",")):
        prompts = [torch.randint(100, vocab, (args.prompt,), generator=rng).tolist() for _ in range(size)]
        rates: dict[str, list[float]] = {name: [] for name in engines}
        for _ in range(args.rounds):
            for name, (run, _) in engines.items():
                start = time.perf_counter()
                tokens = run(prompts)
                rates[name].append(tokens / (time.perf_counter() - start))
        mine, theirs = statistics.median(rates["ours"]), statistics.median(rates["transformers CB"])
        print(f"| {size} | {mine:,.0f} | {theirs:,.0f} | {mine / theirs:.1f} |", flush=True)
    for _, close in engines.values():
        close()


if __name__ == "__main__":
    main()
