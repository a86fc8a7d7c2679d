"""Turning examples into batches: the second of the two rooms of ``seqkit.data``.

Language modeling lays one stream of token ids (``read.token_stream``) out as
``batch_size`` contiguous rows and walks over them ``bptt`` tokens at a time
(``LMStream``): truncated back-propagation through time, each row's hidden state carried
to its next chunk.

Tagging groups sentences of similar length into batches (``bucketed_batches``), which
``collate_tagged`` pads; the encoder packs them by their lengths. Classification,
regression and seq2seq truncate long inputs (``truncate``) and pad batches of similar
lengths (``collate_sequences``). ``Batches`` collates an epoch's batches one at a time,
as the loop reaches them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

IGNORE_INDEX = -100  # padded positions of a tag tensor (PyTorch's cross-entropy default)
MAX_WORD_BYTES = 32  # character features read at most this many bytes of a word


# --- Language modeling: a token stream in rows, read bptt steps at a time -----------------


@dataclass
class LMChunk:
    """One truncated-BPTT chunk: ``targets`` are ``token_ids`` shifted by one step."""

    token_ids: torch.Tensor  # (batch, time)
    targets: torch.Tensor  # (batch, time); padding where the stream ran out
    lr_scale: float = 1.0  # train.variable_bptt: this chunk's length / bptt, what its learning rate is multiplied by


class LMStream:
    """A token stream laid out as ``batch_size`` contiguous rows, read ``bptt`` steps at a time.

    Row ``b`` holds the ``b``-th slice of the stream, so the hidden state that chunk ``i``
    leaves in row ``b`` is the right context for chunk ``i + 1`` in that row. Neighbouring
    rows share one token (the last input of a row is the first of the next), so every
    token after the first is a target exactly once. The tail that does not fill the last
    row is padded, never dropped; padded targets carry ``pad_id`` and are left out of the loss.

    With ``context`` (evaluation), each row after the first starts that many tokens early:
    the model reads them to build its state, and their targets are padding, so a row's
    first scored tokens are predicted from real context instead of an empty state, and
    perplexity hardly depends on how many rows read the text.

    Args:
        stream: 1-D token ids.
        batch_size: number of rows read in parallel.
        bptt: time steps per chunk.
        pad_id: the padding id.
        offset: start reading at this position (shifting the chunk boundaries between
            epochs lets the model see every split of the text).
        context: tokens each row after the first reads before its slice, unscored.
        variable_seed: ``train.variable_bptt``: chunk lengths drawn around ``bptt`` from
            this seed (numbers for ``numpy.random.default_rng``) (``variable_lengths``); ``None``: every chunk ``bptt`` long.
    """

    def __init__(self, stream: torch.Tensor, batch_size: int, bptt: int, pad_id: int, offset: int = 0, context: int = 0,
                 variable_seed: Optional[Sequence[int]] = None):  # fmt: skip
        stream = stream[offset:]
        row_length = max(1, -(-(len(stream) - 1) // batch_size))  # targets per row: ceil((n - 1) / batch)
        padded = torch.full((batch_size * row_length + 1,), pad_id, dtype=stream.dtype)
        padded[: len(stream)] = stream
        self.rows = padded.unfold(0, row_length + 1, row_length).contiguous()  # (batch, row_length + 1)
        self.context = min(context, row_length) if batch_size > 1 else 0
        if self.context:
            # row b > 0 reads the `context` tokens before its slice first; row 0, with nothing
            # before it, starts at once and is padded at its end instead
            before = padded[: (batch_size - 1) * row_length].view(batch_size - 1, row_length)[:, row_length - self.context :]
            after = torch.full((1, self.context), pad_id, dtype=stream.dtype)
            first, others = torch.cat([self.rows[:1], after], dim=1), torch.cat([before, self.rows[1:]], dim=1)
            self.rows = torch.cat([first, others])  # (batch, context + row_length + 1)
        self.bptt = bptt
        self.pad_id = pad_id
        steps = self.rows.shape[1] - 1
        lengths = variable_lengths(steps, bptt, variable_seed) if variable_seed is not None else [bptt] * -(-steps // bptt)
        self.starts = np.concatenate([[0], np.cumsum(lengths)])  # chunk i reads steps starts[i] .. starts[i + 1] (cut at the end)
        self.variable = variable_seed is not None

    def to(self, device: torch.device) -> "LMStream":
        self.rows = self.rows.to(device)
        return self

    def __len__(self) -> int:
        return len(self.starts) - 1

    def __getitem__(self, index: int) -> LMChunk:
        if not 0 <= index < len(self):
            raise IndexError(index)
        start = int(self.starts[index])
        end = min(int(self.starts[index + 1]), self.rows.shape[1] - 1)
        targets = self.rows[:, start + 1 : end + 1]
        unscored = min(end, self.context) - start  # targets that are context for rows after the first
        if unscored > 0:
            targets = targets.clone()
            targets[1:, :unscored] = self.pad_id
        lr_scale = (end - start) / self.bptt if self.variable else 1.0
        return LMChunk(token_ids=self.rows[:, start:end], targets=targets, lr_scale=lr_scale)


def variable_lengths(steps: int, bptt: int, seed: Sequence[int]) -> list[int]:
    """Chunk lengths covering ``steps`` time steps, drawn as AWD-LSTM draws them: the mean
    is ``bptt`` with probability 0.95, else ``bptt / 2``; the length is normal around it
    with standard deviation 5, at least 5 and at most ``bptt`` + 40 -- so that over the epochs
    each token is a target after every number of steps of context. A pure function of the
    seed: a resumed run reads the chunks an uninterrupted one does."""
    generator, lengths, covered = np.random.default_rng(seed), [], 0
    while covered < steps:
        mean = bptt if generator.random() < 0.95 else bptt / 2
        length = min(max(5, int(generator.normal(mean, 5))), bptt + 40)
        lengths.append(max(1, length))
        covered += lengths[-1]
    return lengths


# --- Tagging: padded sentences, their words as bytes, their tags --------------------------


@dataclass
class TaggedBatch:
    """Padded sentences: what a tagging model reads, and their gold tags when known."""

    token_ids: torch.Tensor  # (batch, time), pad_id after each sentence
    lengths: torch.Tensor  # (batch,) on the CPU, as packing wants
    char_ids: Optional[torch.Tensor]  # (distinct words, word_bytes): each distinct word of the batch once, 0 pads
    char_index: Optional[torch.Tensor]  # (batch, time): row of char_ids for each token, 1-based; 0 at padding
    tag_ids: Optional[torch.Tensor]  # (batch, time), IGNORE_INDEX at padding

    def to(self, device: torch.device) -> "TaggedBatch":
        move = lambda tensor: None if tensor is None else tensor.to(device, non_blocking=True)  # noqa: E731
        return TaggedBatch(move(self.token_ids), self.lengths, move(self.char_ids), move(self.char_index), move(self.tag_ids))

    @property
    def mask(self) -> torch.Tensor:
        """(batch, time) true on real tokens."""
        return torch.arange(self.token_ids.shape[1], device=self.token_ids.device) < self.lengths.to(self.token_ids.device)[:, None]


def collate_tagged(
    word_ids: Sequence[Sequence[int]],
    words: Optional[Sequence[Sequence[str]]],
    tag_ids: Optional[Sequence[Sequence[int]]],
    pad_id: int,
) -> TaggedBatch:
    """Pad a list of sentences into one batch.

    Args:
        word_ids: each sentence's word ids (at least one word each).
        words: each sentence's words, for character features (``None``: no char_ids).
        tag_ids: each sentence's tag ids, or ``None`` at inference.
        pad_id: the padding word id.
    """
    # filled as NumPy arrays (one call per row, not one tensor per row), then shared with torch
    lengths = [len(sentence) for sentence in word_ids]
    max_length = max(lengths)
    token_array = np.full((len(word_ids), max_length), pad_id, dtype=np.int64)
    for row, sentence in enumerate(word_ids):
        token_array[row, : len(sentence)] = sentence
    char_tensor = char_index = None
    if words is not None:
        # each distinct word once: a batch repeats "the", "." and friends many times
        distinct: dict[str, int] = {}
        index_array = np.zeros((len(words), max_length), dtype=np.int64)
        for row, sentence in enumerate(words):
            index_array[row, : len(sentence)] = [distinct.setdefault(word, len(distinct) + 1) for word in sentence]
        char_index = torch.from_numpy(index_array)
        char_tensor = _word_bytes(list(distinct))
    tag_tensor = None
    if tag_ids is not None:
        tag_array = np.full((len(tag_ids), max_length), IGNORE_INDEX, dtype=np.int64)
        for row, sentence in enumerate(tag_ids):
            tag_array[row, : len(sentence)] = sentence
        tag_tensor = torch.from_numpy(tag_array)
    token_tensor, lengths = torch.from_numpy(token_array), torch.tensor(lengths, dtype=torch.long)
    return TaggedBatch(token_tensor, lengths, char_tensor, char_index, tag_tensor)


def _word_bytes(words: Sequence[str]) -> torch.Tensor:
    """(words, width) byte ids of each word's first ``MAX_WORD_BYTES`` bytes, shifted by one;
    0 pads; ``width`` is the longest word's byte count (at least 1)."""
    encoded = [word.encode("utf-8")[:MAX_WORD_BYTES] for word in words]
    width = max(1, max(map(len, encoded), default=0))
    # padded with 0xFF, a byte UTF-8 never holds, then every byte mapped to its id at once
    flat = np.frombuffer(b"".join(word.ljust(width, b"\xff") for word in encoded), dtype=np.uint8)
    return torch.from_numpy(_BYTE_IDS[flat.reshape(len(encoded), width)])


