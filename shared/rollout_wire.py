"""The record of a finished group on the rollout buffer (DESIGN §6): what rollout workers write and
learners read. Versioned: a reader refuses a record of another `schema` instead of misreading it.

One step of an episode is one training sample (DESIGN §4): the exact prompt token ids, the sampled
response token ids and their sampler log-probs, and what the env said of the step.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA = 1


class StepSample(BaseModel):
    model_config = ConfigDict(extra="forbid")

    step: int = Field(ge=0)
    prompt_token_ids: list[int] = Field(min_length=1)
    response_token_ids: list[int] = Field(min_length=1)
    sampler_logprobs: list[float]
    """Log-prob of each sampled token under the sampler (after temperature and top-p)."""
    action: str
    """What the env received (the projection of the response)."""
    valid: bool
    env_reward: float
    won: bool
    done: bool
    finish_reason: Literal["stop", "length"]
    """`stop`: the turn ended (end-of-turn token); `length`: it hit max new tokens."""

    @model_validator(mode="after")
    def _aligned(self) -> StepSample:
        if len(self.sampler_logprobs) != len(self.response_token_ids):
            raise ValueError("one sampler log-prob per response token")
        return self


class EpisodeRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    episode_id: str
    steps: list[StepSample] = Field(min_length=1)
    won: bool
    env_reward: float
    """The env's reward of the last step (WebShop's score, Search-QA's exact match)."""
    truncated: bool
    """It ended at the step limit, or timed out."""


class GroupRecord(BaseModel):
    """G episodes of one task, started from identical states, with one policy version."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = Field(default=1, alias="schema")
    group_id: str
    env: str
    task_id: str
    task_type: str | None = None
    """ALFWorld's task type, Search-QA's data source, or WebShop's category."""
    policy_version: int = Field(ge=0)
    episodes: list[EpisodeRecord] = Field(min_length=1)
    created_at: float

    @property
    def steps(self) -> int:
        return sum(len(e.steps) for e in self.episodes)
