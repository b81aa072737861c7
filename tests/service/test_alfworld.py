"""ALFWorld over HTTP on the default (native) engine: the expert wins every task type of every panel,
the texts follow environments.md §1.5, both dialects, official-format trees, a bounded live cache; and
the `textworld` backend serving the same episodes, which keep the backend that made them."""

from __future__ import annotations

import json
import queue
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.envs.alfworld.generator import SPLITS, TASK_TYPES
from services.envs.store import MemoryEpisodeStore
from shared.launch import ServiceProcess
from tests.conftest import serve, settings

INTRO = re.compile(
    r"-= Welcome to TextWorld, ALFRED! =-\n\n"
    r"You are in the middle of a room\. Looking quickly around you, you see "
    r"(?P<list>(a [a-z]+ \d+, )+and a [a-z]+ \d+)\.\n\n"
    r"Your task is to: (?P<goal>[a-z ]+)\."
)
LIST = r"(nothing|[a-z0-9, ]+)"
EXAMINE = rf"(The {{r}} is open\. In it, you see {LIST}\.|The {{r}} is closed\.|On the {{r}}, you see {LIST}\.)"


def alfworld(cache: Path, **overrides: object) -> object:
    return settings(envs=["alfworld"], cache_dir=cache, **overrides)


async def first_of_type(client: httpx.AsyncClient, split: str) -> dict[str, str]:
    """The task id of the first task of each type in a split."""
    tasks: dict[str, str] = {}
    offset = 0
    while len(tasks) < len(TASK_TYPES):
        page = (
            await client.get("/v1/envs/alfworld/tasks", params={"split": split, "offset": offset, "limit": 200})
        ).json()
        for task in page["tasks"]:
            tasks.setdefault(task["task_type"], task["task_id"])
        offset += 200
    return tasks


async def play_expert(client: httpx.AsyncClient, task_id: str) -> tuple[dict, list[dict]]:  # type: ignore[type-arg]
    episode = (await client.post("/v1/envs/alfworld/episodes", json={"task_id": task_id})).json()
    record = (await client.get(f"/v1/episodes/{episode['episode_id']}")).json()
    results = []
    for n, action in enumerate(record["expert_plan"]):
        response = await client.post(f"/v1/episodes/{episode['episode_id']}/step", json={"action": action, "step": n})
        assert response.status_code == 200, response.text
        results.append(response.json())
    return episode, results


@dataclass
class ExpertRun:
    task_id: str
    episode: dict[str, Any]
    results: list[dict[str, Any]]
    record: dict[str, Any]


# The first look, cool and heat tasks of `train` are large kitchens (15-18 s to open, up to 39 steps);
# these later tasks of the same types open in about 3 s.
SMALL_TRAIN_GAMES = {
    "look_at_obj_in_light": "alfworld/train/12",
    "pick_cool_then_place_in_recep": "alfworld/train/15",
    "pick_heat_then_place_in_recep": "alfworld/train/23",
}


