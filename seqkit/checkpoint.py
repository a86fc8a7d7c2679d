"""Writing and reading checkpoint directories (DESIGN.md, "Checkpoint directory").

::

    config.yaml          the resolved recipe + a ``checkpoint:`` block (format, version, step, metrics)
    model.safetensors    weights: loading a checkpoint never runs code
    tokenizer.json       Hugging Face tokenizers format (absent for vector inputs)
    labels.json          the tags and their scheme, the classes or conditions, or the regression targets
    target_tokenizer.json  seq2seq: the outputs' tokenizer (instead of labels.json)
    trainer_state.pt     under last/ only: optimizer, schedule, step, data position, RNG;
                         loaded with ``torch.load(weights_only=True)``

A checkpoint is written whole into a temporary sibling directory, each file flushed to
disk, and then swapped in by renames, so a crash mid-save leaves the previous checkpoint
loadable (at ``NAME`` or, during the swap itself, at ``NAME.old``). A save that fails (a
full disk, a directory turned read-only) removes its temporary directory and leaves the
previous checkpoint in place.

A save replaces the whole directory, so ``check_save_target`` lets ``save_pretrained``
write only where nothing but a checkpoint would be lost; ``checkpoint_in`` finds the
checkpoint a run directory means (its ``best/``); ``new_file`` writes an output file
(an archive, word vectors) without ever leaving half of one or replacing a file unasked.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as serialize_tensors
from torch import nn
from tokenizers import Tokenizer

from . import __version__
from .config import Recipe, recipe_from_dict
from .errors import CheckpointError, RecipeError, SeqkitError
from .labels import LabelSet, Targets
from .model import SequenceModel, build_model
from .tokenize import load_tokenizer, special_ids

FORMAT_VERSION = 1
CONFIG, WEIGHTS, TOKENIZER, LABELS = "config.yaml", "model.safetensors", "tokenizer.json", "labels.json"
TARGET_TOKENIZER = "target_tokenizer.json"  # seq2seq: the outputs' vocabulary, in place of labels.json
TRAINER_STATE = "trainer_state.pt"
CHECKPOINT_FILES = frozenset({CONFIG, WEIGHTS, TOKENIZER, LABELS, TARGET_TOKENIZER, TRAINER_STATE})
RUN_ENTRIES = ("best", "last", "best.old", "last.old", "metrics.jsonl", "tb")  # what only a run directory holds


@dataclass
class Checkpoint:
    """A loaded checkpoint: everything needed to use the model, nothing else."""

    model: SequenceModel
    recipe: Recipe
    tokenizer: Optional[Tokenizer]  # None for vector inputs
    labels: Optional[LabelSet | Targets | Tokenizer]  # seq2seq: the target tokenizer
    info: dict[str, Any]  # the ``checkpoint:`` block of config.yaml


def save_checkpoint(
    directory: str | Path,
    model: SequenceModel,
    recipe: Recipe,
    tokenizer: Optional[Tokenizer],
    info: Optional[dict[str, Any]] = None,
    trainer_state: Optional[dict[str, Any]] = None,
    labels: Optional[LabelSet | Targets | Tokenizer] = None,
) -> Path:
    """Write a checkpoint directory atomically.

    Args:
        directory: where the checkpoint goes (replaced if it exists).
        model: the model; its weights are saved with safetensors.
        recipe: the resolved recipe the model was built from.
        tokenizer: the tokenizer the model reads (``None`` for vector inputs).
        info: extra facts for the ``checkpoint:`` block (step, epoch, metrics).
        trainer_state: what ``--resume`` needs (only for ``last/``).
        labels: the tags or classes (``LabelSet``) or regression targets (``Targets``).

    Raises:
        CheckpointError: the checkpoint could not be written (a full disk, no permission);
            the temporary directory is removed and ``directory`` is left as it was.
    """
    directory = Path(directory)
    temporary = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
    config = recipe.model_dump(mode="json")
    config["checkpoint"] = {
        **(info or {}),  # step, epoch, metrics (a re-saved checkpoint keeps its own)
        "format_version": FORMAT_VERSION,
        "seqkit_version": __version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    try:
        recover(directory)
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir(parents=True)
        _write_text(temporary / CONFIG, yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
        save_weights(model, temporary / WEIGHTS)
        if tokenizer is not None:
            _write_text(temporary / TOKENIZER, tokenizer.to_str())
        if labels is not None:
            write_labels(temporary, labels)
        if trainer_state is not None:
            buffer = io.BytesIO()
            torch.save(trainer_state, buffer)
            _write_bytes(temporary / TRAINER_STATE, buffer.getvalue())
        for path in temporary.iterdir():
            _fsync(path)
        _swap_in(temporary, directory)
    except OSError as error:
        shutil.rmtree(temporary, ignore_errors=True)
        with contextlib.suppress(OSError):
            recover(directory)  # put back a checkpoint the swap had moved aside
        raise CheckpointError(directory, f"cannot save the checkpoint ({error.strerror or error}); what was there is unchanged") from None
    return directory


def load_checkpoint(directory: str | Path, device: torch.device | str = "cpu") -> Checkpoint:
    """Rebuild a model from a checkpoint directory, in eval mode on ``device``.

    Raises:
        CheckpointError: a file is missing or does not fit the others.
    """
    directory = readable_directory(directory)
    recipe, info = read_config(directory)
    tokenizer = None
    if recipe.data.inputs == "text":
        tokenizer_path = directory / TOKENIZER
        if not tokenizer_path.is_file():
            raise CheckpointError(tokenizer_path, "missing: a checkpoint needs its tokenizer")
        try:
            tokenizer = load_tokenizer(tokenizer_path)
        except SeqkitError as error:
            raise CheckpointError(tokenizer_path, str(error)) from None
    labels = read_labels(directory, recipe.task) if recipe.task != "language_model" else None
    vocab_size, pad_id = (tokenizer.get_vocab_size(), special_ids(tokenizer).pad) if tokenizer is not None else (None, 0)
    model = build_model(recipe.task, recipe.model, vocab_size, pad_id, labels)
    load_weights(model, directory / WEIGHTS)
    model.to(device).eval()
    return Checkpoint(model, recipe, tokenizer, labels, info)


def write_labels(directory: str | Path, labels: LabelSet | Targets | Tokenizer) -> None:
    """Write what a model's outputs mean: ``labels.json``, or a seq2seq model's
    ``target_tokenizer.json``."""
    directory = Path(directory)
    if isinstance(labels, Tokenizer):
        (directory / TARGET_TOKENIZER).write_text(labels.to_str(), encoding="utf-8")
    else:
        (directory / LABELS).write_text(json.dumps(labels.to_json(), indent=1) + "\n", encoding="utf-8")


def has_labels(directory: str | Path) -> bool:
    """Whether ``directory`` holds ``labels.json`` or ``target_tokenizer.json``."""
    return (Path(directory) / LABELS).is_file() or (Path(directory) / TARGET_TOKENIZER).is_file()


def read_labels(directory: str | Path, task: str) -> LabelSet | Targets | Tokenizer:
    """Read what ``write_labels`` wrote for a model of ``task``: a ``LabelSet`` (tags,
    classes, conditions), ``Targets`` (regression) or the target ``Tokenizer`` (seq2seq)."""
    if task == "seq2seq":
        path = Path(directory) / TARGET_TOKENIZER
        if not path.is_file():
            raise CheckpointError(path, "missing: a seq2seq model needs its target tokenizer")
        try:
            return load_tokenizer(path)
        except SeqkitError as error:
            raise CheckpointError(path, str(error)) from None
    path = Path(directory) / LABELS
    if not path.is_file():
        raise CheckpointError(path, "missing: a model with labels or targets needs this file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Targets.from_json(data) if "targets" in data else LabelSet.from_json(data)
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(path, f"not a seqkit labels file ({error})") from None


def save_weights(model: nn.Module, path: str | Path) -> None:
    """Write a model's weights with safetensors; a tied tensor is stored once, under the
    first name ``state_dict`` gives it. Tensors are copied to the CPU first, which also
    separates cuDNN's flattened RNN weights (views into one buffer) into tensors of their own."""
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        tensors[name] = tensor.detach().to("cpu", copy=True).contiguous()
    # serialized in memory and written by Python: a full disk is then an OSError with its errno
    _write_bytes(Path(path), serialize_tensors(tensors))


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Fill a model, on any device, from a file ``save_weights`` wrote; every weight must fit.

    Raises:
        CheckpointError: the file is missing, unreadable, or does not fit the model.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "missing: a checkpoint needs its weights")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(path, f"unreadable or truncated ({error})") from None
    expected = model.state_dict(keep_vars=True)
    stored_ids = {id(expected[name]) for name in tensors if name in expected}
    missing = [name for name, tensor in expected.items() if name not in tensors and id(tensor) not in stored_ids]
    unexpected = [name for name in tensors if name not in expected]
    wrong_shape = [
        f"{name} {tuple(tensors[name].shape)} (config.yaml builds {tuple(expected[name].shape)})"
        for name in tensors
        if name in expected and tensors[name].shape != expected[name].shape
    ]
    if missing or unexpected or wrong_shape:
        details = [f"{label}: {', '.join(names)}" for label, names in
                   (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)) if names]  # fmt: skip
        raise CheckpointError(path, f"does not fit config.yaml ({'; '.join(details)})")
    model.load_state_dict(tensors, strict=False)  # copies in place: tied and flattened weights stay so


