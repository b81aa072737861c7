"""WebShop's purchase reward: equal to the original on 520 recorded cases, and every branch by hand."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from services.envs.webshop.reward import normalize_color, option_matches, purchase_reward, title_nouns

CASES = json.loads((Path(__file__).parents[1] / "data" / "webshop_reward_cases.json").read_text())["cases"]


def test_reward_equals_the_original_on_every_recorded_case() -> None:
    """Computed by running WebShop's own `get_reward` (thefuzz 0.22.1, spaCy 3.8 + en_core_web_sm)."""
    assert len(CASES) == 520
    wrong = []
    for i, case in enumerate(CASES):
        got = purchase_reward(case["purchased"], case["goal"], case["price"], case["options"])
        if got.reward != case["reward"] or got.r_type != case["r_type"]:
            wrong.append((i, got.reward, case["reward"], got.r_type, case["r_type"]))
    assert not wrong


def test_spacy_tags_title_words_as_the_original() -> None:
    # environments.md §2.6: title-cased colours and materials are PROPN, so they count as nouns.
    nouns = title_nouns("Men's Navy Blue Cotton Crew Neck T-Shirt, 3 Pack")
    assert nouns == ["men", "navy", "blue", "cotton", "crew", "neck", "t", "shirt", "pack"]


# Hand-worked cases. The noun tagger is an input of the reward; these tests give nouns explicitly so
# each number below can be checked on paper.

NOUNS = {
    "Blue Widget Lamp": ["blue", "widget", "lamp"],
    "Widget Lamp": ["widget", "lamp"],
    "Red Widget": ["red", "widget"],
    "Gadget": ["gadget"],
    "lowercase only": [],
    "Ten Noun Title": ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"],
    "Noun A": ["a"],
}


def nouns(title: str) -> Sequence[str]:
    return NOUNS[title]


def product(name: str = "Widget Lamp", **overrides: Any) -> dict[str, Any]:
    return {
        "name": name,
        "Title": name,
        "query": "widget lamps",
        "product_category": "Home & Kitchen › Lighting › Lamps",
        "Attributes": ["easy to clean", "energy saving"],
        "BulletPoints": ["Machine wash cold", "Includes bulb"],
        "Description": "A lamp with a dimmable switch.",
    } | overrides


def goal(name: str = "Widget Lamp", **overrides: Any) -> dict[str, Any]:
    return {
        "query": "widget lamps",
        "product_category": "Home & Kitchen › Lighting › Lamps",
        "name": name,
        "attributes": ["easy clean"],
        "price_upper": 40.0,
        "goal_options": {},
    } | overrides


def reward(purchased: dict[str, Any], wanted: dict[str, Any], price: float = 30.0, **options: str) -> Any:
    return purchase_reward(purchased, wanted, price, options, nouns)


def test_full_match_scores_one() -> None:
    r = reward(product(), goal())
    assert (r.reward, r.r_type, r.title_score, r.n_attr, r.r_price) == (1.0, 1.0, 1.0, 1, True)


@pytest.mark.parametrize(
    ("purchased", "wanted", "r_type", "title_score"),
    [
        # title 2/2 nouns
        (product("Widget Lamp"), goal("Widget Lamp"), 1.0, 1.0),
        # 1 of 3 goal nouns (0.33 > 0.2), nothing else matching: still 1.0 on the title alone
        (product("Red Widget", query="x", product_category="A › B"), goal("Blue Widget Lamp"), 1.0, 1 / 3),
        # 1 of 10 nouns = 0.1: not > 0.2 and no query/category match -> 0.5
        (product("Noun A", query="x", product_category="A › B"), goal("Ten Noun Title"), 0.5, 0.1),
        # ... the same title score with a query match -> 1.0
        (product("Noun A"), goal("Ten Noun Title"), 1.0, 0.1),
        # ... with only two shared breadcrumb parts (Home & Kitchen, Lighting) -> category match -> 1.0
        (product("Noun A", query="x", product_category="Home & Kitchen › Lighting › Bulbs"), goal("Ten Noun Title"),
         1.0, 0.1),
        # one shared breadcrumb part is not a category match
        (product("Noun A", query="x", product_category="Home & Kitchen › Rugs"), goal("Ten Noun Title"), 0.5, 0.1),
        # no shared noun -> 0.0 even with a query match
        (product("Gadget"), goal("Widget Lamp"), 0.0, 0.0),
        # a goal name without nouns scores 0.2: with a query match 1.0, without one 0.5
        (product("Gadget"), goal("lowercase only"), 1.0, 0.2),
        (product("Gadget", query="x", product_category="A › B"), goal("lowercase only"), 0.5, 0.2),
    ],
)  # fmt: skip
def test_type_factor(purchased: dict[str, Any], wanted: dict[str, Any], r_type: float, title_score: float) -> None:
    r = reward(purchased, wanted)
    assert r.r_type == r_type
    assert r.title_score == pytest.approx(title_score)
    assert r.reward == pytest.approx((1 + 1) / 2 * r_type)  # 1 attribute matched, price ok


