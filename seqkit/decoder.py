"""The attention decoder of encoder-decoder (seq2seq) models: a recurrent decoder that,
at every step, attends over the encoder's states.

Each step (``AttentionDecoder.step``): the previous token's embedding, concatenated with
the previous attentional vector (input feeding), goes through an ``nn.RNN`` / ``GRU`` /
``LSTM`` cell stack; its output queries the encoder's states (``Attention``: Luong's
multiplicative "general" score or Bahdanau's additive one), and the context and the
output together make the attentional vector that predicts the next token.

Without input feeding (``model.input_feeding: false``) no step reads the one before's
attentional vector, so with the gold previous tokens (teacher forcing) every step can run
at once (``AttentionDecoder.teacher_forced``): one fused RNN call over the whole target
and one batched attention, instead of a Python loop of one-step calls, and the same
numbers as that loop. Decoding still goes step by step.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from .encoders import RNN_CELLS, State, TokenEmbedding


class DecoderState(NamedTuple):
    """Everything a decoding step needs; each field has the batch (or beam) as a dimension."""

    rnn: State  # (layers, batch, hidden), a pair for an LSTM
    feed: torch.Tensor  # (batch, hidden): the previous step's attentional vector
    memory: torch.Tensor  # (batch, source_time, key_dim): the encoder's states
    keys: torch.Tensor  # (batch, source_time, ...): the states as the attention scores them
    mask: torch.Tensor  # (batch, source_time): true at real source positions

    def select(self, rows: torch.Tensor) -> "DecoderState":
        """The state of the given rows, in that order (for beam search)."""
        rnn = tuple(part.index_select(1, rows) for part in self.rnn) if isinstance(self.rnn, tuple) else self.rnn.index_select(1, rows)
        return DecoderState(rnn, *(field.index_select(0, rows) for field in self[1:]))


class Attention(nn.Module):
    """Weights over the source positions for a decoder state, and their weighted mean.

    Args:
        kind: ``luong`` (score = q . W k) or ``bahdanau`` (score = v . tanh(W_q q + W_k k)).
        query_dim: size of the decoder state that asks.
        key_dim: size of each encoder state.
    """

    def __init__(self, kind: str, query_dim: int, key_dim: int):
        super().__init__()
        if kind not in ("luong", "bahdanau"):
            raise ValueError(f"unknown attention {kind!r}: use luong or bahdanau")
        self.kind = kind
        if kind == "luong":
            self.key_projection = nn.Linear(key_dim, query_dim, bias=False)
        else:
            self.key_projection = nn.Linear(key_dim, query_dim)
            self.query_projection = nn.Linear(query_dim, query_dim, bias=False)
            self.score = nn.Linear(query_dim, 1, bias=False)

    def keys(self, memory: torch.Tensor) -> torch.Tensor:
        """The encoder's states projected once per sequence: (batch, time, query_dim)."""
        return self.key_projection(memory)

    def forward(self, query: torch.Tensor, memory: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, query_dim) query -> (batch, key_dim) context and (batch, time) weights,
        which are 0 at padding and sum to 1 over the real positions. A (batch, steps,
        query_dim) query asks for several steps at once: (batch, steps, key_dim) contexts
        and (batch, steps, time) weights."""
        one_step = query.dim() == 2
        queries = query.unsqueeze(1) if one_step else query  # (batch, steps, query_dim)
        if self.kind == "luong":
            scores = torch.bmm(queries, keys.transpose(1, 2))  # (batch, steps, time)
        else:
            scores = self.score(torch.tanh(keys.unsqueeze(1) + self.query_projection(queries).unsqueeze(2))).squeeze(-1)
        weights = scores.float().masked_fill(~mask.unsqueeze(1), float("-inf")).softmax(dim=-1)
        context = torch.bmm(weights.to(memory.dtype), memory)  # (batch, steps, key_dim)
        return (context.squeeze(1), weights.squeeze(1)) if one_step else (context, weights)


class AttentionDecoder(nn.Module):
    """A recurrent decoder with attention (and, by default, input feeding), run one step at a time.

    Args:
        vocab_size: target vocabulary size.
        embedding_dim: size of the target token vectors.
        hidden_size: size of the decoder's state (and attentional vector).
        num_layers: stacked recurrent layers.
        cell: ``rnn``, ``gru`` or ``lstm``.
        key_dim: size of the encoder's states.
        attention: ``luong`` or ``bahdanau``.
        dropout: on embeddings, between layers and before the output layer.
        pad_id: the target padding id.
        input_feeding: feed each step's attentional vector into the next step's RNN input.
    """

    def __init__(self, vocab_size: int, embedding_dim: int, hidden_size: int, num_layers: int, cell: str, key_dim: int,
                 attention: str = "luong", dropout: float = 0.0, pad_id: int = 0, input_feeding: bool = True):  # fmt: skip
        super().__init__()
        self.embedding = TokenEmbedding(vocab_size, embedding_dim, padding_idx=pad_id, dropout=dropout)
        self.rnn = RNN_CELLS[cell](embedding_dim + (hidden_size if input_feeding else 0), hidden_size, num_layers=num_layers,
                                   batch_first=True, dropout=dropout if num_layers > 1 else 0.0)  # fmt: skip
        self.cell, self.hidden_size, self.num_layers, self.input_feeding = cell, hidden_size, num_layers, input_feeding
        self.attention = Attention(attention, hidden_size, key_dim)
        self.combine = nn.Linear(hidden_size + key_dim, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(hidden_size, vocab_size)

    def step(self, tokens: torch.Tensor, state: DecoderState) -> tuple[torch.Tensor, DecoderState, torch.Tensor]:
        """(batch,) previous tokens -> (batch, vocab) logits, the new state, (batch, source_time) attention."""
        inputs = self.embedding(tokens[:, None])  # (batch, 1, emb)
        if self.input_feeding:
            inputs = torch.cat([inputs, state.feed[:, None, :]], dim=-1)  # (batch, 1, emb + hidden)
        output, rnn_state = self.rnn(inputs, state.rnn)
        logits, attentional, weights = self._predict(output[:, 0], state)
        return logits, DecoderState(rnn_state, attentional, state.memory, state.keys, state.mask), weights

    def teacher_forced(self, tokens: torch.Tensor, state: DecoderState) -> torch.Tensor:
        """(batch, steps) gold previous tokens -> (batch, steps, vocab) logits, every step in
        one RNN call (only without input feeding, where no step waits for the one before's
        attention). Padding at the end of shorter rows does not reach their real steps."""
        if self.input_feeding:
            raise ValueError("with input feeding each step needs the one before's attention: decode step by step")
        outputs, _ = self.rnn(self.embedding(tokens), state.rnn)  # (batch, steps, hidden)
        return self._predict(outputs, state)[0]

    def _predict(self, query: torch.Tensor, state: DecoderState) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The RNN's output(s) -> logits, attentional vectors and attention weights."""
        context, weights = self.attention(query, state.memory, state.keys, state.mask)
        attentional = torch.tanh(self.combine(torch.cat([query, context], dim=-1)))
        return self.output(self.dropout(attentional)), attentional, weights
