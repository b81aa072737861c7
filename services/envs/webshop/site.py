"""The WebShop site in text mode: pages, clickables and the page flow of the original.

This is the original's `SimServer.receive` and its templates, rendered straight to the text the text
env produces (`' [SEP] '.join` of the visible strings; environments.md §2.1-2.3) instead of going
through HTML. The rules kept, quirks included:
- `search[q]` works from any page (the search bar is not checked) and always opens results page 1;
- `click[x]` needs `x` among the current page's clickables, and `search` is never clickable;
- `next >` is always offered on results, even past the last page; `< prev` only after page 1;
- clicking an option on the item page sets it; rendering a results page forgets the options;
- an option value shown under two option names selects the later name (the clickables are a dict);
- anything that does not apply changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from services.envs.webshop.products import Goal, Product

ACTION = re.compile(r"(.+)\[(.+)\]")
SEP = " [SEP] "
RESULTS_PER_PAGE = 10
BUY, NEXT, PREV, BACK = "buy now", "next >", "< prev", "back to search"
SUB_PAGES = {"description": "Description", "features": "Features", "reviews": "Reviews", "attributes": "Attributes"}

PageKind = Literal["search", "results", "item", "sub", "done"]
Search = Callable[[str], list[str]]


def parse_action(action: str) -> tuple[str, str | None]:
    """`(name, argument)` as the original parses it (`re.match`, greedy): `click[x]` -> `("click", "x")`;
    anything else -> `(action, None)`."""
    m = ACTION.match(action)
    if m is None:
        return action, None
    return m.group(1), m.group(2)


@dataclass(frozen=True)
class Clickable:
    kind: Literal["button", "product", "option"]
    option: str | None = None
    """For an option value: the option's name."""


@dataclass
class Page:
    """What the browser shows: the text observation and what can be clicked."""

    observation: str
    clickables: dict[str, Clickable]
    has_search_bar: bool = False

    def available_actions(self) -> list[str]:
        """As verl-agent lists them: `search[<your query>]` where there is a search bar, then
        `click[...]` for every clickable (`click[search]` included, though clicking it is refused)."""
        actions = ["search[<your query>]"] if self.has_search_bar else []
        return actions + [f"click[{c}]" for c in self.clickables]


@dataclass
class Session:
    """One shopper's state on the site."""

    goal: Goal
    products: dict[str, Product]
    search: Search
    kind: PageKind = "search"
    keywords: list[str] | None = None
    page: int = 1
    asin: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    sub_page: str | None = None
    results: list[str] = field(default_factory=list)
    view: Page = field(init=False)

    def __post_init__(self) -> None:
        self.view = self.render()

    # ---------------------------------------------------------------------------------------
    # actions

    def act(self, action: str) -> bool:
        """Apply an action; return whether it did anything (a purchase ends the session)."""
        name, arg = parse_action(action)
        if arg is not None:
            arg = arg.lower()
        if name == "search" and arg:
            self._show_results(arg.split(" "), 1)
        elif name == "click" and arg is not None and arg in self.view.clickables and arg != "search":
            self._click(arg, self.view.clickables[arg])
        else:
            return False
        self.view = self.render()
        return True

    def _show_results(self, keywords: list[str], page: int) -> None:
        if keywords != self.keywords or not self.results:
            self.results = self.search(" ".join(keywords))
        self.kind, self.keywords, self.page = "results", keywords, page
        self.asin, self.options = None, {}

    def _click(self, name: str, clickable: Clickable) -> None:
        if name == BUY:
            self.kind = "done"
        elif name == BACK:
            self.kind, self.keywords, self.page, self.asin, self.options = "search", None, 1, None, {}
            self.results = []
        elif name == NEXT and self.kind == "results":
            self._show_results(self.keywords or [], self.page + 1)
        elif name == PREV and self.kind == "results":
            self._show_results(self.keywords or [], self.page - 1)
        elif name == PREV and self.kind == "sub":
            self.kind = "item"
        elif name == PREV and self.kind == "item":
            self._show_results(self.keywords or [], self.page)
        elif name in SUB_PAGES:
            self.kind, self.sub_page = "sub", SUB_PAGES[name]
        else:
            if clickable.kind == "product":
                self.asin = self._asin(name)
            elif clickable.kind == "option" and clickable.option is not None:
                self.options[clickable.option] = name
            self.kind = "item"

    def _asin(self, clicked: str) -> str:
        asin = clicked.upper()
        if asin not in self.products:  # an asin with lower-case letters in the data
            asin = next(a for a in self.results if a.lower() == clicked)
        return asin

    @property
    def product(self) -> Product:
        assert self.asin is not None
        return self.products[self.asin]

    # ---------------------------------------------------------------------------------------
    # pages

    def render(self) -> Page:
        instruction = ["Instruction:", self.goal.instruction_text]
        if self.kind == "search":
            return _page(["WebShop", *instruction, "Search"], {"search": Clickable("button")}, search_bar=True)
        if self.kind == "results":
            return self._render_results(instruction)
        if self.kind == "item":
            return self._render_item(instruction)
        if self.kind == "sub":
            return self._render_sub_page(instruction)
        return _page(["Thank you for shopping with us!"], {})

    def _render_results(self, instruction: list[str]) -> Page:
        texts = [*instruction, "Back to Search", f"Page {self.page} (Total results: {len(self.results)})"]
        clickables = {BACK: Clickable("button")}
        if self.page > 1:
            texts.append("< Prev")
            clickables[PREV] = Clickable("button")
        texts.append("Next >")
        clickables[NEXT] = Clickable("button")
        start = (self.page - 1) * RESULTS_PER_PAGE
        for asin in self.results[start : start + RESULTS_PER_PAGE]:
            product = self.products[asin]
            texts += [asin, product.Title, product.Price]
            clickables[asin.lower()] = Clickable("product")
        return _page(texts, clickables)

    def _render_item(self, instruction: list[str]) -> Page:
        product = self.product
        texts = [*instruction, "Back to Search", "< Prev"]
        options: dict[str, Clickable] = {}
        for name, values in product.options.items():
            texts.append(name)
            for value in values:
                texts.append(value)
                options[value] = Clickable("option", name)
        texts += [product.Title, f"Price: {product.Price}", f"Rating: {product.Rating}"]
        texts += ["Description", "Features", "Reviews", "Buy Now"]
        clickables = {name: Clickable("button") for name in (BACK, PREV, "description", "features", "reviews", BUY)}
        return _page(texts, clickables | options)

    def _render_sub_page(self, instruction: list[str]) -> Page:
        product = self.product
        texts = [*instruction, "Back to Search", "< Prev"]
        if self.sub_page == "Description":
            texts.append(product.Description)
        elif self.sub_page == "Features":
            texts += list(product.BulletPoints)
        elif self.sub_page == "Attributes":
            texts += list(product.Attributes)
        return _page(texts, {BACK: Clickable("button"), PREV: Clickable("button")})


def _page(texts: list[str], clickables: dict[str, Clickable], *, search_bar: bool = False) -> Page:
    observation = SEP.join(t.strip() for t in texts if t.strip())
    return Page(observation, clickables, search_bar)
