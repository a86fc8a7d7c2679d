"""Sampling: top-k and top-p never leave their sets; a seed repeats; temperature 0 is greedy."""

from __future__ import annotations

import torch

from seqkit.decoding import filter_logits, next_token

LOGITS = torch.log(torch.tensor([[0.05, 0.4, 0.3, 0.15, 0.1]]))


def test_top_k_keeps_the_k_most_likely():
    kept = torch.isfinite(filter_logits(LOGITS, top_k=2))
    assert kept.tolist() == [[False, True, True, False, False]]


def test_top_p_keeps_the_smallest_nucleus_reaching_p():
    assert torch.isfinite(filter_logits(LOGITS, top_p=0.7)).tolist() == [[False, True, True, False, False]]
    assert torch.isfinite(filter_logits(LOGITS, top_p=0.71)).tolist() == [[False, True, True, True, False]]
    assert torch.isfinite(filter_logits(LOGITS, top_p=0.01)).tolist() == [[False, True, False, False, False]]


def test_samples_never_leave_the_sets_and_a_seed_repeats():
    generator = torch.Generator().manual_seed(0)
    batch = LOGITS.expand(2000, -1)
    top_k = next_token(batch, temperature=1.5, top_k=3, generator=generator)
    assert set(top_k.tolist()) == {1, 2, 3}
    top_p = next_token(batch, temperature=1.0, top_p=0.7, generator=generator)
    assert set(top_p.tolist()) == {1, 2}
    first = next_token(batch, generator=torch.Generator().manual_seed(5))
    second = next_token(batch, generator=torch.Generator().manual_seed(5))
    assert torch.equal(first, second)


def test_temperature_zero_is_greedy():
    assert next_token(LOGITS, temperature=0).tolist() == [1]
