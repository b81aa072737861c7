"""A generated knowledge base of fictional entities, written as a wiki-18-format corpus.

Countries, cities, people, organisations, works and events, with attributes and relations between
them, drawn from one seeded random stream so the world is the same on every machine. Every entity is
written as one to three passages of about 100 words, `"Title"\\ntext` as wiki-18 lines are, whose text
restates the title. Each fact is stated in exactly one sentence of one passage of its subject, in the
fixed phrasing of `FACTS` (so a reader can find it, and a test can tell which passage holds it);
the rest of a passage is filler that names other entities, as encyclopedia prose does.

Distractors are built in: families share surnames, some people share a full name with another
(their titles carry a disambiguator, `"Ada Merrow (painter)"`), many people share a birthplace,
occupation or employer, and names are drawn from one syllable inventory, so many look alike.
No name is real, so no model can answer from memory.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from services.envs.searchqa.retrieval import Passage

WORLD_VERSION = "1"

# -- names ---------------------------------------------------------------------------------------

ONSETS = [
    "b",
    "d",
    "f",
    "g",
    "h",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "z",
    "br",
    "dr",
    "gr",
    "kr",
    "st",
    "th",
    "tr",
]
VOWELS = ["a", "e", "i", "o", "u", "ai", "ei", "ou", "y"]
CODAS = ["", "", "n", "r", "l", "s", "th", "nd", "rk", "v", "m"]
FIRST_NAMES = {
    "female": [
        "Ada",
        "Brina",
        "Cela",
        "Dorit",
        "Elka",
        "Fenna",
        "Greta",
        "Hedda",
        "Ilsa",
        "Jorun",
        "Kaisa",
        "Liss",
        "Marit",
        "Nela",
        "Orla",
        "Petra",
        "Runa",
        "Sela",
        "Tove",
        "Una",
        "Vesna",
        "Wenna",
        "Yrsa",
        "Zora",
    ],
    "male": [
        "Aldo",
        "Bram",
        "Casimir",
        "Darek",
        "Emil",
        "Falk",
        "Gorm",
        "Halvar",
        "Ivo",
        "Jarek",
        "Kelm",
        "Lasse",
        "Matti",
        "Niklas",
        "Odo",
        "Pavo",
        "Rurik",
        "Sten",
        "Tarvo",
        "Ulf",
        "Vido",
        "Welm",
        "Yorick",
        "Zeno",
    ],
}
GIVEN_ENDINGS = {"female": ["a", "ine", "ette", "ia"], "male": ["o", "ar", "ik", "en"]}
N_GIVEN = 80
"""Given names coined per gender, besides the listed ones."""
N_SURNAMES = 300
SURNAME_ENDINGS = ["ova", "ski", "sen", "berg", "mark", "wick", "ard", "ell", "ius", "ant", "ovic", "holm"]
CITY_ENDINGS = ["holm", "port", "mere", "ford", "gard", "vik", "stad", "burg", "haven", "dale"]
COUNTRY_ENDINGS = ["ia", "ara", "eth", "onia", "avia", "estan"]
RIVER_ENDINGS = ["a", "en", "is", "ur"]
LANGUAGE_ENDINGS = {"ia": "ian", "ara": "aran", "eth": "ethic", "onia": "onian", "avia": "avian", "estan": "estani"}

OCCUPATIONS = {
    # occupation -> (kind of work made, aliases accepted as the answer)
    "novelist": ("novel", ["novelist", "writer", "author"]),
    "poet": ("poetry collection", ["poet", "writer"]),
    "film director": ("film", ["film director", "director", "filmmaker"]),
    "composer": ("symphony", ["composer"]),
    "singer": ("album", ["singer", "vocalist"]),
    "painter": ("painting", ["painter", "artist"]),
    "architect": (None, ["architect"]),
    "chemist": (None, ["chemist", "scientist"]),
    "physicist": (None, ["physicist", "scientist"]),
    "botanist": (None, ["botanist", "scientist"]),
    "politician": (None, ["politician"]),
    "engineer": (None, ["engineer"]),
}
GENRES = {
    "novel": ["historical novel", "crime novel", "science fiction novel", "family saga", "comic novel"],
    "poetry collection": ["lyric poetry", "narrative poetry", "pastoral poetry"],
    "film": ["drama", "thriller", "comedy", "documentary", "war film"],
    "symphony": ["romantic symphony", "choral symphony", "chamber symphony"],
    "album": ["folk album", "jazz album", "rock album", "pop album"],
    "painting": ["landscape painting", "portrait", "still life"],
}
ORG_KINDS = {
    # kind -> (name endings, the work it puts out and the verb for it)
    "publishing house": (["Press", "Books", "Publishing"], {"novel", "poetry collection"}),
    "film studio": (["Pictures", "Films", "Studios"], {"film"}),
    "record label": (["Records", "Music", "Sound"], {"album", "symphony"}),
    "gallery": (["Gallery", "Art House"], {"painting"}),
    "university": (["University", "Institute"], set()),
    "engineering firm": (["Works", "Engineering", "Industries"], set()),
}
EVENT_KINDS = ["music festival", "film festival", "book fair", "science congress", "regatta", "chess olympiad"]
TITLE_ADJECTIVES = [
    "Silent",
    "Glass",
    "Winter",
    "Hollow",
    "Burning",
    "Distant",
    "Crimson",
    "Quiet",
    "Iron",
    "Pale",
    "Northern",
    "Last",
    "Broken",
    "Golden",
    "Salt",
    "Amber",
    "Sunken",
    "Wandering",
]
TITLE_NOUNS = [
    "Harbour",
    "Orchard",
    "Lantern",
    "Bridge",
    "Garden",
    "Tide",
    "Mirror",
    "Road",
    "Bell",
    "Meadow",
    "Letter",
    "Island",
    "Tower",
    "River",
    "Shadow",
    "Crown",
    "Feather",
    "Archive",
    "Voyage",
    "Choir",
]


def _syllables(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(n))


def _coined(rng: random.Random, endings: list[str], taken: set[str], syllables: int = 1) -> str:
    while True:
        name = (_syllables(rng, syllables) + rng.choice(endings)).capitalize()
        if name not in taken and 4 <= len(name) <= 13:
            taken.add(name)
            return name


# -- entities ------------------------------------------------------------------------------------


@dataclass
class Entity:
    """One thing the corpus describes. `attrs` hold plain values (str or int) and references to
    other entities (by key); `title` is the passage title (a name, with a disambiguator where
    another entity shares it)."""

    key: str
    kind: str
    name: str
    attrs: dict[str, Any] = field(default_factory=dict)
    title: str = ""
    aliases: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.title = self.title or self.name
        self.aliases = self.aliases or [self.name]


# Facts and how they are stated: (subject kind, attribute) -> a sentence with `{s}` (the subject's
# name) and `{v}` (the value). Each fact is stated once, in one passage of its subject, in this
# phrasing; a reader that knows the phrasing can take the value from the passage.
FACTS: dict[tuple[str, str], tuple[str, ...]] = {
    ("country", "capital"): ("The capital of {s} is {v}.", "The seat of government of {s} is {v}."),
    ("country", "language"): ("The official language of {s} is {v}.", "Most people in {s} speak {v}."),
    ("city", "country"): ("{s} is a city in {v}.", "{s} lies within the borders of {v}."),
    ("city", "founded"): ("{s} was founded in {v}.", "The oldest records of {s} date from {v}."),
    ("city", "river"): ("The river {v} flows through {s}.", "{s} stands on the banks of the {v}."),
    ("city", "population"): ("{s} has a population of {v}.", "The last census counted {v} inhabitants in {s}."),
    ("person", "birth_year"): ("{s} was born in the year {v}.", "The birth of {s} was recorded in {v}."),
    ("person", "birthplace"): ("{s} was born in the city of {v}.", "The home town of {s} is {v}."),
    ("person", "occupation"): ("{s} worked as a {v}.", "By profession {s} was a {v}."),
    ("person", "father"): ("The father of {s} was {v}.", "{s} was a child of {v}."),
    ("person", "employer"): (
        "For most of a long career {s} was employed by {v}.",
        "{s} spent many years on the staff of {v}.",
    ),
    ("person", "spouse"): ("{s} was married to {v}.", "The spouse of {s} was {v}."),
    ("organisation", "founded"): ("{s} was established in {v}.", "{s} opened its doors in {v}."),
    ("organisation", "founder"): ("{s} was founded by {v}.", "{s} began as the project of {v}."),
    ("organisation", "headquarters"): ("{s} has its headquarters in {v}.", "The main offices of {s} are in {v}."),
    ("work", "year"): ("{s} first appeared in {v}.", "{s} dates from {v}."),
    ("work", "creator"): ("{s} is a work by {v}.", "{s} was created by {v}."),
    ("work", "genre"): ("{s} belongs to the genre of {v}.", "Critics class {s} as {v}."),
    ("work", "publisher"): ("{s} was brought out by {v}.", "{s} appeared under the imprint of {v}."),
    ("event", "year"): ("The {s} took place in {v}.", "The {s} was staged in the year {v}."),
    ("event", "location"): ("The {s} was held in {v}.", "The venue of the {s} was in {v}."),
    ("event", "organiser"): ("The {s} was organised by {v}.", "The {s} was run by {v}."),
}
PASSAGE_FACTS: dict[str, list[list[str]]] = {
    # which facts each passage of a kind states, in order
    "country": [["capital", "language"]],
    "city": [["country", "founded"], ["river"], ["population"]],
    "person": [["birth_year", "father"], ["birthplace"], ["occupation", "employer"], ["spouse"], []],
    "organisation": [["founded", "founder"], ["headquarters"], []],
    "work": [["creator", "year"], ["genre"], ["publisher"]],
    "event": [["year", "location", "organiser"]],
}
REFERENCES = {
    "capital",
    "country",
    "birthplace",
    "father",
    "employer",
    "spouse",
    "founder",
    "headquarters",
    "creator",
    "publisher",
    "location",
    "organiser",
}
"""Attributes whose value is another entity (named by its key)."""


def fact_patterns(kind: str, attr: str, subject: str) -> list[re.Pattern[str]]:
    """The regular expressions that find the value of `attr` stated about `subject`, one for each
    phrasing."""
    patterns = []
    for phrasing in FACTS[(kind, attr)]:
        template = re.escape(phrasing).replace(re.escape("{s}"), re.escape(subject))
        patterns.append(re.compile(template.replace(re.escape("{v}"), r"(?P<v>[^.]+?)")))
    return patterns


class World:
    """All entities of one seed and their passages."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.rng = random.Random(f"searchqa-world-{WORLD_VERSION}-{seed}")
        self.entities: dict[str, Entity] = {}
        self._pools: dict[str, list[Entity]] = {}
        """Entities by kind, for the filler's picks (filled on first use, after the build)."""
        self._names: set[str] = set()
        self._build()
        self.fact_passage: dict[tuple[str, str], Passage] = {}
        """(entity key, attribute) -> the passage stating that fact."""
        self.passages = list(self._write_passages())
        self.by_title = {e.title: e for e in self.entities.values()}

    def of_kind(self, kind: str) -> list[Entity]:
        return [e for e in self.entities.values() if e.kind == kind]

    def value(self, entity: Entity, attr: str) -> Any:
        """An attribute's value: an `Entity` for references, else the plain value."""
        value = entity.attrs[attr]
        return self.entities[value] if attr in REFERENCES else value

    def shown(self, entity: Entity, attr: str) -> str:
        """An attribute's value as the passages write it."""
        value = self.value(entity, attr)
        if isinstance(value, Entity):
            return value.name
        return f"{value:,}" if attr == "population" else str(value)

    def answers(self, entity: Entity, attr: str) -> list[str]:
        """The golden answers (with aliases) for an attribute's value."""
        value = self.value(entity, attr)
        if isinstance(value, Entity):
            return list(value.aliases)
        if attr == "occupation":
            return list(OCCUPATIONS[value][1])
        if attr == "population":
            return [f"{value:,}", str(value)]
        return [str(value)]

    # -- building ----------------------------------------------------------------------------

    def _add(self, entity: Entity) -> Entity:
        self.entities[entity.key] = entity
        return entity

    def _build(self) -> None:
        rng = self.rng
        countries = []
        for i in range(15):
            ending = COUNTRY_ENDINGS[i % len(COUNTRY_ENDINGS)]
            stem = _coined(rng, [""], self._names, 2)
            name = stem + ending
            language = stem + LANGUAGE_ENDINGS[ending]
            countries.append(self._add(Entity(f"country/{i}", "country", name, {"language": language})))
        rivers: set[str] = set()
        cities = []
        for i in range(150):
            country = countries[i % len(countries)]
            name = _coined(rng, CITY_ENDINGS, self._names)
            attrs = {
                "country": country.key,
                "founded": rng.randrange(900, 1850),
                "river": _coined(rng, RIVER_ENDINGS, rivers),
                "population": rng.randrange(8, 2400) * 500 + rng.randrange(0, 500),
            }
            cities.append(
                self._add(Entity(f"city/{i}", "city", name, attrs, aliases=[name, f"{name}, {country.name}"]))
            )
        for country in countries:
            own = [c for c in cities if c.attrs["country"] == country.key]
            country.attrs["capital"] = own[0].key
        self._people(cities)
        self._organisations(cities)
        self._works()
        self._events(cities)

    def _people(self, cities: list[Entity]) -> None:
        rng = self.rng
        taken: set[str] = set()
        surnames = [_coined(rng, SURNAME_ENDINGS, taken) for _ in range(N_SURNAMES)]
        given = {
            g: names + [_coined(rng, GIVEN_ENDINGS[g], taken) for _ in range(N_GIVEN)]
            for g, names in FIRST_NAMES.items()
        }
        full_names: dict[str, list[Entity]] = {}
        generations: list[list[Entity]] = []
        n = 0
        for generation, (size, born) in enumerate([(160, 1780), (260, 1815), (360, 1850)]):
            people = []
            for _ in range(size):
                gender = rng.choice(["female", "male"])
                fathers = [p for p in generations[-1] if p.attrs["gender"] == "male"] if generations else []
                father = rng.choice(fathers) if fathers and rng.random() < 0.7 else None
                surname = father.name.split()[-1] if father is not None else rng.choice(surnames)
                if rng.random() < 0.08 and full_names:  # a namesake of someone already written
                    twin = self.entities[rng.choice(sorted(e.key for es in full_names.values() for e in es))]
                    gender, name = twin.attrs["gender"], twin.name
                else:
                    name = f"{rng.choice(given[gender])} {surname}"
                attrs: dict[str, Any] = {
                    "gender": gender,
                    "birth_year": father.attrs["birth_year"] + rng.randrange(22, 45)
                    if father
                    else born + rng.randrange(30),
                    "birthplace": rng.choice(cities).key,
                    "occupation": rng.choice(sorted(OCCUPATIONS)),
                    "generation": generation,
                }
                if father is not None:
                    attrs["father"] = father.key
                person = self._add(Entity(f"person/{n}", "person", name, attrs))
                full_names.setdefault(name, []).append(person)
                people.append(person)
                n += 1
            generations.append(people)
        # namesakes get their occupation as a disambiguator, as Wikipedia titles do; a namesake of the
        # same occupation gets another one
        for name, people in sorted(full_names.items()):
            if len(people) > 1:
                used: set[str] = set()
                for person in people:
                    while person.attrs["occupation"] in used:
                        person.attrs["occupation"] = rng.choice(sorted(OCCUPATIONS))
                    used.add(person.attrs["occupation"])
                    person.title = f"{name} ({person.attrs['occupation']})"
        # marriages within a generation, between people of different surnames
        for people in generations:
            single = {g: [p for p in people if p.attrs["gender"] == g] for g in ("female", "male")}
            rng.shuffle(single["female"])
            for wife, husband in zip(single["female"], single["male"], strict=False):
                if rng.random() < 0.75 and wife.name.split()[-1] != husband.name.split()[-1]:
                    wife.attrs["spouse"], husband.attrs["spouse"] = husband.key, wife.key
        self.full_names = full_names

    def _organisations(self, cities: list[Entity]) -> None:
        rng = self.rng
        people = self.of_kind("person")
        n = 0
        for kind, (endings, _makes) in ORG_KINDS.items():
            for _ in range(30):
                founder = rng.choice(people)
                style = rng.random()
                if style < 0.4:
                    stem = founder.name.split()[-1]
                elif style < 0.7:
                    stem = self.entities[rng.choice(cities).key].name
                else:
                    stem = f"{rng.choice(TITLE_ADJECTIVES)} {rng.choice(TITLE_NOUNS)}"
                name = f"{stem} {rng.choice(endings)}"
                if name in self._names:
                    continue
                self._names.add(name)
                attrs = {
                    "kind": kind,
                    "founded": founder.attrs["birth_year"] + rng.randrange(25, 50),
                    "founder": founder.key,
                    "headquarters": rng.choice(cities).key,
                }
                self._add(Entity(f"organisation/{n}", "organisation", name, attrs))
                n += 1
        employers = sorted(self.of_kind("organisation"), key=lambda e: e.key)
        for person in people:
            if rng.random() < 0.8:
                person.attrs["employer"] = rng.choice(employers).key

    def _works(self) -> None:
        rng = self.rng
        makers = [p for p in self.of_kind("person") if OCCUPATIONS[p.attrs["occupation"]][0] is not None]
        orgs = self.of_kind("organisation")
        n = 0
        for creator in makers:
            kind = OCCUPATIONS[creator.attrs["occupation"]][0]
            assert kind is not None
            houses = [o for o in orgs if kind in ORG_KINDS[o.attrs["kind"]][1]]
            for _ in range(rng.choice([0, 1, 1, 2])):
                name = f"The {rng.choice(TITLE_ADJECTIVES)} {rng.choice(TITLE_NOUNS)}"
                if rng.random() < 0.3:
                    name = f"{name} of {self.entities[creator.attrs['birthplace']].name}"
                if name in self._names:
                    continue
                self._names.add(name)
                attrs = {
                    "kind": kind,
                    "creator": creator.key,
                    "year": creator.attrs["birth_year"] + rng.randrange(22, 60),
                    "genre": rng.choice(GENRES[kind]),
                    "publisher": rng.choice(houses).key,
                }
                self._add(Entity(f"work/{n}", "work", name, attrs, aliases=[name, name.removeprefix("The ")]))
                n += 1

    def _events(self, cities: list[Entity]) -> None:
        rng = self.rng
        orgs = self.of_kind("organisation")
        for n in range(90):
            city = rng.choice(cities)
            kind = rng.choice(EVENT_KINDS)
            year = rng.randrange(1850, 1990)
            name = f"{rng.choice(TITLE_ADJECTIVES)} {rng.choice(TITLE_NOUNS)} {kind.title()}"
            if name in self._names:
                continue
            self._names.add(name)
            attrs = {"kind": kind, "year": year, "location": city.key, "organiser": rng.choice(orgs).key}
            self._add(Entity(f"event/{n}", "event", name, attrs))

    # -- writing -----------------------------------------------------------------------------

    def _write_passages(self) -> Iterator[Passage]:
        n = 0
        for entity in self.entities.values():
            for part, facts in enumerate(PASSAGE_FACTS[entity.kind]):
                stated = tuple(a for a in facts if a in entity.attrs)
                rng = random.Random(f"{self.rng.random()}")
                sentences = [
                    rng.choice(FACTS[(entity.kind, a)]).format(s=entity.name, v=self.shown(entity, a)) for a in stated
                ]
                text = self._compose(entity, part, sentences, rng)
                passage = Passage(str(n), f'"{entity.title}"\n{text}')
                self.fact_passage |= {(entity.key, a): passage for a in stated}
                yield passage
                n += 1

    def _compose(self, entity: Entity, part: int, facts: list[str], rng: random.Random) -> str:
        """An opening sentence, the fact sentences, then filler to about 100 words."""
        sentences = [self._opening(entity, part), *facts]
        if rng.random() < ECHO_RATE:
            echo = self._filler(entity, rng.choice(ECHOES[entity.kind]), rng)
            sentences.insert(rng.randrange(1, len(sentences) + 1), echo)
        fillers = FILLERS[entity.kind]
        order = rng.sample(range(len(fillers)), len(fillers))
        for i in order:
            if sum(len(s.split()) for s in sentences) >= 90:
                break
            filler = self._filler(entity, fillers[i], rng)
            if filler:
                sentences.insert(rng.randrange(1, len(sentences) + 1), filler)
        return " ".join(sentences)

    def _opening(self, entity: Entity, part: int) -> str:
        a = entity.attrs
        if entity.kind == "person":
            nationality = self.entities[self.entities[a["birthplace"]].attrs["country"]].name
            openings = [
                f"{entity.name} came from {nationality}.",
                f"The early years of {entity.name} were spent far from any school.",
                f"The career of {entity.name} spanned several decades.",
                f"The private life of {entity.name} was followed closely by the press of the day.",
                f"Opinions of the legacy of {entity.name} have changed over time.",
            ]
        elif entity.kind == "work":
            openings = [
                f"{entity.name} is a {a['kind']}.",
                f"The reception of {entity.name} was mixed at first.",
                f"The history of {entity.name} after its first appearance is well documented.",
            ]
        elif entity.kind == "organisation":
            openings = [
                f"{entity.name} is a {a['kind']}.",
                f"{entity.name} grew steadily over the following decades.",
                f"The reputation of {entity.name} has varied.",
            ]
        elif entity.kind == "city":
            openings = [
                f"{entity.name} is an old settlement.",
                f"The economy of {entity.name} rests on trade.",
                f"The districts of {entity.name} differ in character.",
            ]
        elif entity.kind == "country":
            openings = [f"{entity.name} is a sovereign state."]
        else:
            openings = [f"The {entity.name} was a {a['kind']}."]
        return openings[part]

    def _filler(self, entity: Entity, template: str, rng: random.Random) -> str:
        """A filler sentence about `entity` naming other entities; never a fact's phrasing."""
        fields = {
            "s": entity.name,
            "last": entity.name.split()[-1],
            "city": rng.choice(self._pool("city")).name,
            "person": rng.choice(self._pool("person")).name,
            "org": rng.choice(self._pool("organisation")).name,
            "work": rng.choice(self._pool("work")).name,
            "year": rng.randrange(1800, 1990),
            "adj": rng.choice(ADJECTIVES).lower(),
            "n": rng.randrange(2, 12),
        }
        if entity.kind == "work":  # years after the work
            fields["year"] = entity.attrs["year"] + rng.randrange(1, 80)
        if entity.kind == "person":  # years within the person's life
            fields["year"] = entity.attrs["birth_year"] + rng.randrange(15, 60)
            fields["pronoun"] = "She" if entity.attrs["gender"] == "female" else "He"
            fields["possessive"] = "her" if entity.attrs["gender"] == "female" else "his"
        return template.format(**fields)

    def _pool(self, kind: str) -> list[Entity]:
        if kind not in self._pools:
            self._pools[kind] = self.of_kind(kind)
        return self._pools[kind]


