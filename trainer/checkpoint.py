"""Checkpoints of a run (`RUN_DIR/checkpoints/step-NNNNNN/`), whole or not at all.

A checkpoint holds the policy in Hugging Face format (`model.safetensors`, `config.json`, the
tokenizer: `AutoModelForCausalLM.from_pretrained` loads it, and so does the teacher service; under
LoRA the adapter, `adapter_model.safetensors` and `adapter_config.json`, which
`shared.models.load_model` loads over its base, and `merged/` when asked for), the
optimizer and scheduler state (`trainer_state.pt`), and `progress.json`: the step, the policy
version, tokens and samples seen, the buffer's consumer and key prefix, and the RNG states of
Python, NumPy and torch. It is written to a temporary directory beside the others and renamed, so a
kill never leaves half of one; the last `keep` are kept.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

PREFIX = "step-"


class CheckpointError(ValueError):
    """A directory that is not a checkpoint or a run of this trainer."""


@dataclass
class Progress:
    step: int = 0
    """Training steps done."""
    policy_version: int = 0
    """The version of the weights saved (one per step)."""
    tokens_seen: int = 0
    samples_seen: int = 0
    consumer: str = "learner-0"
    """The buffer consumer that holds this run's unacknowledged groups."""
    redis_prefix: str = "sdar:rollout:"
    extra: dict[str, Any] = field(default_factory=dict)


def rng_state() -> dict[str, Any]:
    numpy_state: Any = np.random.get_state()
    kind, keys, pos, has_gauss, gauss = numpy_state
    return {
        "python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
        "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
        "torch": torch.get_rng_state().tolist(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())


def save(
    directory: Path,
    progress: Progress,
    model: Any,
    tokenizer: Any,
    trainer_state: dict[str, Any],
    keep: int = 2,
    merge: bool = False,
) -> Path:
    """Write a checkpoint of this step under `directory` and prune to the last `keep`; returns its path.
    `trainer_state`: the optimizer's and the scheduler's (`Learner.trainer_state`). `merge`: a LoRA
    policy's checkpoint also holds `merged/`, the base with the adapter merged in."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{PREFIX}{progress.step:06d}"
    for stale in directory.glob(".tmp-*"):  # saves a kill interrupted: never complete, never used
        shutil.rmtree(stale, ignore_errors=True)
    tmp = directory / f".tmp-{final.name}-{os.getpid()}"
    tmp.mkdir()
    model.save_pretrained(tmp, safe_serialization=True)  # under LoRA: the adapter alone
    tokenizer.save_pretrained(tmp)
    if merge:
        from trainer.adapters import merged

        merged(model).save_pretrained(tmp / "merged", safe_serialization=True)
        tokenizer.save_pretrained(tmp / "merged")
    torch.save(trainer_state, tmp / "trainer_state.pt")
    (tmp / "progress.json").write_text(json.dumps(asdict(progress) | {"rng": rng_state()}))
    _fsync_tree(tmp)
    if final.exists():  # a run that reuses a step number (a resume of a copied run directory)
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in checkpoints(directory)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def checkpoints(directory: Path) -> list[Path]:
    """The complete checkpoints under `directory`, oldest first."""
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.name.startswith(PREFIX) and (p / "progress.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX) :]))


def read_progress(path: Path) -> tuple[Progress, dict[str, Any]]:
    """A checkpoint's progress and its RNG states."""
    try:
        raw = json.loads((path / "progress.json").read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a checkpoint: {e}") from None
    rng = raw.pop("rng")
    return Progress(**raw), rng


def trainer_state(path: Path) -> dict[str, Any]:
    """A checkpoint's optimizer and scheduler state, for `Learner.load_trainer_state`."""
    state: dict[str, Any] = torch.load(path / "trainer_state.pt", weights_only=True)
    return state
