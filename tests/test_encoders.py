"""The packed RNN/GRU/LSTM encoder: shapes, packing, initial states."""

from __future__ import annotations

import pytest
import torch

from seqkit.encoders import RNNEncoder, TokenEmbedding

CELLS = ["rnn", "gru", "lstm"]


def _final_parts(state):
    return state if isinstance(state, tuple) else (state,)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_output_shapes(cell, bidirectional, num_layers):
    torch.manual_seed(0)
    encoder = RNNEncoder(input_size=5, hidden_size=7, num_layers=num_layers, cell=cell, bidirectional=bidirectional)
    directions = 2 if bidirectional else 1
    inputs = torch.randn(4, 6, 5)
    lengths = torch.tensor([6, 3, 1, 5])
    states, final = encoder(inputs, lengths)
    assert encoder.output_dim == 7 * directions
    assert states.shape == (4, 6, 7 * directions)
    parts = _final_parts(final)
    assert len(parts) == (2 if cell == "lstm" else 1)
    for part in parts:
        assert part.shape == (num_layers * directions, 4, 7) == encoder.state_shape(4)
    # padded steps of the output are exactly zero
    assert torch.count_nonzero(states[1, 3:]) == 0 and torch.count_nonzero(states[2, 1:]) == 0


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_packed_batch_equals_each_sequence_alone(cell, bidirectional):
    torch.manual_seed(1)
    encoder = RNNEncoder(input_size=4, hidden_size=6, num_layers=2, cell=cell, bidirectional=bidirectional).eval()
    lengths = torch.tensor([2, 7, 4, 7, 1])
    inputs = torch.randn(5, 7, 4)
    for row, length in enumerate(lengths):  # garbage in the padding must not leak in
        inputs[row, length:] = 1e3
    states, final = encoder(inputs, lengths)
    for row, length in enumerate(lengths.tolist()):
        alone_states, alone_final = encoder(inputs[row : row + 1, :length])
        torch.testing.assert_close(states[row : row + 1, :length], alone_states, rtol=1e-5, atol=1e-6)
        for batched, single in zip(_final_parts(final), _final_parts(alone_final)):
            torch.testing.assert_close(batched[:, row : row + 1], single, rtol=1e-5, atol=1e-6)


def test_equal_lengths_are_not_packed_and_match_unpadded():
    torch.manual_seed(2)
    encoder = RNNEncoder(input_size=3, hidden_size=4, cell="gru")
    inputs = torch.randn(2, 5, 3)
    with_lengths, _ = encoder(inputs, torch.tensor([5, 5]))
    without, _ = encoder(inputs)
    torch.testing.assert_close(with_lengths, without)


@pytest.mark.parametrize("cell", CELLS)
def test_explicit_initial_state_is_used(cell):
    torch.manual_seed(3)
    encoder = RNNEncoder(input_size=3, hidden_size=4, num_layers=2, cell=cell, bidirectional=True)
    inputs = torch.randn(3, 5, 3)
    shape = encoder.state_shape(3)
    assert shape == (4, 3, 4)
    state = (torch.randn(shape), torch.randn(shape)) if cell == "lstm" else torch.randn(shape)
    from_state, _ = encoder(inputs, torch.tensor([5, 2, 4]), state)
    from_zeros, _ = encoder(inputs, torch.tensor([5, 2, 4]))
    assert not torch.allclose(from_state, from_zeros)


@pytest.mark.parametrize("cell", CELLS)
def test_batch_first_state_layout_is_refused_with_expected_shape(cell):
    encoder = RNNEncoder(input_size=3, hidden_size=4, num_layers=2, cell=cell)
    wrong = torch.zeros(3, 2, 4)  # (batch, layers, hidden): the classic batch_first mistake
    state = (wrong, wrong) if cell == "lstm" else wrong
    with pytest.raises(ValueError) as error:
        encoder(torch.randn(3, 5, 3), None, state)
    message = str(error.value)
    assert "(2, 3, 4)" in message and "(3, 2, 4)" in message and "batch_first" in message


def test_lstm_state_must_be_a_pair():
    encoder = RNNEncoder(input_size=3, hidden_size=4, cell="lstm")
    with pytest.raises(ValueError, match="pair"):
        encoder(torch.randn(2, 5, 3), None, torch.zeros(1, 2, 4))


def test_rnn_nonlinearity_and_dropout_between_layers():
    relu = RNNEncoder(input_size=3, hidden_size=4, num_layers=3, cell="rnn", nonlinearity="relu", dropout=0.25)
    assert relu.rnn.nonlinearity == "relu" and relu.rnn.dropout == 0.25
    single = RNNEncoder(input_size=3, hidden_size=4, num_layers=1, cell="lstm", dropout=0.25)
    assert single.rnn.dropout == 0.0  # PyTorch only drops out between stacked layers
    with pytest.raises(ValueError, match="unknown cell"):
        RNNEncoder(input_size=3, hidden_size=4, cell="transformer")


def test_lengths_out_of_range_are_refused():
    encoder = RNNEncoder(input_size=3, hidden_size=4, cell="gru")
    with pytest.raises(ValueError, match="lengths"):
        encoder(torch.randn(2, 5, 3), torch.tensor([0, 5]))


def test_embedding_padding_row_is_zero_and_gets_no_gradient():
    embedding = TokenEmbedding(vocab_size=10, embedding_dim=4, padding_idx=0)
    assert torch.count_nonzero(embedding.weight[0]) == 0
    embedding(torch.tensor([[0, 3, 0]])).sum().backward()
    assert torch.count_nonzero(embedding.weight.grad[0]) == 0
    assert torch.count_nonzero(embedding.weight.grad[3]) == 4
