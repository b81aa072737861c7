"""The embedded catalog and goals, the loader of the original files, and the `original` backend."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from services.envs.webshop.catalog import CATEGORIES, generate_catalog
from services.envs.webshop.env import WebshopEnvironment
from services.envs.webshop.products import (
    NO_PRICE_BOUND,
    load_products,
    parse_options,
    parse_pricing,
    price_bound,
    product_prices,
    synthetic_goals,
)
from shared.settings import EnvServiceSettings


@pytest.fixture(scope="module")
def catalog() -> tuple[list[dict[str, object]], dict[str, dict[str, object]]]:
    return generate_catalog(0, 1000)


def test_catalog_has_the_original_schema_and_categories(catalog: tuple[list, dict]) -> None:  # type: ignore[type-arg]
    items, attributes = catalog
    assert len(items) == 1000 and len({i["asin"] for i in items}) == 1000
    keys = {"asin", "name", "full_description", "small_description", "pricing", "images", "query", "category"}
    for raw in items:
        assert keys | {"product_category", "customization_options"} <= raw.keys()
        assert raw["asin"].startswith("B0") and len(raw["asin"]) == 10
        assert " › " in raw["product_category"]
        attrs = attributes[raw["asin"]]
        assert 2 <= len(attrs["attributes"]) <= 6
        assert 1 <= len(attrs["instruction_attributes"]) <= 3
        assert set(attrs["instruction_attributes"]) <= set(attrs["attributes"])
    assert CATEGORIES == ("beauty", "electronics", "fashion", "food", "garden")
    assert {i["category"] for i in items} == set(CATEGORIES)
    with_options = [i for i in items if isinstance(i["customization_options"], dict) and i["customization_options"]]
    assert len(with_options) > 700
    assert any(len(values) >= 3 for i in with_options for values in i["customization_options"].values() if values)
    assert any(" - $" in i["pricing"] for i in items) and any(i["pricing"] == "" for i in items)


def test_loader_derives_fields_as_the_original() -> None:
    assert parse_pricing("$877.80") == ([877.8], "$877.8")
    assert parse_pricing("$10.99 - $15") == ([10.99, 15.0], "$10.99 to $15.0")
    assert parse_pricing("") == ([100.0], "$100.0")
    assert parse_pricing("$1,299.00") == ([1299.0], "$1299.0")
    assert parse_options({"Color": None, "Size": [{"value": " Large/Tall "}]}) == {"size": ["large | tall"]}
    assert parse_options("") == {}
    raw = {
        "asin": "B0X", "name": "N", "full_description": "D", "small_description": "one bullet",
        "pricing": "$5", "query": " Socks ", "category": "fashion", "product_category": "A › B",
    }  # fmt: skip
    skipped = [raw | {"asin": "nan"}, raw | {"asin": "B0TOOLONG123"}, raw]
    [product] = load_products([raw, *skipped], {})
    assert product.Attributes == ("DUMMY_ATTR",) and product.BulletPoints == ("one bullet",)
    assert product.query == "socks" and product.instruction_text is None and product.options == {}


def test_price_bound_as_the_reference_computes_it() -> None:
    rng = random.Random(0)
    for price in (0.5, 23.5, 40.0, 959.0):
        above = [p for p in (10.0 * i for i in range(1, 100)) if p > price][:4]
        upper, text = price_bound(price, rng)
        assert upper in above[1:] and upper > price
        assert text == f", and price lower than {upper:.2f} dollars"
    assert price_bound(985.0, rng) == (NO_PRICE_BOUND, "")  # one multiple left: no bound
    assert price_bound(2000.0, rng) == (NO_PRICE_BOUND, "")


def test_synthetic_goals_one_per_option_combination(catalog: tuple[list, dict]) -> None:  # type: ignore[type-arg]
    products = load_products(*catalog)
    prices = product_prices(products, random.Random(1))
    goals = synthetic_goals(products, prices, random.Random(2))
    expected = 0
    for p in products:
        combos = 1
        for values in p.options.values():
            combos *= len(values)
        expected += combos
    assert len(goals) == expected
    by_product: dict[str, list] = {}  # type: ignore[type-arg]
    for g in goals:
        by_product.setdefault(g.asin, []).append(g)
    for p in products:
        if len(p.pricing) > 1:
            assert p.pricing[0] <= prices[p.asin] <= p.pricing[1]
        group = by_product[p.asin]
        assert len({g.price_upper for g in group}) == 1  # one bound per product
        for g in group:
            assert list(g.goal_options) == sorted(p.options)  # names sorted
            options = ", and ".join(f"{k}: {v}" for k, v in g.goal_options.items())
            suffix = f" with {options}" if options else ""
            bound = f", and price lower than {g.price_upper:.2f} dollars" if g.price_upper != NO_PRICE_BOUND else ""
            assert g.instruction_text == f"{p.instruction_text}{suffix}{bound}"
            assert g.name == p.Title and g.attributes == p.instruction_attributes
            assert 0 < g.weight <= 1


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> WebshopEnvironment:
    cache = tmp_path_factory.mktemp("webshop-cache")
    return WebshopEnvironment.from_settings(EnvServiceSettings(envs=["webshop"], cache_dir=cache))


def test_splits_test_first_500_then_train(embedded: WebshopEnvironment) -> None:
    splits = embedded.splits()
    assert splits["test"] == 500 and splits["train"] == len(embedded.catalog.goals) - 500 > 3000
    assert embedded.goal("train", 0) is embedded.catalog.goals[500]
    task = embedded.task("test", 7)
    assert (task.task_id, task.category) == ("webshop/test/7", embedded.catalog.goals[7].category)
    assert {embedded.task("test", i).category for i in range(500)} == set(CATEGORIES)


def test_original_backend_reads_the_real_file_formats(tmp_path: Path, embedded: WebshopEnvironment) -> None:
    """The generated catalog written as `items_shuffle` / `items_ins_v2` files and served by the
    `original` backend gives the same goals and products as the embedded backend."""
    items, attributes = generate_catalog(0, 1000)
    (tmp_path / "items_shuffle_1000.json").write_text(json.dumps(items))
    (tmp_path / "items_ins_v2_1000.json").write_text(json.dumps(attributes))
    settings = EnvServiceSettings(
        envs=["webshop"],
        cache_dir=tmp_path / "cache",
        webshop_backend="original",
        webshop_products=tmp_path / "items_shuffle_1000.json",
        webshop_attributes=tmp_path / "items_ins_v2_1000.json",
    )
    original = WebshopEnvironment.from_settings(settings)
    assert original.backend == "original" and original.version == "webshop-original-1000+synthetic"
    assert original.catalog.goals == embedded.catalog.goals
    assert original.catalog.products == embedded.catalog.products


def test_original_backend_with_human_goals(tmp_path: Path) -> None:
    items, _attributes = generate_catalog(3, 50)
    first, second = items[0]["asin"], items[1]["asin"]
    human = {
        first: [
            {"asin": first, "instruction": "I want a blue one.", "attributes": ["blue"],
             "instruction_attributes": ["blue"], "instruction_options": ["blue"], "options": ["color: blue"]},
            {"asin": first, "instruction": "no attributes: skipped", "attributes": [],
             "instruction_attributes": [], "instruction_options": []},
        ],
        second: [{"asin": second, "instruction": "Something cheap", "instruction_attributes": ["cheap"],
                  "instruction_options": []}],
    }  # fmt: skip
    (tmp_path / "items.json").write_text(json.dumps(items))
    (tmp_path / "human.json").write_text(json.dumps(human))
    env = WebshopEnvironment.from_settings(
        EnvServiceSettings(
            envs=["webshop"],
            cache_dir=tmp_path / "cache",
            webshop_backend="original",
            webshop_goals="human",
            webshop_products=tmp_path / "items.json",
            webshop_human_goals=tmp_path / "human.json",
        )
    )
    assert env.splits() == {"test": 2, "train": 0}
    texts = sorted(g.instruction_text.split(",")[0] for g in env.catalog.goals)
    assert texts == ["I want a blue one", "Something cheap"]
    blue = next(g for g in env.catalog.goals if g.asin == first)
    assert blue.goal_options == ("blue",) and blue.attributes == ("blue",)
    # Without the attribute file every product carries the original's placeholder attribute.
    assert all(p.Attributes == ("DUMMY_ATTR",) for p in env.catalog.products.values())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"webshop_backend": "original"}, "needs webshop_products"),
        ({"webshop_backend": "original", "webshop_products": "/nonexistent.json"}, "no file"),
        (
            {"webshop_backend": "original", "webshop_goals": "human", "webshop_products": __file__},
            "webshop_human_goals",
        ),
        ({"webshop_catalog_size": 10}, "greater than or equal to 50"),
        ({"webshop_goals": "all"}, "synthetic"),
    ],
)
def test_bad_webshop_settings_are_refused(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EnvServiceSettings(envs=["webshop"], **overrides)  # type: ignore[arg-type]


GOLDEN = Path(__file__).parents[1] / "data" / "webshop_golden.json"
PANEL_SCRIPT = """
import hashlib, json, sys
from services.envs.webshop.catalog import generate_catalog
from services.envs.webshop.env import build_catalog
from pathlib import Path
items, attributes = generate_catalog(0, 1000)
catalog, search = build_catalog("embedded", "synthetic", 0, 1000, None, None, None, Path(sys.argv[1]))
digest = lambda x: hashlib.sha256(json.dumps(x, sort_keys=True, default=list).encode()).hexdigest()[:16]
print(json.dumps({
    "items": digest(items),
    "attributes": digest(attributes),
    "goals": {str(i): digest(catalog.goals[i].__dict__) for i in (0, 1, 499, 500, len(catalog.goals) - 1)},
    "goal_count": len(catalog.goals),
    "search": search.search("coffee mug dishwasher safe")[:10],
}))
"""


@pytest.mark.slow  # ~7 s: several interpreters; run by .ci/run after the default suite
def test_panels_are_the_same_in_every_process_and_hash_seed(tmp_path: Path) -> None:
    """Golden hashes of the catalog and sample goals, under two hash seeds (nothing may depend on
    set or dict order). Regenerate `tests/data/webshop_golden.json` only with a catalog version bump."""
    outputs = []
    for seed in ("1", "2"):
        env = {"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"}
        out = subprocess.run(
            [sys.executable, "-c", PANEL_SCRIPT, str(tmp_path)], capture_output=True, text=True, env=env, timeout=120
        )
        assert out.returncode == 0, out.stderr
        outputs.append(json.loads(out.stdout))
    assert outputs[0] == outputs[1]
    assert outputs[0] == json.loads(GOLDEN.read_text())


def test_every_test_goal_is_solvable_by_searching_its_query(embedded: WebshopEnvironment) -> None:
    """In-process oracle on all 500 test goals and every 10th train goal: the target is among the
    top 50 for the goal's query, and buying it with the goal's options scores exactly 1.0 within
    the 15-step limit."""
    splits = embedded.splits()
    panel = [("test", i) for i in range(splits["test"])] + [("train", i) for i in range(0, splits["train"], 10)]
    for split, index in panel:
        task = embedded.task(split, index)
        goal = embedded.goal(split, index)
        simulator = embedded.open(task)
        simulator.reset()
        target = f"click[{goal.asin.lower()}]"
        actions = 1
        transition = simulator.step(f"search[{goal.query}]")
        while target not in (transition.admissible_actions or []):
            assert actions < 6, (split, index)
            transition = simulator.step("click[next >]")
            actions += 1
        simulator.step(target)
        assert isinstance(goal.goal_options, dict)
        for value in goal.goal_options.values():
            simulator.step(f"click[{value}]")
        transition = simulator.step("click[buy now]")
        assert (transition.reward, transition.won, transition.done) == (1.0, True, True), (split, index)
        assert actions + 2 + len(goal.goal_options) <= 15