ECHO_RATE = 1.0
ECHOES: dict[str, list[str]] = {
    # Sentences that use a question's words about the subject without stating a fact: what makes
    # a passage other than the one holding the answer look relevant to a search.
    "person": [
        "The house where {s} was born is now a small museum in {city}.",
        "{s} was born into a family of {adj} farmers, biographers say.",
        "{s} married late in life, according to one account.",
        "Letters from the year {year} show {s} at work in {city}.",
        "The city of {city} honoured {s} with a plaque in {year}.",
        "Little is known about the father of {s}.",
        "Teaching was a second occupation for {s}.",
    ],
    "work": [
        "{s} is often confused with a similarly titled work from {year}.",
        "The author of a study of {s} called it {adj}.",
        "A limited edition of {s} came out later.",
        "Which company first released {s} abroad is disputed.",
        "The genre of {s} was debated by critics.",
    ],
    "organisation": [
        "{s} celebrated the anniversary of its founding in {year}.",
        "{s} moved part of its headquarters staff to {city} in {year}.",
        "The first director of {s} was {person}.",
        "The founders of {s} were inspired by {org}.",
    ],
    "city": [
        "The population of {s} fell sharply during an epidemic in {year}.",
        "A small tributary river runs through the eastern districts of {s}.",
        "{s} was rebuilt after a fire in {year}.",
        "{s} lies far from the capital of the country.",
    ],
    "country": [
        "{s} moved its capital several times before settling.",
        "A second language is spoken in the north of {s}.",
    ],
    "event": [
        "The {s} was held again in {year} on a smaller scale.",
        "The organisers of the {s} were praised by {person}.",
        "The {s} took its name from a poem.",
    ],
}
ADJECTIVES = ["quiet", "restless", "careful", "generous", "stubborn", "patient", "curious", "modest", "ambitious"]
FILLERS: dict[str, list[str]] = {
    "person": [
        "Friends described {last} as {adj} and fond of long walks along the coast near {city}.",
        "In {year} {last} travelled to {city}, a journey later recalled in {possessive} letters.",
        "{pronoun} corresponded for many years with {person}.",
        "Critics have compared {last} with {person}, though the two never met.",
        "A portrait of {last} hangs in a collection in {city}.",
        "{last} often spoke of the influence of {work}.",
        "{pronoun} lectured for a time at the invitation of {org}.",
        "Several of {possessive} papers are now kept in an archive in {city}.",
        "A street in {city} bears the name of {last}.",
        "{pronoun} spent {n} summers in {city}.",
        "{last} was admired by {person} and by many of {possessive} contemporaries.",
        "Late in life {last} wrote a short memoir of {possessive} early years.",
    ],
    "work": [
        "A restored version was made in {year}.",
        "Reviewers compared {s} with {work}.",
        "{s} was later translated into {n} languages.",
        "An exhibition about {s} was shown in {city} in {year}.",
        "{person} praised {s} as {adj} and original.",
        "{s} has been adapted for radio in {city}.",
        "Scholars have noted the {adj} tone of {s}.",
        "A copy of {s} is kept in the library of {org}.",
    ],
    "organisation": [
        "{s} opened a branch in {city} in {year}.",
        "Among those who worked with {s} was {person}.",
        "{s} employs staff across {n} offices.",
        "In {year} {s} signed an agreement with {org}.",
        "{s} is known for its {adj} management.",
        "A history of {s} was written by {person}.",
        "{s} sponsored a prize named after {person}.",
        "{s} was involved in a legal dispute with {org} in {year}.",
    ],
    "city": [
        "{s} is twinned with {city}.",
        "A large market is held in {s} every autumn.",
        "{person} lived in {s} for a time.",
        "The old town of {s} is known for its {adj} streets.",
        "A railway line reached {s} in {year}.",
        "{s} hosts an office of {org}.",
        "Visitors to {s} often continue to {city}.",
        "{s} is the setting of {work}.",
    ],
    "country": [
        "{s} borders several other states.",
        "{s} is known for its {adj} landscapes.",
        "The largest trading partner of {s} is the port of {city}.",
        "The national archive of {s} holds the papers of {person}.",
        "{s} adopted its present constitution in {year}.",
        "Tourism to {s} grew after {year}.",
        "Among the best-known companies of {s} is {org}.",
        "{s} has a long tradition of folk music.",
        "The cuisine of {s} is varied and {adj}.",
        "Many people from {s} emigrated in the nineteenth century.",
    ],
    "event": [
        "About {n} thousand visitors attended.",
        "Among the guests was {person}.",
        "A prize was awarded to {work}.",
        "Reports of the event appeared in newspapers in {city}.",
        "The programme was described as {adj}.",
        "It was followed by a similar gathering in {city}.",
        "Sponsors included {org}.",
        "Weather disrupted the final day.",
    ],
}
