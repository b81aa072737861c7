"""BM25 over a fixed list of texts, as Lucene/pyserini scores it, with `bm25s`.

Lucene's defaults as pyserini uses them: the BM25 "lucene" variant with k1=0.9, b=0.4, its English
analyzer's 33 stopwords, and stemming (Snowball English here, for Lucene's Porter). Only texts that
match some query term are hits, as in Lucene; equal scores keep the order of the texts.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import bm25s
import numpy as np
import Stemmer

K1, B = 0.9, 0.4
TOKENS = r"(?u)\b\w+\b"


class BM25Index:
    def __init__(self, texts: Sequence[str], *, k1: float = K1, b: float = B) -> None:
        self._stemmer = Stemmer.Stemmer("english")
        self._lock = threading.Lock()  # a PyStemmer stemmer is not safe to share between threads
        self._bm25 = bm25s.BM25(k1=k1, b=b, method="lucene")
        self._bm25.index(self._tokenize(list(texts)), show_progress=False)

    def _tokenize(self, texts: list[str]) -> list[list[str]]:
        tokens: list[list[str]] = bm25s.tokenize(
            texts, stopwords="en", stemmer=self._stemmer, token_pattern=TOKENS, return_ids=False, show_progress=False
        )
        return list(tokens)

    def top(self, query: str, k: int) -> list[tuple[int, float]]:
        """`(text index, score)` of the best `k` matches of `query`, best first."""
        with self._lock:
            terms = self._tokenize([query])[0]
        if not terms:
            return []
        scores = np.asarray(self._bm25.get_scores(terms))
        hits = np.flatnonzero(scores > 0)
        order = hits[np.lexsort((hits, -scores[hits]))][:k]
        return [(int(i), float(scores[i])) for i in order]
