"""The two pages in a real browser (headless Chromium, driven by Selenium) against real servers: the
teacher's debugging page shows what `POST /v1/score` answers, token by token; the episode viewer plays
a counter episode to the end and opens a group from a rollout buffer; untrusted text (`<script>` in a
response, an action or an observation) is shown, never run. Skipped where Chromium is not installed
(`.ci/run` installs Debian's `chromium` and `chromium-driver`).

`SDAR_SCREENSHOTS=DIR` writes the screenshots the README shows (`docs/teacher-page.png`,
`docs/episode-viewer.png`) into DIR."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from shared.launch import ServiceProcess
from shared.redis import EmbeddedRedis
from shared.rollout_wire import encode
from tests.unit.test_learner import varied_groups

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = [
    pytest.mark.processes,
    pytest.mark.skipif(CHROMIUM is None or DRIVER is None, reason="no Chromium (apt install chromium chromium-driver)"),
]
SCRIPT = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 1">'
"""Untrusted text that runs if a page inserts it as HTML: the script element would not run from
`innerHTML`, but the image's error handler would (the pages' policy allows inline handlers)."""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # type: ignore[assignment]
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,1400",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


def wait(browser: Any, condition: Any, timeout_s: float = 60) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout_s, poll_frequency=0.1).until(lambda d: condition(d))


def by_id(browser: Any, name: str) -> Any:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.ID, name)


def fill(browser: Any, name: str, text: str) -> None:
    field = by_id(browser, name)
    field.clear()
    browser.execute_script("arguments[0].value = arguments[1]", field, text)  # exact text, no key events


def rows_of(root: Any, table: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return root.find_elements(By.CSS_SELECTOR, f"{table} tbody tr".strip())  # type: ignore[no-any-return]


def screenshot(browser: Any, name: str) -> None:
    if target := os.environ.get("SDAR_SCREENSHOTS"):
        Path(target).mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(Path(target) / name))


def test_the_teacher_page_shows_the_score_routes_answer_token_by_token(browser: Any, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    with ServiceProcess("services.teacher", ["--model", "tiny"]) as teacher:
        browser.get(teacher.url + "/")
        policy = httpx.get(teacher.url + "/").headers["content-security-policy"]
        assert "default-src 'none'" in policy and "connect-src 'self'" in policy
        # an error that echoes the request (an unknown env) is shown as text: the markup never runs
        hostile = "<img src=x onerror=pwned=2>"
        browser.execute_script(
            "arguments[0].add(new Option(arguments[1], arguments[1]), 0)", by_id(browser, "env"), hostile
        )
        Select(by_id(browser, "env")).select_by_index(0)
        by_id(browser, "score").click()
        wait(browser, lambda d: by_id(d, "error").text)
        assert hostile in by_id(browser, "error").text and not browser.find_elements(By.CSS_SELECTOR, "#error img")
        assert browser.execute_script("return window.pwned") is None
        Select(by_id(browser, "env")).select_by_value("alfworld")

        response = f"<think>heat the egg</think>{SCRIPT}<action>go to microwave 1</action>"
        fill(browser, "response", response)
        by_id(browser, "score").click()
        wait(browser, lambda d: by_id(d, "result").is_displayed() or by_id(d, "error").text)
        assert by_id(browser, "error").text == ""

        body = {
            "items": [
                {
                    "task": "heat some egg and put it in garbagecan",
                    "env": "alfworld",
                    "metadata": {"task_type": "pick_heat_then_place_in_recep"},
                    "messages": [
                        {"role": "user", "content": "Your task is to: heat some egg and put it in garbagecan."}
                    ],
                    "response_text": response,
                }
            ],
            "skills": "auto",
            "beta": 5,
        }
        expected = httpx.post(teacher.url + "/v1/score", json=body, timeout=60).json()["items"][0]
        spans = browser.find_elements(By.CSS_SELECTOR, "#tokens span.token")
        assert [s.get_attribute("textContent") for s in spans] == expected["tokens"]
        assert [float(s.get_attribute("data-gate")) for s in spans] == pytest.approx(expected["gate"])
        n = len(expected["gate"])
        assert float(by_id(browser, "gate_mean").text) == pytest.approx(sum(expected["gate"]) / n, abs=1e-4)
        share = sum(g > 0.5 for g in expected["gate"]) / n
        assert float(by_id(browser, "gate_share").text) == pytest.approx(share, abs=1e-4)
        assert float(by_id(browser, "gap_mean").text) == pytest.approx(sum(expected["gap"]) / n, abs=1e-4)
        hover = spans[0].get_attribute("title")
        assert f"student {expected['student_logprobs'][0]:.4f}" in hover and f"gate {expected['gate'][0]:.4f}" in hover
        skills = browser.find_elements(By.CSS_SELECTOR, "#skills_table tbody tr")
        assert [r.find_elements(By.TAG_NAME, "td")[0].text for r in skills] == expected["skills"]
        assert all(r.find_elements(By.TAG_NAME, "td")[3].text for r in skills)  # why each was chosen

        # the response's markup is text on the page, never elements, and nothing of it ran
        assert browser.execute_script("return window.pwned") is None
        assert not browser.find_elements(By.CSS_SELECTOR, "#tokens script, #tokens img")
        assert "<img src=x" in by_id(browser, "tokens").get_attribute("textContent")

        screenshot(browser, "teacher-page.png")
        by_gate = [s.value_of_css_property("background-color") for s in spans]
        browser.find_element(By.CSS_SELECTOR, "input[name=colour][value=gap]").click()
        repainted = browser.find_elements(By.CSS_SELECTOR, "#tokens span.token")  # drawn again
        by_gap = [s.value_of_css_property("background-color") for s in repainted]
        assert by_gap != by_gate  # the toggle colours by the gap

        by_id(browser, "curl_link").click()
        command = by_id(browser, "curl").text
        assert command.startswith("curl -s -X POST ")
        replayed = json.loads(subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=60).stdout)
        assert replayed["items"][0]["gate"] == pytest.approx(expected["gate"])  # the same request


def test_the_episode_viewer_plays_an_episode_and_opens_a_buffered_group(browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    store = EmbeddedRedis()
    try:
        with ServiceProcess("services.envs", ["--envs", "counter", "--redis-url", store.url]) as env:
            browser.get(env.url + "/")
            wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#env option"))
            Select(by_id(browser, "env")).select_by_value("counter")
            Select(by_id(browser, "split")).select_by_value("train")
            fill(browser, "index", "2")  # count to 3
            by_id(browser, "start").click()
            wait(browser, lambda d: by_id(d, "episode").is_displayed())
            assert by_id(browser, "title").text == "count to 3"

            fill(browser, "action", SCRIPT)  # an untrusted action: refused by the env, shown as text
            by_id(browser, "step").click()
            wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#steps tbody tr")) == 1)
            for n in range(3):  # then the admissible "inc" button, to the end
                buttons = browser.find_elements(By.CSS_SELECTOR, "#admissible button")
                next(b for b in buttons if b.text == "inc").click()
                wait(browser, lambda d, n=n: len(d.find_elements(By.CSS_SELECTOR, "#steps tbody tr")) == n + 2)
            rows = [[c.text for c in r.find_elements(By.TAG_NAME, "td")] for r in rows_of(browser, "#steps")]
            assert rows[0][1] == SCRIPT and [r[1] for r in rows[1:]] == ["inc", "inc", "inc"]
            assert rows[-1][4] == "won" and rows[-1][5].startswith("done") and by_id(browser, "status").text == "won"
            assert not by_id(browser, "stepper").is_displayed()  # a finished episode takes no more steps
            assert browser.execute_script("return window.pwned") is None
            assert not browser.find_elements(By.CSS_SELECTOR, "#steps script, #steps img")
            episode_id = by_id(browser, "episode_id").get_attribute("value")
            record = httpx.get(f"{env.url}/v1/episodes/{episode_id}").json()
            assert record["actions"] == [SCRIPT, "inc", "inc", "inc"] and record["done"]
            assert json.loads(by_id(browser, "audit").text) == record["audit"]
            screenshot(browser, "episode-viewer.png")

            # a group on a rollout buffer, by its stream entry id
            group = varied_groups(seed=3)[0].model_copy(update={"task": f"a group task {SCRIPT}"})
            client = redis.Redis.from_url(store.url)
            entry = client.xadd("sdar:run:test:groups", encode(group)).decode()  # type: ignore[union-attr]
            client.close()
            fill(browser, "stream", "sdar:run:test:groups")
            fill(browser, "entry", entry)
            by_id(browser, "group").click()
            wait(browser, lambda d: by_id(d, "groupview").is_displayed() or by_id(d, "error").text)
            assert by_id(browser, "group_title").text == group.task  # shown as text
            tables = browser.find_elements(By.CSS_SELECTOR, "#trajectories table")
            assert len(tables) == len(group.episodes)
            assert browser.execute_script("return window.pwned") is None
            for table, trajectory in zip(tables, group.episodes, strict=True):
                cells = [[c.text for c in r.find_elements(By.TAG_NAME, "td")] for r in rows_of(table, "")]
                assert [c[2] for c in cells] == ["valid" if s.valid else "invalid" for s in trajectory.steps]
                sums = [sum(s.sampler_logprobs) for s in trajectory.steps]
                assert [float(c[3]) for c in cells] == pytest.approx(sums, abs=1e-3)
            fill(browser, "entry", "1-0")
            by_id(browser, "group").click()
            wait(browser, lambda d: "no group 1-0" in by_id(d, "error").text)
    finally:
        store.stop()
