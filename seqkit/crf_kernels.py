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

Compiled functions are cached on disk (``cache=True``): the first use on a machine compiles
them (seconds), later processes load them. They release the GIL, so a server's threads
decode in parallel.
"""

from __future__ import annotations

import functools
import os

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
    paths = _compiled()[0](np.ascontiguousarray(emissions), lengths, transitions, start, end)
    return [row[:length] for row, length in zip(paths.tolist(), lengths.tolist())]


def scaled_forward(scores: np.ndarray, lengths: np.ndarray, step_transitions: np.ndarray, start: np.ndarray, end_factor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``crf._scaled_forward``: ``(alphas, log_z)``."""
    return _compiled()[1](np.ascontiguousarray(scores), lengths, np.ascontiguousarray(step_transitions), start, end_factor)


def scaled_backward(scores: np.ndarray, lengths: np.ndarray, step_transitions: np.ndarray, end_factor: np.ndarray) -> np.ndarray:
    """``crf._scaled_backward``: the backward probabilities (0 past a row's end)."""
    return _compiled()[2](np.ascontiguousarray(scores), lengths, np.ascontiguousarray(step_transitions), end_factor)


def marginals(scores: np.ndarray, lengths: np.ndarray, step_transitions: np.ndarray, start: np.ndarray, end_factor: np.ndarray) -> np.ndarray:
    """``crf._marginals``: forward, backward and their normalised product, each compiled (for
    one tweet, NumPy's normalisation around the two compiled passes cost twice the passes)."""
    return _compiled()[3](np.ascontiguousarray(scores), lengths, np.ascontiguousarray(step_transitions), start, end_factor)


@functools.lru_cache(maxsize=1)
def _compiled():
    """The loops below compiled, or loaded from Numba's cache, on the first call."""
    from numba import njit

    compile_ = njit(cache=True, nogil=True)
    forward, backward = compile_(_scaled_forward), compile_(_scaled_backward)
    normalise = compile_(_normalised_product)

    def marginals(scores, lengths, step_transitions, start, end_factor):
        alphas, _ = forward(scores, lengths, step_transitions, start, end_factor)
        return normalise(alphas, backward(scores, lengths, step_transitions, end_factor), lengths)

    return compile_(_viterbi), forward, backward, marginals


# --- The loops, written for Numba (plain Python over NumPy arrays) ---------------------------


def _viterbi(emissions, lengths, transitions, start, end):
    """(batch, time) best tag ids of each row (valid up to its length): ``emissions`` (batch,
    time, tags) float32, ``transitions`` (from, to), ``start``/``end`` (tags)."""
    batch, time, num_tags = emissions.shape
    paths = np.zeros((batch, time), np.int64)
    backpointers = np.zeros((time, num_tags), np.int64)
    score = np.empty(num_tags, np.float32)
    following = np.empty(num_tags, np.float32)
    for row in range(batch):
        length = lengths[row]
        for tag in range(num_tags):
            score[tag] = start[tag] + emissions[row, 0, tag]
        for step in range(1, length):
            for tag in range(num_tags):
                best, best_from = -np.inf, 0
                for previous in range(num_tags):
                    candidate = score[previous] + transitions[previous, tag]
                    if candidate > best:  # strictly: the first of equal scores, as argmax
                        best, best_from = candidate, previous
                following[tag] = best + emissions[row, step, tag]
                backpointers[step, tag] = best_from
            score[:] = following
        best, current = -np.inf, 0
        for tag in range(num_tags):
            candidate = score[tag] + end[tag]
            if candidate > best:
                best, current = candidate, tag
        paths[row, length - 1] = current
        for step in range(length - 1, 0, -1):
            current = backpointers[step, current]
            paths[row, step - 1] = current
    return paths


def _scaled_forward(scores, lengths, step_transitions, start, end_factor):
    """Each row's forward probabilities, rescaled to sum to 1 at each step, and its log
    partition function: the sum of each step's log rescaling and shift."""
    batch, time, num_tags = scores.shape
    alphas = np.zeros((batch, time, num_tags))
    log_z = np.full(batch, -np.inf)
    factor = np.empty(num_tags)
    alpha = np.empty(num_tags)
    for row in range(batch):
        log_total = 0.0
        for step in range(lengths[row]):
            shift = -np.inf
            for tag in range(num_tags):
                factor[tag] = scores[row, step, tag] + (start[tag] if step == 0 else 0.0)
                shift = max(shift, factor[tag])
            if not np.isfinite(shift):
                shift = 0.0
            for tag in range(num_tags):
                factor[tag] = np.exp(factor[tag] - shift)
                alpha[tag] = factor[tag] if step == 0 else 0.0
            if step:
                for source in range(num_tags):  # alpha = previous @ step_transitions, a row at a time
                    weight = alphas[row, step - 1, source]
                    if weight != 0.0:
                        for tag in range(num_tags):
                            alpha[tag] += weight * step_transitions[source, tag]
                for tag in range(num_tags):
                    alpha[tag] *= factor[tag]
            total = 0.0
            for tag in range(num_tags):
                total += alpha[tag]
            if total == 0.0:  # no sequence the scheme allows gets here
                log_total = -np.inf
                break
            for tag in range(num_tags):
                alphas[row, step, tag] = alpha[tag] / total
            log_total += shift + np.log(total)
        final = 0.0
        for tag in range(num_tags):
            final += alphas[row, lengths[row] - 1, tag] * end_factor[tag]
        if log_total == -np.inf or final == 0.0:
            alphas[row] = 0.0
        else:
            log_z[row] = log_total + np.log(final)
    return alphas, log_z


def _scaled_backward(scores, lengths, step_transitions, end_factor):
    """Each row's backward probabilities, rescaled to sum to 1 at each token (the end
    scores at its last token; 0 past its end)."""
    batch, time, num_tags = scores.shape
    betas = np.zeros((batch, time, num_tags))
    weighted = np.empty(num_tags)
    for row in range(batch):
        last = lengths[row] - 1
        for tag in range(num_tags):
            betas[row, last, tag] = end_factor[tag]
        for step in range(last - 1, -1, -1):
            shift = -np.inf
            for tag in range(num_tags):
                shift = max(shift, scores[row, step + 1, tag])
            if not np.isfinite(shift):
                shift = 0.0
            for tag in range(num_tags):
                weighted[tag] = np.exp(scores[row, step + 1, tag] - shift) * betas[row, step + 1, tag]
            total = 0.0
            for tag in range(num_tags):  # sum out the next token's tag
                value = 0.0
                for target in range(num_tags):
                    value += step_transitions[tag, target] * weighted[target]
                betas[row, step, tag] = value
                total += value
            if total > 0.0:
                for tag in range(num_tags):
                    betas[row, step, tag] /= total
    return betas


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
