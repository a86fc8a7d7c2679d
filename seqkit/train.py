"""``train(recipe)``: the training loop, written out.

Read it top to bottom: set up the run directory, tokenizer, data, model, optimizer and
schedule (or restore them all from ``last/`` with ``resume``); then, per step: forward,
loss, ``backward()``, the pre-clip gradient norm from ``clip_grad_norm_``, ``step()``, the
schedule, logging; and at each evaluation: validation metrics, ``metrics.jsonl``,
TensorBoard, ``best/``, ``last/`` and early stopping. What differs between tasks lives in
``tasks/`` (data, loss of a batch, evaluation), not here.

Faults lose nothing saved: Ctrl-C or SIGTERM saves ``last/`` after the step in hand; a
non-finite loss or gradient stops the run (or skips the batch) before the optimizer
step; the run directory and the free space are checked before training starts; a save
that fails leaves the checkpoints before it in place (``checkpoint.save_checkpoint``).

Nothing a user owns is replaced: seqkit trains only into an empty directory or one of its
own run directories (``_seqkit_run``), one run at a time (``_RunLock``), and ``overwrite``
removes the old run only once the new one has made its first step.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch
import yaml
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams
from tqdm import tqdm

from . import distributed
from .checkpoint import (
    CONFIG, LABELS, TARGET_TOKENIZER, TOKENIZER, WEIGHTS, has_labels, load_trainer_state, load_weights, read_config, read_labels,
    readable_directory, recover, save_checkpoint, write_labels,
)  # fmt: skip
from .config import Recipe, TrainConfig, dump_recipe
from .encoders import State
from .errors import CheckpointError, NotTextError, RecipeError, SeqkitError
from .hub import resolve
from .model import build_model, count_parameters, recurrent_cells
from .runtime import Precision, Threads, autocast, choose_threads, resolve_precision, seed_everything, tune_allocator
from .tasks import TASKS
from .tokenize import load_tokenizer, special_ids
from .transfer import apply_freezing, layer_groups, parameter_groups, trainable_groups, transfer_weights
from .vectors import load_vectors

# What a resumed run must share with the run it continues; `train` and `generate` may change.
_FIXED_SECTIONS = ("task", "seed", "data", "tokenizer", "model")
# train.on_nonfinite: skip gives up after this many batches in a row with a NaN or inf loss or gradient.
MAX_SKIPPED_IN_A_ROW = 100
# In every run directory: marks it as seqkit's, and the run writing it holds an flock on it (its PID inside).
RUN_MARKER = ".seqkit-run"
# What a run writes at the top of its directory: what --overwrite removes (nothing else there is touched).
_RUN_FILES = ("metrics.jsonl", CONFIG, TOKENIZER, LABELS, TARGET_TOKENIZER, "error.log")
_RUN_DIRECTORIES = ("last", "best", "last.old", "best.old", "tb")


class TrainingInterrupted(SeqkitError):
    """Raised after SIGINT/SIGTERM once ``last/`` is saved; the run can be resumed."""

    def __init__(self, step: int, last: Path):
        self.step, self.last = step, last
        super().__init__(f"interrupted at step {step}; saved {last}")


class TrainingDiverged(SeqkitError):
    """The loss or the gradient became NaN or infinite; the weights were not updated with it."""


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


@dataclass
class TrainResult:
    """What ``train`` returns: where the run is and how it went."""

    run_dir: Path
    steps: int
    best_metrics: dict[str, Any] = field(default_factory=dict)
    test_metrics: Optional[dict[str, Any]] = None
    sample: Optional[str] = None
    train_tokens_per_sec: float = float("nan")  # steady state: first log interval and evaluations left out
    skipped_batches: int = 0  # train.on_nonfinite: skip
    rank: int = 0  # under torchrun, this process's rank: rank 0 alone reports


def train(recipe: Recipe, *, resume: bool = False, overwrite: bool = False, quiet: bool = False) -> TrainResult:
    """Train the model a recipe describes and write its run directory.

    Args:
        recipe: a validated recipe (``config.load_recipe``).
        resume: continue the run in ``recipe.output_dir`` from its ``last/`` checkpoint.
        overwrite: replace a run already in ``recipe.output_dir``.
        quiet: print nothing but what ``model.init_from`` loaded and the final summary.

    Returns:
        A ``TrainResult``.

    Raises:
        SeqkitError: bad input (named), divergence (``TrainingDiverged``), an interruption
            after ``last/`` was saved (``TrainingInterrupted``), or a full disk or lost
            directory (naming the checkpoints still intact).
    """
    if resume and overwrite:
        raise SeqkitError(f"{recipe.output_dir}: --resume continues the run there and --overwrite replaces it: pass one of them")
    excepthook = threading.excepthook
    threading.excepthook = _quiet_writer_errors(excepthook)
    doing, lock = _Doing(), _RunLock()
    try:
        return _train(recipe, doing, lock, resume=resume, overwrite=overwrite, quiet=quiet)
    except NotTextError as error:  # the recipe's data files are read with data.encoding: name it as the fix
        raise error.naming("data.encoding") from None
    except OSError as error:  # a full disk, a directory gone or turned read-only: one line, and what is safe
        raise SeqkitError(_describe_os_error(error, Path(recipe.output_dir))) from None
    except RuntimeError as error:  # a kernel or library failure inside torch: one line, the traceback to a file
        raise SeqkitError(_describe_failure(error, doing.now, Path(recipe.output_dir))) from None
    finally:
        lock.release()
        threading.excepthook = excepthook


class _Doing:
    """What training is doing now (``setting up``, ``step 12 (epoch 1, batch 12 of 211)``),
    for the one line that reports a failure inside torch."""

    now = "setting up"


def _train(recipe: Recipe, doing: _Doing, lock: "_RunLock", *, resume: bool, overwrite: bool, quiet: bool) -> TrainResult:
    """``train`` itself: setup, the loop, the report (``train`` adds only the handling of
    OS errors and of failures inside torch)."""
    world = distributed.setup(recipe.train.device)  # one process, or those torchrun started
    device = world.device
    say = (lambda message: None) if quiet or not world.main else tqdm.write
    run_dir = Path(recipe.output_dir)
    precision = resolve_precision(recipe.train.precision, device, recurrent_cells(recipe.model))  # auto: bf16 where it is native
    threads = choose_threads(recipe.train.threads)  # auto: the cores other processes leave free
    world.on_main(_prepare_run_dir, run_dir, recipe, lock, resume=resume, overwrite=overwrite)  # DDP: rank 0 alone locks
    seed_everything(recipe.seed)
    tune_allocator()

    task_class = TASKS[recipe.task]
    vectors = recipe.data.inputs == "vectors"  # no tokenizer: the inputs are numbers already
    source = resolve(recipe.model.init_from) if recipe.model.init_from is not None and not resume else None  # transfer
    if resume:
        tokenizer = None if vectors else load_tokenizer(run_dir / TOKENIZER)
        labels = read_labels(run_dir, recipe.task) if has_labels(run_dir) else None
    elif source is not None and recipe.model.init_vocabulary == "source":
        tokenizer, labels = load_tokenizer(source / TOKENIZER), None  # transfer: its embedding rows mean the same words
    else:
        tokenizer = world.on_main(lambda: load_tokenizer(recipe.tokenizer.path) if recipe.tokenizer.path and not vectors else task_class.make_tokenizer(recipe))
        labels = None
    with world.main_first():  # DDP: the task sees the global batch size and takes its slice of each batch
        task = task_class(world.task_recipe(recipe), tokenizer, labels)
    vocab_size, pad_id = (tokenizer.get_vocab_size(), special_ids(tokenizer).pad) if tokenizer is not None else (None, 0)
    try:
        model = build_model(recipe.task, recipe.model, vocab_size, pad_id, task.labels).to(device)
    except (MemoryError, RuntimeError) as error:  # sizes that pass validation but not the allocator
        if not isinstance(error, MemoryError) and "alloc" not in str(error).lower() and "out of memory" not in str(error).lower():
            raise
        sizes = ", ".join(f"model.{key}={getattr(recipe.model, key)}" for key in ("embedding_dim", "hidden_size", "num_layers"))
        sizes += f", vocabulary {vocab_size:,}" if vocab_size else ""
        raise RecipeError([f"the model does not fit in memory on {device} ({sizes}): choose smaller sizes"]) from None
    embeddings = recipe.model.embeddings
    if embeddings.pretrained is not None and not resume:
        coverage = load_vectors(model.embedding.embedding, tokenizer, embeddings.pretrained)
        say(coverage.describe(embeddings.pretrained) + ("; frozen" if embeddings.freeze else ""))
    if embeddings.freeze:
        model.embedding.embedding.weight.requires_grad_(False)
    fixed = {name for name, parameter in model.named_parameters() if not parameter.requires_grad}
    groups = layer_groups(model)
    transferred: set[str] = set()
    if source is not None:
        vocabularies = (load_tokenizer(source / TOKENIZER), tokenizer) if recipe.model.init_vocabulary == "task" else None
        report = transfer_weights(model, source, vocabularies)
        if not report.loaded:  # init_from asks for these weights: training from scratch instead would waste the run
            raise RecipeError([_nothing_transferred(report, recipe)])
        if world.main:  # even with quiet: a fact about the run, printed once, not progress
            tqdm.write(report.describe())
        transferred = set(report.loaded)
    state = load_trainer_state(run_dir / "last") if resume else None
    if state is not None:
        transferred = set(state["progress"].get("transferred", []))
    optimizer = build_optimizer(model, recipe.train, transferred if recipe.model.init_from is not None else None)
    steps_per_epoch = task.steps_per_epoch()
    total_steps = min(recipe.train.max_steps or math.inf, (recipe.train.epochs or math.inf) * steps_per_epoch)
    scheduler = build_scheduler(optimizer, recipe.train, total_steps, task.higher_is_better)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.chosen == "fp16")
    progress, carry, interval = Progress(), None, _Interval(device)
    _check_free_space(run_dir, model, recipe.train, tokenizer, resume=resume)
    world.seed_process(recipe.seed)  # DDP: dropout draws of its own in each process, the model built alike in all

    if state is not None:
        world.check_resume(read_config(run_dir / "last")[0].train.batch_size, state.get("world_size", 1), recipe.train.batch_size)
        load_weights(model, run_dir / "last" / WEIGHTS)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        progress = Progress(**state["progress"])
        carry = world.shard_carry(_to_device(state["carry"], device))
        interval.load_state_dict(state["interval"])
        world.restore_rng(state, recipe.seed, progress.step)
        if world.main:
            _drop_records_after(run_dir / "metrics.jsonl", progress.step)
        say(f"resuming {run_dir} at step {progress.step} (epoch {progress.epoch}, batch {progress.batch_in_epoch})")

    def start_writing() -> SummaryWriter:
        """Write the new run's config.yaml, tokenizer and labels (not on resume) and open TensorBoard."""
        if not world.main:
            return distributed.NullWriter()
        if not resume:
            (run_dir / CONFIG).write_text(_annotated_config(recipe, precision, threads), encoding="utf-8")
            if tokenizer is not None:
                (run_dir / TOKENIZER).write_text(tokenizer.to_str(), encoding="utf-8")
            if task.labels is not None:
                write_labels(run_dir, task.labels)
        # resume: TensorBoard drops what the run logged after the step it continues from, and keeps that step
        started = SummaryWriter(str(run_dir / "tb"), purge_step=progress.step + 1 if resume else None)
        if not resume:
            _log_hparams(started, recipe, task)
        return started

    # overwrite: the old run stays until the new one has read its data, built its model and made a step
    replace_old_run = overwrite and world.main and _holds_run(run_dir)
    writer = distributed.NullWriter() if replace_old_run else start_writing()
    say(f"{recipe.task}: {task.summary()}")
    say(f"model: {recipe.model.encoder} {recipe.model.num_layers}x{recipe.model.hidden_size}, "
        f"{count_parameters(model):,} parameters on {device}; {steps_per_epoch:,} step{'s' if steps_per_epoch != 1 else ''} per epoch")  # fmt: skip
    say(precision.describe())
    say(threads.describe())
    if world.distributed:
        say(f"distributed: {world.describe(recipe.train.batch_size)}")

    def save(name: str, info: dict[str, Any], trainer_state: Optional[dict[str, Any]] = None) -> None:
        info = {**info, "precision": precision.chosen}  # what train.precision: auto chose, beside the recipe's request
        try:
            save_checkpoint(run_dir / name, model, recipe, tokenizer, info, trainer_state=trainer_state, labels=task.labels)
        except CheckpointError as error:  # a full disk, a directory turned read-only: say what is still safe
            saved = _saved_checkpoints(run_dir)
            raise SeqkitError(f"{error}; " + (f"intact: {saved}; make room, then continue with --resume" if saved else
                                              "no checkpoint was saved before; make room, then train again with --overwrite"))  # fmt: skip

    def save_last(info: dict[str, Any]) -> None:
        rng = world.rng_states()  # DDP: gathered from every process, like the carried state of every row
        state = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "progress": asdict(progress),
            "carry": _to_device(world.gather_carry(carry), "cpu"),
            "interval": interval.state_dict(),
            "rng": rng[0],
            "rng_per_process": rng,
            "world_size": world.world_size,
        }
        if world.main:
            save("last", info, trainer_state=state)

    train_config = recipe.train
    epochs = train_config.epochs or math.inf
    bar = tqdm(total=None if math.isinf(total_steps) else int(total_steps), initial=progress.step, unit="step",
               disable=quiet or not sys.stdout.isatty() or not world.main, dynamic_ncols=True, leave=False)  # fmt: skip
    stop = _StopSignal(repeat_after=2.0 if world.distributed else 0.0)
    with stop:
        progress.transferred = sorted(transferred)
        while not progress.finished and progress.epoch < epochs:
            if transferred:  # which loaded layers train this epoch: a function of the epoch, so resume agrees
                apply_freezing(model, groups, transferred, trainable_groups(progress.epoch, len(groups), recipe.train), fixed)
            train_loss = world.loss_function(task, model)  # task.loss, in DDP when distributed
            batches = task.train_batches(progress.epoch, device)
            for index, batch, end_of_epoch in world.batches(batches, progress.batch_in_epoch):
                doing.now = _describe_step(progress, index, batches)
                model.train()
                with autocast(device, precision.chosen):
                    loss, num_targets, carry = train_loss(batch, carry)
                # detach the carried state: BPTT stops at chunk boundaries
                carry = _detach(carry)
                # DDP: back-propagate this process's share of the global batch's mean loss; log the global loss
                share, loss, num_targets = world.share(task, batch, loss, num_targets)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(share).backward()
                scaler.unscale_(optimizer)  # clip and log the true gradient under fp16
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), train_config.grad_clip or math.inf)
                problem = _nonfinite(loss, grad_norm, precision.chosen)  # one sync a step, before any update
                if problem is None:
                    scaler.step(optimizer)
                    interval.add(loss.detach(), num_targets, grad_norm)
                    progress.skipped_in_a_row = 0
                else:  # a NaN or inf never reaches the weights: stop here, or leave this batch out
                    where = _describe_batch(progress, index, batches, batch, tokenizer)
                    diverged = _skip_or_stop(problem, where, progress, train_config.on_nonfinite, run_dir)
                    if diverged is not None:
                        bar.close()
                        writer.close()
                        raise diverged
                    carry = None  # the carried state may hold the NaN too
                scaler.update()
                if not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    scheduler.step()

                progress.step += 1
                progress.batch_in_epoch = index + 1
                if replace_old_run:  # the first step is done: only now does the old run go
                    _remove_run(run_dir)
                    writer, replace_old_run = start_writing(), False
                if end_of_epoch:
                    progress.epoch, progress.batch_in_epoch, carry = progress.epoch + 1, 0, None
                bar.update()

                if progress.step % train_config.log_every == 0:
                    logged = interval.log(writer, progress.step, optimizer.param_groups[0]["lr"])
                    if train_config.on_nonfinite == "skip":
                        logged["skipped_batches"] = progress.skipped_batches
                        writer.add_scalar("train/skipped_batches", progress.skipped_batches, progress.step)
                    if scaler.is_enabled():  # fp16: the scaler halves its factor at each step it skips for overflow
                        logged["loss_scale"] = scaler.get_scale()
                        writer.add_scalar("train/loss_scale", logged["loss_scale"], progress.step)
                    _append_record(run_dir / "metrics.jsonl", {"step": progress.step, "split": "train", **logged})
                    bar.set_postfix(loss=f"{logged['loss']:.3f}", tok_s=f"{logged['tokens_per_sec']:,.0f}")

                out_of_steps = progress.step >= (train_config.max_steps or math.inf)
                out_of_epochs = end_of_epoch and progress.epoch >= epochs
                due = (train_config.eval_every is None and end_of_epoch) or (
                    train_config.eval_every is not None and progress.step % train_config.eval_every == 0
                )
                if due or out_of_steps or out_of_epochs:
                    interval.pause()
                    doing.now = f"the evaluation after step {progress.step}"
                    metrics = world.on_main(task.evaluate, model, precision.chosen)  # DDP: every process decides on rank 0's numbers
                    value = metrics[task.metric]
                    improved = progress.best_metric is None or (
                        value > progress.best_metric if task.higher_is_better else value < progress.best_metric
                    )
                    if improved:
                        progress.best_metric, progress.best_step = value, progress.step
                        progress.evals_without_improvement = 0
                    else:
                        progress.evals_without_improvement += 1
                    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                        scheduler.step(value)
                    early_stop = (train_config.early_stopping is not None
                                  and progress.evals_without_improvement >= train_config.early_stopping)  # fmt: skip
                    progress.finished = out_of_steps or out_of_epochs or early_stop
                    record = {
                        "step": progress.step,
                        "epoch": round(progress.step / steps_per_epoch, 3),
                        "split": "valid",
                        **metrics,
                        "train_loss": interval.take_eval_loss(),
                        "lr": optimizer.param_groups[0]["lr"],
                        "best": improved,
                    }
                    _append_record(run_dir / "metrics.jsonl", record)
                    _add_scalars(writer, "valid", metrics, progress.step)
                    writer.flush()
                    info = {"step": progress.step, "epoch": record["epoch"], "metrics": {"valid": metrics}}
                    if improved and world.main:
                        save("best", info)
                    save_last(info)
                    say(_describe_eval(record, task) + ("  *best" if improved else ""))
                    text = task.sample(model) if world.main else None  # generative tasks: what the model writes now
                    if text is not None:
                        writer.add_text("sample", "    " + text.replace("\n", "\n    "), progress.step)
                    if early_stop:
                        say(f"early stopping: no improvement in {train_config.early_stopping} evaluations")
                    interval.resume()
                if progress.finished:
                    break
                if world.any(stop.requested):  # DDP: a request to any process stops them all at this step
                    # finish the step in hand, save everything a resume needs, then leave
                    save_last({"step": progress.step, "epoch": round(progress.step / steps_per_epoch, 3)})
                    world.barrier()  # torchrun ends every process once one exits with an error: only after last/ is written
                    bar.close()
                    writer.close()
                    raise TrainingInterrupted(progress.step, run_dir / "last")
    bar.close()
    if not world.main:  # rank 0 reports
        return TrainResult(run_dir=run_dir, steps=progress.step, rank=world.rank)

    # Report on the best checkpoint: test metrics and, for generative tasks, a sample.
    doing.now = "the report on best/ after training"
    result = TrainResult(run_dir=run_dir, steps=progress.step, train_tokens_per_sec=interval.steady_tokens_per_sec(),
                         skipped_batches=progress.skipped_batches)  # fmt: skip
    best = run_dir / "best"
    if best.is_dir():
        load_weights(model, best / WEIGHTS)
        result.best_metrics = read_config(best)[1].get("metrics", {}).get("valid", {})
    holdout = recipe.data.holdout
    if recipe.data.test is not None or (holdout is not None and holdout.test > 0):
        result.test_metrics = task.evaluate(model, precision.chosen, split="test")
        _append_record(run_dir / "metrics.jsonl", {"step": progress.best_step, "split": "test", **result.test_metrics})
        _add_scalars(writer, "test", result.test_metrics, progress.best_step or 0)
    result.sample = task.sample(model)
    if result.sample is not None:
        writer.add_text("sample", "    " + result.sample.replace("\n", "\n    "), progress.step)
    writer.close()
    return result


