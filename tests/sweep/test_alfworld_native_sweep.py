"""The differential sweep: every game of both ALFWorld validation panels, three walks each (a random
walk, a busy walk and the expert's winning run), played live on TextWorld and on the native engine;
every step must be identical, texts and the facts the grammar reads alike. Off by default (about
half an hour here); run with `-m sweep`. Set `SDAR_TEST_CACHE_DIR` to reuse generated games between
runs, `SDAR_SWEEP_DIALECT=2.1.1` for the other dialect."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from services.envs.alfworld import generator
from services.envs.alfworld.engine import NativeEngine, TextWorldEngine
from services.envs.alfworld.games import Dialect, GeneratedGames
from tests import alfworld_transcripts as transcripts
from tests.service.test_alfworld_native import facts_difference, first_difference

pytestmark = pytest.mark.sweep


def commands(walk: str, seed: str, data: dict[str, Any]) -> Callable[[int, list[str]], str | None]:
    if walk == "expert":
        return transcripts.scripted(list(data["walkthrough"]))
    return transcripts.random_walk(f"{seed}/{walk}", busy=walk == "busy")


@pytest.mark.timeout(7200)
@pytest.mark.parametrize("split", ["valid_seen", "valid_unseen"])
def test_native_equals_textworld_on_every_validation_game(split: str, alfworld_cache: Path) -> None:
    dialect = os.environ.get("SDAR_SWEEP_DIALECT", "2.1.2")
    games = GeneratedGames(
        alfworld_cache / "alfworld" / f"generated-{generator.GENERATOR_VERSION}-{dialect}", Dialect.load(dialect)
    )
    oracle = TextWorldEngine()
    differences, steps, native_s, textworld_s = [], 0, 0.0, 0.0
    total = len(generator.panel(split))
    for index in range(total):
        gamefile = games.gamefile(split, index)
        data = json.loads(gamefile.read_text())
        seed = f"alfworld-sweep/{split}/{index}/{dialect}"
        for walk in ("random", "busy", "expert"):
            start = time.perf_counter()
            want = transcripts.play(oracle, data, commands(walk, seed, data))
            textworld_s += time.perf_counter() - start
            start = time.perf_counter()
            got = transcripts.play(NativeEngine(), data, commands(walk, seed, data))
            native_s += time.perf_counter() - start
            steps += len(want) - 1
            difference = first_difference(want, got) or facts_difference(data, [s["command"] for s in want[1:]])
            if difference:
                differences.append(f"{split}/{index} {walk}: {difference}")
            if walk == "expert":
                assert want[-1]["won"], f"{split}/{index}: the expert's walkthrough does not win"
    print(
        f"\n{split} ({dialect}): {total} games, 3 walks each, {steps} steps, {len(differences)} differences; "
        f"textworld {textworld_s:.0f} s, native {native_s:.1f} s"
    )
    assert not differences, "\n".join(differences[:5])
