"""FSDP2 for the learner (`learner.sharding="fsdp"`, under torchrun): each process holds a shard of
the weights, the gradients and the optimizer state instead of a whole copy.

The unit of sharding is one decoder layer; the root is the learner's `Scorer`, so the embeddings,
the final norm and the head (tied or not) are gathered around each forward as one group. Two rules
of FSDP shape the learner around it:

- **Every process runs the same number of forward and backward passes**: each gathers and scatters
  with all the others. A process whose share of a mini-batch cuts into fewer micro-batches runs
  the difference as empty ones (a forward and a zero loss), `micro_batch_count` says how many.
- **Gradients are summed, not averaged.** Every process's loss is already divided by the token count
  of the whole mini-batch (summed over the processes), so the sum of the processes' gradients is the
  mini-batch's gradient, as in the replicated mode; FSDP's default division by the world size is
  turned off.

Checkpoints stay whole (`gather_model`, `gather_optimizer`): the weights in Hugging Face format and
the optimizer state keyed as a single process's `optimizer.state_dict()` is, so a run resumes on any
number of processes, sharded or not (`optimizer_for`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard

from shared.model_specs import body

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)
"""Whole tensors, on the first process only, in host memory."""


def shard(scorer: torch.nn.Module) -> None:
    """Shard `scorer` (a `trainer.learner.Scorer`) in place: one FSDP unit per decoder layer, the rest
    in the root, over every process of the default group, on the device the weights are on."""
    mesh = init_device_mesh(next(scorer.parameters()).device.type, (dist.get_world_size(),))
    for layer in body(scorer.model).layers:  # type: ignore[union-attr]
        fully_shard(layer, mesh=mesh)
    fully_shard(scorer, mesh=mesh)
    for module in scorer.modules():
        if isinstance(module, FSDPModule):  # a plain sum (gloo has no pre-multiplied one)
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)


def micro_batch_count(mine: int, device: torch.device) -> int:
    """The most micro-batches any process has: what every process runs."""
    count = torch.tensor([mine], dtype=torch.int64, device=device)
    dist.all_reduce(count, op=dist.ReduceOp.MAX)
    return int(count[0])


def gradient_sync(scorer: torch.nn.Module, on: bool) -> None:
    """Reduce the gradients in the next backward pass (`on`) or keep accumulating them unreduced (a
    mini-batch's micro-batches but the last: no communication until its end)."""
    assert isinstance(scorer, FSDPModule)
    scorer.set_requires_gradient_sync(on)


def gather_model(scorer: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The whole weights of `scorer.model`, keyed as its own `state_dict`, on the first process (an
    empty dict elsewhere). Every process calls this."""
    state: dict[str, Any] = get_model_state_dict(scorer, options=FULL)
    return {name.removeprefix("model."): value for name, value in state.items()}


def names(model: torch.nn.Module) -> list[str]:
    """The trained parameters' names, in the order the optimizer holds them (`Learner.params`)."""
    return [name for name, q in model.named_parameters() if q.requires_grad]


def gather_optimizer(scorer: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The whole optimizer state on the first process, keyed by position as an unsharded optimizer's
    `state_dict()` (an empty dict elsewhere). Every process calls this."""
    state: Any = get_optimizer_state_dict(scorer, optimizer, options=FULL)
    if not state:
        return {}
    index = {f"model.{name}": i for i, name in enumerate(names(scorer.model))}  # type: ignore[arg-type]
    return {
        "state": {index[name]: value for name, value in state["state"].items()},
        "param_groups": [g | {"params": sorted(index[name] for name in g["params"])} for g in state["param_groups"]],
    }


def optimizer_for(scorer: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load a whole, position-keyed optimizer state (an unsharded run's, or `gather_optimizer`'s) into
    the sharded optimizer; every process calls this with the same state."""
    fqn = [f"model.{name}" for name in names(scorer.model)]  # type: ignore[arg-type]
    keyed: Any = {
        "state": {fqn[int(i)]: value for i, value in state["state"].items()},
        "param_groups": [g | {"params": [fqn[int(i)] for i in g["params"]]} for g in state["param_groups"]],
    }
    set_optimizer_state_dict(scorer, optimizer, keyed, options=StateDictOptions(full_state_dict=True))
