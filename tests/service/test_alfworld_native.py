"""The native ALFWorld engine against the real one: the differential suite (golden transcripts of
TextWorld, every step identical), its grammar parser against TextWorld's, its quirks by hand, and
64 episodes stepped at once giving the transcripts they give one at a time."""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from services.envs.alfworld import engine as engine_module
from services.envs.alfworld import generator, native
from services.envs.alfworld.engine import NativeEngine, TextWorldEngine
from services.envs.alfworld.games import Dialect
from tests import alfworld_transcripts as transcripts

REGENERATE = "regenerate them with `python -m tests.alfworld_transcripts`"


@pytest.fixture(scope="module")
def golden() -> dict[str, Any]:
    data = transcripts.load()
    assert data["versions"] == transcripts.header(), f"the golden transcripts are of other versions; {REGENERATE}"
    return data


def first_difference(expected: list[dict[str, Any]], got: list[dict[str, Any]]) -> str | None:
    for n, (want, have) in enumerate(zip(expected, got, strict=True)):
        for field in ("observation", "admissible", "won", "done", "reward"):
            if want[field] != have[field]:
                return f"step {n} ({want['command']!r}) {field}:\n  textworld: {want[field]!r}\n  got: {have[field]!r}"
    return None


def test_the_golden_transcripts_cover_what_the_suite_promises(golden: dict[str, Any]) -> None:
    games = golden["games"]
    steps = sum(len(g["steps"]) - 1 for g in games)
    assert len({(g["split"], g["index"], g["dialect"]) for g in games}) >= 60
    assert steps >= 2000
    assert {(g["split"], g["task_type"], g["dialect"]) for g in games} == {
        (s, t, d) for s in generator.SPLITS for t in generator.TASK_TYPES for d in transcripts.DIALECTS
    }
    expert = [g for g in games if g["walk"] == "expert"]
    assert expert and all(g["steps"][-1]["won"] and g["steps"][-1]["done"] for g in expert)
    commands = Counter(step["command"] for g in games for step in g["steps"][1:])
    assert commands[""] and commands["help"] and commands["LOOK"] and commands[" look "]  # empty, help, case, padding
    stale = 0
    for g in games:  # once admissible, no longer: nothing happens
        offered: set[str] = set()
        for before, after in zip(g["steps"], g["steps"][1:], strict=False):
            offered |= set(before["admissible"])
            if after["command"] in offered - set(before["admissible"]):
                stale += 1
                assert after["observation"] == native.NOTHING_HAPPENS
    assert stale >= 20
    assert sum(1 for g in games for step in g["steps"][1:] if step["command"].startswith("use ")) >= 10


def test_native_engine_replays_every_golden_transcript(golden: dict[str, Any]) -> None:
    """Every step of every transcript: the same observation, the same admissible list (TextWorld
    sorts it), `won`, `done` and the reward. A difference is a bug of the native engine."""
    differences = []
    for g in golden["games"]:
        data = transcripts.game_data(g["split"], g["index"], g["attempt"], g["dialect"])
        commands = [step["command"] for step in g["steps"][1:]]
        got = transcripts.play(NativeEngine(), data, transcripts.scripted(commands))
        difference = first_difference(g["steps"], got)
        if difference:
            differences.append(f"{g['split']}/{g['index']} {g['dialect']} {g['walk']}: {difference}")
    assert not differences, "\n".join(differences[:5])


@pytest.mark.slow  # TextWorld steps; run by .ci/run after the default suite
def test_the_golden_transcripts_are_the_installed_engines(golden: dict[str, Any]) -> None:
    """A sample replayed on TextWorld itself, so the oracle is not stale."""
    sample = [g for g in golden["games"] if g["split"] == "valid_unseen"][::16]
    for g in sample:
        data = transcripts.game_data(g["split"], g["index"], g["attempt"], g["dialect"])
        commands = [step["command"] for step in g["steps"][1:13]]
        got = transcripts.play(TextWorldEngine(), data, transcripts.scripted(commands))
        assert first_difference(g["steps"][: len(got)], got) is None, f"{REGENERATE}"


