"""Teacher and student log-probs of a response, the gap and the gate: the scoring core (no HTTP).

For each item (a prompt, the response token ids, the skill block):
- the student prompt is the exact `prompt_token_ids` (or the chat messages rendered with the model's
  template and the generation prompt);
- the privileged prompt puts the skills before it: as a text prefix,
  `"[Privileged Skill Information]\\n" + skills + "\\n\\n" + prompt text` with the prompt decoded with its
  special tokens (the reference's `build_teacher_batch`, sdar.md §2), or as a system message in the
  chat messages (a setting). When it is too long the prompt is cut from the left, never the skills
  (the reference cuts the skills first);
- the student log-prob of each response token under the student prompt and the policy, the teacher
  log-prob under the privileged prompt and the teacher model, `gap = teacher - student`, and
  `gate = sigmoid(beta * gap)` (sdar.md §3), optionally the teacher's top-k log-probs per position.

Sequences are scored in batches sorted by length (right padding), with logits computed only at
response positions, so memory stays at (response tokens x vocabulary) per sequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from services.teacher.skills import HEADER
from shared.model_specs import body, chat_prompt_ids

Placement = Literal["prefix", "system"]


class ScoringError(ValueError):
    """An item that cannot be scored as given (a client's mistake)."""


class TooLong(ScoringError):
    """A prompt or response over the configured limits."""


@dataclass
class Item:
    response_token_ids: list[int]
    prompt_token_ids: list[int] | None = None
    messages: list[dict[str, str]] | None = None
    skills: str = ""
    """The rendered skill block; empty for none (the teacher then sees the student's prompt)."""


@dataclass
class Scored:
    student_logprobs: list[float]
    teacher_logprobs: list[float]
    gap: list[float]
    gate: list[float]
    teacher_prompt_tokens: int
    top_logprobs: list[list[tuple[int, float]]] | None = None


def gate(teacher: torch.Tensor, student: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """`(gap, gate)`: `gap = teacher - student`, `gate = sigmoid(beta * gap)` (sdar.md §3)."""
    gap = teacher - student
    return gap, torch.sigmoid(beta * gap)


class Scorer:
    def __init__(self, tokenizer: Any, *, placement: Placement = "prefix", max_prompt_tokens: int = 4096) -> None:
        self.tokenizer = tokenizer
        self.placement = placement
        self.max_prompt_tokens = max_prompt_tokens
        self.vocab = len(tokenizer)
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    # -- prompts -------------------------------------------------------------------------------

    def _template(self, messages: list[dict[str, str]]) -> list[int]:
        return chat_prompt_ids(self.tokenizer, messages)

    def student_prompt(self, item: Item) -> list[int]:
        if item.prompt_token_ids is not None:
            return list(item.prompt_token_ids)
        if item.messages is None:
            raise ScoringError("an item needs prompt_token_ids or messages")
        return self._template(item.messages)

    def teacher_prompt(self, item: Item, student: list[int]) -> list[int]:
        """The privileged prompt's tokens; the skills survive any truncation."""
        if not item.skills:
            return self._fit([], student)
        if self.placement == "system":
            if item.messages is None:
                raise ScoringError("skills as a system message need the prompt's messages")
            return self._fit([], self._template(self._with_system(item.messages, item.skills)), keep_head=True)
        skills = self.tokenizer.encode(f"{HEADER}{item.skills}\n\n", add_special_tokens=False)
        prompt_text = self.tokenizer.decode(student, skip_special_tokens=False)
        return self._fit(skills, self.tokenizer.encode(prompt_text, add_special_tokens=False))

    @staticmethod
    def _with_system(messages: list[dict[str, str]], skills: str) -> list[dict[str, str]]:
        block = f"{HEADER}{skills}"
        if messages and messages[0].get("role") == "system":
            return [{"role": "system", "content": f"{messages[0]['content']}\n\n{block}"}, *messages[1:]]
        return [{"role": "system", "content": block}, *messages]

    def _fit(self, head: list[int], prompt: list[int], keep_head: bool = False) -> list[int]:
        room = self.max_prompt_tokens - len(head)
        if room <= 0:
            raise TooLong(f"the skill block alone is {len(head)} tokens, over the limit of {self.max_prompt_tokens}")
        if len(prompt) <= room:
            return head + prompt
        if keep_head:  # the system message leads the rendered chat: keep it, cut the oldest turns after it
            system_end = self._system_end(prompt)
            keep = room - system_end
            if keep <= 0:
                raise TooLong("the system message with the skills is over max_prompt_tokens")
            return prompt[:system_end] + prompt[len(prompt) - keep :]
        return head + prompt[len(prompt) - room :]

    def _system_end(self, ids: list[int]) -> int:
        """The length of the leading system message in rendered chat tokens (up to the first end
        of turn), or 0."""
        end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        return ids.index(end) + 1 if isinstance(end, int) and end in ids else 0

    def check(self, item: Item, max_response_tokens: int) -> None:
        ids = item.response_token_ids
        if not ids:
            raise ScoringError("response_token_ids is empty")
        if len(ids) > max_response_tokens:
            raise TooLong(f"response of {len(ids)} tokens is over the limit of {max_response_tokens}")
        for name, seq in (("response_token_ids", ids), ("prompt_token_ids", item.prompt_token_ids or [])):
            bad = [t for t in seq if not 0 <= t < self.vocab]
            if bad:
                raise ScoringError(f"{name} holds ids outside the vocabulary (0..{self.vocab - 1}): {bad[:5]}")
        if item.prompt_token_ids is not None and len(item.prompt_token_ids) > self.max_prompt_tokens:
            raise TooLong(
                f"prompt of {len(item.prompt_token_ids)} tokens is over the limit of {self.max_prompt_tokens}"
            )

    # -- forward -------------------------------------------------------------------------------

    @torch.no_grad()
    def logprobs(
        self, model: Any, pairs: Sequence[tuple[list[int], list[int]]], top_k: int = 0, max_batch_tokens: int = 16384
    ) -> list[tuple[torch.Tensor, list[list[tuple[int, float]]] | None]]:
        """For each `(prompt, response)`: the log-prob of every response token, and the top-k."""
        order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
        batches: list[list[int]] = []
        current: list[int] = []
        longest = 0
        for i in order:
            n = len(pairs[i][0]) + len(pairs[i][1])
            if current and (len(current) + 1) * max(longest, n) > max_batch_tokens:
                batches.append(current)
                current, longest = [], 0
            current.append(i)
            longest = max(longest, n)
        if current:
            batches.append(current)
        out: list[Any] = [None] * len(pairs)
        for batch in batches:
            for j, result in zip(batch, self._forward(model, [pairs[j] for j in batch], top_k), strict=True):
                out[j] = result
        return out

    def _forward(
        self, model: Any, pairs: list[tuple[list[int], list[int]]], top_k: int
    ) -> list[tuple[torch.Tensor, list[list[tuple[int, float]]] | None]]:
        width = max(len(p) + len(r) for p, r in pairs)
        device = next(model.parameters()).device
        ids = torch.full((len(pairs), width), self.pad, dtype=torch.long, device=device)
        mask = torch.zeros((len(pairs), width), dtype=torch.long, device=device)
        for row, (p, r) in enumerate(pairs):
            ids[row, : len(p) + len(r)] = torch.tensor(p + r, device=device)
            mask[row, : len(p) + len(r)] = 1
        hidden = body(model)(input_ids=ids, attention_mask=mask).last_hidden_state
        head = model.get_output_embeddings()
        results = []
        for row, (p, r) in enumerate(pairs):
            # the token at position t is predicted at position t - 1
            logits = head(hidden[row, len(p) - 1 : len(p) + len(r) - 1]).float()
            logp = torch.log_softmax(logits, dim=-1)
            chosen = logp.gather(1, torch.tensor(r, device=device).unsqueeze(1)).squeeze(1).cpu()
            top = None
            if top_k:
                values, indices = logp.topk(top_k, dim=-1)
                top = [
                    [(int(t), float(v)) for t, v in zip(ti, vi, strict=True)]
                    for ti, vi in zip(indices.tolist(), values.tolist(), strict=True)
                ]
            results.append((chosen, top))
        return results

    def score(
        self,
        items: Sequence[Item],
        student_model: Any,
        teacher_model: Any,
        *,
        beta: float | Sequence[float] = 5.0,
        top_k: int = 0,
    ) -> list[Scored]:
        """Score each item; `beta` is one gate sharpness for all, or one per item (a batch that merges
        requests of several callers)."""
        betas = [float(beta)] * len(items) if isinstance(beta, int | float) else list(beta)
        if len(betas) != len(items):
            raise ValueError("one beta per item")
        students = [self.student_prompt(item) for item in items]
        for prompt in students:
            if not prompt:
                raise ScoringError("the prompt is empty")
        teachers = [self.teacher_prompt(item, s) for item, s in zip(items, students, strict=True)]
        student = self.logprobs(
            student_model, [(s, i.response_token_ids) for s, i in zip(students, items, strict=True)]
        )
        teacher = self.logprobs(
            teacher_model, [(t, i.response_token_ids) for t, i in zip(teachers, items, strict=True)], top_k
        )
        scored = []
        for (s, _), (t, top), prompt, b in zip(student, teacher, teachers, betas, strict=True):
            gap, g = gate(t, s, b)
            scored.append(Scored(s.tolist(), t.tolist(), gap.tolist(), g.tolist(), len(prompt), top))
        return scored
