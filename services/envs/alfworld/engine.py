"""ALFWorld's two engines behind one interface: the real one (TextWorld's PDDL environment with
ALFWorld's wrappers), made cheap to reuse, and the native one (`native.py`), which plays the same game
files to the same texts without TextWorld. Both take `load(gamefile)`, `reset(plan)` and `step(command)`
and answer with the fields the service reads (`feedback`, `admissible_commands`, `won`).

The rest of this note is about the real engine.

Resetting a game costs seconds on a large kitchen: parsing the domain and grammar, and translating the
PDDL problem to SAS twice. Three things make that cost paid once:

- a `TextWorldEngine` (one PDDL environment with its own copy of the fast-downward library) is reused
  across episodes, and an engine that has loaded a game keeps its parsed logic for it;
- the parsed grammar (`GameLogic`) of a game is shared by every engine that loads it;
- the PDDL-to-SAS translation, a pure function of the domain and problem texts, is memoised
  (bounded); it is also serialised, since fast-downward's translator keeps global options;
- the `TextWorldPool` hands an idle engine that already holds the wanted game first.

The pool is bounded (see `TextWorldPool`).

TextWorld is not thread-safe: it parses grammar conditions with one module-level tatsu parser, and
two engines stepping in two threads corrupt it. Every TextWorld engine call therefore holds one
process-wide lock, and a replica on the `textworld` backend runs one ALFWorld operation at a time. The
native engine takes no lock: its episodes step in every simulator thread at once.
"""

from __future__ import annotations

import copy
import functools
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import fast_downward
import textworld
from alfworld.agents.environment.alfred_tw_env import AlfredDemangler, AlfredInfos
from textworld import logic as textworld_logic
from textworld.envs.pddl import PddlEnv, textgen
from textworld.envs.pddl import logic as pddl_logic

from services.envs.alfworld.native import NativeEpisode, NativeGame
from services.envs.base import EnvBusy

_engine_lock = threading.RLock()
_translate_lock = threading.Lock()
_translate = fast_downward.pddl2sas


@functools.lru_cache(maxsize=256)
def _memoised_translate(domain: str, problem: str, verbose: bool = False, optimize: bool = False) -> Any:
    with _translate_lock:
        return _translate(domain, problem, verbose=verbose, optimize=optimize)


def _translate_once(domain: str, problem: str, verbose: bool = False, optimize: bool = False) -> Any:
    return _memoised_translate(domain, problem, verbose, optimize)


# TextWorld's PddlState calls `fast_downward.pddl2sas` by attribute at every reset; route it through
# the memo. The result is only read by PddlState, never mutated.
fast_downward.pddl2sas = _translate_once

# PddlEnv.load builds `pddl_logic.GameLogic(domain=..., grammar=...)`, parsing the grammar with tatsu,
# for every engine that loads a game. The same texts give the same logic, and engines only read it
# (under `_engine_lock`), so engines that load one game share one parse.
pddl_logic.GameLogic = functools.lru_cache(maxsize=64)(pddl_logic.GameLogic)


# Every step derives each admissible command's text and the feedback through TextWorld's grammar, and
# each derivation parses with tatsu: the command template (`ContextSensitiveGrammar.derive`) and every
# production rule's condition (`Rule.parse_conjunctive_query`, in `replace`), again and again for the
# same strings. Both parses are pure functions of their text: the condition's Rule is only read
# (`State.all_assignments`), and a derivation's symbols, which `derive` mutates, are a fresh deep copy
# of the memoised parse each time. The golden transcripts hold with the memo
# (`tests/service/test_alfworld.py`); `BENCHMARKS.md` has the step time with and without it.
_parse_symbols = textgen._parse_and_convert
_parse_query = textworld_logic.Rule.parse_conjunctive_query
_own_query = textworld_logic.Rule.__dict__["parse_conjunctive_query"]  # the classmethod itself, to restore


@functools.lru_cache(maxsize=4096)
def _symbols(text: str) -> Any:
    return _parse_symbols(text, rule_name="symbols")


@functools.lru_cache(maxsize=4096)
def _query(text: str) -> Any:
    return _parse_query(text)


def _symbols_once(text: str, rule_name: str = "", **kwargs: Any) -> Any:
    if rule_name != "symbols" or kwargs.get("trace"):
        return _parse_symbols(text, rule_name=rule_name, **kwargs)
    return copy.deepcopy(_symbols(text))


def memoise_grammar(on: bool = True) -> None:
    """Memoise TextWorld's grammar parses (the default), or restore its own (for measuring)."""
    textgen._parse_and_convert = _symbols_once if on else _parse_symbols
    setattr(textworld_logic.Rule, "parse_conjunctive_query", staticmethod(_query) if on else _own_query)  # noqa: B010


memoise_grammar()


def clear_memos() -> None:
    """Forget shared parses and translations (for measuring a cold start)."""
    _memoised_translate.cache_clear()
    pddl_logic.GameLogic.cache_clear()
    _symbols.cache_clear()
    _query.cache_clear()


