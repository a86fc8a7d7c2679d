"""A linear-chain conditional random field over per-token tag scores.

The score of a tag sequence ``y`` for emissions ``E`` (batch, time, num_tags) is

    start[y_0] + sum_t E[t, y_t] + sum_t transitions[y_{t-1}, y_t] + end[y_last]

and training maximises ``score(y_gold) - log sum_y exp(score(y))``; the sum over every
sequence is the batched forward algorithm, the best sequence is Viterbi. Sequences are
left-aligned: ``mask`` (batch, time) is true on real tokens, and every sequence has at
least one. At decoding time, transitions a tag scheme forbids (``O -> I-X``) are excluded;
plain tags (scheme ``none``) forbid none: every transition score is learned.

How sure the model is, batched: ``marginals`` (forward-backward: the probability of each
tag at each token); ``posteriors`` (the marginals and, from the same two passes, the
probability of runs of tags along given paths -- an entity labelled exactly so, as
``Tagger.tag`` reports it -- read off as a chain of conditional probabilities, the CRF
being a Markov chain given the emissions); ``log_prob_within`` (the probability that every
token's tag lies in a given set, by a restricted forward pass); and ``k_best`` (the K most
probable sequences, k-best Viterbi). With ``constrained`` (the default) they are taken
under the distribution restricted to the sequences the scheme allows and renormalized --
the distribution decoding searches -- so ``k_best(...)[0]`` is ``decode``'s sequence.

Decoding and the probabilities run at inference, a sentence or a batch at a time, on a few
dozen tags: there a torch operation costs more to dispatch than to compute, so ``decode``,
``marginals``, ``posteriors`` and ``log_prob_within`` step through time in NumPy (on the CPU, whatever
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
        self._array_cache: dict = {}  # _arrays: the potentials as NumPy arrays, for the parameters' current values

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
        arrays = self._arrays(constrained)
        marginals, _ = _loops().posteriors(_as_array(emissions, np.float64), _lengths(mask), *arrays.factors)
        return torch.from_numpy(marginals).to(emissions.device)

    def posteriors(self, emissions: torch.Tensor | np.ndarray, lengths: np.ndarray, paths: np.ndarray, spans: "SpanQuery",
                   constrained: bool = True) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """``marginals`` and the probability of each span of ``spans`` along ``paths``, from
        one forward-backward pass, as NumPy arrays: what ``Tagger.tag`` reports.

        Args:
            emissions: (batch, time, num_tags) scores.
            lengths: (batch,) real lengths.
            paths: (batch, time) tag ids, e.g. ``best_paths``'.
            spans: which tag runs of ``paths`` to score (``SpanQuery``).

        Returns:
            ``(marginals (batch, time, tags) float32, probabilities (spans,) float64)``.
        """
        arrays = self._arrays(constrained)
        return _loops().posteriors(_as_array(emissions, np.float64), lengths, *arrays.factors, paths, tuple(spans))

    @torch.no_grad()
    def log_prob_within(self, emissions: torch.Tensor, mask: torch.Tensor, allowed: torch.Tensor, constrained: bool = True) -> torch.Tensor:
        """(batch,) log-probability that every token's tag is one of those ``allowed`` (batch,
        time, tags) marks there: the probability of a span labelled exactly so, when the span's
        tokens allow only its tags (and the token after it only tags that do not continue it).
        The sum over the allowed sequences divided by the sum over all of them (in float64)."""
        scores, lengths = _as_array(emissions, np.float64), _lengths(mask)
        restricted = np.where(_as_array(allowed, bool), scores, -np.inf)
        # both partition functions in one pass: the restricted rows, then the plain ones
        arrays = self._arrays(constrained)
        _, log_z = _loops().scaled_forward(np.concatenate([restricted, scores]), np.concatenate([lengths, lengths]), *arrays.factors)
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
        lengths = _lengths(mask)
        return cut_to_lengths(self.best_paths(emissions, lengths, constrained), lengths)

    def best_paths(self, emissions: torch.Tensor | np.ndarray, lengths: np.ndarray, constrained: bool = True) -> np.ndarray:
        """``decode`` as a (batch, time) array of tag ids (0 past each row's end), from
        (batch,) ``lengths``."""
        arrays = self._arrays(constrained)
        return _loops().viterbi(_as_array(emissions, np.float32), lengths, *arrays.scores)

    def _arrays(self, constrained: bool) -> "_Arrays":
        """``_potentials`` as the inference loops read them (``_Arrays``), kept while the
        parameters hold the same values. The check compares the values themselves, not the
        tensors' version counters: a fused optimizer step (``torch.optim.Adam(fused=True)``,
        what seqkit trains with on a CPU) updates them in place without bumping ``_version``,
        and a cache keyed on it decoded every evaluation during training with the
        transitions of the first one."""
        if not self._same_values():
            self._array_cache = {"values": self._snapshot()}  # only the current ones
        if constrained not in self._array_cache:
            with torch.no_grad():  # the sums in float32, as ``_potentials`` computes them, then cast
                scores = tuple(part.detach().float().cpu().numpy() for part in self._potentials(constrained))
            transitions, start, end = (part.astype(np.float64) for part in scores)
            self._array_cache[constrained] = _Arrays(scores, (np.exp(transitions), start, np.exp(end)))
        return self._array_cache[constrained]

    def _snapshot(self) -> tuple:
        """What ``_same_values`` compares with: on the CPU, NumPy views of the parameters'
        memory with a copy of their bytes and the memory's addresses (comparing bytes costs a
        tenth of three ``torch.equal`` calls: a service's call checks on every sentence);
        elsewhere, copies of the tensors."""
        parameters = (self.transitions, self.start_transitions, self.end_transitions)
        if all(parameter.device.type == "cpu" and parameter.dtype == torch.float32 for parameter in parameters):
            views = tuple(parameter.detach().numpy() for parameter in parameters)
            return ("bytes", tuple(parameter.data_ptr() for parameter in parameters), views, tuple(view.tobytes() for view in views))
        return ("tensors", tuple(parameter.detach().clone() for parameter in parameters))

    def _same_values(self) -> bool:
        """Whether the parameters hold the values ``_snapshot`` saw (in the same memory)."""
        snapshot = self._array_cache.get("values")
        if snapshot is None:
            return False
        parameters = (self.transitions, self.start_transitions, self.end_transitions)
        if snapshot[0] == "bytes":
            return snapshot[1] == tuple(parameter.data_ptr() for parameter in parameters) and all(
                view.tobytes() == copy for view, copy in zip(snapshot[2], snapshot[3]))  # fmt: skip
        return all(torch.equal(parameter.detach(), copy) for parameter, copy in zip(parameters, snapshot[1]))


class _Arrays(NamedTuple):
    """What the inference loops read of a CRF's potentials: ``scores`` (transitions, start,
    end) float32 for Viterbi; and ``factors`` for forward-backward, float64: ``(exp(transitions),
    start, exp(end))``, kept because the exponentials cost more than a short sentence's
    passes when each pass takes them again."""

    scores: tuple[np.ndarray, np.ndarray, np.ndarray]
    factors: tuple[np.ndarray, np.ndarray, np.ndarray]


class SpanQuery(NamedTuple):
    """Tag runs to score along a batch's paths (``CRF.posteriors``), one entry per run, as
    (runs,) int64 arrays, except ``next_required`` (bool): the probability that row
    ``rows[i]`` has its path's tags on ``[firsts[i], ends[i])`` and, when ``next_tags[i] >= 0``
    and the row goes on after ``ends[i]``, that the next token has tag ``next_tags[i]``
    (``next_required``) or any other. An entity ``B-X I-X`` of a BIO model is the run with
    ``I-X`` not next; of a BIOES model (``B-X I-X E-X``, ``S-X``), the run alone."""

    rows: np.ndarray
    firsts: np.ndarray
    ends: np.ndarray
    next_tags: np.ndarray
    next_required: np.ndarray

    @classmethod
    def of(cls, runs: Sequence[tuple[int, int, int, int, bool]]) -> "SpanQuery":
        """From ``(row, first, end, next_tag, next_required)`` tuples."""
        if not runs:
            return cls(*(np.zeros(0, np.int64) for _ in range(4)), np.zeros(0, bool))
        rows, firsts, ends, next_tags, required = zip(*runs)
        return cls(*(np.array(column, np.int64) for column in (rows, firsts, ends, next_tags)), np.array(required, bool))


_TORCH_DTYPES = {np.float32: torch.float32, np.float64: torch.float64, bool: torch.bool}


def _as_array(tensor: torch.Tensor | np.ndarray, dtype: type) -> np.ndarray:
    """A CPU NumPy copy (or view) of ``tensor`` as ``dtype``; bf16 and fp16 emissions cast first."""
    if isinstance(tensor, np.ndarray):
        return tensor.astype(dtype, copy=False)
    if tensor.device.type == "cpu" and tensor.dtype == torch.float32 and not tensor.requires_grad:  # shared, then cast by NumPy
        return tensor.numpy().astype(dtype, copy=False)
    return tensor.detach().to("cpu", _TORCH_DTYPES[dtype]).numpy()


def cut_to_lengths(paths: np.ndarray, lengths: np.ndarray) -> list[list[int]]:
    """Each row of a (batch, time) array of tag ids cut to its length."""
    return [row[:length] for row, length in zip(paths.tolist(), lengths.tolist())]


def _lengths(mask: torch.Tensor) -> np.ndarray:
    """(batch,) real lengths of a left-aligned (batch, time) mask."""
    if mask.device.type == "cpu":  # NumPy's count: a few microseconds, a third of torch's sum for one sentence
        return np.count_nonzero(mask.numpy(), axis=1).astype(np.int64)
    return mask.sum(1).cpu().numpy().astype(np.int64)


class _Loops(NamedTuple):
    viterbi: Callable  # -> (batch, time) paths
    scaled_forward: Callable
    scaled_backward: Callable
    posteriors: Callable  # -> (marginals, span probabilities)


def _loops() -> _Loops:
    """The inference loops over time: Numba's compiled ones where Numba is installed
    (``seqkit[fast]``; ``crf_kernels``), else the NumPy ones below. Both give the same paths
    and the same probabilities (to the last bits of float64)."""
    return _COMPILED_LOOPS if crf_kernels.available() else _NUMPY_LOOPS


def _viterbi(emissions: np.ndarray, lengths: np.ndarray, transitions: np.ndarray, start: np.ndarray, end: np.ndarray) -> list[list[int]]:
    """Each row's best tag sequence, cut to its length: ``emissions`` (batch, time, tags)."""
    return cut_to_lengths(_viterbi_array(emissions, lengths, transitions, start, end), lengths)


