"""`python -m trainer.run`: the project's main job.

Until the learner lands, it starts the environment service as its own process and plays one expert
episode of every ALFWorld task type over HTTP, printing each transcript.
"""

from __future__ import annotations

import argparse
import sys

import httpx

from shared.envs_client import EnvClient
from shared.labels import TASK_TYPES
from shared.launch import ServiceProcess


def play_expert_episodes(client: EnvClient, split: str) -> int:
    """One expert episode per task type (the first task of that type in `split`); returns wins."""
    wanted = set(TASK_TYPES)
    wins = 0
    offset, total = 0, 1
    while wanted and offset < total:
        page = client.tasks("alfworld", split, offset=offset, limit=200)
        total, offset = page.total, offset + len(page.tasks)
        for task in page.tasks:
            if task.task_type not in wanted:
                continue
            wanted.discard(task.task_type)
            episode = client.create("alfworld", task_id=task.task_id)
            plan = client.record(episode.episode_id).audit["expert_plan"]
            print(f"\n=== {task.task_id} ({task.task_type}) ===\n{episode.observation}")
            result = None
            for step, action in enumerate(plan):
                result = client.step(episode.episode_id, action, step)
                print(f"> {action}\n{result.observation}")
                if result.done:
                    break
            won = bool(result and result.won)
            wins += won
            print(f"--- won: {won} in {result.step if result else 0} steps")
            client.delete(episode.episode_id)
    return wins


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.run", description=__doc__)
    parser.add_argument("--split", default="valid_seen", choices=["train", "valid_seen", "valid_unseen"])
    parser.add_argument("--env-url", help="an env service to use instead of starting one")
    args = parser.parse_args(argv)
    if args.env_url:
        with EnvClient(args.env_url, retries=1) as client:
            try:
                client.health()
            except httpx.HTTPError as e:
                parser.error(f"cannot reach the env service at {args.env_url}: {e}")
            wins = play_expert_episodes(client, args.split)
    else:
        print("starting the env service (python -m services.envs --envs alfworld) ...", flush=True)
        with ServiceProcess("services.envs", ["--envs", "alfworld"]) as service, EnvClient(service.url) as client:
            wins = play_expert_episodes(client, args.split)
    print(f"\nexpert won {wins} of {len(TASK_TYPES)} task types")
    return 0 if wins == len(TASK_TYPES) else 1


if __name__ == "__main__":
    sys.exit(main())
