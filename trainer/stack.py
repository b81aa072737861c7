"""A running `docker compose up` stack, found at the addresses its compose file publishes, so that
`python -m trainer.run` with no URLs uses it instead of starting its own services.

The compose file is the repo's `docker-compose.yml` (or `$SDAR_COMPOSE_FILE`). An env service is the
compose service named after the env; its address is the first host port of its range. A stack is used
only when the env service for the run's env answers and hosts that env, Redis answers, and, for an
algorithm with a teacher, the teacher answers and serves the run's model. Otherwise the run starts its
embedded defaults, as without a stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared import compose


@dataclass(frozen=True)
class Stack:
    env_url: str
    redis_url: str
    teacher_url: str | None


def _json(url: str) -> Any:
    import httpx

    try:
        response = httpx.get(url, timeout=2.0)
        return response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def running_stack(env: str, model: str, needs_teacher: bool) -> tuple[Stack | None, str]:
    """The stack to use, or None and why not (one line)."""
    path = compose.compose_file()
    if not path.is_file():
        return None, f"no compose file at {path}"
    try:
        found = compose.addresses(compose.load(path))
    except ValueError as e:
        return None, str(e)
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
