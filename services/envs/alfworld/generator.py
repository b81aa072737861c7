"""ALFWorld game generator: official-format games from the data the `alfworld` package ships.

A game is addressed by `(split, index)`. Everything about it (scene, task type, objects, their
places, which cabinets open, the goal text) is drawn from a `random.Random` seeded by a string, so
a game is the same on every machine and under any hash seed. The output is what the official
release holds per trial: a `game.tw-pddl` (PDDL domain, text grammar with the goal baked in, PDDL
problem, `solvable`, `walkthrough`) and a `traj_data.json` (`task_type`, `pddl_params`, scene), so
that `alfworld`'s own `AlfredTWEnv` and `AlfredExpert` load and play it unchanged.

Sources for the vocabulary and rules: `alfworld.gen.constants` (receptacle/object compatibility,
openable classes, scene numbers), `alfworld.gen.goal_library` (PDDL goals and goal templates),
`alfworld/gen/layouts` (scene contents and receptacle poses). Counts per split and task type are
the official ones (ALFWorld paper, Table 1; valid_unseen scenes from environments.md §1.7).
"""

from __future__ import annotations

import functools
import json
import random
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import alfworld.gen.constants as constants
import alfworld.gen.goal_library as goal_library

from shared import labels

GENERATOR_VERSION = "1"  # bump on any change to what a (split, index) generates: it keys the game cache

TASK_TYPES = labels.TASK_TYPES

# Official games per task type and split (ALFWorld, Shridhar et al. 2021, Table 1).
SPLIT_TYPE_COUNTS: dict[str, dict[str, int]] = {
    "train": {
        "pick_and_place_simple": 790,
        "look_at_obj_in_light": 308,
        "pick_clean_then_place_in_recep": 650,
        "pick_heat_then_place_in_recep": 459,
        "pick_cool_then_place_in_recep": 533,
        "pick_two_obj_and_place": 813,
    },
    "valid_seen": {
        "pick_and_place_simple": 35,
        "look_at_obj_in_light": 13,
        "pick_clean_then_place_in_recep": 27,
        "pick_heat_then_place_in_recep": 16,
        "pick_cool_then_place_in_recep": 25,
        "pick_two_obj_and_place": 24,
    },
}

# valid_unseen: the four held-out scenes with the official per-scene (77/11/27/19) and per-type
# (24/18/31/23/21/17) totals; the split of each scene's games over task types is ours.
UNSEEN_SCENE_TYPE_COUNTS: dict[int, dict[str, int]] = {
    10: {
        "pick_heat_then_place_in_recep": 23,
        "pick_cool_then_place_in_recep": 21,
        "pick_clean_then_place_in_recep": 21,
        "pick_and_place_simple": 7,
        "pick_two_obj_and_place": 5,
    },
    219: {"look_at_obj_in_light": 6, "pick_and_place_simple": 3, "pick_two_obj_and_place": 2},
    308: {"look_at_obj_in_light": 12, "pick_and_place_simple": 9, "pick_two_obj_and_place": 6},
    424: {"pick_clean_then_place_in_recep": 10, "pick_and_place_simple": 5, "pick_two_obj_and_place": 4},
}
UNSEEN_SCENES = tuple(UNSEEN_SCENE_TYPE_COUNTS)
SPLITS = ("train", "valid_seen", "valid_unseen")

ROOM_OF_SCENE_BLOCK = {0: "Kitchen", 2: "LivingRoom", 3: "Bedroom", 4: "Bathroom"}

