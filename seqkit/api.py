"""The Python API: load a trained checkpoint and use it.

::

    lm = seqkit.LanguageModel.from_pretrained("runs/lm/best")
    lm.generate("the whale", max_tokens=30, temperature=0.8, top_k=40, seed=1)
    for piece in lm.stream("the whale", max_tokens=300):   # the text as it is generated
        print(piece, end="", flush=True)
    lm.evaluate("data/moby-dick/test.txt")["perplexity"]

    tagger = seqkit.Tagger.from_pretrained("runs/ner/best")
    doc = tagger.tag("Pretty bad storm here last evening at the Empire State Building")
    doc.tokens, doc.tags, doc.spans

    clf = seqkit.Classifier.from_pretrained("runs/spam/best")
    clf.predict("WIN a FREE cruise, click here")          # Prediction(label, probabilities)

    seqkit.load("runs/lm/best")          # the right class for the checkpoint's task
    seqkit.load("runs/lm")               # a run directory: its best/
    seqkit.load("https://example.org/ner.tar.gz#sha256=...")   # or an archive, or its URL
"""

from __future__ import annotations

import itertools
import numbers
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Optional, Sequence, Union

import numpy as np
import torch
from tokenizers import Tokenizer

from .checkpoint import check_save_target, save_checkpoint
from .config import Recipe, is_text_encoding
from .decoding import NO_REPEAT_NGRAM_SIZE, SAMPLING_SETTINGS, check_settings as _check_limits, stream_language_model
from .data import read_conll, read_examples, truncate
from .errors import NotTextError, SeqkitError
from .hub import open_checkpoint
from .labels import LabelSet, Targets, spans
from .metrics import group_references, sequence_error_rates
from .model import Seq2SeqEnsemble, SequenceModel
from .runtime import resolve_device
from .tasks import encode_inputs, evaluate_language_model_file, evaluate_tagger, predict_outputs, predict_tags, score_tags
from .tasks.tagging import ScoredTags
from .tasks.generation import generate_texts
from .tasks.seq2seq import translate_ids
from .tasks.sequence import evaluate_file
from .tokenize import encode_ids, special_ids, split_words


