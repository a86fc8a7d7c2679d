"""Regression: the tutorial's seed recipe (vectors in, an output per step), pooled
regression of text, .npz inputs and the Regressor API."""

import json
import re

import numpy as np
import pytest
import torch
import yaml

import seqkit
from helpers import ROOT, SOTU, first_records, run_python, write_jsonl
from seqkit.config import load_recipe
from seqkit.data import read_examples
from seqkit.errors import DataError, RecipeError
from seqkit.train import train


def _train_records(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [record for record in records if record["split"] == "train"]


@pytest.mark.parametrize("encoder", ["rnn", "gru"])
def test_seed_recipe_is_the_tutorial_and_its_loss_falls(tmp_path, monkeypatch, encoder):
    monkeypatch.chdir(ROOT)
    recipe = load_recipe(ROOT / "recipes" / "seed.yaml", [f"model.encoder={encoder}"])
    recipe = recipe.model_copy(update={"output_dir": str(tmp_path / "seed")})
    result = train(recipe, quiet=True)
    regressor = seqkit.Regressor.from_pretrained(result.run_dir / "best", device="cpu")
    rnn = regressor.model.encoder.rnn
    assert type(rnn) is (torch.nn.RNN if encoder == "rnn" else torch.nn.GRU)
    assert (rnn.input_size, rnn.hidden_size, rnn.num_layers, rnn.bidirectional) == (10, 3, 2, False)
    assert regressor.model.head.output.out_features == 2
    inputs = torch.tensor([json.loads(line)["inputs"] for line in (ROOT / "data" / "seed" / "random.jsonl").open()])
    assert inputs.shape == (2, 3, 10)
    outputs, _ = regressor.model(inputs)
    assert outputs.shape == (2, 3, 2)  # [batch, seq_len, 2]
    losses = [record["loss"] for record in _train_records(result.run_dir)]
    assert len(losses) == 100 and losses[-1] < 0.8 * losses[0]
    per_step = regressor.predict(inputs[0].numpy())
    assert per_step.shape == (3, 2) and np.allclose(per_step, outputs[0].detach().numpy(), atol=1e-6)
    assert [p.shape for p in regressor.predict(list(inputs.numpy()))] == [(3, 2), (3, 2)]
    assert (result.run_dir / "tb").is_dir() and not (result.run_dir / "best" / "tokenizer.json").exists()


def _sotu_recipe(directory, **data):
    records = first_records(SOTU, 3, per="address")[:150]
    write_jsonl(directory / "sotu.jsonl", records)
    recipe = {
        "task": "regression", "seed": 0, "output_dir": str(directory / "runs" / "year"),
        "data": {"train": str(directory / "sotu.jsonl"), "target_field": "year", "max_length": 40,
                 "holdout": {"by": "address", "valid": 0.2}, **data},
        "tokenizer": {"kind": "word", "lowercase": True, "min_frequency": 2},
        "model": {"embedding_dim": 16, "hidden_size": 16, "num_layers": 1, "bidirectional": True, "dropout": 0.0, "pooling": "mean"},
        "train": {"epochs": 6, "batch_size": 16, "lr": 0.01, "log_every": 3, "device": "cpu", "precision": "fp32"},
    }  # fmt: skip
    path = directory / "year.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path, records


def test_text_regression_learns_and_round_trips(tmp_path):
    path, records = _sotu_recipe(tmp_path)
    result = train(load_recipe(path), quiet=True)
    losses = [record["loss"] for record in _train_records(result.run_dir)]
    assert losses[-1] < losses[0]
    best = result.best_metrics
    assert {"mae", "rmse", "baseline_mae", "baseline_rmse"} <= set(best) and best["mae"] > 0
    regressor = seqkit.Regressor.from_pretrained(result.run_dir / "best", device="cpu")
    scale = json.loads((result.run_dir / "best" / "labels.json").read_text())
    assert scale["targets"] == ["year"] and 1790 < scale["mean"][0] < 2021
    texts = [records[0]["text"], records[-1]["text"]]
    years = regressor.predict(texts)
    assert all(isinstance(year, float) and 1500 < year < 2300 for year in years)
    code = f"import json, seqkit; r = seqkit.load({str(result.run_dir / 'best')!r}, device='cpu'); print(json.dumps(r.predict({texts!r})))"
    assert np.allclose(json.loads(run_python(code, tmp_path)), years, atol=1e-3)
    metrics = regressor.evaluate(tmp_path / "sotu.jsonl")
    assert metrics["examples"] == len(records) and metrics["mae"] < metrics["baseline_mae"] * 1.5


def test_regression_target_errors_name_file_and_line(tmp_path):
    path = tmp_path / "y.jsonl"
    path.write_text('{"text": "a", "year": 1801}\n{"text": "b", "year": "1802"}\n')
    with pytest.raises(DataError, match=r"y.jsonl:2: targets must be numbers"):
        read_examples(path, target_field="year", targets="number")
    path.write_text('{"text": "a", "year": 1801}\n{"text": "b", "year": true}\n')
    with pytest.raises(DataError, match=r"y.jsonl:2: targets must be numbers"):
        read_examples(path, target_field="year", targets="number")
    path.write_text('{"text": "a", "year": NaN}\n')
    with pytest.raises(DataError, match=r"y.jsonl:1: targets must be numbers"):
        read_examples(path, target_field="year", targets="number")


def test_several_target_fields_and_per_step_checks(tmp_path):
    path = write_jsonl(tmp_path / "two.jsonl", [{"text": "a b", "x": 1, "y": 2.5}, {"text": "c", "x": 3, "y": -1}])
    examples = read_examples(path, target_field=["x", "y"], targets="number")
    assert [t.tolist() for t in examples.targets] == [[1.0, 2.5], [3.0, -1.0]]
    steps = [[[0.0, 1.0], [1.0, 0.0]], [[0.5, 0.5]]]
    path = write_jsonl(tmp_path / "v.jsonl", [{"inputs": steps[0], "targets": [1, 2]}, {"inputs": steps[1], "targets": [1, 2]}])
    recipe = tmp_path / "v.yaml"
    recipe.write_text(yaml.safe_dump({
        "task": "regression", "output_dir": str(tmp_path / "run"),
        "data": {"train": str(path), "valid": str(path), "inputs": "vectors", "input_field": "inputs", "target_field": "targets"},
        "model": {"input_size": 2, "hidden_size": 3, "num_layers": 1, "pooling": "none"}, "train": {"epochs": 1},
    }))  # fmt: skip
    with pytest.raises(DataError, match=r"v.jsonl:2: model.pooling is none, so each step needs targets: found 2 for 1 steps"):
        train(load_recipe(recipe), quiet=True)
    with pytest.raises(DataError, match=r"v.jsonl:1: steps of 2 numbers, but model.input_size is 3"):
        train(load_recipe(recipe, ["model.input_size=3", "model.pooling=mean"]), quiet=True)
    path.write_text('{"inputs": [[1, 2], [3]], "targets": [1]}\n')
    with pytest.raises(DataError, match="v.jsonl:1: 'inputs' must be a non-empty list of steps"):
        read_examples(path, "inputs", "targets", inputs="vectors", targets="number")


def test_npz_vectors_with_lengths(tmp_path):
    generator = np.random.default_rng(0)
    inputs = generator.normal(size=(4, 5, 3)).astype(np.float32)
    np.savez(tmp_path / "data.npz", inputs=inputs, targets=generator.normal(size=(4, 2)), lengths=np.array([5, 2, 3, 1]))
    examples = read_examples(tmp_path / "data.npz", "inputs", "targets", inputs="vectors", targets="number")
    assert [len(x) for x in examples.inputs] == [5, 2, 3, 1] and examples.targets[0].shape == (2,)
    np.testing.assert_array_equal(examples.inputs[1], inputs[1, :2])
    with pytest.raises(DataError, match="no array named 'x'"):
        read_examples(tmp_path / "data.npz", "x", "targets", inputs="vectors", targets="number")
    (tmp_path / "fake.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"fake\.npz: not a \.npz file \(it holds text; "):
        read_examples(tmp_path / "fake.npz", "inputs", "targets", inputs="vectors", targets="number")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.pooling=none"], "model.pooling: an output at every step needs vector inputs"),
        (["train.class_weights=balanced"], "train.class_weights: only tagging and classification weigh classes"),
        (["data.inputs=vectors"], "model.input_size: data.inputs is vectors"),
        (["model.input_size=4"], "model.input_size: only vector inputs"),
        (["data.holdout.valid=0"], "data.holdout.valid: data.valid is null"),
        (["data.valid=also.jsonl"], "data.holdout.valid: data.valid names a file"),
    ],
)
def test_recipe_rules_for_many_to_one(tmp_path, overrides, message):
    path, _ = _sotu_recipe(tmp_path)
    (tmp_path / "also.jsonl").write_text("{}\n")
    with pytest.raises(RecipeError, match=message):
        load_recipe(path, [item.replace("also.jsonl", str(tmp_path / "also.jsonl")) for item in overrides])


def test_pooling_is_rejected_for_other_tasks(tiny_recipe):
    with pytest.raises(RecipeError, match="model.pooling: only classification and regression use it"):
        load_recipe(tiny_recipe, ["model.pooling=mean"])


@pytest.mark.parametrize("normalize", [True, False])
def test_info_tells_how_targets_were_scaled(tmp_path, normalize):
    from click.testing import CliRunner

    from seqkit.cli import main

    path, _ = _sotu_recipe(tmp_path, normalize_targets=normalize)
    result = train(load_recipe(path, ["train.max_steps=2"]), quiet=True)
    info = CliRunner().invoke(main, ["info", str(result.run_dir / "best")])
    assert info.exit_code == 0, info.stderr
    line = next(line for line in info.output.splitlines() if line.startswith("targets"))
    if normalize:
        assert re.fullmatch(r"targets      year \(standardized: mean 1[89]\d\d(\.\d+)?, std \d+(\.\d+)?\)", line), line
    else:
        assert line == "targets      year (as they are in the data: data.normalize_targets is false)"
