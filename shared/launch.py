"""Start service processes on loopback and wait until they answer `/health` (the launcher)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import httpx


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 15.0) -> None:
    """Terminate a child process, and kill it if it does not exit in time."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _prctl() -> Any:
    """libc's `prctl`, loaded in the parent: a child between fork and exec must not load libraries."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _prctl()
_PR_SET_PDEATHSIG = 1


def tie_to_parent() -> None:
    """In the child before exec (Linux): be sent SIGTERM when the parent dies, even by SIGKILL, so a
    killed trainer leaves no service behind. Linux ties this to the *thread* that started the child:
    only for children started by a thread that lives as long as they should (the main thread)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServiceProcess:
    """A `python -m <module> ... --port P` process; `url` is where it listens."""

    def __init__(
        self,
        module: str,
        args: Sequence[str],
        *,
        port: int | None = None,
        env: dict[str, str] | None = None,
        startup_s: float = 120.0,
        die_with_parent: bool = False,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [sys.executable, "-m", module, *args, "--host", "127.0.0.1", "--port", str(self.port)]
        self.process = subprocess.Popen(
            self.command,
            env={**os.environ, **(env or {})},
            preexec_fn=tie_to_parent if die_with_parent else None,
        )
        self._wait(startup_s)

    def _wait(self, startup_s: float) -> None:
        deadline = time.monotonic() + startup_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{' '.join(self.command)} exited with code {self.process.returncode}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{' '.join(self.command)} did not become healthy in {startup_s} s")

    def kill(self) -> None:
        """Die at once, as a crash would."""
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        stop_process(self.process)

    def __enter__(self) -> ServiceProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
