"""Transfer: start a model from another checkpoint's embedding and encoder (a language model
pretrained on raw text, ULMFiT-style), then free its layers gradually, each with its own
learning rate.

``transfer_weights`` copies every ``embedding.*`` and ``encoder.*`` tensor whose name and
shape match, and reports what was loaded, what is new and what was skipped for a shape
mismatch. When the model has a vocabulary of its own (``model.init_vocabulary: task``),
the word embedding is copied row by row instead: each word the source knows (as it is, or
lowercased) gets the source's row, every other word the mean of the source's rows, as
ULMFiT starts words its language model never saw. ``layer_groups`` orders the model's parameters from the top (head and anything
new) down to the embedding; ``trainable_groups`` says, for an epoch, how many of them train.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from tokenizers import Tokenizer
from torch import nn

from .checkpoint import WEIGHTS
from .config import TrainConfig
from .errors import CheckpointError

TRANSFERRED_PREFIXES = ("embedding.", "encoder.")
WORD_EMBEDDING = "embedding.embedding.weight"
_LAYER = re.compile(r"^encoder\.rnn\.\w+_l(\d+)(_reverse)?$")


@dataclass
class TransferReport:
    """What ``transfer_weights`` did, tensor by tensor."""

    source: str
    loaded: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)  # in this model, not taken from the source
    skipped: list[str] = field(default_factory=list)  # "name (source shape -> this shape)"
    rows: str = ""  # with a vocabulary of the model's own: how many word rows came from the source

    def describe(self) -> str:
        lines = [f"init_from {self.source}: loaded {len(self.loaded)} tensors, {len(self.new)} new, {len(self.skipped)} skipped (shape)"]
        lines += [f"  {self.rows}"] if self.rows else []
        lines += [f"  loaded  {name}" for name in self.loaded]
        lines += [f"  skipped {name}" for name in self.skipped]
        lines += [f"  new     {name}" for name in self.new]
        return "\n".join(lines)


@torch.no_grad()
def transfer_weights(model: nn.Module, source: str | Path, vocabularies: tuple[Tokenizer, Tokenizer] | None = None) -> TransferReport:
    """Copy the source checkpoint's embedding and encoder tensors into ``model`` where the
    name and shape match.

    Args:
        vocabularies: ``(source tokenizer, model tokenizer)`` when the model has a
            vocabulary of its own: the word embedding is then matched word by word.

    Raises:
        CheckpointError: the source has no readable weights.
    """
    path = Path(source) / WEIGHTS
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise CheckpointError(path, f"cannot read the weights to start from ({error})") from None
    report = TransferReport(str(source))
    loaded: set[int] = set()
    for name, tensor in model.state_dict().items():
        if tensor.numel() and tensor.data_ptr() in loaded:
            continue  # tied to a tensor just loaded (a language model's output layer and embedding)
        stored = tensors.get(name) if name.startswith(TRANSFERRED_PREFIXES) else None
        if stored is not None and name == WORD_EMBEDDING and vocabularies is not None and stored.shape[1:] == tensor.shape[1:]:
            report.rows = _copy_rows(tensor, stored, *vocabularies)
            report.loaded.append(name)
            loaded.add(tensor.data_ptr())
        elif stored is None:
            report.new.append(name)
        elif stored.shape != tensor.shape:
            report.skipped.append(f"{name} ({tuple(stored.shape)} -> {tuple(tensor.shape)})")
        else:
            tensor.copy_(stored)
            report.loaded.append(name)
            loaded.add(tensor.data_ptr())
    return report


def _copy_rows(embedding: torch.Tensor, stored: torch.Tensor, source: Tokenizer, target: Tokenizer) -> str:
    """Fill each of the target vocabulary's rows from the source row of the same word (or
    of its lowercase form), else with the mean source row; say how many were found."""
    known = source.get_vocab()
    lowered: dict[str, int] = {}
    for word, index in sorted(known.items(), key=lambda item: item[1]):
        lowered.setdefault(word.lower(), index)
    embedding.copy_(stored.float().mean(0).to(embedding.dtype).expand_as(embedding))
    exact = lowercase = 0
    vocabulary = target.get_vocab()
    for word, index in vocabulary.items():
        if word in known:
            embedding[index] = stored[known[word]]
            exact += 1
        elif word.lower() in lowered:
            embedding[index] = stored[lowered[word.lower()]]
            lowercase += 1
    found = exact + lowercase
    return (f"{WORD_EMBEDDING}: {found:,} of {len(vocabulary):,} words from the source ({found / max(len(vocabulary), 1):.1%}; "
            f"{lowercase:,} by their lowercase form), the rest start at the mean of its rows")


def layer_groups(model: nn.Module) -> list[list[str]]:
    """Parameter names from the top down: the head and everything else first, then each
    encoder layer from the last to the first, then the embedding (and character features)."""
    names = [name for name, _ in model.named_parameters()]
    layers = sorted({int(match.group(1)) for name in names if (match := _LAYER.match(name))}, reverse=True)
    embedding = [name for name in names if name.startswith("embedding.")]
    by_layer = [[name for name in names if (match := _LAYER.match(name)) and int(match.group(1)) == layer] for layer in layers]
    grouped = {name for group in [embedding, *by_layer] for name in group}
    return [[name for name in names if name not in grouped], *by_layer, embedding]


def parameter_groups(model: nn.Module, config: TrainConfig, loaded: Optional[set[str]] = None) -> list[dict]:
    """Optimizer parameter groups, one per layer group, top first; with
    ``train.lr_decay_per_layer`` the k-th group from the top learns at ``lr / decay**k``
    (discriminative learning rates). Those lower rates are for what was learned before:
    given the names ``model.init_from`` ``loaded``, a new tensor in a lower group (a
    tagger's character features, the reverse direction of its encoder) learns at the full
    rate, in the top group. Parameters frozen for good (``requires_grad`` off before
    training: fixed pretrained vectors) are left out."""
    parameters = dict(model.named_parameters())
    groups = layer_groups(model)
    if loaded is not None:  # new tensors join the top group
        new = [name for group in groups[1:] for name in group if name not in loaded]
        groups = [groups[0] + new, *[[name for name in group if name in loaded] for group in groups[1:]]]
    chosen_groups = []
    for depth, names in enumerate(groups):
        chosen = [parameters[name] for name in names if parameters[name].requires_grad]
        if chosen:
            chosen_groups.append({"params": chosen, "lr": config.lr / config.lr_decay_per_layer**depth, "names": names})
    return chosen_groups


def trainable_groups(epoch: int, num_groups: int, config: TrainConfig) -> int:
    """How many layer groups, from the top, train in ``epoch`` (the rest keep the weights
    they were loaded with): only the top one during the first ``train.freeze_pretrained``
    epochs; then all of them, or (``train.unfreeze: gradual``) one more each epoch."""
    if epoch < config.freeze_pretrained:
        return 1
    if config.unfreeze == "all":
        return num_groups
    return min(num_groups, 2 + epoch - config.freeze_pretrained)


def apply_freezing(model: nn.Module, groups: list[list[str]], loaded: set[str], count: int, fixed: set[str]) -> None:
    """Let the top ``count`` groups train; below them, freeze the loaded tensors. New
    tensors always train, wherever they are; ``fixed`` ones (frozen pretrained vectors) never do."""
    parameters = dict(model.named_parameters())
    for depth, names in enumerate(groups):
        for name in names:
            if name in loaded and name not in fixed:
                parameters[name].requires_grad_(depth < count)