@pytest.fixture(scope="session")
def expert_runs(alfworld_cache: Path) -> dict[str, dict[str, ExpertRun]]:
    """The expert on a task of each type of every panel (the first one, or a small game of its type),
    played once over HTTP for every test that reads its transcripts. TextWorld runs one game step at a
    time per process (~140 ms a step), so two env-service processes over the same game cache play
    them, one task at a time each."""
    from services.envs.alfworld import AlfworldEnvironment

    env = AlfworldEnvironment.from_settings(alfworld(alfworld_cache))  # type: ignore[arg-type]
    todo: queue.SimpleQueue[tuple[str, str, str]] = queue.SimpleQueue()
    for split in SPLITS:
        firsts: dict[str, str] = {}
        for task in env.tasks(split, 0, env.splits()[split]):
            firsts.setdefault(str(task.task_type), task.task_id)
        for task_type, task_id in (firsts | (SMALL_TRAIN_GAMES if split == "train" else {})).items():
            todo.put((split, task_type, task_id))
    env.close()
    args = ["--envs", "alfworld", "--cache-dir", str(alfworld_cache)]
    with ServiceProcess("services.envs", args) as first, ServiceProcess("services.envs", args) as second:
        runs: dict[str, dict[str, ExpertRun]] = {split: {} for split in SPLITS}

        def play(url: str) -> None:
            with httpx.Client(base_url=url, timeout=300) as client:
                while True:
                    try:
                        split, task_type, task_id = todo.get_nowait()
                    except queue.Empty:
                        return
                    episode = client.post("/v1/envs/alfworld/episodes", json={"task_id": task_id}).json()
                    eid = episode["episode_id"]
                    plan = client.get(f"/v1/episodes/{eid}").json()["expert_plan"]
                    results = []
                    for n, action in enumerate(plan):
                        response = client.post(f"/v1/episodes/{eid}/step", json={"action": action, "step": n})
                        assert response.status_code == 200, response.text
                        results.append(response.json())
                    record = client.get(f"/v1/episodes/{eid}").json()
                    runs[split][task_type] = ExpertRun(task_id, episode, results, record)

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(play, [first.url, second.url]))
    return runs


@pytest.mark.processes  # the expert transcripts come from two env-service processes
@pytest.mark.parametrize("split", SPLITS)
def test_expert_wins_every_task_type(split: str, expert_runs: dict[str, dict[str, ExpertRun]]) -> None:
    assert set(expert_runs[split]) == set(TASK_TYPES)
    for task_type, run in expert_runs[split].items():
        episode, results = run.episode, run.results
        assert episode["info"]["task_type"] == task_type
        assert all(not r["done"] for r in results[:-1])
        last = results[-1]
        assert last["won"] and last["done"] and not last["truncated"] and last["reward"] == 1.0, run.task_id
        assert all(r["info"]["task_type"] == task_type and r["admissible_actions"] for r in results)
        assert run.record["actions"] == run.record["expert_plan"] and run.record["done"]


@pytest.mark.processes  # the expert transcripts come from two env-service processes
async def test_texts_follow_the_reference(alfworld_cache: Path, expert_runs: dict[str, dict[str, ExpertRun]]) -> None:
    run = expert_runs["valid_seen"]["pick_heat_then_place_in_recep"]
    heat, episode, results, record = run.task_id, run.episode, run.results, run.record
    async with serve(alfworld(alfworld_cache)) as client:
        intro = INTRO.fullmatch(episode["observation"])
        assert intro, episode["observation"]
        assert intro["goal"] == episode["task"]
        assert re.fullmatch(r"(put a hot|heat some) [a-z]+ (in|and put it in) [a-z]+", episode["task"])
        assert "help" in episode["admissible_actions"] and "look" in episode["admissible_actions"]
        assert episode["admissible_actions"] == sorted(set(episode["admissible_actions"]))
        for action, result in zip(record["expert_plan"], results, strict=True):
            text = result["observation"]
            if action.startswith("go to "):
                r = re.escape(action.removeprefix("go to "))
                assert re.fullmatch(f"You arrive at {r}\\. " + EXAMINE.format(r=r), text), text
            elif action.startswith("take "):
                o, r = re.fullmatch(r"take (.+) from (.+)", action).groups()  # type: ignore[union-attr]
                assert text == f"You pick up the {o} from the {r}."
            elif action.startswith("move "):
                o, r = re.fullmatch(r"move (.+) to (.+)", action).groups()  # type: ignore[union-attr]
                assert text == f"You move the {o} to the {r}."
            elif action.startswith("heat "):
                o, r = re.fullmatch(r"heat (.+) with (.+)", action).groups()  # type: ignore[union-attr]
                assert text == f"You heat the {o} using the {r}."
            elif action.startswith("open "):
                r = re.escape(action.removeprefix("open "))
                assert re.fullmatch(
                    f"You open the {r}\\. The {r} is open\\. In it, you see (nothing|[a-z0-9, ]+)\\.", text
                )

        # a second episode of the same task, for the texts of the remaining commands
        eid = (await client.post("/v1/envs/alfworld/episodes", json={"task_id": heat})).json()["episode_id"]

        async def act(n: int, action: str) -> str:
            response = await client.post(f"/v1/episodes/{eid}/step", json={"action": action, "step": n})
            return str(response.json()["observation"])

        assert await act(0, "inventory") == "You are not carrying anything."
        assert await act(1, "fly to the moon") == "Nothing happens."
        assert await act(2, "") == "Nothing happens."
        look = await act(3, "look")
        assert look.startswith("You are in the middle of a room. Looking quickly around you, you see ")
        plan = record["expert_plan"]
        take_at = next(i for i, a in enumerate(plan) if a.startswith("take "))
        for i, action in enumerate(plan[: take_at + 1]):
            await act(4 + i, action)
        n = 4 + take_at + 1
        obj, here = re.fullmatch(r"take (.+) from (.+)", plan[take_at]).groups()  # type: ignore[union-attr]
        assert await act(n, "inventory") == f"You are carrying: a {obj}."
        examined = await act(n + 1, f"examine {obj}")
        assert re.fullmatch(
            f"(There's nothing special about {obj}|This is a (normal|hot|cold|clean) {obj}.*)\\.?", examined
        )
        facing = await act(n + 2, "look")
        assert facing.startswith(f"You are facing the {here}. Next to it, you see "), facing


