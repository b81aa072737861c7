"""The Search-QA turn protocol: what an action is, and how retrieved passages are shown.

An action is the tagged text the reference agents send: the first `<search>q</search>` or
`<answer>a</answer>` block counts (`<(search|answer)>(.*?)</\\1>`, as Search-R1 parses it); anything
else is an invalid turn. Passages are wiki-18 lines, `"Title"\\ntext`, shown in one of two formats
(environments.md §3.1-3.2):
- `verl-agent` (the default, as the SDAR reference trains with it): the observation is
  `<information>{"result": "Doc 1: {contents}\\nDoc 2: ..."}</information>`, the retriever's JSON
  reply, so passage text arrives JSON-escaped;
- `search-r1`: `\\n\\n<information>Doc 1(Title: {first line}) {rest}\\nDoc 2(...) ...</information>\\n\\n`
  (the title keeps its quotes; the passages are stripped of surrounding whitespace).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Literal

ACTION = re.compile(r"<(search|answer)>(.*?)</\1>", re.DOTALL)
PassageFormat = Literal["verl-agent", "search-r1"]


def parse_action(text: str) -> tuple[Literal["search", "answer"], str] | None:
    """`("search", query)` or `("answer", answer)` from the first tagged block, stripped; None if
    there is none."""
    m = ACTION.search(text)
    if m is None:
        return None
    kind: Literal["search", "answer"] = "search" if m.group(1) == "search" else "answer"
    return kind, m.group(2).strip()


def search_r1_passages(passages: Sequence[str]) -> str:
    lines = []
    for i, contents in enumerate(passages, start=1):
        title, _, text = contents.partition("\n")
        lines.append(f"Doc {i}(Title: {title}) {text}\n")
    return "".join(lines)


def information(passages: Sequence[str], style: PassageFormat = "verl-agent") -> str:
    """The observation that answers a search."""
    if style == "search-r1":
        return f"\n\n<information>{search_r1_passages(passages).strip()}</information>\n\n"
    result = "".join(f"Doc {i}: {contents}\n" for i, contents in enumerate(passages, start=1))
    return f"<information>{json.dumps({'result': result})}</information>"
