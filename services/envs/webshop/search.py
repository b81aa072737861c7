"""WebShop's search engine: BM25 over the text the original indexes, with `bm25s`.

The original indexes each product with pyserini (Lucene BM25, k1=0.9, b=0.4, English analyzer:
lowercase, 33 stopwords, Porter stemming) over `Title + Description + BulletPoints[0] + option text`,
lowercased (`search_engine/convert_product_file_format.py`), and shows the top 50. We index the same
text with the same parameters, Lucene's scoring variant, its stopword list and the Snowball English
stemmer. Like Lucene, only products that match some query term are hits; ties go to catalog order.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import bm25s
import numpy as np
import Stemmer

from services.envs.webshop.products import Product

TOP_N = 50
K1, B = 0.9, 0.4
TOKENS = r"(?u)\b\w+\b"


def document_text(product: Product) -> str:
    option_text = ", and ".join(f"{name}: {', '.join(values)}" for name, values in product.options.items())
    first_bullet = product.BulletPoints[0] if product.BulletPoints else ""
    return " ".join([product.Title, product.Description, first_bullet, option_text]).lower()


class SearchEngine:
    def __init__(self, products: Sequence[Product]) -> None:
        self.asins = [p.asin for p in products]
        self._stemmer = Stemmer.Stemmer("english")
        self._lock = threading.Lock()  # a PyStemmer stemmer is not safe to share between threads
        corpus = self._tokenize([document_text(p) for p in products])
        self._bm25 = bm25s.BM25(k1=K1, b=B, method="lucene")
        self._bm25.index(corpus, show_progress=False)

    def _tokenize(self, texts: list[str]) -> list[list[str]]:
        tokens: list[list[str]] = bm25s.tokenize(
            texts, stopwords="en", stemmer=self._stemmer, token_pattern=TOKENS, return_ids=False, show_progress=False
        )
        return list(tokens)

    def search(self, query: str, k: int = TOP_N) -> list[str]:
        """The asins of the best `k` matches of `query`, best first."""
        with self._lock:
            terms = self._tokenize([query])[0]
        if not terms:
            return []
        scores = np.asarray(self._bm25.get_scores(terms))
        hits = np.flatnonzero(scores > 0)
        order = hits[np.lexsort((hits, -scores[hits]))][:k]
        return [self.asins[i] for i in order]
