"""What differs between tasks, in one small class per task: its data, the loss of a batch
and its evaluation. The training loop (``train.py``) is the same for all of them.

``TASKS`` is a literal table from a recipe's ``task`` name to its class.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer

from .config import Recipe
from .data import LMChunk, LMStream, TaggedBatch, bucketed_batches, collate_tagged, read_conll, read_text, token_stream
from .decoding import generate_text
from .encoders import State
from .labels import LabelSet, convert, split_tag, tags_for_types
from .metrics import entity_scores, perplexity
from .model import SequenceModel
from .runtime import autocast
from .tokenize import special_ids, train_tokenizer, word_ids, word_tokenizer


class LanguageModelTask:
    """Next-token prediction over a token stream, trained with truncated BPTT.

    The hidden state is carried from one chunk to the next within an epoch, so each
    batch row reads its slice of the corpus as one long text.
    """

    name = "language_model"
    metric = "perplexity"  # picks best/ and drives early stopping
    higher_is_better = False

    labels: Optional[LabelSet] = None

    @staticmethod
    def make_tokenizer(recipe: Recipe) -> Tokenizer:
        """Train the recipe's tokenizer on the training text."""
        config = recipe.tokenizer
        return train_tokenizer(
            config.kind, read_text(recipe.data.train)["text"], lowercase=config.lowercase,
            min_frequency=config.min_frequency, vocab_size=config.vocab_size, split=config.split,
        )  # fmt: skip

    def __init__(self, recipe: Recipe, tokenizer: Tokenizer, labels: Optional[LabelSet] = None):
        self.recipe = recipe
        self.tokenizer = tokenizer
        ids = special_ids(tokenizer)
        self.pad_id, self.unk_id = ids.pad, ids.unk
        self.train_stream = token_stream(recipe.data.train, tokenizer)
        self.streams = {"valid": token_stream(recipe.data.valid, tokenizer)}

    def summary(self) -> str:
        return (
            f"train {len(self.train_stream):,} tokens, valid {len(self.streams['valid']):,} tokens, "
            f"vocabulary {self.tokenizer.get_vocab_size():,}"
        )

    def train_batches(self, epoch: int, device: torch.device) -> LMStream:
        """The chunks of one epoch, a pure function of (seed, epoch) so that a resumed
        run sees exactly the batches an uninterrupted one would."""
        train = self.recipe.train
        # shift the chunk boundaries each epoch so every split point of the text is seen
        offset = random.Random(f"{self.recipe.seed}:{epoch}").randrange(train.bptt) if epoch else 0
        return LMStream(self.train_stream, train.batch_size, train.bptt, self.pad_id, offset).to(device)

    def steps_per_epoch(self) -> int:
        train = self.recipe.train
        return len(LMStream(self.train_stream, train.batch_size, train.bptt, self.pad_id))

    def loss(self, model: SequenceModel, chunk: LMChunk, carry: Optional[State]) -> tuple[torch.Tensor, torch.Tensor, State]:
        """Mean loss of a chunk, its number of targets, and the state to carry on."""
        logits, state = model(chunk.token_ids, state=carry)  # (batch, time, vocab)
        num_targets = (chunk.targets != self.pad_id).sum()
        return model.head.loss(logits, chunk.targets), num_targets, state

    def evaluate(self, model: SequenceModel, precision: str = "fp32", split: str = "valid") -> dict[str, Any]:
        """Metrics on the ``valid`` or ``test`` split of the recipe's data."""
        if split not in self.streams:
            self.streams[split] = token_stream(getattr(self.recipe.data, split), self.tokenizer)
        return evaluate_language_model(
            model, self.streams[split], self.recipe.train.eval_batch_size, self.recipe.train.bptt,
            self.pad_id, self.unk_id, precision,
        )  # fmt: skip

    def describe(self, metrics: dict[str, Any]) -> str:
        return f"loss {metrics['loss']:.4f}  perplexity {metrics['perplexity']:.2f}"

    def sample(self, model: SequenceModel) -> str:
        """A text generated with the recipe's ``generate`` settings and seed."""
        settings = self.recipe.generate
        return generate_text(
            model, self.tokenizer, settings.prompt, settings.max_tokens, temperature=settings.temperature,
            top_k=settings.top_k, top_p=settings.top_p, seed=self.recipe.seed,
        )[0]  # fmt: skip


