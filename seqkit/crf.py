"""A linear-chain conditional random field over per-token tag scores.

The score of a tag sequence ``y`` for emissions ``E`` (batch, time, num_tags) is

    start[y_0] + sum_t E[t, y_t] + sum_t transitions[y_{t-1}, y_t] + end[y_last]

and training maximises ``score(y_gold) - log sum_y exp(score(y))``; the sum over every
sequence is the batched forward algorithm, the best sequence is Viterbi. Sequences are
left-aligned: ``mask`` (batch, time) is true on real tokens, and every sequence has at
least one. At decoding time, transitions a tag scheme forbids (``O -> I-X``) are excluded;
plain tags (scheme ``none``) forbid none: every transition score is learned.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn


class CRF(nn.Module):
    """Linear-chain CRF.

    Args:
        num_tags: number of tags.
        allowed: optional (num_tags, num_tags) booleans, ``allowed[i][j]`` when tag j may
            follow tag i; with ``can_start`` / ``can_end``, they constrain ``decode``.
    """

    def __init__(
        self,
        num_tags: int,
        allowed: Optional[Sequence[Sequence[bool]]] = None,
        can_start: Optional[Sequence[bool]] = None,
        can_end: Optional[Sequence[bool]] = None,
    ):
        super().__init__()
        self.num_tags = num_tags
        self.transitions = nn.Parameter(torch.zeros(num_tags, num_tags))  # [from, to]
        self.start_transitions = nn.Parameter(torch.zeros(num_tags))
        self.end_transitions = nn.Parameter(torch.zeros(num_tags))

        def penalty(flags, shape) -> torch.Tensor:
            if flags is None:
                return torch.zeros(shape)
            return torch.where(torch.tensor(flags, dtype=torch.bool), 0.0, float("-inf"))

        # whether the scheme forbids anything (plain tags, scheme none, forbid nothing)
        self.constrained = any(flags is not None and not all(_flatten(flags)) for flags in (allowed, can_start, can_end))
        # constraints are fixed by the tag scheme: buffers, not learned, not saved
        self.register_buffer("transition_penalty", penalty(allowed, (num_tags, num_tags)), persistent=False)
        self.register_buffer("start_penalty", penalty(can_start, (num_tags,)), persistent=False)
        self.register_buffer("end_penalty", penalty(can_end, (num_tags,)), persistent=False)

    def forward(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of ``tags``, averaged over the batch.

        Args:
            emissions: (batch, time, num_tags) scores.
            tags: (batch, time) gold tag ids (anything at masked positions).
            mask: (batch, time) true on real tokens.
        """
        return (self.log_partition(emissions, mask) - self.score(emissions, tags, mask)).mean()

    def score(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(batch,) score of the given tag sequences."""
        emissions = emissions.float()
        tags = tags.masked_fill(~mask, 0)
        mask_float = mask.float()
        emitted = emissions.gather(2, tags.unsqueeze(2)).squeeze(2)  # (batch, time)
        transitioned = self.transitions[tags[:, :-1], tags[:, 1:]]  # (batch, time - 1)
        last = tags.gather(1, (mask.sum(1) - 1).unsqueeze(1)).squeeze(1)  # (batch,)
        return (
            self.start_transitions[tags[:, 0]]
            + (emitted * mask_float).sum(1)
            + (transitioned * mask_float[:, 1:]).sum(1)
            + self.end_transitions[last]
        )

    def log_partition(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(batch,) log of the summed exp-scores of every tag sequence (forward algorithm)."""
        emissions = emissions.float()
        alpha = self.start_transitions + emissions[:, 0]  # (batch, tags)
        for step in range(1, emissions.shape[1]):
            # (batch, from, 1) + (from, to) + (batch, 1, to) -> sum out `from`
            scores = alpha.unsqueeze(2) + self.transitions + emissions[:, step].unsqueeze(1)
            alpha = torch.where(mask[:, step].unsqueeze(1), torch.logsumexp(scores, dim=1), alpha)
        return torch.logsumexp(alpha + self.end_transitions, dim=1)

    @torch.no_grad()
    def decode(self, emissions: torch.Tensor, mask: torch.Tensor, constrained: bool = True) -> list[list[int]]:
        """The best tag sequence for each row (Viterbi), cut to its real length."""
        emissions = emissions.float()
        transitions, start, end = self.transitions, self.start_transitions, self.end_transitions
        if constrained:
            transitions = transitions + self.transition_penalty
            start, end = start + self.start_penalty, end + self.end_penalty
        score = start + emissions[:, 0]  # (batch, tags)
        backpointers = []
        for step in range(1, emissions.shape[1]):
            candidates = score.unsqueeze(2) + transitions  # (batch, from, to)
            best, best_from = candidates.max(dim=1)
            backpointers.append(best_from)
            score = torch.where(mask[:, step].unsqueeze(1), best + emissions[:, step], score)
        # follow the backpointers from each row's best last tag, all rows at once
        lengths = mask.sum(1)
        current = (score + end).argmax(dim=1)  # (batch,) the tag at each row's last position
        path = torch.zeros_like(mask, dtype=torch.long)
        path[torch.arange(len(lengths), device=path.device), lengths - 1] = current
        for step in range(emissions.shape[1] - 2, -1, -1):
            previous = backpointers[step].gather(1, current.unsqueeze(1)).squeeze(1)
            inside = step < lengths - 1  # rows whose sequence goes on past `step`
            current = torch.where(inside, previous, current)
            path[:, step] = torch.where(inside, previous, path[:, step])
        return [row[:length] for row, length in zip(path.tolist(), lengths.tolist())]


def _flatten(flags: Sequence) -> list[bool]:
    return [bool(flag) for row in flags for flag in (row if isinstance(row, Sequence) else [row])]
