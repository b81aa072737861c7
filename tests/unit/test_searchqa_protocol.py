"""Search-QA turn protocol: action parsing and both passage formats, against environments.md §3."""

from __future__ import annotations

from services.envs.searchqa.protocol import information, parse_action

PASSAGES = ['"Paul Walker"\nPaul Walker was an actor.', '"Fast Five"\nFast Five is a film.']


def test_parse_action_takes_the_first_tagged_block() -> None:
    assert parse_action("<think>hm</think><search> who is paul walker </search>") == ("search", "who is paul walker")
    assert parse_action("<answer>Paris</answer><search>x</search>") == ("answer", "Paris")
    assert parse_action("<search>a</search> then <answer>b</answer>") == ("search", "a")
    assert parse_action("<search>multi\nline</search>") == ("search", "multi\nline")
    assert parse_action("<search>unclosed") is None
    assert parse_action("<search>x</answer>") is None
    assert parse_action("") is None


def test_verl_agent_format_is_the_retrievers_json() -> None:
    assert information(PASSAGES) == (
        '<information>{"result": "Doc 1: \\"Paul Walker\\"\\nPaul Walker was an actor.\\n'
        'Doc 2: \\"Fast Five\\"\\nFast Five is a film.\\n"}</information>'
    )


def test_search_r1_format() -> None:
    assert information(PASSAGES, "search-r1") == (
        '\n\n<information>Doc 1(Title: "Paul Walker") Paul Walker was an actor.\n'
        'Doc 2(Title: "Fast Five") Fast Five is a film.</information>\n\n'
    )
