"""Training on several processes: PyTorch's ``DistributedDataParallel`` under ``torchrun``.

``torchrun --nproc_per_node N -m seqkit train RECIPE`` starts N copies of ``seqkit train``
with ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` in their environment. ``setup`` joins them
into one process group (gloo on the CPU, nccl on CUDA, one GPU per ``LOCAL_RANK``) only when
``WORLD_SIZE`` is above 1; with one process every method here is a no-op and training is
exactly what it was. What the training loop relies on:

- **Batches.** ``train.batch_size`` is per process: N processes train on global batches of
  N x ``batch_size``. A task builds the global batches of an epoch exactly as one process
  would (same seed, same order) and keeps its own slice of each (``shard_batches``: a
  language model's rows ``[r*B, (r+1)*B)``; other tasks a contiguous part of each batch of
  examples), so the processes together train on the single-process batch.
- **Gradients.** DDP averages gradients over the processes, but a mean loss of a global
  batch weighs its targets (tokens, tags, examples) equally, and the processes hold
  different numbers of them. ``share`` all-reduces the numbers and scales each process's
  loss by its share, so the averaged gradient is the gradient of the global batch's mean
  loss, as in one process. A process whose slice is empty (a last batch smaller than the
  number of processes) runs a stand-in batch with weight 0, so the all-reduce still has it.
- **Decisions** (best checkpoint, plateau schedule, early stopping, divergence, stopping on
  SIGINT/SIGTERM) are taken on numbers every process holds: the logged losses are global,
  rank 0 evaluates and broadcasts the metrics, a stop request on any process stops all
  of them at the same step.
- **Writes.** Rank 0 alone writes checkpoints (of the unwrapped model: the same files as a
  single-process run), ``metrics.jsonl`` and TensorBoard, and prints. ``last/`` holds the
  carried LM state of all rows and every process's RNG state, so ``--resume`` continues
  the same global batches with any number of processes that gives the same global batch.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import os
import random
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from .errors import SeqkitError
from .runtime import resolve_device

T = TypeVar("T")

# How long a process waits for the others at a collective: rank 0 evaluating a large
# validation set keeps the others waiting at a broadcast.
TIMEOUT = datetime.timedelta(hours=2)


@dataclass
class StandIn:
    """A batch this process trains on with weight 0: its own slice of the global batch is
    empty, but DDP needs every process in every gradient all-reduce."""

    batch: Any


class _TaskLoss(nn.Module):
    """The task's loss as one module, so that DDP's forward covers everything that uses
    parameters (a CRF scores tags outside the model's own forward)."""

    def __init__(self, task: Any, model: nn.Module):
        super().__init__()
        self.task, self.model = task, model

    def forward(self, batch: Any, carry: Any):
        return self.task.loss(self.model, batch, carry)


class World:
    """The processes training together: this one's rank, their number, and the
    collectives the training loop needs. ``World()`` is a single process."""

    def __init__(self, rank: int = 0, world_size: int = 1, device: Optional[torch.device] = None, group: Any = None):
        self.rank, self.world_size = rank, world_size
        self.device = device if device is not None else torch.device("cpu")
        self.group = group  # a gloo group for objects and flags on the CPU (the default group when it is gloo)
        self._wrapped: Optional[tuple[frozenset, nn.Module]] = None

    @property
    def main(self) -> bool:
        """Whether this process writes files and prints (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def task_recipe(self, recipe: Any) -> Any:
        """The recipe as the task sees it: ``train.batch_size`` is the global batch, from
        which each process takes its slice."""
        if not self.distributed:
            return recipe
        train = recipe.train.model_copy(update={"batch_size": recipe.train.batch_size * self.world_size})
        return recipe.model_copy(update={"train": train})

    def describe(self, batch_size: int) -> str:
        """The effective batch, for the start of training."""
        if not self.distributed:
            return f"batch {batch_size}"
        backend = dist.get_backend()
        return f"{self.world_size} processes ({backend}), batch {batch_size} per process x {self.world_size} = {batch_size * self.world_size} per step"

    # --- the loss of a step --------------------------------------------------------------

    def loss_function(self, task: Any, model: nn.Module) -> Callable[[Any, Any], tuple]:
        """``(batch, carry) -> (loss, num_targets, carry)``: ``task.loss`` on ``model``, in
        DDP when distributed. Call it again after freezing or unfreezing parameters: DDP
        syncs the parameters that required gradients when it was built."""
        if not self.distributed:
            return lambda batch, carry: task.loss(model, batch.batch if isinstance(batch, StandIn) else batch, carry)
        trainable = frozenset(name for name, parameter in model.named_parameters() if parameter.requires_grad)
        if self._wrapped is None or self._wrapped[0] != trainable:
            self._wrapped = None  # the old DDP's gradient hooks go with it
            wrapped = nn.parallel.DistributedDataParallel(_TaskLoss(task, model))
            self._wrapped = (trainable, wrapped)
        ddp = self._wrapped[1]
        return lambda batch, carry: ddp(batch.batch if isinstance(batch, StandIn) else batch, carry)

    def share(self, task: Any, batch: Any, loss: torch.Tensor, num_targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What to back-propagate, and the global batch's mean loss and number of targets.

        One process: ``(loss, loss, num_targets)``. Several: this process's loss scaled by
        ``world_size * weight / total weight``, where the weight is what the loss is a mean
        over (``task.loss_weight(batch)`` when the task has it, else ``num_targets``), so
        that DDP's average of the gradients is the gradient of the global mean loss.
        """
        if not self.distributed:
            return loss, loss, num_targets
        device = loss.device
        if isinstance(batch, StandIn):
            weight = counted = torch.zeros((), device=device)
        else:
            weight = task.loss_weight(batch) if hasattr(task, "loss_weight") else num_targets
            weight, counted = torch.as_tensor(weight, device=device).float(), num_targets.float()
        sums = torch.stack([loss.detach().float() * weight, weight, counted])
        dist.all_reduce(sums)  # loss x weight, weight, targets: summed over the processes
        backward = loss * (weight * self.world_size / sums[1])
        return backward, sums[0] / sums[1], sums[2]

    def batches(self, batches: Any, start: int = 0) -> Iterator[tuple[int, Any, bool]]:
        """``(index, batch, end_of_epoch)`` for the batches of an epoch from ``start`` on.

        ``batches`` is a sequence (a list, an ``LMStream``), where ``None`` marks an empty
        slice of a global batch (a ``StandIn`` runs instead), or a stream with
        ``chunks(start)`` whose end shows only when it comes; an epoch of a stream goes on
        while any process has text left, the others running stand-ins.
        """
        if hasattr(batches, "__len__"):
            for index in range(start, len(batches)):
                batch = batches[index]
                if batch is None:
                    batch = StandIn(next(other for other in batches if other is not None))
                yield index, batch, index + 1 == len(batches)
            return
        chunks = iter(batches.chunks(start))
        batch, stand_in = next(chunks, None), None
        for index in range(start, 1 << 62):
            following = next(chunks, None) if batch is not None else None
            if batch is None:
                if stand_in is None:
                    raise SeqkitError(f"process {self.rank} has no text for its rows of the training stream: use fewer processes or a smaller batch")
                batch = stand_in
            else:
                stand_in = StandIn(batch)
            more = self.any(following is not None)
            yield index, batch, not more
            if not more:
                return
            batch = following

    # --- agreeing ------------------------------------------------------------------------

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any process (a stop request, a stream with more text)."""
        if not self.distributed:
            return flag
        value = torch.tensor([int(flag)])
        dist.all_reduce(value, op=dist.ReduceOp.MAX, group=self.group)
        return bool(value.item())

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier(group=self.group)

    def on_main(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``function`` on rank 0 and give its result to every process; an error there
        (a ``SeqkitError``) is raised on every process."""
        if not self.distributed:
            return function(*args, **kwargs)
        message: list[Any] = [None, None]
        if self.main:
            try:
                message[0] = function(*args, **kwargs)
            except SeqkitError as error:
                message[1] = str(error)
                dist.broadcast_object_list(message, src=0, group=self.group)
                raise
        dist.broadcast_object_list(message, src=0, group=self.group)
        if message[1] is not None:
            raise SeqkitError(message[1])
        return message[0]

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (reading data fills the ``datasets`` cache), then the
        others, which find the cache filled."""
        if self.distributed and not self.main:
            self.barrier()
        try:
            yield
        finally:
            if self.distributed and self.main:
                self.barrier()

    # --- what last/ keeps of every process ------------------------------------------------

    def gather_carry(self, carry: Any) -> Any:
        """The carried LM state of all rows, from each process's own rows (batch is dim 1)."""
        if not self.distributed or carry is None:
            return carry
        if isinstance(carry, tuple):
            return tuple(self.gather_carry(part) for part in carry)
        parts = [torch.empty_like(carry) for _ in range(self.world_size)]
        dist.all_gather(parts, carry.contiguous())
        return torch.cat(parts, dim=1)

    def shard_carry(self, carry: Any) -> Any:
        """This process's rows of a carried LM state saved with all rows."""
        if not self.distributed or carry is None:
            return carry
        if isinstance(carry, (tuple, list)):
            return tuple(self.shard_carry(part) for part in carry)
        rows = carry.shape[1] // self.world_size
        return carry[:, self.rank * rows : (self.rank + 1) * rows].contiguous()

    def rng_states(self) -> list[dict[str, Any]]:
        """Every process's RNG states (dropout draws differ between processes)."""
        state = {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None}
        if not self.distributed:
            return [state]
        states: list[Any] = [None] * self.world_size
        dist.all_gather_object(states, state, group=self.group)
        return states

    def restore_rng(self, saved: dict[str, Any], seed: int, step: int) -> None:
        """Restore this process's RNG from ``last/``; with another number of processes than
        the run saved, rank 0 takes the saved state and the others fresh seeds."""
        states = saved.get("rng_per_process") or [saved["rng"]]
        same_world = len(states) == self.world_size
        state = states[self.rank] if same_world else saved["rng"]
        torch.set_rng_state(state["cpu"])
        if self.device.type == "cuda" and state["cuda"] is not None:
            torch.cuda.set_rng_state(state["cuda"], self.device)
        if not same_world and not self.main:
            self.seed_process(seed, salt=step)

    def seed_process(self, seed: int, salt: int = 0) -> None:
        """Give every process but rank 0 its own random stream (dropout), after the model
        was built identically everywhere."""
        if self.distributed and not self.main:
            torch.manual_seed(random.Random(f"{seed}:{salt}:rank{self.rank}").getrandbits(63))

    def check_resume(self, saved_batch_size: int, saved_world_size: int, batch_size: int) -> None:
        """``--resume`` continues the saved run's global batches: their size must not change."""
        saved, now = saved_batch_size * saved_world_size, batch_size * self.world_size
        if saved != now:
            raise SeqkitError(
                f"--resume: the run trained on global batches of {saved} ({saved_batch_size} per process x {saved_world_size}); "
                f"now they would be {now} ({batch_size} x {self.world_size}): set train.batch_size to {saved} / (number of processes)"
            )


def setup(device_name: str = "auto") -> World:
    """The processes of this run: one (no ``torchrun``), or those ``torchrun`` started.

    Under ``torchrun`` with ``WORLD_SIZE`` above 1, join the process group (unless the
    caller already did): nccl with the GPU ``cuda:LOCAL_RANK`` when training runs on CUDA,
    gloo on the CPU.
    """
    world_size = dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(device_name)
    if world_size <= 1:
        return World(device=device)
    if device.type == "cuda":
        local_rank, gpus = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
        if local_rank >= gpus:
            raise SeqkitError(
                f"torchrun started process {local_rank} of this machine, which would train on cuda:{local_rank}, but {gpus} "
                f"GPU{'s are' if gpus != 1 else ' is'} visible: use --nproc_per_node {gpus} or fewer (one process per GPU), "
                "or train on the CPU with train.device=cpu"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
        atexit.register(dist.destroy_process_group)
    group = dist.new_group(backend="gloo", timeout=TIMEOUT) if dist.get_backend() != "gloo" else None
    return World(dist.get_rank(), dist.get_world_size(), device, group)


def process_rank() -> tuple[int, int]:
    """``(rank, world_size)`` of this process: ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """Whether this process is rank 0 (or the only one)."""
    return process_rank()[0] == 0


def shard_batches(batches: Sequence[Sequence[int]]) -> list[list[int]]:
    """This process's contiguous part of each global batch of example indices (sizes differ
    by at most one); an empty part where a batch has fewer examples than processes."""
    rank, world_size = process_rank()
    if world_size == 1:
        return [list(batch) for batch in batches]
    return [list(batch[rank * len(batch) // world_size : (rank + 1) * len(batch) // world_size]) for batch in batches]


def own_rows(count: int) -> range:
    """This process's rows ``[r*B, (r+1)*B)`` of a language model's ``count = world_size * B`` rows."""
    rank, world_size = process_rank()
    per_process = count // world_size
    return range(rank * per_process, (rank + 1) * per_process)


def shard_rows(rows: torch.Tensor) -> torch.Tensor:
    """This process's rows of a language model's ``(world_size * B, ...)`` rows (``own_rows``)."""
    own = own_rows(rows.shape[0])
    return rows if len(own) == rows.shape[0] else rows[own.start : own.stop]


class NullWriter:
    """Stands in for TensorBoard's ``SummaryWriter`` on every process but rank 0."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        return _ignore


def _ignore(*args: Any, **kwargs: Any) -> None:
    return None
