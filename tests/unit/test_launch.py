"""The launcher's plan of the repo's `docker-compose.yml` (`services/launch.py`): the compose file's
own commands, settings and healthchecks, rewritten for this host; Compose's interpolation; and bad
flags or files as one-line errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from services import launch
from shared import compose

SERVICES = compose.load(compose.COMPOSE_FILE, {"PWD": "/repo"})


def test_interpolation_follows_the_compose_specification() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert compose.interpolate("${SET:-d} ${EMPTY:-d} ${UNSET:-d}", env) == "x d d"
    assert compose.interpolate("${SET-d} ${EMPTY-d} ${UNSET-d}", env) == "x  d"
    assert compose.interpolate("$SET ${SET} $$SET ${UNSET}", env) == "x x $SET "


def test_the_stack_starts_redis_first_and_each_service_after_what_it_needs() -> None:
    names = launch.order(SERVICES, None)
    assert names[0] == "redis" and set(names) == {"redis", "alfworld", "webshop", "searchqa", "teacher"}
    assert "trainer" not in names  # under the gpu profile
    assert launch.order(SERVICES, ["searchqa"]) == ["redis", "searchqa"]
    assert launch.order(SERVICES, ["teacher"]) == ["teacher"]


def test_the_compose_commands_settings_and_healthchecks_are_rewritten_for_this_host(tmp_path: Path) -> None:
    processes = launch.plan(SERVICES, ["redis", "alfworld", "teacher"], {"alfworld": 2}, tmp_path)
    redis, first, second, teacher = processes
    assert redis.command[1:5] == ["--appendonly", "yes", "--appendfsync", "everysec"]  # the compose command's
    assert redis.command[-6:] == ["--port", "6379", "--bind", "127.0.0.1", "--dir", str(tmp_path / "redis")]
    assert redis.health is None and redis.url == "redis://127.0.0.1:6379/0"
    assert first.command == [
        *(sys.executable, "-m", "services.envs", "--envs", "alfworld"),
        *("--host", "127.0.0.1", "--port", "8101"),
    ]
    assert (first.name, second.name, second.port) == ("alfworld", "alfworld-2", 8102)
    assert first.env["SDAR_REDIS_URL"] == "redis://127.0.0.1:6379/0"  # was redis://redis:6379/0
    assert first.env["ALFWORLD_DATA"] == str(launch.ROOT / "data" / "alfworld")  # was /data/alfworld (./data)
    assert first.env["SDAR_REDIS_PREFIX"] == "sdar:envs:alfworld:"
    assert first.health is not None and first.health[0] == sys.executable
    assert "http://127.0.0.1:8102/health" in second.health[-1]  # type: ignore[index]
    assert first.wait_s == 120 + 10 * 3  # start_period + retries x interval
    assert teacher.command[-4:] == ["--host", "127.0.0.1", "--port", "8002"]
    assert teacher.env["SDAR_TEACHER_MODEL"] == "smollm2"


def test_a_given_redis_is_used_whole_not_started(tmp_path: Path) -> None:
    given = "rediss://:secret@10.0.0.5:7000/3"  # its password, database and TLS kept
    processes = launch.plan(SERVICES, ["redis", "webshop"], {}, tmp_path, redis_url=given)
    assert [p.service for p in processes] == ["webshop"]
    assert processes[0].env["SDAR_REDIS_URL"] == given


def test_compose_durations_healthcheck_forms_and_environment() -> None:
    assert [launch._seconds(x, 0) for x in ("10s", "1m30s", "500ms", "2h", None)] == [10, 90, 0.5, 7200, 0]
    assert launch._health_command({"test": "curl -f http://127.0.0.1:8001/health"}, 8001, 8101) == [
        "sh",
        "-c",
        "curl -f http://127.0.0.1:8101/health",
    ]
    assert launch._health_command({"test": ["CMD", "true"], "disable": True}, None, 1) is None
    service = {"environment": ["A=1", "HOME"]}  # a bare key takes this shell's value, as in Compose
    assert launch._environment(service) == {"A": "1", "HOME": __import__("os").environ["HOME"]}


def test_a_dependency_the_file_does_not_define_is_refused() -> None:
    with pytest.raises(launch.LaunchError, match="depends on 'db', which the compose file does not define"):
        launch.order({"a": {"depends_on": ["db"]}}, None)


def test_a_compose_variable_moves_a_port(tmp_path: Path) -> None:
    services = compose.load(compose.COMPOSE_FILE, {"SDAR_REDIS_PORT": "6390"})
    (redis, env) = launch.plan(services, ["redis", "searchqa"], {}, tmp_path)
    assert redis.port == 6390 and env.env["SDAR_REDIS_URL"] == "redis://127.0.0.1:6390/0"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["up", "--scale", "alfworld=9"], "--scale alfworld=9: the compose file publishes 4 port(s) for it"),
        (["up", "--only", "nosuch"], "no service 'nosuch' in the compose file; there are redis, alfworld"),
        (["up", "--compose-file", "/nowhere.yml"], "cannot read the compose file /nowhere.yml: No such file"),
    ],
)
def test_bad_requests_are_one_line_errors(
    args: list[str], says: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert launch.main([*args, "--state-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("python -m services.launch: error: ") and says in err and "\n" not in err
    assert not (tmp_path / "state.json").exists()  # nothing started


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["start"], "argument command: invalid choice: 'start'"),
        (["up", "--scale", "alfworld"], "--scale 'alfworld': expected SERVICE=N, N at least 1"),
        (["up", "--scale", "alfworld=0"], "--scale 'alfworld=0': expected SERVICE=N, N at least 1"),
        (["up", "--redis-url", "127.0.0.1:6379"], "--redis-url must be a redis:// URL"),
    ],
)
def test_bad_flags_are_usage_errors(args: list[str], says: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        launch.parse_args(args)
    assert exit.value.code == 2 and says in capsys.readouterr().err


def test_a_broken_state_file_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "state.json").write_text("{not json")
    assert launch.main(["status", "--state-dir", str(tmp_path)]) == 1
    assert "is not a launcher state" in capsys.readouterr().err


def test_a_circle_of_dependencies_is_refused() -> None:
    services = {"a": {"depends_on": {"b": {}}}, "b": {"depends_on": ["a"]}}
    with pytest.raises(launch.LaunchError, match="runs in a circle: a -> b -> a"):
        launch.order(services, None)
