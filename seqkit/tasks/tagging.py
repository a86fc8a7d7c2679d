"""Sequence labeling: one tag per word (named entities, parts of speech), from CoNLL files."""

from __future__ import annotations

import functools
from collections import Counter
from typing import Any, NamedTuple, Optional, Sequence

import numpy as np
import torch
from tokenizers import Tokenizer

from ..config import Recipe
from ..data import Batches, TaggedBatch, bucketed_batches, collate_tagged, read_conll
from ..distributed import shard_batches
from ..labels import SPAN_SCHEMES, LabelSet, convert, spans, split_tag, tags_for_types
from ..errors import DataError
from ..crf import SpanQuery, cut_to_lengths
from ..heads import IGNORE_INDEX, TaggingHead
from ..metrics import entity_scores, tag_scores
from ..model import SequenceModel
from ..runtime import autocast
from ..tokenize import special_ids, word_ids, word_tokenizer
from .sequence import class_weight_tensor


class TaggingTask:
    """One tag per word (named entities, parts of speech) from CoNLL files.

    Sentences are batched by length and packed. The metric is entity-level F1 (micro), as
    conlleval computes it, for entity tags (``data.scheme`` bio or bioes), and token
    accuracy for plain tags (``none``: parts of speech and the like).
    """

    name = "tagging"
    metric = "f1"
    higher_is_better = True

    @staticmethod
    def make_tokenizer(recipe: Recipe) -> Tokenizer:
        """A word vocabulary from the training file's tokens, which are never split again."""
        config, data = recipe.tokenizer, recipe.data
        sentences = read_conll(data.train, data.token_column, data.tag_column, data.scheme, data.encoding)["tokens"]
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
            if scheme in SPAN_SCHEMES:
                types = {split_tag(tag)[1] for tags in self.splits["train"]["tags"] for tag in tags} - {""}
            else:  # plain tags: each one is its own type
                types = {tag for tags in self.splits["train"]["tags"] for tag in tags}
            labels = LabelSet(tags_for_types(types, scheme), scheme=scheme, data_scheme=recipe.data.scheme)
        self.labels = labels
        self.plain = labels.scheme not in SPAN_SCHEMES
        self.metric = "accuracy" if self.plain else "f1"
        self.index = {tag: index for index, tag in enumerate(labels.labels)}
        train = self.splits["train"]
        self.train_examples = (
            [word_ids(tokenizer, words) for words in train["tokens"]],
            list(train["tokens"]),
            [self._tag_ids(tags) for tags in train["tags"]],
        )
        # train.class_weights (softmax head only, recipe_rules): each tag's weight in the token cross-entropy
        counts = Counter(tag for tags in self.train_examples[2] for tag in tags)
        self.class_weights = class_weight_tensor(recipe.train.class_weights, labels.labels, counts, "tag", "tags")

    def _read(self, split: str):
        data = self.recipe.data
        return read_conll(getattr(data, split), data.token_column, data.tag_column, data.scheme, data.encoding)

    def _tag_ids(self, tags: Sequence[str]) -> list[int]:
        # types never seen in training score as O in the loss; entity metrics use the strings
        if self.plain:
            unknown = [tag for tag in tags if tag not in self.index]
            if unknown:  # only when the labels came from a checkpoint (--resume) and the file changed since
                raise DataError(self.recipe.data.train, f"tag {unknown[0]!r} is not among the model's {len(self.index)} tags (labels.json)")
            return [self.index[tag] for tag in tags]
        outside = self.index["O"]
        return [self.index.get(tag, outside) for tag in convert(tags, self.labels.data_scheme, self.labels.scheme)]

    def summary(self) -> str:
        words = sum(len(tokens) for tokens in self.train_examples[0])
        types = sorted({split_tag(tag)[1] for tag in self.labels.labels} - {""})
        if self.plain:
            return (
                f"train {len(self.train_examples[0]):,} sentences ({words:,} words), valid {len(self.splits['valid']):,} sentences, "
                f"vocabulary {self.tokenizer.get_vocab_size():,}, {len(self.labels.labels)} plain tags (scheme none)"
            )
        return (
            f"train {len(self.train_examples[0]):,} sentences ({words:,} words), valid {len(self.splits['valid']):,} sentences, "
            f"vocabulary {self.tokenizer.get_vocab_size():,}, {len(types)} entity types, {len(self.labels.labels)} tags ({self.labels.scheme})"
        )

    def train_batches(self, epoch: int, device: torch.device) -> Batches:
        """The batches of one epoch, a pure function of (seed, epoch); under DDP this
        process's part of each (``None`` where it is empty)."""
        ids, words, tags = self.train_examples
        order = shard_batches(bucketed_batches([len(sentence) for sentence in ids], self.recipe.train.batch_size, seed=f"{self.recipe.seed}:{epoch}"))
        with_chars = self.recipe.model.char_features != "none"
        return Batches(order, lambda batch: collate_tagged([ids[i] for i in batch], [words[i] for i in batch] if with_chars else None,
                                                           [tags[i] for i in batch], self.pad_id))  # fmt: skip

    def steps_per_epoch(self) -> int:
        return -(-len(self.train_examples[0]) // self.recipe.train.batch_size)

    def loss(self, model: SequenceModel, batch: TaggedBatch, carry: None) -> tuple[torch.Tensor, torch.Tensor, None]:
        """Mean (tag-weighted) loss of a batch, its number of tagged words, and no state to carry."""
        batch = batch.to(next(model.parameters()).device)
        emissions, _ = model(batch.token_ids, batch.lengths, char_ids=batch.char_ids, char_index=batch.char_index)
        # emissions: (batch, time, tags)
        weights = None if self.class_weights is None else self.class_weights.to(emissions.device)
        return model.head.loss(emissions, batch.tag_ids, weights), batch.lengths.sum().to(emissions.device), None

    def loss_weight(self, batch: TaggedBatch) -> float:
        """What the loss of a batch is a mean over: sentences with a CRF, words without, each
        weighted by its tag's weight when there are class weights (DDP weighs each process's
        loss by it)."""
        if self.recipe.model.crf:
            return len(batch.lengths)
        if self.class_weights is None:
            return int(batch.lengths.sum())
        tags = batch.tag_ids.cpu()
        return float(self.class_weights[tags[tags != IGNORE_INDEX]].sum())

    def evaluate(self, model: SequenceModel, precision: str = "fp32", split: str = "valid") -> dict[str, Any]:
        """Entity precision, recall and F1 (micro and per type) and token accuracy, or for plain
        tags token accuracy (all words and unseen ones) and per-tag scores, on a split of the
        recipe's data."""
        if split not in self.splits:
            self.splits[split] = self._read(split)
        dataset = self.splits[split]
        return evaluate_tagger(model, self.tokenizer, self.labels, dataset["tokens"], dataset["tags"], self.recipe.train.eval_batch_size, precision)

    def describe(self, metrics: dict[str, Any]) -> str:
        if self.plain:
            return f"accuracy {metrics['accuracy']:.4f}  unseen words {metrics['unseen_accuracy']:.4f}  macro-f1 {metrics['macro_f1']:.4f}"
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
    results: list[list[str]] = [[] for _ in sentences]
    reading = _reading(tuple(labels.labels), labels.scheme, labels.data_scheme)
    for indices, emissions, lengths in _emission_batches(model, tokenizer, sentences, batch_size, precision):
        for index, path in zip(indices, cut_to_lengths(model.head.best_paths(emissions, lengths), lengths)):
            results[index] = _data_tags(labels, reading, path)
    return results


def _emission_batches(model: SequenceModel, tokenizer: Tokenizer, sentences: Sequence[Sequence[str]], batch_size: int, precision: str):
    """``(sentence indices, emissions (batch, time, tags), lengths (batch,) NumPy)`` for the
    non-empty sentences, sorted by length into batches, the model in eval mode meanwhile."""
    was_training = model.training
    if was_training:  # eval() walks every module: a cost per call where the model is already in eval mode
        model.eval()
    device = next(model.parameters()).device
    pad_id = special_ids(tokenizer).pad
    with_chars = model.embedding.char_features is not None
    present = [index for index, words in enumerate(sentences) if len(words)]
    try:
        for batch in bucketed_batches([len(sentences[index]) for index in present], batch_size):
            indices = [present[position] for position in batch]
            words = [list(sentences[index]) for index in indices]
            tensors = collate_tagged([word_ids(tokenizer, sentence) for sentence in words], words if with_chars else None, None, pad_id)
            lengths = tensors.lengths.numpy()
            tensors = tensors.to(device)
            with autocast(device, precision):
                emissions, _ = model(tensors.token_ids, tensors.lengths, char_ids=tensors.char_ids, char_index=tensors.char_index)
            yield indices, emissions.float(), lengths
    finally:
        if was_training:
            model.train()


class ScoredTags(NamedTuple):
    """One sentence's tags (data scheme) with how sure the model is of them: each token's
    probability of its tag, each entity ``(first, end, type, probability)`` (token range),
    and the ``n_best`` most probable tag sequences ``(tags, probability)``."""

    tags: list[str]
    scores: list[float]
    spans: list[tuple[int, int, str, float]]
    n_best: list[tuple[list[str], float]]


@torch.inference_mode()
def score_tags(
    model: SequenceModel,
    tokenizer: Tokenizer,
    labels: LabelSet,
    sentences: Sequence[Sequence[str]],
    batch_size: int = 64,
    n_best: int = 0,
    precision: str = "fp32",
) -> list[ScoredTags]:
    """``predict_tags`` with probabilities, in input order (an empty sentence: all empty).

    Probabilities are under the model's distribution over the tag sequences its scheme
    allows (renormalized; a CRF's, or a softmax head's product of per-token softmaxes):

    - a token's score is the marginal probability that it carries the tag it was given
      (forward-backward; summed over the model's tags that read as that tag, e.g. B-X and
      S-X for a BIOES model returning BIO tags);
    - an entity's score is the probability that exactly that span is an entity of that type
      (its first, inner and last tags as predicted, and the next token not continuing it);
    - ``n_best`` lists up to that many most probable whole sequences (k-best Viterbi), the
      first being the tags returned.

    The tags, the marginals and every span's probability of a batch come from one Viterbi
    pass and one forward-backward pass over it (``CRF.posteriors``).
    """
    results = [ScoredTags([], [], [], []) for _ in sentences]
    index = {tag: position for position, tag in enumerate(labels.labels)}
    reading = _reading(tuple(labels.labels), labels.scheme, labels.data_scheme)
    for indices, emissions, lengths in _emission_batches(model, tokenizer, sentences, batch_size, precision):
        for sentence, scored in zip(indices, _score_batch(model.head, labels, index, reading, emissions, lengths, n_best)):
            results[sentence] = scored
    return results


class _Reading(NamedTuple):
    """How a model's tags read as the data's, token by token (BIOES -> BIO, or the same
    scheme): each model tag's data tag, and a (tags, tags) 0/1 matrix summing the marginals
    of the tags that read alike."""

    names: tuple[str, ...]
    grouping: np.ndarray


@functools.lru_cache(maxsize=16)
def _reading(tags: tuple[str, ...], model_scheme: str, data_scheme: str) -> Optional[_Reading]:
    """``_Reading`` of a tag set, once per tag set, not once per call (a call per sentence,
    in a service); None where no per-token reading exists (a BIO model returning BIOES
    tags: B-X vs S-X depends on the next token)."""
    if not (model_scheme == data_scheme or "none" in (model_scheme, data_scheme) or data_scheme == "bio"):
        return None
    index = {tag: position for position, tag in enumerate(tags)}
    positions = np.array([index[convert([tag], model_scheme, data_scheme)[0]] for tag in tags], dtype=np.int64)
    grouping = (positions[:, None] == positions[None, :]).astype(np.float32)  # [j, k]: j reads as k's reading
    return _Reading(tuple(tags[position] for position in positions), grouping)


def _data_tags(labels: LabelSet, reading: Optional[_Reading], path: list[int]) -> list[str]:
    """A path of model tag ids as tags of the data's scheme."""
    if reading is not None:
        names = reading.names
        return [names[tag] for tag in path]
    return convert([labels.labels[tag] for tag in path], labels.scheme, labels.data_scheme)


def _score_batch(
    head: TaggingHead, labels: LabelSet, index: dict[str, int], reading: Optional[_Reading], emissions: torch.Tensor, lengths: np.ndarray, n_best: int
) -> list[ScoredTags]:
    """``score_tags`` for one batch of (batch, time, tags) ``emissions``: each row's ``ScoredTags``."""
    model_scheme, data_scheme = labels.scheme, labels.data_scheme
    paths = head.best_paths(emissions, lengths)
    path_lists = cut_to_lengths(paths, lengths)
    tags_of = [_data_tags(labels, reading, path) for path in path_lists]
    # the tag runs to score along the paths: (row, first, end, next tag or -1, next required), and whose they are
    runs, owners = [], []
    for row, tags in enumerate(tags_of):
        if reading is None:  # a BIO model returning BIOES tags: B-X vs S-X depends on the next token
            for position, tag in enumerate(tags):
                prefix, label = split_tag(tag)  # B-/I- here: I- next; S-/E-: anything but I- next
                runs.append((row, position, position + 1, index[f"I-{label}"] if prefix != "O" else -1, prefix in ("B", "I")))
                owners.append((row, None))
        for first, end, label in spans(tags, data_scheme):
            # a BIO model's entity stops here only if the next token does not continue it; a BIOES model's path ends it
            runs.append((row, first, end, index[f"I-{label}"] if model_scheme == "bio" else -1, False))
            owners.append((row, (first, end, label)))
    marginals, probabilities = head.posteriors(emissions, lengths, paths, SpanQuery.of(runs))
    token_scores, entity_scores = [[] for _ in path_lists], [[] for _ in path_lists]
    if reading is not None:  # each token's marginal, summed over the model tags that read as its tag
        grouped = marginals if model_scheme == data_scheme or "none" in (model_scheme, data_scheme) else marginals @ reading.grouping
        chosen = grouped.reshape(-1, grouped.shape[2])[np.arange(paths.size), paths.ravel()].reshape(paths.shape)  # (batch, time)
        token_scores = cut_to_lengths(chosen, lengths)
    for (row, span), probability in zip(owners, probabilities.tolist()):
        if span is None:
            token_scores[row].append(probability)
        else:
            entity_scores[row].append((*span, probability))
    if n_best:
        mask = torch.arange(emissions.shape[1], device=emissions.device)[None, :] < torch.from_numpy(lengths).to(emissions.device)[:, None]
        k_best = head.k_best(emissions, mask, n_best)
        ranked = [[(convert([labels.labels[tag] for tag in path], model_scheme, data_scheme), probability) for path, probability in k_best[row]]
                  for row in range(len(path_lists))]  # fmt: skip
    else:
        ranked = [[] for _ in path_lists]
    return [ScoredTags(tags_of[row], token_scores[row], entity_scores[row], ranked[row]) for row in range(len(path_lists))]


def evaluate_tagger(
    model: SequenceModel,
    tokenizer: Tokenizer,
    labels: LabelSet,
    sentences: Sequence[Sequence[str]],
    gold: Sequence[Sequence[str]],
    batch_size: int = 64,
    precision: str = "fp32",
) -> dict[str, Any]:
    """A tagger against gold tags: for entity tags, entity-level precision, recall and F1
    (``metrics.entity_scores``) and token accuracy; for plain tags (scheme ``none``), token
    accuracy, accuracy on words outside the vocabulary, and per-tag scores (``metrics.tag_scores``)."""
    predicted = predict_tags(model, tokenizer, labels, sentences, batch_size, precision)
    gold = [list(tags) for tags in gold]
    unknown = special_ids(tokenizer).unk
    unseen = [[token_id == unknown for token_id in word_ids(tokenizer, words)] for words in sentences]
    tokens = tag_scores(gold, predicted, unseen)
    if labels.data_scheme not in SPAN_SCHEMES:
        return {**tokens, "sentences": len(gold)}
    entities = entity_scores(gold, predicted, labels.data_scheme)
    return {**entities, "accuracy": tokens["accuracy"], "tokens": tokens["tokens"], "sentences": len(gold)}
