"""The generated Search-QA world and its panels: facts stated where the record says, questions
answerable by searching and not by the question alone, the same on every machine."""

from __future__ import annotations

import collections
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from services.envs.searchqa.env import embedded_world
from services.envs.searchqa.oracle import read_fact, solve
from services.envs.searchqa.questions import DATA_SOURCES, SINGLE_HOP, panel_sizes
from services.envs.searchqa.retrieval import BM25Retriever
from services.envs.searchqa.reward import exact_match
from services.envs.searchqa.world import FACTS, World

GOLDEN = Path(__file__).parents[1] / "data" / "searchqa_golden.json"
WORLD, PANELS = embedded_world(0)
RETRIEVER = BM25Retriever(WORLD.passages)


def digest(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def fingerprint() -> dict[str, object]:
    world, panels = embedded_world(0)
    return {
        "passages": digest([[p.id, p.contents] for p in world.passages]),
        "test": digest([[q.question, q.golden_answers, q.data_source] for q in panels["test"]]),
        "train": digest([[q.question, q.golden_answers, q.data_source] for q in panels["train"]]),
        "samples": {
            str(i): [panels["test"][i].question, list(panels["test"][i].golden_answers)] for i in (0, 150, 400, 700)
        },
    }


def test_world_and_panels_match_the_committed_golden_hashes() -> None:
    """Regenerate `tests/data/searchqa_golden.json` only with a WORLD_VERSION bump."""
    assert fingerprint() == json.loads(GOLDEN.read_text())


@pytest.mark.slow  # ~6 s: another interpreter; run by .ci/run after the default suite
def test_the_same_world_in_another_process_with_another_hash_seed() -> None:
    code = "import json; from tests.unit.test_searchqa_world import fingerprint; print(json.dumps(fingerprint()))"
    for seed in ("0", "12345"):
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
            cwd=Path(__file__).parents[2],
        ).stdout
        assert json.loads(out) == fingerprint()


def test_another_seed_gives_another_world() -> None:
    assert World(1).passages[0].contents != WORLD.passages[0].contents


def test_passages_are_wiki18_lines_of_about_100_words_that_restate_their_title() -> None:
    assert len(WORLD.passages) > 5000
    assert len({p.id for p in WORLD.passages}) == len(WORLD.passages)
    for p in WORLD.passages:
        title, _, text = p.contents.partition("\n")
        assert title.startswith('"') and title.endswith('"')
        assert title.strip('"').split(" (")[0] in text
        assert 60 <= len(text.split()) <= 140, p.contents


def test_every_fact_is_readable_from_the_passage_the_world_records() -> None:
    stated = 0
    for (key, attr), passage in WORLD.fact_passage.items():
        entity = WORLD.entities[key]
        value = read_fact([passage.contents], entity.title, entity.kind, attr)
        assert value == WORLD.shown(entity, attr), (entity.title, attr, passage.contents)
        stated += 1
    assert stated > 6000
    assert {(WORLD.entities[k].kind, a) for k, a in WORLD.fact_passage} == set(FACTS)


def test_distractors_namesakes_families_and_shared_places() -> None:
    people = WORLD.of_kind("person")
    namesakes = [p for p in people if p.title != p.name]
    assert len(namesakes) >= 40
    assert all(p.title == f"{p.name} ({p.attrs['occupation']})" for p in namesakes)
    assert len({p.title for p in people}) == len(people)  # titles tell namesakes apart
    surnames = collections.Counter(p.name.split()[-1] for p in people)
    assert sum(n > 1 for n in surnames.values()) > 100
    birthplaces = collections.Counter(p.attrs["birthplace"] for p in people)
    assert max(birthplaces.values()) >= 8


def test_panels_per_data_source_and_split() -> None:
    for split in ("test", "train"):
        counts = collections.Counter(q.data_source for q in PANELS[split])
        assert counts == {s: panel_sizes(s)[split] for s in DATA_SOURCES}
        assert len({q.question for q in PANELS[split]}) == len(PANELS[split])
    assert not {q.question for q in PANELS["test"]} & {q.question for q in PANELS["train"]}
    styles = {(q.data_source, q.style) for q in PANELS["test"]}
    assert {("hotpotqa", "bridge"), ("hotpotqa", "comparison"), ("2wiki", "inference")} <= styles
    assert {("2wiki", "bridge-comparison"), ("musique", "3-hop"), ("bamboogle", "compositional")} <= styles
    nq = [q.question for q in PANELS["test"] if q.data_source == "nq"]
    assert all(q == q.lower() and not q.endswith("?") for q in nq)  # typed like search queries
    answers = {a for q in PANELS["test"] for a in q.golden_answers}
    assert {"yes", "no"} <= answers


def test_golden_answers_are_the_world_facts() -> None:
    for q in PANELS["test"]:
        if q.op != "value":
            continue
        (*_, (title, _kind, attr)) = q.chains[0]
        entity = WORLD.by_title[title]
        assert WORLD.shown(entity, attr) in q.golden_answers
        assert exact_match(q.golden_answers[0], q.golden_answers)


def search(query: str) -> list[str]:
    return [h.passage.contents for h in RETRIEVER.retrieve(query, 3)]


def test_the_oracle_reader_answers_every_test_question_and_a_train_sample() -> None:
    questions = PANELS["test"] + PANELS["train"][::7]
    failed = []
    for q in questions:
        answer, searches = solve(q.chains, q.op, search)
        assert searches >= 1
        if answer is None or not exact_match(answer, q.golden_answers):
            failed.append((q.question, answer, q.golden_answers))
    assert not failed


@pytest.mark.parametrize("split", ["test", "train"])
def test_question_only_search_finds_the_gold_passage_sometimes_but_not_always(split: str) -> None:
    """Top-3 BM25 on the bare question finds the passage holding a single-hop answer for 40-90%
    of questions: searching is possible, and searching well matters."""
    found = total = 0
    for q in PANELS[split]:
        if q.data_source not in SINGLE_HOP:
            continue
        title, _kind, attr = q.chains[0][0]
        gold = WORLD.fact_passage[(WORLD.by_title[title].key, attr)]
        found += gold.id in {h.passage.id for h in RETRIEVER.retrieve(q.question, 3)}
        total += 1
    assert 0.4 <= found / total <= 0.9, found / total
