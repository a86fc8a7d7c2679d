"""The packed RNN / GRU / LSTM encoder, and token embeddings (with character features).

This is where the recurrent network is built (``RNNEncoder``) and where a padded batch is
packed: ``pack_padded_sequence(..., enforce_sorted=False)`` whenever the sequences of a
batch have different lengths, so padding never reaches the recurrence and each
sequence's final state is taken at its own last real step.

Each module takes plain arguments and works in a notebook without a recipe::

    encoder = RNNEncoder(input_size=128, hidden_size=256, num_layers=2, cell="gru")
    states, final_state = encoder(inputs, lengths)  # (batch, time, 256), (2, batch, 256)
"""

from __future__ import annotations

from typing import Optional, Union

import torch
from torch import nn
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .regularize import LockedDropout, drop_hidden_weights, embedding_dropout, one_layer_rnn, run_layer_by_layer

# An RNN's or GRU's state is one tensor; an LSTM's is (h, c). Each is shaped
# (num_layers * num_directions, batch, hidden_size), whatever batch_first says.
State = Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]

RNN_CELLS: dict[str, type[nn.RNNBase]] = {"rnn": nn.RNN, "gru": nn.GRU, "lstm": nn.LSTM}
BYTE_VOCABULARY = 257  # a word's characters as UTF-8 bytes 0-255, shifted by one: 0 pads