_BYTE_IDS = np.append(np.arange(1, 256, dtype=np.int64), 0)  # byte b -> b + 1; the padding byte 0xFF -> 0


# --- Every task but language modeling: an epoch of batches of similar lengths -------------


class Batches(Sequence):
    """The batches of an epoch, each collated when the loop reaches it (an epoch of G2P is
    2,700 batches: collating them all up front took seconds before the first step).

    Args:
        groups: the example indices of each batch; an empty group (a DDP process's share
            of a small batch) gives ``None``.
        collate: example indices -> a batch.
    """

    def __init__(self, groups: Sequence[Sequence[int]], collate: Callable[[Sequence[int]], Any]):
        self.groups = groups
        self.collate = collate

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < len(self.groups):
            raise IndexError(index)
        return self.collate(self.groups[index]) if self.groups[index] else None


def bucketed_batches(lengths: Sequence[int], batch_size: int, seed: Optional[str] = None, pool: int = 50) -> list[list[int]]:
    """Group example indices into batches of similar lengths, so padding (and packing)
    wastes little.

    With a ``seed``: shuffle, sort within pools of ``pool * batch_size`` examples, cut
    into batches and shuffle the batches -- a pure function of the seed. Without one:
    sort everything by length (inference).
    """
    order = list(range(len(lengths)))
    if seed is None:
        order.sort(key=lambda index: lengths[index])
        return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    generator = random.Random(seed)
    generator.shuffle(order)
    batches = []
    for start in range(0, len(order), pool * batch_size):
        chunk = sorted(order[start : start + pool * batch_size], key=lambda index: lengths[index])
        batches += [chunk[offset : offset + batch_size] for offset in range(0, len(chunk), batch_size)]
    generator.shuffle(batches)
    return batches


