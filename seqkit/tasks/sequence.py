"""Many-to-one tasks -- classification and regression of whole sequences -- and regression
at every step, from JSON Lines (text or vectors) or ``.npz`` files.

Examples are read once (``read_splits``), validation and test examples held out of the
training file by a hash of a field when the recipe says so (``data.holdout``), long inputs
truncated (``data.max_length``), and batches of similar lengths padded and packed.
"""

from __future__ import annotations

import functools
from collections import Counter
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from ..config import DataConfig, Recipe
from ..data import Batches, Examples, SequenceBatch, bucketed_batches, collate_sequences, holdout_split, read_examples, truncate
from ..distributed import shard_batches
from ..errors import DataError, RecipeError
from ..labels import LabelSet, Targets
from ..metrics import classification_scores, regression_scores
from ..model import SequenceModel
from ..runtime import autocast
from ..tokenize import encode_ids, special_ids, tokenizer_for


class _SequenceTask:
    """What classification and regression share: reading, holdout, truncation, batching."""

    target_kind = ""  # "class" | "number"

    labels: LabelSet | Targets

    @classmethod
    def make_tokenizer(cls, recipe: Recipe) -> Optional[Tokenizer]:
        """The recipe's tokenizer trained on the training texts (held-out ones left out);
        ``None`` for vector inputs."""
        if recipe.data.inputs == "vectors":
            return None
        return tokenizer_for(recipe.tokenizer, read_splits(recipe, cls.target_kind)["train"].inputs)

    def __init__(self, recipe: Recipe, tokenizer: Optional[Tokenizer], labels: Optional[LabelSet | Targets] = None):
        self.recipe = recipe
        self.tokenizer = tokenizer
        self.pad_id = special_ids(tokenizer).pad if tokenizer is not None else 0
        self.examples = read_splits(recipe, self.target_kind)
        self.labels = labels if labels is not None else self._make_labels(self.examples["train"])
        self.encoded: dict[str, tuple[list, list, int]] = {}  # split -> (inputs, targets, truncated)
        for split in self.examples:
            self._encode(split)

    def _encode(self, split: str) -> tuple[list, list, int]:
        if split not in self.encoded:
            if split not in self.examples:
                path = getattr(self.recipe.data, split)
                if path is None:
                    raise RecipeError([f"data.{split}: no {split} file and nothing held out for it"])
                self.examples[split] = _read(self.recipe.data, path, self.target_kind, None)
            examples = self.examples[split]
            check_vectors(examples, self.recipe.model.input_size)
            inputs, truncated = encode_inputs(examples.inputs, self.tokenizer, self.recipe.data)
            self.encoded[split] = (inputs, self._target_values(examples), truncated)
        return self.encoded[split]

    def summary(self) -> str:
        parts = []
        for split in ("train", "valid", "test"):
            if split in self.encoded:
                inputs, _, truncated = self.encoded[split]
                note = f" ({truncated:,} truncated to {self.recipe.data.max_length})" if truncated else ""
                parts.append(f"{split} {len(inputs):,} examples{note}")
        holdout = self.recipe.data.holdout
        if holdout is not None:
            parts[-1] += f" (held out of {self.recipe.data.train} by {holdout.by or 'the input'})"
        if self.tokenizer is not None:
            parts.append(f"vocabulary {self.tokenizer.get_vocab_size():,}")
        else:
            parts.append(f"{self.recipe.model.input_size} numbers per step")
        return ", ".join(parts) + "; " + self._describe_targets()

    def train_batches(self, epoch: int, device: torch.device) -> Batches:
        """The batches of one epoch, grouped by length: a pure function of (seed, epoch);
        under DDP this process's part of each (``None`` where it is empty)."""
        inputs, targets, _ = self.encoded["train"]
        order = shard_batches(bucketed_batches([len(sequence) for sequence in inputs], self.recipe.train.batch_size, seed=f"{self.recipe.seed}:{epoch}"))
        return Batches(order, lambda batch: collate_sequences([inputs[i] for i in batch], self.pad_id, [targets[i] for i in batch]))

    def steps_per_epoch(self) -> int:
        return -(-len(self.encoded["train"][0]) // self.recipe.train.batch_size)

    def outputs(self, model: SequenceModel, split: str, precision: str = "fp32") -> tuple[list[np.ndarray], list]:
        """The model's raw outputs on a split, and the split's targets."""
        inputs, targets, _ = self._encode(split)
        outputs, _ = predict_outputs(model, inputs, self.recipe.train.eval_batch_size, self.pad_id, precision)
        return outputs, targets

    def sample(self, model: SequenceModel) -> None:
        return None


def class_weight_tensor(setting: Any, classes: Sequence[str], counts: Counter, noun: str = "class", plural: str = "classes") -> Optional[torch.Tensor]:
    """The loss weight of each of ``classes`` that ``train.class_weights`` gives: ``None``
    for none; ``balanced``: n / (classes * count), so each class that occurs weighs the same in
    total (one that never occurs in ``counts``, by class index, 0); a mapping: its weight, 1 for
    a class it leaves out. A name that is not among ``classes`` stops naming the key."""
    if setting is None:
        return None
    if setting == "balanced":
        total = sum(counts.values())
        return torch.tensor([total / (len(classes) * counts[i]) if counts[i] else 0.0 for i in range(len(classes))])
    unknown = sorted(set(setting) - set(classes))
    if unknown:
        raise RecipeError([f"train.class_weights: unknown {noun} {unknown[0]!r} ({plural}: {', '.join(classes)})"])
    return torch.tensor([float(setting.get(name, 1.0)) for name in classes])


class ClassificationTask(_SequenceTask):
    """One class per text (spam or ham, a topic, a sentiment). Picks ``best/`` by macro-F1."""

    name = "classification"
    metric = "macro_f1"
    higher_is_better = True
    target_kind = "class"

    def __init__(self, recipe: Recipe, tokenizer: Optional[Tokenizer], labels: Optional[LabelSet] = None):
        super().__init__(recipe, tokenizer, labels)
        self.class_weights = self._class_weights()

    def _make_labels(self, train: Examples) -> LabelSet:
        classes = sorted(set(train.targets))
        if len(classes) < 2:
            raise DataError(train.path, f"every training example has the class {classes[0]!r}: a classifier needs two classes or more")
        return LabelSet(classes, scheme=None, data_scheme=None)

    def _target_values(self, examples: Examples) -> list[int]:
        return class_ids(examples, self.labels.labels)

    def _class_weights(self) -> Optional[torch.Tensor]:
        return class_weight_tensor(self.recipe.train.class_weights, self.labels.labels, Counter(self.encoded["train"][1]))

    def _describe_targets(self) -> str:
        counts = Counter(self.encoded["train"][1])
        return "classes " + ", ".join(f"{name} {counts[i]:,}" for i, name in enumerate(self.labels.labels))

    def loss(self, model: SequenceModel, batch: SequenceBatch, carry: None) -> tuple[torch.Tensor, torch.Tensor, None]:
        """Mean (class-weighted) cross-entropy of a batch, its number of examples, no state."""
        device = next(model.parameters()).device
        batch = batch.to(device)
        logits, _ = model(batch.inputs, batch.lengths)  # (batch, classes)
        weights = None if self.class_weights is None else self.class_weights.to(device)
        return model.head.loss(logits, batch.targets, weights), torch.tensor(len(batch.lengths), device=device), None

    def loss_weight(self, batch: SequenceBatch) -> float:
        """What the loss of a batch is a mean over: its examples, each weighted by its class
        weight when there are class weights (DDP weighs each process's loss by it)."""
        if self.class_weights is None:
            return len(batch.lengths)
        return float(self.class_weights[batch.targets.cpu()].sum())

    def evaluate(self, model: SequenceModel, precision: str = "fp32", split: str = "valid") -> dict[str, Any]:
        """Accuracy, macro-F1 and per-class precision/recall/F1 on a split, and the loss."""
        logits, gold = self.outputs(model, split, precision)
        return classification_metrics(np.stack(logits), gold, self.labels.labels)

    def describe(self, metrics: dict[str, Any]) -> str:
        return f"loss {metrics['loss']:.4f}  accuracy {metrics['accuracy']:.4f}  macro-F1 {metrics['macro_f1']:.4f}"


def classification_metrics(logits: np.ndarray, gold: Sequence[int], classes: Sequence[str]) -> dict[str, Any]:
    """``metrics.classification_scores`` of (n, classes) logits, plus their mean cross-entropy."""
    tensor = torch.from_numpy(logits).float()
    targets = torch.tensor(list(gold), dtype=torch.long)
    loss = float(F.cross_entropy(tensor, targets)) if len(gold) else float("nan")
    return {"loss": loss, **classification_scores(list(gold), tensor.argmax(-1).tolist(), classes)}


class RegressionTask(_SequenceTask):
    """Real-valued targets for a whole sequence, or at every step (``model.pooling: none``).
    Trains on standardized targets (``data.normalize_targets``); picks ``best/`` by MAE."""

    name = "regression"
    metric = "mae"
    higher_is_better = False
    target_kind = "number"

    def _make_labels(self, train: Examples) -> Targets:
        values = checked_targets(train, self.recipe.model.pooling == "none")
        flat = np.concatenate([v.reshape(-1, v.shape[-1]) for v in values])
        field = self.recipe.data.target_field
        names = list(field) if not isinstance(field, str) else [field] if flat.shape[1] == 1 else [f"{field}[{i}]" for i in range(flat.shape[1])]
        if not self.recipe.data.normalize_targets:
            return Targets(names, [0.0] * len(names), [1.0] * len(names))
        std = flat.std(axis=0)
        return Targets(names, flat.mean(axis=0).tolist(), np.where(std > 0, std, 1.0).tolist())

    def _target_values(self, examples: Examples) -> list[np.ndarray]:
        return standardized_targets(examples, self.labels, self.recipe.data, self.recipe.model.pooling == "none")

    def _describe_targets(self) -> str:
        return "targets " + ", ".join(f"{name} (mean {mean:.4g}, std {std:.4g})" for name, mean, std in zip(self.labels.names, self.labels.mean, self.labels.std))

    def loss(self, model: SequenceModel, batch: SequenceBatch, carry: None) -> tuple[torch.Tensor, torch.Tensor, None]:
        """Mean loss of a batch on standardized targets, its number of examples, no state."""
        device = next(model.parameters()).device
        batch = batch.to(device)
        outputs, _ = model(batch.inputs, batch.lengths)  # (batch, outputs) or (batch, time, outputs)
        return model.head.loss(outputs, batch.targets, self.recipe.train.loss), torch.tensor(len(batch.lengths), device=device), None

    def loss_weight(self, batch: SequenceBatch) -> int:
        """What the loss of a batch is a mean over: its target values (per step: those of
        real steps); DDP weighs each process's loss by it."""
        return int((~torch.isnan(batch.targets)).sum())

    def evaluate(self, model: SequenceModel, precision: str = "fp32", split: str = "valid") -> dict[str, Any]:
        """MAE and RMSE in the data's units, against always predicting the training mean."""
        outputs, targets = self.outputs(model, split, precision)
        return regression_metrics(outputs, targets, self.labels, self.recipe.train.loss)

    def describe(self, metrics: dict[str, Any]) -> str:
        return f"loss {metrics['loss']:.4f}  MAE {metrics['mae']:.4g}  RMSE {metrics['rmse']:.4g}  (mean baseline MAE {metrics['baseline_mae']:.4g})"


def regression_metrics(outputs: Sequence[np.ndarray], targets: Sequence[np.ndarray], scale: Targets, loss: str = "mse") -> dict[str, Any]:
    """The loss on standardized values, and ``metrics.regression_scores`` in the data's units.

    Args:
        outputs, targets: per example, standardized (outputs,) or (time, outputs) arrays.
        scale: the targets' names, means and standard deviations.
        loss: ``mse`` or ``huber``, as in training.
    """
    predicted = np.concatenate([o.reshape(-1, o.shape[-1]) for o in outputs])
    gold = np.concatenate([t.reshape(-1, t.shape[-1]) for t in targets])
    difference = torch.from_numpy(predicted - gold)
    value = F.huber_loss(difference, torch.zeros_like(difference)) if loss == "huber" else (difference**2).mean()
    mean, std = np.asarray(scale.mean), np.asarray(scale.std)
    scores = regression_scores(gold * std + mean, predicted * std + mean, mean, scale.names)
    return {"loss": float(value), **scores, "examples": len(outputs)}


def class_ids(examples: Examples, classes: Sequence[str]) -> list[int]:
    """Each example's class as an index into ``classes``.

    Raises:
        DataError: a class the model does not know, naming its file and line.
    """
    index = {name: i for i, name in enumerate(classes)}
    ids = []
    for name, line in zip(examples.targets, examples.lines):
        if name not in index:
            raise DataError(examples.path, f"class {name!r} never occurs in the training data (classes: {', '.join(classes)})", line=line)
        ids.append(index[name])
    return ids


def checked_targets(examples: Examples, per_step: bool) -> list[np.ndarray]:
    """Every example's targets shaped (outputs,), or (time, outputs) with one row per input
    step when ``per_step``; all with the same number of outputs.

    Raises:
        DataError: naming the file and line of a target that does not fit.
    """
    shaped, width = [], None
    for values, vectors, line in zip(examples.targets, examples.inputs, examples.lines):
        if per_step:
            values = values.reshape(-1, 1) if values.ndim == 1 else values
            if len(values) != len(vectors):
                raise DataError(examples.path, f"model.pooling is none, so each step needs targets: found {len(values)} for {len(vectors)} steps", line=line)
        elif values.ndim != 1:
            raise DataError(examples.path, "expected one number per output (a list per step needs model.pooling: none)", line=line)
        if width is not None and values.shape[-1] != width:
            raise DataError(examples.path, f"{values.shape[-1]} target values; earlier examples had {width}", line=line)
        width = values.shape[-1]
        shaped.append(values)
    return shaped


def standardized_targets(examples: Examples, scale: Targets, data: DataConfig, per_step: bool) -> list[np.ndarray]:
    """``checked_targets``, truncated like their inputs and standardized with ``scale``."""
    values = checked_targets(examples, per_step)
    if values[0].shape[-1] != len(scale.names):
        raise DataError(examples.path, f"{values[0].shape[-1]} target values; the model predicts {len(scale.names)}", line=examples.lines[0])
    mean, std = np.asarray(scale.mean, dtype=np.float32), np.asarray(scale.std, dtype=np.float32)
    return [((truncate(v, data.max_length, data.truncation) if per_step else v) - mean) / std for v in values]


def evaluate_file(model: SequenceModel, tokenizer: Optional[Tokenizer], labels: LabelSet | Targets, recipe: Recipe, path: str | Path,
                  batch_size: int = 64, encoding: str = "utf-8") -> dict[str, Any]:  # fmt: skip
    """A classifier's or regression model's metrics on a data file (text in ``encoding``) read
    with its recipe's other ``data`` settings (what ``seqkit eval`` prints)."""
    data = recipe.data
    classify = recipe.task == "classification"
    examples = read_examples(path, data.input_field, data.target_field, data.inputs, "class" if classify else "number", encoding=encoding)
    check_vectors(examples, recipe.model.input_size)
    inputs, _ = encode_inputs(examples.inputs, tokenizer, data)
    outputs, _ = predict_outputs(model, inputs, batch_size, special_ids(tokenizer).pad if tokenizer is not None else 0)
    if classify:
        return classification_metrics(np.stack(outputs), class_ids(examples, labels.labels), labels.labels)
    targets = standardized_targets(examples, labels, data, recipe.model.pooling == "none")
    return regression_metrics(outputs, targets, labels, recipe.train.loss)


def check_vectors(examples: Examples, input_size: Optional[int]) -> None:
    """Vector inputs must have ``model.input_size`` numbers per step."""
    if input_size is not None and examples.inputs[0].shape[1] != input_size:
        raise DataError(examples.path, f"steps of {examples.inputs[0].shape[1]} numbers, but model.input_size is {input_size}", line=examples.lines[0])


def encode_inputs(inputs: Sequence, tokenizer: Optional[Tokenizer], data: DataConfig) -> tuple[list, int]:
    """Texts -> token ids (or vectors as they are), each truncated to ``data.max_length``.

    Returns the encoded inputs and how many were truncated. A text with no tokens becomes
    one padding step, so the model still gives an answer (its answer to no evidence).
    """
    if tokenizer is not None:
        pad = special_ids(tokenizer).pad
        sequences = [ids or [pad] for ids in encode_ids(tokenizer, inputs)]
    else:
        sequences = list(inputs)
    limit = data.max_length
    truncated = sum(len(sequence) > limit for sequence in sequences) if limit else 0
    return [truncate(sequence, limit, data.truncation) for sequence in sequences], truncated


@torch.inference_mode()
def predict_outputs(
    model: SequenceModel,
    inputs: Sequence,
    batch_size: int = 64,
    pad_id: int = 0,
    precision: str = "fp32",
    attention: bool = False,
) -> tuple[list[np.ndarray], Optional[list[np.ndarray]]]:
    """Run a many-to-one (or per-step) model over encoded inputs, in input order.

    Inputs are sorted by length into batches, so padding (and packing) wastes little.

    Returns:
        Each input's outputs as a float32 array -- (outputs,), or (time, outputs) per step --
        and, with ``attention``, each input's attention weights (time,) (``None`` otherwise).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    results: list[Optional[np.ndarray]] = [None] * len(inputs)
    weights: list[Optional[np.ndarray]] = [None] * len(inputs)
    for batch in bucketed_batches([len(sequence) for sequence in inputs], batch_size):
        tensors = collate_sequences([inputs[i] for i in batch], pad_id).to(device)
        with autocast(device, precision):
            outputs, batch_weights = model.predict(tensors.inputs, tensors.lengths, attention)  # a SequenceModel, or onnx_export.OnnxModel
            outputs = outputs.float().cpu().numpy()
        for row, index in enumerate(batch):
            length = int(tensors.lengths[row])
            results[index] = outputs[row, :length] if outputs.ndim == 3 else outputs[row]
            if attention:
                weights[index] = batch_weights[row, :length].float().cpu().numpy()
    model.train(was_training)
    return results, (weights if attention else None)


def read_splits(recipe: Recipe, target_kind: str, target_field: Any = "recipe") -> dict[str, Examples]:
    """The recipe's ``train`` and ``valid`` examples (and ``test`` when held out), with
    held-out examples taken from the training file by ``data.holdout``. Targets come from
    ``data.target_field``, or from ``target_field`` when given (``None``: none)."""
    data = recipe.data
    if target_field != "recipe":
        data = data.model_copy(update={"target_field": target_field})
    holdout = data.holdout
    train = _read(data, data.train, target_kind, holdout.by if holdout else None)
    splits = {"train": train}
    if holdout is not None:
        shares = {"train": 1.0, "valid": holdout.valid if data.valid is None else 0.0, "test": holdout.test if data.test is None else 0.0}
        parts = holdout_split(train.keys, shares["valid"], shares["test"])
        for split, indices in parts.items():
            if not indices and shares[split] > 0:
                raise DataError(data.train, f"holding out by {holdout.by or 'the input'} left no {split} examples of {len(train):,}; "
                                            f"change data.holdout or give data.{split} a file")  # fmt: skip
            if indices:
                splits[split] = train.subset(indices)
    if data.valid is not None:
        splits["valid"] = _read(data, data.valid, target_kind, None)
    return splits


def _read(data: DataConfig, path: str, target_kind: str, key_field: Optional[str]) -> Examples:
    file = Path(path)
    stamp = (file.stat().st_mtime_ns, file.stat().st_size) if file.is_file() else None
    fields = data.target_field if isinstance(data.target_field, (str, type(None))) else tuple(data.target_field)
    return _read_cached(str(path), stamp, data.input_field, fields, data.inputs, target_kind, key_field, data.encoding)


@functools.lru_cache(maxsize=8)
def _read_cached(path: str, stamp: Any, input_field: str, target_field: Any, inputs: str, target_kind: str, key_field: Optional[str],
                 encoding: str) -> Examples:  # fmt: skip
    # make_tokenizer and the task both read the training file: read (and check) it once
    return read_examples(path, input_field, target_field, inputs, target_kind, key_field, encoding)
