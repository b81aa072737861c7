"""The differential sweep: every game of both ALFWorld validation panels, three walks each (a random
walk, a busy walk and the expert's winning run), played live on TextWorld and on the native engine;
every step must be identical, texts and the facts the grammar reads alike. Off by default (about
half an hour here); run with `-m sweep`. Set `SDAR_TEST_CACHE_DIR` to reuse generated games between
runs, `SDAR_SWEEP_DIALECT=2.1.1` for the other dialect."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from services.envs.alfworld import generator, native
from services.envs.alfworld.engine import NativeEngine, TextWorldEngine
from services.envs.alfworld.games import Dialect, GeneratedGames
from tests import alfworld_transcripts as transcripts
from tests.service.test_alfworld_native import first_difference, grammar_facts_of

pytestmark = pytest.mark.sweep


def facts_difference(data: dict[str, Any], played: list[str]) -> str | None:
    """The first step after which the facts the grammar reads (`not_` ones included) differ."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "game.tw-pddl"
        path.write_text(json.dumps(data))
        real = TextWorldEngine()
        real.load(path)
        real.reset()
        episode = native.NativeEpisode(native.NativeGame(data))
        episode.reset()
        for n, command in enumerate(played, 1):
            real.step(command)
            episode.step(command)
            theirs = grammar_facts_of(real, episode.game)
            ours = episode.grammar_facts()
            if ours != theirs:
                only = sorted(theirs - ours)[:3], sorted(ours - theirs)[:3]
                return f"facts after step {n} ({command!r}): textworld only {only[0]}, native only {only[1]}"
    return None


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
