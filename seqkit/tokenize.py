"""Tokenizers: Hugging Face ``tokenizers`` models trained on the training split.

Three kinds, all saved as a standard ``tokenizer.json``:

- ``word``: a word-level vocabulary. Text is split on whitespace, then (``split``) into
  runs of word characters and single punctuation marks (``punctuation``: ``don't`` ->
  ``don ' t``), into tweet tokens that keep URLs, @mentions, #hashtags, contractions
  and emoticons whole (``tweet``), or not at all (``whitespace``).
- ``bpe``: byte-level BPE (GPT-2 style), so no input is ever out of vocabulary.
- ``char``: one token per character, spaces included.

Every seqkit tokenizer has the special tokens ``<pad>`` (id 0), ``<unk>`` and ``<eos>``.
"""

from __future__ import annotations

import re
import weakref
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from .errors import DataError

if TYPE_CHECKING:
    from .config import TokenizerConfig

PAD, UNK, EOS = "<pad>", "<unk>", "<eos>"
SPECIAL_TOKENS = [PAD, UNK, EOS]
DEFAULT_BPE_VOCAB_SIZE = 8000
MAX_PIECE = 1 << 16  # characters: a longer text is tokenized in pieces (``encode_ids``)
_PIECE_BOUNDARY = re.compile(r"\s(?=\S)")  # the last whitespace character before a word
_ANY_CHARACTER = Regex(r"[\s\S]")
_SPLIT_PATTERNS = {
    "punctuation": r"\w+|[^\w\s]",
    # URLs, @mentions and #hashtags whole; 's split off; I'm, don't and ":)" kept whole
    "tweet": r"https?://\S+|www\.\S+|[@#]\w+|['’][sS]\b|\w+(?:['’](?![sS]\b)\w+)*|[^\w\s]+",
}


@dataclass(frozen=True)
class SpecialIds:
    pad: int
    unk: int
    eos: int


def train_tokenizer(
    kind: str,
    lines: Iterable[str],
    *,
    lowercase: bool = False,
    min_frequency: int = 1,
    vocab_size: int | None = None,
    split: str = "punctuation",
) -> Tokenizer:
    """Train a tokenizer of the given kind on an iterable of text lines.

    Args:
        kind: ``word``, ``bpe`` or ``char``.
        lines: the training text, one string per line.
        lowercase: lowercase all text before splitting (also at inference).
        split: ``word`` only: ``punctuation``, ``tweet`` or ``whitespace`` (module docstring).
        min_frequency: drop words (word) or merges (bpe) seen fewer times than this.
        vocab_size: the most entries to keep, special tokens included; ``None`` keeps
            every word or character, and means 8000 for ``bpe``.

    Returns:
        A trained ``tokenizers.Tokenizer`` with ``<pad>``, ``<unk>`` and ``<eos>``.
    """
    if kind == "bpe":
        tokenizer = Tokenizer(models.BPE(unk_token=UNK))
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size or DEFAULT_BPE_VOCAB_SIZE,
            min_frequency=min_frequency,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    elif kind in ("word", "char"):
        tokenizer = Tokenizer(models.WordLevel(unk_token=UNK))
        if kind == "word":
            tokenizer.pre_tokenizer = _word_splitter(split)
        else:
            tokenizer.pre_tokenizer = pre_tokenizers.Split(_ANY_CHARACTER, behavior="isolated")
            tokenizer.decoder = decoders.Fuse()
        trainer = trainers.WordLevelTrainer(
            vocab_size=vocab_size or 1 << 31,
            min_frequency=min_frequency,
            special_tokens=SPECIAL_TOKENS,
            show_progress=False,
        )
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}: use word, bpe or char")
    if lowercase:
        tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.train_from_iterator((piece for line in lines for piece in _pieces(line)), trainer)
    return tokenizer


def word_tokenizer(
    words: Iterable[str],
    *,
    lowercase: bool = False,
    min_frequency: int = 1,
    vocab_size: int | None = None,
    split: str = "tweet",
) -> Tokenizer:
    """A word-level tokenizer whose vocabulary is counted from already-split words (the
    tokens of a CoNLL file), so no training word is split again.

    Words are kept by frequency (ties in first-seen order) down to ``min_frequency``, at
    most ``vocab_size`` entries with the special tokens. ``split`` sets how raw text is
    split into words at inference.
    """
    normalize = str.lower if lowercase else (lambda word: word)
    counts = Counter(normalize(word) for word in words)
    kept = [word for word, count in counts.most_common() if count >= min_frequency and word not in SPECIAL_TOKENS]
    if vocab_size is not None:
        kept = kept[: max(0, vocab_size - len(SPECIAL_TOKENS))]
    vocabulary = {token: index for index, token in enumerate([*SPECIAL_TOKENS, *kept])}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocabulary, unk_token=UNK))
    tokenizer.pre_tokenizer = _word_splitter(split)
    tokenizer.add_special_tokens(SPECIAL_TOKENS)
    if lowercase:
        tokenizer.normalizer = normalizers.Lowercase()
    return tokenizer


def tokenizer_for(config: "TokenizerConfig", lines: Iterable[str]) -> Tokenizer:
    """``train_tokenizer`` with the settings of a recipe's ``tokenizer`` section."""
    return train_tokenizer(
        config.kind, lines, lowercase=config.lowercase, min_frequency=config.min_frequency, vocab_size=config.vocab_size, split=config.split
    )


