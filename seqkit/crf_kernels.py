"""Compiled versions of the CRF's inference loops (``crf.py``), for when Numba is installed.

``crf.py`` decodes and computes probabilities with NumPy, one array operation per time
step. For one short sentence -- a service's call -- each step's operations cost more to
dispatch than to compute: Viterbi and forward-backward over a 20-word tweet took 2.8 ms of
a 7.9 ms ``tag()`` call under ONNX Runtime (CPU time, Zen 3, under load). The same three
loops compiled by Numba (``pip install seqkit[fast]``) run in a few dozen microseconds (one
20-word sentence, 41 tags, Zen 3 under load: Viterbi 31 us against 370, forward 44 against
477, backward 60 against 311).

Each function here takes and returns exactly what its NumPy twin in ``crf.py`` does and
computes the same quantities in the same precision: ``viterbi`` adds in float32 in the same
order and keeps the first of equal scores, so it finds the same path; the forward and
backward passes rescale each step in float64 (their sums may differ from NumPy's in the
last bits: matrix products add in another order). Where NumPy leaves values past a row's
end undefined, these leave zeros. ``crf.py`` picks these when ``available()``.

Each step's inner loop runs over the tags in the order the arrays are laid out (one row of
the transition matrix at a time, against every tag at once), so the compiler turns it into
vector instructions; ``exp()`` of the scores is taken once for both passes. On a 25-word
tweet with 41 tags (AVX-512 Zen 5, one process), Viterbi took 7 us this way against 13-15
us with a loop over the previous tags innermost, and forward and backward 7 us each
against 10-13; the paths and the sums are the same bit for bit.

``posteriors`` (``_span_probabilities``) reads an entity's probability off the two passes:
the marginal of its first tag, times the probability of each next tag given the one before
(a CRF is a Markov chain given the emissions), times that of the token after it not
continuing it. It costs a few steps per entity, where a forward pass restricted to the
entity cost a whole sentence's steps for each one; ``crf._span_probabilities`` is its
NumPy twin.

Compiled functions are cached on disk (``cache=True``): the first use on a machine compiles
them (seconds), later processes load them. They release the GIL, so a server's threads
decode in parallel.
"""

from __future__ import annotations

import functools
import os
from typing import Callable, NamedTuple, Optional

import numpy as np


@functools.lru_cache(maxsize=1)
def available() -> bool:
    """Whether to use these loops: Numba can be imported, and ``SEQKIT_NUMBA`` is not ``0``
    (which keeps NumPy's loops, e.g. to compare). Checked once: importing Numba takes about
    half a second, so it happens at the first decoding, not at ``import seqkit``."""
    if os.environ.get("SEQKIT_NUMBA", "").strip() == "0":
        return False
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


def viterbi(emissions: np.ndarray, lengths: np.ndarray, transitions: np.ndarray, start: np.ndarray, end: np.ndarray) -> list[list[int]]:
    """``crf._viterbi``: each row's best tag sequence, cut to its length."""
    paths = viterbi_array(emissions, lengths, transitions, start, end)
    return [row[:length] for row, length in zip(paths.tolist(), lengths.tolist())]


