"""The Python API: load a trained checkpoint and use it.

::

    lm = seqkit.LanguageModel.from_pretrained("runs/lm/best")
    lm.generate("the whale", max_tokens=30, temperature=0.8, top_k=40, seed=1)
    lm.evaluate("data/moby-dick/test.txt")["perplexity"]

    tagger = seqkit.Tagger.from_pretrained("runs/ner/best")
    doc = tagger.tag("Pretty bad storm here last evening at the Empire State Building")
    doc.tokens, doc.tags, doc.spans

    seqkit.load("runs/lm/best")          # the right class for the checkpoint's task
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Optional, Sequence, Union

import torch
from tokenizers import Tokenizer

from .checkpoint import load_checkpoint, save_checkpoint
from .config import Recipe
from .decoding import generate_text
from .data import read_conll
from .labels import LabelSet, spans
from .model import SequenceModel
from .runtime import resolve_device
from .tasks import evaluate_language_model_file, evaluate_tagger, predict_tags
from .tokenize import split_words


class Pretrained:
    """What every task's API class shares: a model, its recipe and tokenizer, on a device."""

    task: str = ""

    def __init__(self, model: SequenceModel, recipe: Recipe, tokenizer: Tokenizer, labels: Optional[LabelSet] = None):
        self.model = model.eval()
        self.recipe = recipe
        self.tokenizer = tokenizer
        self.labels = labels
        self.info: dict[str, Any] = {}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @classmethod
    def from_pretrained(cls, path: Union[str, Path], device: str = "auto"):
        """Load a checkpoint directory (``runs/NAME/best`` or ``last``).

        Args:
            path: the checkpoint directory.
            device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N``.
        """
        checkpoint = load_checkpoint(path, resolve_device(device))
        task = checkpoint.recipe.task
        if cls.task and task != cls.task:
            raise TypeError(f"{path} holds a {task} checkpoint; load it with seqkit.load() or seqkit.{_API[task].__name__}")
        loaded = _API[task](checkpoint.model, checkpoint.recipe, checkpoint.tokenizer, checkpoint.labels)
        loaded.info = checkpoint.info
        return loaded

    def save_pretrained(self, directory: Union[str, Path]) -> Path:
        """Write this model as a checkpoint directory that ``from_pretrained`` reads."""
        return save_checkpoint(directory, self.model, self.recipe, self.tokenizer, self.info, labels=self.labels)

    def __repr__(self) -> str:
        m = self.recipe.model
        return f"{type(self).__name__}({m.encoder} {m.num_layers}x{m.hidden_size}, vocabulary {self.tokenizer.get_vocab_size():,}, on {self.device})"


class LanguageModel(Pretrained):
    """A trained language model: generate text, score text."""

    task = "language_model"

    def generate(
        self,
        prompt: str = "",
        *,
        max_tokens: Optional[int] = None,
        temperature: Optional[float] = None,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        seed: Optional[int] = None,
        num: Optional[int] = None,
    ) -> Union[str, list[str]]:
        """Continue a prompt by sampling.

        Settings left as ``None`` come from the recipe's ``generate`` section. The same
        seed gives the same text.

        Returns:
            The prompt and its continuation; a list of ``num`` texts when ``num`` is given.
        """
        defaults = self.recipe.generate
        texts = generate_text(
            self.model,
            self.tokenizer,
            prompt,
            max_tokens if max_tokens is not None else defaults.max_tokens,
            temperature=temperature if temperature is not None else defaults.temperature,
            top_k=top_k if top_k is not None else defaults.top_k,
            top_p=top_p if top_p is not None else defaults.top_p,
            num=num or 1,
            seed=seed,
        )
        return texts if num is not None else texts[0]

    def evaluate(self, path: Union[str, Path], batch_size: int = 10) -> dict[str, Any]:
        """Perplexity on a text file: ``loss``, ``perplexity``, ``tokens``, ``unk_tokens``,
        ``perplexity_no_unk`` (targets that are ``<unk>`` left out)."""
        return evaluate_language_model_file(self.model, self.tokenizer, path, batch_size, self.recipe.train.bptt)


class Span(NamedTuple):
    """An entity: ``(start, end, label, text)`` with ``doc.text[start:end] == text``."""

    start: int
    end: int
    label: str
    text: str


@dataclass(frozen=True)
class Doc:
    """A tagged text: its words, one tag per word, and the entities they form.

    ``offsets[i]`` is the ``(start, end)`` of ``tokens[i]`` in ``text``. For pre-tokenized
    input, ``text`` is the words joined by single spaces.
    """

    text: str
    tokens: list[str]
    offsets: list[tuple[int, int]]
    tags: list[str]
    spans: list[Span] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "tokens": self.tokens,
            "tags": self.tags,
            "spans": [span._asdict() for span in self.spans],
        }


class Tagger(Pretrained):
    """A trained sequence tagger (named entities, parts of speech, ...)."""

    task = "tagging"

    def tag(self, texts: Union[str, Sequence[str], Sequence[Sequence[str]]], batch_size: int = 64) -> Union[Doc, list[Doc]]:
        """Tag one text, or many in batches.

        Args:
            texts: a string; a list of strings; or a list of pre-tokenized sentences
                (lists of words, used as they are, never split again).
            batch_size: sentences per batch; sentences are sorted by length into batches.

        Returns:
            A ``Doc`` for a string, else a list of ``Doc`` in input order. Empty or
            whitespace-only texts give a ``Doc`` with no tokens.

        Raises:
            TypeError: an input that is not a string or a list of words.
        """
        single = isinstance(texts, str)
        items = [texts] if single else list(texts)
        words_and_offsets = []
        for position, item in enumerate(items):
            if isinstance(item, str):
                pieces = split_words(self.tokenizer, item)
                words_and_offsets.append((item, [word for word, _ in pieces], [offset for _, offset in pieces]))
            elif isinstance(item, (list, tuple)) and all(isinstance(word, str) for word in item):
                text, offsets, cursor = " ".join(item), [], 0
                for word in item:
                    offsets.append((cursor, cursor + len(word)))
                    cursor += len(word) + 1
                words_and_offsets.append((text, list(item), offsets))
            else:
                raise TypeError(f"tag() takes strings or lists of words; item {position} is {type(item).__name__}")
        tags = predict_tags(self.model, self.tokenizer, self.labels, [words for _, words, _ in words_and_offsets], batch_size)
        docs = []
        for (text, words, offsets), sentence_tags in zip(words_and_offsets, tags):
            entities = []
            for first, last, label in spans(sentence_tags):
                start, end = offsets[first][0], offsets[last - 1][1]
                entities.append(Span(start, end, label, text[start:end]))
            docs.append(Doc(text, words, offsets, sentence_tags, entities))
        return docs[0] if single else docs

    def evaluate(self, path: Union[str, Path], batch_size: int = 64) -> dict[str, Any]:
        """Entity precision, recall and F1, micro and per type, on a CoNLL file read with
        the recipe's column and scheme settings."""
        data = self.recipe.data
        dataset = read_conll(path, data.token_column, data.tag_column, data.scheme)
        return evaluate_tagger(self.model, self.tokenizer, self.labels, dataset["tokens"], dataset["tags"], batch_size)


_API: dict[str, type[Pretrained]] = {"language_model": LanguageModel, "tagging": Tagger}


def load(path: Union[str, Path], device: str = "auto") -> Pretrained:
    """Load any seqkit checkpoint as the API class of its task."""
    return Pretrained.from_pretrained(path, device)
