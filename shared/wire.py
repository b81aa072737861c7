"""Wire models of the environment service (contract v1, DESIGN §3).

Field names are the contract: add fields freely, rename none. Request models forbid unknown
fields, so a typo in a client is a 422 and not a silently ignored option; response models ignore
unknown fields, so a server may add fields without breaking older clients.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

RETRY_STATUSES = frozenset({429, 502, 503, 504})
"""Answers that mean "try again" from any of the project's services: every client retries them."""


class Request(BaseModel):
    """Unknown fields are refused, and so are coerced types: `true` or `"0"` for an integer, `[true]`
    for token ids (pydantic's strict mode; an integer still passes for a float)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Response(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ErrorDetail(Response):
    code: str
    """Machine-readable cause: `not_found`, `step_conflict`, `episode_done`, `invalid_request`, ..."""
    message: str
    """What went wrong, for a person."""
    current_step: int | None = None
    """On a step conflict: the number of actions already applied."""


class ErrorBody(Response):
    error: ErrorDetail


class EnvInfo(Response):
    """One environment that a server hosts (`GET /v1/envs` returns a list of these). Env-specific
    settings (e.g. `dialect`) come as extra top-level fields, kept here as extras."""

    model_config = ConfigDict(extra="allow")

    name: str
    backend: str
    """Which implementation serves it (ALFWorld: `native`, the default, or `textworld`, the real engine)."""
    version: str
    """Backend version; episodes record it so a replay never crosses versions."""
    splits: dict[str, int]
    """Split name -> number of tasks."""
    max_steps: int
    """Default step limit of an episode."""
    settings: dict[str, Any] = Field(default_factory=dict)
    """Env-specific settings; also flattened into the top level (e.g. `dialect`)."""


class TaskInfo(Response):
    """One task of a panel: a stable id and the labels that skills are retrieved by."""

    task_id: str
    """Stable string id, `alfworld/valid_seen/17` style."""
    split: str
    index: int
    task_type: str | None = None
    """ALFWorld task type (one of the six reference names)."""
    data_source: str | None = None
    """Search-QA data source label."""
    category: str | None = None
    """WebShop product category."""


class TaskList(Response):
    tasks: list[TaskInfo]
    total: int
    """Number of tasks in the split (not in this page)."""


class CreateEpisode(Request):
    """Start an episode on a task: `task_id`, or `split` and `index`."""

    task_id: str | None = Field(default=None, max_length=256)
    split: str | None = Field(default=None, max_length=64)
    index: int | None = Field(default=None, ge=0)
    max_steps: int | None = Field(default=None, ge=1, le=10_000)
    """Step limit; the env's default when omitted (ALFWorld 50)."""
    episode_id: str | None = Field(default=None, min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    """Optional client-chosen id, which makes a retried create safe: the same id and task return
    the episode already created."""


class Episode(Response):
    """A newly started episode (the create response)."""

    episode_id: str
    env: str
    task_id: str
    task: str
    """The goal text."""
    observation: str
    admissible_actions: list[str] | None
    """Actions the game accepts now, where the env has such a list."""
    step: int = 0
    done: bool = False
    info: dict[str, Any] = Field(default_factory=dict)


class StepRequest(Request):
    action: str
    """The action text, as the reference's agents send it (ALFWorld: a bare command)."""
    step: int = Field(ge=0)
    """Index of the step being taken: 0 for the first action. Makes retries safe."""


class BatchStepItem(StepRequest):
    episode_id: str = Field(max_length=64)


class BatchStepRequest(Request):
    steps: list[BatchStepItem] = Field(max_length=1024)


class StepResult(Response):
    episode_id: str
    observation: str
    reward: float
    """The env's native reward; shaping is the trainer's business."""
    done: bool
    """The episode has ended, for any reason."""
    truncated: bool
    """It ended at the step limit (implies `done`)."""
    won: bool
    admissible_actions: list[str] | None
    step: int
    """Number of actions applied after this step."""
    info: dict[str, Any] = Field(default_factory=dict)


class BatchStepResponse(Response):
    results: list[StepResult | ErrorBody]
    """One per requested step, in order: a result or an error."""


class EpisodeRecord(Episode):
    """Everything about an episode (`GET /v1/episodes/{id}`): the creation fields, then the
    actions and results so far, and env-specific audit fields never sent in step results."""

    model_config = ConfigDict(extra="allow")

    split: str
    index: int
    backend: str
    version: str
    max_steps: int
    actions: list[str]
    results: list[StepResult]
    created_at: float
    updated_at: float
    audit: dict[str, Any] = Field(default_factory=dict)
    """Env-specific audit fields (ALFWorld: `expert_plan`, `task_type`, `gamefile`; WebShop: `goal`,
    then `purchase` once bought), from the reset and every step so far; also flattened into the
    top level."""


class Health(Response):
    status: str
    store: str
    envs: list[str]


class RetrieveRequest(Request):
    """`POST /retrieve`, Search-R1's retriever API: the batch form (`queries`, Search-R1's server) or
    the single form (`query`, verl-agent's server), exactly one of them."""

    queries: list[str] | None = Field(default=None, min_length=1, max_length=256)
    query: str | None = None
    topk: int = Field(default=3, ge=1, le=100)
    return_scores: bool = True

    @model_validator(mode="after")
    def _one_form(self) -> RetrieveRequest:
        if (self.queries is None) == (self.query is None):
            raise ValueError("give either 'queries' (a list) or 'query' (a string), not both or neither")
        for q in self.queries or [self.query or ""]:
            if not q.strip():
                raise ValueError("a query must not be empty")
        return self


class RetrieveResponse(Response):
    """`{"result": [[{"document": {"id", "contents"}, "score"}, ...], ...]}` for the batch form (bare
    documents with `return_scores: false`; scores are on by default); `{"result": "Doc 1: ...\nDoc
    2: ...\n"}` for the single form."""

    result: list[list[dict[str, Any]]] | str