def build_optimizer(model: torch.nn.Module, config: TrainConfig, loaded: Optional[set[str]] = None) -> torch.optim.Optimizer:
    """The optimizer named by ``train.optimizer``, with one parameter group per layer group
    (``transfer.parameter_groups``: discriminative learning rates for the tensors
    ``model.init_from`` loaded, when asked for)."""
    parameters = parameter_groups(model, config, loaded)
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    optimizer_class = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    device = next(model.parameters()).device
    fused = _fused_adam_runs(optimizer_class, device)  # one kernel for every tensor: 3.6x faster than per-tensor ops on a CPU
    return optimizer_class(parameters, lr=config.lr, weight_decay=config.weight_decay, **({"fused": True} if fused else {}))


def _fused_adam_runs(optimizer_class: type, device: torch.device) -> bool:
    """Whether this PyTorch has a fused Adam for the device (CPU: from torch 2.4)."""
    probe = torch.nn.Parameter(torch.zeros(2, device=device))
    probe.grad = torch.ones_like(probe)
    try:
        optimizer_class([probe], fused=True).step()
    except (RuntimeError, TypeError, ValueError):
        return False
    return True


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, total_steps: float, higher_is_better: bool):
    """The learning-rate schedule named by ``train.schedule``.

    ``plateau`` steps after each evaluation with the validation metric; ``none`` and
    ``cosine`` step after every optimizer step, with a linear warm-up over
    ``warmup_steps``. Cosine decays to ``min_lr`` at the last step.
    """
    if config.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max" if higher_is_better else "min", factor=config.plateau_factor,
            patience=config.plateau_patience, min_lr=config.min_lr,
        )  # fmt: skip
    warmup, floor = config.warmup_steps, config.min_lr / config.lr

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if config.schedule == "cosine" and math.isfinite(total_steps):
            done = min(1.0, (step - warmup) / max(1.0, total_steps - warmup))
            return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * done))
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _prepare_run_dir(run_dir: Path, recipe: Recipe, lock: "_RunLock", *, resume: bool, overwrite: bool) -> None:
    """Check the output directory before any work, and lock it: never lose a saved run, or
    a file seqkit did not write, by accident. ``overwrite`` removes nothing here: the old
    run goes once the new one has made its first step (``_remove_run``)."""
    if run_dir.is_dir() and not _seqkit_run(run_dir):
        others = sorted(path.name for path in run_dir.iterdir())
        if others:
            shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
            raise SeqkitError(f"{run_dir}: not a seqkit run directory and not empty (it holds {shown}); seqkit never writes "
                              "among files it did not write: choose a new or empty directory with --output-dir")  # fmt: skip
    if resume and not run_dir.is_dir():
        raise SeqkitError(f"{run_dir / 'last'}: nothing to resume (no checkpoint saved there yet)")
    _check_writable(run_dir)  # before recover() renames anything; a file in the way is named there
    lock.acquire(run_dir)
    if resume:
        recover(run_dir / "last")
        recover(run_dir / "best")
        if not (run_dir / "last").is_dir():
            raise SeqkitError(f"{run_dir / 'last'}: nothing to resume (no checkpoint saved there yet)")
        saved, _ = read_config(run_dir / "last")
        problems = [
            f"{run_dir / 'last' / CONFIG}: {key}: the run was trained with {old!r}, the recipe now says {new!r}"
            for key, old, new in _differences(saved.model_dump(mode="json"), recipe.model_dump(mode="json"))
            if key.split(".")[0] in _FIXED_SECTIONS
        ]
        if problems:
            raise RecipeError(problems + ["--resume continues a run with the same task, seed, data, tokenizer and model"])
        return
    existing = [name for name in ("last", "best", "metrics.jsonl", CONFIG) if (run_dir / name).exists()]
    if existing and not overwrite:
        raise SeqkitError(
            f"{run_dir}: already holds a run ({', '.join(existing)}); pass --resume to continue it, "
            "--overwrite to replace it, or --output-dir to train elsewhere"
        )