def encode_ids(tokenizer: Tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Each text's token ids, as ``tokenizer.encode_batch`` gives them.

    A text longer than ``MAX_PIECE`` characters (a whole corpus on one line) is encoded in
    pieces cut at whitespace before a word, where seqkit's word, BPE and char tokenizers
    split anyway, so the ids are the same: on one huge string ``tokenizers`` needs about
    100 bytes per character and time that grows faster than the text (50 MB: 5 GB, 45 s).
    """
    texts = list(texts)
    long = {index for index, text in enumerate(texts) if len(text) > MAX_PIECE}
    short = iter(tokenizer.encode_batch([text for index, text in enumerate(texts) if index not in long]))
    results = []
    for index, text in enumerate(texts):
        if index not in long:
            results.append(next(short).ids)
            continue
        pieces, ids = _pieces(text), []
        for start in range(0, len(pieces), 64):  # a few MB at a time
            for encoding in tokenizer.encode_batch(pieces[start : start + 64]):
                ids += encoding.ids
        results.append(ids)
    return results


def _pieces(text: str) -> list[str]:
    """``text`` in pieces of at most ``MAX_PIECE`` characters, each cut just before the
    whitespace character that precedes a word (byte-level BPE reads it with the word, as
    ``" whale"``); a stretch without whitespace is cut at the limit."""
    pieces, start = [], 0
    while len(text) - start > MAX_PIECE:
        end = cut = start + MAX_PIECE
        for lookback in (256, MAX_PIECE):  # a boundary is nearly always close to the end
            last = None
            for last in _PIECE_BOUNDARY.finditer(text, max(start + 1, end - lookback), end):
                pass
            if last is not None:
                cut = last.start()
                break
        pieces.append(text[start:cut])
        start = cut
    pieces.append(text[start:])
    return pieces


def split_words(tokenizer: Tokenizer, text: str) -> list[tuple[str, tuple[int, int]]]:
    """Raw text -> words with ``(start, end)`` character offsets into ``text``, split by the
    tokenizer's own pre-tokenizer (the same rules its vocabulary was built with)."""
    if tokenizer.pre_tokenizer is None:
        return [(word, span) for word, span in pre_tokenizers.WhitespaceSplit().pre_tokenize_str(text)]
    return tokenizer.pre_tokenizer.pre_tokenize_str(text)


def word_ids(tokenizer: Tokenizer, words: Sequence[str]) -> list[int]:
    """The vocabulary id of each word, normalized as the tokenizer does; ``<unk>`` if unknown.
    Words are looked up whole, never split again.

    Each word's id is remembered, per tokenizer and while its vocabulary keeps its size (a
    token added since forgets them), up to ``_KNOWN_WORDS`` words: normalizing and looking
    up each word through ``tokenizers`` cost a tagger's call on one tweet about 10 us, a
    dictionary lookup a tenth of that."""
    size = tokenizer.get_vocab_size()
    entry = _KNOWN.get(tokenizer)
    if entry is None or entry[0] != size:
        entry = _KNOWN[tokenizer] = (size, {})
    known = entry[1]
    ids = [known.get(word, -1) for word in words]
    if -1 in ids:
        unk = tokenizer.token_to_id(UNK)
        normalizer = tokenizer.normalizer
        if len(known) > _KNOWN_WORDS:
            known.clear()
        for position, word in enumerate(words):
            if ids[position] == -1:
                index = tokenizer.token_to_id(normalizer.normalize_str(word) if normalizer is not None else word)
                ids[position] = known[word] = unk if index is None else index
    return ids


_KNOWN: "weakref.WeakKeyDictionary[Tokenizer, tuple[int, dict[str, int]]]" = weakref.WeakKeyDictionary()  # word_ids' memory
_KNOWN_WORDS = 1 << 17


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load a ``tokenizer.json``, adding seqkit's special tokens if it lacks them."""
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except FileNotFoundError:
        raise DataError(path, "tokenizer file not found") from None
    except Exception as error:  # tokenizers raises a bare Exception on bad JSON
        raise DataError(path, f"not a Hugging Face tokenizer.json ({error})") from None
    missing = [token for token in SPECIAL_TOKENS if tokenizer.token_to_id(token) is None]
    if missing:
        tokenizer.add_special_tokens(missing)
    return tokenizer


def special_ids(tokenizer: Tokenizer) -> SpecialIds:
    """The ids of ``<pad>``, ``<unk>`` and ``<eos>`` in this tokenizer."""
    ids = {token: tokenizer.token_to_id(token) for token in SPECIAL_TOKENS}
    missing = [token for token, index in ids.items() if index is None]
    if missing:
        raise ValueError(f"tokenizer lacks the special tokens {', '.join(missing)}")
    return SpecialIds(pad=ids[PAD], unk=ids[UNK], eos=ids[EOS])


def tokenizer_kind(tokenizer: Tokenizer) -> str:
    """``word``, ``bpe`` or ``char``, read back from a tokenizer's own settings."""
    model = type(tokenizer.model).__name__
    if model == "BPE":
        return "bpe"
    if isinstance(tokenizer.decoder, decoders.Fuse):
        return "char"
    return "word" if model == "WordLevel" else model.lower()


def decode(tokenizer: Tokenizer, token_ids: list[int]) -> str:
    """Ids back to text; each ``<eos>`` becomes a line break."""
    eos = tokenizer.token_to_id(EOS)
    lines, current = [], []
    for index in token_ids:
        if index == eos:
            lines.append(current)
            current = []
        else:
            current.append(index)
    lines.append(current)
    return "\n".join(tokenizer.decode(line, skip_special_tokens=True) for line in lines)


def _word_splitter(split: str) -> pre_tokenizers.PreTokenizer:
    if split == "whitespace":
        return pre_tokenizers.WhitespaceSplit()
    if split not in _SPLIT_PATTERNS:
        raise ValueError(f"unknown split {split!r}: use punctuation, tweet or whitespace")
    return pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex(_SPLIT_PATTERNS[split]), behavior="isolated")]
    )
