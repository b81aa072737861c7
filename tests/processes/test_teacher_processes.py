"""The teacher as its own process: it scores exactly as the same code in this process, and its
command line refuses bad flags."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from services.teacher.service import TeacherService
from shared.launch import ServiceProcess
from shared.model_specs import chat_prompt_ids
from shared.models import load_model
from shared.settings import TeacherSettings
from shared.teacher_wire import ScoreRequest
from trainer.teacher import HTTPTeacher, LocalTeacher, Query, TeacherServiceError

pytestmark = pytest.mark.processes

BODY = {
    "items": [
        {
            "messages": [
                {"role": "user", "content": "Answer the given question. Question: who founded kuhaven press?"}
            ],
            "response_text": "<search> Kuhaven Press founded by </search>",
            "env": "searchqa",
            "task": "who founded kuhaven press",
            "metadata": {"data_source": "nq"},
        }
    ],
    "top_logprobs": 2,
}


def test_a_teacher_process_scores_as_in_process(tmp_path: Path) -> None:
    expected = TeacherService(TeacherSettings(model="tiny")).score(ScoreRequest.model_validate(BODY))
    with ServiceProcess("services.teacher", ["--model", "tiny"]) as server:
        response = httpx.post(f"{server.url}/v1/score", json=BODY, timeout=60)
        assert response.status_code == 200, response.text
        assert response.json() == expected.model_dump(mode="json")
        assert httpx.get(f"{server.url}/health").json()["model"] == "tiny"
        learners_view_over_http_and_in_process(server.url, tmp_path)


def learners_view_over_http_and_in_process(url: str, tmp_path: Path) -> None:
    """The learner's teacher log-probs are the same from the service over HTTP and from its scoring core
    in this process, and a published checkpoint becomes the service's policy version."""
    loaded = load_model("tiny")
    prompt = chat_prompt_ids(loaded.tokenizer, [{"role": "user", "content": "Your task is to: heat some egg."}])
    queries = [
        Query(
            prompt, [27, 4113, 29, 1257], "alfworld", "heat some egg", {"task_type": "pick_heat_then_place_in_recep"}
        ),
        Query(prompt[:20], [11, 12, 13], "searchqa", "who founded kuhaven press", {"data_source": "nq"}),
    ]
    remote = HTTPTeacher(url)
    try:
        here = LocalTeacher(loaded.model, loaded.tokenizer, "tiny").logprobs(queries)
        there = remote.logprobs(queries)
        assert [len(x) for x in here] == [4, 3]
        for a, b in zip(here, there, strict=True):
            assert a == pytest.approx(b, abs=1e-5)
        loaded.model.save_pretrained(tmp_path / "step-1")
        loaded.tokenizer.save_pretrained(tmp_path / "step-1")
        remote.publish(tmp_path / "step-1", 7)
        assert httpx.get(f"{url}/v1/policy").json()["policy_version"] == 7
        one_run_after_another(url, tmp_path / "step-1", queries)
    finally:
        remote.close()


def one_run_after_another(url: str, checkpoint: Path, queries: list[Query]) -> None:
    """A new run takes a service another run left on its trained policy back to the base weights; a
    resumed run brings it to its last checkpoint; a run whose service another run took over stops,
    at its next score or its next publish."""
    first, second = HTTPTeacher(url, run="run-a"), HTTPTeacher(url, run="run-b")
    try:
        first.begin(checkpoint, 3)  # run a resumed at version 3 on a service left at 7 by another client
        held = first.policy()
        assert (held["run"], held["policy_version"], held["path"]) == ("run-a", 3, str(checkpoint))
        first.logprobs(queries)
        second.begin(None, 0)  # run b, new: its initial policy is the base
        held = second.policy()
        assert (held["run"], held["policy_version"]) == ("run-b", 0) and held["path"] != str(checkpoint)
        second.begin(None, 0)  # again (a restart of run b before its first step): nothing to change
        second.publish(checkpoint, 1)
        with pytest.raises(TeacherServiceError, match="holds policy version 1 of this run, which has no checkpoint"):
            second.begin(None, 0)  # run b's checkpoints are gone, but the teacher has its trained policy
        with pytest.raises(TeacherServiceError, match="now serves run run-b, not this one"):
            first.logprobs(queries)
        with pytest.raises(
            TeacherServiceError, match="refused policy version 4 of run run-a: it serves version 1 of run run-b"
        ):
            first.publish(checkpoint, 4)  # the older run does not take the service back: it stops
    finally:
        first.close(), second.close()


@pytest.mark.parametrize(
    "args",
    [
        ["--model", "/nonexistent/model"],
        ["--teacher-mode", "external"],
        ["--teacher-mode", "teacherless"],
        ["--teacher-model", "tiny"],
        ["--skills-mode", "llm"],
        ["--placement", "suffix"],
        ["--port", "70000"],
        ["--max-prompt-tokens", "0"],
        ["--max-batch-items", "x"],
        ["--batch-wait-ms", "-1"],
        ["--dtype", "int8"],
        ["--bogus"],
    ],
)
def test_cli_rejects_bad_flags(args: list[str]) -> None:
    out = subprocess.run([sys.executable, "-m", "services.teacher", *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "usage: python -m services.teacher" in out.stderr and "error:" in out.stderr