def grammar_texts() -> list[str]:
    """Every production's right-hand side and every action template of both shipped grammars."""
    texts = []
    for dialect in transcripts.DIALECTS:
        rules, actions = native.parse_grammar(Dialect.load(dialect).grammar)
        raw = Dialect.load(dialect).grammar
        texts += [json.loads(f'"{t}"') for t in re.findall(r'"rhs": "((?:[^"\\]|\\.)*)"', raw)]
        texts += re.findall(r'template :: "([^"]*)"', raw)
        assert rules and actions
    return [
        *texts,
        "\n  abc",
        "  lead  ",
        "abc\n#x#\n  def",
        "\tabc",
        "a\t#x#\tb",
        "{ r.name }x",
        '"quoted" z',
        "a;b",
        "x<y",
        "//note\n//more\ntext",
        "{r.name | }",
        "#a:b#",
        "{r.name}}",
        "",
    ]


def shape(symbols: Any) -> list[Any]:
    """TextWorld's and the native parser's symbols in one comparable form."""
    out = []
    for s in symbols:
        name = type(s).__name__
        if name in ("TerminalSymbol", "Terminal"):
            text = s.symbol if name == "TerminalSymbol" else s.text
            if text:
                out.append(("t", text))
        elif name in ("NonterminalSymbol", "Nonterminal"):
            out.append(("n", s.symbol if name == "NonterminalSymbol" else s.name))
        elif name in ("EvalSymbol", "Evaluation"):
            out.append(("e", s.expression if name == "EvalSymbol" else s.source))
        elif name in ("ConditionalSymbol", "Conditional"):
            given = s.given if name == "ConditionalSymbol" else s.given_text
            out.append(("c", shape([s.expression]), given))
        else:
            out.append(("l", shape([s.symbol if name == "ListSymbol" else s.item])))
    return out


@pytest.mark.parametrize("text", grammar_texts())
def test_the_grammar_parser_reads_as_textworlds(text: str) -> None:
    from textworld.envs.pddl import textgen

    assert shape(native.parse_symbols(text)) == shape(textgen._parse_and_convert(text, rule_name="symbols"))


def grammar_queries() -> list[str]:
    texts = []
    for dialect in transcripts.DIALECTS:
        raw = Dialect.load(dialect).grammar
        texts += re.findall(r'"condition": "([^"]*)"', raw) + re.findall(r"\| ([^}\]]*)\}", raw)
    return [*sorted(set(texts)), "!opened(r:receptacle)", "holds(a:agent, o) & objecttype(o, t:otype)"]


@pytest.mark.parametrize("text", grammar_queries())
def test_the_query_parser_reads_as_textworlds(text: str) -> None:
    from textworld.logic import Rule

    theirs = [
        (p.name, [(ph.name, ph.type) for ph in p.parameters]) for p in Rule.parse_conjunctive_query(text).preconditions
    ]
    assert [(name, list(params)) for name, params in native.parse_query(text)] == theirs


@pytest.mark.slow  # ~17 s of TextWorld steps; run by .ci/run after the default suite (and in the sweep)
def test_the_facts_the_grammar_reads_are_textworlds(golden: dict[str, Any]) -> None:
    """Beyond the texts: after every step the native episode's facts are the real engine's (the `not_`
    ones the grammar queries included). Transcripts where it is hardest: toggling lamps (conditional
    effects, which TextWorld records all of), cooling what nothing heats, taking and putting back."""
    games = golden["games"]
    picked = [g for g in games if any(s["command"].startswith("use ") for s in g["steps"][1:])][:2]
    picked += [g for g in games if any(s["command"].startswith("cool bowl") for s in g["steps"][1:])][:1]
    picked += [g for g in games if g["walk"] == "busy"][:2]
    assert len(picked) == 5
    for g in picked:
        data = transcripts.game_data(g["split"], g["index"], g["attempt"], g["dialect"])
        played = [step["command"] for step in g["steps"][1:]]
        assert facts_difference(data, played) is None, f"{g['split']}/{g['index']} {g['walk']}"


EXTRA_RULES = {  # rule name: a rule put first, reading what ALFWorld's grammar never reads
    "examineObject.feedback": '{"condition": "not_ishot(o:object)", "rhs": "A cooled {o.name}."}, ',
    "toggleObject.feedback": '{"condition": "ison(o:object)", "rhs": "A glowing {o.name}."}, ',
}


