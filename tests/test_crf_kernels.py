"""The CRF's compiled inference loops (crf_kernels, with Numba) against its NumPy loops:
the same Viterbi paths and the same probabilities, on random CRFs with forbidden
transitions, batches of mixed lengths and rows no allowed sequence reaches."""

import numpy as np
import pytest

from seqkit import crf, crf_kernels

pytest.importorskip("numba")


def _inputs(seed: int, batch: int = 5, time: int = 9, num_tags: int = 7, dtype=np.float64):
    rng = np.random.default_rng(seed)
    scores = rng.normal(0, 2, (batch, time, num_tags)).astype(dtype)
    transitions = rng.normal(0, 1, (num_tags, num_tags)).astype(dtype)
    transitions[rng.random((num_tags, num_tags)) < 0.3] = -np.inf  # forbidden, as a scheme's
    start, end = rng.normal(0, 1, num_tags).astype(dtype), rng.normal(0, 1, num_tags).astype(dtype)
    lengths = np.array([time, 1, *rng.integers(1, time + 1, batch - 2)], dtype=np.int64)
    return scores, lengths, transitions, start, end


def _factors(seed: int):
    """``_inputs`` as forward-backward reads them: the transition and end scores exponentiated."""
    scores, lengths, transitions, start, end = _inputs(seed)
    return scores, lengths, np.exp(transitions), start, np.exp(end)


@pytest.mark.parametrize("seed", range(4))
def test_viterbi_finds_the_same_paths(seed):
    scores, lengths, transitions, start, end = _inputs(seed, dtype=np.float32)
    scores[0, 3] = scores[0, 3].max()  # ties: both keep the first of equal scores
    assert crf_kernels.viterbi(scores, lengths, transitions, start, end) == crf._viterbi(scores, lengths, transitions, start, end)


@pytest.mark.parametrize("seed", range(4))
def test_forward_and_backward_give_numpys_probabilities(seed):
    scores, lengths, transitions, start, end = _factors(seed)
    scores[2, 1:] = -np.inf  # a row no sequence gets through: log Z is -inf, its alphas 0
    lengths[2] = 3
    alphas, log_z = crf_kernels.scaled_forward(scores, lengths, transitions, start, end)
    expected_alphas, expected_log_z = crf._scaled_forward(scores, lengths, transitions, start, end)
    np.testing.assert_allclose(alphas, expected_alphas, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(log_z, expected_log_z, rtol=1e-12)
    assert log_z[2] == -np.inf
    betas = crf_kernels.scaled_backward(scores, lengths, transitions, end)
    expected_betas = crf._scaled_backward(scores, lengths, transitions, end)
    real = np.arange(scores.shape[1])[None, :] < lengths[:, None]
    live = real & np.isfinite(log_z)[:, None]  # NumPy leaves nan where no sequence passes, and anything past the end
    np.testing.assert_allclose(betas[live], expected_betas[live], rtol=1e-12, atol=1e-15)
    assert (betas[~real] == 0).all()


def test_seqkit_numba_0_keeps_the_numpy_loops(monkeypatch):
    assert crf_kernels.available() and crf._loops().viterbi is crf_kernels.viterbi_array  # Numba installed
    monkeypatch.setenv("SEQKIT_NUMBA", "0")
    crf_kernels.available.cache_clear()
    try:
        assert not crf_kernels.available() and crf._loops().viterbi is crf._viterbi_array
    finally:
        monkeypatch.undo()
        crf_kernels.available.cache_clear()


@pytest.mark.parametrize("seed", range(4))
def test_marginals_give_numpys(seed):
    scores, lengths, transitions, start, end = _factors(seed)
    scores[2, 1:] = -np.inf  # a row no sequence gets through: all zeros
    lengths[2] = 3
    marginals = crf_kernels.marginals(scores, lengths, transitions, start, end)
    assert marginals.dtype == np.float32 and marginals.shape == scores.shape
    np.testing.assert_allclose(marginals, crf._marginals(scores, lengths, transitions, start, end), rtol=1e-6, atol=1e-7)
    real = np.arange(scores.shape[1])[None, :] < lengths[:, None]
    assert (marginals[~real] == 0).all() and (marginals[2] == 0).all()
    live = real & (np.arange(len(lengths)) != 2)[:, None]
    np.testing.assert_allclose(marginals.sum(2)[live], 1.0, rtol=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_span_probabilities_give_numpys(seed):
    """Runs along random paths of a batch of mixed lengths, some with a next tag required,
    excluded or unchecked, some reaching the row's end, one in a row no sequence gets through."""
    scores, lengths, transitions, start, end = _factors(seed)
    scores[2, 1:] = -np.inf
    lengths[2] = 3
    rng = np.random.default_rng(seed)
    paths = rng.integers(0, scores.shape[2], scores.shape[:2])
    runs = []
    for row, length in enumerate(lengths.tolist()):
        for first in range(length):
            end_ = int(rng.integers(first + 1, length + 1))
            runs.append((row, first, end_, int(rng.integers(-1, scores.shape[2])), bool(rng.random() < 0.5)))
    spans = tuple(crf.SpanQuery.of(runs))
    marginals, probabilities = crf_kernels.posteriors(scores, lengths, transitions, start, end, paths, spans)
    expected_marginals, expected = crf._posteriors(scores, lengths, transitions, start, end, paths, spans)
    np.testing.assert_allclose(marginals, expected_marginals, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(probabilities, expected, rtol=1e-9, atol=1e-15)
    assert (probabilities[[index for index, run in enumerate(runs) if run[0] == 2]] == 0).all()
    assert ((probabilities >= 0) & (probabilities <= 1)).all() and (probabilities > 0).any()