OPENABLE = frozenset(constants.OPENABLE_CLASS_LIST)
ALWAYS_OPENABLE = frozenset({"Fridge", "Microwave", "Safe", "Box"})
HEATABLE = frozenset({"Apple", "Bread", "Cup", "Egg", "Mug", "Plate", "Potato", "Tomato"})
COOLABLE = HEATABLE | {"Bowl", "Lettuce", "Pan", "Pot", "WineBottle"}
CLEANABLE = frozenset(
    {
        "Apple",
        "Bowl",
        "ButterKnife",
        "Cloth",
        "Cup",
        "DishSponge",
        "Egg",
        "Fork",
        "Kettle",
        "Knife",
        "Ladle",
        "Lettuce",
        "Mug",
        "Pan",
        "Plate",
        "Pot",
        "Potato",
        "SoapBar",
        "Spatula",
        "Spoon",
        "Tomato",
    }
)
SLICEABLE = frozenset({"Apple", "Bread", "Egg", "Lettuce", "Potato", "Tomato"})
RECEPTACLE_OBJECTS = frozenset({"Bowl", "Box", "Cup", "Mug", "Pan", "Plate", "Pot"})
LAMPS = frozenset({"DeskLamp", "FloorLamp"})
LAMP_SURFACES = ("SideTable", "Desk", "Dresser", "Shelf", "CoffeeTable", "DiningTable")
# Objects with a place but no receptacle: they show up only in `look`.
FIXED_OBJECTS = frozenset({"Window", "Chair", "LightSwitch", "StoveKnob", "Faucet", "HousePlant", "Painting"})
# Receptacle types that the layouts' pose files often omit, with how many a scene gets.
MISSING_RECEPTACLE_COUNTS = {
    "StoveBurner": (2, 4),
    "CoffeeMachine": (1, 1),
    "Toaster": (1, 1),
    "GarbageCan": (1, 1),
    "HandTowelHolder": (1, 2),
    "TowelHolder": (1, 1),
    "ToiletPaperHanger": (1, 1),
    "Toilet": (1, 1),
    "LaundryHamper": (1, 1),
}

CAN_CONTAIN: dict[str, frozenset[str]] = {
    recep: frozenset(objs) for recep, objs in constants.VAL_RECEPTACLE_OBJECTS.items()
}
# Towel is left out: only TowelHolder takes it and no goal uses it.
PICKUPABLE = (frozenset().union(*CAN_CONTAIN.values()) - frozenset(CAN_CONTAIN) | RECEPTACLE_OBJECTS) - {"Towel"}


