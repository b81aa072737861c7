"""The learner's view of the teacher (sdar.md §2): the teacher's log-prob of every sampled token under
the privileged prompt (the skills before the student's exact prompt), from the teacher service's
scoring core in process, on the policy's own model object (no second copy), or from a teacher service
over HTTP, which is told of every new policy version."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx

from shared.teacher_wire import ScoreItem, ScoreRequest
from shared.wire import RETRY_STATUSES

MAX_ITEMS = 256
"""Items per score request (the contract's limit)."""


@dataclass(frozen=True)
class Query:
    """One step-sample as the teacher scores it."""

    prompt_token_ids: list[int]
    response_token_ids: list[int]
    env: str
    task: str
    metadata: dict[str, str] = field(default_factory=dict)
    """The skill-routing label (`task_type`, `category` or `data_source`)."""


def requests(queries: Sequence[Query]) -> list[ScoreRequest]:
    """The queries as score requests of at most `MAX_ITEMS` items, skills retrieved per item."""
    items = [
        ScoreItem(
            prompt_token_ids=q.prompt_token_ids,
            response_token_ids=q.response_token_ids,
            env=q.env,
            task=q.task,
            metadata=q.metadata,
        )
        for q in queries
    ]
    return [ScoreRequest(items=items[i : i + MAX_ITEMS], skills="auto") for i in range(0, len(items), MAX_ITEMS)]


class Teacher(Protocol):
    def logprobs(self, queries: Sequence[Query]) -> list[list[float]]:
        """The teacher's log-prob of each response token of each query."""
        ...

    def publish(self, checkpoint: Path, version: int) -> None:
        """The policy is now `version`, saved at `checkpoint`."""
        ...

    def close(self) -> None: ...


class LocalTeacher:
    """The teacher service's scoring core in this process, on the learner's model object."""

    def __init__(self, model: Any, tokenizer: Any, spec: str, **settings: Any) -> None:
        from services.teacher.service import TeacherService  # torch and the skill library, only when used
        from shared.models import LoadedModel
        from shared.settings import TeacherSettings

        loaded = LoadedModel(model, tokenizer, spec, spec)
        self.model = model
        self.service = TeacherService(TeacherSettings(model=spec, **settings), loaded=loaded)

    def logprobs(self, queries: Sequence[Query]) -> list[list[float]]:
        out: list[list[float]] = []
        for request in requests(queries):
            out += self.service.teacher_logprobs(request)[0]
        return out

    def publish(self, checkpoint: Path, version: int) -> None:
        self.service.publish(self.model, version, str(checkpoint))

    def close(self) -> None:
        pass


class TeacherServiceError(RuntimeError):
    """The teacher service refused or failed a call."""


class HTTPTeacher:
    """A teacher service (`python -m services.teacher`) that loads every new checkpoint.

    Scoring and publishing are retried on a transport error or a 429/502/503/504 (scoring only reads; a publish
    whose answer was lost is recognised by the version it left). A service that restarted on an
    older policy than the one published here is given that checkpoint again before it scores."""

    def __init__(
        self,
        url: str,
        *,
        run: str | None = None,
        token: str | None = None,
        timeout_s: float = 600.0,
        retries: int = 6,
        backoff_s: float = 0.5,
    ) -> None:
        """`run`: the trainer run this client publishes for (`LoadPolicy.run`), so that one service
        serves one run after another, and a run finds out when another has taken the service over."""
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self.run = run
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s)
        self.retries, self.backoff_s = retries, backoff_s
        self.published: tuple[Path, int] | None = None

    def _post(self, route: str, body: dict[str, Any], *, ok: tuple[int, ...] = ()) -> Any:
        """The reply's JSON (None for a status in `ok`), after the retries."""
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self.client.post(route, json=body)
            except httpx.TransportError as e:
                if last:
                    raise TeacherServiceError(f"teacher service at {self.url} unreachable: {e}") from None
            else:
                if response.status_code in ok:
                    return None
                if response.status_code < 400:
                    return response.json()
                if response.status_code not in RETRY_STATUSES or last:
                    raise TeacherServiceError(f"teacher service {route}: {response.status_code} {response.text[:300]}")
            time.sleep(min(self.backoff_s * 2**attempt, 10.0))
        raise AssertionError("unreachable")

    def health(self) -> dict[str, Any]:
        try:
            return dict(self.client.get("/health").raise_for_status().json())
        except httpx.HTTPError as e:
            raise TeacherServiceError(f"no teacher service at {self.url} ({e})") from None

    def policy(self) -> dict[str, Any]:
        """The service's `GET /v1/policy`: its policy version, path and run."""
        try:
            return dict(self.client.get("/v1/policy").raise_for_status().json())
        except httpx.HTTPError as e:
            raise TeacherServiceError(f"teacher service at {self.url}: {e}") from None

    def version(self) -> int:
        """The service's current policy version."""
        return int(self.policy()["policy_version"])

    def begin(self, checkpoint: Path | None, version: int) -> None:
        """Bring the service to this run's policy before the first step: the last `checkpoint` (a
        resumed run) at `version`, or the service's base weights (a new run's initial policy, version
        0), unless it holds that already. Another run's policy left on the service is replaced."""
        held = self.policy()
        if held.get("run") == self.run and held["policy_version"] == version:
            self.published = None if checkpoint is None else (checkpoint, version)
        elif checkpoint is None:
            if (other := self._load({"base": True, "version": 0, "run": self.run, "take_over": True})) is not None:
                raise TeacherServiceError(
                    f"the teacher service at {self.url} holds policy version {other.get('policy_version')} of this "
                    "run, which has no checkpoint: start a new run, or give the teacher its base (restart it)"
                )
        else:
            self.publish(checkpoint, version, take_over=True)

    def logprobs(self, queries: Sequence[Query]) -> list[list[float]]:
        out: list[list[float]] = []
        for request in requests(queries):
            body = request.model_dump(exclude_none=True)
            reply = self._post("/v1/score", body)
            if self.run is not None and reply.get("run") not in (None, self.run):
                raise TeacherServiceError(
                    f"the teacher service at {self.url} now serves run {reply['run']}, not this one ({self.run}): "
                    "two runs cannot share one teacher (it is the policy itself)"
                )
            if self.published is not None and reply["policy_version"] < self.published[1]:
                self.publish(*self.published)  # it restarted on older weights: give it the policy again
                reply = self._post("/v1/score", body)
                if reply["policy_version"] < self.published[1]:
                    raise TeacherServiceError(
                        f"teacher service scored with policy version {reply['policy_version']}, older than the "
                        f"published {self.published[1]}"
                    )
            out += [item["teacher_logprobs"] for item in reply["items"]]
        return out

    def publish(self, checkpoint: Path, version: int, *, take_over: bool = False) -> None:
        """The service loads `checkpoint` as policy `version` (already there, after a retry: done);
        `take_over`: from another run's policy (`begin`)."""
        body = {"path": str(checkpoint.resolve()), "version": version, "run": self.run, "take_over": take_over}
        if (held := self._load(body)) is not None:  # another run took the service over, or a newer version is
            raise TeacherServiceError(  # another trainer's
                f"teacher service refused policy version {version} of run {self.run}: it serves version "
                f"{held.get('policy_version')} of run {held.get('run')}"
            )
        self.published = (checkpoint, version)

    def _load(self, body: dict[str, Any]) -> dict[str, Any] | None:
        """`POST /v1/policy`; None once the service holds `body`'s version of this run (a 409 for a load
        whose reply was lost, then retried, is success), else what it holds instead."""
        if self._post("/v1/policy", body, ok=(409,)) is not None:
            return None
        held = self.policy()
        return None if (held.get("run"), held.get("policy_version")) == (self.run, body["version"]) else held

    def close(self) -> None:
        self.client.close()