def read_config(directory: str | Path) -> tuple[Recipe, dict[str, Any]]:
    """The recipe and the ``checkpoint:`` block of a checkpoint's ``config.yaml``."""
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise CheckpointError(Path(directory), f"not a seqkit checkpoint (no {CONFIG})")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise CheckpointError(path, f"unreadable ({error})") from None
    if not isinstance(data, dict):
        raise CheckpointError(path, "not a seqkit checkpoint config")
    info = data.pop("checkpoint", None) or {}
    version = info.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(path, f"written in checkpoint format {version}, newer than this seqkit {__version__} reads ({FORMAT_VERSION}); upgrade seqkit")
    try:
        recipe = recipe_from_dict(data, path)
    except RecipeError as error:
        raise CheckpointError(path, "; ".join(error.problems)) from None
    return recipe, info


def load_trainer_state(directory: str | Path) -> dict[str, Any]:
    """The trainer state under ``last/``, loaded without running any pickled code."""
    path = readable_directory(directory) / TRAINER_STATE
    if not path.is_file():
        raise CheckpointError(path, "missing: cannot resume without the trainer state")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # unpickling errors come in many types
        if str(error).startswith("Weights only load failed"):  # torch's own first line advises weights_only=False: not here
            raise CheckpointError(path, "refused: unpickling it would run code or build objects other than tensors and plain data") from None
        raise CheckpointError(path, f"unreadable ({str(error).splitlines()[0]})") from None


