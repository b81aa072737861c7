"""The full sweep: the expert wins every game of both ALFWorld validation panels over HTTP.

Off by default (generating 274 games takes a while the first time); run with `-m sweep`. Set
`SDAR_TEST_CACHE_DIR` to reuse generated games between runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import serve, settings
from tests.service.test_alfworld import play_expert

pytestmark = pytest.mark.sweep


@pytest.mark.timeout(7200)
@pytest.mark.parametrize("split", ["valid_seen", "valid_unseen"])
async def test_expert_wins_every_validation_game(split: str, alfworld_cache: Path) -> None:
    async with serve(settings(envs=["alfworld"], cache_dir=alfworld_cache)) as client:
        total = (await client.get("/v1/envs/alfworld/tasks", params={"split": split, "limit": 1})).json()["total"]
        lost = []
        for index in range(total):
            task_id = f"alfworld/{split}/{index}"
            _, results = await play_expert(client, task_id)
            if not results[-1]["won"]:
                lost.append(task_id)
        print(f"{split}: expert won {total - len(lost)} of {total}")
        assert not lost