def viterbi_array(emissions: np.ndarray, lengths: np.ndarray, transitions: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """``viterbi`` as a (batch, time) array (0 past each row's end)."""
    return _compiled().viterbi(np.ascontiguousarray(emissions), lengths, np.ascontiguousarray(transitions), start, end)


def scaled_forward(scores: np.ndarray, lengths: np.ndarray, step_transitions: np.ndarray, start: np.ndarray, end_factor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``crf._scaled_forward``: ``(alphas, log_z)``."""
    return _compiled().forward(np.ascontiguousarray(scores), lengths, np.ascontiguousarray(step_transitions), start, end_factor)


def scaled_backward(scores: np.ndarray, lengths: np.ndarray, step_transitions: np.ndarray, end_factor: np.ndarray) -> np.ndarray:
    """``crf._scaled_backward``: the backward probabilities (0 past a row's end)."""
    return _compiled().backward(np.ascontiguousarray(scores), lengths, np.ascontiguousarray(step_transitions), end_factor)


def marginals(scores: np.ndarray, lengths: np.ndarray, step_transitions: np.ndarray, start: np.ndarray, end_factor: np.ndarray) -> np.ndarray:
    """``crf._marginals``: forward, backward and their normalised product in one compiled call."""
    return posteriors(scores, lengths, step_transitions, start, end_factor)[0]


_NO_SPANS = tuple(np.zeros(0, np.int64) for _ in range(4)) + (np.zeros(0, np.bool_),)


def posteriors(scores: np.ndarray, lengths: np.ndarray, step_transitions: np.ndarray, start: np.ndarray, end_factor: np.ndarray,
               paths: Optional[np.ndarray] = None, spans: Optional[tuple] = None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """``crf._posteriors``: the marginals (float32) and, for ``spans`` (``crf.SpanQuery``'s
    arrays) along ``paths`` (batch, time), each span's probability (float64), from one
    forward and one backward pass, in one compiled call."""
    if spans is None or not len(spans[0]):
        spans, paths = _NO_SPANS, np.zeros((1, 1), np.int64)
    return _compiled().posteriors(np.ascontiguousarray(scores), lengths, np.ascontiguousarray(step_transitions), start, end_factor,
                                  np.ascontiguousarray(paths, dtype=np.int64), *spans)  # fmt: skip


class _Compiled(NamedTuple):
    viterbi: Callable
    forward: Callable
    backward: Callable
    posteriors: Callable


# The compiled loops that other compiled loops call, set by ``_compiled`` before it compiles
# those: Numba resolves a global name when it compiles the function that reads it.
_EXPONENTIALS = _FORWARD = _BACKWARD = _NORMALISE = _SPANS = None


@functools.lru_cache(maxsize=1)
def _compiled() -> _Compiled:
    """The loops below compiled, or loaded from Numba's cache, on the first call."""
    global _EXPONENTIALS, _FORWARD, _BACKWARD, _NORMALISE, _SPANS
    from numba import njit

    compile_ = njit(cache=True, nogil=True)
    _EXPONENTIALS, _FORWARD, _BACKWARD = compile_(_exponentials), compile_(_forward_pass), compile_(_backward_pass)
    _NORMALISE, _SPANS = compile_(_normalised_product), compile_(_span_probabilities)
    return _Compiled(compile_(_viterbi), compile_(_scaled_forward), compile_(_scaled_backward), compile_(_posteriors))


# --- The loops, written for Numba (plain Python over NumPy arrays) ---------------------------


def _viterbi(emissions, lengths, transitions, start, end):
    """(batch, time) best tag ids of each row (valid up to its length): ``emissions`` (batch,
    time, tags) float32, ``transitions`` (from, to), ``start``/``end`` (tags). Each step runs
    over the previous tags in ascending order, each against every tag at once, and keeps a
    candidate only when strictly better: the first of equal scores, as argmax."""
    batch, time, num_tags = emissions.shape
    paths = np.zeros((batch, time), np.int64)
    backpointers = np.zeros((time, num_tags), np.int64)
    score = np.empty(num_tags, np.float32)
    best = np.empty(num_tags, np.float32)
    best_from = np.empty(num_tags, np.int64)
    for row in range(batch):
        length = lengths[row]
        for tag in range(num_tags):
            score[tag] = start[tag] + emissions[row, 0, tag]
        for step in range(1, length):
            best[:] = -np.inf
            best_from[:] = 0
            for previous in range(num_tags):
                here = score[previous]
                if here == -np.inf:  # no sequence gets here: no candidate from it
                    continue
                for tag in range(num_tags):
                    candidate = here + transitions[previous, tag]
                    if candidate > best[tag]:
                        best[tag] = candidate
                        best_from[tag] = previous
            for tag in range(num_tags):
                score[tag] = best[tag] + emissions[row, step, tag]
                backpointers[step, tag] = best_from[tag]
        top, current = -np.inf, 0
        for tag in range(num_tags):
            candidate = score[tag] + end[tag]
            if candidate > top:
                top, current = candidate, tag
        paths[row, length - 1] = current
        for step in range(length - 1, 0, -1):
            current = backpointers[step, current]
            paths[row, step - 1] = current
    return paths


def _exponentials(scores, lengths):
    """``exp(scores)`` as ``factors * exp(shifts)``: each (row, step)'s largest finite score
    is its shift (0 where none is finite); 0 past each row's end. Both passes and the span
    probabilities read the same factors."""
    batch, time, num_tags = scores.shape
    factors = np.zeros((batch, time, num_tags))
    shifts = np.zeros((batch, time))
    for row in range(batch):
        for step in range(lengths[row]):
            shift = -np.inf
            for tag in range(num_tags):
                shift = max(shift, scores[row, step, tag])
            if not np.isfinite(shift):
                shift = 0.0
            shifts[row, step] = shift
            for tag in range(num_tags):
                factors[row, step, tag] = np.exp(scores[row, step, tag] - shift)
    return factors, shifts


def _forward_pass(factors, shifts, lengths, step_transitions, start, end_factor):
    """Each row's forward probabilities, rescaled to sum to 1 at each step, and its log
    partition function: the sum of each step's log rescaling and shift."""
    batch, time, num_tags = factors.shape
    alphas = np.zeros((batch, time, num_tags))
    log_z = np.full(batch, -np.inf)
    alpha = np.empty(num_tags)
    start_factor = np.exp(start)
    for row in range(batch):
        log_total = 0.0
        for step in range(lengths[row]):
            if step == 0:
                for tag in range(num_tags):
                    alpha[tag] = start_factor[tag] * factors[row, 0, tag]
            else:
                alpha[:] = 0.0
                for source in range(num_tags):  # alpha = previous @ step_transitions, a row at a time
                    weight = alphas[row, step - 1, source]
                    if weight != 0.0:
                        for tag in range(num_tags):
                            alpha[tag] += weight * step_transitions[source, tag]
                for tag in range(num_tags):
                    alpha[tag] *= factors[row, step, tag]
            total = 0.0
            for tag in range(num_tags):
                total += alpha[tag]
            if total == 0.0:  # no sequence the scheme allows gets here
                log_total = -np.inf
                break
            for tag in range(num_tags):
                alphas[row, step, tag] = alpha[tag] / total
            log_total += shifts[row, step] + np.log(total)
        final = 0.0
        for tag in range(num_tags):
            final += alphas[row, lengths[row] - 1, tag] * end_factor[tag]
        if log_total == -np.inf or final == 0.0:
            alphas[row] = 0.0
        else:
            log_z[row] = log_total + np.log(final)
    return alphas, log_z


def _backward_pass(factors, lengths, step_transitions, end_factor):
    """Each row's backward probabilities, rescaled to sum to 1 at each token (the end
    scores at its last token; 0 past its end)."""
    batch, time, num_tags = factors.shape
    betas = np.zeros((batch, time, num_tags))
    incoming = np.ascontiguousarray(step_transitions.T)  # (to, from): a row per next tag
    value = np.empty(num_tags)
    for row in range(batch):
        last = lengths[row] - 1
        for tag in range(num_tags):
            betas[row, last, tag] = end_factor[tag]
        for step in range(last - 1, -1, -1):
            value[:] = 0.0
            for target in range(num_tags):  # sum out the next token's tag, a row at a time
                weight = factors[row, step + 1, target] * betas[row, step + 1, target]
                if weight != 0.0:
                    for tag in range(num_tags):
                        value[tag] += incoming[target, tag] * weight
            total = 0.0
            for tag in range(num_tags):
                total += value[tag]
            for tag in range(num_tags):
                betas[row, step, tag] = value[tag] / total if total > 0.0 else value[tag]
    return betas


def _scaled_forward(scores, lengths, step_transitions, start, end_factor):
    factors, shifts = _EXPONENTIALS(scores, lengths)
    return _FORWARD(factors, shifts, lengths, step_transitions, start, end_factor)


def _scaled_backward(scores, lengths, step_transitions, end_factor):
    factors, _ = _EXPONENTIALS(scores, lengths)
    return _BACKWARD(factors, lengths, step_transitions, end_factor)


def _posteriors(scores, lengths, step_transitions, start, end_factor, paths, rows, firsts, ends, next_tags, next_required):
    """The marginals and the spans' probabilities (``posteriors``), the exponentials taken once."""
    factors, shifts = _EXPONENTIALS(scores, lengths)
    alphas, _ = _FORWARD(factors, shifts, lengths, step_transitions, start, end_factor)
    betas = _BACKWARD(factors, lengths, step_transitions, end_factor)
    probabilities = _SPANS(factors, lengths, step_transitions, alphas, betas, paths, rows, firsts, ends, next_tags, next_required)
    return _NORMALISE(alphas, betas, lengths), probabilities


def _span_probabilities(factors, lengths, step_transitions, alphas, betas, paths, rows, firsts, ends, next_tags, next_required):
    """Each span's probability: that row ``rows[i]``'s tags on ``[firsts[i], ends[i])`` are
    its ``paths`` there and, where ``next_tags[i] >= 0`` and the row goes on past the span,
    that the next token's tag is (``next_required``) or is not ``next_tags[i]``."""
    num_tags = factors.shape[2]
    probabilities = np.zeros(len(rows))
    for index in range(len(rows)):
        row, first, end = rows[index], firsts[index], ends[index]
        total = 0.0
        for tag in range(num_tags):
            total += alphas[row, first, tag] * betas[row, first, tag]
        if total <= 0.0:  # no sequence gets through this row
            continue
        tag = paths[row, first]
        probability = alphas[row, first, tag] * betas[row, first, tag] / total
        last = end if next_tags[index] >= 0 and end < lengths[row] else end - 1
        for step in range(first + 1, last + 1):
            # P(tag at step | tag before): transition x emission x what follows, normalised
            previous = paths[row, step - 1]
            norm = 0.0
            for target in range(num_tags):
                norm += step_transitions[previous, target] * factors[row, step, target] * betas[row, step, target]
            if norm <= 0.0:
                probability = 0.0
                break
            wanted = paths[row, step] if step < end else next_tags[index]
            chosen = step_transitions[previous, wanted] * factors[row, step, wanted] * betas[row, step, wanted]
            if step == end and not next_required[index]:  # the next token does anything but continue the span
                chosen = 0.0
                for target in range(num_tags):
                    if target != wanted:
                        chosen += step_transitions[previous, target] * factors[row, step, target] * betas[row, step, target]
            probability *= chosen / norm
        probabilities[index] = min(probability, 1.0)
    return probabilities


def _normalised_product(alphas, betas, lengths):
    """(batch, time, tags) float32: ``alphas * betas`` over their sum at each real token
    (at most 1; 0 past a row's end and where the product is 0, a row no sequence reaches)."""
    batch, time, num_tags = alphas.shape
    marginals = np.zeros((batch, time, num_tags), np.float32)
    for row in range(batch):
        for step in range(lengths[row]):
            total = 0.0
            for tag in range(num_tags):
                total += alphas[row, step, tag] * betas[row, step, tag]
            if total > 0.0:
                for tag in range(num_tags):
                    marginals[row, step, tag] = min(alphas[row, step, tag] * betas[row, step, tag] / total, 1.0)
    return marginals
