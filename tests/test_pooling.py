"""Pooling over real steps only, and the many-to-one / per-step heads."""

import pytest
import torch

from seqkit.encoders import RNNEncoder
from seqkit.heads import ClassificationHead, Pooling, RegressionHead


def _padded(lengths, dim=6, time=7, seed=0, fill=0.0):
    generator = torch.Generator().manual_seed(seed)
    states = torch.randn(len(lengths), time, dim, generator=generator)
    mask = torch.arange(time)[None, :] < torch.tensor(lengths)[:, None]
    return states.masked_fill(~mask.unsqueeze(-1), fill), mask


@pytest.mark.parametrize("kind", Pooling.KINDS)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_never_changes_the_pooled_vector(kind, bidirectional):
    torch.manual_seed(0)
    pooling = Pooling(kind, 6, bidirectional)
    states, mask = _padded([7, 3, 1])
    garbage, _ = _padded([7, 3, 1], fill=1e3)  # other values at the padded steps
    longer = torch.cat([states, torch.full((3, 4, 6), -5.0)], dim=1)  # more padding after
    longer_mask = torch.cat([mask, torch.zeros(3, 4, dtype=torch.bool)], dim=1)
    expected, weights = pooling(states, mask)
    torch.testing.assert_close(pooling(garbage, mask)[0], expected)
    torch.testing.assert_close(pooling(longer, longer_mask)[0], expected)
    for row, length in enumerate([7, 3, 1]):  # each sequence alone, unpadded
        torch.testing.assert_close(pooling(states[row : row + 1, :length], None)[0], expected[row : row + 1])
    if kind == "attention":
        torch.testing.assert_close(weights.sum(1), torch.ones(3))
        assert (weights[~mask] == 0).all()
    else:
        assert weights is None


def test_mean_and_max_are_over_real_steps():
    states, mask = _padded([3, 2], fill=100.0)
    mean, _ = Pooling("mean", 6)(states, mask)
    maximum, _ = Pooling("max", 6)(states, mask)
    torch.testing.assert_close(mean[1], states[1, :2].mean(0))
    torch.testing.assert_close(maximum[0], states[0, :3].max(0).values)


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_last_pooling_of_a_bidirectional_packed_encoder_matches_one_by_one_final_states(cell):
    torch.manual_seed(0)
    encoder = RNNEncoder(5, 4, num_layers=2, cell=cell, bidirectional=True).eval()
    lengths = torch.tensor([6, 2, 4, 1])
    inputs = torch.randn(4, 6, 5)
    states, _ = encoder(inputs, lengths)
    mask = torch.arange(6)[None, :] < lengths[:, None]
    pooled, _ = Pooling("last", encoder.output_dim, bidirectional=True)(states, mask)
    for row, length in enumerate(lengths.tolist()):
        _, final = encoder(inputs[row : row + 1, :length])
        h = final[0] if cell == "lstm" else final  # (layers * 2, 1, hidden)
        expected = torch.cat([h[-2, 0], h[-1, 0]])  # last layer: forward end, backward start
        torch.testing.assert_close(pooled[row], expected, atol=1e-6, rtol=1e-5)


def test_last_pooling_of_a_one_way_encoder_is_its_final_state():
    torch.manual_seed(0)
    encoder = RNNEncoder(5, 4, cell="gru").eval()
    lengths = torch.tensor([3, 5])
    states, final = encoder(torch.randn(2, 5, 5), lengths)
    mask = torch.arange(5)[None, :] < lengths[:, None]
    pooled, _ = Pooling("last", 4)(states, mask)
    torch.testing.assert_close(pooled, final[-1])


def test_heads_output_shapes_and_losses():
    states, mask = _padded([4, 2], dim=8, time=4)
    classifier = ClassificationHead(8, 3, "attention")
    logits = classifier(states, mask)
    assert logits.shape == (2, 3)
    weighted = classifier.loss(logits, torch.tensor([0, 2]), torch.tensor([1.0, 1.0, 5.0]))
    assert weighted.ndim == 0 and torch.isfinite(weighted)
    per_step = RegressionHead(8, 2, "none")
    outputs = per_step(states, mask)
    assert outputs.shape == (2, 4, 2)
    targets = torch.zeros(2, 4, 2)
    targets[1, 2:] = float("nan")  # padding
    assert torch.isfinite(per_step.loss(outputs, targets))
    expected = torch.nn.functional.mse_loss(outputs[mask], targets[mask])
    torch.testing.assert_close(per_step.loss(outputs, targets), expected)
    pooled = RegressionHead(8, 1, "mean")
    assert pooled(states, mask).shape == (2, 1)
