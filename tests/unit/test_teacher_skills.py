"""The skill library and retrieval: the reference's rule router for each env, semantic retrieval
with the offline MiniLM, combined, and unknown envs or ids refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.teacher.skills import SkillError, SkillRetriever, load_library, render
from shared.labels import DATA_SOURCES, TASK_TYPES

ALFWORLD_TYPES = list(TASK_TYPES)
WEBSHOP_CATEGORIES = ["beauty", "electronics", "fashion", "food", "garden"]
SEARCH_STYLES = ["direct_retrieval", "entity_attribute_lookup", "multi_hop_reasoning", "compare"]
RETRIEVER = SkillRetriever()


def ids(chosen: list) -> list[str]:  # type: ignore[type-arg]
    return [c.skill.id for c in chosen]


def test_the_library_covers_every_env_task_type_category_and_style() -> None:
    library = load_library()
    scopes = {(s.env, s.scope) for s in library.values()}
    for env in ("alfworld", "webshop", "searchqa"):
        assert (env, "general") in scopes
    expected = [("alfworld", t) for t in ALFWORLD_TYPES] + [("webshop", c) for c in WEBSHOP_CATEGORIES]
    assert set(expected + [("searchqa", s) for s in SEARCH_STYLES]) <= scopes
    for skill in library.values():
        assert skill.title and skill.principle and skill.when_to_apply
        assert skill.id.startswith(f"{skill.env}-")
    assert all(s.keywords for s in library.values() if s.env == "webshop" and s.scope != "general")


def test_a_malformed_skill_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "alfworld").mkdir()
    (tmp_path / "alfworld" / "x.toml").write_text('id = "alfworld-x"\nenv = "alfworld"\n')
    with pytest.raises(SkillError, match="not a skill file"):
        load_library(tmp_path)
    (tmp_path / "alfworld" / "x.toml").write_text(
        'id = "x"\nenv = "webshop"\nscope = "general"\ntitle = "t"\nprinciple = "p"\nwhen_to_apply = "w"\n'
    )
    with pytest.raises(SkillError, match="folder"):
        load_library(tmp_path)


@pytest.mark.parametrize("task_type", ALFWORLD_TYPES)
def test_alfworld_routes_by_task_type(task_type: str) -> None:
    chosen = RETRIEVER.retrieve("alfworld", "Your task is to: put a hot apple in fridge.", {"task_type": task_type})
    general = [c for c in chosen if c.why == "general skill for alfworld"]
    specific = [c for c in chosen if c.why == f"task_type={task_type}"]
    assert len(general) == 3 and len(specific) == 1 and len(chosen) == 4
    assert specific[0].skill.scope == task_type


def test_alfworld_without_a_task_type_gets_general_skills_only() -> None:
    chosen = RETRIEVER.retrieve("alfworld", "Your task is to: put a hot apple in fridge.")
    assert {c.skill.scope for c in chosen} == {"general"}


def test_webshop_routes_by_category_or_by_keywords_in_the_task() -> None:
    by_category = RETRIEVER.retrieve("webshop", "anything", {"category": "food"})
    assert ids(by_category)[-1] == "webshop-food" and by_category[-1].why == "category=food"
    task = "i need a paraben free shampoo and a usb c cable, price lower than 40.00 dollars"
    by_keywords = [c for c in RETRIEVER.retrieve("webshop", task) if c.skill.scope != "general"]
    assert ids(by_keywords) == ["webshop-beauty", "webshop-electronics"]  # every matching category
    assert by_keywords[0].why == "keyword 'shampoo' in the task"
    plain = RETRIEVER.retrieve("webshop", "i want something nice")
    assert {c.skill.scope for c in plain} == {"general"}


@pytest.mark.parametrize("source", DATA_SOURCES)
def test_searchqa_routes_by_data_source(source: str) -> None:
    expected = {"popqa": "entity_attribute_lookup", "nq": "direct_retrieval", "triviaqa": "direct_retrieval"}
    chosen = RETRIEVER.retrieve("searchqa", "who founded kuhaven press", {"data_source": source})
    specific = [c for c in chosen if c.skill.scope != "general"]
    assert [c.skill.scope for c in specific] == [expected.get(source, "multi_hop_reasoning")]
    assert specific[0].why == f"data_source={source}"


def test_searchqa_compare_rule_is_the_reference_substring_test() -> None:
    compare = RETRIEVER.retrieve(
        "searchqa", "Which city has a larger population, Kuhaven or Bidale?", {"data_source": "nq"}
    )
    assert ids(compare)[-1] == "searchqa-compare"
    # 'for' anywhere (here inside 'before') turns it off, as in the reference
    not_compare = RETRIEVER.retrieve("searchqa", "Which came before, A or B?", {"data_source": "hotpotqa"})
    assert ids(not_compare)[-1] == "searchqa-multi-hop"


def test_semantic_and_combined_retrieval() -> None:
    task = "Your task is to: heat some egg and put it in garbagecan."
    semantic = RETRIEVER.retrieve("alfworld", task, mode="semantic", top_k=3)
    assert ids(semantic)[0] == "alfworld-heat" and len(semantic) == 3
    assert semantic[0].score > semantic[-1].score and semantic[0].why.startswith("semantic similarity 0.")
    combined = RETRIEVER.retrieve(
        "alfworld", task, {"task_type": "pick_heat_then_place_in_recep"}, mode="combined", top_k=6
    )
    assert ids(combined)[:4] == ids(
        RETRIEVER.retrieve("alfworld", task, {"task_type": "pick_heat_then_place_in_recep"})
    )
    assert len(combined) == 6 and len(set(ids(combined))) == 6
    assert all(c.why.startswith("semantic") for c in combined[4:])


def test_unknown_env_and_ids_are_refused() -> None:
    with pytest.raises(SkillError, match="unknown env 'chess'"):
        RETRIEVER.retrieve("chess", "x")
    with pytest.raises(SkillError, match="unknown skill id"):
        RETRIEVER.by_ids(["alfworld-heat", "nope"])
    assert render(RETRIEVER.by_ids(["alfworld-heat"])).startswith("- Heat in the microwave: Take the object")
