"""In-process BM25 retrieval over wiki-18-format passages."""

from __future__ import annotations

import pytest

from services.envs.searchqa.retrieval import BM25Retriever, Passage

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
