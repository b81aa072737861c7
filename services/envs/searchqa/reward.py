"""Search-QA's reward: exact match after Search-R1's normalisation (environments.md §3.1;
Search-R1 `verl/utils/reward_score/qa_em.py`).

Normalisation: lower-case, drop ASCII punctuation (`string.punctuation`), replace the articles
`a`, `an`, `the` (whole words) by spaces, collapse whitespace. A prediction scores 1 if it equals
any normalised golden answer. The answer scored is the last `<answer>...</answer>` of an episode.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

ARTICLES = re.compile(r"\b(a|an|the)\b")
PUNCTUATION = frozenset(string.punctuation)
ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def normalize_answer(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in PUNCTUATION)
    return " ".join(ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, golden_answers: Sequence[str] | str) -> int:
    """1 if the normalised prediction equals a normalised golden answer, else 0."""
    answers = [golden_answers] if isinstance(golden_answers, str) else golden_answers
    predicted = normalize_answer(prediction)
    return int(any(normalize_answer(answer) == predicted for answer in answers))


def last_answer(text: str) -> str | None:
    """The content of the last `<answer>...</answer>` in `text`, or None."""
    answers = ANSWER.findall(text)
    return answers[-1].strip() if answers else None
