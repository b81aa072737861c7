"""The teacher as its own process: it scores exactly as the same code in this process, and its
command line refuses bad flags."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from services.teacher.service import TeacherService
from shared.launch import ServiceProcess
from shared.settings import TeacherSettings
from shared.teacher_wire import ScoreRequest

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


def test_a_teacher_process_scores_as_in_process() -> None:
    expected = TeacherService(TeacherSettings(model="tiny")).score(ScoreRequest.model_validate(BODY))
    with ServiceProcess("services.teacher", ["--model", "tiny"]) as server:
        response = httpx.post(f"{server.url}/v1/score", json=BODY, timeout=60)
        assert response.status_code == 200, response.text
        assert response.json() == expected.model_dump(mode="json")
        assert httpx.get(f"{server.url}/health").json()["model"] == "tiny"


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
