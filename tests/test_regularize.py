"""AWD-LSTM's regularisers (``seqkit/regularize.py``) and what training does with them:
weight drop on the fused kernel, locked and embedding dropout, AR / TAR, averaged weights
(``training/averaging.py``) and variable BPTT (``data/batch.py``) -- each off in eval, each
saved and resumed exactly, each refused in one line where it does not apply."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from helpers import run_python
from safetensors.torch import load_file
from test_language_model import _interrupt_at_step
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import seqkit
from seqkit.config import load_recipe
from seqkit.data import LMStream
from seqkit.data.batch import variable_lengths
from seqkit.encoders import RNNEncoder, TokenEmbedding
from seqkit.errors import RecipeError
from seqkit.regularize import (
    LockedDropout,
    activation_penalties,
    drop_hidden_weights,
    one_layer_rnn,
    run_layer_by_layer,
)
from seqkit.train import TrainingInterrupted, train
from seqkit.training.averaging import WeightAverage

AWD = ["model.weight_drop=0.5", "model.locked_dropout=true", "model.embedding_dropout=0.1", "model.input_dropout=0.3",
       "train.ar_alpha=2", "train.tar_beta=1", "train.average=uniform", "train.average_start=4", "train.variable_bptt=true"]  # fmt: skip


# --- weight drop: the fused kernel on dropped hidden-to-hidden weights ---------------------


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_weight_drop_trains_the_raw_weights_and_is_off_in_eval(cell):
    torch.manual_seed(0)
    encoder = RNNEncoder(6, 8, num_layers=2, cell=cell, weight_drop=0.5)
    plain = RNNEncoder(6, 8, num_layers=2, cell=cell)
    assert encoder.state_dict().keys() == plain.state_dict().keys()  # the raw weights are the parameters
    inputs = torch.randn(3, 5, 6)
    first, second = encoder(inputs)[0], encoder(inputs)[0]
    assert not torch.allclose(first, second)  # a fresh mask each training call
    first.sum().backward()
    for layer in range(2):
        assert getattr(encoder.rnn, f"weight_hh_l{layer}").grad.abs().sum() > 0
        assert getattr(encoder.rnn, f"weight_ih_l{layer}").grad.abs().sum() > 0
    encoder.eval()
    plain.load_state_dict(encoder.state_dict())
    plain.eval()
    assert torch.equal(encoder(inputs)[0], encoder(inputs)[0])
    assert torch.equal(encoder(inputs)[0], plain(inputs)[0])  # eval: the raw weights, the plain module


def test_weight_drop_drops_only_hidden_to_hidden_weights():
    rnn = nn.LSTM(4, 5, num_layers=2)
    weights = drop_hidden_weights(rnn, 0.5)
    for name, weight in weights.items():
        raw = getattr(rnn, name)
        if name.startswith("weight_hh"):
            assert ((weight == 0) | torch.isclose(weight, raw * 2)).all() and (weight == 0).any()
        else:
            assert weight is raw


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_weight_drop_on_a_packed_batch_equals_each_sequence_alone(cell):
    torch.manual_seed(0)
    encoder = RNNEncoder(4, 6, num_layers=2, cell=cell, bidirectional=True, weight_drop=0.4)
    inputs, lengths = torch.randn(3, 7, 4), torch.tensor([7, 2, 5])
    torch.manual_seed(1)  # the same weight masks in each call: they do not depend on the batch
    states, _ = encoder(inputs, lengths)
    for row, length in enumerate(lengths.tolist()):
        torch.manual_seed(1)
        alone, _ = encoder(inputs[row : row + 1, :length])
        torch.testing.assert_close(states[row, :length], alone[0])
        assert (states[row, length:] == 0).all()


# --- locked (variational) dropout --------------------------------------------------------


def test_locked_dropout_keeps_one_mask_per_sequence():
    torch.manual_seed(0)
    dropout = LockedDropout(0.5)
    dropped = dropout(torch.ones(4, 9, 16))
    assert torch.equal(dropped, dropped[:, :1].expand_as(dropped))  # the same at every step
    assert set(dropped.unique().tolist()) == {0.0, 2.0}
    packed = pack_padded_sequence(torch.ones(3, 6, 8), torch.tensor([6, 2, 4]), batch_first=True, enforce_sorted=False)
    padded, _ = pad_packed_sequence(dropout(packed), batch_first=True)
    for row, length in enumerate([6, 2, 4]):
        assert torch.equal(padded[row, :length], padded[row, :1].expand(length, -1))
    dropout.eval()
    assert torch.equal(dropout(torch.ones(2, 3, 4)), torch.ones(2, 3, 4))


@pytest.mark.parametrize("cell, bidirectional, packed", [("lstm", False, False), ("gru", True, True), ("lstm", True, True)])
def test_layer_by_layer_run_equals_the_stacked_module(cell, bidirectional, packed):
    torch.manual_seed(0)
    rnn = RNNEncoder(4, 5, num_layers=3, cell=cell, bidirectional=bidirectional).rnn
    inputs = torch.randn(3, 6, 4)
    if packed:
        inputs = pack_padded_sequence(inputs, torch.tensor([6, 2, 4]), batch_first=True, enforce_sorted=False)
    layers = (one_layer_rnn(rnn, 0), one_layer_rnn(rnn, 1))
    got, got_final = run_layer_by_layer(rnn, layers, dict(rnn.named_parameters()), inputs, None, LockedDropout(0.0))
    expected, expected_final = rnn(inputs)
    torch.testing.assert_close(got.data if packed else got, expected.data if packed else expected)
    for mine, theirs in zip(got_final if cell == "lstm" else (got_final,), expected_final if cell == "lstm" else (expected_final,)):
        torch.testing.assert_close(mine, theirs)


def test_locked_dropout_between_layers_is_off_in_eval_and_keeps_state_dict():
    torch.manual_seed(0)
    encoder = RNNEncoder(4, 6, num_layers=2, dropout=0.5, locked_dropout=True, weight_drop=0.3)
    assert encoder.rnn.dropout == 0.0 and encoder.between.p == 0.5  # the module's own dropout is replaced
    assert encoder.state_dict().keys() == RNNEncoder(4, 6, num_layers=2).state_dict().keys()
    inputs, lengths = torch.randn(3, 5, 4), torch.tensor([5, 3, 1])
    assert not torch.allclose(encoder(inputs, lengths)[0], encoder(inputs, lengths)[0])
    encoder.eval()
    assert torch.equal(encoder(inputs, lengths)[0], encoder(inputs, lengths)[0])


# --- embedding dropout, AR and TAR -------------------------------------------------------


def test_embedding_dropout_drops_whole_words():
    torch.manual_seed(0)
    embedding = TokenEmbedding(20, 8, embedding_dropout=0.5)
    token_ids = torch.tensor([[3, 4, 3, 5, 4, 3], [5, 3, 6, 7, 8, 9]])
    vectors = embedding(token_ids)
    raw = embedding.embedding.weight
    for word in token_ids.unique().tolist():
        rows = vectors[token_ids == word]
        assert torch.equal(rows, rows[:1].expand_as(rows))  # every occurrence alike
        assert (rows == 0).all() or torch.allclose(rows[0], raw[word] * 2)
    assert (vectors == 0).all(-1).any()
    embedding.eval()
    assert torch.equal(embedding(token_ids), raw[token_ids])


def test_activation_penalties():
    dropped, states = torch.full((2, 3, 4), 2.0), torch.arange(3.0).view(1, 3, 1).expand(2, 3, 4)
    assert float(activation_penalties(dropped, states, 2.0, 0.0)) == pytest.approx(8.0)  # 2 * mean(2^2)
    assert float(activation_penalties(dropped, states, 0.0, 3.0)) == pytest.approx(3.0)  # 3 * mean(1^2)
    assert float(activation_penalties(dropped, states[:, :1], 0.0, 3.0)) == 0.0  # one step: no change to penalise


# --- variable BPTT -----------------------------------------------------------------------


def test_variable_bptt_lengths_cover_the_text_and_repeat_with_their_seed():
    lengths = variable_lengths(10_000, 35, (0, 1))
    assert sum(lengths) >= 10_000 > sum(lengths[:-1]) and min(lengths) >= 5 and max(lengths) <= 75
    assert lengths == variable_lengths(10_000, 35, (0, 1)) != variable_lengths(10_000, 35, (0, 2))
    assert 30 < sum(lengths) / len(lengths) < 36  # mostly about 35, sometimes about 17
    assert any(length < 25 for length in lengths)
    stream = LMStream(torch.arange(2_001), 4, 35, pad_id=0, variable_seed=(0, 1))
    chunks = list(stream)
    assert torch.equal(torch.cat([chunk.token_ids for chunk in chunks], 1), stream.rows[:, :-1])  # every step read once
    assert [chunk.lr_scale for chunk in chunks[:-1]] == [chunk.token_ids.shape[1] / 35 for chunk in chunks[:-1]]
    assert all(chunk.lr_scale == 1.0 for chunk in LMStream(torch.arange(2_001), 4, 35, pad_id=0))


# --- averaged weights --------------------------------------------------------------------


def test_uniform_average_is_the_mean_after_the_start_and_applied_only_in_its_block():
    model = nn.Linear(2, 1, bias=False)
    average = WeightAverage("uniform", start=1)
    for step, value in enumerate([1.0, 2.0, 4.0, 6.0], start=1):
        with torch.no_grad():
            model.weight.fill_(value)
        average.update(model, step)
    with average.applied(model):
        assert torch.equal(model.weight, torch.full((1, 2), 4.0))  # mean of steps 2..4
        state = average.state_dict()
    assert torch.equal(model.weight, torch.full((1, 2), 6.0)) and state["count"] == 3
    with torch.no_grad():
        model.weight.fill_(4.0)  # what last/model.safetensors holds
    resumed = WeightAverage("uniform", start=1)
    resumed.load_state_dict(model, state)
    assert torch.equal(model.weight, torch.full((1, 2), 6.0)) and resumed.count == 3


def test_ema_average():
    model = nn.Linear(1, 1, bias=False)
    average = WeightAverage("ema", decay=0.5)
    for step, value in enumerate([0.0, 4.0], start=1):
        with torch.no_grad():
            model.weight.fill_(value)
        average.update(model, step)
    with average.applied(model):
        assert float(model.weight.detach()) == 2.0


# --- in training: checkpoints, resume, ONNX, recipe rules ---------------------------------


def _records(run_dir, split="valid"):
    return [record for record in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if record["split"] == split]


def test_a_model_trained_with_every_regulariser_saves_raw_weights_and_loads_in_a_fresh_process(tiny_recipe):
    run_dir = train(load_recipe(tiny_recipe, [*AWD, "train.max_steps=12", "train.eval_every=6"]), quiet=True).run_dir
    plain = train(load_recipe(tiny_recipe, ["train.max_steps=1", "output_dir=runs/plain"]), quiet=True).run_dir
    assert load_file(run_dir / "best" / "model.safetensors").keys() == load_file(plain / "best" / "model.safetensors").keys()
    lm = seqkit.load(run_dir / "best", device="cpu")
    token_ids = torch.tensor([lm.tokenizer.encode("call me ishmael . some years ago").ids])
    with torch.inference_mode():
        expected = lm.model(token_ids)[0]
        assert torch.equal(lm.model(token_ids)[0], expected)  # eval: no dropout of any kind
    code = (
        "import torch, seqkit\n"
        f"lm = seqkit.load({str(run_dir / 'best')!r}, device='cpu')\n"
        "with torch.inference_mode():\n"
        f"    print(lm.model(torch.tensor([{token_ids[0].tolist()}]))[0].flatten().tolist())\n"
    )
    assert torch.equal(torch.tensor(json.loads(run_python(code, tiny_recipe.parent))), expected.flatten())
    # best/ holds the averaged weights; last/ the average too, and the raw weights beside it
    state = torch.load(run_dir / "last" / "trainer_state.pt", weights_only=True)
    assert state["average"]["count"] == 12 - 4
    last = load_file(run_dir / "last" / "model.safetensors")
    assert not torch.equal(state["average"]["raw"][0], last["embedding.embedding.weight"])


def test_resume_with_every_regulariser_reaches_the_same_losses(tiny_recipe, monkeypatch):
    overrides = [*AWD, "train.eval_every=5", "train.max_steps=16"]
    straight = train(load_recipe(tiny_recipe, [*overrides, "output_dir=runs/straight"]), quiet=True).run_dir
    recipe = load_recipe(tiny_recipe, [*overrides, "output_dir=runs/interrupted"])
    with monkeypatch.context() as patch:
        _interrupt_at_step(patch, 8)  # averaging started (after step 4), between evaluations
        with pytest.raises(TrainingInterrupted):
            train(recipe, quiet=True)
    resumed = train(recipe, resume=True, quiet=True).run_dir
    assert _records(resumed) == _records(straight)
    assert _records(resumed, "test") == _records(straight, "test")
    for name in ("best", "last"):
        torch.testing.assert_close(load_file(resumed / name / "model.safetensors"), load_file(straight / name / "model.safetensors"), rtol=0, atol=0)


def test_an_lstm_trained_with_weight_drop_exports_to_onnx_with_its_raw_weights(tiny_recipe, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from seqkit.onnx_export import export_onnx

    run_dir = train(load_recipe(tiny_recipe, [*AWD, "train.max_steps=6"]), quiet=True).run_dir
    exported, difference = export_onnx(run_dir / "best", tmp_path / "onnx")
    assert difference <= 1e-4
    torch_lm, onnx_lm = seqkit.load(run_dir / "best", device="cpu"), seqkit.load(exported, runtime="onnx")
    assert onnx_lm.generate("the whale", max_tokens=8, temperature=0) == torch_lm.generate("the whale", max_tokens=8, temperature=0)


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["model.weight_drop=1.5"], "model.weight_drop: Input should be less than 1"),
        (["train.ar_alpha=-1"], "train.ar_alpha: Input should be greater than or equal to 0"),
        (["train.average=swa"], "train.average: Input should be 'none', 'uniform' or 'ema'"),
        (["train.average_start=100"], "train.average_start: starts train.average, which is none"),
        (["train.average_decay=0.9"], "train.average_decay: is the decay of train.average: ema"),
        (["model.num_layers=1", "model.layer_dropout=0.3"], "model.layer_dropout: one layer has nothing between layers"),
        (["task=tagging", "train.ar_alpha=2"], "train.ar_alpha: only language_model uses it"),
        (["task=tagging", "train.variable_bptt=true"], "train.variable_bptt: only a language model reads chunks"),
        (["task=classification", "model.locked_dropout=true"], "model.locked_dropout: only language_model and generation use it"),
        (["task=seq2seq", "model.output_dropout=0.2"], "model.output_dropout: seq2seq's decoder reads model.dropout"),
        (["data.streaming=true", "train.variable_bptt=true"], "train.variable_bptt: streamed text"),
    ],
)
def test_bad_regulariser_keys_are_one_line_naming_the_key(tiny_recipe, overrides, expected):
    with pytest.raises(RecipeError) as error:
        load_recipe(tiny_recipe, overrides)
    assert any(expected in problem for problem in error.value.problems), error.value.problems


def test_the_keys_are_off_by_default(tiny_recipe):
    recipe = load_recipe(tiny_recipe)
    model, train_config = recipe.model, recipe.train
    assert (model.weight_drop, model.embedding_dropout, model.locked_dropout) == (0.0, 0.0, False)
    assert (model.input_dropout, model.layer_dropout, model.output_dropout) == (None, None, None)
    assert (train_config.ar_alpha, train_config.tar_beta, train_config.variable_bptt, train_config.average) == (0.0, 0.0, False, "none")
    assert yaml.safe_load(recipe.model_dump_json())["model"]["weight_drop"] == 0.0