async def test_close_and_reopen_texts(alfworld_cache: Path) -> None:
    async with serve(alfworld(alfworld_cache)) as client:
        cool = (await first_of_type(client, "valid_seen"))["pick_cool_then_place_in_recep"]
        episode = (await client.post("/v1/envs/alfworld/episodes", json={"task_id": cool})).json()
        eid = episode["episode_id"]
        fridge = next(a.removeprefix("go to ") for a in episode["admissible_actions"] if a.startswith("go to fridge"))
        steps = [f"go to {fridge}", f"open {fridge}", f"close {fridge}", f"examine {fridge}"]
        texts = []
        for n, action in enumerate(steps):
            texts.append(
                (await client.post(f"/v1/episodes/{eid}/step", json={"action": action, "step": n})).json()[
                    "observation"
                ]
            )
        assert texts[0] == f"You arrive at {fridge}. The {fridge} is closed."
        assert texts[1].startswith(f"You open the {fridge}. The {fridge} is open. In it, you see ")
        assert texts[2] == f"You close the {fridge}."
        assert texts[3] == f"The {fridge} is closed."


async def test_the_2_1_1_dialect(tmp_path_factory: pytest.TempPathFactory) -> None:
    cache = tmp_path_factory.mktemp("dialect")
    async with serve(alfworld(cache, alfworld_dialect="2.1.1")) as client:
        info = (await client.get("/v1/envs")).json()[0]
        assert info["dialect"] == "2.1.1" and "2.1.1" in info["version"]
        task_id = (await first_of_type(client, "valid_unseen"))["pick_and_place_simple"]
        episode, results = await play_expert(client, task_id)
        assert "help" not in episode["admissible_actions"]
        record = (await client.get(f"/v1/episodes/{episode['episode_id']}")).json()
        put = record["expert_plan"][-1]
        assert re.fullmatch(r"put .+ in/on .+", put)
        o, r = re.fullmatch(r"put (.+) in/on (.+)", put).groups()  # type: ignore[union-attr]
        assert results[-1]["observation"] == f"You put the {o} in/on the {r}." and results[-1]["won"]
        goto = next(r for a, r in zip(record["expert_plan"], results, strict=True) if a.startswith("go to "))
        assert re.match(r"You arrive at loc \d+\. ", goto["observation"])


