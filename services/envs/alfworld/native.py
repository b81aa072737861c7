"""The native ALFWorld engine: a game file's PDDL and grammar played directly, without TextWorld.

It reads what TextWorld's `PddlEnv` reads (`game.tw-pddl`: `pddl_domain`, `pddl_problem`, `grammar`)
and answers what it answers, to the character: the same intro and feedback texts, the same
admissible commands, `won` and `done`. The differential suite (`tests/service/test_alfworld_native.py`,
and the `sweep` marker) holds it to the real engine step by step. How it does the same thing:

- **Dynamics** are the PDDL domain's, read from the file: an action's groundings are the bindings that
  satisfy its precondition in the current state (FD's applicable operators, the disjunctions split
  as FD splits them), found by a join over indexed facts; a grounding whose effects only restate its
  precondition is dropped, as FD's translator drops it. Effects apply with PDDL's delete-then-add
  semantics, conditional effects evaluated in the state before the step.
- **The facts the grammar sees** are TextWorld's: it records each effect atom of the operator FD
  applied, fired or not, adds first, as `p(x)` (dropping `not_p(x)`) or `not_p(x)` (dropping `p(x)`).
  So predicates a conditional effect touches keep that record beside the true state (a lamp reads
  `not_ison` after `use`), and a delete FD has dropped (of an atom no action can make true, or one
  the precondition requires false) leaves no `not_` fact. Only the `not_` predicates the grammar
  queries are kept (`not_inreceptacle`, for what lies on the floor).
- **Texts** come from the file's grammar (`alfred.twl2` and its 2.1.1 twin, or any file in that
  format): a context-sensitive grammar whose rules are chosen by the first condition that holds,
  with `{...}` evaluations, `{x | query}` expansions over query answers in sorted-fact order, and
  `[...]` lists. Its symbols are parsed here with the same rules (and quirks) as TextWorld's parser.
- **Names** are ALFWorld's demangled ones (`cabinet 3`): ids sorted, numbers handed out from the end.
- **Memos** (per game, of pure results): the commands an action offers, on the fluent facts its
  precondition reads; a grounding's command text, on the parameters its template reads; the goal's
  answer; the state, intro and commands of a reset.

A game's parse (`NativeGame`) is shared by every episode of it and changes only by its memos; an
episode (`NativeEpisode`) owns only its facts. Nothing is locked: episodes of one game or of many run
in as many threads as the caller likes.
"""

from __future__ import annotations

import functools
import json
import re
import textwrap
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NATIVE_VERSION = "1"  # bump on any change to what the engine answers: episode records carry it
NOTHING_HAPPENS = "Nothing happens."
# Memos per game (commands a state offers, a grounding's text, the goal's answer): ~500 bytes an entry,
# so at most ~8 MiB a game, and the last GAMES_KEPT games parsed are kept: ~1 GiB at the very worst.
MEMO_SIZE = 16_384
GAMES_KEPT = 128

# ---------------------------------------------------------------------------------------------- PDDL

Term = str  # `?x` (a variable) or an object name
Atom = tuple[str, tuple[Term, ...]]
Formula = tuple[
    Any, ...
]  # ("atom", pred, args) | ("not", f) | ("and", fs) | ("or", fs) | ("exists", vars, f) | ("eq", a, b) | ("true",)


def _sexp(text: str) -> list[Any]:
    """The nested lists of a PDDL text, lowercased as Fast Downward reads it; `;` starts a comment."""
    text = re.sub(r";[^\n]*", "", text).lower()
    stack: list[list[Any]] = [[]]
    for token in re.findall(r"[()]|[^\s()]+", text):
        if token == "(":
            stack.append([])
        elif token == ")":
            if len(stack) == 1:
                break  # a stray closing parenthesis ends the document (as the generator's goals have)
            done = stack.pop()
            stack[-1].append(done)
        else:
            stack[-1].append(token)
    if len(stack) != 1:
        raise ValueError("unbalanced parentheses in the PDDL text")
    return stack[0]


def _typed(items: list[str]) -> list[tuple[str, str]]:
    """`a b - t c - u d` as `[(a, t), (b, t), (c, u), (d, object)]`."""
    out: list[tuple[str, str]] = []
    pending: list[str] = []
    i = 0
    while i < len(items):
        if items[i] == "-":
            kind = items[i + 1]
            out += [(name, kind) for name in pending]
            pending = []
            i += 2
        else:
            pending.append(items[i])
            i += 1
    return out + [(name, "object") for name in pending]


class _Renamer:
    """Gives every quantified variable a name of its own, so nested scopes never clash."""

    def __init__(self) -> None:
        self.count = 0

    def formula(self, node: Any, scope: dict[str, str], types: dict[str, str]) -> Formula:
        if not node:
            return ("true",)
        head = node[0]
        if head == "and":
            return ("and", tuple(self.formula(child, scope, types) for child in node[1:]))
        if head == "or":
            return ("or", tuple(self.formula(child, scope, types) for child in node[1:]))
        if head == "not":
            return ("not", self.formula(node[1], scope, types))
        if head == "=":
            return ("eq", scope.get(node[1], node[1]), scope.get(node[2], node[2]))
        if head in ("exists", "forall"):
            inner = dict(scope)
            names = []
            for name, kind in _typed(node[1]):
                self.count += 1
                inner[name] = unique = f"{name}#{self.count}"
                types[unique] = kind
                names.append(unique)
            body = self.formula(node[2], inner, types)
            return (head, tuple(names), body)
        if head in ("imply",):
            return ("or", (("not", self.formula(node[1], scope, types)), self.formula(node[2], scope, types)))
        return ("atom", head, tuple(scope.get(arg, arg) for arg in node[1:]))


@dataclass(frozen=True)
class Effect:
    condition: Formula | None
    positive: bool
    atom: Atom


Binding = dict[str, str]


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: one per parsed domain
class ActionSchema:
    name: str
    parameters: tuple[tuple[str, str], ...]  # (`?x`, type)
    precondition: Formula
    effects: tuple[Effect, ...]
    types: dict[str, str]  # every variable's type: parameters and quantified ones

    def changes_nothing(self, b: Binding) -> bool:
        """Whether every effect of this grounding only restates its precondition: Fast Downward's
        translator drops such an operator (going to a receptacle at the agent's own location)."""
        checks = _restatements(self)
        if checks is None:
            return False
        adds = None
        for effect, candidates in checks:  # adds first (see `_restatements`): most groundings fail there
            atom = _ground(effect.atom, b)
            if any(atom == _ground(c, b) for c in candidates):
                continue
            if effect.positive:
                return False
            if adds is None:
                adds = {_ground(e.atom, b) for e in self.effects if e.positive}
            if atom not in adds:
                return False
        return True


