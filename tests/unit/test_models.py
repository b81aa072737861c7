"""Model loading: the packaged SmolLM2 converted once from its checked GGUF, the tiny random model,
local directories, and clear errors instead of downloads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from shared.model_specs import GGUF_FILE, ModelNotFound, gguf_path
from shared.models import load_model, load_tokenizer, smollm2_dir
from tests.golden_smollm2 import fingerprint


def test_tiny_is_the_same_model_in_every_load() -> None:
    a, b = load_model("tiny"), load_model("tiny")
    assert a.path == "tiny" and a.model.config.vocab_size == len(a.tokenizer) == 49152
    for (name, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items(), strict=True):
        assert torch.equal(x, y), name


def test_a_saved_directory_loads_as_it_was_saved(tmp_path: Path) -> None:
    tiny = load_model("tiny")
    tiny.model.save_pretrained(tmp_path)
    tiny.tokenizer.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path))
    assert loaded.path == str(tmp_path)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(loaded.model(ids).logits, tiny.model(ids).logits)


@pytest.mark.slow  # ~9 s: a fresh interpreter importing transformers; run by .ci/run after the default suite
def test_the_hub_is_offline_when_models_is_imported_first() -> None:
    code = "import shared.models, huggingface_hub.constants as c; print(c.HF_HUB_OFFLINE)"
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "True", out.stderr[-1000:]


def test_missing_models_are_clear_errors_not_downloads(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="no model directory"):
        load_model(str(tmp_path / "nothing"))
    with pytest.raises(ModelNotFound, match="nothing is downloaded at run time"):
        load_model("HuggingFaceTB/SmolLM2-1.7B-Instruct-not-cached")


def test_a_corrupt_gguf_is_refused_by_its_checksum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / GGUF_FILE
    fake.write_bytes(b"GGUF not really")
    monkeypatch.setenv("SDAR_SMOLLM2_GGUF", str(fake))
    assert gguf_path() == fake
    with pytest.raises(ValueError, match="SHA-256 does not match"):
        smollm2_dir(tmp_path / "cache")
    assert not (tmp_path / "cache" / "models").exists()  # refused before anything is written


@pytest.mark.slow  # ~36 s: converts the GGUF file twice; run by .ci/run after the default suite
def test_smollm2_is_converted_once_and_equals_the_gguf_model(sdar_cache: Path) -> None:
    first = load_model("smollm2", cache_dir=sdar_cache)
    assert Path(first.path).parent == sdar_cache / "models" and (Path(first.path) / "model.safetensors").is_file()
    assert type(first.model).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in first.model.parameters()) == 134_515_008
    again = load_model("default", cache_dir=sdar_cache)
    assert again.path == first.path
    tokenizer = load_tokenizer("smollm2", sdar_cache)
    assert tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False).startswith("<|im_start|>")
    # the GGUF model's logits, as transformers' GGUF loader computes them (tests/golden_smollm2.py)
    golden = json.loads((Path(__file__).parents[1] / "data" / "smollm2_golden.json").read_text())
    got = fingerprint(first.model, tokenizer)
    assert got["prompt_ids"] == golden["prompt_ids"] and got["top_ids"] == golden["top_ids"]
    for key in ("top_logits", "sum", "sum_of_squares"):
        assert np.allclose(got[key], golden[key], rtol=1e-5, atol=1e-4), key


@pytest.mark.sweep
def test_smollm2_converted_equals_the_gguf_model_loaded_by_transformers(sdar_cache: Path) -> None:
    first = load_model("smollm2", cache_dir=sdar_cache)
    tokenizer = load_tokenizer("smollm2", sdar_cache)
    source = gguf_path()
    quantized = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    ids = torch.tensor([tokenizer.encode("The capital of France is")])
    with torch.no_grad():
        assert torch.equal(first.model(ids).logits, quantized(ids).logits)
