"""Products and goals as WebShop derives them from its data files (`engine.load_products`, `goal.py`).

Both backends go through here: the embedded catalog is generated in the original file formats and
read exactly as the real `items_shuffle*.json` / `items_ins_v2*.json` / `items_human_ins.json` are.
Where the original draws from Python's global `random` (prices of ranged products, price bounds of
goals, the goal shuffle), we draw from generators seeded with fixed values, so every panel is the
same on every machine.
"""

from __future__ import annotations

import itertools
import random
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

from services.envs.webshop.reward import Nouns

PRICE_RANGE = [10.0 * i for i in range(1, 100)]
GOAL_SHUFFLE_SEED = 233
"""The original shuffles its goals after `random.seed(233)`."""
NO_PRICE_BOUND = 1_000_000


@dataclass(frozen=True)
class Product:
    """A product as the pages and the reward see it (the original's derived fields)."""

    asin: str
    name: str
    Title: str
    Description: str
    BulletPoints: tuple[str, ...]
    Price: str
    """The display price: `$10.99`, `$10.99 to $15.0`, `$100.0`."""
    pricing: tuple[float, ...]
    options: dict[str, list[str]]
    Attributes: tuple[str, ...]
    query: str
    category: str
    product_category: str
    Rating: str = "N.A."
    instruction_text: str | None = None
    instruction_attributes: tuple[str, ...] | None = None
    human_instructions: tuple[dict[str, Any], ...] = ()

    def reward_view(self) -> dict[str, Any]:
        """The fields `get_reward` reads."""
        return {
            "name": self.name,
            "Title": self.Title,
            "query": self.query,
            "product_category": self.product_category,
            "Attributes": list(self.Attributes),
            "BulletPoints": list(self.BulletPoints),
            "Description": self.Description,
        }

    def public(self) -> dict[str, Any]:
        """What `GET /v1/envs/webshop/products/{asin}` shows."""
        return self.reward_view() | {
            "asin": self.asin,
            "options": self.options,
            "pricing": list(self.pricing),
            "Price": self.Price,
            "category": self.category,
        }


def parse_pricing(pricing: str | None) -> tuple[list[float], str]:
    """`(prices, display)` of a pricing string: `"$10.99"`, a `$`-range, or empty (100.0)."""
    if not pricing:
        return [100.0], "$100.0"
    prices = [float(Decimal(re.sub(r"[^\d.]", "", part))) for part in pricing.split("$")[1:]]
    if len(prices) == 1:
        return prices, f"${prices[0]}"
    return prices[:2], f"${prices[0]} to ${prices[1]}"


def parse_options(customization: Mapping[str, Any] | str | None) -> dict[str, list[str]]:
    options: dict[str, list[str]] = {}
    if not customization or isinstance(customization, str):
        return options
    for name, contents in customization.items():
        if contents is None:
            continue
        options[name.lower()] = [c["value"].strip().replace("/", " | ").lower() for c in contents]
    return options


def load_products(
    items: Iterable[Mapping[str, Any]],
    attributes: Mapping[str, Mapping[str, Any]],
    human: Mapping[str, Sequence[dict[str, Any]]] | None = None,
) -> list[Product]:
    """Products from item records, with their attributes, synthetic instruction and (if given) human
    instructions. Skips what the original skips: asin 'nan' or longer than 10, repeated asins."""
    products: list[Product] = []
    seen: set[str] = set()
    for item in items:
        asin = item["asin"]
        if asin == "nan" or len(asin) > 10 or asin in seen:
            continue
        seen.add(asin)
        pricing, display = parse_pricing(item.get("pricing"))
        bullets = item["small_description"]
        attrs = attributes.get(asin, {})
        instruction_attributes = attrs.get("instruction_attributes")
        products.append(
            Product(
                asin=asin,
                name=item["name"],
                Title=item["name"],
                Description=item["full_description"],
                BulletPoints=tuple(bullets if isinstance(bullets, list) else [bullets]),
                Price=display,
                pricing=tuple(pricing),
                options=parse_options(item.get("customization_options")),
                Attributes=tuple(attrs.get("attributes") or ["DUMMY_ATTR"]),
                query=item["query"].lower().strip(),
                category=item["category"],
                product_category=item["product_category"],
                instruction_text=attrs.get("instruction"),
                instruction_attributes=tuple(instruction_attributes) if instruction_attributes is not None else None,
                human_instructions=tuple((human or {}).get(asin, ())),
            )
        )
    return products