@functools.lru_cache(maxsize=1024)
def _restatements(action: ActionSchema) -> tuple[tuple[Effect, tuple[Atom, ...]], ...] | None:
    """Per effect, the precondition's atoms it could restate (an add, one required true; a delete, one
    required false); None when some effect can restate none, or is conditional: then no grounding of
    the action is a no-op."""
    if any(e.condition is not None for e in action.effects):
        return None
    true, false = _required(action.precondition)
    added = {e.atom[0] for e in action.effects if e.positive}
    out = []
    for e in action.effects:
        candidates = tuple(a for a in (true if e.positive else false) if a[0] == e.atom[0])
        if not candidates and (e.positive or e.atom[0] not in added):
            return None
        out.append((e, candidates))
    return tuple(sorted(out, key=lambda pair: not pair[0].positive))


def _ground(atom: Atom, b: Binding) -> Atom:
    return atom[0], tuple([b.get(a, a) for a in atom[1]])


@functools.lru_cache(maxsize=1024)
def _required(f: Formula) -> tuple[frozenset[Atom], frozenset[Atom]]:
    """The atoms a formula requires true, and false, as top-level conjuncts."""
    true: set[Atom] = set()
    false: set[Atom] = set()
    todo = [f]
    while todo:
        f = todo.pop()
        if f[0] == "and":
            todo += f[1]
        elif f[0] == "atom":
            true.add((f[1], f[2]))
        elif f[0] == "not" and f[1][0] == "atom":
            false.add((f[1][1], f[1][2]))
    return frozenset(true), frozenset(false)


def _effects(node: Any, condition: Formula | None, renamer: _Renamer, types: dict[str, str]) -> list[Effect]:
    if not node:
        return []
    head = node[0]
    if head == "and":
        return [e for child in node[1:] for e in _effects(child, condition, renamer, types)]
    if head == "when":
        when = renamer.formula(node[1], {}, types)
        both = when if condition is None else ("and", (condition, when))
        return _effects(node[2], both, renamer, types)
    if head in ("increase", "decrease", "assign"):
        return []  # action costs do not change the state
    if head == "not":
        inner = node[1]
        return [Effect(condition, False, (inner[0], tuple(inner[1:])))]
    if head == "forall":
        raise NotImplementedError("universal effects are not supported by the native engine")
    return [Effect(condition, True, (head, tuple(node[1:])))]


def parse_domain(text: str) -> tuple[dict[str, str], list[ActionSchema], list[tuple[str, str]]]:
    """The domain's types (child -> parent), actions and constants."""
    define = _sexp(text)[0]
    parents: dict[str, str] = {}
    actions: list[ActionSchema] = []
    constants: list[tuple[str, str]] = []
    for section in define[2:]:
        key = section[0]
        if key == ":types":
            parents.update({name: parent for name, parent in _typed(section[1:]) if name != "object"})
        elif key == ":constants":
            constants += _typed(section[1:])
        elif key == ":action":
            fields = dict(zip(section[2::2], section[3::2], strict=False))
            parameters = tuple(_typed(fields.get(":parameters", [])))
            types = dict(parameters)
            renamer = _Renamer()
            precondition = renamer.formula(fields.get(":precondition", []), {}, types)
            effects = tuple(_effects(fields.get(":effect", []), None, renamer, types))
            actions.append(ActionSchema(section[1], parameters, precondition, effects, types))
    return parents, actions, constants


def parse_problem(text: str) -> tuple[list[tuple[str, str]], list[Atom], Formula, dict[str, str]]:
    """The problem's objects, initial atoms and goal (with its variables' types)."""
    define = _sexp(text)[0]
    objects: list[tuple[str, str]] = []
    init: list[Atom] = []
    goal: Formula = ("true",)
    goal_types: dict[str, str] = {}
    for section in define[2:]:
        key = section[0]
        if key == ":objects":
            objects += _typed(section[1:])
        elif key == ":init":
            for atom in section[1:]:
                if atom and atom[0] != "=":  # numeric fluents (costs, distances) are not facts
                    init.append((atom[0], tuple(atom[1:])))
        elif key == ":goal":
            goal = _Renamer().formula(section[1], {}, goal_types)
    return objects, init, goal, goal_types


# ------------------------------------------------------------------------------------------- grammar


@dataclass(frozen=True)
class Terminal:
    text: str


@dataclass(frozen=True)
class Nonterminal:
    name: str


@dataclass(frozen=True)
class Evaluation:
    source: str
    code: Any = None  # the compiled expression

    def __post_init__(self) -> None:
        object.__setattr__(self, "code", _compile(self.source))


@dataclass(frozen=True)
class Conditional:
    expression: Nonterminal | Evaluation
    given_text: str | None  # as written

    @functools.cached_property
    def given(self) -> Query | None:
        return None if self.given_text is None else parse_query(self.given_text)


@dataclass(frozen=True)
class ListOf:
    item: Conditional


Symbol = Terminal | Nonterminal | Evaluation | Conditional | ListOf
Query = tuple[tuple[str, tuple[tuple[str, str], ...]], ...]  # ((predicate, ((name, type), ...)), ...)

_TAG = re.compile(r"[\w()/!<>\-\s,.]+")
_GIVEN = re.compile(r"[^;|{}\n\[\]#]+")
_STATEMENT = re.compile(r"[^|\[\]{}\n<>]+")
_LITERAL = re.compile(r'[^;|"<>\[\]#{}]*')
_BAR = re.compile(r"\s*\|\s*")
_TABS = re.compile(r"[\t]+")
_COMMENT = re.compile(r"(//.*|\s*)\n?")
_PREDICATE = re.compile(r"\s*(!?[\w/]+)\s*\(([^()]*)\)\s*")


