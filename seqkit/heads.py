"""Task heads: what turns the encoder's states into the task's outputs, and their loss.

A head is any module with ``forward(states, mask)`` and ``loss(outputs, targets)``
(``Head`` below spells that out); ``SequenceModel`` composes it with an embedding and an
encoder.
"""

from __future__ import annotations

from typing import Optional, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from .crf import CRF

IGNORE_INDEX = -100  # padded positions of a tag tensor


class Head(Protocol):
    def forward(self, states: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(batch, time, encoder output_dim) states -> the task's outputs."""

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean loss of a batch (a scalar)."""


class LanguageModelHead(nn.Module):
    """Next-token logits at every step (many-to-many).

    Args:
        input_dim: size of the encoder's states.
        vocab_size: number of tokens.
        pad_id: targets equal to this are left out of the loss.
        dropout: dropout on the states before the output layer.
        tied_embedding: share the output layer's weights with this input embedding
            matrix (vocab_size, embedding_dim). When ``input_dim`` differs from the
            embedding size a linear projection maps the states down first.
    """

    def __init__(
        self,
        input_dim: int,
        vocab_size: int,
        pad_id: int = 0,
        dropout: float = 0.0,
        tied_embedding: Optional[nn.Parameter] = None,
    ):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.pad_id = pad_id
        output_input_dim = input_dim
        self.projection: Optional[nn.Linear] = None
        if tied_embedding is not None:
            output_input_dim = tied_embedding.shape[1]
            if output_input_dim != input_dim:
                self.projection = nn.Linear(input_dim, output_input_dim)
        self.output = nn.Linear(output_input_dim, vocab_size)
        if tied_embedding is not None:
            self.output.weight = tied_embedding

    def forward(self, states: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(batch, time, input_dim) states -> (batch, time, vocab_size) logits."""
        states = self.dropout(states)
        if self.projection is not None:
            states = self.projection(states)
        return self.output(states)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over the non-padding targets; ``targets`` is (batch, time)."""
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=self.pad_id)


class TaggingHead(nn.Module):
    """One tag per token (many-to-many): a linear layer, then softmax or a CRF.

    Args:
        input_dim: size of the encoder's states.
        num_tags: number of tags.
        dropout: dropout on the states before the linear layer.
        crf: score whole tag sequences with a linear-chain CRF instead of each token alone.
        allowed, can_start, can_end: the tag scheme's transitions (``labels.allowed_transitions``),
            enforced when decoding, with or without a CRF.
    """

    def __init__(self, input_dim: int, num_tags: int, dropout: float = 0.0, crf: bool = False, allowed=None, can_start=None, can_end=None):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(input_dim, num_tags)
        # the CRF holds the transition constraints; a softmax head decodes through it with
        # zero transition scores, so its output obeys the scheme as well
        self.crf = CRF(num_tags, allowed, can_start, can_end)
        self.use_crf = crf
        if not crf:
            self.crf.requires_grad_(False)

    def forward(self, states: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(batch, time, input_dim) states -> (batch, time, num_tags) emission scores."""
        return self.output(self.dropout(states))

    def loss(self, emissions: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
        """Mean loss of a batch; ``tags`` (batch, time) is ``IGNORE_INDEX`` at padding."""
        mask = tags != IGNORE_INDEX
        if self.use_crf:
            return self.crf(emissions, tags, mask)
        return F.cross_entropy(emissions.reshape(-1, emissions.shape[-1]).float(), tags.reshape(-1), ignore_index=IGNORE_INDEX)

    def decode(self, emissions: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        """The best valid tag sequence of each row (Viterbi), cut to its length."""
        if self.use_crf:
            return self.crf.decode(emissions, mask)
        # per-token log-probabilities, chained only by the scheme's constraints
        return self.crf.decode(emissions.float().log_softmax(-1), mask)
