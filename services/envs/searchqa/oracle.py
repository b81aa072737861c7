"""An oracle reader for the generated Search-QA panels: it knows which entities and facts a
question needs (the question's `chains`), not the answer. It searches for each fact, reads the value
from the returned passages with the corpus's phrasings, follows bridge entities, and answers.

It checks that every question can be answered by searching, and it drives the tests and benchmarks
of the service. `queries` gives its searches for one fact, best first: the entity's name with the
words of one phrasing each.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Generator, Sequence

from services.envs.searchqa.world import FACTS, fact_patterns

Hop = Sequence[str]
STOPWORDS = {"the", "of", "is", "was", "a", "in", "by", "to", "as", "and", "its", "for", "are", "has", "on", "from"}


def queries(title: str, kind: str, attr: str) -> list[str]:
    """The searches for one fact: the entity's title with the content words of each phrasing."""
    out = []
    for phrasing in FACTS[(kind, attr)]:
        words = re.findall(r"[a-z]+", phrasing.replace("{s}", " ").replace("{v}", " ").lower())
        out.append(" ".join([title, *(w for w in words if w not in STOPWORDS)]))
    return out


def read_fact(passages: Sequence[str], title: str, kind: str, attr: str) -> str | None:
    """The value of `attr` of the entity `title`, from the passages that describe it."""
    name = title.split(" (")[0]  # a namesake's title carries a disambiguator; its text uses the name
    patterns = fact_patterns(kind, attr, name)
    for contents in passages:
        if contents.partition("\n")[0].strip('"') != title:
            continue
        for pattern in patterns:
            m = pattern.search(contents)
            if m is not None:
                return m.group("v").strip()
    return None


Reader = Generator[str, list[str], "str | None"]
"""Yields a query, is sent that search's passages (`"Title"\ntext`), returns the answer."""


def reader(chains: Sequence[Sequence[Hop]], op: str) -> Reader:
    """The searches and reading that answer a question with these chains and op (None when a
    fact was not found)."""
    finals: list[str] = []
    for chain in chains:
        value: str | None = None
        for i, (title, kind, attr) in enumerate(chain):
            if i and value != title.split(" (")[0]:  # the bridge read from the text must be the entity
                return None
            value = None
            for query in queries(title, kind, attr):
                value = read_fact((yield query), title, kind, attr)
                if value is not None:
                    break
            if value is None:
                return None
        assert value is not None
        finals.append(value)
    if op == "value":
        return finals[0]
    if op == "same":
        return "yes" if finals[0] == finals[1] else "no"
    numbers = [int(v.replace(",", "")) for v in finals]
    names = [chain[0][0].split(" (")[0] for chain in chains]
    return names[numbers.index(min(numbers) if op == "min" else max(numbers))]


def solve(chains: Sequence[Sequence[Hop]], op: str, search: Callable[[str], list[str]]) -> tuple[str | None, int]:
    """Answer in-process: the answer and the number of searches it took."""
    steps = reader(chains, op)
    searches = 0
    try:
        query = next(steps)
        while True:
            searches += 1
            query = steps.send(search(query))
    except StopIteration as done:
        return done.value, searches