def checkpoint_in(directory: str | Path, report: Optional[Callable[[str], None]] = None) -> Path:
    """The checkpoint directory that ``directory`` means: itself, or for a run directory its
    ``best/`` (``last/`` when there is no ``best/`` yet, which ``report`` is told).

    Raises:
        CheckpointError: ``directory`` is missing, or a run directory with no checkpoint yet.
    """
    given = Path(directory)
    directory = readable_directory(given)
    if (directory / WEIGHTS).is_file() or not run_entries(directory):
        return directory  # a checkpoint, or what load_checkpoint names the missing part of
    for name in ("best", "last"):
        with contextlib.suppress(CheckpointError):
            checkpoint = readable_directory(given / name)
            if report is not None:
                report(f"{given} is a run directory: using {checkpoint}" if name == "best" else
                       f"{given} is a run directory with no best/ checkpoint: using {checkpoint}, its latest")  # fmt: skip
            return checkpoint
    raise CheckpointError(given, "a run directory with no checkpoint yet (no best/ or last/): train until the first evaluation saves one")


def run_entries(directory: Path) -> list[str]:
    """What ``directory`` holds of a run directory's own entries (``best``, ``last``, ``tb``, ...)."""
    return [name for name in RUN_ENTRIES if (directory / name).exists()]


def check_save_target(directory: str | Path, overwrite: bool = False) -> None:
    """Refuse to save a checkpoint where the save would destroy what is not a checkpoint.

    A save replaces ``directory`` whole. That is fine where there is nothing, or an empty
    directory; where seqkit's own checkpoint is, only with ``overwrite``; never where
    anything else is (a file, a run directory, a directory with other files).

    Raises:
        CheckpointError: naming ``directory`` and what to do instead.
    """
    directory = Path(directory)
    old = _old(directory)
    if old.exists() or old.is_symlink():
        if not _is_checkpoint_directory(old):  # a save moves the checkpoint aside there, then deletes it
            raise CheckpointError(old, f"in the way: saving {directory} moves what is there aside to this name; move or rename it first")
        if not directory.exists():  # a swap cut off: the checkpoint is at NAME.old, and recover() puts it back
            directory = old
    if directory.is_symlink():
        raise CheckpointError(directory, "a symbolic link: save to the directory it points to, or to a new directory")
    if not directory.exists():
        return
    if not directory.is_dir():
        raise CheckpointError(directory, "exists and is not a directory: save to a new directory (a checkpoint is a directory)")
    entries = sorted(directory.iterdir())
    if not entries:
        return
    in_run = run_entries(directory)
    if in_run:
        raise CheckpointError(directory, f"a run directory (it holds {', '.join(f'{name}/' if (directory / name).is_dir() else name for name in in_run)}): "
                                         f"save to a new directory, or to {directory / 'best'} with overwrite=True to replace its best checkpoint")  # fmt: skip
    if not _is_checkpoint_directory(directory):
        others = [f"{path.name}/" if path.is_dir() else path.name for path in entries if not (path.is_file() and path.name in CHECKPOINT_FILES)]
        held = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise CheckpointError(directory, f"not a seqkit checkpoint directory (it holds {held or 'no config.yaml written by seqkit'}), "
                                         "and saving would replace it whole: save to a new or empty directory")  # fmt: skip
    if not overwrite:
        raise CheckpointError(directory, "already holds a checkpoint: pass overwrite=True to replace it, or save to a new directory")


