"""A running `docker compose up` stack, found at the addresses its compose file publishes, so that
`python -m trainer.run` with no URLs uses it instead of starting its own services.

The compose file is the repo's `docker-compose.yml` (or `$SDAR_COMPOSE_FILE`). An env service is the
compose service named after the env; its address is the first host port of its range. A stack is used
only when the env service for the run's env answers and hosts that env, Redis answers, and, for an
algorithm with a teacher, the teacher answers and serves the run's model. Otherwise the run starts its
embedded defaults, as without a stack.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COMPOSE_FILE = Path(__file__).resolve().parents[1] / "docker-compose.yml"


@dataclass(frozen=True)
class Stack:
    env_url: str
    redis_url: str
    teacher_url: str | None


def _host_ports(published: Any) -> list[int]:
    """The host ports of a `"127.0.0.1:8101-8104:8001"`-style entry (a range: one a replica), the
    compose file's `${VAR:-default}` read as its default unless the variable is set."""
    text = re.sub(r"\$\{([A-Z_]+):-([^}]*)\}", lambda m: os.environ.get(m.group(1), m.group(2)), str(published))
    match = re.fullmatch(r"(?:127\.0\.0\.1:)?(\d+)(?:-(\d+))?:\d+", text)
    if not match:
        return []
    first = int(match.group(1))
    return list(range(first, int(match.group(2) or first) + 1))


def replicas(path: Path) -> dict[str, list[str]]:
    """Service name -> the addresses on this host it may answer at (one a replica), for every
    service that publishes a port."""
    import yaml

    services = (yaml.safe_load(path.read_text()) or {}).get("services", {})
    out = {}
    for name, service in services.items():
        ports = [p for x in service.get("ports", []) for p in _host_ports(x)]
        if ports:
            scheme = "redis" if name == "redis" else "http"
            out[name] = [f"{scheme}://127.0.0.1:{p}" + ("/0" if scheme == "redis" else "") for p in ports]
    return out


def addresses(path: Path) -> dict[str, str]:
    """Service name -> its first address on this host."""
    return {name: urls[0] for name, urls in replicas(path).items()}


def _json(url: str) -> Any:
    import httpx

    try:
        response = httpx.get(url, timeout=2.0)
        return response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def running_stack(env: str, model: str, needs_teacher: bool) -> tuple[Stack | None, str]:
    """The stack to use, or None and why not (one line)."""
    path = Path(os.environ.get("SDAR_COMPOSE_FILE", COMPOSE_FILE))
    if not path.is_file():
        return None, f"no compose file at {path}"
    found = replicas(path)
    candidates, redis_url = found.get(env), found.get("redis", [None])[0]
    if not candidates or redis_url is None:
        return None, f"{path.name} publishes no {env} service or no Redis"
    up = [url for url in candidates if env in ((_json(f"{url}/health") or {}).get("envs") or [])]
    if not up:
        return None, f"no {env} env service at {candidates[0]}"
    env_url = ",".join(up)  # every replica that answers: the env client spreads episodes over them
    from shared.redis import reachable

    if not reachable(redis_url):
        return None, f"no Redis at {redis_url}"
    teacher_url = found.get("teacher", [None])[0] if needs_teacher else None
    if needs_teacher:
        served = _json(f"{teacher_url}/health") if teacher_url else None
        if not served:
            return None, f"no teacher at {teacher_url}"
        if served.get("model") != model:
            return None, f"the teacher at {teacher_url} serves {served.get('model')!r}, not this run's {model!r}"
    return Stack(env_url, redis_url, teacher_url), ""
