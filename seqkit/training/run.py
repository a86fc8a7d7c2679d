"""``setup_run(recipe)``: everything the training loop works on, built once, as one ``Run``.

In order: the run directory (checked and locked), precision and threads, seeds; the
tokenizer, the task (its data) and the model; pretrained vectors and ``model.init_from``;
the optimizer, schedule and gradient scaler; and, on ``--resume``, all of their states
from ``last/`` (``restore``). Then the run's files (``config.yaml``, the tokenizer, the
labels) and TensorBoard. ``Run.save_best`` / ``Run.save_last`` write the checkpoints.
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from .. import distributed
from ..checkpoint import (
    CONFIG, TOKENIZER, WEIGHTS, has_labels, load_trainer_state, load_weights, read_config, read_labels, save_checkpoint, write_labels,
)  # fmt: skip
from ..config import Recipe, TrainConfig
from ..encoders import State
from ..errors import CheckpointError, RecipeError, SeqkitError
from ..hub import resolve
from ..model import build_model, count_parameters, recurrent_cells
from ..runtime import Precision, Threads, choose_threads, resolve_precision, seed_everything, tune_allocator
from ..recipe_rules import selected_metric
from ..tasks import TASKS
from ..tokenize import load_tokenizer, special_ids
from ..transfer import apply_freezing, layer_groups, trainable_groups, transfer_weights
from ..vectors import load_vectors
from .averaging import WeightAverage
from .faults import Doing, saved_checkpoints
from .optim import build_optimizer, build_scheduler
from .records import Meter, annotated_config, drop_records_after, log_hparams
from .run_dir import RunLock, check_free_space, holds_run, prepare_run_dir, remove_run


@dataclass
class Progress:
    """Where training stands; saved in ``last/trainer_state.pt`` and restored by resume."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of `epoch` already trained on
    best_metric: Optional[float] = None
    best_step: Optional[int] = None
    evals_without_improvement: int = 0
    finished: bool = False
    transferred: list[str] = field(default_factory=list)  # tensors model.init_from loaded (gradual unfreezing)
    skipped_batches: int = 0  # train.on_nonfinite: skip: batches left out for a NaN or inf loss or gradient
    skipped_in_a_row: int = 0

    def advance(self, index: int, end_of_epoch: bool) -> None:
        """Count the step just made on batch ``index`` of the epoch."""
        self.step += 1
        self.batch_in_epoch = index + 1
        if end_of_epoch:
            self.epoch, self.batch_in_epoch = self.epoch + 1, 0

    def record_evaluation(self, value: float, higher_is_better: bool) -> bool:
        """Note an evaluation's metric; whether it is the best so far."""
        improved = self.best_metric is None or (value > self.best_metric if higher_is_better else value < self.best_metric)
        if improved:
            self.best_metric, self.best_step, self.evals_without_improvement = value, self.step, 0
        else:
            self.evals_without_improvement += 1
        return improved


