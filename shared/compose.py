"""The repo's `docker-compose.yml`, read as Compose reads it: the one source of the services' commands,
ports, settings and healthchecks, for the local launcher (`services/launch.py`) and for finding a
running stack (`trainer/stack.py`).

Interpolation follows the Compose Specification for what the file uses: `${VAR:-default}` (the
default when VAR is unset or empty), `${VAR-default}` (when unset), `${VAR}`, `$VAR` and `$$` (a
literal `$`). YAML merge keys (`<<: *service`) are YAML's own.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

COMPOSE_FILE = Path(__file__).resolve().parents[1] / "docker-compose.yml"

_VARIABLE = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


def compose_file() -> Path:
    """`$SDAR_COMPOSE_FILE`, else the repo's."""
    return Path(os.environ.get("SDAR_COMPOSE_FILE", COMPOSE_FILE))


def interpolate(text: str, environ: Mapping[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1) or match.group(4)
        value, how, default = environ.get(name), match.group(2), match.group(3)
        if how == ":-" and not value:
            return default
        if how == "-" and value is None:
            return default
        return value or ""

    return _VARIABLE.sub(one, text)


def _interpolated(node: Any, environ: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, environ)
    if isinstance(node, list):
        return [_interpolated(x, environ) for x in node]
    if isinstance(node, dict):
        return {k: _interpolated(v, environ) for k, v in node.items()}
    return node


def load(path: Path | None = None, environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The compose file's services, interpolated from `environ` (default: this process's), or a
    one-line `ValueError`."""
    import yaml

    path = path or compose_file()
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ValueError(f"cannot read the compose file {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise ValueError(f"{path} is not YAML: {str(e).splitlines()[0]}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("services"), dict):
        raise ValueError(f"{path} has no services")
    services: dict[str, Any] = _interpolated(raw["services"], os.environ if environ is None else environ)
    return services


def ports(service: Mapping[str, Any]) -> tuple[list[int], int | None]:
    """The host ports a service publishes on 127.0.0.1 (a range gives one per replica) and the
    container port they map to (`"127.0.0.1:8101-8104:8001"` gives `([8101, ..., 8104], 8001)`)."""
    host: list[int] = []
    container = None
    for entry in service.get("ports", []):
        match = re.fullmatch(r"(?:127\.0\.0\.1:)?(\d+)(?:-(\d+))?:(\d+)", str(entry))
        if match:
            first = int(match.group(1))
            host += range(first, int(match.group(2) or first) + 1)
            container = int(match.group(3))
    return host, container


def addresses(services: Mapping[str, Any]) -> dict[str, list[str]]:
    """Service name -> the addresses on this host it may answer at (one a replica), for every
    service that publishes a port: `redis://127.0.0.1:P/0` for Redis, `http://127.0.0.1:P` else."""
    out = {}
    for name, service in services.items():
        host, _ = ports(service)
        if host:
            out[name] = [f"redis://127.0.0.1:{p}/0" if is_redis(service) else f"http://127.0.0.1:{p}" for p in host]
    return out


def is_redis(service: Mapping[str, Any]) -> bool:
    """A service run from a Redis (or Valkey) image rather than the project's."""
    image = str(service.get("image", ""))
    return "build" not in service and image.split("/")[-1].startswith(("redis", "valkey"))