def _is_checkpoint_directory(directory: Path) -> bool:
    """Whether ``directory`` holds a checkpoint seqkit wrote and nothing else: only checkpoint
    files, among them a ``config.yaml`` with a ``checkpoint:`` block."""
    if directory.is_symlink() or not directory.is_dir():
        return False
    if any(not (path.is_file() and path.name in CHECKPOINT_FILES) for path in directory.iterdir()):
        return False
    try:
        data = yaml.safe_load((directory / CONFIG).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and isinstance(data.get("checkpoint"), dict)


def check_new_file(path: str | Path, overwrite: bool = False, make_directory: bool = False) -> Path:
    """Refuse to write the file ``path`` where the write would replace what the user did not
    ask to replace: an existing file (unless ``overwrite``, which ``--overwrite`` sets), a
    directory, or a path in a directory that does not exist (unless ``make_directory``: the
    caller creates it) or that is a file.

    Raises:
        SeqkitError: naming ``path`` and the fix.
    """
    path = Path(path)
    if path.is_dir():
        raise SeqkitError(f"{path}: is a directory: name the file to write")
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise SeqkitError(f"{path}: already exists: pass --overwrite to replace it, or choose another name")
    blocked = next((parent for parent in path.parents if parent.exists() and not parent.is_dir()), None)
    if blocked is not None:
        raise SeqkitError(f"{path}: cannot write it: {blocked} is a file, not a directory (choose another path)")
    if not path.parent.is_dir() and not make_directory:
        raise SeqkitError(f"{path}: cannot write it: the directory {path.parent} does not exist (create it first, or choose another path)")
    if (path.parent / CONFIG).is_file() and (path.parent / WEIGHTS).is_file():  # --overwrite never reaches a checkpoint's own files
        raise SeqkitError(f"{path}: cannot write it: {path.parent} is a checkpoint directory, which only seqkit writes (choose a path outside it)")
    return path


@contextlib.contextmanager
def new_file(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write the file to, renamed to ``path`` (replacing
    what is there) when the block ends without error and removed when it does not, so that
    ``path`` never holds half a file.

    Raises:
        SeqkitError: writing failed (a full disk, no permission), naming ``path``.
    """
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield temporary
        _fsync(temporary)
        os.replace(temporary, path)
    except OSError as error:
        raise SeqkitError(f"{path}: cannot write it ({error.strerror or error}); nothing was written there") from None
    finally:
        temporary.unlink(missing_ok=True)


def readable_directory(directory: str | Path) -> Path:
    """The directory to read a checkpoint from: ``directory``, or ``directory.old`` when a
    save was cut off in the middle of swapping the new checkpoint in."""
    directory = Path(directory)
    if directory.is_dir():
        return directory
    old = _old(directory)
    if not directory.exists() and old.is_dir():
        return old
    raise CheckpointError(directory, "checkpoint directory not found")


def recover(directory: str | Path) -> None:
    """Finish or undo a swap that a crash interrupted, leaving ``directory`` complete."""
    directory = Path(directory)
    old = _old(directory)
    if old.is_dir():
        if directory.is_dir():
            shutil.rmtree(old)
        else:
            os.rename(old, directory)
    for leftover in directory.parent.glob(f".{directory.name}.tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _swap_in(temporary: Path, directory: Path) -> None:
    old = _old(directory)
    if directory.exists():
        os.rename(directory, old)
    os.rename(temporary, directory)
    shutil.rmtree(old, ignore_errors=True)
    with contextlib.suppress(OSError):  # the new checkpoint is in place; this only hastens the renames to disk
        _fsync(directory.parent)


def _old(directory: Path) -> Path:
    return directory.with_name(directory.name + ".old")


def _write_text(path: Path, text: str) -> None:
    with path.open("w", encoding="utf-8") as handle:
        handle.write(text)


def _write_bytes(path: Path, data: bytes) -> None:
    with path.open("wb") as handle:
        handle.write(data)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
