"""WebShop as an `Environment`: the site over a catalog, goals as tasks, the exact reward."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import random
from pathlib import Path
from typing import Any

from services.envs.base import Environment, Opening, Simulator, Task, Transition, UnknownResource
from services.envs.webshop.catalog import CATALOG_VERSION, generate_catalog
from services.envs.webshop.products import (
    Catalog,
    Goal,
    human_goals,
    load_products,
    product_prices,
    shuffled,
    synthetic_goals,
)
from services.envs.webshop.reward import SPACY_MODEL, purchase_reward, title_nouns, titles_nouns
from services.envs.webshop.search import SearchEngine
from services.envs.webshop.site import SEP, Page, Session
from shared.settings import EnvServiceSettings

log = logging.getLogger(__name__)

TEST_GOALS = 500
"""Goals 0-499 are the test split, the rest train (WebShop's baselines and verl-agent)."""


def _read_json(path: Path | None) -> Any:
    return json.loads(path.read_text()) if path is not None else None


def cached_nouns(titles: list[str], cache_dir: Path) -> dict[str, tuple[str, ...]]:
    """Each title's nouns, tagged once with spaCy and kept on disk (tagging 1,000 titles takes
    seconds, loading spaCy two)."""
    unique = sorted(set(titles))
    digest = hashlib.sha256(json.dumps([SPACY_MODEL, unique]).encode()).hexdigest()[:16]
    path = cache_dir / "webshop" / f"nouns-{digest}.json"
    if path.is_file():
        return {t: tuple(n) for t, n in json.loads(path.read_text()).items()}
    log.info("tagging %d WebShop titles with spaCy (once)", len(unique))
    nouns = dict(zip(unique, titles_nouns(unique), strict=True))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{random.getrandbits(32)}")
    tmp.write_text(json.dumps(nouns))
    tmp.replace(path)
    return {t: tuple(n) for t, n in nouns.items()}


@functools.lru_cache(maxsize=4)
def build_catalog(
    backend: str,
    goals: str,
    seed: int,
    size: int,
    products_file: Path | None,
    attributes_file: Path | None,
    human_file: Path | None,
    cache_dir: Path,
) -> tuple[Catalog, SearchEngine]:
    """The catalog, goals and search index of one configuration (built once per process)."""
    if backend == "embedded":
        items, attributes = generate_catalog(seed, size)
        human = None
    else:
        items = _read_json(products_file)
        attributes = _read_json(attributes_file) or {}
        human = _read_json(human_file)
    products = load_products(items, attributes, human)
    prices = product_prices(products, random.Random(f"webshop-prices-{seed}"))
    make = synthetic_goals if goals == "synthetic" else human_goals
    goal_list = shuffled(make(products, prices, random.Random(f"webshop-goals-{seed}")))
    if not goal_list:
        raise ValueError(f"the WebShop data gives no {goals} goals")
    # Goal titles are tagged up front (and cached on disk); any other product's title is tagged on
    # its first purchase, which keeps start-up short on the full 1.18M-product catalog.
    nouns = cached_nouns([g.name for g in goal_list], cache_dir)
    catalog = Catalog({p.asin: p for p in products}, prices, goal_list, nouns)
    return catalog, SearchEngine(products)


class WebshopSimulator(Simulator):
    def __init__(self, env: WebshopEnvironment, goal: Goal) -> None:
        self.env = env
        self.goal = goal
        self.session: Session | None = None

    def reset(self) -> Opening:
        self.session = Session(self.goal, self.env.catalog.products, self.env.search.search)
        view = self.session.view
        return Opening(
            task=self.goal.instruction_text,
            observation=view.observation,
            admissible_actions=view.available_actions(),
            info=self._info(view, won=False),
            audit={"goal": self.goal.audit(), "category": self.goal.category},
        )

    def step(self, action: str) -> Transition:
        assert self.session is not None, "reset() first"
        session = self.session
        session.act(action)
        view = session.view
        if session.kind != "done":
            return Transition(view.observation, 0.0, False, False, view.available_actions(), self._info(view, False))
        purchase = self.env.purchase(self.goal, session.product.asin, session.options)
        won = purchase["reward"] == 1.0
        observation = SEP.join([view.observation, "Your score (min 0.0, max 1.0)", str(purchase["reward"])])
        return Transition(
            observation,
            purchase["reward"],
            True,
            won,
            [],
            self._info(view, won),
            audit={"purchase": purchase},
        )

    def _info(self, view: Page, won: bool) -> dict[str, Any]:
        assert self.session is not None
        return {
            "category": self.goal.category,
            "page": self.session.kind,
            "has_search_bar": view.has_search_bar,
            "won": won,
        }


class WebshopEnvironment(Environment):
    name = "webshop"
    max_steps = 15

    def __init__(self, catalog: Catalog, search: SearchEngine, *, backend: str, goals: str, source: str) -> None:
        self.catalog = catalog
        self.search = search
        self.backend = backend
        self.goal_kind = goals
        self.version = f"webshop-{source}+{goals}"
        self._nouns = catalog.noun_lookup(title_nouns)

    @classmethod
    def from_settings(cls, settings: EnvServiceSettings) -> WebshopEnvironment:
        backend = settings.webshop_backend
        catalog, search = build_catalog(
            backend,
            settings.webshop_goals,
            settings.webshop_seed,
            settings.webshop_catalog_size,
            settings.webshop_products,
            settings.webshop_attributes,
            settings.webshop_human_goals,
            settings.cache_dir,
        )
        if backend == "embedded":
            source = f"embedded-{CATALOG_VERSION}-seed{settings.webshop_seed}-n{settings.webshop_catalog_size}"
        else:
            source = f"original-{len(catalog.products)}"
        return cls(catalog, search, backend=backend, goals=settings.webshop_goals, source=source)

    def settings(self) -> dict[str, Any]:
        return {"goals": self.goal_kind, "products": len(self.catalog.products)}

    def splits(self) -> dict[str, int]:
        total = len(self.catalog.goals)
        return {"test": min(TEST_GOALS, total), "train": max(0, total - TEST_GOALS)}

    def goal(self, split: str, index: int) -> Goal:
        self.check_index(split, index)
        return self.catalog.goals[index if split == "test" else TEST_GOALS + index]

    def task(self, split: str, index: int) -> Task:
        return Task(f"webshop/{split}/{index}", split, index, category=self.goal(split, index).category)

    def open(self, task: Task) -> Simulator:
        return WebshopSimulator(self, self.goal(task.split, task.index))

    def purchase(self, goal: Goal, asin: str, options: dict[str, str]) -> dict[str, Any]:
        """The reward of buying `asin` with `options` for `goal`, with its terms, for the record."""
        product = self.catalog.products[asin]
        price = self.catalog.prices[asin]
        reward = purchase_reward(product.reward_view(), goal.reward_view(), price, options, self._nouns)
        return {"asin": asin, "options": dict(options), "price": price} | reward.as_dict()

    def lookup(self, collection: str, key: str) -> dict[str, Any]:
        if collection != "products":
            return super().lookup(collection, key)
        product = self.catalog.products.get(key.upper()) or self.catalog.products.get(key)
        if product is None:
            raise UnknownResource(f"no product {key!r} in the {self.backend} WebShop catalog")
        return product.public()
