"""`docker-compose.yml` against the Compose Specification's JSON Schema (`tests/data/compose-spec.json`,
see its README), and against the project: every service has a healthcheck, waits for what it needs to
be healthy, publishes only on 127.0.0.1, and its command is one the project's own parsers accept with
the service's environment (no Docker engine runs here)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import yaml

from shared import compose as shared_compose

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_SERVICES = ("alfworld", "webshop", "searchqa")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The file as Compose reads it with every variable unset (the defaults), `${PWD}` as /repo."""
    return {"services": shared_compose.load(COMPOSE, {"PWD": "/repo"})}


def test_the_file_validates_against_the_compose_specification() -> None:
    schema = json.loads((ROOT / "tests" / "data" / "compose-spec.json").read_text())
    validator = jsonschema_rs.validator_for(schema)
    document = yaml.safe_load(COMPOSE.read_text())
    errors = [f"{'/'.join(map(str, e.instance_path))}: {e.message}" for e in validator.iter_errors(document)]
    assert not errors, errors
    broken = dict(document, services={"alfworld": {"image": "x", "ports": 8001, "healthcheck": {"retries": "many"}}})
    assert not validator.is_valid(broken)  # the schema does refuse what is not Compose


def test_every_service_is_healthchecked_waits_for_health_and_publishes_on_loopback(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) >= {"redis", *ENV_SERVICES, "teacher", "trainer"}
    for name, service in services.items():
        if name != "trainer":
            assert service["healthcheck"]["test"], name
        for dependency in service.get("depends_on", {}).values():
            assert dependency["condition"] == "service_healthy", name
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), (name, port)
    assert services["trainer"]["profiles"] == ["gpu"]
    assert "--appendonly" in services["redis"]["command"] and "yes" in services["redis"]["command"]
    assert any(v.endswith(":/data") for v in services["redis"]["volumes"])
    for name in ENV_SERVICES:  # replicas: a range of host ports, one Redis
        assert re.fullmatch(r"127\.0\.0\.1:\d+-\d+:8001", services[name]["ports"][0]), name
        assert services[name]["environment"]["SDAR_REDIS_URL"] == "redis://redis:6379/0"
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"


def command_args(service: dict[str, Any], module: str) -> list[str]:
    command = service["command"]
    assert command[:3] == ["python", "-m", module]
    return list(command[3:])


@pytest.mark.parametrize("name", ENV_SERVICES)
def test_each_env_service_command_is_one_the_env_service_accepts(
    compose: dict[str, Any], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.envs.__main__ import parse_args

    service = compose["services"][name]
    for key, value in service["environment"].items():
        monkeypatch.setenv(key, str(value))
    settings = parse_args(command_args(service, "services.envs"))
    assert settings.envs == [name] and settings.host == "0.0.0.0" and settings.port == 8001
    assert settings.redis_url == "redis://redis:6379/0" and settings.redis_prefix == f"sdar:envs:{name}:"
    port = service["healthcheck"]["test"][-1]
    assert "127.0.0.1:8001/health" in port


def test_the_teacher_command_is_one_the_teacher_accepts(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.teacher.__main__ import parse_args

    service = compose["services"]["teacher"]
    for key, value in service["environment"].items():
        monkeypatch.setenv(key, str(value))
    settings = parse_args(command_args(service, "services.teacher"))
    assert (settings.host, settings.port, settings.model) == ("0.0.0.0", 8002, "smollm2")
    assert "127.0.0.1:8002/health" in service["healthcheck"]["test"][-1]
    assert "./runs:/repo/runs:ro" in service["volumes"]  # the trainer's checkpoints, at the host's path


def test_the_trainer_command_is_one_the_main_job_accepts(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainer import run

    monkeypatch.setattr(run, "reachable", lambda url: True)  # the compose network's names do not resolve here
    args = run.parse_args(command_args(compose["services"]["trainer"], "trainer.run"))
    assert args.env_url == "http://alfworld:8001" and args.teacher_url == "http://teacher:8002"
    assert args.redis_url == "redis://redis:6379/0"
    assert str(args.runs_dir) == "/repo/runs"  # where the teacher sees the checkpoints too


def test_the_image_runs_the_projects_own_set_up_as_a_non_root_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "RUN ./scripts/setup" in dockerfile
    users = re.findall(r"^USER (\S+)", dockerfile, flags=re.MULTILINE)
    assert users and users[-1] != "root"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored and "runs" in ignored
    assert os.path.isfile(ROOT / "scripts" / "setup")
