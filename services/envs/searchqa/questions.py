"""Questions over the generated world, in the styles of the seven datasets Search-R1 evaluates on.

Each question carries `golden_answers` (with aliases), the `data_source` whose style it imitates,
and the facts it needs, as `chains`: lists of `(title, kind, attribute)` hops, each hop's value naming
the entity of the next. `op` says how the chains give the answer: `value` (the last value of the one
chain), `min` / `max` (the name of the chain's first entity whose last value is smaller / larger),
or `same` (`yes` if the chains end at the same value, else `no`). A reader that knows the chains,
not the answer, can answer by searching for each hop.

- single hop: `nq` (lower-case, no question mark, as Natural Questions are typed), `triviaqa`
  (trivia phrasing with descriptive clues), `popqa` (PopQA's relation templates);
- multi-hop: `hotpotqa` (bridge and comparison), `2wiki` (compositional, inference, comparison and
  bridge-comparison), `musique` (composed chains of two and three hops), `bamboogle` (two-hop
  compositional questions in plain phrasing).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from services.envs.searchqa.world import REFERENCES, Entity, World
from shared import labels

DATA_SOURCES = labels.DATA_SOURCES
SINGLE_HOP = ("nq", "triviaqa", "popqa")
PANEL_SIZES = {"test": 100, "train": 300}
"""Questions per data source in each split (Bamboogle's test set is 125, as the original's)."""
BAMBOOGLE_TEST = 125

Hop = tuple[str, str, str]


@dataclass(frozen=True)
class Question:
    question: str
    golden_answers: tuple[str, ...]
    data_source: str
    style: str
    chains: tuple[tuple[Hop, ...], ...] = ()
    op: str = "value"

    def audit(self) -> dict[str, Any]:
        return {
            "golden_answers": list(self.golden_answers),
            "style": self.style,
            "chains": [[list(h) for h in chain] for chain in self.chains],
            "op": self.op,
        }


ROLE = {  # work kind -> (the creator's role, the verb of making it)
    "novel": ("author", "wrote"),
    "poetry collection": ("author", "wrote"),
    "film": ("director", "directed"),
    "symphony": ("composer", "composed"),
    "album": ("singer", "recorded"),
    "painting": ("painter", "painted"),
}
RELEASED = {
    "novel": "published",
    "poetry collection": "published",
    "film": "produced",
    "symphony": "recorded",
    "album": "released",
    "painting": "exhibited",
}


class Asker:
    """Draws questions of every style from one world."""

    def __init__(self, world: World, rng: random.Random) -> None:
        self.world = world
        self.rng = rng
        self.kinds = {
            kind: world.of_kind(kind) for kind in ("person", "city", "country", "organisation", "work", "event")
        }

    # -- walking the world -------------------------------------------------------------------

    def pick(self, kind: str, *path: str, unique: bool = True) -> Entity:
        """A random entity of `kind` along which `path` can be followed; a person named in a
        question (`unique`) has no namesake."""
        while True:
            entity = self.rng.choice(self.kinds[kind])
            if unique and entity.title != entity.name:
                continue
            if self.follows(entity, path):
                return entity

    def follows(self, entity: Entity, path: tuple[str, ...]) -> bool:
        for attr in path:
            if attr not in entity.attrs:
                return False
            if attr in REFERENCES:
                entity = self.world.entities[entity.attrs[attr]]
        return True

    def chain(self, entity: Entity, *path: str) -> tuple[tuple[Hop, ...], Entity, str]:
        """The hops of `path` from `entity`, the entity of the last hop and its attribute."""
        hops = []
        for i, attr in enumerate(path):
            hops.append((entity.title, entity.kind, attr))
            if i < len(path) - 1:
                entity = self.world.value(entity, attr)
        return tuple(hops), entity, path[-1]

    def ask(self, text: str, source: str, style: str, entity: Entity, *path: str) -> Question:
        hops, last, attr = self.chain(entity, *path)
        return Question(text, tuple(self.world.answers(last, attr)), source, style, (hops,))

    def compare(self, text: str, source: str, style: str, a: Entity, b: Entity, op: str, *path: str) -> Question | None:
        if a is b:
            return None
        (hops_a, last_a, attr), (hops_b, last_b, _) = self.chain(a, *path), self.chain(b, *path)
        va, vb = self.world.value(last_a, attr), self.world.value(last_b, attr)
        if op == "same":
            answer = "yes" if va == vb else "no"
        elif va == vb:
            return None
        else:
            answer = (a if (va < vb) == (op == "min") else b).name
        return Question(text, (answer,), source, style, (hops_a, hops_b), op)

    # -- single hop ----------------------------------------------------------------------------

    def nq(self) -> Question:
        kind, attr = self.rng.choice(NQ_FACTS)
        e = self.pick(kind, attr)
        if (kind, attr) == ("work", "creator"):
            text = f"who {ROLE[e.attrs['kind']][1]} {e.name}"
        else:
            text = NQ_TEMPLATES[(kind, attr)].format(s=e.name)
        return self.ask(text.lower(), "nq", "single-hop", e, attr)

    def triviaqa(self) -> Question:
        kind, attr = self.rng.choice(sorted(TRIVIA_TEMPLATES))
        e = self.pick(kind, attr)
        text = TRIVIA_TEMPLATES[(kind, attr)](self.world, e)
        return self.ask(text, "triviaqa", "single-hop", e, attr)

    def popqa(self) -> Question:
        kind, attr = self.rng.choice(sorted(POPQA_TEMPLATES))
        e = self.pick(kind, attr)
        template = POPQA_TEMPLATES[(kind, attr)]
        if (kind, attr) == ("work", "creator"):
            template = POPQA_CREATOR[e.attrs["kind"]]
        return self.ask(template.format(s=e.name), "popqa", "single-hop", e, attr)

    # -- multi-hop -----------------------------------------------------------------------------

    def hotpotqa(self) -> Question | None:
        r = self.rng.random()
        if r < 0.55:
            form = self.rng.randrange(4)
            if form == 0:
                w = self.pick("work", "creator", "birthplace")
                role = ROLE[w.attrs["kind"]][0]
                return self.ask(
                    f"The {role} of the {w.attrs['kind']} {w.name} was born in which city?",
                    "hotpotqa",
                    "bridge",
                    w,
                    "creator",
                    "birthplace",
                )
            if form == 1:
                o = self.pick("organisation", "founder", "birth_year")
                return self.ask(
                    f"In what year was the founder of {o.name} born?", "hotpotqa", "bridge", o, "founder", "birth_year"
                )
            if form == 2:
                w = self.pick("work", "publisher", "founded")
                return self.ask(
                    f"{w.name} was {RELEASED[w.attrs['kind']]} by a company founded in what year?",
                    "hotpotqa",
                    "bridge",
                    w,
                    "publisher",
                    "founded",
                )
            e = self.pick("event", "organiser", "headquarters")
            return self.ask(
                f"The {e.name} was organised by an organisation based in which city?",
                "hotpotqa",
                "bridge",
                e,
                "organiser",
                "headquarters",
            )
        form = self.rng.randrange(4)
        if form == 0:
            a, b = self.pick("organisation", "founded"), self.pick("organisation", "founded")
            return self.compare(
                f"Which was established first, {a.name} or {b.name}?", "hotpotqa", "comparison", a, b, "min", "founded"
            )
        if form == 1:
            a, b = self.pick("person", "birth_year"), self.pick("person", "birth_year")
            return self.compare(
                f"Who was born first, {a.name} or {b.name}?", "hotpotqa", "comparison", a, b, "min", "birth_year"
            )
        if form == 2:
            a, b = self.pick("city", "population"), self.pick("city", "population")
            return self.compare(
                f"Which city has a larger population, {a.name} or {b.name}?",
                "hotpotqa",
                "comparison",
                a,
                b,
                "max",
                "population",
            )
        a = self.pick("city", "country")
        b = self.pick("city", "country") if self.rng.random() < 0.5 else self._sibling(a, "country")
        return self.compare(
            f"Are {a.name} and {b.name} in the same country?", "hotpotqa", "comparison", a, b, "same", "country"
        )

    def twowiki(self) -> Question | None:
        form = self.rng.randrange(6)
        if form == 0:
            w = self.pick("work", "creator", "birthplace")
            role = ROLE[w.attrs["kind"]][0]
            return self.ask(
                f"Where was the {role} of {w.attrs['kind']} {w.name} born?",
                "2wiki",
                "compositional",
                w,
                "creator",
                "birthplace",
            )
        if form == 1:
            w = self.pick("work", "creator", "spouse")
            role = ROLE[w.attrs["kind"]][0]
            return self.ask(
                f"Who is the spouse of the {role} of {w.attrs['kind']} {w.name}?",
                "2wiki",
                "compositional",
                w,
                "creator",
                "spouse",
            )
        if form == 2:
            if self.rng.random() < 0.5:
                p = self.pick("person", "father", "father")
                return self.ask(
                    f"Who is the paternal grandfather of {p.name}?", "2wiki", "inference", p, "father", "father"
                )
            p = self.pick("person", "spouse", "father")
            return self.ask(f"Who is the father-in-law of {p.name}?", "2wiki", "inference", p, "spouse", "father")
        if form == 3:
            a = self.pick("work", "year")
            b = self._same_kind(a, "year")
            return self.compare(
                f"Which {a.attrs['kind']} came out first, {a.name} or {b.name}?",
                "2wiki",
                "comparison",
                a,
                b,
                "min",
                "year",
            )
        if form == 4:
            a = self.pick("person", "birthplace", "country")
            b = self.pick("person", "birthplace", "country")
            return self.compare(
                f"Are {a.name} and {b.name} of the same nationality?",
                "2wiki",
                "comparison",
                a,
                b,
                "same",
                "birthplace",
                "country",
            )
        a = self.pick("work", "creator", "birth_year")
        b = self._same_kind(a, "creator", "birth_year")
        role = ROLE[a.attrs["kind"]][0]
        return self.compare(
            f"Which {a.attrs['kind']} has the {role} born later, {a.name} or {b.name}?",
            "2wiki",
            "bridge-comparison",
            a,
            b,
            "max",
            "creator",
            "birth_year",
        )

    def musique(self) -> Question:
        form = self.rng.randrange(5)
        if form == 0:
            w = self.pick("work", "creator", "birthplace", "river")
            role = ROLE[w.attrs["kind"]][0]
            return self.ask(
                f"What river flows through the birthplace of the {role} of {w.name}?",
                "musique",
                "3-hop",
                w,
                "creator",
                "birthplace",
                "river",
            )
        if form == 1:
            w = self.pick("work", "publisher", "headquarters", "country")
            return self.ask(
                f"In which country is the headquarters of the company that {RELEASED[w.attrs['kind']]} {w.name}?",
                "musique",
                "3-hop",
                w,
                "publisher",
                "headquarters",
                "country",
            )
        if form == 2:
            o = self.pick("organisation", "founder", "birthplace", "population")
            return self.ask(
                f"What is the population of the city where the founder of {o.name} was born?",
                "musique",
                "3-hop",
                o,
                "founder",
                "birthplace",
                "population",
            )
        if form == 3:
            p = self.pick("person", "spouse", "employer", "founded")
            return self.ask(
                f"When was the employer of the spouse of {p.name} established?",
                "musique",
                "3-hop",
                p,
                "spouse",
                "employer",
                "founded",
            )
        w = self.pick("work", "publisher", "founded")
        return self.ask(
            f"When was the company that {RELEASED[w.attrs['kind']]} {w.name} established?",
            "musique",
            "2-hop",
            w,
            "publisher",
            "founded",
        )

    def bamboogle(self) -> Question:
        form = self.rng.randrange(5)
        if form == 0:
            w = self.pick("work", "publisher", "founder")
            return self.ask(
                f"Who founded the company that {RELEASED[w.attrs['kind']]} {w.name}?",
                "bamboogle",
                "compositional",
                w,
                "publisher",
                "founder",
            )
        if form == 1:
            p = self.pick("person", "spouse", "birth_year")
            return self.ask(
                f"In what year was the spouse of {p.name} born?",
                "bamboogle",
                "compositional",
                p,
                "spouse",
                "birth_year",
            )
        if form == 2:
            o = self.pick("organisation", "founder", "father")
            return self.ask(
                f"Who was the father of the person who founded {o.name}?",
                "bamboogle",
                "compositional",
                o,
                "founder",
                "father",
            )
        if form == 3:
            c = self.pick("city", "country", "capital")
            return self.ask(
                f"What is the capital of the country that {c.name} is in?",
                "bamboogle",
                "compositional",
                c,
                "country",
                "capital",
            )
        w = self.pick("work", "creator", "birth_year")
        return self.ask(
            f"In what year was the {ROLE[w.attrs['kind']][0]} of {w.name} born?",
            "bamboogle",
            "compositional",
            w,
            "creator",
            "birth_year",
        )

    def _sibling(self, entity: Entity, attr: str) -> Entity:
        """Another entity of the same kind with the same value of `attr`."""
        same = [e for e in self.kinds[entity.kind] if e is not entity and e.attrs.get(attr) == entity.attrs[attr]]
        return self.rng.choice(same) if same else self.pick(entity.kind, attr)

    def _same_kind(self, work: Entity, *path: str) -> Entity:
        while True:
            other = self.pick("work", *path)
            if other is not work and other.attrs["kind"] == work.attrs["kind"]:
                return other


NQ_TEMPLATES = {
    ("person", "birth_year"): "when was {s} born",
    ("person", "spouse"): "who was {s} married to",
    ("organisation", "founder"): "who founded {s}",
    ("organisation", "founded"): "when was {s} established",
    ("organisation", "headquarters"): "where is the headquarters of {s}",
    ("work", "year"): "when did {s} come out",
    ("work", "creator"): "",
    ("city", "population"): "what is the population of {s}",
    ("city", "river"): "what river runs through {s}",
    ("event", "year"): "when was the {s}",
    ("event", "location"): "where was the {s} held",
    ("country", "language"): "what language do they speak in {s}",
}
NQ_FACTS = sorted(NQ_TEMPLATES)


def _trivia_creator(world: World, e: Entity) -> str:
    occupation, verb = world.value(e, "creator").attrs["occupation"], ROLE[e.attrs["kind"]][1]
    return f"Which {occupation} {verb} the {e.attrs['year']} {e.attrs['kind']} '{e.name}'?"


TRIVIA_TEMPLATES: dict[tuple[str, str], Callable[[World, Entity], str]] = {
    ("work", "creator"): _trivia_creator,
    ("city", "river"): lambda w, e: f"Which river flows through the {w.value(e, 'country').name} city of {e.name}?",
    ("person", "birthplace"): lambda w, e: f"In which city was the {e.attrs['occupation']} {e.name} born?",
    ("organisation", "founder"): lambda w, e: f"Who founded the {e.attrs['kind']} {e.name}?",
    ("event", "organiser"): lambda w, e: f"Which organisation staged the {e.name} of {e.attrs['year']}?",
    ("work", "publisher"): lambda w, e: f"Which company {RELEASED[e.attrs['kind']]} the {e.attrs['kind']} '{e.name}'?",
    ("country", "capital"): lambda w, e: f"Which city is the capital of {e.name}?",
    ("city", "founded"): lambda w, e: f"In which year was the {w.value(e, 'country').name} city of {e.name} founded?",
}
POPQA_TEMPLATES = {
    ("person", "occupation"): "What is {s}'s occupation?",
    ("person", "birthplace"): "In what city was {s} born?",
    ("person", "father"): "Who is the father of {s}?",
    ("work", "creator"): "",
    ("work", "genre"): "What genre is {s}?",
    ("city", "country"): "In what country is {s}?",
    ("country", "capital"): "What is the capital of {s}?",
}
POPQA_CREATOR = {
    "novel": "Who is the author of {s}?",
    "poetry collection": "Who is the author of {s}?",
    "film": "Who was the director of {s}?",
    "symphony": "Who was the composer of {s}?",
    "album": "Who was the performer of {s}?",
    "painting": "Who painted {s}?",
}
STYLES: dict[str, Callable[[Asker], Question | None]] = {
    "nq": Asker.nq,
    "triviaqa": Asker.triviaqa,
    "popqa": Asker.popqa,
    "hotpotqa": Asker.hotpotqa,
    "2wiki": Asker.twowiki,
    "musique": Asker.musique,
    "bamboogle": Asker.bamboogle,
}


def panel_sizes(source: str) -> dict[str, int]:
    return {"test": BAMBOOGLE_TEST if source == "bamboogle" else PANEL_SIZES["test"], "train": PANEL_SIZES["train"]}


def draw(world: World, source: str) -> Iterator[Question]:
    """Distinct questions of one style, in a fixed order."""
    asker = Asker(world, random.Random(f"searchqa-questions-{world.seed}-{source}"))
    seen: set[str] = set()
    while True:
        q = STYLES[source](asker)
        if q is not None and q.question not in seen:
            seen.add(q.question)
            yield q


def panels(world: World) -> dict[str, list[Question]]:
    """Split name -> questions, grouped by data source in `DATA_SOURCES` order (as Search-R1
    concatenates its test sets); test questions come first in each style's draw, so the test
    panel stays the same if the train panel grows."""
    out: dict[str, list[Question]] = {"train": [], "test": []}
    for source in DATA_SOURCES:
        sizes = panel_sizes(source)
        questions = draw(world, source)
        for split in ("test", "train"):
            out[split].extend(next(questions) for _ in range(sizes[split]))
    return out
