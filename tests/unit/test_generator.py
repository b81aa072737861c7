"""The ALFWorld generator: official panel shapes, valid games, determinism under any hash seed."""

from __future__ import annotations

import collections
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import alfworld.gen.constants as constants
import pytest

from services.envs.alfworld import generator
from tests.conftest import serve, settings

GOLDEN = Path(__file__).parents[1] / "data" / "alfworld_golden.json"


def test_panels_have_the_official_shape() -> None:
    sizes = {split: len(generator.panel(split)) for split in generator.SPLITS}
    assert sizes == {"train": 3553, "valid_seen": 140, "valid_unseen": 134}
    for split in ("train", "valid_seen"):
        counts = collections.Counter(slot.task_type for slot in generator.panel(split))
        assert counts == generator.SPLIT_TYPE_COUNTS[split]
        assert not {slot.scene for slot in generator.panel(split)} & set(generator.UNSEEN_SCENES)
    unseen = generator.panel("valid_unseen")
    assert collections.Counter(s.scene for s in unseen) == {10: 77, 219: 11, 308: 27, 424: 19}
    assert collections.Counter(s.task_type for s in unseen) == {
        "pick_and_place_simple": 24,
        "pick_clean_then_place_in_recep": 31,
        "pick_heat_then_place_in_recep": 23,
        "pick_cool_then_place_in_recep": 21,
        "look_at_obj_in_light": 18,
        "pick_two_obj_and_place": 17,
    }
    for split in generator.SPLITS:
        for slot in generator.panel(split):
            assert generator.room_of(slot.scene) in constants.GOALS_VALID[slot.task_type]
            assert generator.feasible(slot.task_type, slot.scene)
    assert [s.index for s in generator.panel("train")] == list(range(3553))


def facts(problem: str, predicate: str) -> list[list[str]]:
    """The arguments of every `predicate` fact of the problem's initial state."""
    init = problem.split("(:goal")[0]
    return [match.split() for match in re.findall(rf"\({predicate} ([^)]*)\)", init)]


@pytest.mark.parametrize("task_type", generator.TASK_TYPES)
def test_games_are_well_formed(task_type: str) -> None:
    slots = [s for s in generator.panel("train") if s.task_type == task_type][:15]
    cabinet_openable = set()
    for slot in slots:
        game = generator.generate(slot)
        problem = game.problem
        kinds = dict(facts(problem, "objectType")) | dict(facts(problem, "receptacleType"))
        can_contain = {tuple(pair) for pair in facts(problem, "canContain")}
        placed = facts(problem, "inReceptacle")
        assert placed
        for obj, receptacle in placed:
            if kinds[obj] in ("DeskLampType", "FloorLampType"):
                continue
            assert (kinds[receptacle], kinds[obj]) in can_contain, (obj, receptacle)
        openable = {r for (r,) in facts(problem, "openable")}
        for receptacle, kind in kinds.items():
            if kind in ("FridgeType", "MicrowaveType"):
                assert receptacle in openable
            if kind == "CabinetType":
                cabinet_openable.add(receptacle in openable)
        assert "(opened " not in problem, "openables start closed"
        target = game.task.object_target + "Type"
        targets = [o for o, k in kinds.items() if k == target]
        assert 1 <= len(targets) <= 4 + 3
        if task_type == "pick_two_obj_and_place":
            assert len(targets) >= 2
        parent = game.task.parent_target + "Type"
        assert not [o for o, r in placed if kinds[o] == target and kinds[r] == parent], (
            "the goal must not hold at start"
        )
        goal = problem.split("(:goal")[1]
        assert f" {target})" in goal and (not game.task.parent_target or f" {parent})" in goal)
        assert game.goal.split()[0] in {"put", "clean", "heat", "cool", "find", "look", "examine"}
        traj = game.traj_data()
        assert traj["task_type"] == task_type and set(traj["pddl_params"]) >= {"object_target", "parent_target"}
    if task_type == "pick_and_place_simple":
        assert cabinet_openable == {True, False}, "cabinets are openable per instance"


def test_golden_hashes_hold_under_any_hash_seed() -> None:
    expected = json.loads(GOLDEN.read_text())
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-m", "tests.golden_alfworld"],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
            cwd=Path(__file__).parents[2],
        )
        assert json.loads(out.stdout) == expected, f"PYTHONHASHSEED={seed}"


async def test_task_lists_are_cheap(tmp_path: Path) -> None:
    """Listing every task builds no game."""
    async with serve(settings(envs=["alfworld"], cache_dir=tmp_path)) as client:
        seen = 0
        for offset in range(0, 3553, 1000):
            page = (
                await client.get("/v1/envs/alfworld/tasks", params={"split": "train", "offset": offset, "limit": 1000})
            ).json()
            seen += len(page["tasks"])
            assert page["total"] == 3553
        assert seen == 3553
    assert not any(tmp_path.rglob("*.tw-pddl"))