def _seqkit_run(run_dir: Path) -> bool:
    """Whether seqkit wrote ``run_dir``: it holds ``RUN_MARKER``, or (a run of an earlier
    seqkit, which wrote no marker) a ``last/`` or ``best/`` checkpoint, or a ``config.yaml``
    with a recipe's sections beside the ``tb/`` or ``metrics.jsonl`` of a run (a recipe of
    the user's alone does not make a directory seqkit's)."""
    if (run_dir / RUN_MARKER).is_file():
        return True
    if any(_recipe_like(run_dir / name / CONFIG) for name in ("last", "best", "last.old", "best.old")):
        return True
    return _recipe_like(run_dir / CONFIG) and ((run_dir / "tb").is_dir() or (run_dir / "metrics.jsonl").is_file())


def _recipe_like(config: Path) -> bool:
    """Whether ``config`` is a YAML mapping with a recipe's task, model and train sections."""
    try:
        data = yaml.safe_load(config.read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):  # absent, not text, not YAML: not seqkit's
        return False
    return isinstance(data, dict) and {"task", "model", "train"} <= data.keys()


def _holds_run(run_dir: Path) -> bool:
    """Whether a seqkit run directory holds anything of a run (what ``_remove_run`` removes)."""
    return any((run_dir / name).exists() for name in (*_RUN_FILES, *_RUN_DIRECTORIES)) or any(run_dir.glob(".*.tmp-*"))