@pytest.mark.processes  # the expert transcripts come from two env-service processes
async def test_official_tree_runs_unchanged(
    alfworld_cache: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    expert_runs: dict[str, dict[str, ExpertRun]],
) -> None:
    """Generated games laid out as the official download, loaded through `$ALFWORLD_DATA`."""
    wanted = expert_runs["valid_seen"]
    transcripts = {r.episode["observation"]: [x["observation"] for x in r.results] for r in wanted.values()}
    source = alfworld_cache / "alfworld"
    (generated,) = source.glob("generated-*-2.1.2")
    for trial in (generated / "json_2.1.1" / "valid_seen").glob("*/trial_*"):
        shutil.copytree(trial, tmp_path / "json_2.1.1" / "valid_seen" / trial.parent.name / trial.name)
    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path))
    async with serve(alfworld(tmp_path / "unused-cache")) as client:
        info = (await client.get("/v1/envs")).json()[0]
        assert info["games"] == "official" and info["splits"] == {"valid_seen": len(wanted)}
        page = (await client.get("/v1/envs/alfworld/tasks", params={"split": "valid_seen"})).json()
        assert {t["task_type"] for t in page["tasks"]} == set(TASK_TYPES)
        for task in page["tasks"]:
            episode, results = await play_expert(client, task["task_id"])
            assert [r["observation"] for r in results] == transcripts[episode["observation"]]
            assert results[-1]["won"]
    assert not (tmp_path / "unused-cache").exists()


@pytest.mark.slow  # ~5 s: ALFWorld games replayed; run by .ci/run after the default suite
async def test_live_cache_is_bounded(alfworld_cache: Path) -> None:
    """On `textworld`, whose engines are the scarce thing: the live cache and the engine pool stay
    bounded while replays rebuild evicted episodes."""
    settings = alfworld(alfworld_cache, live_cache_size=2, sim_threads=2, alfworld_backend="textworld")
    async with serve(settings) as client:
        task_id = (await first_of_type(client, "valid_seen"))["pick_and_place_simple"]
        plan = None
        ids = []
        for _ in range(4):
            episode = (await client.post("/v1/envs/alfworld/episodes", json={"task_id": task_id})).json()
            ids.append(episode["episode_id"])
            plan = plan or (await client.get(f"/v1/episodes/{episode['episode_id']}")).json()["expert_plan"]
        service = client.app.state.service  # type: ignore[attr-defined]
        for n, action in enumerate(plan):
            for eid in ids:
                response = await client.post(f"/v1/episodes/{eid}/step", json={"action": action, "step": n})
                assert response.status_code == 200
                assert len(service.caches["alfworld"]) <= 2
        for eid in ids:
            assert (await client.get(f"/v1/episodes/{eid}")).json()["results"][-1]["won"]
        pool = service.envs["alfworld"].pool
        assert pool.created <= pool.max_engines == 2 + 2 + 4
        assert 'event="replay"' in (await client.get("/metrics")).text


def test_alfworld_package_plays_the_generated_tree(alfworld_cache: Path, tmp_path: Path) -> None:
    """`alfworld`'s own `AlfredTWEnv` collects a generated tree as it does a download, and its batch
    environment plays each game's walkthrough to a win."""
    from alfworld.agents.environment.alfred_tw_env import AlfredTWEnv

    from services.envs.alfworld import AlfworldEnvironment

    env = AlfworldEnvironment.from_settings(alfworld(alfworld_cache))  # type: ignore[arg-type]
    picked = [
        t
        for t in env.tasks("valid_unseen", 0, 134)
        if t.task_type in ("pick_two_obj_and_place", "look_at_obj_in_light")
    ]
    for task in picked[:2]:
        trial = env.games.gamefile(task.split, task.index).parent
        shutil.copytree(trial, tmp_path / "json_2.1.1" / "valid_unseen" / trial.parent.name / trial.name)
    data = tmp_path / "json_2.1.1"
    config = {
        "env": {
            "goal_desc_human_anns_prob": 0,
            "task_types": [1, 2, 3, 4, 5, 6],
            "domain_randomization": False,
            "expert_type": "handcoded",
        },
        "dataset": {
            "data_path": str(data / "train"),
            "eval_id_data_path": str(data / "valid_seen"),
            "eval_ood_data_path": str(data / "valid_unseen"),
            "num_train_games": -1,
            "num_eval_games": -1,
        },
        "general": {"training_method": "dagger"},
        "dagger": {"training": {"max_nb_steps_per_episode": 50}},
    }
    collected = AlfredTWEnv(config, train_eval="eval_out_of_distribution")
    assert len(collected.game_files) == 2
    batch = collected.init_env(batch_size=1)
    try:
        for _ in range(2):
            _, infos = batch.reset()
            gamefile = Path(infos["extra.gamefile"][0])
            for command in json.loads(gamefile.read_text())["walkthrough"]:
                _, _, dones, infos = batch.step([command])
            assert infos["won"] == [True] and dones == (True,)
    finally:
        batch.close()


