"""The record of a finished group on the rollout buffer (DESIGN §6): what rollout workers write and
learners read. Versioned: a reader refuses a record of another `schema` instead of misreading it.

One step of an episode is one training sample (DESIGN §4): the exact prompt token ids, the sampled
response token ids and their sampler log-probs, and what the env said of the step. Every episode
says how it ended (`end`), and a faulted one is kept for audit but is not to be trained on: a
learner drops it, and drops a group with fewer than two usable episodes.
"""

from __future__ import annotations

import zlib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA = 2
"""The version of these models on the stream; a reader of another version refuses the record."""

EpisodeEnd = Literal["done", "step_limit", "fault"]
"""How an episode ended: `done`, the env ended it (won, lost, or the env's own end); `step_limit`, it
reached its step limit; `fault`, something outside the policy cut it short (a backend or env failure,
a timeout): not a failure of the policy, so it never enters the advantages."""

LogprobsMode = Literal["processed_logprobs", "raw_logprobs"]
"""What `sampler_logprobs` holds, in vLLM's names: `processed_logprobs` is
`log_softmax(logits / temperature)` before any top-p cut (our engine; vLLM with
`--logprobs-mode processed_logprobs`), what a learner recomputes; `raw_logprobs` is
`log_softmax(logits)`, before temperature (vLLM's default)."""


class StepSample(BaseModel):
    """One turn of an episode: a training sample."""

    model_config = ConfigDict(extra="forbid")

    step: int = Field(ge=0)
    """Its index in the episode (0 for the first action)."""
    policy_version: int = Field(ge=0)
    """The policy version that sampled the first token of the response (a turn can straddle a weight
    update; versions only go up, so this is the oldest one)."""
    prompt_token_ids: list[int] = Field(min_length=1)
    """The exact prompt the model was given: chat template and generation prompt included."""
    response_token_ids: list[int]
    """The sampled tokens, the stop token included; empty only when the backend returned none (then the
    step is invalid)."""
    sampler_logprobs: list[float]
    """The sampler's log-prob of each response token (see `GroupRecord.logprobs_mode`)."""
    action: str
    """What the env received: the projection of the response, or the fallback of an invalid one."""
    valid: bool
    """Whether the response was well formed (the trainer penalises invalid steps)."""
    env_reward: float
    """The env's own reward for the step (no shaping)."""
    won: bool
    """The env's `won` after the step."""
    done: bool
    """The env's `done` after the step (ended for any reason, the step limit included)."""
    finish_reason: Literal["stop", "length"]
    """`stop`: the turn ended (a stop token, or nothing sampled); `length`: it hit max new tokens."""

    @model_validator(mode="after")
    def _aligned(self) -> StepSample:
        if len(self.sampler_logprobs) != len(self.response_token_ids):
            raise ValueError("one sampler log-prob per response token")
        if not self.response_token_ids and self.valid:
            raise ValueError("an empty response is never a valid step")
        return self


class Trajectory(BaseModel):
    """One episode of a group, as it was played."""

    model_config = ConfigDict(extra="forbid")

    episode_id: str
    """The env service's id of the episode (its record there holds the audit fields)."""
    steps: list[StepSample]
    """The turns played, in order; empty only for an episode that faulted before its first step."""
    end: EpisodeEnd
    """How it ended."""
    fault: str | None = None
    """Why it faulted, in a line (only when `end` is `fault`)."""
    won: bool
    """The env's `won` at the end."""
    env_reward: float
    """The env's reward of the last step (WebShop's score, Search-QA's exact match)."""

    @model_validator(mode="after")
    def _ending(self) -> Trajectory:
        if (self.end == "fault") != (self.fault is not None):
            raise ValueError("a fault reason exactly when end is 'fault'")
        if self.end != "fault" and not (self.steps and self.steps[-1].done):
            raise ValueError(f"an episode that ended by {self.end!r} ends with a done step")
        return self

    @property
    def usable(self) -> bool:
        """Whether the learner may train on it."""
        return self.end != "fault"


class SamplingSettings(BaseModel):
    """How the responses of a group were sampled."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(ge=0)
    """0 is greedy."""
    top_p: float = Field(gt=0, le=1)
    """1 is no nucleus cut."""
    max_new_tokens: int = Field(ge=1)
    """The most tokens of one turn."""


class GroupRecord(BaseModel):
    """G episodes of one task, started from identical states."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[2] = Field(default=2, alias="schema")
    """`SCHEMA` of the writer."""
    group_id: str
    """Unique per group."""
    env: str
    """The env's name (`alfworld`, `webshop`, `searchqa`, ...)."""
    task_id: str
    """The env's stable task id (`alfworld/train/17`)."""
    task: str
    """The task's goal text, as the env gave it (what the teacher's skill retrieval reads)."""
    task_type: str | None = None
    """ALFWorld's task type, from the episode's `info` (a skill-routing label)."""
    data_source: str | None = None
    """Search-QA's data source, from the episode's `info` (a skill-routing label)."""
    category: str | None = None
    """WebShop's product category, from the episode's `info` (a skill-routing label)."""
    policy_version: int = Field(ge=0)
    """The oldest policy version among its steps: what staleness is measured by."""
    sampling: SamplingSettings
    """How its responses were sampled."""
    logprobs_mode: LogprobsMode
    """What its `sampler_logprobs` are."""
    backend: str
    """What generated it (`hf`: the in-process engine; `openai <url>`: a completions server)."""
    episodes: list[Trajectory] = Field(min_length=1)
    """Its episodes, faulted ones included."""
    usable: int = Field(ge=0)
    """Episodes that did not fault (the learner drops the group when fewer than 2 are)."""
    created_at: float
    """Unix time when it was finished."""

    @model_validator(mode="after")
    def _counted(self) -> GroupRecord:
        if self.usable != sum(e.usable for e in self.episodes):
            raise ValueError("usable must count the episodes that did not fault")
        return self

    @property
    def steps(self) -> int:
        return sum(len(e.steps) for e in self.episodes)

    @property
    def label(self) -> str | None:
        """The one skill-routing label the env has."""
        return self.task_type or self.data_source or self.category


def encode(group: GroupRecord) -> dict[bytes, bytes]:
    """A group as a rollout buffer's stream entry: `g`, the zlib-compressed JSON record; `v`, its
    policy version; `schema`."""
    payload = zlib.compress(group.model_dump_json(by_alias=True).encode(), 6)
    return {b"g": payload, b"v": str(group.policy_version).encode(), b"schema": str(SCHEMA).encode()}


def decode(fields: dict[bytes, bytes]) -> GroupRecord:
    """`encode`'s group again, or a `ValueError` saying why the entry is not one."""
    try:
        payload = zlib.decompress(fields[b"g"])
    except KeyError:
        raise ValueError("no group field (g)") from None
    except zlib.error as e:
        raise ValueError(f"not zlib data: {e}") from None
    return GroupRecord.model_validate_json(payload)  # a pydantic ValidationError is a ValueError