class TextWorldEngine:
    """One reusable ALFWorld game engine; not thread-safe (one episode at a time).

    With `facts`, every state carries the game's facts (what ALFWorld's hand-coded expert reads).
    """

    def __init__(self, facts: bool = False) -> None:
        self.infos = textworld.EnvInfos(won=True, admissible_commands=True, facts=facts, extras=["gamefile"])
        self._pddl = PddlEnv(self.infos)
        self._env = AlfredInfos(AlfredDemangler(shuffle=False)(self._pddl))
        self.gamefile: Path | None = None

    def load(self, gamefile: Path) -> None:
        if self.gamefile != gamefile:
            self.gamefile = None
            with _engine_lock:
                self._env.load(str(gamefile))
            self.gamefile = gamefile

    def reset(self, plan: bool = False) -> textworld.GameState:
        """Start the loaded game over; with `plan`, also ask TextWorld's planner for a plan."""
        with _engine_lock:
            self.infos.policy_commands = plan
            try:
                return self._env.reset()
            finally:
                self.infos.policy_commands = False

    def step(self, command: str) -> tuple[textworld.GameState, float, bool]:
        with _engine_lock:
            state, score, done = self._env.step(command)
        return state, float(score), bool(done)


class TextWorldPool:
    """A bounded set of engines; an idle engine that already holds the wanted game is preferred.

    Engines are never unloaded: fast-downward's library registers exit handlers, so unloading a copy
    while the process lives crashes it at exit. The pool therefore creates at most `max_engines`, and
    `acquire` waits (up to `wait_s`) for one to be released beyond that.
    """

    def __init__(self, max_engines: int = 64, wait_s: float = 120.0, facts: bool = False) -> None:
        self.max_engines = max_engines
        self.facts = facts
        self.wait_s = wait_s
        self._idle: OrderedDict[int, TextWorldEngine] = OrderedDict()
        self._available = threading.Condition()
        self.created = 0

    def acquire(self, gamefile: Path) -> TextWorldEngine:
        deadline = time.monotonic() + self.wait_s
        with self._available:
            while True:
                match = next((key for key, e in reversed(self._idle.items()) if e.gamefile == gamefile), None)
                if match is not None:
                    return self._idle.pop(match)
                if self._idle:
                    return self._idle.popitem(last=False)[1]
                if self.created < self.max_engines:
                    self.created += 1
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._available.wait(remaining):
                    raise EnvBusy(f"all {self.max_engines} ALFWorld engines are in use; retry later")
        return TextWorldEngine(facts=self.facts)

    def release(self, engine: TextWorldEngine) -> None:
        with self._available:
            self._idle[id(engine)] = engine
            self._available.notify()


class Frame(dict[str, Any]):
    """The native engine's answer, shaped as the `textworld.GameState` fields the service reads."""

    def __init__(self, feedback: str, admissible: list[str], won: bool) -> None:
        super().__init__(admissible_commands=admissible, won=won)
        self.feedback = feedback


_planners = TextWorldPool(max_engines=2)  # each TextWorld engine holds a fast-downward library for good


@functools.lru_cache(maxsize=1024)
def planned_commands(gamefile: Path) -> tuple[str, ...]:
    """TextWorld's planner's commands for a game without a walkthrough, worked out once per game
    (the native engine has no planner; generated games always carry a walkthrough)."""
    engine = _planners.acquire(gamefile)
    try:
        engine.load(gamefile)
        return tuple(engine.reset(plan=True).get("policy_commands") or ())
    finally:
        _planners.release(engine)


class NativeEngine:
    """The native engine for one episode at a time; engines share nothing mutable, so there is no lock
    and any number of them step at once."""

    def __init__(self) -> None:
        self.gamefile: Path | None = None
        self._episode: NativeEpisode | None = None

    def load(self, gamefile: Path) -> None:
        if self.gamefile != gamefile:
            self._episode = NativeEpisode(NativeGame.load(gamefile))
            self.gamefile = gamefile

    def reset(self, plan: bool = False) -> Frame:
        assert self._episode is not None and self.gamefile is not None, "load() first"
        feedback, admissible = self._episode.reset()
        frame = Frame(feedback, admissible, self._episode.won())
        if plan:
            frame["policy_commands"] = list(planned_commands(self.gamefile))
        return frame

    def step(self, command: str) -> tuple[Frame, float, bool]:
        assert self._episode is not None, "load() first"
        feedback, admissible, won = self._episode.step(command)
        return Frame(feedback, admissible, won), float(won), won


class NativePool:
    """Native engines cost a few kilobytes and no set-up: a fresh one per simulator."""

    def acquire(self, gamefile: Path) -> NativeEngine:
        return NativeEngine()

    def release(self, engine: NativeEngine) -> None:
        pass


Engine = TextWorldEngine | NativeEngine
Pool = TextWorldPool | NativePool
