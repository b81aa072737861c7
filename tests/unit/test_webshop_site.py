"""WebShop pages: texts, clickables and page flow as environments.md §2.1-2.3 give them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from services.envs.webshop.products import Goal, Product, load_products
from services.envs.webshop.search import SearchEngine, document_text
from services.envs.webshop.site import Session, parse_action

INSTRUCTION = "i need a citrus deodorant, and price lower than 20.00 dollars"


def item(asin: str, name: str, **overrides: Any) -> dict[str, Any]:
    return {
        "asin": asin,
        "name": name,
        "full_description": f"The {name.lower()}.",
        "small_description": ["Aluminum free", "Lasts all day"],
        "pricing": "$10.99",
        "images": [],
        "query": "Deodorant",
        "category": "beauty",
        "product_category": "Beauty & Personal Care › Deodorants",
        "customization_options": "",
    } | overrides


DEODORANT = item(
    "B0DEO00001",
    "Bright Citrus Deodorant",
    pricing="$10.99 - $15",
    customization_options={
        "Size": [{"value": "3 Ounce (Pack of 1)"}, {"value": "3 Ounce (Pack of 2)"}],
        "Scent": [{"value": "Citrus"}, {"value": "Lavender/Sage"}],
    },
)
FILLERS = [item(f"B0FIL{i:05d}", f"Filler Deodorant Number {i}") for i in range(55)]


@pytest.fixture(scope="module")
def products() -> dict[str, Product]:
    return {p.asin: p for p in load_products([DEODORANT, *FILLERS], {})}


@pytest.fixture
def session(products: dict[str, Product]) -> Session:
    goal = Goal("B0DEO00001", "beauty", "deodorant", "Bright Citrus Deodorant", "x", INSTRUCTION, ("a",), 20.0, {})
    return Session(goal, products, SearchEngine(list(products.values())).search)


def test_search_page(session: Session) -> None:
    assert session.view.observation == f"WebShop [SEP] Instruction: [SEP] {INSTRUCTION} [SEP] Search"
    assert list(session.view.clickables) == ["search"]
    assert session.view.available_actions() == ["search[<your query>]", "click[search]"]


def test_results_pages_and_paging(session: Session) -> None:
    assert session.act("search[Citrus Deodorant]")
    obs = session.view.observation
    head = f"Instruction: [SEP] {INSTRUCTION} [SEP] Back to Search [SEP] Page 1 (Total results: 50) [SEP] Next > [SEP] "
    assert obs.startswith(head)
    # The best hit first: asin, title, display price of a range.
    assert obs[len(head) :].startswith("B0DEO00001 [SEP] Bright Citrus Deodorant [SEP] $10.99 to $15.0 [SEP] ")
    assert obs.count(" [SEP] B0") == 10
    assert list(session.view.clickables)[:2] == ["back to search", "next >"]
    assert "b0deo00001" in session.view.clickables
    assert session.act("click[next >]")
    assert "Page 2 (Total results: 50) [SEP] < Prev [SEP] Next >" in session.view.observation
    assert list(session.view.clickables)[:3] == ["back to search", "< prev", "next >"]
    for _ in range(4):
        session.act("click[next >]")
    # `next >` is offered even past the last page, which is empty.
    assert session.view.observation.endswith("Page 6 (Total results: 50) [SEP] < Prev [SEP] Next >")
    assert session.act("click[< prev]")
    assert "Page 5 (Total results: 50)" in session.view.observation


def test_item_page_options_and_sub_pages(session: Session) -> None:
    session.act("search[citrus deodorant]")
    assert session.act("click[b0deo00001]")
    assert session.view.observation == (
        f"Instruction: [SEP] {INSTRUCTION} [SEP] Back to Search [SEP] < Prev [SEP] size [SEP] 3 ounce (pack of 1) "
        "[SEP] 3 ounce (pack of 2) [SEP] scent [SEP] citrus [SEP] lavender | sage [SEP] Bright Citrus Deodorant "
        "[SEP] Price: $10.99 to $15.0 [SEP] Rating: N.A. [SEP] Description [SEP] Features [SEP] Reviews [SEP] Buy Now"
    )
    assert list(session.view.clickables) == [
        "back to search", "< prev", "description", "features", "reviews", "buy now",
        "3 ounce (pack of 1)", "3 ounce (pack of 2)", "citrus", "lavender | sage",
    ]  # fmt: skip
    assert session.act("click[3 ounce (pack of 2)]")
    assert session.act("click[citrus]")
    assert session.options == {"size": "3 ounce (pack of 2)", "scent": "citrus"}

    assert session.act("click[description]")
    assert session.view.observation.endswith("Back to Search [SEP] < Prev [SEP] The bright citrus deodorant.")
    assert list(session.view.clickables) == ["back to search", "< prev"]
    session.act("click[< prev]")
    session.act("click[features]")
    assert session.view.observation.endswith("< Prev [SEP] Aluminum free [SEP] Lasts all day")
    session.act("click[< prev]")
    session.act("click[reviews]")
    assert session.view.observation.endswith("[SEP] Back to Search [SEP] < Prev")  # reviews are not loaded
    session.act("click[< prev]")
    assert session.kind == "item" and session.options == {"size": "3 ounce (pack of 2)", "scent": "citrus"}

    # Back to the results forgets the options; back to search forgets the query.
    session.act("click[< prev]")
    assert session.kind == "results" and session.options == {} and session.asin is None
    session.act("click[b0deo00001]")
    session.act("click[back to search]")
    assert session.kind == "search" and session.keywords is None


def test_buy_now_ends_on_the_done_page(session: Session) -> None:
    session.act("search[citrus]")
    session.act("click[b0deo00001]")
    session.act("click[citrus]")
    assert session.act("click[buy now]")
    assert session.kind == "done" and session.asin == "B0DEO00001" and session.options == {"scent": "citrus"}


@pytest.mark.parametrize(
    "action",
    [
        "click[search]",  # listed, but clicking it is refused
        "search[]",  # an empty query does not parse
        "Search[deodorant]",  # names are case sensitive
        "click[buy now]",  # not on this page
        "click[nonexistent]",
        "buy",
        "",
        "search[a [b] c]",  # greedy: the name is 'search[a ', not 'search'
    ],
)
def test_inapplicable_actions_change_nothing(session: Session, action: str) -> None:
    before = (session.view, session.kind, session.keywords)
    assert not session.act(action)
    assert (session.view, session.kind, session.keywords) == before


def test_search_works_from_any_page_and_lowercases(session: Session) -> None:
    session.act("search[citrus]")
    session.act("click[b0deo00001]")
    assert session.act("search[FILLER Number 3]")
    assert session.kind == "results" and session.keywords == ["filler", "number", "3"]
    # Trailing text after the brackets is ignored, as `re.match` does.
    assert session.act("click[next >] please")
    assert session.page == 2


def test_parse_action() -> None:
    assert parse_action("click[B0ABC]") == ("click", "B0ABC")
    assert parse_action("search[red [large] shoes]") == ("search[red ", "large] shoes")
    assert parse_action("nothing") == ("nothing", None)


def test_duplicate_option_value_selects_the_later_option(products: dict[str, Product]) -> None:
    twice = item(
        "B0TWICE001",
        "Two Tone Deodorant",
        customization_options={"Color": [{"value": "Black"}], "Cap": [{"value": "Black"}, {"value": "White"}]},
    )
    catalog = {p.asin: p for p in load_products([twice], {})}
    goal = Goal("B0TWICE001", "beauty", "deodorant", "x", "x", INSTRUCTION, ("a",), 20.0, {})
    session = Session(goal, catalog, SearchEngine(list(catalog.values())).search)
    session.act("search[two tone]")
    session.act("click[b0twice001]")
    assert list(session.view.clickables)[6:] == ["black", "white"]
    session.act("click[black]")
    assert session.options == {"cap": "black"}


def test_search_ranks_bm25_over_the_indexed_text(products: dict[str, Product]) -> None:
    engine = SearchEngine(list(products.values()))
    assert engine.search("bright citrus")[0] == "B0DEO00001"
    assert len(engine.search("deodorant")) == 50  # top 50 of 56 matches
    assert engine.search("zzzz unknown words") == []
    assert engine.search("the and of") == []  # stopwords only
    assert document_text(products["B0DEO00001"]) == (
        "bright citrus deodorant the bright citrus deodorant. aluminum free "
        "size: 3 ounce (pack of 1), 3 ounce (pack of 2), and scent: citrus, lavender | sage"
    )


def test_search_from_many_threads_agrees_with_one(products: dict[str, Product]) -> None:
    """Simulators step in worker threads; the engine (its stemmer included) is shared by all."""
    engine = SearchEngine(list(products.values()))
    queries = [f"filler deodorant number {i} citrus" for i in range(200)]
    expected = [engine.search(q) for q in queries]
    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(engine.search, queries)) == expected