def _remove_run(run_dir: Path) -> None:
    """``overwrite``: remove what a run wrote at the top of ``run_dir`` (its checkpoints, their
    leftovers of an interrupted save, metrics, TensorBoard, config.yaml, tokenizer, labels);
    anything else there stays."""
    for name in _RUN_DIRECTORIES:
        shutil.rmtree(run_dir / name, ignore_errors=True)
    for leftover in run_dir.glob(".*.tmp-*"):  # a save interrupted by a kill (checkpoint.save_checkpoint)
        shutil.rmtree(leftover, ignore_errors=True)
    for name in _RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    for log in run_dir.glob("error-rank*.log"):
        log.unlink()


class _RunLock:
    """The lock a run holds on its directory while it writes it: an flock on ``RUN_MARKER``,
    which holds the PID of the process that has it. The OS drops the lock when that process
    ends, however it ends (kill -9 included), so a lock is never left behind."""

    def __init__(self) -> None:
        self.handle: Any = None
        self.path: Optional[Path] = None

    def acquire(self, run_dir: Path) -> None:
        """Lock ``run_dir`` or say which process has it."""
        try:
            import fcntl
        except ImportError:  # Windows: no flock; runs are not locked there
            return
        path = run_dir / RUN_MARKER
        while True:
            handle = path.open("a+", encoding="utf-8")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip()
                handle.close()
                who = f"process {holder}" if holder.isdigit() else "another process"
                raise SeqkitError(f"{run_dir}: {who} is training into this directory now; wait for it to end or stop it, "
                                  "or choose another directory with --output-dir") from None  # fmt: skip
            try:
                same = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
            except FileNotFoundError:  # the run before released it and removed it meanwhile
                same = False
            if same:
                break
            handle.close()  # locked a marker that is gone: take the one there now
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self.handle, self.path = handle, path

    def release(self) -> None:
        """Unlock; remove the marker when the run wrote nothing else (a run that stopped
        before it started leaves the directory as it found it)."""
        if self.handle is None:
            return
        run_dir = self.path.parent
        try:
            if not any(path.name != RUN_MARKER for path in run_dir.iterdir()):
                self.path.unlink()
        except OSError:
            pass
        self.handle.close()
        self.handle = None