@functools.lru_cache(maxsize=4096)
def parse_query(text: str) -> Query:
    """`p(x:t, y:u) & !q(x)` as its predicates and typed placeholders, as TextWorld reads a query:
    `!p` is `not_p`; an untyped placeholder takes the type it was given earlier, else its own name."""
    out = []
    types: dict[str, str] = {}
    for part in text.split("&"):
        match = _PREDICATE.fullmatch(part)
        if match is None:
            raise ValueError(f"cannot parse the grammar condition {text!r}")
        params = []
        for item in match.group(2).split(","):
            if item.strip():
                name, _, kind = (x.strip() for x in item.partition(":"))
                kind = kind or types.get(name, name)
                if types.setdefault(name, kind) != kind:
                    raise ValueError(f"{name!r} has two types in the grammar condition {text!r}")
                params.append((name, kind))
        pred = match.group(1)
        out.append(("not_" + pred[1:] if pred.startswith("!") else pred, tuple(params)))
    return tuple(out)


class _SymbolParser:
    """TextWorld's `symbols` rule (`textgen.ebnf`), quirks included: leading blanks of the text and
    tabs before a token are skipped, and parsing stops silently at the first text it cannot read."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def skip(self) -> None:
        while True:
            start = self.pos
            match = _TABS.match(self.text, self.pos)
            if match:
                self.pos = match.end()
            if self.pos == 0 or self.text[self.pos - 1] == "\n":
                match = _COMMENT.match(self.text, self.pos)
                if match and match.end() > self.pos:
                    self.pos = match.end()
            if self.pos == start:
                return

    def token(self, literal: str) -> bool:
        self.skip()
        if self.text.startswith(literal, self.pos):
            self.pos += len(literal)
            return True
        return False

    def pattern(self, regex: re.Pattern[str]) -> str | None:
        self.skip()
        match = regex.match(self.text, self.pos)
        if match is None:
            return None
        self.pos = match.end()
        return match.group(0)

    def symbols(self) -> list[Symbol]:
        out: list[Symbol] = []
        while True:
            start = self.pos
            symbol = self.symbol()
            if symbol is None or self.pos == start:
                if symbol is not None and isinstance(symbol, Terminal) and symbol.text:
                    out.append(symbol)
                return out
            out.append(symbol)

    def symbol(self) -> Symbol | None:
        for parse in (self.list_of, self.conditional, self.nonterminal, self.terminal):
            start = self.pos
            symbol = parse()
            if symbol is not None:
                return symbol
            self.pos = start
        return None

    def list_of(self) -> ListOf | None:
        if not self.token("["):
            return None
        item = self.conditional()
        if item is None or not self.token("]"):
            return None
        return ListOf(item)

    def conditional(self) -> Conditional | None:
        if not self.token("{"):
            return None
        start = self.pos
        expression: Nonterminal | Evaluation | None = self.nonterminal()
        if expression is None:
            self.pos = start
            statement = self.pattern(_STATEMENT)
            if statement is None:
                return None
            expression = Evaluation(statement)
        given = None
        start = self.pos
        if self.pattern(_BAR) is not None:
            given = self.pattern(_GIVEN)
            if given is None:
                self.pos = start
        if not self.token("}"):
            return None
        return Conditional(expression, given)

    def nonterminal(self) -> Nonterminal | None:
        if not self.token("#"):
            return None
        tag = self.pattern(_TAG)
        if tag is None or not self.token("#"):
            return None
        return Nonterminal(tag)

    def terminal(self) -> Terminal | None:
        start = self.pos
        if self.token('"'):
            text = self.pattern(_LITERAL)
            if text is not None and self.token('"'):
                return Terminal(text)
            self.pos = start
        text = self.pattern(_LITERAL)
        return Terminal(text or "")


@functools.lru_cache(maxsize=4096)
def _compile(statement: str) -> Any:
    return compile(statement.strip(), "<grammar>", "eval")


@functools.lru_cache(maxsize=4096)
def parse_symbols(text: str) -> tuple[Symbol, ...]:
    return tuple(_SymbolParser(text).symbols())


@dataclass(frozen=True)
class Rule:
    condition: Query | None
    rhs: tuple[Symbol, ...]


@dataclass(frozen=True)
class ActionText:
    template: tuple[Symbol, ...]
    feedback: tuple[Symbol, ...]


_DOC_TOKEN = re.compile(r'\s+|#[^\n]*|"""(?:.|\n)*?"""|"[^"]*"|::|[{};]|[\w/-]+')


def parse_grammar(text: str) -> tuple[dict[str, list[Rule]], dict[str, ActionText]]:
    """A `.twl2` document: its production rules by name, and each action's command template and
    feedback rule (by the action's lowercased name)."""
    try:
        return _read_grammar(text)
    except (IndexError, KeyError, TypeError, AttributeError, json.JSONDecodeError) as e:
        raise ValueError(f"the game's grammar is malformed ({type(e).__name__}: {e})") from None


def _read_grammar(text: str) -> tuple[dict[str, list[Rule]], dict[str, ActionText]]:
    tokens = [t for t in _DOC_TOKEN.findall(text) if t.strip() and not t.startswith("#")]
    rules: dict[str, list[Rule]] = {}
    actions: dict[str, ActionText] = {}
    i = 0

    def block(token: str) -> str:
        if not token.startswith('"""'):
            raise ValueError(f"expected a triple-quoted block in the grammar, got {token[:20]!r}")
        return textwrap.dedent(token[3:-3])

    merged: dict[str, Any] = {}
    while i < len(tokens):
        if tokens[i] == "grammar" and tokens[i + 1] == "::":
            merged.update(json.loads(block(tokens[i + 2])))
            i += 4
        elif tokens[i] == "action":
            name = tokens[i + 1]
            fields: dict[str, str] = {}
            i += 3  # action NAME {
            while tokens[i] != "}":
                fields[tokens[i]] = tokens[i + 2]
                i += 4  # key :: value ;
            i += 1
            template = fields.get("template", '""')[1:-1]
            feedback = fields.get("feedback", '""')[1:-1]
            actions[name.lower()] = ActionText(parse_symbols(template), parse_symbols(feedback))
            if "grammar" in fields:
                lines = block(fields["grammar"]).split("\n")
                merged.update(json.loads("\n".join(line for line in lines if not line.lstrip().startswith("#"))))
        else:
            raise ValueError(f"unexpected {tokens[i]!r} in the grammar")
    for name, items in merged.items():
        rules[name] = [
            Rule(parse_query(item["condition"]) if item.get("condition") else None, parse_symbols(item["rhs"]))
            for item in items
        ]
    return rules, actions


# ------------------------------------------------------------------------------------------ the game


class Entity:
    """What a grammar's `{...}` sees of a game object (TextWorld's `EntityInfo` fields it uses)."""

    __slots__ = ("adj", "definite", "desc", "id", "indefinite", "name", "noun", "room_type", "synonyms", "type")

    def __init__(self, id: str, type: str, name: str) -> None:
        self.id = id
        self.type = type
        self.name = name
        self.definite = "the"
        self.indefinite = "a"
        self.adj = self.noun = self.desc = self.room_type = self.synonyms = None  # unset, as TextWorld leaves them

    def __str__(self) -> str:
        return self.name


def demangled_names(ids: list[str]) -> dict[str, str]:
    """ALFWorld's display names (`alfworld.agents.utils.misc.Demangler`, unshuffled): `type n`, where
    the alphabetically first id of a type gets the highest n; `basin` ids keep `basin` in the name."""
    ids = sorted(ids)
    count: Counter[str] = Counter()
    for id_ in ids:
        name, sep, _ = id_.partition("_bar_")
        if sep:
            count[name + ("basin" if "basin" in id_ else "")] += 1
    numbers = {name: list(range(1, n + 1)) for name, n in count.items()}
    out = {}
    for id_ in ids:
        text = id_.replace("_bar_", "|").replace("_minus_", "-").replace("_plus_", "+")
        text = text.replace("_dot_", ".").replace("_comma_", ",")
        name, sep, _ = text.partition("|")
        if not sep:
            out[id_] = f"{text} "
        else:
            name += "basin" if "basin" in id_ else ""
            out[id_] = f"{name} {numbers[name].pop()}"
    return out


Row = tuple[str, ...]
Literal = tuple[bool, str, tuple[Term, ...]]  # (positive, predicate or "=", terms)


def dnf(f: Formula) -> list[tuple[Literal, ...]]:
    """A formula as a disjunction of conjunctions of literals (Fast Downward splits disjunctions the
    same way); quantified variables stay as variables of the conjunction."""
    kind = f[0]
    if kind == "true":
        return [()]
    if kind in ("atom", "eq"):
        return [(_literal(f, True),)]
    if kind == "and":
        out: list[tuple[Literal, ...]] = [()]
        for child in f[1]:
            out = [a + b for a in out for b in dnf(child)]
        return out
    if kind == "or":
        return [c for child in f[1] for c in dnf(child)]
    if kind == "exists":
        return dnf(f[2])
    if kind == "not":
        inner = f[1]
        if inner[0] in ("atom", "eq"):
            return [(_literal(inner, False),)]
        if inner[0] == "not":
            return dnf(inner[1])
        if inner[0] == "and":
            return dnf(("or", tuple(("not", c) for c in inner[1])))
        if inner[0] == "or":
            return dnf(("and", tuple(("not", c) for c in inner[1])))
        if inner[0] == "true":
            return []
    if kind == "not":
        kind = f"not ({f[1][0]} ...)"
    raise NotImplementedError(f"the native engine does not support `{kind}` in a condition")


def _relax(conjunction: tuple[Literal, ...]) -> tuple[Literal, ...]:
    return tuple(lit for lit in conjunction if lit[0] or lit[1] == "=")


def _literal(f: Formula, positive: bool) -> Literal:
    return (positive, f[1], f[2]) if f[0] == "atom" else (positive, "=", (f[1], f[2]))


def _is_var(term: str) -> bool:
    return term.startswith("?")


@dataclass(frozen=True)
class _Step:
    """One literal of a compiled conjunction, with what is known bound when it runs.

    `key`: the position looked up in the index (-1: scan every row); `binds`: (position, variable,
    type to check or None) for variables this step binds; `checks`: (position, term) that must equal
    an already-bound value or a constant; `ranges`: variables to range over their type first."""

    positive: bool
    pred: str
    terms: tuple[Term, ...]
    ground: bool
    key: int
    binds: tuple[tuple[int, str, str | None], ...]
    checks: tuple[tuple[int, Term], ...]
    ranges: tuple[tuple[str, str], ...] = ()


def _rank(lit: Literal, bound: set[str], size: dict[str, int]) -> tuple[int, int, int]:
    """Tests first (nothing left to bind), then positive atoms by bound terms and smallest relation."""
    free = [t for t in lit[2] if _is_var(t) and t not in bound]
    if not free:
        return (2, 0, 0)
    if lit[0] and lit[1] != "=":
        return (1, len(lit[2]) - len(free), -size.get(lit[1], 1))
    return (0, 0, 0)


def _compile_plan(
    literals: tuple[Literal, ...], bound: set[str], types: dict[str, str], size: dict[str, int]
) -> tuple[_Step, ...]:
    """Order a conjunction for a join: tests as soon as their variables are bound, else the positive
    atom with most bound terms over the smallest relation; negations and equalities with variables
    still free at the end range over their types."""
    bound = set(bound)
    todo = list(literals)
    steps = []
    while todo:
        best = max(todo, key=lambda lit: _rank(lit, bound, size))
        todo.remove(best)
        positive, pred, terms = best
        free = list(dict.fromkeys(t for t in terms if _is_var(t) and t not in bound))
        if not positive or pred == "=":  # a test; range over what is still free first
            ranges = tuple((v, types.get(v, "object")) for v in free)
            bound |= set(free)
            steps.append(_Step(positive, pred, terms, True, -1, (), (), ranges))
            continue
        if not free:
            steps.append(_Step(positive, pred, terms, True, -1, (), ()))
            continue
        key = next((i for i, t in enumerate(terms) if not _is_var(t) or t in bound), -1)
        binds, checks, seen = [], [], set()
        for i, t in enumerate(terms):
            if _is_var(t) and t not in bound and t not in seen:
                seen.add(t)
                kind = types.get(t, "object")
                binds.append((i, t, None if kind == "object" else kind))
            elif i != key:
                checks.append((i, t))
        bound |= seen
        steps.append(_Step(True, pred, terms, False, key, tuple(binds), tuple(checks)))
    return tuple(steps)


class _Found(Exception):
    pass


_MISSING = object()
_EVAL_GLOBALS: dict[str, Any] = {"__builtins__": __builtins__}


class NativeGame:
    """One game file, parsed and compiled once: its logic, grammar, objects, names and the facts no
    action changes (indexed). Immutable apart from memos of pure results; shared by all episodes."""

    def __init__(self, data: dict[str, Any]) -> None:
        parents, self.actions, constants = parse_domain(data["pddl_domain"])
        objects, init, goal, goal_types = parse_problem(data["pddl_problem"])
        self.rules, self.texts = parse_grammar(data["grammar"])
        self.type_of = dict(constants) | dict(objects)
        self.ancestors: dict[str, frozenset[str]] = {}
        for kind in set(self.type_of.values()) | set(parents) | {"object"}:
            chain = [kind]
            while chain[-1] in parents and chain[-1] != "object" and len(chain) < 64:
                chain.append(parents[chain[-1]])
            self.ancestors[kind] = frozenset(chain) | {"object"}
        self.by_type: dict[str, list[str]] = {}
        for name in sorted(self.type_of):
            for kind in self.ancestors[self.type_of[name]]:
                self.by_type.setdefault(kind, []).append(name)
        self.members = {kind: frozenset(names) for kind, names in self.by_type.items()}

        # Facts of predicates no effect touches never change: indexed here, once.
        self.fluent = {e.atom[0] for action in self.actions for e in action.effects}
        self.viewed = {e.atom[0] for action in self.actions for e in action.effects if e.condition is not None}
        # The `not_` facts TextWorld keeps matter only where the grammar queries them: only those are kept.
        self.negated_read = {
            pred[4:]
            for query in _grammar_queries(self.rules, self.texts)
            for pred, _ in query
            if pred.startswith("not_")
        }
        self.init = [(pred, args) for pred, args in init if pred in self.fluent]
        self.static_rows: dict[str, set[Row]] = {}
        self.static_index: dict[str, list[dict[str, set[Row]]]] = {}
        for pred, args in init:
            if pred not in self.fluent:
                _insert(self.static_rows, self.static_index, pred, args)
        size = Counter(pred for pred, _ in init)

        # Plans: each action's precondition, conditional effects and the goal, compiled for a join.
        self.plans = {
            a.name: [_compile_plan(c, set(), a.types, size) for c in dnf(a.precondition)] for a in self.actions
        }
        params = {a.name: {name for name, _ in a.parameters} for a in self.actions}
        self.bound_by_plans = {  # whether every plan of an action binds all its parameters
            a.name: all(
                params[a.name] <= {var for step in plan for _, var, _ in step.binds} for plan in self.plans[a.name]
            )
            for a in self.actions
        }
        self.effect_plans = {
            (a.name, i): [_compile_plan(c, params[a.name], a.types, size) for c in dnf(e.condition)]
            for a in self.actions
            for i, e in enumerate(a.effects)
            if e.condition is not None
        }
        self.goal = [_compile_plan(c, set(), goal_types, size) for c in dnf(goal)]
        # Relaxed (negative conditions dropped), for the atoms Fast Downward finds reachable.
        self.relaxed = {
            a.name: [_compile_plan(_relax(c), set(), a.types, size) for c in dnf(a.precondition)] for a in self.actions
        }
        self.relaxed_effects = {
            (a.name, i): [_compile_plan(_relax(c), params[a.name], a.types, size) for c in dnf(e.condition)]
            for a in self.actions
            for i, e in enumerate(a.effects)
            if e.condition is not None
        }

        # TextWorld names what appears in a fact; the problem's objects are those, in practice.
        entity_ids = sorted({arg for _, args in init for arg in args})
        names = demangled_names(entity_ids)
        self.entities = {id_: Entity(id_, self.type_of.get(id_, "object"), names[id_]) for id_ in entity_ids}
        self.names = {id_: entity.name for id_, entity in self.entities.items()}
        # A command's text depends on the state only through the fluent facts its template queries.
        self.static_template = {name: not _reads_fluents(text.template, self) for name, text in self.texts.items()}
        # A command's text depends on the parameters its template reads (not `go to`'s start).
        self.template_params = {
            a.name: tuple(p for p, _ in a.parameters if p[1:] in _template_names(self.texts[a.name].template))
            for a in self.actions
            if a.name in self.texts
        }
        self.reads = {name: _reads(plans, self.fluent) for name, plans in self.plans.items()}
        self.goal_reads = _reads(self.goal, self.fluent)
        self.memo: dict[Any, Any] = {}  # (action, the fluent facts it reads) -> its commands; the goal likewise
        self._sorted: dict[str, list[Row]] = {}  # memo: static facts in TextWorld's query order
        self._start: Any = None  # memo: the state, intro and commands a reset gives

    def is_a(self, obj: str, kind: str) -> bool:
        return obj in self.members.get(kind, ())

    @functools.cached_property
    def reachable(self) -> frozenset[tuple[str, Row]]:
        """Every fluent atom some sequence of actions could make true, as Fast Downward's relaxed
        exploration finds them (deletes and negative conditions ignored). Worked out once, when first
        needed."""
        scratch = NativeEpisode(self)
        known = set(self.init)
        for pred, args in self.init:
            _insert(scratch.rows, scratch.index, pred, args)
        grown = True
        while grown:
            grown = False
            for action in self.actions:
                found: list[Binding] = []
                for plan in self.relaxed[action.name]:
                    scratch._run(plan, 0, {}, found)
                for b in found:
                    free = [(name, kind) for name, kind in action.parameters if name not in b]
                    for full in scratch._complete(b, free):
                        for i, e in enumerate(action.effects):
                            if not e.positive or (
                                e.condition is not None and not scratch._any(self.relaxed_effects[action.name, i], full)
                            ):
                                continue
                            atom = _ground(e.atom, full)
                            if atom not in known:
                                known.add(atom)
                                _insert(scratch.rows, scratch.index, *atom)
                                grown = True
        return frozenset(known)

    def remember(self, key: Any, value: Any) -> None:
        if len(self.memo) >= MEMO_SIZE:
            self.memo.clear()  # rare: a long game's states outgrow it; start over
        self.memo[key] = value

    def sorted_rows(self, pred: str) -> list[Row]:
        rows = self._sorted.get(pred)
        if rows is None:
            self._sorted[pred] = rows = sorted(self.static_rows.get(pred, ()))
        return rows

    @classmethod
    def load(cls, gamefile: Path) -> NativeGame:
        return _load_game(str(gamefile), gamefile.stat().st_mtime_ns)


def _grammar_queries(rules: dict[str, list[Rule]], texts: dict[str, ActionText]) -> Iterator[Query]:
    """Every condition and `{... | query}` of a grammar."""
    symbols: list[Symbol] = []
    for items in rules.values():
        for rule in items:
            if rule.condition is not None:
                yield rule.condition
            symbols += rule.rhs
    for text in texts.values():
        symbols += text.template + text.feedback
    for symbol in symbols:
        item = symbol.item if isinstance(symbol, ListOf) else symbol
        if isinstance(item, Conditional) and item.given is not None:
            yield item.given


def _reads(plans: list[tuple[_Step, ...]], fluent: set[str]) -> tuple[str, ...]:
    return tuple(sorted({step.pred for plan in plans for step in plan if step.pred in fluent}))


def _reads_fluents(symbols: tuple[Symbol, ...], game: NativeGame) -> bool:
    for symbol in symbols:
        if isinstance(symbol, Nonterminal):
            return True  # rules have conditions; be safe
        if isinstance(symbol, ListOf):
            symbol = symbol.item
        if isinstance(symbol, Conditional):
            if isinstance(symbol.expression, Nonterminal):
                return True
            if symbol.given and any(pred in game.fluent or pred.startswith("not_") for pred, _ in symbol.given):
                return True
    return False


def _template_names(symbols: tuple[Symbol, ...]) -> set[str]:
    """Every name a template's evaluations and queries mention (a superset of the placeholders it
    reads: attribute names come along)."""
    names: set[str] = set()
    for symbol in symbols:
        item = symbol.item if isinstance(symbol, ListOf) else symbol
        if isinstance(item, Conditional):
            if isinstance(item.expression, Evaluation):
                names |= set(item.expression.code.co_names)
            for _, params in item.given or ():
                names |= {name for name, _ in params}
    return names


def _insert(rows: dict[str, set[Row]], index: dict[str, list[dict[str, set[Row]]]], pred: str, args: Row) -> None:
    table = rows.setdefault(pred, set())
    if args in table:
        return
    table.add(args)
    positions = index.setdefault(pred, [{} for _ in args])
    for i, value in enumerate(args[: len(positions)]):
        positions[i].setdefault(value, set()).add(args)


def _remove(rows: dict[str, set[Row]], index: dict[str, list[dict[str, set[Row]]]], pred: str, args: Row) -> None:
    table = rows.get(pred)
    if table is None or args not in table:
        return
    table.discard(args)
    for i, value in enumerate(args[: len(index[pred])]):
        index[pred][i][value].discard(args)


def _copy_rows(rows: dict[str, set[Row]]) -> dict[str, set[Row]]:
    return {pred: set(table) for pred, table in rows.items()}


def _copy_index(index: dict[str, list[dict[str, set[Row]]]]) -> dict[str, list[dict[str, set[Row]]]]:
    return {pred: [{v: set(t) for v, t in pos.items()} for pos in positions] for pred, positions in index.items()}


@functools.lru_cache(maxsize=GAMES_KEPT)
def _load_game(path: str, mtime_ns: int) -> NativeGame:
    return NativeGame(json.loads(Path(path).read_text()))


# --------------------------------------------------------------------------------------- an episode

Mapping = dict[tuple[str, str], str]  # (placeholder name, type) -> object


class NativeEpisode:
    """One play of a `NativeGame`: its fluent facts (and TextWorld's `not_` facts), and the commands
    the last observation offered."""

    def __init__(self, game: NativeGame) -> None:
        self.game = game
        self.rows: dict[str, set[Row]] = {}
        self.index: dict[str, list[dict[str, set[Row]]]] = {}
        self.negated: dict[str, set[Row]] = {}
        self.commands: dict[str, tuple[ActionSchema, Binding]] = {}
        self.snapshots: dict[str, frozenset[Row]] = {}  # fluent facts by predicate, frozen when read
        self.view: dict[str, set[Row]] = {}  # TextWorld's record of predicates with conditional effects

    # -- facts
    def _rows(self, pred: str) -> set[Row]:
        if pred in self.game.fluent:
            return self.rows.get(pred, set())
        return self.game.static_rows.get(pred, set())

    def _lookup(self, pred: str, position: int, value: str) -> set[Row]:
        index = self.index if pred in self.game.fluent else self.game.static_index
        positions = index.get(pred)
        if positions is None or position >= len(positions):
            return set()
        return positions[position].get(value, set())

    # -- joins
    def _run(self, steps: tuple[_Step, ...], i: int, b: Binding, out: list[Binding] | None) -> None:
        """Extend `b` through `steps`; collect complete bindings in `out`, or raise `_Found` at the
        first one when `out` is None."""
        if i == len(steps):
            if out is None:
                raise _Found
            out.append(dict(b))
            return
        step = steps[i]
        if step.ground:
            if step.ranges:
                self._range(step, list(step.ranges), i, steps, b, out)
            elif self._test(step, b):
                self._run(steps, i + 1, b, out)
            return
        if step.key < 0:
            rows: Any = self._rows(step.pred)
        else:
            term = step.terms[step.key]
            rows = self._lookup(step.pred, step.key, b[term] if term[0] == "?" else term)
        members = self.game.members
        checks, binds, arity = step.checks, step.binds, len(step.terms)
        last = i + 1 == len(steps)
        for row in rows:
            if len(row) != arity:
                continue
            for pos, term in checks:
                if row[pos] != (b[term] if term[0] == "?" else term):
                    break
            else:
                for pos, _, kind in binds:
                    if kind is not None and row[pos] not in members.get(kind, ()):
                        break
                else:
                    for pos, var, _ in binds:
                        b[var] = row[pos]
                    if not last:
                        self._run(steps, i + 1, b, out)
                    elif out is None:
                        raise _Found
                    else:
                        out.append(dict(b))
        for _, var, _ in binds:
            b.pop(var, None)

    def _range(
        self,
        step: _Step,
        free: list[tuple[str, str]],
        i: int,
        steps: tuple[_Step, ...],
        b: Binding,
        out: list[Binding] | None,
    ) -> None:
        if not free:
            if self._test(step, b):
                self._run(steps, i + 1, b, out)
            return
        var, kind = free[0]
        for value in self.game.by_type.get(kind, []):
            b[var] = value
            self._range(step, free[1:], i, steps, b, out)
        b.pop(var, None)

    def _test(self, step: _Step, b: Binding) -> bool:
        values = tuple(b[t] if _is_var(t) else t for t in step.terms)
        if step.pred == "=":
            return (values[0] == values[1]) == step.positive
        return (values in self._rows(step.pred)) == step.positive

    def _any(self, plans: list[tuple[_Step, ...]], b: Binding) -> bool:
        for plan in plans:
            try:
                self._run(plan, 0, dict(b), None)
            except _Found:
                return True
        return False

    # -- the grammar
    def _answers(self, query: Query, mapping: Mapping) -> Iterator[Mapping]:
        """TextWorld's `State.all_assignments`: depth first over the query's predicates, each over its
        facts in sorted order; a placeholder never takes a value another one holds."""
        yield from self._match(query, 0, dict(mapping), set(mapping.values()))

    def _match(self, query: Query, depth: int, mapping: Mapping, used: set[str]) -> Iterator[Mapping]:
        if depth == len(query):
            yield dict(mapping)
            return
        pred, params = query[depth]
        key = next((i for i, ph in enumerate(params) if ph in mapping), -1)
        if pred.startswith("not_"):
            rows = sorted(self.negated.get(pred[4:], ()))
        elif pred in self.game.viewed:
            rows = sorted(self.view.get(pred, ()))
        elif key >= 0:  # the rows that agree with a bound placeholder, still in sorted order
            rows = sorted(self._lookup(pred, key, mapping[params[key]]))
        elif pred in self.game.fluent:
            rows = sorted(self.rows.get(pred, ()))
        else:
            rows = self.game.sorted_rows(pred)
        for row in rows:
            if len(row) != len(params):
                continue
            added = []
            for ph, value in zip(params, row, strict=True):
                existing = mapping.get(ph)
                if existing is None:
                    if value in used or not self.game.is_a(value, ph[1]):
                        break
                    mapping[ph] = value
                    used.add(value)
                    added.append(ph)
                elif existing != value:
                    break
            else:
                yield from self._match(query, depth + 1, mapping, used)
            for ph in added:
                used.discard(mapping.pop(ph))

    def derive(self, symbols: tuple[Symbol, ...], mapping: Mapping, variables: dict[str, Entity]) -> str:
        return "".join(self._derive(s, mapping, variables) for s in symbols)

    def _derive(self, symbol: Symbol, mapping: Mapping, variables: dict[str, Entity]) -> str:
        if isinstance(symbol, Terminal):
            return symbol.text
        if isinstance(symbol, Nonterminal):
            rules = self.game.rules.get(symbol.name)
            if not rules:
                raise KeyError(f"the grammar has no rule #{symbol.name}#")
            for rule in rules:
                if rule.condition is None or next(self._answers(rule.condition, mapping), None) is not None:
                    return self.derive(rule.rhs, mapping, variables)
            raise IndexError(f"no rule of #{symbol.name}# applies")  # TextWorld fails the same way
        if isinstance(symbol, Evaluation):
            return str(eval(symbol.code, _EVAL_GLOBALS, variables))
        if isinstance(symbol, Conditional):
            return "".join(self._derive(symbol.expression, m, v) for m, v in self._contexts(symbol, mapping, variables))
        items = list(self._contexts(symbol.item, mapping, variables))
        if not items:
            return self._derive(Nonterminal("list_empty"), mapping, variables)
        parts = [self._derive(symbol.item.expression, m, v) for m, v in items]
        if len(parts) == 1:
            return parts[0]
        separator = self._derive(Nonterminal("list_separator"), mapping, variables)
        last = self._derive(Nonterminal("list_last_separator"), mapping, variables)
        return separator.join(parts[:-1]) + last + parts[-1]

    def _contexts(
        self, symbol: Conditional, mapping: Mapping, variables: dict[str, Entity]
    ) -> Iterator[tuple[Mapping, dict[str, Entity]]]:
        if symbol.given is None:
            yield mapping, variables
            return
        entities = self.game.entities
        for answer in self._answers(symbol.given, mapping):
            yield answer, variables | {ph[0]: entities[value] for ph, value in answer.items()}

    def _context(self, action: ActionSchema, b: Binding) -> tuple[Mapping, dict[str, Entity]]:
        mapping = {(name[1:], kind): b[name] for name, kind in action.parameters}
        return mapping, {ph[0]: self.game.entities[value] for ph, value in mapping.items()}

    # -- playing
    def groundings(self, action: ActionSchema) -> list[Binding]:
        """The action's groundings whose precondition holds (each once), as Fast Downward's applicable
        operators; parameters no literal binds range over their type."""
        found: list[Binding] = []
        for plan in self.game.plans[action.name]:
            self._run(plan, 0, {}, found)
        out, seen = [], set()
        names = [name for name, _ in action.parameters]
        bound = self.game.bound_by_plans[action.name]
        for b in found:
            free = [] if bound else [(name, kind) for name, kind in action.parameters if name not in b]
            for full in self._complete(b, free) if free else (b,):
                key = tuple([full[name] for name in names])
                if key not in seen:
                    seen.add(key)
                    out.append(full)  # quantified variables ride along; nothing reads them
        return out

    def _complete(self, b: Binding, free: list[tuple[str, str]]) -> Iterator[Binding]:
        if not free:
            yield b
            return
        name, kind = free[0]
        for value in self.game.by_type.get(kind, []):
            yield from self._complete(b | {name: value}, free[1:])

    def _snapshot(self, pred: str) -> frozenset[Row]:
        snap = self.snapshots.get(pred)
        if snap is None:
            snap = self.snapshots[pred] = frozenset(self.rows.get(pred, ()))
        return snap

    def _offers(self, action: ActionSchema) -> list[tuple[str, Binding]]:
        """The commands an action offers now, with their bindings. They depend on the state only
        through the fluent facts its precondition reads, so they are memoised per game on those."""
        game = self.game
        memoise = game.static_template.get(action.name, False)
        key = ("offers", action.name, *[self._snapshot(p) for p in game.reads[action.name]]) if memoise else None
        offers = game.memo.get(key) if memoise else None
        if offers is None:
            offers = []
            for b in self.groundings(action):
                command = self._text(action, b, memoise)
                if command is not None:
                    offers.append((command, b))
            if memoise:
                game.remember(key, offers)
        return offers

    def _text(self, action: ActionSchema, b: Binding, memoise: bool) -> str | None:
        """A grounding's command, or None if it is a no-op (or its action has no template); memoised
        per game when the template reads no fluent fact."""
        if action.changes_nothing(b):
            return None
        if not memoise:
            return self._command(action, b)
        key = ("text", action.name, *[b[name] for name in self.game.template_params[action.name]])
        text = self.game.memo.get(key, _MISSING)
        if text is _MISSING:
            text = self._command(action, b)
            self.game.remember(key, text)
        return None if text is None else str(text)

    def _observe(self) -> list[str]:
        self.commands = {}
        for action in self.game.actions:
            for command, b in self._offers(action):
                self.commands.setdefault(command, (action, b))
        return sorted(self.commands)

    def _command(self, action: ActionSchema, b: Binding) -> str | None:
        text = self.game.texts.get(action.name)
        if text is None:
            return None
        mapping, variables = self._context(action, b)
        command = self.derive(text.template, mapping, variables)
        if "{" in command or "}" in command:  # TextWorld formats the derived text with every name
            command = command.format_map(self.game.names)
        return command

    def won(self) -> bool:
        key = ("goal", *(self._snapshot(p) for p in self.game.goal_reads))
        won = self.game.memo.get(key)
        if won is None:
            won = self._any(self.game.goal, {})
            self.game.remember(key, won)
        return bool(won)

    def reset(self) -> tuple[str, list[str]]:
        start = self.game._start
        self.snapshots = {}
        if start is None:  # the first episode of this game works it out; later ones copy it
            self.rows, self.index, self.negated = {}, {}, {}
            for pred, args in self.game.init:
                _insert(self.rows, self.index, pred, args)
            self.view = {pred: set(self.rows.get(pred, ())) for pred in self.game.viewed}
            intro = self.derive(parse_symbols("#intro#"), {}, {})
            admissible = self._observe()
            self.game._start = (self.rows, self.index, intro, admissible, dict(self.commands))
            start = self.game._start
        rows, index, intro, admissible, commands = start
        self.rows, self.index, self.negated = _copy_rows(rows), _copy_index(index), {}
        self.view = {pred: set(self.rows.get(pred, ())) for pred in self.game.viewed}
        self.commands = dict(commands)
        return intro, list(admissible)

    def step(self, command: str) -> tuple[str, list[str], bool]:
        """Play `command`: the feedback, the admissible commands after it, and `won`."""
        chosen = self.commands.get(command.strip())
        if chosen is None:
            feedback = NOTHING_HAPPENS
        else:
            action, b = chosen
            self._apply(action, b)
            mapping, variables = self._context(action, b)
            feedback = self.derive(self.game.texts[action.name].feedback, mapping, variables)
        return feedback, self._observe(), self.won()

    def _apply(self, action: ActionSchema, b: Binding) -> None:
        """The step's effects on the state (those that fire; PDDL: deletes first, adds win), and on
        the grammar's facts as TextWorld records them."""
        viewed, negated_read = self.game.viewed, self.game.negated_read
        firing = [
            e
            for i, e in enumerate(action.effects)
            if e.condition is None or self._any(self.game.effect_plans[action.name, i], b)
        ]
        ground = [(e.positive, *_ground(e.atom, b)) for e in firing]
        added = {(pred, args) for positive, pred, args in ground if positive}
        for _, pred, _ in ground:
            self.snapshots.pop(pred, None)
        for positive, pred, args in ground:
            if not positive and (pred, args) not in added:
                was_true = args in self.rows.get(pred, ())
                _remove(self.rows, self.index, pred, args)
                if pred not in viewed and pred in negated_read and (was_true or self._recorded(action, b, pred, args)):
                    self.negated.setdefault(pred, set()).add(args)
        for positive, pred, args in ground:
            if positive:
                _insert(self.rows, self.index, pred, args)
                if pred not in viewed:
                    self.negated.get(pred, set()).discard(args)
        if viewed:
            self._record(action, b)

    def _record(self, action: ActionSchema, b: Binding) -> None:
        """TextWorld updates its facts with every effect atom of the operator, fired or not, adds
        before deletes: after `use` a lamp's facts read `not_ison` whichever way it was switched. The
        predicates a conditional effect touches keep that record beside the true state."""
        ground = [(e.positive, e.condition is None, *_ground(e.atom, b)) for e in action.effects]
        ground = [g for g in ground if g[2] in self.game.viewed]
        kept = {(pred, args) for positive, plain, pred, args in ground if positive and plain}
        for positive, _, pred, args in ground:
            if positive:
                self.view.setdefault(pred, set()).add(args)
                self.negated.get(pred, set()).discard(args)
        for positive, plain, pred, args in ground:
            if not positive and not (plain and (pred, args) in kept):
                was_recorded = args in self.view.get(pred, ())
                self.view.get(pred, set()).discard(args)
                if pred in self.game.negated_read and (was_recorded or self._recorded(action, b, pred, args)):
                    self.negated.setdefault(pred, set()).add(args)

    def _recorded(self, action: ActionSchema, b: Binding, pred: str, args: Row) -> bool:
        """Whether TextWorld records deleting an atom that is false: Fast Downward's translation has
        dropped the delete if the precondition already requires the atom false, or if no sequence of
        actions can ever make it true (cooling a bowl, which nothing can heat, leaves no `not_ishot`)."""
        if (pred, args) in {_ground(atom, b) for atom in _required(action.precondition)[1]}:
            return False
        return (pred, args) in self.game.reachable

    def grammar_facts(self) -> set[tuple[str, Row]]:
        """The facts the grammar reads: what TextWorld's state holds, less the `not_` facts of
        predicates no query of the grammar reads negated."""
        out = {(pred, row) for pred, rows in self.game.static_rows.items() for row in rows}
        for pred, rows in self.rows.items():
            if pred not in self.game.viewed:
                out |= {(pred, row) for row in rows}
        for pred, rows in self.view.items():
            out |= {(pred, row) for row in rows}
        for pred, rows in self.negated.items():
            out |= {("not_" + pred, row) for row in rows}
        return out