@torch.inference_mode()
def evaluate_language_model(
    model: SequenceModel,
    stream: torch.Tensor,
    batch_size: int,
    bptt: int,
    pad_id: int,
    unk_id: int,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Perplexity of a language model on a token stream.

    Every token of the stream is scored once (none dropped to fill a batch). Returns
    ``loss`` (mean negative log-likelihood, nats), ``perplexity``, ``tokens``, and
    ``unk_tokens`` with ``perplexity_no_unk``: perplexity over the targets that are not
    ``<unk>``, the convention count-based models are compared under.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    chunks = LMStream(stream, batch_size, bptt, pad_id).to(device)
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # nll, targets, unk nll, unk targets
    state = None
    for chunk in chunks:
        with autocast(device, precision):
            logits, state = model(chunk.token_ids, state=state)
        nll = F.cross_entropy(logits.flatten(0, 1).float(), chunk.targets.flatten(), reduction="none")
        real = chunk.targets.flatten() != pad_id
        unknown = chunk.targets.flatten() == unk_id
        sums += torch.stack([nll[real].sum(), real.sum(), nll[unknown].sum(), unknown.sum()]).double()
    model.train(was_training)
    total_nll, num_tokens, unk_nll, num_unk = sums.tolist()
    num_tokens, num_unk = int(num_tokens), int(num_unk)
    return {
        "loss": total_nll / max(num_tokens, 1),
        "perplexity": perplexity(total_nll, num_tokens),
        "tokens": num_tokens,
        "unk_tokens": num_unk,
        "perplexity_no_unk": perplexity(total_nll - unk_nll, num_tokens - num_unk),
    }


def evaluate_language_model_file(model: SequenceModel, tokenizer: Tokenizer, path: str | Path, batch_size: int, bptt: int) -> dict[str, Any]:
    """Perplexity of a language model on a text file (what ``seqkit eval`` prints)."""
    ids = special_ids(tokenizer)
    return evaluate_language_model(model, token_stream(path, tokenizer), batch_size, bptt, ids.pad, ids.unk)


class TaggingTask:
    """One tag per word (named entities, parts of speech) from CoNLL files.

    Sentences are batched by length and packed; the metric is entity-level F1 (micro),
    as conlleval computes it.
    """

    name = "tagging"
    metric = "f1"
    higher_is_better = True

    @staticmethod
    def make_tokenizer(recipe: Recipe) -> Tokenizer:
        """A word vocabulary from the training file's tokens, which are never split again."""
        config, data = recipe.tokenizer, recipe.data
        sentences = read_conll(data.train, data.token_column, data.tag_column, data.scheme)["tokens"]
        return word_tokenizer(
            (word for sentence in sentences for word in sentence), lowercase=config.lowercase,
            min_frequency=config.min_frequency, vocab_size=config.vocab_size, split=config.split,
        )  # fmt: skip

    def __init__(self, recipe: Recipe, tokenizer: Tokenizer, labels: Optional[LabelSet] = None):
        self.recipe = recipe
        self.tokenizer = tokenizer
        self.pad_id = special_ids(tokenizer).pad
        self.splits = {"train": self._read("train"), "valid": self._read("valid")}
        if labels is None:
            scheme = recipe.model.tag_scheme or recipe.data.scheme
            types = {split_tag(tag)[1] for tags in self.splits["train"]["tags"] for tag in tags} - {""}
            labels = LabelSet(tags_for_types(types, scheme), scheme=scheme, data_scheme=recipe.data.scheme)
        self.labels = labels
        self.index = {tag: index for index, tag in enumerate(labels.labels)}
        train = self.splits["train"]
        self.train_examples = (
            [word_ids(tokenizer, words) for words in train["tokens"]],
            list(train["tokens"]),
            [self._tag_ids(tags) for tags in train["tags"]],
        )

    def _read(self, split: str):
        data = self.recipe.data
        return read_conll(getattr(data, split), data.token_column, data.tag_column, data.scheme)

    def _tag_ids(self, tags: Sequence[str]) -> list[int]:
        # types never seen in training score as O in the loss; entity metrics use the strings
        outside = self.index["O"]
        return [self.index.get(tag, outside) for tag in convert(tags, self.labels.data_scheme, self.labels.scheme)]

    def summary(self) -> str:
        words = sum(len(tokens) for tokens in self.train_examples[0])
        types = sorted({split_tag(tag)[1] for tag in self.labels.labels} - {""})
        return (
            f"train {len(self.train_examples[0]):,} sentences ({words:,} words), valid {len(self.splits['valid']):,} sentences, "
            f"vocabulary {self.tokenizer.get_vocab_size():,}, {len(types)} entity types, {len(self.labels.labels)} tags ({self.labels.scheme})"
        )

    def train_batches(self, epoch: int, device: torch.device) -> list[TaggedBatch]:
        """The batches of one epoch, a pure function of (seed, epoch)."""
        ids, words, tags = self.train_examples
        order = bucketed_batches([len(sentence) for sentence in ids], self.recipe.train.batch_size, seed=f"{self.recipe.seed}:{epoch}")
        with_chars = self.recipe.model.char_features != "none"
        return [
            collate_tagged([ids[i] for i in batch], [words[i] for i in batch] if with_chars else None, [tags[i] for i in batch], self.pad_id)
            for batch in order
        ]

    def steps_per_epoch(self) -> int:
        return -(-len(self.train_examples[0]) // self.recipe.train.batch_size)

    def loss(self, model: SequenceModel, batch: TaggedBatch, carry: None) -> tuple[torch.Tensor, torch.Tensor, None]:
        """Mean loss of a batch, its number of tagged words, and no state to carry."""
        batch = batch.to(next(model.parameters()).device)
        emissions, _ = model(batch.token_ids, batch.lengths, char_ids=batch.char_ids, char_index=batch.char_index)
        # emissions: (batch, time, tags)
        return model.head.loss(emissions, batch.tag_ids), batch.lengths.sum(), None

    def evaluate(self, model: SequenceModel, precision: str = "fp32", split: str = "valid") -> dict[str, Any]:
        """Entity precision, recall and F1 (micro and per type) on a split of the recipe's data."""
        if split not in self.splits:
            self.splits[split] = self._read(split)
        dataset = self.splits[split]
        return evaluate_tagger(model, self.tokenizer, self.labels, dataset["tokens"], dataset["tags"], self.recipe.train.eval_batch_size, precision)

    def describe(self, metrics: dict[str, Any]) -> str:
        return f"precision {metrics['precision']:.4f}  recall {metrics['recall']:.4f}  f1 {metrics['f1']:.4f}"

    def sample(self, model: SequenceModel) -> None:
        return None


@torch.inference_mode()
def predict_tags(
    model: SequenceModel,
    tokenizer: Tokenizer,
    labels: LabelSet,
    sentences: Sequence[Sequence[str]],
    batch_size: int = 64,
    precision: str = "fp32",
) -> list[list[str]]:
    """Tag sentences of words; returns each sentence's tags in the data's scheme, in input order.

    Sentences are sorted by length into batches, so padding (and packing) wastes little.
    An empty sentence gets no tags.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad_id = special_ids(tokenizer).pad
    with_chars = model.embedding.char_features is not None
    results: list[list[str]] = [[] for _ in sentences]
    present = [index for index, words in enumerate(sentences) if len(words)]
    for batch in bucketed_batches([len(sentences[index]) for index in present], batch_size):
        indices = [present[position] for position in batch]
        words = [list(sentences[index]) for index in indices]
        tensors = collate_tagged([word_ids(tokenizer, sentence) for sentence in words], words if with_chars else None, None, pad_id).to(device)
        with autocast(device, precision):
            emissions, _ = model(tensors.token_ids, tensors.lengths, char_ids=tensors.char_ids, char_index=tensors.char_index)
        for index, path in zip(indices, model.head.decode(emissions, tensors.mask)):
            results[index] = convert([labels.labels[tag] for tag in path], labels.scheme, labels.data_scheme)
    model.train(was_training)
    return results


def evaluate_tagger(
    model: SequenceModel,
    tokenizer: Tokenizer,
    labels: LabelSet,
    sentences: Sequence[Sequence[str]],
    gold: Sequence[Sequence[str]],
    batch_size: int = 64,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Entity-level precision, recall and F1 of a tagger against gold tags (``metrics.entity_scores``)."""
    predicted = predict_tags(model, tokenizer, labels, sentences, batch_size, precision)
    return {**entity_scores([list(tags) for tags in gold], predicted), "sentences": len(gold)}


TASKS: dict[str, type] = {"language_model": LanguageModelTask, "tagging": TaggingTask}
