"""Search-QA as an `Environment`: questions as tasks, search turns over a retriever, exact match.

The turn protocol of environments.md §3 (the verl-agent / SkyRL env the SDAR reference trains on):
an action holding `<search>q</search>` returns the top passages in `<information>`; one holding
`<answer>a</answer>` ends the episode with reward = exact match of `a` against the golden answers
(Search-R1's normalisation), `won` when it is 1; anything else is an invalid turn with an empty
observation. The service ends the episode at the step limit (4 turns by default) with reward 0.
"""

from __future__ import annotations

import functools
from typing import Any

from services.envs.base import Environment, Opening, Simulator, Task, Transition, UnknownResource
from services.envs.searchqa.data import load_corpus, load_dataset
from services.envs.searchqa.protocol import PassageFormat, information, parse_action
from services.envs.searchqa.questions import Question, panels
from services.envs.searchqa.retrieval import (
    BM25Retriever,
    DenseRetriever,
    Hit,
    Passage,
    RemoteRetriever,
    Retriever,
    retrieve,
)
from services.envs.searchqa.reward import exact_match
from services.envs.searchqa.world import WORLD_VERSION, World
from shared.settings import EnvServiceSettings


@functools.lru_cache(maxsize=4)
def embedded_world(seed: int) -> tuple[World, dict[str, list[Question]]]:
    world = World(seed)
    return world, panels(world)


class SearchQASimulator(Simulator):
    def __init__(self, env: SearchQAEnvironment, question: Question) -> None:
        self.env = env
        self.question = question

    def reset(self) -> Opening:
        q = self.question
        return Opening(
            task=q.question,
            observation=q.question,
            admissible_actions=None,
            info={"data_source": q.data_source},
            audit={"question": q.question, "data_source": q.data_source} | q.audit(),
        )

    def step(self, action: str) -> Transition:
        parsed = parse_action(action)
        info: dict[str, Any] = {"data_source": self.question.data_source}
        if parsed is None:
            return Transition("", 0.0, False, False, None, info | {"action": "invalid", "valid": False})
        kind, text = parsed
        if kind == "search":
            hits = self.env.search(text)
            observation = information([h.passage.contents for h in hits], self.env.passage_format)
            return Transition(observation, 0.0, False, False, None, info | {"action": "search", "valid": True})
        reward = float(exact_match(text, self.question.golden_answers))
        won = reward >= 1.0
        return Transition(
            "",
            reward,
            True,
            won,
            None,
            info | {"action": "answer", "valid": True, "won": won},
            audit={"answer": text},
        )


class SearchQAEnvironment(Environment):
    name = "searchqa"
    max_steps = 4

    def __init__(
        self,
        splits: dict[str, list[Question]],
        retriever: Retriever,
        *,
        backend: str,
        version: str,
        topk: int = 3,
        passage_format: PassageFormat = "verl-agent",
        passages: list[Passage] | None = None,
    ) -> None:
        self.questions = splits
        self.retriever = retriever
        self.backend = backend
        self.version = version
        self.topk = topk
        self.passage_format = passage_format
        self.passages = {p.id: p for p in passages or []}

    @classmethod
    def from_settings(cls, settings: EnvServiceSettings) -> SearchQAEnvironment:
        # the generated world only where the user's files do not replace it
        if settings.searchqa_data is not None:
            splits, backend = load_dataset(settings.searchqa_data), "dataset"
            version = f"searchqa-dataset-{settings.searchqa_data.name}"
        else:
            splits, backend = embedded_world(settings.searchqa_seed)[1], "embedded"
            version = f"searchqa-embedded-{WORLD_VERSION}-seed{settings.searchqa_seed}"
        if settings.searchqa_corpus is not None:
            passages = load_corpus(settings.searchqa_corpus)
        else:
            passages = embedded_world(settings.searchqa_seed)[0].passages
        retriever = make_retriever(settings, passages)
        return cls(
            splits,
            retriever,
            backend=backend,
            version=f"{version}+{retriever.name}",
            topk=settings.searchqa_topk,
            passage_format=settings.searchqa_passages,
            passages=passages if retriever.name != "remote" else None,
        )

    def settings(self) -> dict[str, Any]:
        return {
            "retriever": self.retriever.name,
            "topk": self.topk,
            "passage_format": self.passage_format,
            "passages": len(self.passages) or None,
        }

    def splits(self) -> dict[str, int]:
        return {name: len(questions) for name, questions in self.questions.items()}

    def question(self, split: str, index: int) -> Question:
        self.check_index(split, index)
        return self.questions[split][index]

    def task(self, split: str, index: int) -> Task:
        return Task(f"searchqa/{split}/{index}", split, index, data_source=self.question(split, index).data_source)

    def open(self, task: Task) -> Simulator:
        return SearchQASimulator(self, self.question(task.split, task.index))

    def search(self, query: str) -> list[Hit]:
        return retrieve(self.retriever, query, self.topk)

    def lookup(self, collection: str, key: str) -> dict[str, Any]:
        if collection != "passages":
            return super().lookup(collection, key)
        passage = self.passages.get(key)
        if passage is None:
            raise UnknownResource(f"no passage {key!r} in the {self.backend} Search-QA corpus")
        return {"id": passage.id, "contents": passage.contents}

    def close(self) -> None:
        if isinstance(self.retriever, RemoteRetriever):
            self.retriever.close()


def make_retriever(settings: EnvServiceSettings, passages: list[Passage]) -> Retriever:
    if settings.searchqa_retriever_url is not None:
        return RemoteRetriever(
            settings.searchqa_retriever_url,
            form=settings.searchqa_retriever_form,
            timeout_s=settings.searchqa_retriever_timeout_s,
            retries=settings.searchqa_retriever_retries,
        )
    if settings.searchqa_retriever == "dense":
        return DenseRetriever(passages, settings.cache_dir)
    return _bm25(tuple(passages))


@functools.lru_cache(maxsize=4)
def _bm25(passages: tuple[Passage, ...]) -> BM25Retriever:
    return BM25Retriever(passages)