class Pretrained:
    """What every task's API class shares: a model, its recipe and tokenizer, on a device."""

    task: str = ""

    def __init__(self, model: SequenceModel, recipe: Recipe, tokenizer: Optional[Tokenizer], labels: Optional[LabelSet | Targets] = None):
        self.model = model.eval()
        self.recipe = recipe
        self.tokenizer = tokenizer
        self.labels = labels
        self.info: dict[str, Any] = {}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @classmethod
    def from_pretrained(cls, path: Union[str, Path], device: str = "auto", sha256: Optional[str] = None, runtime: str = "torch"):
        """Load a checkpoint: a directory (``runs/NAME/best`` or ``last``), a run directory
        (``runs/NAME``: its ``best/``, or ``last/`` while it has no ``best/``, said on
        stderr), an archive of a checkpoint that ``seqkit export`` wrote, or the URL of such
        an archive (downloaded once into the cache; see ``seqkit.hub``).

        Args:
            path: the checkpoint or run directory, ``.tar.gz`` / ``.tgz`` / ``.zip`` archive,
                or ``http(s)://`` URL (optionally ending in ``#sha256=HEX``), or
                ``hf://USER/NAME[@REVISION]``: a Hugging Face Hub model repository.
            device: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N``.
            sha256: the SHA-256 (hex) the archive must have.
            runtime: ``torch``; or ``onnx``: run a directory that ``seqkit export
                CHECKPOINT DIR --format onnx`` wrote with ONNX Runtime on the CPU (taggers,
                classifiers, regression and language models; ``pip install seqkit[onnx]``).
                Tokenization, decoding and outputs are the PyTorch runtime's own code;
                ``device`` and ``sha256`` are not read (ONNX Runtime runs on the CPU).

        Raises:
            CheckpointError: the checkpoint cannot be found, fetched, unpacked or read.
            TypeError: it holds another task's model than this class loads, or ``path`` is
                not a path or URL.
        """
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path: expected a checkpoint directory, archive or URL (a str or os.PathLike), not {type(path).__name__}")
        if runtime not in ("torch", "onnx"):
            raise ValueError(f"runtime: expected 'torch' or 'onnx', not {runtime!r}")
        if runtime == "onnx":
            from .onnx_export import load_onnx  # onnxruntime is an optional extra

            model, recipe, tokenizer, labels, info = load_onnx(path)
        else:
            checkpoint = open_checkpoint(path, resolve_device(device), sha256=sha256, report=_say)
            model, recipe, tokenizer, labels, info = checkpoint.model, checkpoint.recipe, checkpoint.tokenizer, checkpoint.labels, checkpoint.info
        task = recipe.task
        if cls.task and task != cls.task:
            raise TypeError(f"{path} holds a {task} checkpoint; load it with seqkit.load() or seqkit.{_API[task].__name__}")
        loaded = _API[task](model, recipe, tokenizer, labels)
        loaded.info = info
        return loaded

    def save_pretrained(self, directory: Union[str, Path], overwrite: bool = False) -> Path:
        """Write this model as a checkpoint directory that ``from_pretrained`` reads.

        The checkpoint is written into a temporary directory and then swapped in, so a
        failed save leaves what was there. Nothing but a checkpoint is ever replaced.

        Args:
            directory: a new or empty directory; or, with ``overwrite``, a checkpoint
                directory seqkit wrote (such as ``runs/NAME/best``), which is replaced.
            overwrite: replace the checkpoint already in ``directory``.

        Returns:
            ``directory``.

        Raises:
            CheckpointError: ``directory`` is a file, a run directory, a directory holding
                anything but a checkpoint, or (without ``overwrite``) a checkpoint; or the
                save failed (a full disk), naming it.
            TypeError: ``directory`` is not a path.
        """
        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError(f"directory: expected a path (a str or os.PathLike), not {type(directory).__name__}")
        if getattr(self.model, "runtime", "torch") == "onnx":
            raise SeqkitError(f"{directory}: this model runs on ONNX Runtime and holds no PyTorch weights to save: save the checkpoint it was exported from")
        if isinstance(self.model, Seq2SeqEnsemble):
            raise SeqkitError(f"{directory}: an ensemble is not one checkpoint: save each of its members")
        check_save_target(directory, overwrite)
        return save_checkpoint(directory, self.model, self.recipe, self.tokenizer, self.info, labels=self.labels)

    def __repr__(self) -> str:
        m = self.recipe.model
        inputs = f"vocabulary {self.tokenizer.get_vocab_size():,}" if self.tokenizer is not None else f"{m.input_size} numbers per step"
        return f"{type(self).__name__}({m.encoder} {m.num_layers}x{m.hidden_size}, {inputs}, on {self.device})"


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
        beam: Optional[int] = None,
        no_repeat_ngram_size: Optional[int] = None,
    ) -> Union[str, list[str]]:
        """Continue a prompt by sampling, or by beam search of width ``beam`` (the most
        likely continuation, up to the end of the paragraph or ``max_tokens``).

        Settings left as ``None`` come from the recipe's ``generate`` section. The same
        seed gives the same text. Ranges (both ends included): ``max_tokens`` 1 to
        100,000; ``temperature`` 0 (greedy) to 100; ``top_k`` 1 to 1,000,000; ``top_p``
        above 0 to 1; ``num`` 1 to 1,000; ``beam`` 1 to 100; ``no_repeat_ngram_size`` 0
        to 100; ``seed`` 0 to 2**63 - 1.

        Args:
            prompt: the text to continue; it starts the result exactly as given.
            max_tokens: the most tokens to generate (sampling writes this many).
            temperature, top_k, top_p: sampling settings; beam search takes none of them.
            seed: seeds the sampler (``None``: a different text each time).
            num: how many texts, sampled together (not with ``beam``).
            beam: beam search of this width instead of sampling. It ends at the
                paragraph's end (the ``<eos>`` the model learned after each line of its
                training text) or at ``max_tokens``.
            no_repeat_ngram_size: beam search only: never repeat an n-gram of this many
                tokens, the prompt's included (default 3; 0 allows repeats, which beam
                search on a language model falls into, looping on one phrase).

        Returns:
            The prompt as given followed by its continuation (tokens joined as the
            tokenizer decodes them: by spaces for a word-level one; each ``<eos>`` a line
            break); a list of ``num`` texts when ``num`` is given. An empty or
            whitespace-only prompt starts a new paragraph.

        Raises:
            TypeError: a prompt that is not a string.
            ValueError: a setting out of its range, or settings that do not go together,
                naming them.
        """
        options = self._generation_options(prompt, max_tokens, temperature, top_k, top_p, seed, num, beam, no_repeat_ngram_size)
        texts: list[list[str]] = [[] for _ in range(options["num"])]
        for index, piece in stream_language_model(self.model, self.tokenizer, prompt, **options):
            texts[index].append(piece)
        return ["".join(pieces) for pieces in texts] if num is not None else "".join(texts[0])

    def stream(
        self,
        prompt: str = "",
        *,
        max_tokens: Optional[int] = None,
        temperature: Optional[float] = None,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        seed: Optional[int] = None,
        num: Optional[int] = None,
        beam: Optional[int] = None,
        no_repeat_ngram_size: Optional[int] = None,
    ) -> Union[Iterator[str], Iterator[tuple[int, str]]]:
        """``generate`` as it goes: an iterator over the text's pieces, the prompt first,
        then the continuation a token at a time as it is generated (beam search: all of
        it when the search ends). Joined, the pieces are what ``generate`` returns with
        the same settings and seed. Stop reading (or press Ctrl-C) and what came so far is
        yours; generation stops there.

        With ``num`` given, the ``num`` texts are generated together and the iterator
        yields ``(index, piece)``: which text (0 to ``num - 1``) the piece belongs to.

        ::

            for piece in lm.stream("the whale", max_tokens=200, temperature=0.8, seed=1):
                print(piece, end="", flush=True)

        The settings are ``generate``'s, checked before the iterator is returned.
        """
        options = self._generation_options(prompt, max_tokens, temperature, top_k, top_p, seed, num, beam, no_repeat_ngram_size)
        pieces = stream_language_model(self.model, self.tokenizer, prompt, **options)
        return pieces if num is not None else (piece for _, piece in pieces)

    def _generation_options(self, prompt: Any, max_tokens: Optional[int], temperature: Optional[float], top_k: Optional[int],
                            top_p: Optional[float], seed: Optional[int], num: Optional[int], beam: Optional[int],
                            no_repeat_ngram_size: Optional[int]) -> dict[str, Any]:  # fmt: skip
        """The checked settings of ``generate`` and ``stream``, the recipe's where ``None``."""
        if not isinstance(prompt, str):
            raise TypeError(f"prompt: expected a string, not {type(prompt).__name__}")
        _check_encodable("prompt", prompt)
        _check_generation(beam=beam, max_tokens=max_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, num=num,
                          no_repeat_ngram_size=no_repeat_ngram_size)  # fmt: skip
        if beam and (num or 1) > 1:
            raise ValueError("beam search gives the single most likely text: leave num out")
        defaults = self.recipe.generate
        options: dict[str, Any] = {"max_tokens": max_tokens if max_tokens is not None else defaults.max_tokens, "num": num or 1, "beam": beam}
        if beam:
            options["no_repeat_ngram_size"] = no_repeat_ngram_size if no_repeat_ngram_size is not None else NO_REPEAT_NGRAM_SIZE
        else:
            options.update(
                temperature=temperature if temperature is not None else defaults.temperature,
                top_k=top_k if top_k is not None else defaults.top_k,
                top_p=top_p if top_p is not None else defaults.top_p,
                seed=seed,
            )
        return options

    def evaluate(self, path: Union[str, Path], batch_size: int = 10, encoding: str = "utf-8") -> dict[str, Any]:
        """Perplexity on a text file (in ``encoding``): ``loss``, ``perplexity``, ``tokens``,
        ``unk_tokens``, ``perplexity_no_unk`` (targets that are ``<unk>`` left out)."""
        _check_path(path)
        _check_settings(batch_size=batch_size)
        with _reading(encoding):
            return evaluate_language_model_file(self.model, self.tokenizer, path, batch_size, self.recipe.train.bptt, encoding)


