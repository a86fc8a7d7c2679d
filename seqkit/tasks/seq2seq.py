"""Sequence to sequence of a different length (grapheme-to-phoneme, transliteration,
translation): ``SOURCE<TAB>TARGET`` pairs, an encoder and an attention decoder.

The target is read as ``<eos> y1 ... yn <eos>`` with its own tokenizer (the recipe's
``target_tokenizer``; for G2P, phonemes split on spaces), which a checkpoint keeps as
``target_tokenizer.json``. Training feeds the decoder the gold previous token with a
probability that moves from ``train.teacher_forcing`` to ``train.teacher_forcing_end``
over the epochs (scheduled sampling); validation decodes greedily and reports the token
error rate (PER) and the sequence error rate (WER); a source listed more than once in a
file (a word with alternative pronunciations) is right when it matches any of its targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from ..config import Recipe
from ..data import Batches, bucketed_batches, collate_sequences, read_examples
from ..decoding import beam_search, sample
from ..distributed import shard_batches
from ..metrics import group_references, perplexity, sequence_error_rates
from ..model import Seq2SeqModel
from ..runtime import autocast
from ..tokenize import special_ids, tokenizer_for
from .sequence import read_splits


@dataclass
class PairBatch:
    """Padded sources, ``<eos> y1 ... yn`` decoder inputs and ``y1 ... yn <eos>`` targets."""

    sources: torch.Tensor  # (batch, source_time)
    lengths: torch.Tensor  # (batch,) source lengths, on the CPU
    inputs: torch.Tensor  # (batch, target_time)
    targets: torch.Tensor  # (batch, target_time), pad after the end

    def to(self, device: torch.device) -> "PairBatch":
        return PairBatch(self.sources.to(device), self.lengths, self.inputs.to(device), self.targets.to(device))


class Seq2SeqTask:
    """Source -> target pairs; ``best/`` is picked by the validation WER (greedy decoding)."""

    name = "seq2seq"
    metric = "wer"
    higher_is_better = False

    @staticmethod
    def make_tokenizer(recipe: Recipe) -> Tokenizer:
        """The source tokenizer, trained on the training sources."""
        return tokenizer_for(recipe.tokenizer, read_splits(recipe, "text")["train"].inputs)

    def __init__(self, recipe: Recipe, tokenizer: Tokenizer, labels: Optional[Tokenizer] = None):
        self.recipe = recipe
        self.tokenizer = tokenizer
        self.examples = read_splits(recipe, "text")
        self.labels = labels or tokenizer_for(recipe.target_tokenizer or recipe.tokenizer, self.examples["train"].targets)
        self.source_pad = special_ids(tokenizer).pad
        self.target_ids = special_ids(self.labels)
        self.encoded = {split: self._encode(split) for split in self.examples}
        self.teacher_forcing = recipe.train.teacher_forcing

    def _encode(self, split: str) -> tuple[list[list[int]], list[list[int]]]:
        if split not in self.examples:
            data = self.recipe.data
            self.examples[split] = read_examples(getattr(data, split), data.input_field, data.target_field, data.inputs, "text", encoding=data.encoding)
        examples = self.examples[split]
        sources = [encoding.ids or [self.source_pad] for encoding in self.tokenizer.encode_batch(examples.inputs)]
        eos = self.target_ids.eos
        targets = [[eos, *encoding.ids, eos] for encoding in self.labels.encode_batch(examples.targets)]
        return sources, targets

    def summary(self) -> str:
        parts = [f"{split} {len(self.encoded[split][0]):,} pairs" for split in ("train", "valid", "test") if split in self.encoded]
        return f"{', '.join(parts)}; source vocabulary {self.tokenizer.get_vocab_size():,}, target vocabulary {self.labels.get_vocab_size():,}"

    def _batch(self, split: str, indices: Sequence[int]) -> PairBatch:
        sources, targets = self.encoded[split]
        source = collate_sequences([sources[i] for i in indices], self.source_pad)
        inputs = collate_sequences([targets[i][:-1] for i in indices], self.target_ids.pad).inputs
        outputs = collate_sequences([targets[i][1:] for i in indices], self.target_ids.pad).inputs
        return PairBatch(source.inputs, source.lengths, inputs, outputs)

    def train_batches(self, epoch: int, device: torch.device) -> Batches:
        """The batches of one epoch (grouped by source length), and this epoch's teacher
        forcing ratio: both pure functions of (seed, epoch). Under DDP this process's part
        of each batch (``None`` where it is empty)."""
        train = self.recipe.train
        end = train.teacher_forcing if train.teacher_forcing_end is None else train.teacher_forcing_end
        progress = epoch / max(1, (train.epochs or 1) - 1)
        self.teacher_forcing = train.teacher_forcing + (end - train.teacher_forcing) * min(1.0, progress)
        lengths = [len(source) for source in self.encoded["train"][0]]
        order = shard_batches(bucketed_batches(lengths, train.batch_size, seed=f"{self.recipe.seed}:{epoch}"))
        return Batches(order, lambda batch: self._batch("train", batch))

    def steps_per_epoch(self) -> int:
        return -(-len(self.encoded["train"][0]) // self.recipe.train.batch_size)

    def loss(self, model: Seq2SeqModel, batch: PairBatch, carry: None) -> tuple[torch.Tensor, torch.Tensor, None]:
        """Mean next-token cross-entropy over the target tokens (label-smoothed by
        ``train.label_smoothing``; validation reports the plain one), their number, no state."""
        batch = batch.to(next(model.parameters()).device)
        logits = model(batch.sources, batch.lengths, batch.inputs, self.teacher_forcing)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), batch.targets.flatten(), ignore_index=self.target_ids.pad,
                               label_smoothing=self.recipe.train.label_smoothing)  # fmt: skip
        return loss, (batch.targets != self.target_ids.pad).sum(), None

    @torch.inference_mode()
    def evaluate(self, model: Seq2SeqModel, precision: str = "fp32", split: str = "valid", beam: Optional[int] = None) -> dict[str, Any]:
        """Loss and perplexity with teacher forcing, then PER and WER of greedy (or beam) decoding."""
        if split not in self.encoded:
            self.encoded[split] = self._encode(split)
        sources, targets = self.encoded[split]
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        total, count = 0.0, 0
        for indices in bucketed_batches([len(source) for source in sources], self.recipe.train.eval_batch_size):
            batch = self._batch(split, indices).to(device)
            with autocast(device, precision):
                logits = model(batch.sources, batch.lengths, batch.inputs)
            total += float(F.cross_entropy(logits.flatten(0, 1).float(), batch.targets.flatten(), ignore_index=self.target_ids.pad, reduction="sum"))
            count += int((batch.targets != self.target_ids.pad).sum())
        model.train(was_training)
        # a source listed more than once has several right answers; decode it once
        _, groups = group_references(self.examples[split].inputs, range(len(targets)))
        references = [[self._tokens(targets[index][1:-1]) for index in group] for group in groups]
        predicted = translate_ids(model, [sources[group[0]] for group in groups], self.target_ids, self.recipe.train.eval_batch_size, beam=beam)
        scores = sequence_error_rates(references, [self._tokens(ids) for ids in predicted])
        return {"loss": total / max(count, 1), "perplexity": perplexity(total, count), **scores}

    def _tokens(self, ids: Sequence[int]) -> list[str]:
        return [self.labels.id_to_token(index) for index in ids]

    def describe(self, metrics: dict[str, Any]) -> str:
        return f"loss {metrics['loss']:.4f}  PER {metrics['per']:.2%}  WER {metrics['wer']:.2%}"

    def sample(self, model: Seq2SeqModel) -> str:
        """The first few validation sources with their greedy outputs and references."""
        examples = self.examples["valid"]
        sources, _ = self.encoded["valid"]
        outputs = translate_ids(model, sources[:8], self.target_ids, 8)
        return "\n".join(f"{source} -> {' '.join(self._tokens(ids))}   (reference: {target})"
                         for source, ids, target in zip(examples.inputs[:8], outputs, examples.targets[:8]))  # fmt: skip


@torch.inference_mode()
def translate_ids(model: Seq2SeqModel, sources: Sequence[Sequence[int]], target_ids, batch_size: int = 64, beam: Optional[int] = None,
                  max_length: Optional[int] = None) -> list[list[int]]:  # fmt: skip
    """Decode every source (greedy, or beam search of width ``beam``), batched by length,
    in input order. Outputs stop at ``<eos>`` or after ``max_length`` tokens (default:
    twice the source length plus 10)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    results: list[list[int]] = [[] for _ in sources]
    for indices in bucketed_batches([len(source) for source in sources], batch_size):
        batch = collate_sequences([sources[i] for i in indices], 0)
        state = model.encode(batch.inputs.to(device), batch.lengths)
        first = torch.full((len(indices),), target_ids.eos, dtype=torch.long, device=device)
        limit = max_length or 2 * int(batch.lengths.max()) + 10

        def step(tokens: torch.Tensor, state):
            logits, state, _ = model.decoder.step(tokens, state)
            return logits, state

        banned = (target_ids.pad, target_ids.unk)
        if beam:
            outputs = [ids for ids, _ in beam_search(step, first, state, lambda s, rows: s.select(rows), limit, beam=beam, end_id=target_ids.eos, banned_ids=banned)]
        else:
            outputs = sample(step, first, state, limit, end_id=target_ids.eos, temperature=0, banned_ids=banned)
        for index, output in zip(indices, outputs):
            results[index] = output
    model.train(was_training)
    return results
