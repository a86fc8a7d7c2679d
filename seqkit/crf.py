"""A linear-chain conditional random field over per-token tag scores.

The score of a tag sequence ``y`` for emissions ``E`` (batch, time, num_tags) is

    start[y_0] + sum_t E[t, y_t] + sum_t transitions[y_{t-1}, y_t] + end[y_last]

and training maximises ``score(y_gold) - log sum_y exp(score(y))``; the sum over every
sequence is the batched forward algorithm, the best sequence is Viterbi. Sequences are
left-aligned: ``mask`` (batch, time) is true on real tokens, and every sequence has at
least one. At decoding time, transitions a tag scheme forbids (``O -> I-X``) are excluded;
plain tags (scheme ``none``) forbid none: every transition score is learned.

How sure the model is, all in log space and batched: ``marginals`` (forward-backward: the
probability of each tag at each token), ``log_prob_within`` (the probability that every
token's tag lies in a given set: a span labelled exactly so), and ``k_best`` (the K most
probable sequences, k-best Viterbi). With ``constrained`` (the default) they are taken
under the distribution restricted to the sequences the scheme allows and renormalized --
the distribution decoding searches -- so ``k_best(...)[0]`` is ``decode``'s sequence.

Decoding and the probabilities run at inference, a sentence or a batch at a time, on a few
dozen tags: there a torch operation costs more to dispatch than to compute, so ``decode``,
``marginals`` and ``log_prob_within`` step through time in NumPy (on the CPU, whatever
device the emissions come from; an ONNX Runtime tagger's emissions are NumPy already),
or in the same loops compiled by Numba where it is installed (``crf_kernels``).
Viterbi keeps float32 and adds in the same order as the training-side float32 code, so it
finds the same path; forward-backward runs in probability space with each step rescaled
(float64), a matrix product per step in place of a log-sum-exp over every tag pair.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np
import torch
from torch import nn

from . import crf_kernels


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
        self._array_cache: dict = {}  # _arrays: NumPy copies of the potentials, for the parameters' current values

    def forward(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of ``tags``, averaged over the batch.

        Args:
            emissions: (batch, time, num_tags) scores.
            tags: (batch, time) gold tag ids (anything at masked positions).
            mask: (batch, time) true on real tokens.
        """
        return (self.log_partition(emissions, mask) - self.score(emissions, tags, mask)).mean()

    def score(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(batch,) score of the given tag sequences (in float64 for float64 emissions)."""
        if emissions.dtype != torch.float64:
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

    def log_partition(self, emissions: torch.Tensor, mask: torch.Tensor, constrained: bool = False) -> torch.Tensor:
        """(batch,) log of the summed exp-scores of every tag sequence (forward algorithm);
        with ``constrained``, of every sequence the scheme allows (training uses them all)."""
        if emissions.dtype != torch.float64:
            emissions = emissions.float()
        return torch.logsumexp(self._forward_scores(emissions, mask, constrained)[-1], dim=1)

    def _potentials(self, constrained: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(transitions, start, end)``, -inf where the scheme forbids, with ``constrained``."""
        if not constrained:
            return self.transitions, self.start_transitions, self.end_transitions
        return (self.transitions + self.transition_penalty, self.start_transitions + self.start_penalty,
                self.end_transitions + self.end_penalty)  # fmt: skip

    def _forward_scores(self, emissions: torch.Tensor, mask: torch.Tensor, constrained: bool) -> list[torch.Tensor]:
        """The forward algorithm's ``alpha`` at every step, each (batch, tags): the log-sum
        of the scores of every prefix ending in that tag; a row's alpha stays put past its
        end, and the last entry has the end scores added."""
        transitions, start, end = self._potentials(constrained)
        alpha = start + emissions[:, 0]  # (batch, tags)
        alphas = [alpha]
        for step in range(1, emissions.shape[1]):
            # (batch, from, 1) + (from, to) + (batch, 1, to) -> sum out `from`
            scores = alpha.unsqueeze(2) + transitions + emissions[:, step].unsqueeze(1)
            alpha = torch.where(mask[:, step].unsqueeze(1), torch.logsumexp(scores, dim=1), alpha)
            alphas.append(alpha)
        alphas.append(alpha + end)
        return alphas

    @torch.no_grad()
    def marginals(self, emissions: torch.Tensor, mask: torch.Tensor, constrained: bool = True) -> torch.Tensor:
        """Each tag's probability at each token (forward-backward), (batch, time, tags): rows
        sum to 1 on real tokens and are 0 at padding.

        Args:
            emissions: (batch, time, num_tags) scores.
            mask: (batch, time) true on real tokens.
            constrained: under the sequences the scheme allows (renormalized).
        """
        marginals = _loops().marginals(_as_array(emissions, np.float64), _lengths(mask), *self._factors(constrained))
        return torch.from_numpy(marginals).to(emissions.device)

    @torch.no_grad()
    def log_prob_within(self, emissions: torch.Tensor, mask: torch.Tensor, allowed: torch.Tensor, constrained: bool = True) -> torch.Tensor:
        """(batch,) log-probability that every token's tag is one of those ``allowed`` (batch,
        time, tags) marks there: the probability of a span labelled exactly so, when the span's
        tokens allow only its tags (and the token after it only tags that do not continue it).
        The sum over the allowed sequences divided by the sum over all of them (in float64)."""
        scores, lengths = _as_array(emissions, np.float64), _lengths(mask)
        restricted = np.where(_as_array(allowed, bool), scores, -np.inf)
        # both partition functions in one pass: the restricted rows, then the plain ones
        _, log_z = _loops().scaled_forward(np.concatenate([restricted, scores]), np.concatenate([lengths, lengths]), *self._factors(constrained))
        batch = len(lengths)
        log_probability = np.minimum(log_z[:batch] - log_z[batch:], 0.0)
        return torch.from_numpy(log_probability.astype(np.float32)).to(emissions.device)

    @torch.no_grad()
    def k_best(self, emissions: torch.Tensor, mask: torch.Tensor, k: int, constrained: bool = True) -> list[list[tuple[list[int], float]]]:
        """The ``k`` most probable tag sequences of each row (k-best Viterbi) with their
        probabilities, most probable first; fewer where fewer sequences exist (or the scheme
        allows fewer). The first is ``decode``'s.

        Returns:
            Per row, a list of ``(tag ids cut to the row's length, probability)``.
        """
        # the search in float32, step for step as ``decode`` computes; each probability, a
        # score less log Z, in float64 (as in ``marginals``)
        exact, emissions = emissions.double(), emissions.float()
        batch, time, num_tags = emissions.shape
        transitions, start, end = self._potentials(constrained)
        # score[b, y, r]: the r-th best score of a prefix ending in tag y; rank 0 alone at the start
        score = torch.full((batch, num_tags, k), float("-inf"), device=emissions.device)
        score[:, :, 0] = start + emissions[:, 0]
        backpointers = []  # per step, (batch, tags, k) indices into the previous step's (tags * k)
        for step in range(1, time):
            candidates = score.unsqueeze(2) + transitions[None, :, :, None]  # (batch, from, to, k)
            candidates = candidates.transpose(1, 2).reshape(batch, num_tags, num_tags * k)  # (batch, to, from * k)
            best, best_from = candidates.topk(k, dim=2)  # (batch, to, k)
            real = mask[:, step, None, None]
            # past a row's end, each entry points at itself: its paths stop growing
            itself = torch.arange(num_tags * k, device=emissions.device).view(1, num_tags, k)
            backpointers.append(torch.where(real, best_from, itself))
            score = torch.where(real, best + emissions[:, step, :, None], score)
        final, final_index = (score + end[None, :, None]).reshape(batch, num_tags * k).topk(k, dim=1)  # (batch, k)
        lengths = mask.sum(1)
        paths = torch.zeros(batch, k, time, dtype=torch.long, device=emissions.device)
        current = final_index  # (batch, k) index into (tags * k) at the last step
        for step in range(time - 1, -1, -1):
            paths[:, :, step] = current // k
            if step > 0:
                current = backpointers[step - 1].reshape(batch, num_tags * k).gather(1, current)
        # a row's tags sit at its first `length` steps (the steps after repeat its last entry)
        found = final > float("-inf")  # (batch, k): fewer than k sequences may exist
        log_z = torch.logsumexp(self._forward_scores(exact, mask, constrained)[-1], dim=1)  # (batch,)
        rows = torch.arange(batch, device=emissions.device)[:, None].expand(batch, k)[found]
        log_probabilities = self.score(exact[rows], paths[found], mask[rows]) - log_z[rows]
        probabilities = iter(log_probabilities.exp().clamp(max=1.0).tolist())
        return [[(paths[row, rank, : int(lengths[row])].tolist(), next(probabilities)) for rank in range(k) if found[row, rank]]
                for row in range(batch)]  # fmt: skip

    @torch.no_grad()
    def decode(self, emissions: torch.Tensor, mask: torch.Tensor, constrained: bool = True) -> list[list[int]]:
        """The best tag sequence for each row (Viterbi), cut to its real length."""
        transitions, start, end = self._arrays(constrained, np.float32)
        return _loops().viterbi(_as_array(emissions, np.float32), _lengths(mask), transitions, start, end)

    def _arrays(self, constrained: bool, dtype: type) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``_potentials`` as NumPy arrays of ``dtype``, kept while the parameters hold the
        same values. The check compares the values themselves, not the tensors' version
        counters: a fused optimizer step (``torch.optim.Adam(fused=True)``, what seqkit
        trains with on a CPU) updates them in place without bumping ``_version``, and a
        cache keyed on it decoded every evaluation during training with the transitions
        of the first one."""
        parameters = (self.transitions, self.start_transitions, self.end_transitions)
        cached = self._array_cache.get("values")
        if cached is None or not all(torch.equal(parameter.detach(), copy) for parameter, copy in zip(parameters, cached)):
            self._array_cache = {"values": tuple(parameter.detach().clone() for parameter in parameters)}  # only the current ones
        key = (constrained, dtype)
        if key not in self._array_cache:
            with torch.no_grad():  # the sums in float32, as ``_potentials`` computes them, then cast
                self._array_cache[key] = tuple(part.detach().float().cpu().numpy().astype(dtype) for part in self._potentials(constrained))
        return self._array_cache[key]

    def _factors(self, constrained: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What forward-backward reads, float64: ``(exp(transitions), start, exp(end))``, kept
        as ``_arrays`` keeps its arrays (the exponentials cost more than a short sentence's
        passes when each pass takes them again)."""
        transitions, start, end = self._arrays(constrained, np.float64)
        key = (constrained, "factors")
        if key not in self._array_cache:
            self._array_cache[key] = (np.exp(transitions), start, np.exp(end))
        return self._array_cache[key]


_TORCH_DTYPES = {np.float32: torch.float32, np.float64: torch.float64, bool: torch.bool}


def _as_array(tensor: torch.Tensor | np.ndarray, dtype: type) -> np.ndarray:
    """A CPU NumPy copy (or view) of ``tensor`` as ``dtype``; bf16 and fp16 emissions cast first."""
    if isinstance(tensor, np.ndarray):
        return tensor.astype(dtype, copy=False)
    return tensor.detach().to("cpu", _TORCH_DTYPES[dtype]).numpy()


def _lengths(mask: torch.Tensor) -> np.ndarray:
    """(batch,) real lengths of a left-aligned (batch, time) mask."""
    if mask.device.type == "cpu":  # NumPy's count: a few microseconds, a third of torch's sum for one sentence
        return np.count_nonzero(mask.numpy(), axis=1).astype(np.int64)
    return mask.sum(1).cpu().numpy().astype(np.int64)


class _Loops(NamedTuple):
    viterbi: Callable
    scaled_forward: Callable
    scaled_backward: Callable
    marginals: Callable


def _loops() -> _Loops:
    """The inference loops over time: Numba's compiled ones where Numba is installed
    (``seqkit[fast]``; ``crf_kernels``), else the NumPy ones below. Both give the same paths
    and the same probabilities (to the last bits of float64)."""
    return _COMPILED_LOOPS if crf_kernels.available() else _NUMPY_LOOPS


def _viterbi(emissions: np.ndarray, lengths: np.ndarray, transitions: np.ndarray, start: np.ndarray, end: np.ndarray) -> list[list[int]]:
    """Each row's best tag sequence, cut to its length: ``emissions`` (batch, time, tags)."""
    batch, time, _ = emissions.shape
    shortest = int(lengths.min())
    score = start + emissions[:, 0]  # (batch, tags)
    backpointers = []
    for step in range(1, time):
        candidates = score[:, :, None] + transitions  # (batch, from, to)
        backpointers.append(candidates.argmax(1))  # the first of equal scores, as torch's max
        best = candidates.max(1) + emissions[:, step]
        # past a row's end its score stays put (only batches of mixed lengths have such rows)
        score = best if step < shortest else np.where((step < lengths)[:, None], best, score)
    # follow the backpointers from each row's best last tag, all rows at once
    rows = np.arange(batch)
    current = (score + end).argmax(1)  # (batch,) the tag at each row's last position
    path = np.zeros((batch, time), dtype=np.int64)
    path[rows, lengths - 1] = current
    for step in range(time - 2, -1, -1):
        previous = backpointers[step][rows, current]
        if step < shortest - 1:  # every row goes on past `step`
            current = path[:, step] = previous
            continue
        inside = step < lengths - 1  # rows whose sequence goes on past `step`
        current = np.where(inside, previous, current)
        path[:, step] = np.where(inside, previous, path[:, step])
    return [row[:length] for row, length in zip(path.tolist(), lengths.tolist())]


def _exp_scaled(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``exp(scores)`` as ``(factor, shift)`` with ``exp(scores) == factor * exp(shift)``, the
    shift the largest score of each (batch, time) row (0 where every score is -inf)."""
    shift = scores.max(2)
    shift[~np.isfinite(shift)] = 0.0
    return np.exp(scores - shift[:, :, None]), shift


def _scaled_forward(scores: np.ndarray, lengths: np.ndarray, step_transitions: np.ndarray, start: np.ndarray, end_factor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The forward algorithm in probability space, rescaled at each step (float64), with
    ``step_transitions`` and ``end_factor`` the exponentials of the transition and end scores
    (``CRF._factors``).

    Returns:
        alphas: (batch, time, tags), each step's forward probabilities summing to 1 over the
            tags (0 past a row's end, and where no sequence gets there).
        log_z: (batch,) the log of the summed exp-scores of every sequence (-inf: none).
    """
    batch, time, _ = scores.shape
    factors, shifts = _exp_scaled(np.concatenate([(start + scores[:, 0])[:, None], scores[:, 1:]], axis=1))
    alphas, totals = np.empty_like(factors), np.empty((batch, time))
    alpha = factors[:, 0]
    with np.errstate(invalid="ignore", divide="ignore"):  # a row no sequence survives turns to nan: set to -inf below
        for step in range(time):
            if step:  # past a row's end the values are unused: no masking inside the loop
                alpha = (alpha @ step_transitions) * factors[:, step]
            total = alpha.sum(1, keepdims=True)
            alpha = alpha / total
            alphas[:, step], totals[:, step] = alpha, total[:, 0]
        real = np.arange(time)[None, :] < lengths[:, None]
        rows = np.arange(batch)
        final = (alphas[rows, lengths - 1] * end_factor).sum(1)
        log_z = np.where(real, shifts + np.log(totals), 0.0).sum(1) + np.log(final)
    dead = ((totals == 0) & real).any(1) | (final == 0)
    log_z[dead] = -np.inf
    alphas[~real | dead[:, None]] = 0.0
    return alphas, log_z


def _scaled_backward(scores: np.ndarray, lengths: np.ndarray, step_transitions: np.ndarray, end_factor: np.ndarray) -> np.ndarray:
    """(batch, time, tags) backward probabilities up to a factor per (row, token): the
    summed exp-scores of every suffix after a token tagged so (its end score at the row's
    last token); meaningless past a row's end."""
    batch, time, num_tags = scores.shape
    factors, _ = _exp_scaled(scores)
    step_transitions = step_transitions.T  # (to, from)
    shortest = int(lengths.min())
    betas = np.empty((batch, time, num_tags))
    beta = np.broadcast_to(end_factor, (batch, num_tags))
    betas[:, time - 1] = beta
    with np.errstate(invalid="ignore", divide="ignore"):  # 0 / 0 only where the caller reads 0 anyway
        for step in range(time - 2, -1, -1):
            following = (factors[:, step + 1] * beta) @ step_transitions  # sum out `to`
            following = following / following.sum(1, keepdims=True)
            # a row's last token takes its end score (only batches of mixed lengths have one here)
            beta = following if step + 1 < shortest else np.where((step + 1 < lengths)[:, None], following, end_factor)
            betas[:, step] = beta
    return betas


def _marginals(scores: np.ndarray, lengths: np.ndarray, step_transitions: np.ndarray, start: np.ndarray, end_factor: np.ndarray) -> np.ndarray:
    """(batch, time, tags) float32 marginals: forward times backward, normalised over the
    tags at each token (at most 1; 0 past a row's end and in rows no sequence gets through)."""
    alphas, _ = _scaled_forward(scores, lengths, step_transitions, start, end_factor)
    betas = _scaled_backward(scores, lengths, step_transitions, end_factor)
    # alpha * beta is proportional to the marginal at each token: normalise over the tags
    joint = np.nan_to_num(alphas * betas)  # 0 past a row's end
    total = joint.sum(2, keepdims=True)
    marginals = np.divide(joint, total, out=np.zeros_like(joint), where=total > 0)
    marginals[np.arange(scores.shape[1])[None, :] >= lengths[:, None]] = 0.0
    return np.minimum(marginals, 1.0).astype(np.float32)


_NUMPY_LOOPS = _Loops(_viterbi, _scaled_forward, _scaled_backward, _marginals)
_COMPILED_LOOPS = _Loops(crf_kernels.viterbi, crf_kernels.scaled_forward, crf_kernels.scaled_backward, crf_kernels.marginals)


def _flatten(flags: Sequence) -> list[bool]:
    return [bool(flag) for row in flags for flag in (row if isinstance(row, Sequence) else [row])]
