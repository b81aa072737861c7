"""Wire models of the teacher service (contract v1, DESIGN §5).

Field names are the contract: add fields freely, rename none. Requests forbid unknown fields.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from shared.wire import Request, Response


class SkillInfo(Response):
    id: str
    env: str
    scope: str
    """`general`, or the task type / category / question style the skill is for."""
    title: str
    principle: str
    when_to_apply: str
    keywords: list[str] = Field(default_factory=list)


class SkillList(Response):
    skills: list[SkillInfo]


class RetrieveSkills(Request):
    env: str = Field(max_length=32)
    task: str = Field(default="", max_length=65536)
    metadata: dict[str, Any] = Field(default_factory=dict)
    """`task_type` (ALFWorld), `category` (WebShop), `data_source` (Search-QA)."""
    top_k: int = Field(default=5, ge=1, le=50)
    mode: Literal["rule", "semantic", "combined"] | None = None
    """Default: the server's setting."""


class RetrievedSkill(SkillInfo):
    score: float
    why: str


class RetrievedSkills(Response):
    skills: list[RetrievedSkill]
    mode: str


class ChatMessage(Request):
    role: Literal["system", "user", "assistant"]
    content: str


class ScoreItem(Request):
    prompt_token_ids: list[int] | None = None
    """The exact tokens the student was prompted with (chat template and generation prompt
    included); the student side is scored on them."""
    messages: list[ChatMessage] | None = Field(default=None, max_length=256)
    """The same prompt as chat messages; the privileged prompt is rendered from them (and both
    prompts, when `prompt_token_ids` is absent)."""
    response_token_ids: list[int] | None = None
    response_text: str | None = None
    """For a person at a terminal: the response as text, tokenized without special tokens."""
    env: str | None = Field(default=None, max_length=32)
    task: str = Field(default="", max_length=65536)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _shape(self) -> ScoreItem:
        if self.prompt_token_ids is None and not self.messages:
            raise ValueError("give prompt_token_ids or messages")
        if (self.response_token_ids is None) == (self.response_text is None):
            raise ValueError("give either response_token_ids or response_text")
        return self


class ScoreRequest(Request):
    items: list[ScoreItem] = Field(min_length=1, max_length=256)
    skills: Literal["auto", "none"] | list[str] = "auto"
    """`auto`: retrieved per item from its env, task and metadata; `none`; or these skill ids."""
    top_logprobs: int = Field(default=0, ge=0, le=20)
    beta: float = Field(default=5.0, ge=0.0, le=100.0)


class ScoredItem(Response):
    """One response, scored token by token; every per-token list is as long as the response."""

    skills: list[str]
    """The ids of the skills in the teacher's privileged prompt, in the order shown."""
    retrieved: list[RetrievedSkill] = Field(default_factory=list)
    """The skills with their scores and why they were chosen (`skills: auto`)."""
    tokens: list[str] = Field(default_factory=list)
    """Each response token as text, for reading the numbers by hand."""
    student_logprobs: list[float]
    """log p(token) under the policy given the student's exact prompt ids."""
    teacher_logprobs: list[float]
    """log p(token) under the teacher (the same policy, by default) given the privileged prompt."""
    gap: list[float]
    """`teacher_logprobs - student_logprobs`: positive where the skills make the token likelier."""
    gate: list[float]
    """`sigmoid(beta * gap)` at the request's `beta` (sdar.md §3): the weight SDAR gives the token."""
    top_logprobs: list[list[tuple[int, float]]] | None = None
    """The teacher's `top_logprobs` most likely tokens at each position, `(token_id, logprob)`."""
    teacher_prompt_tokens: int
    """Length of the privileged prompt after truncation (skills are never cut)."""


class ScoreResponse(Response):
    policy_version: int
    """The policy version whose weights scored every item of this response."""
    run: str | None = None
    """The run whose policy that is (`LoadPolicy.run`; None: the service's base weights, or a
    policy loaded without a run)."""
    items: list[ScoredItem]
    """One per request item, in order."""


class PolicyInfo(Response):
    model: str
    path: str
    policy_version: int
    teacher_mode: str
    teacher_model: str | None = None
    run: str | None = None
    """The run whose policy it holds (`LoadPolicy.run`)."""


class LoadCheckpoint(Request):
    """`POST /v1/policy` of the completions server: a checkpoint becomes the policy."""

    path: str = Field(min_length=1, max_length=4096)
    """A checkpoint directory in Hugging Face format."""
    version: int | None = Field(default=None, ge=0)
    """Default: the current version plus one; must be higher than the current one."""


class LoadPolicy(Request):
    """`POST /v1/policy` of the teacher: a checkpoint, or its base weights, becomes the policy."""

    path: str | None = Field(default=None, min_length=1, max_length=4096)
    """A checkpoint directory in Hugging Face format (or `base`)."""
    base: bool = False
    """Go back to the weights the service started with (a run's initial policy), instead of `path`."""
    version: int | None = Field(default=None, ge=0)
    """Default: the current version plus one. Within a run it must be higher than the current one."""
    run: str | None = Field(default=None, min_length=1, max_length=256)
    """The trainer run publishing it. Within a run, versions only go up."""
    take_over: bool = False
    """A run starting (or resuming) takes the service over from another run's policy: its own sequence
    of versions starts (any version is taken). Without it, a publish from another run than the
    current policy's is refused (409): the older of two runs sharing a teacher stops, not the newer."""

    @model_validator(mode="after")
    def _one_source(self) -> LoadPolicy:
        if (self.path is None) == (not self.base):
            raise ValueError("give a checkpoint path or base: true, not both")
        return self