def room_of(scene: int) -> str:
    return ROOM_OF_SCENE_BLOCK[scene // 100]


def scene_numbers(split: str) -> list[int]:
    if split == "valid_unseen":
        return list(UNSEEN_SCENES)
    train_blocks = [range(7, 31), range(207, 231), range(307, 331), range(407, 431)]
    return [n for block in train_blocks for n in block if n not in UNSEEN_SCENES]


@dataclass(frozen=True)
class TaskSlot:
    """What the panel fixes about a game before it is built: cheap to list."""

    split: str
    index: int
    task_type: str
    scene: int


@functools.cache
def panel(split: str) -> tuple[TaskSlot, ...]:
    """The task slots of a split, in index order: a seeded shuffle of the official type counts."""
    if split not in SPLITS:
        raise KeyError(split)
    rng = random.Random(f"alfworld-panel/{GENERATOR_VERSION}/{split}")
    pairs: list[tuple[str, int]] = []
    if split == "valid_unseen":
        for scene, counts in UNSEEN_SCENE_TYPE_COUNTS.items():
            pairs += [(task_type, scene) for task_type, n in counts.items() for _ in range(n)]
    else:
        scenes = scene_numbers(split)
        for task_type, n in SPLIT_TYPE_COUNTS[split].items():
            valid = [s for s in scenes if feasible(task_type, s)]
            pairs += [(task_type, valid[rng.randrange(len(valid))]) for _ in range(n)]
    rng.shuffle(pairs)
    return tuple(TaskSlot(split, i, task_type, scene) for i, (task_type, scene) in enumerate(pairs))


# --------------------------------------------------------------------------------------------
# Scene contents


def feasible(task_type: str, scene: int) -> bool:
    """Whether a scene can host a task type: the room allows it (`GOALS_VALID`) and the scene has
    what the task needs (a lamp to look under, a microwave, a fridge, a sink)."""
    if room_of(scene) not in constants.GOALS_VALID[task_type]:
        return False
    types, poses = _layout(scene)
    receptacles = {_receptacle_type(r) for r in poses}
    needs = {
        "look_at_obj_in_light": bool(LAMPS & set(types)),
        "pick_heat_then_place_in_recep": "Microwave" in receptacles,
        "pick_cool_then_place_in_recep": "Fridge" in receptacles,
        "pick_clean_then_place_in_recep": "SinkBasin" in receptacles,
    }
    return needs.get(task_type, True)


@functools.cache
def _layout(scene: int) -> tuple[tuple[str, ...], dict[str, tuple[float, float, int, int]]]:
    """The object types of a scene and its receptacle instances with their poses."""
    layouts = resources.files("alfworld.gen") / "layouts"
    types = tuple(json.loads((layouts / f"FloorPlan{scene}-objects.json").read_text()))
    poses = json.loads((layouts / f"FloorPlan{scene}-openable.json").read_text())
    return types, {k: tuple(v) for k, v in sorted(poses.items())}  # type: ignore[misc]


def _mangle(text: str) -> str:
    for plain, mangled in (("|", "_bar_"), ("-", "_minus_"), ("+", "_plus_"), (".", "_dot_"), (",", "_comma_")):
        text = text.replace(plain, mangled)
    return text


def _coords(rng: random.Random) -> str:
    return "|".join(f"{rng.uniform(-3.0, 3.0):+06.2f}" for _ in range(3))


def _location(x: float, z: float, rotation: int, horizon: int) -> str:
    return _mangle(f"loc|{round(x / 0.25)}|{round(z / 0.25)}|{rotation // 90 % 4}|{horizon}")


def _receptacle_type(instance_id: str) -> str:
    parts = instance_id.split("|")
    return parts[-1] if len(parts) > 4 else parts[0]


@dataclass
class Scene:
    """A concrete room: receptacle instances and object instances with their places."""

    receptacles: dict[str, str] = field(default_factory=dict)  # mangled id -> type
    receptacle_location: dict[str, str] = field(default_factory=dict)
    openable: set[str] = field(default_factory=set)
    objects: dict[str, str] = field(default_factory=dict)  # mangled id -> type
    object_in: dict[str, str] = field(default_factory=dict)  # object -> receptacle
    object_location: dict[str, str] = field(default_factory=dict)
    start_location: str = ""

    def of_type(self, rtype: str) -> list[str]:
        return [r for r, t in self.receptacles.items() if t == rtype]


def _build_receptacles(scene_num: int, rng: random.Random) -> Scene:
    types, poses = _layout(scene_num)
    scene = Scene()
    for instance_id, (x, z, rotation, horizon) in poses.items():
        rtype = _receptacle_type(instance_id)
        if rtype not in CAN_CONTAIN:
            continue
        if rtype == "SinkBasin" and instance_id.startswith("Bathtub"):
            rtype = "BathtubBasin"
        rid = _mangle(instance_id)
        scene.receptacles[rid] = rtype
        scene.receptacle_location[rid] = _location(x, z, int(rotation), int(horizon))
    for rtype, (low, high) in MISSING_RECEPTACLE_COUNTS.items():
        if rtype in types and not scene.of_type(rtype):
            for _ in range(rng.randint(low, high)):
                rid = _mangle(f"{rtype}|{_coords(rng)}")
                scene.receptacles[rid] = rtype
                scene.receptacle_location[rid] = _location(
                    rng.uniform(-3, 3), rng.uniform(-3, 3), rng.choice((0, 90, 180, 270)), rng.choice((0, 30, 60))
                )
    for rid, rtype in scene.receptacles.items():
        if rtype in ALWAYS_OPENABLE or (rtype in OPENABLE and rng.random() < 0.5):
            scene.openable.add(rid)
    scene.start_location = _location(rng.uniform(-4, 4), rng.uniform(-4, 4), rng.choice((0, 90, 180, 270)), 30)
    return scene


def _add_object(scene: Scene, otype: str, receptacle: str, rng: random.Random) -> None:
    oid = _mangle(f"{otype}|{_coords(rng)}")
    scene.objects[oid] = otype
    scene.object_in[oid] = receptacle
    scene.object_location[oid] = scene.receptacle_location[receptacle]


def _holders(scene: Scene, otype: str, avoid: frozenset[str] = frozenset()) -> list[str]:
    return [r for r, t in scene.receptacles.items() if otype in CAN_CONTAIN[t] and t not in avoid]


# --------------------------------------------------------------------------------------------
# Tasks


@dataclass(frozen=True)
class TaskParams:
    task_type: str
    object_target: str
    parent_target: str
    toggle_target: str = ""

    def pddl_params(self) -> dict[str, object]:
        return {
            "object_target": self.object_target,
            "parent_target": self.parent_target,
            "toggle_target": self.toggle_target,
            "mrecep_target": "",
            "object_sliced": False,
        }


_PROPERTY_OF_TASK = {
    "pick_clean_then_place_in_recep": (CLEANABLE, "SinkBasin"),
    "pick_heat_then_place_in_recep": (HEATABLE, "Microwave"),
    "pick_cool_then_place_in_recep": (COOLABLE, "Fridge"),
}


def _choose_task(task_type: str, scene: Scene, scene_types: tuple[str, ...], rng: random.Random) -> TaskParams | None:
    present_receptacles = sorted(set(scene.receptacles.values()))
    candidates = sorted(t for t in scene_types if t in PICKUPABLE)
    if task_type in _PROPERTY_OF_TASK:
        allowed, tool = _PROPERTY_OF_TASK[task_type]
        if tool not in present_receptacles:
            return None
        candidates = [t for t in candidates if t in allowed]
    if task_type == "look_at_obj_in_light":
        lamps = sorted(t for t in scene_types if t in LAMPS)
        if not lamps or not candidates:
            return None
        obj = rng.choice(candidates)
        if not _holders(scene, obj):
            return None
        return TaskParams(task_type, obj, "", rng.choice(lamps))
    pairs = [
        (obj, recep)
        for obj in candidates
        for recep in present_receptacles
        if obj in CAN_CONTAIN[recep]
        and _holders(scene, obj, avoid=frozenset({recep}))
        and not (task_type == "pick_cool_then_place_in_recep" and recep == "Fridge")
        and not (task_type == "pick_heat_then_place_in_recep" and recep == "Microwave")
    ]
    if not pairs:
        return None
    obj, recep = rng.choice(pairs)
    return TaskParams(task_type, obj, recep)


def _populate(scene: Scene, scene_types: tuple[str, ...], task: TaskParams, rng: random.Random) -> None:
    """Place distractors up to 3 copies a type, the target 1-4 times (2-4 for pick-two), never
    where the goal would already hold."""
    avoid = frozenset({task.parent_target}) if task.parent_target else frozenset()
    for otype in sorted(t for t in scene_types if t in PICKUPABLE and t != task.object_target):
        holders = _holders(scene, otype)
        for _ in range(rng.randint(1, constants.MAX_NUM_OF_OBJ_INSTANCES) if holders else 0):
            _add_object(scene, otype, rng.choice(holders), rng)
    low = 2 if task.task_type == "pick_two_obj_and_place" else 1
    holders = _holders(scene, task.object_target, avoid=avoid)
    for _ in range(rng.randint(low, constants.PICKUP_REPEAT_MAX)):
        _add_object(scene, task.object_target, rng.choice(holders), rng)
    for lamp in sorted(t for t in scene_types if t in LAMPS):
        surfaces = [r for r, t in scene.receptacles.items() if t in LAMP_SURFACES] or list(scene.receptacles)
        _add_object(scene, lamp, rng.choice(surfaces), rng)
    locations = sorted(set(scene.receptacle_location.values()))
    for otype in sorted(t for t in scene_types if t in FIXED_OBJECTS):
        oid = _mangle(f"{otype}|{_coords(rng)}")
        scene.objects[oid] = otype
        scene.object_location[oid] = rng.choice(locations)


def _problem(name: str, scene: Scene, task: TaskParams) -> str:
    otypes = sorted(set(scene.objects.values()) | {task.object_target} | ({task.toggle_target} - {""}))
    rtypes = sorted(set(scene.receptacles.values()) | ({task.parent_target} - {""}))
    locations = sorted(set(scene.receptacle_location.values()) | {scene.start_location})
    objects = ["agent1 - agent"]
    objects += [f"{t}Type - otype" for t in otypes]
    objects += [f"{t}Type - rtype" for t in rtypes]
    objects += [f"{o} - object" for o in sorted(scene.objects)]
    objects += [f"{r} - receptacle" for r in sorted(scene.receptacles)]
    objects += [f"{loc} - location" for loc in locations]

    init = [f"(atLocation agent1 {scene.start_location})"]
    for r in sorted(scene.receptacles):
        rtype = scene.receptacles[r]
        init.append(f"(receptacleType {r} {rtype}Type)")
        init.append(f"(receptacleAtLocation {r} {scene.receptacle_location[r]})")
        if r in scene.openable:
            init.append(f"(openable {r})")
    present_otypes = set(scene.objects.values())
    for rtype in sorted(set(scene.receptacles.values())):
        init += [f"(canContain {rtype}Type {o}Type)" for o in sorted(CAN_CONTAIN[rtype] & present_otypes)]
    for o in sorted(scene.objects):
        otype = scene.objects[o]
        init.append(f"(objectType {o} {otype}Type)")
        init.append(f"(objectAtLocation {o} {scene.object_location[o]})")
        if o in scene.object_in:
            init.append(f"(inReceptacle {o} {scene.object_in[o]})")
        for predicate, kinds in (
            ("pickupable", PICKUPABLE),
            ("isReceptacleObject", RECEPTACLE_OBJECTS),
            ("cleanable", CLEANABLE),
            ("heatable", HEATABLE),
            ("coolable", COOLABLE),
            ("sliceable", SLICEABLE),
            ("toggleable", LAMPS),
        ):
            if otype in kinds:
                init.append(f"({predicate} {o})")

    goal = (
        goal_library.gdict[task.task_type]["pddl"]
        .format(obj=task.object_target, recep=task.parent_target, toggle=task.toggle_target)
        .replace("#", "-")
    )
    newline = "\n        "
    return (
        f"\n(define (problem {name})\n(:domain alfred)\n(:objects\n        {newline.join(objects)}\n        )\n\n"
        f"(:init\n        {newline.join(init)}\n        )\n\n{goal}\n"
    )


def goal_text(task: TaskParams, rng: random.Random) -> str:
    template: str = rng.choice(goal_library.gdict[task.task_type]["templates"])
    return template.format(
        obj=task.object_target.lower(), recep=task.parent_target.lower(), toggle=task.toggle_target.lower(), mrecep=""
    )


@dataclass(frozen=True)
class GeneratedGame:
    """The two files of one official trial, as data."""

    slot: TaskSlot
    task: TaskParams
    goal: str
    problem: str
    attempt: int

    @property
    def folder(self) -> str:
        """ALFRED's trial folder: `<task>-<Obj>-<MRecep>-<Recep>-<scene>/trial_<id>`."""
        t = self.task
        parent = t.toggle_target if t.task_type == "look_at_obj_in_light" else t.parent_target
        trial = f"trial_{self.slot.split}_{self.slot.index:05d}"
        return f"{t.task_type}-{t.object_target}-None-{parent}-{self.slot.scene}/{trial}"

    def traj_data(self) -> dict[str, object]:
        return {
            "task_type": self.task.task_type,
            "pddl_params": self.task.pddl_params(),
            "scene": {"floor_plan": f"FloorPlan{self.slot.scene}", "scene_num": self.slot.scene},
            "task_id": f"alfworld/{self.slot.split}/{self.slot.index}",
            "turk_annotations": {"anns": [{"task_desc": self.goal}]},
            "generator": {"name": "sdar-alfworld", "version": GENERATOR_VERSION, "attempt": self.attempt},
        }

    def game_data(self, domain: str, grammar: str) -> dict[str, object]:
        return {
            "pddl_domain": domain,
            "grammar": grammar.replace("UNKNOWN GOAL", self.goal),
            "pddl_problem": self.problem,
            "solvable": True,
        }


MAX_ATTEMPTS = 50


def generate(slot: TaskSlot, first_attempt: int = 0) -> GeneratedGame:
    """Build one game for a slot. A failed draw (no valid task in this room) moves to the next
    attempt, deterministically."""
    for attempt in range(first_attempt, first_attempt + MAX_ATTEMPTS):
        rng = random.Random(f"alfworld-game/{GENERATOR_VERSION}/{slot.split}/{slot.index}/{attempt}")
        scene = _build_receptacles(slot.scene, rng)
        scene_types, _ = _layout(slot.scene)
        task = _choose_task(slot.task_type, scene, scene_types, rng)
        if task is not None:
            _populate(scene, scene_types, task, rng)
            name = f"sdar_{slot.split}_{slot.index}_{attempt}"
            return GeneratedGame(slot, task, goal_text(task, rng), _problem(name, scene, task), attempt)
    raise RuntimeError(f"no {slot.task_type} task fits scene {slot.scene} ({slot.split}/{slot.index})")


def write_game(game: GeneratedGame, root: Path, domain: str, grammar: str, walkthrough: list[str]) -> Path:
    """Write the trial folder under `root/<split>/` as the official release lays it out."""
    folder = root / game.slot.split / game.folder
    folder.mkdir(parents=True, exist_ok=True)
    data = game.game_data(domain, grammar) | {"walkthrough": walkthrough}
    (folder / "traj_data.json").write_text(json.dumps(game.traj_data(), indent=2, sort_keys=True))
    tmp = folder / "game.tw-pddl.tmp"
    tmp.write_text(json.dumps(data))
    tmp.replace(folder / "game.tw-pddl")  # the game file appears whole or not at all
    return folder / "game.tw-pddl"