class RNNEncoder(nn.Module):
    """A multi-layer ``nn.RNN``, ``nn.GRU`` or ``nn.LSTM`` over padded, batch-first inputs.

    Args:
        input_size: size of each input vector.
        hidden_size: size of the state of each direction.
        num_layers: stacked recurrent layers.
        cell: ``rnn``, ``gru`` or ``lstm``.
        nonlinearity: ``tanh`` or ``relu`` (``rnn`` only).
        bidirectional: also read each sequence right to left.
        dropout: dropout between stacked layers.
        weight_drop: DropConnect on the hidden-to-hidden matrices in training
            (``regularize.drop_hidden_weights``; the fused kernel still runs every layer).
        locked_dropout: the dropout between layers keeps one mask per sequence over time
            (``regularize.LockedDropout``); the layers then run one fused call each.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        cell: str = "lstm",
        nonlinearity: str = "tanh",
        bidirectional: bool = False,
        dropout: float = 0.0,
        weight_drop: float = 0.0,
        locked_dropout: bool = False,
    ):
        super().__init__()
        if cell not in RNN_CELLS:
            raise ValueError(f"unknown cell {cell!r}: use one of {', '.join(RNN_CELLS)}")
        extra = {"nonlinearity": nonlinearity} if cell == "rnn" else {}
        self.rnn = RNN_CELLS[cell](
            input_size,
            hidden_size,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 and not locked_dropout else 0.0,  # PyTorch applies it between layers only
            **extra,
        )
        if not 0.0 <= weight_drop < 1.0:
            raise ValueError(f"weight_drop must lie in [0, 1), got {weight_drop}")
        self.weight_drop = weight_drop
        self.between = LockedDropout(dropout if locked_dropout and num_layers > 1 else 0.0)
        # shapes of layer 0 and of the later layers, for the layer-by-layer run; a tuple, so
        # their unused parameters stay out of state_dict
        self._layers = (one_layer_rnn(self.rnn, 0), one_layer_rnn(self.rnn, 1)) if self.between.p > 0 else ()
        self.cell = cell
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_directions = 2 if bidirectional else 1

    @property
    def output_dim(self) -> int:
        """Size of each output state: ``hidden_size * num_directions``."""
        return self.hidden_size * self.num_directions

    def state_shape(self, batch_size: int) -> tuple[int, int, int]:
        """The shape of an initial or final state tensor (each of h and c for an LSTM)."""
        return (self.num_layers * self.num_directions, batch_size, self.hidden_size)

    def forward(
        self,
        inputs: torch.Tensor,
        lengths: Optional[torch.Tensor] = None,
        initial_state: Optional[State] = None,
    ) -> tuple[torch.Tensor, State]:
        """Run the recurrence.

        Args:
            inputs: (batch, time, input_size), padded after each sequence's end.
            lengths: (batch,) real lengths, or ``None`` when every sequence fills ``time``.
            initial_state: ``None`` for zeros, else shaped like ``state_shape(batch)``
                (a pair of such tensors for an LSTM).

        Returns:
            states: (batch, time, num_directions * hidden_size); zero at padded steps.
            final_state: the state after each sequence's last real step, shaped like
                ``initial_state``.
        """
        batch_size, max_length = inputs.shape[0], inputs.shape[1]
        self._check_state(initial_state, batch_size)
        if lengths is None or bool((lengths == max_length).all()):
            return self._recur(inputs, initial_state)
        lengths = lengths.cpu()  # pack_padded_sequence wants lengths on the CPU
        if bool((lengths < 1).any()) or bool((lengths > max_length).any()):
            raise ValueError(f"lengths must lie in 1..{max_length} (the time dimension), got {lengths.tolist()}")
        packed = pack_padded_sequence(inputs, lengths, batch_first=True, enforce_sorted=False)
        packed_states, final_state = self._recur(packed, initial_state)
        states, _ = pad_packed_sequence(packed_states, batch_first=True, total_length=max_length)
        return states, final_state  # (batch, time, directions * hidden)

    def _recur(self, inputs, initial_state: Optional[State]):
        """``self.rnn(inputs, initial_state)``; in training with weight drop, on dropped
        hidden-to-hidden weights, and with locked dropout between layers, one layer at a time."""
        if not self.training or (self.weight_drop == 0.0 and self.between.p == 0.0):
            return self.rnn(inputs, initial_state)  # eval (and ONNX export): the raw weights, one fused call
        weights = drop_hidden_weights(self.rnn, self.weight_drop)
        if self.between.p > 0.0:
            return run_layer_by_layer(self.rnn, self._layers, weights, inputs, initial_state, self.between)
        return functional_call(self.rnn, weights, (inputs, initial_state))

    def _check_state(self, state: Optional[State], batch_size: int) -> None:
        if state is None:
            return
        expected = self.state_shape(batch_size)
        parts = state if isinstance(state, tuple) else (state,)
        if self.cell == "lstm" and len(parts) != 2:
            raise ValueError("an LSTM's initial state is a pair (h, c) of tensors")
        if self.cell != "lstm" and isinstance(state, tuple):
            raise ValueError(f"a {self.cell.upper()}'s initial state is one tensor, not a tuple")
        for part in parts:
            if tuple(part.shape) != expected:
                raise ValueError(
                    f"initial state has shape {tuple(part.shape)}; expected "
                    f"(num_layers * num_directions, batch, hidden_size) = {expected}. "
                    "batch_first does not change the state's layout: batch is always its second dimension"
                )


class CharFeatures(nn.Module):
    """One vector per word from its characters (UTF-8 bytes): a small BiLSTM or CNN.

    Words never seen in training (names, hashtags, typos: common in tweets) still get a
    representation from their spelling and capitalisation. Bytes need no vocabulary, so
    nothing beyond the weights is stored, and emoji or CJK are covered.

    Args:
        kind: ``lstm`` (final states of a BiLSTM over the bytes) or ``cnn`` (max-pooled
            convolution of width 3).
        embedding_dim: size of each byte vector.
        hidden_size: LSTM state size per direction, or number of CNN filters.
    """

    def __init__(self, kind: str = "lstm", embedding_dim: int = 25, hidden_size: int = 25, dropout: float = 0.0):
        super().__init__()
        if kind not in ("lstm", "cnn"):
            raise ValueError(f"unknown char_features {kind!r}: use lstm or cnn")
        self.kind = kind
        self.embedding = nn.Embedding(BYTE_VOCABULARY, embedding_dim, padding_idx=0)
        self.dropout = nn.Dropout(dropout)
        if kind == "lstm":
            self.encoder = RNNEncoder(embedding_dim, hidden_size, cell="lstm", bidirectional=True)
            self.output_dim = 2 * hidden_size
        else:
            self.convolution = nn.Conv1d(embedding_dim, hidden_size, kernel_size=3, padding=1)
            self.output_dim = hidden_size

    def forward(self, char_ids: torch.Tensor, char_index: torch.Tensor) -> torch.Tensor:
        """Word vectors from bytes.

        Args:
            char_ids: (words, word_length) byte ids of each distinct word (0: padding).
            char_index: (batch, time) the row of ``char_ids`` for each token, 1-based; 0 pads.

        Returns:
            (batch, time, output_dim), zero at padding.
        """
        vectors = self.dropout(self.embedding(char_ids))  # (words, word_length, embedding_dim)
        padding = char_ids == 0
        if self.kind == "lstm":
            _, (final, _) = self.encoder(vectors, (~padding).sum(1).clamp(min=1))  # (2, words, hidden)
            features = torch.cat([final[0], final[1]], dim=1)  # forward end, backward start
        else:
            convolved = self.convolution(vectors.transpose(1, 2))  # (words, filters, word_length)
            # the max over each word's own bytes: -inf added at padding (an addition broadcast
            # over the filters costs a third of a masked fill of the whole tensor in ONNX Runtime)
            beyond = torch.zeros_like(char_ids, dtype=convolved.dtype).masked_fill(padding, float("-inf"))
            features = (convolved + beyond.unsqueeze(1)).amax(dim=2)
            features = features.masked_fill(padding.all(1, keepdim=True), 0.0)  # an empty word: no bytes, no features
        features = torch.cat([features.new_zeros(1, self.output_dim), features])  # row 0: padding
        return features[char_index]


class TokenEmbedding(nn.Module):
    """Token ids -> vectors, with dropout, optionally concatenated with ``CharFeatures``
    of each token. The padding id maps to a zero vector that receives no gradient.

    ``embedding_dropout`` drops whole words of the vocabulary in training
    (``regularize.embedding_dropout``); ``locked_dropout`` makes ``dropout`` keep one mask
    per sequence over time (``regularize.LockedDropout``)."""

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int,
        padding_idx: int = 0,
        dropout: float = 0.0,
        char_features: Optional[CharFeatures] = None,
        embedding_dropout: float = 0.0,
        locked_dropout: bool = False,
    ):
        super().__init__()
        if not 0.0 <= embedding_dropout < 1.0:
            raise ValueError(f"embedding_dropout must lie in [0, 1), got {embedding_dropout}")
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=padding_idx)
        # small initial vectors: PyTorch's N(0, 1) default gives huge first logits when the
        # output layer shares this matrix
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        with torch.no_grad():
            self.embedding.weight[padding_idx].zero_()
        self.char_features = char_features
        self.embedding_dropout = embedding_dropout  # whole words (rows of the matrix), in training
        self.dropout = LockedDropout(dropout) if locked_dropout else nn.Dropout(dropout)
        self.output_dim = embedding_dim + (char_features.output_dim if char_features is not None else 0)

    @property
    def weight(self) -> nn.Parameter:
        return self.embedding.weight

    def forward(
        self, token_ids: torch.Tensor, char_ids: Optional[torch.Tensor] = None, char_index: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """(batch, time) ids [and the words' bytes: ``CharFeatures.forward``] -> (batch, time, output_dim)."""
        if self.training and self.embedding_dropout > 0.0:
            vectors = embedding_dropout(self.embedding, token_ids, self.embedding_dropout)
        else:
            vectors = self.embedding(token_ids)
        if self.char_features is not None:
            if char_ids is None or char_index is None:
                raise ValueError("this embedding has character features: pass char_ids and char_index")
            vectors = torch.cat([vectors, self.char_features(char_ids, char_index)], dim=-1)
        return self.dropout(vectors)


class VectorInput(nn.Module):
    """Inputs that are already vectors (``data.inputs: vectors``): passed to the encoder as
    they are, with dropout; no tokenizer, no embedding. Takes ``TokenEmbedding``'s place."""

    def __init__(self, input_size: int, dropout: float = 0.0):
        super().__init__()
        self.output_dim = input_size
        self.dropout = nn.Dropout(dropout)
        self.char_features = None

    def forward(self, vectors: torch.Tensor, char_ids: None = None, char_index: None = None) -> torch.Tensor:
        """(batch, time, input_size) -> the same, after dropout."""
        if vectors.dim() != 3 or vectors.shape[-1] != self.output_dim:
            raise ValueError(f"expected vectors shaped (batch, time, {self.output_dim}), got {tuple(vectors.shape)}")
        return self.dropout(vectors)