@pytest.mark.processes  # the expert transcripts come from two env-service processes
async def test_batch_route_steps_many_alfworld_episodes_at_once(
    alfworld_cache: Path, expert_runs: dict[str, dict[str, ExpertRun]]
) -> None:
    """Many ALFWorld episodes stepped concurrently (worker threads) stay correct."""
    shortest = sorted(expert_runs["valid_seen"].values(), key=lambda r: len(r.results))[:3]
    async with serve(alfworld(alfworld_cache, sim_threads=8)) as client:
        episodes = []
        for i in range(12):  # four each of the three shortest games: more episodes than the 8 worker threads
            run = shortest[i % len(shortest)]
            episode = (await client.post("/v1/envs/alfworld/episodes", json={"task_id": run.task_id})).json()
            episodes.append((episode["episode_id"], run.record["expert_plan"]))
        for n in range(max(len(plan) for _, plan in episodes)):
            due = [{"episode_id": eid, "action": plan[n], "step": n} for eid, plan in episodes if n < len(plan)]
            response = await client.post("/v1/episodes:step", json={"steps": due})
            assert response.status_code == 200, response.text
            assert all("error" not in r for r in response.json()["results"]), response.json()
        for eid, _ in episodes:
            assert (await client.get(f"/v1/episodes/{eid}")).json()["results"][-1]["won"]


async def test_both_backends_serve_the_same_episode_and_an_episode_keeps_its_backend(alfworld_cache: Path) -> None:
    """The same expert run on `textworld` and on `native` (the default) over HTTP; each says which it
    is; an episode the real engine started is not continued by the native one (nor replayed)."""
    store = MemoryEpisodeStore(3600, 1000)
    runs = {}
    for backend in ("textworld", "native"):
        overrides = {"alfworld_backend": backend} if backend == "textworld" else {}
        async with serve(alfworld(alfworld_cache, **overrides), store=store) as client:
            info = (await client.get("/v1/envs")).json()[0]
            assert info["backend"] == backend and f"+{backend}-" in info["version"]
            task_id = (await first_of_type(client, "valid_seen"))["pick_heat_then_place_in_recep"]
            episode, results = await play_expert(client, task_id)
            record = (await client.get(f"/v1/episodes/{episode['episode_id']}")).json()
            assert record["backend"] == backend and record["version"] == info["version"]
            runs[backend] = [(episode["observation"], episode["admissible_actions"])] + [
                (r["observation"], r["admissible_actions"], r["reward"], r["won"]) for r in results
            ]
            if backend == "textworld":
                started = (await client.post("/v1/envs/alfworld/episodes", json={"task_id": task_id})).json()
                step = await client.post(
                    f"/v1/episodes/{started['episode_id']}/step", json={"action": "look", "step": 0}
                )
                assert step.status_code == 200
            else:
                refused = await client.post(
                    f"/v1/episodes/{started['episode_id']}/step", json={"action": "look", "step": 1}
                )
                assert refused.status_code == 409 and "version_mismatch" in refused.text and "textworld" in refused.text
    assert runs["native"] == runs["textworld"] and runs["native"][-1][-1] is True
