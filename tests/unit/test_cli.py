"""Bad flags of the main job get a usage error and exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "args",
    [["--split", "test"], ["--env-url", "http://127.0.0.1:1"], ["--bogus"]],
)
def test_trainer_run_rejects_bad_flags(args: list[str]) -> None:
    out = subprocess.run([sys.executable, "-m", "trainer.run", *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "usage: python -m trainer.run" in out.stderr and "error:" in out.stderr
