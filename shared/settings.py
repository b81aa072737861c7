"""Typed settings of the environment service, from flags, then `SDAR_*` environment variables."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import AliasChoices, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "sdar"


class EnvServiceSettings(BaseSettings):
    """Settings of `python -m services.envs`. Every field is also an `SDAR_<NAME>` variable."""

    model_config = SettingsConfigDict(env_prefix="SDAR_", extra="forbid")

    envs: list[str] = Field(default_factory=lambda: ["alfworld"])
    """Environments to host."""
    host: str = "127.0.0.1"
    port: int = Field(default=8001, ge=0, le=65535)
    redis_url: str | None = Field(default=None, validation_alias=AliasChoices("SDAR_REDIS_URL", "REDIS_URL"))
    """Episode store; without it, episodes live in this process only."""
    redis_prefix: str = "sdar:envs:"
    """Key prefix in Redis, so several deployments (or tests) can share one server."""
    redis_wait_s: float = Field(default=30.0, ge=0)
    """At start, how long to wait for an unreachable Redis before giving up (exit non-zero)."""
    token: str | None = None
    """Bearer token required on every route but `/health`."""
    episode_ttl_s: float = Field(default=3600.0, gt=0)
    """Idle episodes expire after this many seconds."""
    max_open_episodes: int = Field(default=10_000, ge=1)
    """Open episodes per store; beyond it, creating one answers 429."""
    live_cache_size: int = Field(default=64, ge=1)
    """Live simulators this replica keeps (per env); the rest are rebuilt by replay."""
    sim_threads: int = Field(default=8, ge=1)
    """Worker threads for simulator work, so the event loop never blocks."""
    max_action_bytes: int = Field(default=4096, ge=1)
    max_body_bytes: int = Field(default=1 << 20, ge=1024)

    alfworld_backend: Literal["native", "textworld"] = "native"
    """`native`: the native engine (the same games and texts, no TextWorld at play time; proven
    identical by the differential suite); `textworld`: TextWorld's own PDDL engine, the oracle."""
    alfworld_dialect: Literal["2.1.2", "2.1.1"] = "2.1.2"
    """Text dialect: `2.1.2` (alfworld >= 0.4: `move X to Y`) or `2.1.1` (`put X in/on Y`)."""
    alfworld_data: Path | None = None
    """Official ALFWorld data. Without it, `$ALFWORLD_DATA` is used when it holds a download
    (a `json_2.1.1` folder), and otherwise games are generated."""
    cache_dir: Path = Field(default_factory=default_cache_dir)
    """Where generated games (and WebShop's title nouns) are written once and reused."""

    webshop_backend: Literal["embedded", "original"] = "embedded"
    """`embedded`: a generated catalog; `original`: the real WebShop data files given below."""
    webshop_products: Path | None = None
    """`original`: the product file (`items_shuffle_1000.json` or `items_shuffle.json`)."""
    webshop_attributes: Path | None = None
    """`original`: the attribute and synthetic-instruction file (`items_ins_v2_1000.json`)."""
    webshop_human_goals: Path | None = None
    """`original`: the human instruction file (`items_human_ins.json`), for `webshop_goals=human`."""
    webshop_goals: Literal["synthetic", "human"] = "synthetic"
    """Goals as WebShop makes them from the attribute file, or the crowd-written ones."""
    webshop_catalog_size: int = Field(default=1000, ge=50, le=100_000)
    """`embedded`: products to generate."""
    webshop_seed: int = 0
    """`embedded`: catalog seed; every seed gives another fixed catalog."""

    searchqa_seed: int = 0
    """Search-QA `embedded`: world seed; every seed gives another fixed knowledge base and panels."""
    searchqa_data: Path | None = None
    """A Search-R1-format dataset (parquet or JSONL; a folder holds one split per file) whose
    questions replace the generated panels."""
    searchqa_corpus: Path | None = None
    """A wiki-18-format JSONL corpus (`{"id", "contents"}` lines) to search in-process instead of
    the generated one."""
    searchqa_retriever: Literal["bm25", "dense"] = "bm25"
    """In-process retrieval: BM25, or dense with the offline MiniLM embedder and faiss."""
    searchqa_retriever_url: str | None = None
    """A Search-R1-compatible retriever (`http://host:8000/retrieve`); replaces in-process retrieval."""
    searchqa_retriever_form: Literal["batch", "single"] = "batch"
    """Request form for the remote retriever: Search-R1's `queries` list or verl-agent's `query`."""
    searchqa_retriever_timeout_s: float = Field(default=10.0, gt=0)
    searchqa_retriever_retries: int = Field(default=10, ge=0, le=100)
    """Retries of a remote retrieval on connection errors, timeouts and 5xx (10, as verl-agent)."""
    searchqa_topk: int = Field(default=3, ge=1, le=100)
    """Passages returned per search."""
    searchqa_passages: Literal["verl-agent", "search-r1"] = "verl-agent"
    """How passages are shown: verl-agent's JSON reply (the default) or Search-R1's `Doc i(Title: ...)`."""

    @model_validator(mode="after")
    def _searchqa_files(self) -> EnvServiceSettings:
        for name in ("searchqa_data", "searchqa_corpus"):
            path = getattr(self, name)
            if path is not None and not path.exists():
                raise ValueError(f"{name}: no file or folder {path}")
        url = self.searchqa_retriever_url
        if url is not None and not url.startswith(("http://", "https://")):
            raise ValueError(f"searchqa_retriever_url must be an http(s) URL, not {url!r}")
        return self

    @model_validator(mode="after")
    def _webshop_files(self) -> EnvServiceSettings:
        if self.webshop_backend == "original":
            needed = {"webshop_products": self.webshop_products}
            if self.webshop_goals == "synthetic":
                needed["webshop_attributes"] = self.webshop_attributes
            else:
                needed["webshop_human_goals"] = self.webshop_human_goals
            for name, path in needed.items():
                if path is None:
                    raise ValueError(f"webshop_backend=original with {self.webshop_goals} goals needs {name}")
                if not path.is_file():
                    raise ValueError(f"{name}: no file {path}")
        return self