@dataclass(eq=False)
class Run:
    """One training run: the recipe, the model and task, the optimizer and its schedule,
    where training stands, and where it writes. Built by ``setup_run``; the loop in
    ``train.py`` works on it."""

    recipe: Recipe
    world: distributed.World
    run_dir: Path
    doing: Doing  # what training is doing now, for the one line that reports a failure
    say: Callable[[str], None]  # progress lines (nothing with quiet, or off rank 0)
    precision: Precision
    threads: Threads
    tokenizer: Any
    task: Any
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    meter: Meter
    steps_per_epoch: int
    total_steps: float
    transferred: set[str]  # tensors model.init_from loaded: gradual unfreezing and discriminative rates
    layer_groups: list[list[str]]
    fixed: set[str]  # tensors that never train (frozen pretrained vectors)
    resume: bool
    progress: Progress = field(default_factory=Progress)
    carry: Optional[State] = None  # a language model's state carried from one chunk to the next
    average: WeightAverage = field(default_factory=WeightAverage)  # train.average: what evaluation and the checkpoints see
    writer: Any = None
    replace_old_run: bool = False  # overwrite: the old run goes after the new run's first step
    bar: Any = None

    @property
    def config(self) -> TrainConfig:
        return self.recipe.train

    @property
    def device(self) -> torch.device:
        return self.world.device

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    @property
    def epochs(self) -> float:
        return self.config.epochs or math.inf

    @property
    def plateau(self) -> bool:
        """Whether the schedule steps on the validation metric (after each evaluation), not after each step."""
        return isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)

    def epoch_of(self, step: int) -> float:
        return round(step / self.steps_per_epoch, 3)

    def unfreeze_for_epoch(self) -> None:
        """Gradual unfreezing: which loaded layers train this epoch (a function of the epoch, so resume agrees)."""
        if self.transferred:
            count = trainable_groups(self.progress.epoch, len(self.layer_groups), self.config)
            apply_freezing(self.model, self.layer_groups, self.transferred, count, self.fixed)

    def out_of_budget(self, end_of_epoch: bool) -> bool:
        """Whether the step just made was the last one ``train.max_steps`` or ``train.epochs`` allows."""
        out_of_steps = self.progress.step >= (self.config.max_steps or math.inf)
        return out_of_steps or (end_of_epoch and self.progress.epoch >= self.epochs)

    def evaluation_due(self, end_of_epoch: bool) -> bool:
        every = self.config.eval_every
        return end_of_epoch if every is None else self.progress.step % every == 0

    def open_writer(self) -> Any:
        """Write a new run's config.yaml, tokenizer and labels (not on resume) and open TensorBoard."""
        if not self.world.main:
            return distributed.NullWriter()
        if not self.resume:
            (self.run_dir / CONFIG).write_text(annotated_config(self.recipe, self.precision, self.threads), encoding="utf-8")
            if self.tokenizer is not None:
                (self.run_dir / TOKENIZER).write_text(self.tokenizer.to_str(), encoding="utf-8")
            if self.task.labels is not None:
                write_labels(self.run_dir, self.task.labels)
        # resume: TensorBoard drops what the run logged after the step it continues from, and keeps that step
        writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.progress.step + 1 if self.resume else None)
        if not self.resume:
            log_hparams(writer, self.recipe, self.task)
        return writer

    def remove_old_run(self) -> None:
        """overwrite: once the new run has made its first step, the old run goes and the new one starts writing."""
        if self.replace_old_run:
            remove_run(self.run_dir)
            self.writer, self.replace_old_run = self.open_writer(), False

    def save_best(self, info: dict[str, Any]) -> None:
        if self.world.main:
            self._save("best", info)

    def save_last(self, info: dict[str, Any]) -> None:
        """``last/``: the model (averaged, with ``train.average``) and everything ``--resume``
        needs to continue exactly here (the raw weights too)."""
        with self.average.applied(self.model):
            self._save_last(info)

    def _save_last(self, info: dict[str, Any]) -> None:
        rng = self.world.rng_states()  # DDP: gathered from every process, like the carried state of every row
        state = {
            "average": self.average.state_dict(),  # the raw weights while model.safetensors holds the average
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "progress": asdict(self.progress),
            "carry": to_device(self.world.gather_carry(self.carry), "cpu"),
            "interval": self.meter.state_dict(),
            "rng": rng[0],
            "rng_per_process": rng,
            "world_size": self.world.world_size,
        }
        if self.world.main:
            self._save("last", info, trainer_state=state)

    def _save(self, name: str, info: dict[str, Any], trainer_state: Optional[dict[str, Any]] = None) -> None:
        info = {**info, "precision": self.precision.chosen}  # what train.precision: auto chose, beside the recipe's request
        try:
            save_checkpoint(self.run_dir / name, self.model, self.recipe, self.tokenizer, info, trainer_state=trainer_state, labels=self.task.labels)
        except CheckpointError as error:  # a full disk, a directory turned read-only: say what is still safe
            saved = saved_checkpoints(self.run_dir)
            raise SeqkitError(f"{error}; " + (f"intact: {saved}; make room, then continue with --resume" if saved else
                                              "no checkpoint was saved before; make room, then train again with --overwrite"))  # fmt: skip

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()