class _SpanFields(NamedTuple):
    start: int
    end: int
    label: str
    text: str


class Span(_SpanFields):
    """An entity: ``(start, end, label, text)`` with ``doc.text[start:end] == text``, and its
    ``score``: the probability that exactly these words form an entity of this type (the
    span's first, inner and last tags as predicted and the next word not continuing it,
    among every tag sequence the scheme allows). A 4-tuple still: the score is an attribute,
    not a field, so ``start, end, label, text = span`` unpacks it."""

    score: Optional[float] = None  # what a span built by ``_make`` / ``_replace`` has

    def __new__(cls, start: int, end: int, label: str, text: str, score: Optional[float] = None):
        span = super().__new__(cls, start, end, label, text)
        span.score = score
        return span

    def __repr__(self) -> str:
        return f"{super().__repr__()[:-1]}, score={self.score!r})"

    def to_json(self) -> dict[str, Any]:
        return {**self._asdict(), "score": self.score}


@dataclass(frozen=True)
class Doc:
    """A tagged text: its words, one tag per word, and the entities they form.

    ``offsets[i]`` is the ``(start, end)`` of ``tokens[i]`` in ``text``. For pre-tokenized
    input, ``text`` is the words joined by single spaces. A tagger of plain tags (trained
    with ``data.scheme: none``: parts of speech and the like) gives each word its tag in
    ``tags`` and leaves ``spans`` empty: such tags form no entities.

    ``scores[i]`` is the probability that ``tokens[i]`` carries ``tags[i]``: the CRF's
    marginal (forward-backward) or the softmax, among the tag sequences the scheme allows.
    ``n_best``, filled when ``tag(..., n_best=K)`` asks for it, lists up to K most probable
    tag sequences as ``(tags, probability)``, most probable first; ``n_best[0][0] == tags``.
    """

    text: str
    tokens: list[str]
    offsets: list[tuple[int, int]]
    tags: list[str]
    spans: list[Span] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    n_best: list[tuple[list[str], float]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        record = {
            "text": self.text,
            "tokens": self.tokens,
            "tags": self.tags,
            "scores": self.scores,
            "spans": [span.to_json() for span in self.spans],
        }
        if self.n_best:
            record["n_best"] = [{"tags": tags, "probability": probability} for tags, probability in self.n_best]
        return record


class Tagger(Pretrained):
    """A trained sequence tagger (named entities, parts of speech, ...)."""

    task = "tagging"

    def tag(self, texts: Union[str, Sequence[str], Sequence[Sequence[str]]], batch_size: int = 64, n_best: Optional[int] = None,
            scores: bool = True) -> Union[Doc, list[Doc]]:  # fmt: skip
        """Tag one text, or many in batches, with each tag's probability (``Doc.scores``) and
        each entity's (``Span.score``).

        Args:
            texts: a string; a list of strings; or a list of pre-tokenized sentences
                (lists of words, used as they are, never split again).
            batch_size: sentences per batch; sentences are sorted by length into batches.
            n_best: also find the K most probable tag sequences of each text (k-best
                Viterbi; never one the scheme forbids) into ``Doc.n_best``.
            scores: compute ``Doc.scores`` and ``Span.score`` (forward-backward under a
                CRF); ``False`` leaves them empty and ``None`` and skips that work.

        Returns:
            A ``Doc`` for a string, else a list of ``Doc`` in input order. Empty or
            whitespace-only texts (and empty word lists) give a ``Doc`` with no tokens.

        Raises:
            TypeError: ``texts`` or one of its items is not a string or a list of words,
                naming the item.
            ValueError: a text with a lone surrogate, or ``batch_size`` or ``n_best`` below 1.
        """
        accepts = "tag() takes a string, a list of strings or a list of word lists"
        single, items = _items("texts", texts, accepts)
        _check_settings(batch_size=batch_size, n_best=n_best)
        words_and_offsets = []
        for position, item in enumerate(items):
            if isinstance(item, str):
                _check_encodable("texts", item, position, "item")
                pieces = split_words(self.tokenizer, item)
                words_and_offsets.append((item, [word for word, _ in pieces], [offset for _, offset in pieces]))
            elif isinstance(item, (list, tuple)):
                if not all(map(isinstance, item, itertools.repeat(str))):
                    index = next(index for index, word in enumerate(item) if not isinstance(word, str))
                    raise TypeError(f"texts: item {position}, word {index} is {type(item[index]).__name__}; {accepts}")
                text = " ".join(item)
                _check_encodable("texts", text, position, "item")
                starts = itertools.accumulate((len(word) + 1 for word in item), initial=0)  # words joined by one space
                offsets = [(start, start + len(word)) for start, word in zip(starts, item)]
                words_and_offsets.append((text, list(item), offsets))
            else:
                raise TypeError(f"texts: item {position} is {type(item).__name__}; {accepts}")
        sentences = [words for _, words, _ in words_and_offsets]
        if scores or n_best:
            scored = score_tags(self.model, self.tokenizer, self.labels, sentences, batch_size, n_best or 0)
            if not scores:  # n_best alone: the sequences' probabilities, not the words' and spans'
                scored = [ScoredTags(one.tags, [], [(*span[:3], None) for span in one.spans], one.n_best) for one in scored]
        else:  # the tags alone: no forward-backward, no span probabilities
            scored = [ScoredTags(tags, [], [(*span, None) for span in spans(tags, self.labels.data_scheme)], [])
                      for tags in predict_tags(self.model, self.tokenizer, self.labels, sentences, batch_size)]  # fmt: skip
        docs = []
        for (text, words, offsets), sentence in zip(words_and_offsets, scored):
            entities = []
            for first, last, label, score in sentence.spans:
                start, end = offsets[first][0], offsets[last - 1][1]
                entities.append(Span(start, end, label, text[start:end], score))
            docs.append(Doc(text, words, offsets, sentence.tags, entities, sentence.scores, sentence.n_best))
        return docs[0] if single else docs

    def evaluate(self, path: Union[str, Path], batch_size: int = 64, encoding: str = "utf-8") -> dict[str, Any]:
        """Entity precision, recall and F1, micro and per type, and token accuracy -- or, for
        plain tags (``data.scheme: none``), token accuracy, accuracy on words outside the
        vocabulary and per-tag precision, recall and F1 (``per_tag``) -- on a CoNLL file (in
        ``encoding``) read with the recipe's column and scheme settings."""
        _check_path(path)
        _check_settings(batch_size=batch_size)
        data = self.recipe.data
        with _reading(encoding):
            dataset = read_conll(path, data.token_column, data.tag_column, data.scheme, encoding)
        return evaluate_tagger(self.model, self.tokenizer, self.labels, dataset["tokens"], dataset["tags"], batch_size)


class _SequencePredictor(Pretrained):
    """Shared by ``Classifier`` and ``Regressor``: inputs -> encoded, truncated sequences."""

    def _encode(self, inputs: Any) -> tuple[bool, list, list]:
        """``(single, encoded, tokens)`` for one input or a list of them."""
        if self.recipe.data.inputs == "vectors":
            single = _is_steps(inputs)
            items = [inputs] if single else _as_list(inputs)
            checked = []
            for position, item in enumerate(items):
                array = np.asarray(item, dtype=np.float32) if _is_steps(item) else None
                if array is None or array.ndim != 2 or array.shape[1] != self.recipe.model.input_size or len(array) == 0:
                    raise TypeError(f"inputs: input {position}: expected steps of {self.recipe.model.input_size} numbers each, shaped (time, {self.recipe.model.input_size})")
                if not np.isfinite(array).all():
                    raise ValueError(f"inputs: input {position} holds NaN or infinite values")
                checked.append(array)
            encoded, _ = encode_inputs(checked, None, self.recipe.data)
            return single, encoded, [[f"step {i}" for i in range(len(x))] for x in encoded]
        accepts = "predict() takes a string or a list of strings"
        single, items = _items("inputs", inputs, accepts)
        for position, item in enumerate(items):
            if not isinstance(item, str):
                raise TypeError(f"inputs: input {position} is {type(item).__name__}; {accepts}")
            _check_encodable("inputs", item, position)
        encoded, _ = encode_inputs(items, self.tokenizer, self.recipe.data)
        return single, encoded, items

    def _tokens(self, texts: list, encoded: list) -> list[list[str]]:
        """The tokens each (truncated) input was read as."""
        if self.tokenizer is None:
            return texts
        # each token as it stands in the text (before lowercasing or other normalization)
        tokens = [[text[start:end] for start, end in encoding.offsets] for text, encoding in zip(texts, self.tokenizer.encode_batch(texts))]
        data = self.recipe.data
        return [list(truncate(row, data.max_length, data.truncation)) if row else [""] for row in tokens]

    @property
    def _pad_id(self) -> int:
        return special_ids(self.tokenizer).pad if self.tokenizer is not None else 0

    def evaluate(self, path: Union[str, Path], batch_size: int = 64, encoding: str = "utf-8") -> dict[str, Any]:
        """Metrics on a data file (text in ``encoding``) read with the recipe's ``data``
        settings: accuracy, macro-F1 and per-class scores for a classifier; MAE and RMSE (and
        the mean baseline's) for a regression model."""
        _check_path(path)
        _check_settings(batch_size=batch_size)
        with _reading(encoding):
            return evaluate_file(self.model, self.tokenizer, self.labels, self.recipe, path, batch_size, encoding)


@dataclass(frozen=True)
class Prediction:
    """A classifier's answer for one input: the most probable ``label``, every class's
    probability, and -- when asked for, with attention pooling -- each token it read with
    its attention weight (they sum to 1)."""

    label: str
    probabilities: dict[str, float]
    attention: Optional[list[tuple[str, float]]] = None

    def to_json(self) -> dict[str, Any]:
        record: dict[str, Any] = {"label": self.label, "probabilities": self.probabilities}
        if self.attention is not None:
            record["attention"] = [[token, weight] for token, weight in self.attention]
        return record


class Classifier(_SequencePredictor):
    """A trained text classifier (many-to-one): one label per text."""

    task = "classification"

    def predict(self, inputs: Union[str, Sequence[str]], batch_size: int = 64, return_attention: bool = False) -> Union[Prediction, list[Prediction]]:
        """Classify one text, or many in batches (sorted by length; results in input order).

        Args:
            inputs: a string or a list of strings (or, for a model trained on vectors,
                a (time, features) array or a list of them).
            batch_size: inputs per batch.
            return_attention: also return each token's attention weight (needs
                ``model.pooling: attention``).

        Returns:
            A ``Prediction`` for one input, a list of them for a list. Texts longer than
            ``data.max_length`` tokens are truncated as in training; an empty text is read
            as one padding step.

        Raises:
            TypeError: ``inputs`` or one of them is not a string, naming the input.
            ValueError: ``return_attention`` on a model that does not pool by attention;
                a text with a lone surrogate; ``batch_size`` below 1.
        """
        _check_settings(batch_size=batch_size)
        if return_attention and self.recipe.model.pooling != "attention":
            raise ValueError(f"this model pools with {self.recipe.model.pooling!r}; attention weights exist only with model.pooling: attention")
        single, encoded, items = self._encode(inputs)
        logits, weights = predict_outputs(self.model, encoded, batch_size, self._pad_id, attention=return_attention)
        tokens = self._tokens(items, encoded) if return_attention else None
        classes = self.labels.labels
        predictions = []
        for index, row in enumerate(logits):
            probabilities = torch.from_numpy(row).softmax(-1).tolist()
            attention = list(zip(tokens[index], weights[index].tolist())) if return_attention else None
            predictions.append(Prediction(classes[int(np.argmax(row))], dict(zip(classes, probabilities)), attention))
        return predictions[0] if single else predictions


class Regressor(_SequencePredictor):
    """A trained regression model: numbers from a sequence (many-to-one), or at every step."""

    task = "regression"

    def predict(self, inputs: Any, batch_size: int = 64) -> Any:
        """Predict from one input, or many in batches (results in input order).

        Args:
            inputs: a string or list of strings; for a model trained on vectors, a
                (time, features) array (or nested list) or a list of them.

        Returns:
            Per input: a float when the model has one output; a dict of output name to
            float when it has several; a (time, outputs) array for per-step models. A
            list of those for a list of inputs.

        Raises:
            TypeError: ``inputs`` or one of them is not a string (or steps of numbers),
                naming the input.
            ValueError: a text with a lone surrogate, vectors with NaN, ``batch_size`` below 1.
        """
        _check_settings(batch_size=batch_size)
        single, encoded, _ = self._encode(inputs)
        outputs, _ = predict_outputs(self.model, encoded, batch_size, self._pad_id)
        mean, std = np.asarray(self.labels.mean, dtype=np.float32), np.asarray(self.labels.std, dtype=np.float32)
        names = self.labels.names
        results = []
        for row in outputs:
            values = row * std + mean
            if values.ndim == 2:
                results.append(values)
            else:
                results.append(float(values[0]) if len(names) == 1 else dict(zip(names, map(float, values))))
        return results[0] if single else results


class Generator(Pretrained):
    """A trained conditioned generator (one-to-many): texts from a condition such as ``female``."""

    task = "generation"

    @property
    def conditions(self) -> list[str]:
        """The conditions this model generates from (empty for an unconditioned one)."""
        return list(self.labels.labels)

    def generate(
        self,
        condition: Optional[str] = None,
        *,
        num: int = 1,
        temperature: Optional[float] = None,
        top_k: Optional[int] = None,
        top_p: Optional[float] = None,
        seed: Optional[int] = None,
        max_length: Optional[int] = None,
        beam: Optional[int] = None,
    ) -> list[str]:
        """Generate ``num`` texts from ``condition`` by sampling, or the best one by beam search.

        Settings left as ``None`` come from the recipe's ``generate`` section; temperature 0
        is greedy. The same seed gives the same texts. Ranges (both ends included): ``num``
        1 to 1,000; ``max_length`` 1 to 100,000; ``temperature`` 0 to 100; ``top_k`` 1 to
        1,000,000; ``top_p`` above 0 to 1; ``beam`` 1 to 100; ``seed`` 0 to 2**63 - 1.
        Beam search takes no sampling setting (``temperature``, ``top_k``, ``top_p``).

        Raises:
            ValueError: an unknown condition (the message lists the known ones), a
                setting out of its range, or sampling settings with ``beam``.
        """
        _check_generation(num=num, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, max_length=max_length, beam=beam)
        if beam and num > 1:
            raise ValueError("beam search gives the single most likely text: leave num out")
        defaults = self.recipe.generate
        return generate_texts(
            self.model, self.tokenizer, self.labels, condition, num, max_length or defaults.max_tokens,
            temperature=defaults.temperature if temperature is None else temperature,
            top_k=top_k if top_k is not None else defaults.top_k, top_p=top_p if top_p is not None else defaults.top_p,
            seed=seed, beam=beam,
        )  # fmt: skip


class Seq2Seq(Pretrained):
    """A trained encoder-decoder: an output sequence for each input (letters -> phonemes)."""

    task = "seq2seq"

    @property
    def target_tokenizer(self) -> Tokenizer:
        """The outputs' tokenizer (``target_tokenizer.json``)."""
        return self.labels

    @classmethod
    def ensemble(cls, paths: Sequence[Union[str, Path]], device: str = "auto") -> "Seq2Seq":
        """Several seq2seq checkpoints that decode as one model: at each step the next
        token's distribution is the mean of theirs (``model.Seq2SeqEnsemble``), for greedy
        and beam search alike. ``predict`` and ``evaluate`` work as for one model; an
        ensemble cannot be saved or trained (save its members).

        Args:
            paths: what ``from_pretrained`` takes, one per member (two or more, typically
                the same recipe trained with different seeds or cells).
            device: as for ``from_pretrained``.

        Raises:
            ValueError: fewer than two paths, or a member whose source or target
                tokenizer differs from the first's (its ids would mean other letters or
                phonemes), naming it.
        """
        if isinstance(paths, (str, os.PathLike)) or len(paths) < 2:
            raise ValueError("paths: an ensemble takes a list of two or more seq2seq checkpoints")
        members = [cls.from_pretrained(path, device=device) for path in paths]
        first = members[0]
        for path, member in zip(paths[1:], members[1:]):
            for name, mine, theirs in (("source", member.tokenizer, first.tokenizer), ("target", member.labels, first.labels)):
                if mine.to_str() != theirs.to_str():
                    raise ValueError(f"{path}: its {name} tokenizer differs from {paths[0]}'s; an ensemble's members must share both vocabularies")
        model = Seq2SeqEnsemble([member.model for member in members]).to(first.device)
        ensemble = cls(model, first.recipe, first.tokenizer, first.labels)
        ensemble.info = {**first.info, "ensemble": [str(path) for path in paths]}
        return ensemble

    def predict(
        self, inputs: Union[str, Sequence[str]], *, beam: Optional[int] = None, batch_size: int = 64, max_length: Optional[int] = None
    ) -> Union[list[str], list[list[str]]]:
        """The output tokens for one input, or for each of a list (batched by length, input order kept).

        Args:
            inputs: a string or a list of strings.
            beam: beam search of this width; ``None`` decodes greedily.
            batch_size: inputs per batch.
            max_length: the most output tokens (default: twice the input's length plus 10).

        Returns:
            The output tokens; a list of them for a list. An input with no tokens (empty,
            or whitespace only for a word tokenizer) gives no output tokens.

        Raises:
            TypeError: ``inputs`` or one of them is not a string, naming the input.
            ValueError: a text with a lone surrogate, or a setting below 1.
        """
        accepts = "predict() takes a string or a list of strings"
        single, items = _items("inputs", inputs, accepts)
        for position, item in enumerate(items):
            if not isinstance(item, str):
                raise TypeError(f"inputs: input {position} is {type(item).__name__}; {accepts}")
            _check_encodable("inputs", item, position)
        _check_settings(beam=beam, batch_size=batch_size, max_length=max_length)
        sources = encode_ids(self.tokenizer, items)
        present = [index for index, source in enumerate(sources) if source]  # nothing in, nothing out
        outputs = translate_ids(self.model, [sources[i] for i in present], special_ids(self.labels), batch_size, beam=beam, max_length=max_length)
        tokens: list[list[str]] = [[] for _ in items]
        for index, output in zip(present, outputs):
            tokens[index] = [self.labels.id_to_token(token) for token in output]
        return tokens[0] if single else tokens

    def evaluate(self, path: Union[str, Path], batch_size: int = 256, beam: Optional[int] = None, encoding: str = "utf-8") -> dict[str, Any]:
        """Token error rate (``per``) and sequence error rate (``wer``) on a file of pairs
        (``SOURCE<TAB>TARGET`` or JSON Lines, text in ``encoding``), decoding greedily or with
        ``beam``. A source listed more than once has several right answers (e.g. alternative
        pronunciations)."""
        _check_path(path)
        data = self.recipe.data
        with _reading(encoding):
            examples = read_examples(path, data.input_field, data.target_field, data.inputs, "text", encoding=encoding)
        gold = [encoding.tokens for encoding in self.labels.encode_batch(examples.targets)]
        sources, references = group_references(examples.inputs, gold)
        return sequence_error_rates(references, self.predict(sources, beam=beam, batch_size=batch_size))


def _is_steps(value: Any) -> bool:
    """A (time, features) array or nested list: one input of vectors."""
    if isinstance(value, np.ndarray) or isinstance(value, torch.Tensor):
        return value.ndim == 2
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(
        isinstance(step, (list, tuple)) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in step) for step in value
    )