# --- Many-to-one examples: truncated and padded inputs, and their targets -----------------


def truncate(ids: Sequence, max_length: Optional[int], side: str = "head") -> Sequence:
    """Cut a sequence to ``max_length``, keeping its start (``head``), end (``tail``) or
    both halves (``head+tail``: the extra step, if odd, goes to the head)."""
    if max_length is None or len(ids) <= max_length:
        return ids
    if side == "head":
        return ids[:max_length]
    if side == "tail":
        return ids[len(ids) - max_length :]
    head = (max_length + 1) // 2
    return [*ids[:head], *ids[len(ids) - (max_length - head) :]] if isinstance(ids, list) else np.concatenate([ids[:head], ids[len(ids) - (max_length - head) :]])


@dataclass
class SequenceBatch:
    """Padded inputs of many-to-one (or per-step regression) examples, and their targets."""

    inputs: torch.Tensor  # (batch, time) token ids, or (batch, time, features) vectors
    lengths: torch.Tensor  # (batch,) on the CPU
    targets: Optional[torch.Tensor]  # (batch,) class ids | (batch, outputs) | (batch, time, outputs), NaN at padding

    def to(self, device: torch.device) -> "SequenceBatch":
        targets = None if self.targets is None else self.targets.to(device, non_blocking=True)
        return SequenceBatch(self.inputs.to(device, non_blocking=True), self.lengths, targets)


def collate_sequences(inputs: Sequence, pad_id: int = 0, targets: Optional[Sequence] = None) -> SequenceBatch:
    """Pad token-id lists (or ``(time, features)`` arrays) into one batch.

    Targets: ints (class ids), ``(outputs,)`` arrays, or ``(time, outputs)`` arrays that
    are padded with NaN (left out of the loss).
    """
    lengths = torch.tensor([len(sequence) for sequence in inputs], dtype=torch.long)
    max_length = int(lengths.max())
    if isinstance(inputs[0], np.ndarray):
        padded = torch.zeros((len(inputs), max_length, inputs[0].shape[1]), dtype=torch.float32)
        for row, sequence in enumerate(inputs):
            padded[row, : len(sequence)] = torch.from_numpy(np.asarray(sequence, dtype=np.float32))
    else:
        padded = torch.full((len(inputs), max_length), pad_id, dtype=torch.long)
        for row, sequence in enumerate(inputs):
            padded[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
    target_tensor = None
    if targets is not None:
        if isinstance(targets[0], (int, np.integer)):
            target_tensor = torch.tensor(targets, dtype=torch.long)
        elif targets[0].ndim == 1:
            target_tensor = torch.from_numpy(np.stack(targets).astype(np.float32))
        else:
            target_tensor = torch.full((len(targets), max_length, targets[0].shape[1]), float("nan"))
            for row, values in enumerate(targets):
                target_tensor[row, : len(values)] = torch.from_numpy(values)
    return SequenceBatch(padded, lengths, target_tensor)