def setup_run(recipe: Recipe, lock: RunLock, doing: Doing, *, resume: bool, overwrite: bool, quiet: bool) -> Run:
    """Build the run a recipe describes, or restore it from ``last/`` with ``resume``."""
    world = distributed.setup(recipe.train.device)  # one process, or those torchrun started
    say = (lambda message: None) if quiet or not world.main else tqdm.write
    run_dir = Path(recipe.output_dir)
    precision = resolve_precision(recipe.train.precision, world.device, recurrent_cells(recipe.model))  # auto: bf16 where it is native
    threads = choose_threads(recipe.train.threads)  # auto: the cores other processes leave free
    world.on_main(prepare_run_dir, run_dir, recipe, lock, resume=resume, overwrite=overwrite)  # DDP: rank 0 alone locks
    seed_everything(recipe.seed)
    tune_allocator()

    source = resolve(recipe.model.init_from) if recipe.model.init_from is not None and not resume else None  # transfer
    tokenizer, task = _tokenizer_and_task(recipe, world, run_dir, source, resume=resume)
    if recipe.train.select_on != "auto":  # the metric that picks best/, early stopping and the plateau schedule
        task.metric, task.higher_is_better = selected_metric(recipe)
    model = _build_model(recipe, task, tokenizer, world.device)
    fixed = _embed_pretrained(model, recipe, tokenizer, say, resume=resume)
    transferred = _transfer(model, recipe, tokenizer, source, world) if source is not None else set()
    state = load_trainer_state(run_dir / "last") if resume else None
    if state is not None:
        transferred = set(state["progress"].get("transferred", []))
    optimizer = build_optimizer(model, recipe.train, transferred if recipe.model.init_from is not None else None)
    steps_per_epoch = task.steps_per_epoch()
    total_steps = min(recipe.train.max_steps or math.inf, (recipe.train.epochs or math.inf) * steps_per_epoch)
    run = Run(
        recipe=recipe, world=world, run_dir=run_dir, doing=doing, say=say, precision=precision, threads=threads,
        tokenizer=tokenizer, task=task, model=model, optimizer=optimizer,
        scheduler=build_scheduler(optimizer, recipe.train, total_steps, task.higher_is_better),
        scaler=torch.amp.GradScaler(world.device.type, enabled=precision.chosen == "fp16"), meter=Meter(world.device),
        steps_per_epoch=steps_per_epoch, total_steps=total_steps, transferred=transferred, layer_groups=layer_groups(model),
        fixed=fixed, resume=resume,
        average=WeightAverage(recipe.train.average, recipe.train.average_start, recipe.train.average_decay),
    )  # fmt: skip
    check_free_space(run_dir, model, recipe.train, tokenizer, resume=resume)
    world.seed_process(recipe.seed)  # DDP: dropout draws of its own in each process, the model built alike in all
    if state is not None:
        restore(run, state)
    run.progress.transferred = sorted(transferred)
    # overwrite: the old run stays until the new one has read its data, built its model and made a step
    run.replace_old_run = overwrite and world.main and holds_run(run_dir)
    run.writer = distributed.NullWriter() if run.replace_old_run else run.open_writer()
    _describe(run)
    run.bar = tqdm(total=None if math.isinf(total_steps) else int(total_steps), initial=run.progress.step, unit="step",
                   disable=quiet or not sys.stdout.isatty() or not world.main, dynamic_ncols=True, leave=False)  # fmt: skip
    return run


def _tokenizer_and_task(recipe: Recipe, world: distributed.World, run_dir: Path, source: Optional[Path], *, resume: bool) -> tuple[Any, Any]:
    """The tokenizer (the run's on resume, the source's for a transfer that keeps its
    vocabulary, else the recipe's or one trained on the data) and the task holding the data."""
    task_class = TASKS[recipe.task]
    vectors = recipe.data.inputs == "vectors"  # no tokenizer: the inputs are numbers already
    labels = None
    if resume:
        tokenizer = None if vectors else load_tokenizer(run_dir / TOKENIZER)
        labels = read_labels(run_dir, recipe.task) if has_labels(run_dir) else None
    elif source is not None and recipe.model.init_vocabulary == "source":
        tokenizer = load_tokenizer(source / TOKENIZER)  # transfer: its embedding rows mean the same words
    else:
        tokenizer = world.on_main(lambda: load_tokenizer(recipe.tokenizer.path) if recipe.tokenizer.path and not vectors else task_class.make_tokenizer(recipe))
    with world.main_first():  # DDP: the task sees the global batch size and takes its slice of each batch
        task = task_class(world.task_recipe(recipe), tokenizer, labels)
    return tokenizer, task


def _build_model(recipe: Recipe, task: Any, tokenizer: Any, device: torch.device) -> torch.nn.Module:
    """``model.build_model`` on the device; sizes that pass validation but not the allocator are a recipe error."""
    vocab_size, pad_id = (tokenizer.get_vocab_size(), special_ids(tokenizer).pad) if tokenizer is not None else (None, 0)
    try:
        return build_model(recipe.task, recipe.model, vocab_size, pad_id, task.labels).to(device)
    except (MemoryError, RuntimeError) as error:
        if not isinstance(error, MemoryError) and "alloc" not in str(error).lower() and "out of memory" not in str(error).lower():
            raise
        sizes = ", ".join(f"model.{key}={getattr(recipe.model, key)}" for key in ("embedding_dim", "hidden_size", "num_layers"))
        sizes += f", vocabulary {vocab_size:,}" if vocab_size else ""
        raise RecipeError([f"the model does not fit in memory on {device} ({sizes}): choose smaller sizes"]) from None