def _check_writable(run_dir: Path) -> None:
    """Create the run directory and write a probe file in it, or say why that fails."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".seqkit-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        in_the_way = next((path for path in (run_dir, *run_dir.parents) if path.exists() and not path.is_dir()), None)
        reason = f"{in_the_way} is a file, not a directory" if in_the_way is not None else error.strerror or str(error)
        raise SeqkitError(f"{run_dir}: cannot create or write the run directory ({reason}); choose another with --output-dir") from None


def _check_free_space(run_dir: Path, model: torch.nn.Module, config: TrainConfig, tokenizer: Any, *, resume: bool) -> None:
    """Refuse to start when the checkpoints cannot fit: ``best/``, ``last/`` (weights, the
    optimizer's moments, the tokenizer) and the temporary copy a save writes before it swaps
    it in -- about three ``last/`` in all; one more on resume, when the others exist already."""
    tensors = {id(tensor): tensor for tensor in model.state_dict(keep_vars=True).values()}.values()  # tied weights once
    weights = sum(tensor.numel() * tensor.element_size() for tensor in tensors)
    moments = 2 if config.optimizer in ("adam", "adamw") else int(config.momentum > 0)
    tokenizer_bytes = len(tokenizer.to_str()) if tokenizer is not None else 0
    last = weights * (1 + moments) + tokenizer_bytes + 2**16  # 64 KiB: config.yaml, labels, RNG states
    need = last if resume else 3 * last
    free = shutil.disk_usage(run_dir).free
    if free < need:
        raise SeqkitError(
            f"{run_dir}: not enough free disk space for the checkpoints: they need about {_megabytes(need)}, "
            f"{_megabytes(free)} is free; make room or choose another directory with --output-dir"
        )


def _megabytes(size: float) -> str:
    return f"{size / 1e6:,.1f} MB"


def _differences(old: Any, new: Any, prefix: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in dict.fromkeys([*old, *new]):
            found += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return found
    return [] if old == new else [(prefix.rstrip("."), old, new)]


class _Interval:
    """Sums over the steps since the last log line (and since the last evaluation), kept
    on the device so that training never waits for a ``.item()``."""

    def __init__(self, device: torch.device):
        self.device = device
        self.sums = torch.zeros(5, dtype=torch.float64, device=device)  # loss*n, n, grad norm, max grad norm, steps
        self.eval_sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss*n, n since the last evaluation
        self.started = time.perf_counter()
        self.paused_at: Optional[float] = None
        self.logs = 0
        self.steady = [0.0, 0.0]  # tokens, seconds after the first log interval

    def add(self, loss: torch.Tensor, num_targets: torch.Tensor, grad_norm: torch.Tensor) -> None:
        weighted = loss.double() * num_targets
        grad_norm = grad_norm.double()
        self.sums += torch.stack([weighted, num_targets.double(), grad_norm, torch.zeros_like(grad_norm), torch.ones_like(grad_norm)])
        self.sums[3] = torch.maximum(self.sums[3], grad_norm)
        self.eval_sums += torch.stack([weighted, num_targets.double()])

    def log(self, writer: SummaryWriter, step: int, lr: float) -> dict[str, float]:
        seconds = time.perf_counter() - self.started
        loss_sum, tokens, grad_sum, grad_max, steps = self.sums.tolist()
        logged = {
            "loss": loss_sum / tokens if tokens else float("nan"),  # nan: every batch of the interval was skipped
            "lr": lr,
            "grad_norm": grad_sum / max(steps, 1.0),
            "grad_norm_max": grad_max,
            "tokens_per_sec": tokens / max(seconds, 1e-9),
        }
        for name, value in logged.items():
            writer.add_scalar(f"train/{name}", value, step)
        self.logs += 1
        if self.logs > 1:  # the first interval holds warm-up costs
            self.steady[0] += tokens
            self.steady[1] += seconds
        self.sums.zero_()
        self.started = time.perf_counter()
        return logged

    def take_eval_loss(self) -> float:
        loss_sum, tokens = self.eval_sums.tolist()
        self.eval_sums.zero_()
        return loss_sum / tokens if tokens else float("nan")

    def pause(self) -> None:
        self.paused_at = time.perf_counter()

    def resume(self) -> None:
        self.started += time.perf_counter() - (self.paused_at or time.perf_counter())

    def steady_tokens_per_sec(self) -> float:
        return self.steady[0] / self.steady[1] if self.steady[1] else float("nan")

    def state_dict(self) -> dict[str, Any]:
        return {"sums": self.sums.cpu(), "eval_sums": self.eval_sums.cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sums = state["sums"].to(self.device)
        self.eval_sums = state["eval_sums"].to(self.device)


class _StopSignal:
    """Turns SIGINT / SIGTERM into a flag the loop checks after each step. A second signal
    stops at once, unless it comes within ``repeat_after`` seconds (torchrun forwards the
    terminal's Ctrl-C to processes that got it already)."""

    def __init__(self, repeat_after: float = 0.0):
        self.requested = False
        self.repeat_after, self.first = repeat_after, 0.0
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopSignal":
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGINT, signal.SIGTERM):
                self.previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number: int, frame: Any) -> None:
        if self.requested and time.monotonic() - self.first >= self.repeat_after:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        if not self.requested:
            self.requested, self.first = True, time.monotonic()

    def __exit__(self, *exc_info: Any) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)