def _viterbi_array(emissions: np.ndarray, lengths: np.ndarray, transitions: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """``_viterbi`` as a (batch, time) array (anything past each row's end)."""
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
    return path


def _exp_scaled(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``exp(scores)`` as ``(factor, shift)`` with ``exp(scores) == factor * exp(shift)``, the
    shift the largest score of each (batch, time) row (0 where every score is -inf)."""
    shift = scores.max(2)
    shift[~np.isfinite(shift)] = 0.0
    return np.exp(scores - shift[:, :, None]), shift


def _scaled_forward(scores: np.ndarray, lengths: np.ndarray, step_transitions: np.ndarray, start: np.ndarray, end_factor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The forward algorithm in probability space, rescaled at each step (float64), with
    ``step_transitions`` and ``end_factor`` the exponentials of the transition and end scores
    (``CRF._arrays``).

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
    return _posteriors(scores, lengths, step_transitions, start, end_factor)[0]


def _posteriors(scores: np.ndarray, lengths: np.ndarray, step_transitions: np.ndarray, start: np.ndarray, end_factor: np.ndarray,
                paths: Optional[np.ndarray] = None, spans: Optional[tuple] = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """The marginals (``_marginals``) and each of ``spans``' probability along ``paths``
    (``CRF.posteriors``), from one forward and one backward pass."""
    alphas, _ = _scaled_forward(scores, lengths, step_transitions, start, end_factor)
    betas = _scaled_backward(scores, lengths, step_transitions, end_factor)
    # alpha * beta is proportional to the marginal at each token: normalise over the tags
    joint = np.nan_to_num(alphas * betas)  # 0 past a row's end
    total = joint.sum(2, keepdims=True)
    marginals = np.divide(joint, total, out=np.zeros_like(joint), where=total > 0)
    marginals[np.arange(scores.shape[1])[None, :] >= lengths[:, None]] = 0.0
    marginals = np.minimum(marginals, 1.0).astype(np.float32)
    if spans is None or not len(spans[0]):
        return marginals, np.zeros(0)
    return marginals, _span_probabilities(scores, lengths, step_transitions, joint, total[:, :, 0], betas, paths, *spans)


def _span_probabilities(scores: np.ndarray, lengths: np.ndarray, step_transitions: np.ndarray, joint: np.ndarray, total: np.ndarray,
                        betas: np.ndarray, paths: np.ndarray, rows, firsts, ends, next_tags, next_required) -> np.ndarray:  # fmt: skip
    """``crf_kernels._span_probabilities``: the first tag's marginal (``joint`` over its
    ``total``), times each next tag's probability given the one before (the transition,
    the emission and the backward probability after it, normalised over the tags)."""
    probabilities = np.zeros(len(rows))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        for index, (row, first, end) in enumerate(zip(rows.tolist(), firsts.tolist(), ends.tolist())):
            if not total[row, first] > 0:
                continue
            probability = joint[row, first, paths[row, first]] / total[row, first]
            checks_next = next_tags[index] >= 0 and end < lengths[row]
            for step in range(first + 1, end + 1 if checks_next else end):
                row_scores = scores[row, step]
                finite = row_scores[np.isfinite(row_scores)]
                weights = step_transitions[paths[row, step - 1]] * np.exp(row_scores - (finite.max() if finite.size else 0.0)) * betas[row, step]
                norm = weights.sum()
                if not norm > 0:
                    probability = 0.0
                    break
                if step < end:
                    chosen = weights[paths[row, step]]
                elif next_required[index]:
                    chosen = weights[next_tags[index]]
                else:
                    chosen = np.delete(weights, next_tags[index]).sum()  # any tag but the one that continues the span
                probability *= chosen / norm
            probabilities[index] = min(probability, 1.0)
    return probabilities


_NUMPY_LOOPS = _Loops(_viterbi_array, _scaled_forward, _scaled_backward, _posteriors)
_COMPILED_LOOPS = _Loops(crf_kernels.viterbi_array, crf_kernels.scaled_forward, crf_kernels.scaled_backward, crf_kernels.posteriors)


def _flatten(flags: Sequence) -> list[bool]:
    return [bool(flag) for row in flags for flag in (row if isinstance(row, Sequence) else [row])]
