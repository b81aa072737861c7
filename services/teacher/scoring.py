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
response positions, so memory stays at (response tokens x vocabulary) per sequence. Prompts that
begin alike (a group's samples share the skill block and the task) run their common prefix once; the
rest of each attends to its cached keys and values (`prefix_groups`, `min_shared_prefix`).
"""

from __future__ import annotations

import copy
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
    prompts: tuple[list[int], list[int]] | None = None
    """The student's and the teacher's prompt ids, once `Scorer.prompts` has rendered them."""


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


def common_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens `a` and `b` share."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def prefix_groups(prompts: Sequence[Sequence[int]], min_shared: int) -> list[tuple[int, list[int]]]:
    """`(shared, indices)`: the prompts cut into groups whose first `shared` tokens are the same, at
    least `min_shared` of them (0: no sharing), and the prompts that share nothing in one group with
    `shared = 0`. Every prompt keeps at least its last token out of the prefix (its hidden state
    predicts the response's first token). Prompts are taken in sorted order; one joins the group
    before it while the tokens saved, `(members - 1) * shared`, do not fall, and a group of one is
    left behind when its prompt shares more with the next one than with it (so a prompt that sorts
    first and shares little does not cut the group after it short)."""
    groups: list[tuple[int, list[int]]] = []
    alone: list[int] = []

    def close(shared: int, members: list[int]) -> None:
        if len(members) > 1 and shared >= min_shared > 0:
            groups.append((shared, members))
        else:
            alone.extend(members)

    order = sorted(range(len(prompts)), key=lambda i: list(prompts[i]))
    members: list[int] = []
    shared = 0
    for k, i in enumerate(order):
        if members:
            first = prompts[members[0]]
            joined = min(shared, common_length(first, prompts[i]), len(prompts[i]) - 1)
            ahead = common_length(prompts[i], prompts[order[k + 1]]) if k + 1 < len(order) else 0
            better_apart = len(members) == 1 and ahead > joined
            if not better_apart and len(members) * joined >= (len(members) - 1) * shared and joined >= min_shared:
                members.append(i)
                shared = joined
                continue
            close(shared, members)
        members, shared = [i], len(prompts[i]) - 1
    if members:
        close(shared, members)
    if alone:
        groups.append((0, sorted(alone)))
    return groups


def length_batches(indices: Sequence[int], lengths: Sequence[int], max_batch_tokens: int) -> list[list[int]]:
    """`indices` sorted by `lengths` (aligned with them) and cut into batches of at most
    `max_batch_tokens` padded tokens (one over-long sequence makes a batch of its own)."""
    order = sorted(range(len(indices)), key=lambda k: lengths[k])
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for k in order:
        n = lengths[k]
        if current and (len(current) + 1) * max(longest, n) > max_batch_tokens:
            batches.append(current)
            current, longest = [], 0
        current.append(indices[k])
        longest = max(longest, n)
    if current:
        batches.append(current)
    return batches


class Scorer:
    def __init__(
        self,
        tokenizer: Any,
        *,
        placement: Placement = "prefix",
        max_prompt_tokens: int = 4096,
        min_shared_prefix: int = 32,
    ) -> None:
        self.tokenizer = tokenizer
        self.min_shared_prefix = min_shared_prefix
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

    def prompts(self, item: Item) -> tuple[list[int], list[int]]:
        """The item's student and privileged prompts, rendered and checked (kept on the item), so that
        what cannot be rendered fails on its own request, before any batch is formed."""
        if item.prompts is None:
            try:
                student = self.student_prompt(item)
                teacher = self.teacher_prompt(item, student)
            except (TypeError, ValueError, UnicodeError) as e:  # a text the tokenizer cannot encode
                if isinstance(e, ScoringError):
                    raise
                raise ScoringError(f"the prompt cannot be tokenized: {e}") from None
            if not student:
                raise ScoringError("the prompt is empty")
            item.prompts = (student, teacher)
        return item.prompts

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
        """For each `(prompt, response)`: the log-prob of every response token, and the top-k.

        Prompts that begin alike (the samples of a group: the same skills, the same task) are scored
        as one shared prefix, run once, whose keys and values every suffix then attends to; the rest
        in batches sorted by length."""
        out: list[Any] = [None] * len(pairs)
        for shared, members in prefix_groups([p for p, _ in pairs], self.min_shared_prefix):
            prefix = self._prefix(model, pairs[members[0]][0][:shared]) if shared else None
            if shared and prefix is None:  # the prompts are cut at `shared`: they must see its keys
                raise RuntimeError(f"{type(model).__name__} returned no cache for the shared prefix")
            lengths = [len(pairs[i][0]) + len(pairs[i][1]) for i in members]
            for batch in length_batches(members, lengths, max_batch_tokens):
                suffixes = [(pairs[j][0][shared:], pairs[j][1]) for j in batch]
                for j, result in zip(batch, self._forward(model, suffixes, top_k, prefix), strict=True):
                    out[j] = result
        return out

    @staticmethod
    def _prefix(model: Any, ids: list[int]) -> Any:
        """The keys and values of a shared prompt prefix (batch of one)."""
        device = next(model.parameters()).device
        return body(model)(input_ids=torch.tensor([ids], device=device), use_cache=True).cache

    def _forward(
        self, model: Any, pairs: list[tuple[list[int], list[int]]], top_k: int, prefix: Any = None
    ) -> list[tuple[torch.Tensor, list[list[tuple[int, float]]] | None]]:
        """One padded pass over `(prompt, response)` pairs; with `prefix` (a shared prefix's cache), the
        prompts are what follows it."""
        width = max(len(p) + len(r) for p, r in pairs)
        device = next(model.parameters()).device
        ids = torch.full((len(pairs), width), self.pad, dtype=torch.long, device=device)
        mask = torch.zeros((len(pairs), width), dtype=torch.long, device=device)
        for row, (p, r) in enumerate(pairs):
            ids[row, : len(p) + len(r)] = torch.tensor(p + r, device=device)
            mask[row, : len(p) + len(r)] = 1
        extra: dict[str, Any] = {}
        if prefix is not None:
            cache = copy.deepcopy(prefix)  # the pass appends to it
            cache.batch_repeat_interleave(len(pairs))
            seen = cache.get_seq_length()
            mask = torch.cat([torch.ones((len(pairs), seen), dtype=torch.long, device=device), mask], dim=1)
            extra = {"cache": cache, "use_cache": True}
        hidden = body(model)(input_ids=ids, attention_mask=mask, **extra).last_hidden_state
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
        students, teachers = zip(*(self.prompts(item) for item in items), strict=True)
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