@pytest.mark.slow  # TextWorld steps; run by .ci/run after the default suite
def test_a_grammar_reading_what_alfworlds_does_not(golden: dict[str, Any]) -> None:
    """A grammar that queries `not_ishot` and `ison`, which ALFWorld's does not: the native engine then
    keeps those facts as TextWorld does. Cooling a bowl, then examining it (nothing can heat a bowl:
    Fast Downward drops the delete, so no `not_ishot`), and switching a lamp (TextWorld records both
    conditional effects, so never `ison`), on both engines."""
    games = golden["games"]
    cool = next(g for g in games if any(s["command"].startswith("cool bowl") for s in g["steps"][1:]))
    use = next(g for g in games if any(s["command"].startswith("use ") for s in g["steps"][1:]))
    for g, verb in ((cool, "cool bowl"), (use, "use ")):
        data = transcripts.game_data(g["split"], g["index"], g["attempt"], g["dialect"])
        for rule, extra in EXTRA_RULES.items():
            marker = f'"{rule}": ['
            assert marker in data["grammar"]
            data["grammar"] = data["grammar"].replace(marker, marker + extra)
        script = [s["command"] for s in g["steps"][1:]]
        at = next(n for n, c in enumerate(script) if c.startswith(verb)) + 1
        thing = script[at - 1].split(" ", 1)[1].partition(" with ")[0]
        script.insert(at, f"examine {thing}")  # held after cooling; not examinable after `use`
        want = transcripts.play(TextWorldEngine(), data, transcripts.scripted(script))
        got = transcripts.play(NativeEngine(), data, transcripts.scripted(script))
        assert first_difference(want, got) is None
        seen = want[at]["observation"] if verb == "use " else want[at + 1]["observation"]
        assert thing in seen and not seen.startswith(("A cooled", "A glowing"))  # neither fact was recorded


def facts_difference(data: dict[str, Any], played: list[str]) -> str | None:
    """The first step after which the facts the grammar reads (`not_` ones included) differ."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "game.tw-pddl"
        path.write_text(json.dumps(data))
        real = TextWorldEngine()
        real.load(path)
        real.reset()
        episode = native.NativeEpisode(native.NativeGame(data))
        episode.reset()
        for n, command in enumerate(played, 1):
            real.step(command)
            episode.step(command)
            theirs = grammar_facts_of(real, episode.game)
            ours = episode.grammar_facts()
            if ours != theirs:
                only = sorted(theirs - ours)[:3], sorted(ours - theirs)[:3]
                return f"facts after step {n} ({command!r}): textworld only {only[0]}, native only {only[1]}"
    return None


def grammar_facts_of(real: TextWorldEngine, game: native.NativeGame) -> set[tuple[str, tuple[str, ...]]]:
    """TextWorld's facts less the `not_` facts of predicates the grammar never reads negated."""
    facts = {(f.name, tuple(v.name for v in f.arguments)) for f in real._pddl._pddl_state.facts}
    return {(name, args) for name, args in facts if not name.startswith("not_") or name[4:] in game.negated_read}


def episode_of(split: str, index: int, dialect: str = "2.1.2") -> native.NativeEpisode:
    attempt = generator.generate(generator.panel(split)[index]).attempt
    return native.NativeEpisode(native.NativeGame(transcripts.game_data(split, index, attempt, dialect)))


def test_going_to_where_the_agent_stands_is_not_offered() -> None:
    """Fast Downward drops an operator whose effects restate its precondition: after `go to X`,
    neither X nor a receptacle sharing its location is admissible (environments.md §1.3 says it is;
    the real engine, checked by the transcripts, does not offer it)."""
    ep = episode_of("valid_unseen", 0)
    _, admissible = ep.reset()
    names = ep.game.names
    by_location: dict[str, list[str]] = {}
    for r, loc in sorted(ep.game.static_rows["receptacleatlocation"]):
        by_location.setdefault(loc, []).append(names[r])
    shared = next(rs for rs in by_location.values() if len(rs) > 1)  # e.g. a coffee machine on a countertop
    _, after, _ = ep.step(f"go to {shared[0]}")
    assert not {f"go to {r}" for r in shared} & set(after)
    assert f"go to {shared[0]}" in admissible and any(c.startswith("go to ") for c in after)


