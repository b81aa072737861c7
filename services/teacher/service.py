"""The teacher: a policy that can be swapped atomically, skill retrieval, and scoring of wire
requests. The HTTP app and an in-process trainer call the same `score` (same model object, same
numbers); `Batcher` merges concurrent requests into one scoring call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.teacher.scoring import Item, Scorer, ScoringError
from services.teacher.skills import Chosen, SkillError, SkillRetriever, render
from shared.model_specs import BadCheckpoint, shown
from shared.models import DTYPES, LoadedModel, load_checkpoint, load_model
from shared.settings import TeacherSettings
from shared.teacher_wire import RetrievedSkill, ScoredItem, ScoreRequest, ScoreResponse

log = logging.getLogger("services.teacher")


class PolicyError(ValueError):
    """A checkpoint that cannot become the policy (missing, another vocabulary)."""


class PolicyConflict(PolicyError):
    """A version that is not newer than the current one."""


@dataclass(frozen=True)
class Prepared:
    """A checked request with its items' skills resolved."""

    request: ScoreRequest
    items: list[tuple[Item, list[Chosen]]]


@dataclass(frozen=True)
class Policy:
    model: Any
    version: int
    path: str
    run: str | None = None
    """The trainer run that published it (None: the base weights, or no run said)."""


def retrieved(chosen: list[Chosen]) -> list[RetrievedSkill]:
    return [RetrievedSkill.model_validate(c.skill.public() | {"score": c.score, "why": c.why}) for c in chosen]


class TeacherService:
    def __init__(self, settings: TeacherSettings, loaded: LoadedModel | None = None) -> None:
        self.settings = settings
        self.loaded = loaded or load_model(settings.model, cache_dir=settings.cache_dir, dtype=DTYPES[settings.dtype])
        self.tokenizer = self.loaded.tokenizer
        self.scorer = Scorer(
            self.tokenizer,
            placement=settings.placement,
            max_prompt_tokens=settings.max_prompt_tokens,
            min_shared_prefix=settings.min_shared_prefix,
        )
        self.skills = SkillRetriever()
        self.policy = Policy(self.loaded.model, 0, self.loaded.path)
        self.external: Any = None
        if settings.teacher_mode == "external":
            assert settings.teacher_model is not None
            self.external = self._external(settings.teacher_model)
        self.initial = self.policy.model  # frozen mode keeps it even after reloads
        self._swap = threading.Lock()

    def _external(self, spec: str) -> Any:
        """Another model as the teacher; it must share the policy's tokenizer."""
        try:
            other = load_model(spec, cache_dir=self.settings.cache_dir, dtype=DTYPES[self.settings.dtype])
        except (OSError, ValueError) as e:
            raise PolicyError(f"cannot load the external teacher {spec!r}: {e}") from e
        if other.tokenizer.get_vocab() != self.tokenizer.get_vocab():
            raise PolicyError(f"the external teacher {spec!r} has another tokenizer than the policy")
        return other.model

    # -- policy --------------------------------------------------------------------------------

    def teacher_model(self, policy: Policy) -> Any:
        mode = self.settings.teacher_mode
        return policy.model if mode == "self" else self.initial if mode == "frozen" else self.external

    def load_policy(
        self, path: str | None, version: int | None = None, run: str | None = None, take_over: bool = False
    ) -> Policy:
        """Load a checkpoint (`path`; None: the base weights the service started with) and make it
        the policy; a scoring call in progress finishes on the version it started with. Within a run
        versions only go up; another run takes the service over only with `take_over`. Blocking."""
        if path is None:
            model, where = self.loaded.model, self.loaded.path
        else:
            try:
                model = load_checkpoint(path, cache_dir=self.settings.cache_dir, dtype=DTYPES[self.settings.dtype])
            except BadCheckpoint as e:
                raise PolicyError(str(e)) from None
            rows = model.get_input_embeddings().num_embeddings
            if rows < len(self.tokenizer):
                raise PolicyError(
                    f"{shown(path)} has {rows} embeddings, fewer than the tokenizer's {len(self.tokenizer)}"
                )
            where = str(Path(path).expanduser())
        with self._swap:
            current = self.policy
            new = current.version + 1 if version is None else version
            if run is not None and current.run is not None and run != current.run and not take_over:
                raise PolicyConflict(f"the service serves run {current.run} now, not run {run}")
            if (run is None or run == current.run) and new <= current.version:
                raise PolicyConflict(f"version {new} is not newer than the current {current.version}")
            if run is not None and run != current.run:
                log.warning("policy: run %s takes over from %s (version %d)", run, current.run or "the base", new)
            self.policy = Policy(model, new, where, run)
        return self.policy

    # -- scoring -------------------------------------------------------------------------------

    def choose(self, env: str | None, task: str, metadata: dict[str, Any], skills: str | list[str]) -> list[Chosen]:
        if skills == "none":
            return []
        if isinstance(skills, list):
            return [Chosen(s, 1.0, "asked for by id") for s in self.skills.by_ids(skills)]
        if env is None:
            raise SkillError("skills: auto needs the item's env (alfworld, webshop, searchqa)")
        return self.skills.retrieve(
            env, task, metadata, mode=self.settings.skills_mode, top_k=self.settings.skills_top_k
        )

    def prepare(self, request: ScoreRequest) -> Prepared:
        """Check a request and resolve its skills; raises `ScoringError` / `SkillError`."""
        prepared = []
        for n, wire in enumerate(request.items):
            chosen = self.choose(wire.env, wire.task, wire.metadata, request.skills)
            response = wire.response_token_ids
            if response is None:
                response = self.tokenizer.encode(wire.response_text or "", add_special_tokens=False)
            messages = [m.model_dump() for m in wire.messages] if wire.messages else None
            item = Item(response, wire.prompt_token_ids, messages, render([c.skill for c in chosen]))
            try:
                self.scorer.check(item, self.settings.max_response_tokens)
                self.scorer.prompts(item)
            except ScoringError as e:
                raise type(e)(f"items[{n}]: {e}") from None
            prepared.append((item, chosen))
        return Prepared(request, prepared)

    def score(self, request: ScoreRequest) -> ScoreResponse:
        """Score one request, in-process. Blocking."""
        return self.score_prepared([self.prepare(request)])[0]

    def teacher_logprobs(self, request: ScoreRequest) -> tuple[list[list[float]], int]:
        """Only the teacher side of `score`: each item's teacher log-probs under its privileged prompt,
        and the policy version, with one forward pass (a learner in process computes the student side
        itself). The same prompts and numbers as `score`. Blocking."""
        policy = self.policy
        pairs = self.teacher_pairs(request)
        rows = self.scorer.logprobs(self.teacher_model(policy), pairs, max_batch_tokens=self.settings.max_batch_tokens)
        return [chosen.tolist() for chosen, _ in rows], policy.version

    def teacher_pairs(self, request: ScoreRequest) -> list[tuple[list[int], list[int]]]:
        """Each item's privileged prompt (skills, then the student's prompt) and response, in token ids."""
        pairs = []
        for item, _ in self.prepare(request).items:
            pairs.append((self.scorer.prompts(item)[1], item.response_token_ids))
        return pairs

    def publish(self, model: Any, version: int, path: str) -> None:
        """Make `model` (a trainer's policy, shared in process) the policy at `version`."""
        with self._swap:
            if version <= self.policy.version:
                raise PolicyConflict(f"version {version} is not newer than the current {self.policy.version}")
            self.policy = Policy(model, version, path)

    def score_prepared(
        self, batch: list[Prepared], on_batch: Callable[[int, int], None] | None = None
    ) -> list[ScoreResponse]:
        """Score several prepared requests in one pass on one policy version. Blocking."""
        policy = self.policy  # one version for the whole pass
        flat = [item for p in batch for item, _ in p.items]
        top_k = max(p.request.top_logprobs for p in batch)
        betas = [p.request.beta for p in batch for _ in p.items]  # the gate once, at each request's beta
        raw = self.scorer.score(flat, policy.model, self.teacher_model(policy), beta=betas, top_k=top_k)
        if on_batch is not None:
            on_batch(len(flat), len(batch))
        responses, start = [], 0
        for p in batch:
            request, out = p.request, []
            for (item, chosen), s in zip(p.items, raw[start : start + len(p.items)], strict=True):
                out.append(
                    ScoredItem(
                        skills=[c.skill.id for c in chosen],
                        retrieved=retrieved(chosen),
                        tokens=[self.tokenizer.decode([t]) for t in item.response_token_ids],
                        student_logprobs=s.student_logprobs,
                        teacher_logprobs=s.teacher_logprobs,
                        gap=s.gap,
                        gate=s.gate,
                        top_logprobs=[row[: request.top_logprobs] for row in s.top_logprobs or []]
                        if request.top_logprobs
                        else None,
                        teacher_prompt_tokens=s.teacher_prompt_tokens,
                    )
                )
            start += len(p.items)
            responses.append(ScoreResponse(policy_version=policy.version, run=policy.run, items=out))
        return responses


