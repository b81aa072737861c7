"""WebShop in real server processes: the same episode in every process, whatever the hash seed."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.envs_client import EnvClient
from shared.launch import ServiceProcess

pytestmark = pytest.mark.processes


def play(url: str) -> list[dict[str, object]]:
    """A fixed script: search, page, open the second hit, choose options, read, buy."""
    with EnvClient(url) as client:
        episode = client.create("webshop", task_id="webshop/test/11")
        goal = client.record(episode.episode_id).audit["goal"]
        trace: list[dict[str, object]] = [episode.model_dump(exclude={"episode_id"})]
        actions = [f"search[{goal['query']}]", "click[next >]", "click[< prev]"]
        for n, action in enumerate(actions):
            trace.append(client.step(episode.episode_id, action, n).model_dump(exclude={"episode_id"}))
        second_hit = [a for a in client.record(episode.episode_id).results[-1].admissible_actions or [] if "[b0" in a][
            1
        ]
        more = [second_hit, "click[description]", "click[< prev]", "click[buy now]"]
        for n, action in enumerate(more, start=len(actions)):
            trace.append(client.step(episode.episode_id, action, n).model_dump(exclude={"episode_id"}))
        record = client.record(episode.episode_id)
        trace.append(
            {"purchase": record.audit["purchase"], "product": client.lookup("webshop", "products", goal["asin"])}
        )
        return trace


@pytest.mark.slow  # ~8 s: several processes; run by .ci/run after the default suite
def test_episodes_are_identical_across_processes_and_hash_seeds(sdar_cache: Path) -> None:
    traces = []
    for seed in ("1", "2"):
        args = ["--envs", "webshop", "--cache-dir", str(sdar_cache)]
        with ServiceProcess("services.envs", args, env={"PYTHONHASHSEED": seed}) as server:
            traces.append(play(server.url))
    assert traces[0] == traces[1]
    assert traces[0][-2]["done"] is True  # type: ignore[index]
