"""One-to-many generation: a decoder writes a text (a name, a line) from a condition (a
class such as ``female``), from JSON Lines of ``{text, condition}``.

Each text is read as ``<eos> t1 ... tn <eos>``: the model reads it up to ``tn`` and learns
to predict it from ``t1`` to the closing ``<eos>`` (teacher forcing). Validation reports
perplexity per token and, from samples generated at each evaluation, how many are real
held-out texts, copies of training texts, or new strings.
"""

from __future__ import annotations

import difflib

from collections import Counter
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from ..config import Recipe
from ..data import Batches, bucketed_batches, collate_sequences
from ..decoding import beam_search, sample, seeded_generator
from ..distributed import shard_batches
from ..labels import LabelSet
from ..metrics import perplexity
from ..model import ConditionedGenerator
from ..runtime import autocast
from ..tokenize import special_ids, tokenizer_for
from .sequence import class_ids, read_splits

SAMPLES_PER_CONDITION = 100  # generated at each evaluation to count real, copied and new texts


@dataclass
class GenerationBatch:
    """Padded ``<eos> t1 ... tn`` inputs, their ``t1 ... tn <eos>`` targets, and conditions."""

    inputs: torch.Tensor  # (batch, time)
    lengths: torch.Tensor  # (batch,) on the CPU
    targets: torch.Tensor  # (batch, time), pad_id after the end
    conditions: Optional[torch.Tensor]  # (batch,) condition ids, or None

    def to(self, device: torch.device) -> "GenerationBatch":
        conditions = None if self.conditions is None else self.conditions.to(device)
        return GenerationBatch(self.inputs.to(device), self.lengths, self.targets.to(device), conditions)