class TeacherSettings(BaseSettings):
    """Settings of `python -m services.teacher`. Every field is also an `SDAR_TEACHER_<NAME>` variable."""

    model_config = SettingsConfigDict(env_prefix="SDAR_TEACHER_", extra="forbid")

    model: str = "smollm2"
    """The policy: `smollm2` (the packaged default), `tiny` (a small random model), a directory, or a
    name in the local Hugging Face cache."""
    host: str = "127.0.0.1"
    port: int = Field(default=8002, ge=0, le=65535)
    token: str | None = None
    """Bearer token required on every route but `/health`."""
    cache_dir: Path = Field(default_factory=default_cache_dir)
    teacher_mode: Literal["self", "frozen", "external"] = "self"
    """`self`: the current policy with skills (SDAR); `frozen`: the initial policy; `external`:
    `teacher_model`, which must share the tokenizer."""
    teacher_model: str | None = None
    skills_mode: Literal["rule", "semantic", "combined"] = "rule"
    """How `skills: auto` chooses: the reference's rule router, MiniLM similarity, or both."""
    skills_top_k: int = Field(default=5, ge=1, le=50)
    placement: Literal["prefix", "system"] = "prefix"
    """Skills as a text prefix before the chat (the reference) or in a system message."""
    max_prompt_tokens: int = Field(default=4096, ge=16, le=131072)
    max_response_tokens: int = Field(default=4096, ge=1, le=131072)
    max_batch_tokens: int = Field(default=16384, ge=256)
    """Padded tokens per forward pass."""
    max_batch_items: int = Field(default=64, ge=1, le=4096)
    """Items of several requests scored together."""
    min_shared_prefix: int = Field(default=32, ge=0)
    """Prompts of a pass that begin with at least this many equal tokens (a group's skills and task)
    run that prefix once and share its keys and values; 0 turns it off."""
    batch_wait_ms: float = Field(default=5.0, ge=0.0, le=1000.0)
    """How long the first request of a batch waits for others."""
    dtype: Literal["float32", "bfloat16"] = "float32"

    @model_validator(mode="after")
    def _external(self) -> TeacherSettings:
        if (self.teacher_mode == "external") != (self.teacher_model is not None):
            raise ValueError("teacher_model is needed with teacher_mode=external, and only then")
        return self


S = TypeVar("S", bound=BaseSettings)


def given_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The flags a user gave (argparse leaves the others None), so settings keep their defaults."""
    return {k: v for k, v in vars(args).items() if v is not None}


def from_flags(parser: argparse.ArgumentParser, cls: type[S], given: dict[str, Any]) -> S:
    """Settings from command-line flags; invalid values are a usage error (exit 2), not a traceback."""
    try:
        return cls(**given)
    except ValidationError as e:
        parser.error(str(e).replace("\n", " "))
