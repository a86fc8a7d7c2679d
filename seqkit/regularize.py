"""AWD-LSTM's regularisers (Merity et al., 2017; salesforce/awd-lstm-lm), each a small
function or module the encoder, the embedding, the head and the language model's loss use:

- ``drop_hidden_weights``: weight drop, DropConnect on the hidden-to-hidden matrices
  (``weight_hh_l*``). The raw matrices stay the module's parameters (what a checkpoint
  holds and evaluation uses); each training forward draws a dropped copy and hands it to
  the fused ``nn.LSTM`` / ``nn.GRU`` / ``nn.RNN`` kernel through
  ``torch.func.functional_call``, so no step runs in Python.
- ``LockedDropout``: variational dropout, one mask per sequence shared over its time steps
  (inputs, between layers, outputs); ``run_layer_by_layer`` runs a stacked recurrence one
  fused layer at a time so that a locked mask can sit between its layers.
- ``embedding_dropout``: whole words dropped (rows of the embedding matrix), the rest rescaled.
- ``activation_penalties``: AR, alpha * mean(h^2) on the dropped outputs of the last
  layer, and TAR, beta * mean((h_t - h_{t-1})^2) on its outputs before dropout.

Every one is the identity (and free) in eval mode, so ONNX export and inference read the
raw weights as they are.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.utils.rnn import PackedSequence

Inputs = Union[torch.Tensor, PackedSequence]


class LockedDropout(nn.Module):
    """Dropout with one mask per sequence, the same at every time step (variational
    dropout, Gal & Ghahramani 2016), on batch-first (batch, time, features) tensors or a
    ``PackedSequence``. Kept units are scaled by 1 / (1 - p)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {p}")
        self.p = p

    def forward(self, inputs: Inputs) -> Inputs:
        if not self.training or self.p == 0.0:
            return inputs
        if isinstance(inputs, PackedSequence):
            return locked_dropout_packed(inputs, self.p)
        mask = inputs.new_empty(inputs.shape[0], 1, inputs.shape[2]).bernoulli_(1 - self.p) / (1 - self.p)
        return inputs * mask  # (batch, time, features): one mask per row, shared over time

    def extra_repr(self) -> str:
        return f"p={self.p}"


def locked_dropout_packed(packed: PackedSequence, p: float) -> PackedSequence:
    """``LockedDropout`` on a ``PackedSequence``: each packed row gets its sequence's mask."""
    batch_sizes = packed.batch_sizes  # (time,) sequences still running at each step, on the CPU
    batch = int(batch_sizes[0])
    starts = torch.cumsum(batch_sizes, 0) - batch_sizes
    position = torch.arange(int(batch_sizes.sum())) - torch.repeat_interleave(starts, batch_sizes)  # place in the sorted batch
    sequence = position if packed.sorted_indices is None else packed.sorted_indices.cpu()[position]
    mask = packed.data.new_empty(batch, packed.data.shape[1]).bernoulli_(1 - p) / (1 - p)
    return packed._replace(data=packed.data * mask[sequence.to(mask.device)])


def drop_hidden_weights(rnn: nn.RNNBase, p: float) -> dict[str, torch.Tensor]:
    """Every parameter of ``rnn`` by name, the hidden-to-hidden matrices with DropConnect
    (a fresh mask each call, kept weights scaled by 1 / (1 - p)); gradients flow to the raw ones."""
    return {name: F.dropout(weight, p, training=True) if name.startswith("weight_hh") and p > 0 else weight
            for name, weight in rnn.named_parameters()}  # fmt: skip


def one_layer_rnn(rnn: nn.RNNBase, layer: int) -> nn.RNNBase:
    """A one-layer module shaped like layer ``layer`` of ``rnn``; ``run_layer_by_layer``
    calls it with that layer's tensors (its own parameters are never used)."""
    extra = {"nonlinearity": rnn.nonlinearity} if isinstance(rnn, nn.RNN) else {}
    input_size = rnn.input_size if layer == 0 else rnn.hidden_size * (2 if rnn.bidirectional else 1)
    return type(rnn)(input_size, rnn.hidden_size, num_layers=1, bias=rnn.bias, batch_first=rnn.batch_first,
                     bidirectional=rnn.bidirectional, **extra)  # fmt: skip


def run_layer_by_layer(
    rnn: nn.RNNBase,
    layers: tuple[nn.RNNBase, ...],
    weights: dict[str, torch.Tensor],
    inputs: Inputs,
    state: Optional[Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]],
    between: LockedDropout,
) -> tuple[Inputs, Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]]:
    """A stacked ``rnn`` run one fused layer at a time with ``weights`` (its own, or
    ``drop_hidden_weights``'), ``between`` applied to each layer's outputs before the
    next reads them. Same inputs and outputs as ``rnn(inputs, state)``.

    Args:
        layers: ``(one_layer_rnn(rnn, 0), one_layer_rnn(rnn, 1))``: the shapes of the
            first layer and of every later one.
    """
    directions = 2 if rnn.bidirectional else 1
    lstm = isinstance(rnn, nn.LSTM)
    finals = []
    for layer in range(rnn.num_layers):
        suffixes = [""] + (["_reverse"] if rnn.bidirectional else [])
        own = {f"{name}_l0{suffix}": weights[f"{name}_l{layer}{suffix}"]
               for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")[: 4 if rnn.bias else 2] for suffix in suffixes}  # fmt: skip
        rows = slice(layer * directions, (layer + 1) * directions)
        layer_state = None if state is None else (tuple(part[rows] for part in state) if lstm else state[rows])
        if layer > 0:
            inputs = between(inputs)
        inputs, final = functional_call(layers[min(layer, 1)], own, (inputs, layer_state))
        finals.append(final)
    if lstm:
        return inputs, (torch.cat([h for h, _ in finals]), torch.cat([c for _, c in finals]))
    return inputs, torch.cat(finals)


def embedding_dropout(embedding: nn.Embedding, token_ids: torch.Tensor, p: float) -> torch.Tensor:
    """Look ``token_ids`` up in ``embedding`` with whole rows (words) dropped with
    probability ``p`` -- every occurrence of a dropped word in the batch becomes zeros --
    and the kept rows scaled by 1 / (1 - p). (batch, time) -> (batch, time, embedding_dim)."""
    weight = embedding.weight
    mask = weight.new_empty(weight.shape[0], 1).bernoulli_(1 - p) / (1 - p)
    return F.embedding(token_ids, weight * mask, embedding.padding_idx)


def activation_penalties(dropped: torch.Tensor, states: torch.Tensor, alpha: float, beta: float) -> torch.Tensor:
    """AR + TAR on the last layer's outputs (batch, time, hidden): ``alpha`` * mean of the
    squared ``dropped`` outputs (those the output layer reads) plus ``beta`` * mean of the
    squared step-to-step change of the outputs before dropout."""
    penalty = states.new_zeros(())
    if alpha > 0:
        penalty = penalty + alpha * dropped.float().pow(2).mean()
    if beta > 0 and states.shape[1] > 1:
        penalty = penalty + beta * (states[:, 1:] - states[:, :-1]).float().pow(2).mean()
    return penalty
