"""Task heads: what turns the encoder's states into the task's outputs, and their loss.

A head is any module with ``forward(states, mask)`` and ``loss(outputs, targets)``
(``Head`` below spells that out); ``SequenceModel`` composes it with an embedding and an
encoder.
"""

from __future__ import annotations

from typing import Optional, Protocol, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .crf import CRF, SpanQuery, cut_to_lengths
from .regularize import LockedDropout

IGNORE_INDEX = -100  # padded positions of a tag tensor


class Head(Protocol):
    def forward(self, states: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(batch, time, encoder output_dim) states -> the task's outputs."""

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean loss of a batch (a scalar)."""


class LanguageModelHead(nn.Module):
    """The next-token distribution at every step (many-to-many): a full softmax over the
    vocabulary, or an adaptive softmax (Grave et al., 2017) that is as exact and much cheaper.

    The adaptive softmax splits the vocabulary at ``cutoffs`` into a shortlist of frequent
    tokens (ids below ``cutoffs[0]``; seqkit's tokenizers number tokens by training
    frequency) and clusters of rarer ones. The shortlist and one entry per cluster share
    one softmax; a token in cluster ``k`` has probability p(cluster k) * p(token | cluster
    k), the second from a softmax over the cluster's tokens alone. Every
    token's probability is exact -- the distribution sums to one -- but a training step
    scores each cluster only for the targets that fall in it: with 86 % of Moby-Dick's
    tokens in a 2,000-word shortlist, the output layer costs a sixth of a 16k-word softmax.
    The token vectors are one (vocab_size, dim) matrix in either kind, so ``tied_embedding``
    ties them to the input embedding in both.

    Args:
        input_dim: size of the encoder's states.
        vocab_size: number of tokens.
        pad_id: targets equal to this are left out of the loss.
        dropout: dropout on the states before the output layer.
        tied_embedding: share the token vectors with this input embedding matrix
            (vocab_size, embedding_dim). When ``input_dim`` differs from the embedding
            size a linear projection maps the states down first.
        cutoffs: ``()`` for a full softmax; increasing ids ``0 < c1 < c2 < ... < vocab_size``
            for an adaptive softmax with the shortlist ``[0, c1)`` and clusters
            ``[c1, c2)``, ..., ``[c_last, vocab_size)``.
        locked_dropout: ``dropout`` keeps one mask per sequence over time
            (``regularize.LockedDropout``).
    """

    def __init__(
        self,
        input_dim: int,
        vocab_size: int,
        pad_id: int = 0,
        dropout: float = 0.0,
        tied_embedding: Optional[nn.Parameter] = None,
        cutoffs: Sequence[int] = (),
        locked_dropout: bool = False,
    ):
        super().__init__()
        if list(cutoffs) != sorted(set(cutoffs)) or any(not 0 < cutoff < vocab_size for cutoff in cutoffs):
            raise ValueError(f"cutoffs must increase strictly between 0 and the vocabulary size {vocab_size}, got {list(cutoffs)}")
        self.dropout = LockedDropout(dropout) if locked_dropout else nn.Dropout(dropout)
        self.pad_id = pad_id
        output_input_dim = input_dim
        self.projection: Optional[nn.Linear] = None
        if tied_embedding is not None:
            output_input_dim = tied_embedding.shape[1]
            if output_input_dim != input_dim:
                self.projection = nn.Linear(input_dim, output_input_dim)
        self.output = nn.Linear(output_input_dim, vocab_size)  # a row and a bias per token
        if tied_embedding is not None:
            self.output.weight = tied_embedding
        self.bounds = [*cutoffs, vocab_size]  # adaptive: cluster k holds ids [bounds[k], bounds[k + 1])
        self.clusters: Optional[nn.Linear] = None
        if cutoffs:
            self.clusters = nn.Linear(output_input_dim, len(cutoffs))  # each cluster's entry in the shortlist's softmax

    def forward(self, states: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(batch, time, input_dim) states -> (batch, time, vocab_size) scores whose softmax
        is the next-token distribution: logits (full softmax) or log-probabilities (adaptive)."""
        hidden = self._hidden(states)
        if self.clusters is None:
            return self.output(hidden)
        (shortlist_weight, *cluster_weights), (shortlist_bias, *cluster_biases) = self._pieces()
        shortlist = self.bounds[0]
        head = F.linear(hidden, shortlist_weight, shortlist_bias).float().log_softmax(-1)  # (batch, time, shortlist + clusters)
        parts = [head[..., :shortlist]]
        for cluster, (weight, bias) in enumerate(zip(cluster_weights, cluster_biases)):
            within = F.linear(hidden, weight, bias).float().log_softmax(-1)  # (batch, time, cluster size)
            parts.append(within + head[..., shortlist + cluster, None])  # log p(cluster) + log p(token | cluster)
        return torch.cat(parts, dim=-1)

    def nll(self, states: torch.Tensor, targets: torch.Tensor, dropped: bool = False) -> torch.Tensor:
        """Negative log-likelihood of each target, (batch, time), 0 where the target is
        padding: what training and evaluation need, without the full distribution.
        ``dropped``: ``states`` went through ``self.dropout`` already (AR reads them)."""
        hidden = self._hidden(states, dropped)
        if self.clusters is None:
            logits = self.output(hidden)
            return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=self.pad_id, reduction="none").view_as(targets)
        hidden, flat_targets = hidden.flatten(0, 1), targets.flatten().contiguous()  # (tokens, dim), (tokens,)
        (shortlist_weight, *cluster_weights), (shortlist_bias, *cluster_biases) = self._pieces()
        shortlist = self.bounds[0]
        cluster_of = torch.bucketize(flat_targets, torch.tensor(self.bounds, device=targets.device), right=True) - 1  # -1: the shortlist
        head_targets = torch.where(cluster_of < 0, flat_targets, shortlist + cluster_of)  # a rare token's cluster entry
        nll = F.cross_entropy(F.linear(hidden, shortlist_weight, shortlist_bias).float(), head_targets, reduction="none")
        for cluster, (weight, bias) in enumerate(zip(cluster_weights, cluster_biases)):
            rows = (cluster_of == cluster).nonzero().squeeze(1)  # only the targets in this cluster are scored by its softmax
            logits = F.linear(hidden[rows], weight, bias).float()  # (rows, cluster size)
            nll = nll.index_add(0, rows, F.cross_entropy(logits, flat_targets[rows] - self.bounds[cluster], reduction="none"))
        return nll.masked_fill(flat_targets == self.pad_id, 0.0).view_as(targets)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of ``forward``'s scores over the non-padding targets; ``targets`` is (batch, time)."""
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=self.pad_id)

    def _hidden(self, states: torch.Tensor, dropped: bool = False) -> torch.Tensor:
        states = states if dropped else self.dropout(states)
        return self.projection(states) if self.projection is not None else states

    def _pieces(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The adaptive softmax's weights and biases: the shortlist's tokens with one row per
        cluster after them, then each cluster's tokens. One ``split`` of the token matrix, so
        that back-propagation writes its gradient once, not once per piece."""
        sizes = [end - start for start, end in zip([0, *self.bounds], self.bounds)]
        weights, biases = list(self.output.weight.split(sizes)), list(self.output.bias.split(sizes))
        weights[0], biases[0] = torch.cat([weights[0], self.clusters.weight]), torch.cat([biases[0], self.clusters.bias])
        return weights, biases


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

    def loss(self, emissions: torch.Tensor, tags: torch.Tensor, class_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Mean loss of a batch; ``tags`` (batch, time) is ``IGNORE_INDEX`` at padding. A
        softmax head weighs each word's cross-entropy by its tag's ``class_weights`` when
        given (a weighted mean, as PyTorch defines it); a CRF takes none."""
        mask = tags != IGNORE_INDEX
        if self.use_crf:
            if class_weights is not None:
                raise ValueError("a CRF scores whole tag sequences: class weights need the softmax head")
            return self.crf(emissions, tags, mask)
        return F.cross_entropy(emissions.reshape(-1, emissions.shape[-1]).float(), tags.reshape(-1), weight=class_weights, ignore_index=IGNORE_INDEX)

    def decode(self, emissions: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        """The best valid tag sequence of each row (Viterbi), cut to its length."""
        lengths = mask.sum(1).cpu().numpy()
        return cut_to_lengths(self.best_paths(emissions, lengths), lengths)

    def best_paths(self, emissions: torch.Tensor, lengths: np.ndarray) -> np.ndarray:
        """``decode`` as a (batch, time) array of tag ids (0 past each row's end), from
        (batch,) ``lengths``: what ``Tagger.tag`` reads, with no list per row."""
        if not self.use_crf and not self.crf.constrained:  # plain tags (scheme none): nothing chains the tokens, each takes its best tag
            paths = emissions.argmax(-1).cpu().numpy()
            paths[np.arange(paths.shape[1])[None, :] >= lengths[:, None]] = 0
            return paths
        # a softmax head's per-token log-probabilities are chained only by the scheme's constraints
        return self.crf.best_paths(self._chain_scores(emissions), lengths)

    def posteriors(self, emissions: torch.Tensor, lengths: np.ndarray, paths: np.ndarray, spans: SpanQuery) -> tuple[np.ndarray, np.ndarray]:
        """``marginals`` and the probability of each of ``spans`` along ``paths``
        (``CRF.posteriors``), as NumPy arrays, from one forward-backward pass."""
        if not self.use_crf and not self.crf.constrained and not len(spans.rows):  # nothing chains the tokens
            marginals = emissions.float().softmax(-1).cpu().numpy()
            marginals[np.arange(marginals.shape[1])[None, :] >= lengths[:, None]] = 0.0
            return marginals, np.zeros(0)
        return self.crf.posteriors(self._chain_scores(emissions), lengths, paths, spans)

    def _chain_scores(self, emissions: torch.Tensor) -> torch.Tensor:
        """What the CRF's algorithms read: the emissions under a CRF; a softmax head's
        per-token log-probabilities, chained by zero transition scores (and the scheme's
        constraints), so that a sequence's probability is the product of its tokens'."""
        return emissions.float() if self.use_crf else emissions.float().log_softmax(-1)

    def marginals(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(batch, time, tags) probability of each tag at each token among the sequences the
        scheme allows: the CRF's marginals (forward-backward), or the softmax (renormalized
        over the allowed sequences when the scheme forbids some; exactly the softmax for
        plain tags)."""
        if not self.use_crf and not self.crf.constrained:  # nothing chains the tokens
            return emissions.float().softmax(-1).masked_fill(~mask.unsqueeze(2), 0.0)
        return self.crf.marginals(self._chain_scores(emissions), mask)

    def log_prob_within(self, emissions: torch.Tensor, mask: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """(batch,) log-probability that every token's tag is among those ``allowed`` (batch,
        time, tags) marks (``CRF.log_prob_within``)."""
        return self.crf.log_prob_within(self._chain_scores(emissions), mask, allowed)

    def k_best(self, emissions: torch.Tensor, mask: torch.Tensor, k: int) -> list[list[tuple[list[int], float]]]:
        """The ``k`` most probable valid tag sequences of each row with their probabilities,
        the best (``decode``'s) first (``CRF.k_best``)."""
        return self.crf.k_best(self._chain_scores(emissions), mask, k)


class Pooling(nn.Module):
    """One vector per sequence from the encoder's states at its real (unpadded) steps.

    - ``last``: the state after the last real step; for a bidirectional encoder, the
      forward direction's last real step and the backward direction's first step (each
      direction's summary of the whole sequence).
    - ``mean`` / ``max``: over the real steps.
    - ``attention``: a weighted mean, with weights from a small learned scorer
      (``v . tanh(W h)``, softmax over the real steps), returned for inspection.

    Args:
        kind: ``last``, ``mean``, ``max`` or ``attention``.
        input_dim: size of the encoder's states.
        bidirectional: the states are [forward; backward] halves (``last`` needs to know).
    """

    KINDS = ("last", "mean", "max", "attention")

    def __init__(self, kind: str, input_dim: int, bidirectional: bool = False):
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"unknown pooling {kind!r}: use one of {', '.join(self.KINDS)}")
        self.kind = kind
        self.bidirectional = bidirectional
        if kind == "attention":
            self.scorer = nn.Sequential(nn.Linear(input_dim, input_dim), nn.Tanh(), nn.Linear(input_dim, 1, bias=False))

    def forward(self, states: torch.Tensor, mask: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(batch, time, dim) states and (batch, time) mask -> (batch, dim) pooled, and the
        (batch, time) attention weights (``None`` unless ``attention``; 0 at padding)."""
        if mask is None:
            mask = torch.ones(states.shape[:2], dtype=torch.bool, device=states.device)
        if self.kind == "last":
            rows = torch.arange(states.shape[0], device=states.device)
            last = mask.sum(1) - 1
            if not self.bidirectional:
                return states[rows, last], None
            half = states.shape[-1] // 2
            return torch.cat([states[rows, last, :half], states[:, 0, half:]], dim=-1), None
        real = mask.unsqueeze(-1)
        if self.kind == "mean":
            return (states * real).sum(1) / real.sum(1).clamp(min=1), None
        if self.kind == "max":
            return states.masked_fill(~real, float("-inf")).max(dim=1).values, None
        scores = self.scorer(states).squeeze(-1).float().masked_fill(~mask, float("-inf"))
        weights = scores.softmax(dim=1)
        return (weights.unsqueeze(-1).to(states.dtype) * states).sum(1), weights


class ClassificationHead(nn.Module):
    """One label per sequence (many-to-one): pooling, dropout, a linear layer to class logits.

    Args:
        input_dim: size of the encoder's states.
        num_classes: number of classes.
        pooling: ``last``, ``mean``, ``max`` or ``attention`` (``Pooling``).
        bidirectional: whether the encoder reads both ways.
        dropout: dropout on the pooled vector.
    """

    def __init__(self, input_dim: int, num_classes: int, pooling: str = "last", bidirectional: bool = False, dropout: float = 0.0):
        super().__init__()
        self.pooling = Pooling(pooling, input_dim, bidirectional)
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(input_dim, num_classes)

    def forward(self, states: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(batch, time, input_dim) states -> (batch, num_classes) logits."""
        pooled, _ = self.pooling(states, mask)
        return self.output(self.dropout(pooled))

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, class_weights: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Cross-entropy of (batch, classes) logits against (batch,) class ids, each class
        weighted by ``class_weights`` when given (a weighted mean, as PyTorch defines it)."""
        return F.cross_entropy(logits.float(), targets, weight=class_weights)


class RegressionHead(nn.Module):
    """Real-valued outputs: one vector per sequence (pooled, many-to-one), or one at every
    step (``pooling="none"``, many-to-many).

    Args:
        input_dim: size of the encoder's states.
        num_outputs: values predicted (per sequence or per step).
        pooling: ``last``, ``mean``, ``max``, ``attention`` or ``none``.
        bidirectional: whether the encoder reads both ways.
        dropout: dropout before the linear layer.
    """

    def __init__(self, input_dim: int, num_outputs: int, pooling: str = "last", bidirectional: bool = False, dropout: float = 0.0):
        super().__init__()
        self.pooling = None if pooling == "none" else Pooling(pooling, input_dim, bidirectional)
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(input_dim, num_outputs)

    def forward(self, states: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(batch, time, input_dim) -> (batch, num_outputs), or (batch, time, num_outputs) per step."""
        if self.pooling is not None:
            states, _ = self.pooling(states, mask)
        return self.output(self.dropout(states))

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, kind: str = "mse") -> torch.Tensor:
        """Mean squared error (``mse``) or Huber loss with delta 1 (``huber``) over every
        target that is not NaN (per-step targets are NaN at padding)."""
        real = ~torch.isnan(targets)
        outputs, targets = outputs.float()[real], targets[real]
        if kind == "huber":
            return F.huber_loss(outputs, targets)
        return F.mse_loss(outputs, targets)