def _nonfinite(loss: torch.Tensor, grad_norm: torch.Tensor, precision: str) -> Optional[str]:
    """What is NaN or infinite in this step (``None``: nothing). Under fp16 the gradient
    scaler skips steps whose scaled gradients overflow, by design, so only the loss counts."""
    values = [loss.detach().float()] if precision == "fp16" else [loss.detach().float(), grad_norm.detach().float()]
    loss_value, *grad_norm_value = torch.stack(values).tolist()
    if not math.isfinite(loss_value):
        return f"the loss is {loss_value}"
    if grad_norm_value and not math.isfinite(grad_norm_value[0]):
        return f"the gradient norm is {grad_norm_value[0]}"
    return None


def _describe_step(progress: Progress, index: int, batches: Any) -> str:
    """``step 13 (epoch 1, batch 13 of 25)``; a streamed epoch's length shows only at its end."""
    of = f" of {len(batches)}" if hasattr(batches, "__len__") else ""
    return f"step {progress.step + 1} (epoch {progress.epoch + 1}, batch {index + 1}{of})"


def _describe_batch(progress: Progress, index: int, batches: Any, batch: Any, tokenizer: Any) -> str:
    """Which batch: its step, epoch and place in the epoch (counted from 1) and how its first text begins."""
    where = _describe_step(progress, index, batches)[:-1]
    token_ids = next((getattr(batch, name) for name in ("token_ids", "sources", "inputs") if hasattr(batch, name)), None)
    if tokenizer is None or not isinstance(token_ids, torch.Tensor) or token_ids.dim() != 2 or token_ids.is_floating_point():
        return where + ")"
    length = int(batch.lengths[0]) if hasattr(batch, "lengths") else token_ids.shape[1]
    text = " ".join(tokenizer.decode(token_ids[0, :length].tolist()).split())
    return f"{where}, whose first text begins {text[:60]!r})"


