"""Evaluation on a validation split, as the reference's: each task played once, at temperature 0.4
(greedy for Search-QA), no skills in the prompt; the metrics under the names of the paper's table
(sdar.md §6).

The paper's averages are not all alike: ALFWorld's `Avg` is the success rate over all games (GRPO
3B: 75.0, where the mean of its six task types is 70.7), Search-QA's is the mean over its seven
data sources (36.4 = the mean of 39.3 ... 26.4). WebShop's `Score` is the mean final reward x 100,
`Acc` the success rate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shared.labels import DATA_SOURCES, TASK_TYPES
from shared.rollout_wire import GroupRecord

COLUMNS: dict[str, list[tuple[str, str]]] = {
    "alfworld": list(zip(TASK_TYPES, ("Pick", "Look", "Clean", "Heat", "Cool", "Pick2"), strict=True)),
    "searchqa": list(zip(DATA_SOURCES, ("NQ", "Triv", "Pop", "Hotp", "2Wk", "MuS", "Bam"), strict=True)),
}
"""The paper's per-label columns: (the env's label, the column)."""


def spread(total: int, n: int) -> list[int]:
    """`n` task indices spread evenly over a split of `total` (all of them when `n >= total`)."""
    n = min(n, total)
    return [i * total // n for i in range(n)]


def metrics(env: str, groups: Sequence[GroupRecord]) -> dict[str, Any]:
    """The evaluation's record: `val/success_rate` (over all episodes), per label
    `val/success_rate/<label>`, `val/avg` (the paper's Avg), `val/score` (WebShop), `val/invalid_rate`
    (invalid steps over steps), `val/episode_length` (steps per episode), and the counts."""
    episodes = [(g, e) for g in groups for e in g.episodes if e.usable]
    steps = [s for _, e in episodes for s in e.steps]
    by_label: dict[str, list[bool]] = {}
    for g, e in episodes:
        by_label.setdefault(g.label or "all", []).append(e.won)
    success = sum(e.won for _, e in episodes) / max(len(episodes), 1)
    record: dict[str, Any] = {
        "val/success_rate": success,
        "val/invalid_rate": sum(not s.valid for s in steps) / max(len(steps), 1),
        "val/episode_length": len(steps) / max(len(episodes), 1),
        "val/episodes": len(episodes),
        "val/faulted": sum(not e.usable for g in groups for e in g.episodes),
    }
    rates = {k: sum(v) / len(v) for k, v in sorted(by_label.items())}
    record |= {f"val/success_rate/{k}": v for k, v in rates.items()}
    record["val/avg"] = sum(rates.values()) / len(rates) if env == "searchqa" and rates else success
    if env == "webshop":
        record["val/score"] = 100 * sum(e.env_reward for _, e in episodes) / max(len(episodes), 1)
    return record


def table(env: str, record: dict[str, Any]) -> str:
    """The record as a row of the paper's table (percentages), in markdown; `-` where no task of a
    column was played."""
    if env == "webshop":
        cells = [("Score", record.get("val/score")), ("Acc", 100 * record["val/success_rate"])]
    else:
        cells = []
        for label, column in COLUMNS.get(env, []):
            rate = record.get(f"val/success_rate/{label}")
            cells.append((column, None if rate is None else 100 * rate))
        cells.append(("Avg", 100 * record["val/avg"]))
    cells += [("Invalid", 100 * record["val/invalid_rate"]), ("Length", record["val/episode_length"])]
    head = "| " + " | ".join(c for c, _ in cells) + " |"
    rule = "|" + "---|" * len(cells)
    row = "| " + " | ".join("-" if v is None else f"{v:.1f}" for _, v in cells) + " |"
    return "\n".join([head, rule, row])


async def evaluate(
    client: Any,
    model: Any,
    tokenizer: Any,
    agent: Any,
    *,
    env: str,
    split: str,
    tasks: int,
    temperature: float,
    max_turns: int | None,
    max_new_tokens: int,
    max_prompt_tokens: int | None = None,
    seed: int = 0,
    concurrency: int = 64,
) -> dict[str, Any]:
    """Play `tasks` tasks of `split` (spread over it) once each and return `metrics` with the split."""
    from tqdm import tqdm

    from trainer.buffer import MemoryBuffer
    from trainer.engine import HFGenerator
    from trainer.generation import Sampling
    from trainer.rollout import Roller, RolloutConfig

    total = (await client.tasks(env, split, 0, 1)).total
    ids = [f"{env}/{split}/{i}" for i in spread(total, tasks)]
    generator = HFGenerator(model, tokenizer, Sampling(temperature, 1.0, max_new_tokens), seed=seed)
    config = RolloutConfig(
        env=env,
        group_size=1,
        max_steps=max_turns,
        max_new_tokens=max_new_tokens,
        max_prompt_tokens=max_prompt_tokens,
        concurrency=concurrency,
    )
    groups: list[GroupRecord] = []
    try:
        roller = Roller(client, generator, tokenizer, agent, MemoryBuffer(), config)
        with tqdm(total=len(ids), desc=f"eval {split}", unit="task", leave=False) as bar:

            def finished(group: GroupRecord) -> None:
                groups.append(group)
                bar.update()

            await roller.run(ids, on_group=finished)
    finally:
        await generator.aclose()
    return {"eval": split} | metrics(env, groups)
