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


# A hand-made Markov "model": the next token's log-probabilities depend on the last token
# only (rows of TABLE, no ties); token 3 is the end token. Greedy takes 0 (p .5), then
# end (.45): p .225; the best sequence is 1 (.4), then end (.9): p .36.
END = 3
TABLE = torch.tensor(
    [
        [0.10, 0.10, 0.35, 0.45],  # after 0
        [0.05, 0.03, 0.02, 0.90],  # after 1
        [0.30, 0.25, 0.35, 0.10],  # after 2
        [0.50, 0.40, 0.05, 0.05],  # at the start (the start token is 3, like <eos>)
    ]
).log()


def markov_step(tokens, state):
    return TABLE[tokens], state


def keep_rows(state, rows):
    return state


def brute_force_best(start: int, max_length: int, length_penalty: float = 1.0):
    """Every sequence up to max_length tokens (ending in END, or cut at max_length)."""
    import itertools

    best = (None, float("-inf"))
    for length in range(1, max_length + 1):
        for sequence in itertools.product(range(4), repeat=length):
            if END in sequence[:-1] or (sequence[-1] != END and length < max_length):
                continue
            previous, total = start, 0.0
            for token in sequence:
                total += float(TABLE[previous, token])
                previous = token
            score = total / length**length_penalty
            if score > best[1]:
                best = (list(sequence[:-1]) if sequence[-1] == END else list(sequence), score)
    return best


def test_beam_one_equals_greedy():
    from seqkit.decoding import beam_search, sample

    first = torch.tensor([END, 0, 2])
    greedy = sample(markov_step, first, None, 6, end_id=END, temperature=0)
    beamed = beam_search(markov_step, first, None, keep_rows, 6, beam=1, end_id=END)
    assert [sequence for sequence, _ in beamed] == greedy
    assert greedy[0] == [0]


def test_beam_search_finds_the_brute_force_best():
    from seqkit.decoding import beam_search

    for max_length in (2, 3, 4):
        for penalty in (0.0, 1.0):
            expected, score = brute_force_best(END, max_length, penalty)
            # a beam as wide as every prefix makes the search exhaustive
            [(found, found_score)] = beam_search(markov_step, torch.tensor([END]), None, keep_rows, max_length,
                                                 beam=4**max_length, end_id=END, length_penalty=penalty)  # fmt: skip
            assert found == expected and abs(found_score - score) < 1e-5
    [(narrow, _)] = beam_search(markov_step, torch.tensor([END]), None, keep_rows, 4, beam=2, end_id=END)
    assert narrow == [1]  # beam 2 already beats greedy's [0]


def test_batched_beam_equals_one_by_one():
    from seqkit.decoding import beam_search, reorder_rnn_state

    torch.manual_seed(0)
    rnn = torch.nn.GRU(4, 8, num_layers=2)
    embed, out = torch.nn.Embedding(6, 4), torch.nn.Linear(8, 6)

    def step(tokens, state):
        output, state = rnn(embed(tokens)[None], state)
        return out(output[0]), state

    first = torch.tensor([0, 1, 2, 3])
    initial = torch.randn(2, 4, 8)
    together = beam_search(step, first, initial, reorder_rnn_state, 7, beam=3, end_id=5)
    for row in range(4):
        [alone] = beam_search(step, first[row : row + 1], initial[:, row : row + 1], reorder_rnn_state, 7, beam=3, end_id=5)
        assert alone[0] == together[row][0] and abs(alone[1] - together[row][1]) < 1e-5


def test_sampling_stays_inside_top_k_and_top_p_and_repeats_with_a_seed():
    from seqkit.decoding import sample

    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]]).repeat(400, 1)
    step = lambda tokens, state: (logits[: len(tokens)], state)  # noqa: E731
    first = torch.zeros(400, dtype=torch.long)
    top_k = sample(step, first, None, 5, top_k=2, generator=torch.Generator().manual_seed(1))
    assert {token for row in top_k for token in row} == {0, 1}
    top_p = sample(step, first, None, 5, top_p=0.6, generator=torch.Generator().manual_seed(1))
    assert {token for row in top_p for token in row} == {0, 1}  # p(0) .49, p(0) + p(1) .67
    again = sample(step, first, None, 5, top_p=0.6, generator=torch.Generator().manual_seed(1))
    assert again == top_p
    ended = sample(step, first, None, 50, end_id=1, temperature=1.0, generator=torch.Generator().manual_seed(2))
    assert all(1 not in row for row in ended) and any(len(row) < 50 for row in ended)