def _skip_or_stop(problem: str, where: str, progress: Progress, on_nonfinite: str, run_dir: Path) -> Optional[TrainingDiverged]:
    """Count a batch left out for a NaN or inf; the error to raise when the run must stop instead."""
    if on_nonfinite == "skip" and progress.skipped_in_a_row + 1 < MAX_SKIPPED_IN_A_ROW:
        progress.skipped_batches += 1
        progress.skipped_in_a_row += 1
        return None
    last = run_dir / "last"
    step = _checkpoint_step(last)
    saved = f"the last good checkpoint is {last} (step {step})" if step is not None else "no checkpoint was saved yet"
    if on_nonfinite == "skip":
        return TrainingDiverged(f"{MAX_SKIPPED_IN_A_ROW} batches in a row had a NaN or infinite loss or gradient, the last at {where}: "
                                f"{problem}; {saved}. Lower train.lr or set train.grad_clip")  # fmt: skip
    return TrainingDiverged(f"{where}: {problem}, so training stopped before updating the weights; {saved}. "
                            "Lower train.lr, set train.grad_clip, or set train.on_nonfinite: skip to leave such batches out")  # fmt: skip


def _checkpoint_step(directory: Path) -> Optional[int]:
    """The step a checkpoint was saved at; ``None`` when there is none (or it is unreadable)."""
    try:
        return read_config(readable_directory(directory))[1].get("step")
    except SeqkitError:
        return None


def _saved_checkpoints(run_dir: Path) -> str:
    """The run's checkpoints and their steps, as a phrase: ``runs/x/best (step 20), runs/x/last (step 30)``."""
    steps = {name: _checkpoint_step(run_dir / name) for name in ("best", "last")}
    return ", ".join(f"{run_dir / name} (step {step})" for name, step in steps.items() if step is not None)