class Batcher:
    """Merges score requests that arrive together into one scoring pass, run in a worker thread."""

    def __init__(
        self,
        service: TeacherService,
        *,
        max_items: int,
        wait_s: float,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> None:
        self.service = service
        self.max_items = max_items
        self.wait_s = wait_s
        self.on_batch = on_batch
        self._queue: asyncio.Queue[tuple[Prepared, asyncio.Future[ScoreResponse]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def score(self, request: ScoreRequest) -> ScoreResponse:
        # check and resolve skills now, so a bad request fails alone and before it waits
        prepared = await asyncio.to_thread(self.service.prepare, request)
        future: asyncio.Future[ScoreResponse] = asyncio.get_running_loop().create_future()
        await self._queue.put((prepared, future))
        return await future

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            items = len(batch[0][0].items)
            deadline = asyncio.get_running_loop().time() + self.wait_s
            while items < self.max_items:
                timeout = deadline - asyncio.get_running_loop().time()
                try:
                    nxt = (
                        await asyncio.wait_for(self._queue.get(), timeout) if timeout > 0 else self._queue.get_nowait()
                    )
                except (TimeoutError, asyncio.QueueEmpty):
                    break
                batch.append(nxt)
                items += len(nxt[0].items)
            await self._score(batch)

    async def _score(self, batch: list[tuple[Prepared, asyncio.Future[ScoreResponse]]]) -> None:
        """One pass for the batch; if it fails, each request again on its own, so that a request the
        checks let through but the pass cannot take fails alone and not its batch-mates."""
        batch = [(p, f) for p, f in batch if not f.done()]  # a caller that gave up is not scored
        if not batch:
            return
        try:
            responses = await asyncio.to_thread(self.service.score_prepared, [p for p, _ in batch], self.on_batch)
        except Exception as e:  # noqa: BLE001 - handed to the waiting caller(s)
            if len(batch) > 1:
                for one in batch:
                    await self._score([one])
                return
            if not batch[0][1].done():
                batch[0][1].set_exception(e)
            return
        for (_, future), response in zip(batch, responses, strict=True):
            if not future.done():
                future.set_result(response)