def test_title_score_below_a_tenth_gives_a_tenth() -> None:
    wanted = goal("Ten Noun Title")
    eleven = {**NOUNS, "Eleven": [*"abcdefghijk"]}
    r = purchase_reward(product("Noun A"), {**wanted, "name": "Eleven"}, 30.0, {}, lambda t: eleven[t])
    assert r.title_score == pytest.approx(1 / 11)
    assert r.r_type == 0.1
    assert r.reward == pytest.approx(0.1)


def test_attribute_fuzzy_hit_and_miss() -> None:
    # token_set_ratio('easy to clean', 'easy clean') = 87 > 85: a hit among the Attributes.
    hit = reward(product(), goal(attributes=["easy clean"]))
    assert hit.n_attr == 1
    # 'energy efficient' vs 'energy saving' scores below 86 and is in no text: a miss. (0 + 1) / 2.
    miss = reward(product(), goal(attributes=["energy efficient"]))
    assert (miss.n_attr, miss.reward) == (0, 0.5)


def test_attribute_substring_fallback_in_title_bullets_and_description() -> None:
    # Not among the Attributes, but a substring of the lower-cased bullets / description / title.
    r = reward(product(Attributes=[]), goal(attributes=["machine wash", "dimmable", "widget", "waterproof"]))
    assert r.n_attr == 3
    assert r.reward == pytest.approx((3 + 0 + 1) / (4 + 0 + 1))


def test_price_above_and_below_the_bound() -> None:
    assert reward(product(), goal(), price=39.99).r_price is True
    assert reward(product(), goal(), price=40.0).r_price is True
    above = reward(product(), goal(), price=40.01)
    assert above.r_price is False
    assert above.reward == pytest.approx((1 + 0) / 2)


def test_colour_options_are_normalised_to_the_first_colour_word() -> None:
    assert normalize_color("navy blue") == "blue"  # 'blue' comes before 'navy' in COLOR_SET
    assert normalize_color("standard") == "tan"  # substring quirk, kept
    assert normalize_color("x-large") == "x-large"
    assert normalize_color(("color", "black")) == "black"  # a pair: only an exact colour value
    assert normalize_color(("color", "navy blue")) == ("color", "navy blue")
    # Human goals list values: 'navy blue' and 'blue' both normalise to 'blue'.
    assert option_matches(["navy blue"], ["blue"]) == 1
    # A pair that is not normalised is compared as the string 'color navy blue'.
    r = reward(product(), goal(goal_options={"color": "navy blue"}), color="navy blue")
    assert (r.n_option, r.reward) == (1, 1.0)
    # 'dark navy' normalises to 'dark', which shares nothing with 'color navy blue'.
    r = reward(product(), goal(goal_options={"color": "navy blue"}), color="dark navy")
    assert (r.n_option, r.reward) == (0, pytest.approx(2 / 3))


def test_option_pair_quirk() -> None:
    # token_set_ratio('large', ('size', 'x-large')) = 100: a token subset of 'size x large'.
    r = reward(product(), goal(goal_options={"size": "x-large"}), size="large")
    assert (r.n_option, r.reward, r.r_option) == (1, 1.0, 1.0)
    # 'small' vs ('size', 'x-large') scores 12: a miss.
    r = reward(product(), goal(goal_options={"size": "x-large"}), size="small")
    assert (r.n_option, r.reward, r.r_option) == (0, pytest.approx(2 / 3), 0.0)
    # Two goal options, one chosen value: the denominator counts both.
    r = reward(product(), goal(goal_options={"size": "large", "color": "red"}), size="large")
    assert (r.n_option, r.reward) == (1, pytest.approx(3 / 4))


def test_terms_and_weights_are_reported() -> None:
    r = reward(product(), goal(attributes=["easy clean", "dimmable"], goal_options={"size": "large"}), size="large")
    assert (r.w_att, r.w_option, r.w_price) == (0.5, 0.25, 0.25)
    assert r.as_dict()["reward"] == 1.0