def test_names_are_demangled_as_alfworld_does() -> None:
    ids = [
        "cabinet_bar__minus_01_dot_00_bar_00_dot_00",
        "cabinet_bar__plus_02_dot_00_bar_00_dot_00",
        "sink_bar__minus_01_dot_99_bar__plus_01_dot_14_bar__minus_00_dot_98_bar_sinkbasin",
        "agent1",
    ]
    assert native.demangled_names(ids) == {
        "cabinet_bar__minus_01_dot_00_bar_00_dot_00": "cabinet 2",  # the first id sorted gets the top number
        "cabinet_bar__plus_02_dot_00_bar_00_dot_00": "cabinet 1",
        "sink_bar__minus_01_dot_99_bar__plus_01_dot_14_bar__minus_00_dot_98_bar_sinkbasin": "sinkbasin 1",
        "agent1": "agent1 ",
    }


def test_disjunctions_split_as_fast_downward_does() -> None:
    f = native.parse_domain(resources.files("alfworld").joinpath("data/alfred.pddl").read_text())[1]
    pickup = next(a for a in f if a.name == "pickupobject")
    conjunctions = native.dnf(pickup.precondition)
    assert len(conjunctions) == 2  # (or (not (openable ?r)) (opened ?r))
    assert {(False, "openable", ("?r",)), (True, "opened", ("?r",))} == {
        lit for c in conjunctions for lit in c if lit[1] in ("openable", "opened")
    }


def test_64_episodes_stepped_at_once_match_one_at_a_time() -> None:
    """Eight games, eight episodes each, 40 seeded steps each: stepped by 64 threads in lock step
    (a barrier between steps, so every step of every episode overlaps the others) they give the
    transcripts they give one at a time. No lock is taken anywhere."""
    games = [("valid_seen", i) for i in range(4)] + [("valid_unseen", i) for i in range(4)]
    data = {
        g: transcripts.game_data(*g, generator.generate(generator.panel(g[0])[g[1]]).attempt, "2.1.2") for g in games
    }
    loaded = {g: native.NativeGame(d) for g, d in data.items()}
    jobs = [(g, seed) for g in games for seed in range(8)]

    def commands(g: tuple[str, int], seed: int) -> Any:
        return transcripts.random_walk(f"concurrency/{g}/{seed}", 40)

    def run(g: tuple[str, int], seed: int, barrier: threading.Barrier | None) -> list[tuple[str, list[str], bool]]:
        episode = native.NativeEpisode(loaded[g])
        choose = commands(g, seed)
        intro, admissible = episode.reset()
        out: list[tuple[str, list[str], bool]] = [(intro, admissible, False)]
        step = 0
        while True:
            if barrier is not None:
                barrier.wait()
            command = choose(step, admissible)
            if command is None:
                return out
            feedback, admissible, won = episode.step(command)
            out.append((feedback, admissible, won))
            step += 1

    alone = [run(g, seed, None) for g, seed in jobs]
    loaded = {g: native.NativeGame(d) for g, d in data.items()}  # cold again: memos are filled concurrently
    barrier = threading.Barrier(len(jobs))
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads swap inside steps, not only between them
    try:
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            together = list(pool.map(lambda job: run(*job, barrier), jobs))
    finally:
        sys.setswitchinterval(switch)
    assert together == alone
    assert len({t[0][0] for t in alone}) == len(games)  # eight different games, really


def test_a_game_file_is_parsed_once(tmp_path: Path) -> None:
    attempt = generator.generate(generator.panel("valid_seen")[3]).attempt
    path = tmp_path / "game.tw-pddl"
    path.write_text(json.dumps(transcripts.game_data("valid_seen", 3, attempt, "2.1.2")))
    assert native.NativeGame.load(path) is native.NativeGame.load(path)
    first = native.NativeGame.load(path)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    assert native.NativeGame.load(path) is not first  # a rewritten file is read again


def test_the_native_engine_takes_no_lock(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """TextWorld's process-wide lock is never taken on the native path (it would fail here)."""

    class Refuse:
        def __enter__(self) -> None:
            raise AssertionError("the TextWorld lock was taken")

        def __exit__(self, *args: object) -> None:
            pass

    monkeypatch.setattr(engine_module, "_engine_lock", Refuse())
    attempt = generator.generate(generator.panel("valid_seen")[2]).attempt
    path = tmp_path / "game.tw-pddl"
    path.write_text(json.dumps(transcripts.game_data("valid_seen", 2, attempt, "2.1.2") | {"walkthrough": ["look"]}))
    engine = NativeEngine()
    engine.load(path)
    state = engine.reset()
    for command in state["admissible_commands"][:5]:
        engine.step(command)
    with pytest.raises(AssertionError, match="TextWorld lock"):
        TextWorldEngine().load(path)