def _as_list(inputs: Any) -> list:
    if isinstance(inputs, (list, tuple)):
        return list(inputs)
    if isinstance(inputs, np.ndarray) and inputs.ndim == 3:
        return list(inputs)
    raise TypeError(f"inputs: predict() takes one input (steps of numbers) or a list of inputs, not {type(inputs).__name__}")


def _items(argument: str, values: Any, accepts: str) -> tuple[bool, list]:
    """``(single, items)``: one string, or the items of a list (tuple, array, any iterable
    but bytes and mappings)."""
    if isinstance(values, str):
        return True, [values]
    if isinstance(values, (bytes, bytearray)):
        raise TypeError(f"{argument}: {accepts}, not bytes (decode them first: value.decode('utf-8'))")
    if values is None or isinstance(values, Mapping) or not isinstance(values, Iterable):
        raise TypeError(f"{argument}: {accepts}, not {type(values).__name__}")
    return False, list(values)


def _check_encodable(argument: str, text: str, position: Optional[int] = None, noun: str = "input") -> None:
    """A string that Python holds but no tokenizer takes: a lone surrogate (half of a
    UTF-16 pair, such as an emoji cut in two, or bytes decoded with ``surrogateescape``)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        where = f"{argument}: {noun} {position}" if position is not None else argument
        raise ValueError(f"{where} holds a lone surrogate {text[error.start]!r} at character {error.start}, which is not text") from None


def _check_settings(**settings: Any) -> None:
    """A ``ValueError`` naming the first setting out of its range; ``None`` means the default."""
    for name, value in settings.items():
        if value is None:
            continue
        if name == "temperature":
            ok, rule = isinstance(value, numbers.Real) and value >= 0, "a number >= 0 (0: greedy)"
        elif name == "top_p":
            ok, rule = isinstance(value, numbers.Real) and 0 < value <= 1, "a number in (0, 1]"
        elif name == "seed":
            ok, rule = isinstance(value, numbers.Integral) and 0 <= value < 2**63, "an integer in [0, 2**63)"
        else:  # sizes and counts
            ok, rule = isinstance(value, numbers.Integral) and value >= 1, "an integer >= 1"
        if not ok or isinstance(value, bool):
            raise ValueError(f"{name}: expected {rule}, not {value!r}")


def _say(message: str) -> None:
    """A line for the user about what was loaded (which checkpoint of a run directory)."""
    print(message, file=sys.stderr, flush=True)


def _check_generation(beam: Optional[int] = None, no_repeat_ngram_size: Optional[int] = None, **settings: Any) -> None:
    """``_check_settings`` for generation, then each setting's whole range
    (``decoding.LIMITS``) and the settings that do not go together: sampling settings
    with ``beam``, ``no_repeat_ngram_size`` without it."""
    if no_repeat_ngram_size is not None and (not isinstance(no_repeat_ngram_size, numbers.Integral) or isinstance(no_repeat_ngram_size, bool)):
        raise ValueError(f"no_repeat_ngram_size: expected an integer from 0 to 100, not {no_repeat_ngram_size!r}")
    _check_settings(beam=beam, **settings)
    _check_limits(beam=beam, no_repeat_ngram_size=no_repeat_ngram_size, **settings)
    if beam is not None:
        sampling = [name for name in SAMPLING_SETTINGS if settings.get(name) is not None]
        if sampling:
            raise ValueError(f"{', '.join(sampling)}: beam search samples nothing (it finds the most likely text); leave {'them' if len(sampling) > 1 else 'it'} out, or beam")
    elif no_repeat_ngram_size is not None:
        raise ValueError("no_repeat_ngram_size: a setting of beam search; give beam too, or leave it out")


def _check_path(path: Any) -> None:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a file path (a str or os.PathLike), not {type(path).__name__}")


@contextmanager
def _reading(encoding: Any) -> Iterator[None]:
    """Read a file with ``encoding`` (checked): a file that is not text in it names the
    ``encoding`` argument as what to change."""
    if not isinstance(encoding, str):
        raise TypeError(f"encoding: expected a codec name (a str such as 'utf-8' or 'latin-1'), not {type(encoding).__name__}")
    if not is_text_encoding(encoding):
        raise ValueError(f"encoding: {encoding!r} is not a text encoding Python knows (e.g. 'utf-8', 'latin-1', 'cp1252', 'utf-16')")
    try:
        yield
    except NotTextError as error:
        raise error.naming("the encoding argument") from None


_API: dict[str, type[Pretrained]] = {
    "language_model": LanguageModel,
    "tagging": Tagger,
    "classification": Classifier,
    "regression": Regressor,
    "generation": Generator,
    "seq2seq": Seq2Seq,
}


def load(path: Union[str, Path], device: str = "auto", sha256: Optional[str] = None, runtime: str = "torch") -> Pretrained:
    """Load any seqkit checkpoint -- a checkpoint or run directory, an archive or a URL, as
    ``from_pretrained`` takes, or with ``runtime="onnx"`` an ONNX export directory -- as
    the API class of its task."""
    return Pretrained.from_pretrained(path, device, sha256, runtime)
