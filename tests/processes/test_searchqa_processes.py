"""Search-QA in real server processes: an env server searching through another server's `/retrieve`
(both request forms) plays exactly as one searching in-process, rides out the retriever's outage
without losing the episode, and every process shows the same panel whatever its hash seed."""

from __future__ import annotations

import httpx
import pytest

from shared.envs_client import EnvClient
from shared.launch import ServiceProcess

pytestmark = pytest.mark.processes

SCRIPT = [
    "<search>Buhaven river</search>",
    "<think>not yet</think>",
    "<search> who founded Hollow Lantern Press </search>",
    "<answer>Buhaven</answer>",
]


def play(url: str, task_id: str = "searchqa/test/3") -> list[dict[str, object]]:
    with EnvClient(url) as client:
        episode = client.create("searchqa", task_id=task_id)
        trace: list[dict[str, object]] = [episode.model_dump(exclude={"episode_id"})]
        for n, action in enumerate(SCRIPT):
            trace.append(client.step(episode.episode_id, action, n).model_dump(exclude={"episode_id"}))
        trace.append({"tasks": client.tasks("searchqa", "test", 90, 20).model_dump()})
        return trace


@pytest.mark.slow  # ~16 s: three processes and an outage; run by .ci/run after the default suite
def test_remote_retrieval_through_another_process_in_both_forms_and_across_an_outage() -> None:
    with ServiceProcess("services.envs", ["--envs", "searchqa"], env={"PYTHONHASHSEED": "1"}) as retriever:
        local = play(retriever.url)
        assert local[1]["observation"].startswith('<information>{"result": "Doc 1: ')  # type: ignore[union-attr]
        remote_args = ["--envs", "searchqa", "--searchqa-retriever-url", f"{retriever.url}/retrieve"]
        for form in ("batch", "single"):
            args = [*remote_args, "--searchqa-retriever-form", form]
            with ServiceProcess("services.envs", args, env={"PYTHONHASHSEED": "2"}) as server:
                assert play(server.url) == local, form
                [info] = httpx.get(f"{server.url}/v1/envs").json()
                assert info["settings"]["retriever"] == "remote" and info["version"].endswith("+remote")

        args = [*remote_args, "--searchqa-retriever-retries", "2", "--searchqa-retriever-timeout-s", "2"]
        with ServiceProcess("services.envs", args) as server, EnvClient(server.url) as client:
            episode = client.create("searchqa", task_id="searchqa/test/3")
            retriever.kill()
            down = httpx.post(
                f"{server.url}/v1/episodes/{episode.episode_id}/step", json={"action": SCRIPT[0], "step": 0}
            )
            assert down.status_code == 503 and "unreachable after 3 tries" in down.json()["error"]["message"]
            assert client.record(episode.episode_id).actions == []  # nothing applied
            with ServiceProcess("services.envs", ["--envs", "searchqa"], port=retriever.port):
                again = client.step(episode.episode_id, SCRIPT[0], 0)
            assert again.model_dump(exclude={"episode_id"}) == local[1]
