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
