"""The skill library and how skills are chosen for a task.

A skill is one TOML file under `library/<env>/`: `id`, `env`, `scope` (`general`, or the ALFWorld task
type, WebShop category or Search-QA question style it is for), `title`, `principle`,
`when_to_apply`, and for WebShop categories the `keywords` that route to it.

Retrieval modes (sdar.md §2):
- `rule`, the reference's router: the env's general skills plus the skills of the task's type. The
  type is ALFWorld's `task_type`; WebShop's `category`, else every category one of whose keywords
  is in the task text; Search-QA's style from its `data_source` (popqa -> attribute lookup, nq and
  triviaqa -> direct lookup, the multi-hop sets -> multi-hop), or `compare` when the task has
  "which" and "or" and no "for" (the reference's substring test, checked first);
- `semantic`: cosine similarity of the offline MiniLM embeddings of the task and of each skill's
  `when_to_apply` (written as the tasks it fits are phrased) within the env, top k;
- `combined`: the rule's skills, then the best semantic ones not yet chosen, up to k.
Each chosen skill carries its score and the reason it was chosen.
"""

from __future__ import annotations

import threading
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

LIBRARY = Path(__file__).parent / "library"
ENVS = ("alfworld", "webshop", "searchqa")
RetrievalMode = Literal["rule", "semantic", "combined"]
SEARCH_STYLE = {
    "popqa": "entity_attribute_lookup",
    "nq": "direct_retrieval",
    "triviaqa": "direct_retrieval",
    "hotpotqa": "multi_hop_reasoning",
    "2wiki": "multi_hop_reasoning",
    "musique": "multi_hop_reasoning",
    "bamboogle": "multi_hop_reasoning",
}
HEADER = "[Privileged Skill Information]\n"


@dataclass(frozen=True)
class Skill:
    id: str
    env: str
    scope: str
    title: str
    principle: str
    when_to_apply: str
    keywords: tuple[str, ...] = ()

    def line(self) -> str:
        return f"- {self.title}: {self.principle} Apply this when {self.when_to_apply}."

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "env": self.env,
            "scope": self.scope,
            "title": self.title,
            "principle": self.principle,
            "when_to_apply": self.when_to_apply,
            "keywords": list(self.keywords),
        }


@dataclass(frozen=True)
class Chosen:
    skill: Skill
    score: float
    why: str


class SkillError(ValueError):
    """An unknown env or skill id, or a malformed skill file."""


def load_library(root: Path = LIBRARY) -> dict[str, Skill]:
    """Every skill under `root`, by id, in file order (env, then file name)."""
    skills: dict[str, Skill] = {}
    for path in sorted(root.glob("*/*.toml")):
        try:
            data = tomllib.loads(path.read_text())
            skill = Skill(
                id=data["id"],
                env=data["env"],
                scope=data["scope"],
                title=data["title"],
                principle=data["principle"],
                when_to_apply=data["when_to_apply"],
                keywords=tuple(k.lower() for k in data.get("keywords", ())),
            )
        except (tomllib.TOMLDecodeError, KeyError, TypeError, AttributeError) as e:
            raise SkillError(f"{path}: not a skill file ({e})") from e
        if skill.env != path.parent.name or skill.id in skills:
            raise SkillError(f"{path}: env must be its folder's name and the id unique")
        skills[skill.id] = skill
    return skills


def render(skills: Sequence[Skill]) -> str:
    """The skill block of the privileged prompt (without the header)."""
    return "\n".join(s.line() for s in skills)


@dataclass
class SkillRetriever:
    skills: dict[str, Skill] = field(default_factory=load_library)
    embedder_path: Path | None = None
    """The sentence embedder for `semantic` retrieval (default: the packaged MiniLM), loaded on
    first use."""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._embedder: Any = None
        self._vectors: dict[str, np.ndarray] = {}

    def library(self, env: str | None = None) -> list[Skill]:
        if env is not None:
            self._check_env(env)
        return [s for s in self.skills.values() if env is None or s.env == env]

    def by_ids(self, ids: Sequence[str]) -> list[Skill]:
        unknown = [i for i in ids if i not in self.skills]
        if unknown:
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            raise SkillError(f"unknown skill id(s) {unknown[:10]}{more}; GET /v1/skills lists them")
        return [self.skills[i] for i in ids]

    def _check_env(self, env: str) -> None:
        if env not in ENVS:
            raise SkillError(f"unknown env {env!r}; skills exist for {', '.join(ENVS)}")

    # -- rule ----------------------------------------------------------------------------------

    def scopes(self, env: str, task: str, metadata: Mapping[str, Any]) -> list[tuple[str, str]]:
        """`(scope, why)` of the task-specific skills the reference's router picks."""
        if env == "alfworld":
            task_type = metadata.get("task_type")
            return [(task_type, f"task_type={task_type}")] if task_type else []
        if env == "webshop":
            if metadata.get("category"):
                return [(metadata["category"], f"category={metadata['category']}")]
            text = task.lower()
            found = []
            for skill in self.library("webshop"):
                hits = [k for k in skill.keywords if k in text]
                if hits:
                    found.append((skill.scope, f"keyword {hits[0]!r} in the task"))
            return found
        lowered = task.lower()
        if "which" in lowered and "or" in lowered and "for" not in lowered:
            return [("compare", "the task has 'which' and 'or' and no 'for'")]
        source = metadata.get("data_source")
        style = SEARCH_STYLE.get(str(source))
        return [(style, f"data_source={source}")] if style else []

    def rule(self, env: str, task: str, metadata: Mapping[str, Any]) -> list[Chosen]:
        self._check_env(env)
        chosen = [Chosen(s, 1.0, f"general skill for {env}") for s in self.library(env) if s.scope == "general"]
        for scope, why in self.scopes(env, task, metadata):
            chosen += [Chosen(s, 1.0, why) for s in self.library(env) if s.scope == scope]
        return chosen

    # -- semantic ------------------------------------------------------------------------------

    def _embed(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            if self._embedder is None:
                from shared.models import load_embedder

                self._embedder = load_embedder(self.embedder_path)
            vectors = self._embedder.encode(texts, normalize_embeddings=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32)

    def semantic(self, env: str, task: str, top_k: int) -> list[Chosen]:
        self._check_env(env)
        skills = self.library(env)
        if env not in self._vectors:
            self._vectors[env] = self._embed([s.when_to_apply for s in skills])
        scores = self._vectors[env] @ self._embed([task])[0]
        order = sorted(range(len(skills)), key=lambda i: (-scores[i], i))[:top_k]
        return [Chosen(skills[i], float(scores[i]), f"semantic similarity {scores[i]:.2f} to the task") for i in order]

    # -- both ----------------------------------------------------------------------------------

    def retrieve(
        self,
        env: str,
        task: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        mode: RetrievalMode = "rule",
        top_k: int = 5,
    ) -> list[Chosen]:
        metadata = metadata or {}
        if mode == "rule":
            return self.rule(env, task, metadata)
        if mode == "semantic":
            return self.semantic(env, task, top_k)
        chosen = self.rule(env, task, metadata)
        taken = {c.skill.id for c in chosen}
        extra = [c for c in self.semantic(env, task, len(self.library(env))) if c.skill.id not in taken]
        return chosen + extra[: max(0, top_k - len(chosen))]
