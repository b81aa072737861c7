"""In-process BM25 retrieval over wiki-18-format passages."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.envs.base import EnvBusy
from services.envs.searchqa.retrieval import (
    BM25Retriever,
    DenseRetriever,
    Passage,
    RemoteRetriever,
    doc_list,
    parse_doc_list,
)
from shared.launch import free_port

CORPUS = [
    Passage("0", '"Arven Tolis"\nArven Tolis is a painter born in Korvath in 1921.'),
    Passage("1", '"Arvan Tolis"\nArvan Tolis is a chemist born in Meridel in 1934.'),
    Passage("2", '"Korvath"\nKorvath is a port city on the Seln river.'),
    Passage("3", '"Meridel"\nMeridel is a mountain town known for its observatory.'),
]


def test_the_passage_that_matches_best_comes_first() -> None:
    retriever = BM25Retriever(CORPUS)
    hits = retriever.retrieve("where was the painter Arven Tolis born")
    assert [h.passage.id for h in hits] == ["0", "1"]  # the namesake shares 'Tolis' and 'born'
    assert hits[0].score > hits[1].score > 0
    assert hits[0].passage.title == "Arven Tolis"
    assert hits[0].search_r1() == {"document": {"id": "0", "contents": CORPUS[0].contents}, "score": hits[0].score}


def test_topk_and_no_match() -> None:
    retriever = BM25Retriever(CORPUS)
    assert len(retriever.retrieve("born", topk=1)) == 1
    assert len(retriever.retrieve("Tolis", topk=10)) == 2  # only matching passages are hits
    assert retriever.retrieve("zebra") == [] and retriever.retrieve("the of") == []
    with pytest.raises(ValueError, match="topk"):
        retriever.retrieve("born", topk=0)


DENSE_CORPUS = [
    Passage("0", '"Korvath"\nKorvath is a port city where fishing boats land their catch every morning.'),
    Passage("1", '"Meridel"\nMeridel is a mountain town known for its observatory and clear night skies.'),
    Passage("2", '"Arven Tolis"\nArven Tolis painted landscapes of rivers and fields.'),
    Passage("3", '"Seln"\nThe Seln is a slow river that floods the valley each spring.'),
]


def test_dense_retrieval_ranks_by_meaning_and_caches_the_passage_vectors(tmp_path: Path) -> None:
    retriever = DenseRetriever(DENSE_CORPUS, tmp_path)
    [hits] = retriever.retrieve_many(["where can I look at the stars through a telescope"], topk=2)
    assert hits[0].passage.id == "1"  # no word in common with the query but 'the'
    assert len(hits) == 2 and hits[0].score > hits[1].score
    assert -1.0 <= hits[1].score <= hits[0].score <= 1.0 + 1e-6  # cosine similarities
    [cached] = list((tmp_path / "searchqa").glob("dense-*.npy"))
    again = DenseRetriever(DENSE_CORPUS, tmp_path)  # loads the vectors from the cache
    assert again.retrieve_many(["where can I look at the stars through a telescope"], topk=2) == [hits]
    assert list((tmp_path / "searchqa").glob("dense-*.npy")) == [cached]
    with pytest.raises(ValueError, match="topk"):
        retriever.retrieve_many(["x"], topk=0)


def test_doc_lists_round_trip() -> None:
    hits = BM25Retriever(CORPUS).retrieve("Tolis", topk=2)
    text = doc_list(hits)
    assert text.startswith('Doc 1: "Arven Tolis"\nArven Tolis is') and text.endswith("\n")
    assert [h.passage.contents for h in parse_doc_list(text)] == [h.passage.contents for h in hits]
    assert parse_doc_list("") == []


def test_a_remote_retriever_that_nobody_answers_is_busy_after_its_retries() -> None:
    remote = RemoteRetriever(f"http://127.0.0.1:{free_port()}/retrieve", retries=2, backoff_s=0.01, timeout_s=1)
    with pytest.raises(EnvBusy, match="unreachable after 3 tries"):
        remote.retrieve_many(["x"])
