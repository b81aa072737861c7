"""Search-QA exact match: equal to Search-R1's own `em_check` on every recorded case."""

from __future__ import annotations

import json
from pathlib import Path

from services.envs.searchqa.reward import exact_match, last_answer, normalize_answer

CASES = json.loads((Path(__file__).parents[1] / "data" / "search_em_cases.json").read_text())["cases"]


def test_exact_match_equals_the_reference_on_every_recorded_case() -> None:
    assert len(CASES) == 596
    wrong = [c for c in CASES if exact_match(c["prediction"], c["golden_answers"]) != c["em"]]
    assert not wrong


def test_normalisation_by_hand() -> None:
    assert normalize_answer("  The  Beatles! ") == "beatles"
    assert normalize_answer("An apple a day") == "apple day"
    assert normalize_answer("O'Neil\u2019s") == "oneil\u2019s"  # only ASCII punctuation goes
    assert normalize_answer("theatre") == "theatre"  # whole words only
    assert exact_match("the beatles", ["Beatles", "x"]) == 1
    assert exact_match("Beatles", "The Beatles.") == 1
    assert exact_match("Beatle", ["Beatles"]) == 0
    assert exact_match("", [""]) == 1


def test_last_answer_counts() -> None:
    assert last_answer("<answer> Paris </answer> then <answer>Lyon</answer>") == "Lyon"
    assert last_answer("<answer>multi\nline</answer>") == "multi\nline"
    assert last_answer("no answer here") is None
