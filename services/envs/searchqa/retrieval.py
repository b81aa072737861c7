"""In-process retrieval over a wiki-18-format corpus (`{"id", "contents": "\\"Title\\"\\ntext"}`).

BM25 as Search-R1's BM25 variant scores it (Lucene via pyserini; `services/envs/bm25.py`), top 3 by
default. A hit renders as a Search-R1 `/retrieve` result item: `{"document": {"id", "contents"},
"score"}` (environments.md §3.3).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from services.envs.bm25 import BM25Index

TOPK = 3


@dataclass(frozen=True)
class Passage:
    id: str
    contents: str

    @property
    def title(self) -> str:
        return self.contents.partition("\n")[0].strip('"')


@dataclass(frozen=True)
class Hit:
    passage: Passage
    score: float

    def search_r1(self) -> dict[str, Any]:
        return {"document": {"id": self.passage.id, "contents": self.passage.contents}, "score": self.score}


class BM25Retriever:
    def __init__(self, passages: Sequence[Passage]) -> None:
        self.passages = list(passages)
        self._index = BM25Index([p.contents for p in self.passages])

    def retrieve(self, query: str, topk: int = TOPK) -> list[Hit]:
        if topk < 1:
            raise ValueError(f"topk must be at least 1, not {topk}")
        return [Hit(self.passages[i], score) for i, score in self._index.top(query, topk)]