class GenerationTask:
    """Generate texts from a condition; ``best/`` is picked by validation perplexity."""

    name = "generation"
    metric = "perplexity"
    higher_is_better = False

    @staticmethod
    def make_tokenizer(recipe: Recipe) -> Tokenizer:
        return tokenizer_for(recipe.tokenizer, read_splits(recipe, "condition", recipe.data.condition_field)["train"].inputs)

    def __init__(self, recipe: Recipe, tokenizer: Tokenizer, labels: Optional[LabelSet] = None):
        self.recipe = recipe
        self.tokenizer = tokenizer
        self.ids = special_ids(tokenizer)
        self.examples = read_splits(recipe, "condition", recipe.data.condition_field)
        conditioned = recipe.data.condition_field is not None
        self.labels = labels or LabelSet(sorted(set(self.examples["train"].targets)) if conditioned else [], scheme=None, data_scheme=None)
        self.encoded = {split: self._encode(split) for split in self.examples}

    def _encode(self, split: str) -> tuple[list[list[int]], Optional[list[int]]]:
        examples = self.examples[split]
        sequences = [[self.ids.eos, *encoding.ids, self.ids.eos] for encoding in self.tokenizer.encode_batch(examples.inputs)]
        conditions = class_ids(examples, self.labels.labels) if self.labels.labels else None
        return sequences, conditions

    def summary(self) -> str:
        parts = [f"{split} {len(self.encoded[split][0]):,} texts" for split in ("train", "valid", "test") if split in self.encoded]
        conditions = Counter(self.encoded["train"][1] or [])
        described = ", ".join(f"{name} {conditions[i]:,}" for i, name in enumerate(self.labels.labels)) or "none"
        return f"{', '.join(parts)}; vocabulary {self.tokenizer.get_vocab_size():,}; conditions: {described}"

    def _batch(self, split: str, indices: Sequence[int]) -> GenerationBatch:
        sequences, conditions = self.encoded[split]
        inputs = collate_sequences([sequences[i][:-1] for i in indices], self.ids.pad)
        targets = collate_sequences([sequences[i][1:] for i in indices], self.ids.pad).inputs
        condition_tensor = torch.tensor([conditions[i] for i in indices]) if conditions is not None else None
        return GenerationBatch(inputs.inputs, inputs.lengths, targets, condition_tensor)

    def train_batches(self, epoch: int, device: torch.device) -> Batches:
        """The batches of one epoch, grouped by length: a pure function of (seed, epoch);
        under DDP this process's part of each (``None`` where it is empty)."""
        lengths = [len(sequence) for sequence in self.encoded["train"][0]]
        order = shard_batches(bucketed_batches(lengths, self.recipe.train.batch_size, seed=f"{self.recipe.seed}:{epoch}"))
        return Batches(order, lambda batch: self._batch("train", batch))

    def steps_per_epoch(self) -> int:
        return -(-len(self.encoded["train"][0]) // self.recipe.train.batch_size)

    def loss(self, model: ConditionedGenerator, batch: GenerationBatch, carry: None) -> tuple[torch.Tensor, torch.Tensor, None]:
        """Mean next-token cross-entropy of a batch, its number of targets, no state."""
        batch = batch.to(next(model.parameters()).device)
        logits, _ = model(batch.inputs, batch.lengths, conditions=batch.conditions)
        return model.head.loss(logits, batch.targets), (batch.targets != self.ids.pad).sum(), None

    @torch.inference_mode()
    def evaluate(self, model: ConditionedGenerator, precision: str = "fp32", split: str = "valid") -> dict[str, Any]:
        """Perplexity per token on a split, and what samples generated from each condition are."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        total, count = 0.0, 0
        lengths = [len(sequence) for sequence in self.encoded[split][0]]
        for indices in bucketed_batches(lengths, self.recipe.train.eval_batch_size):
            batch = self._batch(split, indices).to(device)
            with autocast(device, precision):
                logits, _ = model(batch.inputs, batch.lengths, conditions=batch.conditions)
            total += float(F.cross_entropy(logits.flatten(0, 1).float(), batch.targets.flatten(), ignore_index=self.ids.pad, reduction="sum"))
            count += int((batch.targets != self.ids.pad).sum())
        model.train(was_training)
        metrics: dict[str, Any] = {"loss": total / max(count, 1), "perplexity": perplexity(total, count), "tokens": count}
        return {**metrics, **self.novelty(model, split)}

    def novelty(self, model: ConditionedGenerator, split: str = "valid", per_condition: int = SAMPLES_PER_CONDITION) -> dict[str, Any]:
        """Shares of generated texts that are real texts of ``split`` (never trained on),
        copies of training texts, or new strings; ``per_condition`` samples per condition
        with the recipe's ``generate`` settings."""
        settings = self.recipe.generate
        train_texts, held_out = set(self.examples["train"].inputs), set(self.examples[split].inputs) - set(self.examples["train"].inputs)
        counts = Counter()
        for index, condition in enumerate(self.labels.labels or [None]):
            for text in generate_texts(model, self.tokenizer, self.labels, condition, per_condition, settings.max_tokens,
                                       temperature=settings.temperature, top_k=settings.top_k, top_p=settings.top_p, seed=self.recipe.seed + index):  # fmt: skip
                counts["training_copies" if text in train_texts else "heldout_real" if text in held_out else "new"] += 1
        total = sum(counts.values())
        return {name: counts[name] / total for name in ("heldout_real", "training_copies", "new")}

    def describe(self, metrics: dict[str, Any]) -> str:
        return (
            f"loss {metrics['loss']:.4f}  perplexity {metrics['perplexity']:.3f}  samples: {metrics['heldout_real']:.0%} held-out real, "
            f"{metrics['training_copies']:.0%} training copies, {metrics['new']:.0%} new"
        )

    def sample(self, model: ConditionedGenerator) -> str:
        """A few texts per condition with the recipe's ``generate`` settings and seed."""
        settings = self.recipe.generate
        lines = []
        for index, condition in enumerate(self.labels.labels or [None]):
            texts = generate_texts(model, self.tokenizer, self.labels, condition, 8, settings.max_tokens, temperature=settings.temperature,
                                   top_k=settings.top_k, top_p=settings.top_p, seed=self.recipe.seed + index)  # fmt: skip
            lines.append(f"{condition or 'sample'}: {', '.join(texts)}")
        return "\n".join(lines)


@torch.inference_mode()
def generate_texts(
    model: ConditionedGenerator,
    tokenizer: Tokenizer,
    labels: LabelSet,
    condition: Optional[str],
    num: int,
    max_length: int,
    *,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    seed: Optional[int] = None,
    beam: Optional[int] = None,
) -> list[str]:
    """Generate ``num`` texts from ``condition`` (sampling; ``temperature`` 0 is greedy), or
    the single best one by beam search of width ``beam``.

    Raises:
        ValueError: an unknown condition, or none for a conditioned model.
    """
    if labels.labels and condition is None:
        raise ValueError(f"this generator writes from a condition: give one of {', '.join(labels.labels)} (seqkit generate: --condition)")
    if labels.labels and condition not in labels.labels:
        lowered = {label.lower(): label for label in labels.labels}
        close = difflib.get_close_matches(str(condition).lower(), list(lowered), n=1)
        hint = f" (did you mean {lowered[close[0]]!r}?)" if close else ""
        raise ValueError(f"unknown condition {condition!r}{hint}: this model knows {', '.join(labels.labels)}")
    if not labels.labels and condition is not None:
        raise ValueError("this generator has no conditions: leave condition out")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    ids = special_ids(tokenizer)
    rows = 1 if beam else num
    conditions = torch.full((rows,), labels.labels.index(condition), device=device) if labels.labels else None
    state = model.initial_state(conditions)
    if state is None:
        zeros = torch.zeros(model.encoder.state_shape(rows), device=device)
        state = (zeros, zeros.clone()) if model.encoder.cell == "lstm" else zeros

    def step(tokens: torch.Tensor, carried: tuple[Any, Optional[torch.Tensor]]) -> tuple[torch.Tensor, Any]:
        rnn_state, row_conditions = carried
        logits, rnn_state = model(tokens[:, None], state=rnn_state, conditions=row_conditions)
        return logits[:, -1], (rnn_state, row_conditions)

    def reorder(carried: tuple[Any, Optional[torch.Tensor]], picked: torch.Tensor) -> tuple[Any, Optional[torch.Tensor]]:
        rnn_state, row_conditions = carried
        picked_state = tuple(part.index_select(1, picked) for part in rnn_state) if isinstance(rnn_state, tuple) else rnn_state.index_select(1, picked)
        return picked_state, None if row_conditions is None else row_conditions.index_select(0, picked)

    first = torch.full((rows,), ids.eos, dtype=torch.long, device=device)
    banned = (ids.pad, ids.unk)
    if beam:
        outputs = [sequence for sequence, _ in beam_search(step, first, (state, conditions), reorder, max_length, beam=beam, end_id=ids.eos, banned_ids=banned)]
    else:
        outputs = sample(step, first, (state, conditions), max_length, end_id=ids.eos, temperature=temperature, top_k=top_k, top_p=top_p,
                         generator=seeded_generator(device, seed), banned_ids=banned)  # fmt: skip
    model.train(was_training)
    return [tokenizer.decode(output, skip_special_tokens=True) for output in outputs]
