"""WebShop's search engine: BM25 over the text the original indexes.

The original indexes each product with pyserini (Lucene BM25, default parameters) over
`Title + Description + BulletPoints[0] + option text`, lowercased
(`search_engine/convert_product_file_format.py`), and shows the top 50. We index the same text with
the same scoring (`services/envs/bm25.py`).
"""

from __future__ import annotations

from collections.abc import Sequence

from services.envs.bm25 import BM25Index
from services.envs.webshop.products import Product

TOP_N = 50


def document_text(product: Product) -> str:
    option_text = ", and ".join(f"{name}: {', '.join(values)}" for name, values in product.options.items())
    first_bullet = product.BulletPoints[0] if product.BulletPoints else ""
    return " ".join([product.Title, product.Description, first_bullet, option_text]).lower()


class SearchEngine:
    def __init__(self, products: Sequence[Product]) -> None:
        self.asins = [p.asin for p in products]
        self._index = BM25Index([document_text(p) for p in products])

    def search(self, query: str, k: int = TOP_N) -> list[str]:
        """The asins of the best `k` matches of `query`, best first."""
        return [self.asins[i] for i, _ in self._index.top(query, k)]
