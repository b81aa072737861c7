"""Golden logits of SmolLM2 as transformers' own GGUF loader computes them; run as a script it prints
them as JSON.

Loading the GGUF through transformers costs ~25 s (it parses the file's vocabulary twice), so the
default test compares the converted model with these numbers, written once by
`python -m tests.golden_smollm2 > tests/data/smollm2_golden.json`; the `sweep` test compares it with
the GGUF model itself, exactly.
"""

from __future__ import annotations

import json
from typing import Any

import torch

PROMPT = "The capital of France is"
TOP = 50


def fingerprint(model: Any, tokenizer: Any) -> dict[str, Any]:
    """The prompt's ids, and per position the top logits and the sums of all of them."""
    ids = tokenizer.encode(PROMPT)
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    top = logits.topk(TOP, dim=-1)
    return {
        "prompt_ids": ids,
        "top_ids": top.indices.tolist(),
        "top_logits": top.values.tolist(),
        "sum": logits.sum(dim=-1).tolist(),
        "sum_of_squares": (logits**2).sum(dim=-1).tolist(),
    }


if __name__ == "__main__":
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from shared.model_specs import gguf_path

    source = gguf_path()
    quantized = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    print(json.dumps(fingerprint(quantized.eval(), tokenizer)))