def _describe_os_error(error: OSError, run_dir: Path) -> str:
    """One line for an OSError met while training: what failed, and which checkpoints are intact."""
    where = f"{error.filename}: " if error.filename else ""
    saved = _saved_checkpoints(run_dir)
    then = f"intact: {saved}; fix that, then continue with --resume" if saved else "no checkpoint was saved yet; fix that, then train again with --overwrite"
    return f"{where}{error.strerror or error} (training into {run_dir}); {then}"


def _describe_failure(error: RuntimeError, doing: str, run_dir: Path) -> str:
    """One line for a failure inside torch (a kernel that does not run here, a bug): where
    training was, what failed, where the full traceback went, and which checkpoints are
    intact. The traceback goes to ``error.log`` in the run directory, for a bug report."""
    message = (str(error).strip() or type(error).__name__).splitlines()[0]
    rank = distributed.process_rank()[0]
    log = run_dir / ("error.log" if rank == 0 else f"error-rank{rank}.log")
    try:
        log.write_text("".join(traceback.format_exception(error)), encoding="utf-8")
        written = f"the full traceback is in {log}"
    except OSError as log_error:
        written = f"the traceback could not be written to {log} ({log_error.strerror or log_error})"
    saved = _saved_checkpoints(run_dir)
    intact = f"intact: {saved}" if saved else "no checkpoint was saved yet"
    return f"{doing}: {type(error).__name__} inside PyTorch: {message}; {written}; {intact}"


def _quiet_writer_errors(excepthook: Any) -> Any:
    """A ``threading.excepthook`` that leaves out TensorBoard's writer thread failing to
    write (a full disk): the main thread meets the same error at its next write, and
    ``train`` reports it in one line instead of a traceback."""

    def hook(args: Any) -> None:
        if not (issubclass(args.exc_type, OSError) and type(args.thread).__module__.startswith("tensorboard")):
            excepthook(args)

    return hook


def _detach(state: Optional[State]) -> Optional[State]:
    if state is None:
        return None
    return tuple(part.detach() for part in state) if isinstance(state, tuple) else state.detach()


def _to_device(state: Optional[State], device) -> Optional[State]:
    if state is None:
        return None
    return tuple(part.to(device) for part in state) if isinstance(state, (tuple, list)) else state.to(device)


def _log_hparams(writer: SummaryWriter, recipe: Recipe, task) -> None:
    """The recipe as TensorBoard hyperparameters (HParams tab) and as text."""
    flat = {}
    for section, values in recipe.model_dump(mode="json").items():
        items = values.items() if isinstance(values, dict) else [(None, values)]
        for key, value in items:
            name = f"{section}.{key}" if key else section
            flat[name] = value if isinstance(value, (int, float, str, bool)) else str(value)
    experiment, session_start, session_end = hparams(flat, {f"valid/{task.metric}": float("nan")})
    file_writer = writer._get_file_writer()
    for summary in (experiment, session_start, session_end):
        file_writer.add_summary(summary)
    writer.add_text("recipe", "    " + dump_recipe(recipe).replace("\n", "\n    "))


def _annotated_config(recipe: Recipe, precision: Precision, threads: Threads) -> str:
    """The run's ``config.yaml``: the resolved recipe, its precision and threads lines saying
    what ``auto`` chose on this machine (comments, so the file still trains as a recipe)."""
    text = dump_recipe(recipe)
    for key, choice in (("precision", precision), ("threads", threads)):
        if choice.requested != str(choice.chosen):
            line = f"  {key}: {choice.requested}\n"
            text = text.replace(line, f"{line[:-1]}  # -> {choice.chosen} here ({choice.reason})\n", 1)
    return text


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


def _describe_eval(record: dict[str, Any], task) -> str:
    return f"step {record['step']:>6}  epoch {record['epoch']:.2f}  train loss {record['train_loss']:.4f}  valid {task.describe(record)}"


def _add_scalars(writer: SummaryWriter, split: str, metrics: dict[str, Any], step: int) -> None:
    """The numbers among ``metrics`` as TensorBoard scalars (nested per-type scores too)."""
    for name, value in metrics.items():
        if isinstance(value, dict):
            _add_scalars(writer, f"{split}/{name}", value, step)
        elif isinstance(value, (int, float)):
            writer.add_scalar(f"{split}/{name}", value, step)


def _append_record(path: Path, record: dict[str, Any]) -> None:
    if not distributed.is_main():  # rank 0 writes metrics.jsonl
        return
    with path.open("a", encoding="utf-8") as handle:
        handle.write(_json_line(record) + "\n")


def _json_line(record: dict[str, Any]) -> str:
    """A ``metrics.jsonl`` line in strict JSON: a NaN or infinite number (a loss when every
    batch of the interval was skipped, a perplexity that overflowed) is written as null."""
    return json.dumps(_finite(record), allow_nan=False)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _drop_records_after(path: Path, step: int) -> None:
    """On resume, forget evaluations logged after the checkpoint we continue from."""
    if not path.exists():
        return
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:  # blank, or cut short by a kill or a full disk
            continue
    kept = [_json_line(r) for r in records if r.get("split") != "test" and (r.get("step") or 0) <= step]
    path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