def _embed_pretrained(model: torch.nn.Module, recipe: Recipe, tokenizer: Any, say: Callable[[str], None], *, resume: bool) -> set[str]:
    """``model.embeddings``: fill the embedding with pretrained vectors (not on resume: the
    checkpoint has them) and freeze it when asked; the names of the tensors that never train."""
    embeddings = recipe.model.embeddings
    if embeddings.pretrained is not None and not resume:
        coverage = load_vectors(model.embedding.embedding, tokenizer, embeddings.pretrained)
        say(coverage.describe(embeddings.pretrained) + ("; frozen" if embeddings.freeze else ""))
    if embeddings.freeze:
        model.embedding.embedding.weight.requires_grad_(False)
    return {name for name, parameter in model.named_parameters() if not parameter.requires_grad}


def _transfer(model: torch.nn.Module, recipe: Recipe, tokenizer: Any, source: Path, world: distributed.World) -> set[str]:
    """``model.init_from``: load the source's tensors that fit; the names of those loaded."""
    vocabularies = (load_tokenizer(source / TOKENIZER), tokenizer) if recipe.model.init_vocabulary == "task" else None
    report = transfer_weights(model, source, vocabularies)
    if not report.loaded:  # init_from asks for these weights: training from scratch instead would waste the run
        raise RecipeError([_nothing_transferred(report, recipe)])
    if world.main:  # even with quiet: a fact about the run, printed once, not progress
        tqdm.write(report.describe())
    return set(report.loaded)


def restore(run: Run, state: dict[str, Any]) -> None:
    """``--resume``: the weights, optimizer, schedule, scaler, progress, carried state,
    log sums and random states of ``last/``, so the run continues as if never stopped."""
    last, world = run.run_dir / "last", run.world
    world.check_resume(read_config(last)[0].train.batch_size, state.get("world_size", 1), run.config.batch_size)
    load_weights(run.model, last / WEIGHTS)
    run.average.load_state_dict(run.model, state.get("average"))  # train.average: the raw weights back in the model
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    run.progress = Progress(**state["progress"])
    run.carry = world.shard_carry(to_device(state["carry"], run.device))
    run.meter.load_state_dict(state["interval"])
    world.restore_rng(state, run.recipe.seed, run.progress.step)
    if world.main:
        drop_records_after(run.run_dir / "metrics.jsonl", run.progress.step)
    progress = run.progress
    run.say(f"resuming {run.run_dir} at step {progress.step} (epoch {progress.epoch}, batch {progress.batch_in_epoch})")


def _describe(run: Run) -> None:
    """The lines that open a run: the task and its data, the model, precision, threads, processes."""
    model, steps = run.recipe.model, run.steps_per_epoch
    run.say(f"{run.recipe.task}: {run.task.summary()}")
    run.say(f"model: {model.encoder} {model.num_layers}x{model.hidden_size}, "
            f"{count_parameters(run.model):,} parameters on {run.device}; {steps:,} step{'s' if steps != 1 else ''} per epoch")  # fmt: skip
    run.say(run.precision.describe())
    run.say(run.threads.describe())
    if run.world.distributed:
        run.say(f"distributed: {run.world.describe(run.config.batch_size)}")


def _nothing_transferred(report: Any, recipe: Recipe) -> str:
    """The error for a ``model.init_from`` that fits none of the model's tensors: what did
    not fit, the sizes the source was trained with where they differ, and the fix."""
    problems = []
    if report.skipped:
        problems.append(f"{len(report.skipped)} differ in shape: " + ", ".join(report.skipped[:3]) + (", ..." if len(report.skipped) > 3 else ""))
    if report.new:
        problems.append(f"{len(report.new)} are not in it")
    try:
        saved, _ = read_config(report.source)  # the directory init_from resolved to (an archive's, a URL's)
        sizes = [f"model.{key}: {getattr(saved.model, key)!r} there, {getattr(recipe.model, key)!r} here"
                 for key in ("encoder", "embedding_dim", "hidden_size")  # what sizes the tensors of every layer
                 if getattr(saved.model, key) != getattr(recipe.model, key)]  # fmt: skip
    except SeqkitError:
        sizes = []
    differ = f"; {', '.join(sizes)}" if sizes else ""
    return (f"model.init_from: {recipe.model.init_from}: none of its tensors fit this model ({'; '.join(problems)}){differ}: "
            f"give the model the sizes of the source's config.yaml, or remove model.init_from to train from scratch")


def detach(state: Optional[State]) -> Optional[State]:
    """The carried state cut from the graph: backpropagation through time stops at chunk boundaries."""
    if state is None:
        return None
    return tuple(part.detach() for part in state) if isinstance(state, tuple) else state.detach()


def to_device(state: Optional[State], device) -> Optional[State]:
    if state is None:
        return None
    return tuple(part.to(device) for part in state) if isinstance(state, (tuple, list)) else state.to(device)