def product_prices(products: Sequence[Product], rng: random.Random) -> dict[str, float]:
    """The price the reward compares: the single price, or uniform within a range."""
    prices = {}
    for p in products:
        prices[p.asin] = p.pricing[0] if len(p.pricing) == 1 else rng.uniform(*p.pricing[:2])
    return prices


@dataclass(frozen=True)
class Goal:
    asin: str
    category: str
    query: str
    name: str
    product_category: str
    instruction_text: str
    attributes: tuple[str, ...]
    price_upper: float
    goal_options: dict[str, str] | tuple[str, ...]
    """A dict for synthetic goals (matched as `(name, value)` pairs), a list of values for human ones."""
    weight: float = 1.0

    def reward_view(self) -> dict[str, Any]:
        options = self.goal_options if isinstance(self.goal_options, dict) else list(self.goal_options)
        return {
            "query": self.query,
            "product_category": self.product_category,
            "name": self.name,
            "attributes": list(self.attributes),
            "price_upper": self.price_upper,
            "goal_options": options,
        }

    def audit(self) -> dict[str, Any]:
        """What the episode record shows of the goal."""
        return {"instruction": self.instruction_text, "asin": self.asin, "category": self.category} | self.reward_view()


def price_bound(price: float, rng: random.Random) -> tuple[float, str]:
    """`(price_upper, price_text)`: the larger of two of the next four multiples of 10 above the price."""
    above = [p for p in PRICE_RANGE if p > price][:4]
    if len(above) < 2:
        return NO_PRICE_BOUND, ""
    _, upper = sorted(rng.sample(above, 2))
    return upper, f", and price lower than {upper:.2f} dollars"


def synthetic_goals(products: Sequence[Product], prices: Mapping[str, float], rng: random.Random) -> list[Goal]:
    """One goal per product and full combination of its option values."""
    goals: list[Goal] = []
    counts: dict[str, int] = defaultdict(int)
    for p in products:
        if p.instruction_text is None:
            continue
        attributes = p.instruction_attributes or ()
        if not attributes:
            raise ValueError(f"product {p.asin} has an instruction but no instruction_attributes")
        upper, price_text = price_bound(prices[p.asin], rng)
        names = sorted(p.options)
        for combination in itertools.product(*(p.options[n] for n in names)):
            goal_options = dict(zip(names, combination, strict=True))
            option_text = ", and ".join(f"{k}: {v}" for k, v in goal_options.items())
            option_text = " with " + option_text if option_text else ""
            goals.append(
                Goal(
                    asin=p.asin,
                    category=p.category,
                    query=p.query,
                    name=p.Title,
                    product_category=p.product_category,
                    instruction_text=f"{p.instruction_text}{option_text}{price_text}",
                    attributes=attributes,
                    price_upper=upper,
                    goal_options=goal_options,
                )
            )
            for a in attributes:
                counts[a] += 1
    return [replace(g, weight=sum(1.0 / counts[a] for a in g.attributes) / len(g.attributes)) for g in goals]


def human_goals(products: Sequence[Product], prices: Mapping[str, float], rng: random.Random) -> list[Goal]:
    """The crowd-written instructions; those without attributes are skipped, as in the original."""
    goals = []
    for p in products:
        for instruction in p.human_instructions:
            attributes = instruction["instruction_attributes"]
            if not attributes:
                continue
            upper, price_text = price_bound(prices[p.asin], rng)
            goals.append(
                Goal(
                    asin=p.asin,
                    category=p.category,
                    query=p.query,
                    name=p.name,
                    product_category=p.product_category,
                    instruction_text=instruction["instruction"].strip(".") + price_text,
                    attributes=tuple(attributes),
                    price_upper=upper,
                    goal_options=tuple(instruction["instruction_options"]),
                )
            )
    return goals


def shuffled(goals: list[Goal]) -> list[Goal]:
    random.Random(GOAL_SHUFFLE_SEED).shuffle(goals)
    return goals


@dataclass
class Catalog:
    """Products, reward prices, goals and precomputed title nouns of one backend."""

    products: dict[str, Product]
    prices: dict[str, float]
    goals: list[Goal]
    nouns: dict[str, tuple[str, ...]]

    def noun_lookup(self, fallback: Nouns) -> Nouns:
        def lookup(title: str) -> Sequence[str]:
            found = self.nouns.get(title)
            return found if found is not None else fallback(title)

        return lookup
