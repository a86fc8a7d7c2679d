"""ONNX export and the ONNX Runtime path: tiny models trained on slices of the shipped data,
exported, and compared with PyTorch on batches of mixed lengths (a one-word text among
them): the same tags, spans and labels, and scores within 1e-4."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from helpers import (
    MOBY, NAMES, ROOT, SPAM, TINY_CLASSIFIER, TINY_RECIPE, TINY_TAGGER, WNUT, first_lines, first_records, first_sentences, write_generator_recipe,
    write_jsonl,
)  # fmt: skip

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

import seqkit  # noqa: E402
from seqkit.cli import main  # noqa: E402
from seqkit.config import load_recipe  # noqa: E402
from seqkit.data import collate_sequences, collate_tagged  # noqa: E402
from seqkit.errors import CheckpointError, SeqkitError  # noqa: E402
from seqkit.onnx_export import export_onnx  # noqa: E402
from seqkit.tokenize import encode_ids, special_ids, word_ids  # noqa: E402
from seqkit.train import train  # noqa: E402

TOLERANCE = 1e-4
TEXTS = ["@jack I love New York and Paris , see you in London tonight !!", "hi", "", "Pretty bad storm here last evening at the Empire State Building",
         "Going to the Apple store in San Francisco with Justin Bieber"]  # fmt: skip


def _train(directory, recipe: dict, *overrides: str):
    path = directory / f"{recipe['output_dir'].rsplit('/', 1)[-1]}.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return train(load_recipe(path, list(overrides)), quiet=True).run_dir / "best"


def _exported(checkpoint, directory):
    exported, difference = export_onnx(checkpoint, directory)
    assert difference <= TOLERANCE and (exported / "model.onnx").is_file() and (exported / "config.yaml").is_file()
    return exported


@pytest.fixture(scope="module")
def tweets(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tweets")
    (directory / "train.conll").write_text(first_sentences(WNUT / "train.conll", 40), encoding="utf-8")
    return directory


TAGGERS = {  # CRF with byte CNN on a BiLSTM; softmax with a byte BiLSTM on a 2-layer BiGRU
    "crf-cnn-bilstm": {"crf": True, "char_features": "cnn", "encoder": "lstm"},
    "softmax-charlstm-bigru2": {"crf": False, "char_features": "lstm", "encoder": "gru", "num_layers": 2},
}


@pytest.mark.parametrize("name", TAGGERS)
def test_tagger_parity(tweets, tmp_path, name):
    data = str(tweets / "train.conll")
    recipe = {**TINY_TAGGER, "output_dir": str(tmp_path / "runs" / "tagger"), "data": {"train": data, "valid": data},
              "model": {**TINY_TAGGER["model"], **TAGGERS[name]}, "train": {**TINY_TAGGER["train"], "epochs": 1}}  # fmt: skip
    checkpoint = _train(tmp_path, recipe, "train.eval_every=null")
    exported = _exported(checkpoint, tmp_path / "ner-onnx")
    assert sorted(path.name for path in exported.iterdir()) == ["config.yaml", "labels.json", "model.onnx", "tokenizer.json"]
    torch_tagger, onnx_tagger = seqkit.Tagger.from_pretrained(checkpoint, device="cpu"), seqkit.Tagger.from_pretrained(exported, runtime="onnx")
    # the emissions of one padded batch of mixed lengths (one word to 13)
    sentences = [words for words in (text.split() for text in TEXTS) if words]
    tokenizer = torch_tagger.tokenizer
    batch = collate_tagged([word_ids(tokenizer, words) for words in sentences], sentences, None, special_ids(tokenizer).pad)
    with torch.inference_mode():
        expected, _ = torch_tagger.model(batch.token_ids, batch.lengths, char_ids=batch.char_ids, char_index=batch.char_index)
        got, _ = onnx_tagger.model(batch.token_ids, batch.lengths, char_ids=batch.char_ids, char_index=batch.char_index)
    assert float((got - expected)[batch.mask].abs().max()) <= TOLERANCE
    # and through the API: decoding, spans and offsets are the same code
    for mine, theirs in zip(onnx_tagger.tag(TEXTS, batch_size=3, n_best=2), torch_tagger.tag(TEXTS, batch_size=3, n_best=2)):
        assert (mine.tokens, mine.offsets, mine.tags, [span[:] for span in mine.spans]) == (theirs.tokens, theirs.offsets, theirs.tags, [span[:] for span in theirs.spans])
        assert np.allclose(mine.scores, theirs.scores, atol=TOLERANCE, rtol=0)
        assert [tags for tags, _ in mine.n_best] == [tags for tags, _ in theirs.n_best]
    assert onnx_tagger.tag("hi").tags == torch_tagger.tag("hi").tags  # a batch of one text of one word


@pytest.fixture(scope="module")
def messages(tmp_path_factory):
    directory = tmp_path_factory.mktemp("spam")
    write_jsonl(directory / "train.jsonl", first_records(SPAM, 20, per="label"))
    return directory


CLASSIFIERS = {"attention-bilstm": ("attention", "lstm", True), "last-bigru": ("last", "gru", True), "mean-rnn": ("mean", "rnn", False),
               "max-lstm": ("max", "lstm", False)}  # fmt: skip


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classifier_parity(messages, tmp_path, name):
    pooling, encoder, bidirectional = CLASSIFIERS[name]
    data = str(messages / "train.jsonl")
    recipe = {**TINY_CLASSIFIER, "output_dir": str(tmp_path / "runs" / "spam"), "data": {**TINY_CLASSIFIER["data"], "train": data, "valid": data},
              "model": {**TINY_CLASSIFIER["model"], "pooling": pooling, "encoder": encoder, "bidirectional": bidirectional},
              "train": {**TINY_CLASSIFIER["train"], "epochs": 1}}  # fmt: skip
    checkpoint = _train(tmp_path, recipe)
    exported = _exported(checkpoint, tmp_path / "spam-onnx")
    torch_model, onnx_model = seqkit.Classifier.from_pretrained(checkpoint, device="cpu"), seqkit.Classifier.from_pretrained(exported, runtime="onnx")
    texts = ["WIN a FREE cruise , click here now to claim your prize before midnight", "ok", "", "are we still on for lunch tomorrow ?", "FREE"]
    attention = pooling == "attention"
    for mine, theirs in zip(onnx_model.predict(texts, batch_size=3, return_attention=attention), torch_model.predict(texts, batch_size=3, return_attention=attention)):
        assert mine.label == theirs.label
        assert max(abs(mine.probabilities[label] - theirs.probabilities[label]) for label in theirs.probabilities) <= TOLERANCE
        if attention:
            assert [token for token, _ in mine.attention] == [token for token, _ in theirs.attention]
            assert np.allclose([w for _, w in mine.attention], [w for _, w in theirs.attention], atol=TOLERANCE, rtol=0)
    # the logits of one padded batch
    encoded = [encode_ids(torch_model.tokenizer, [text])[0] or [0] for text in texts if text]
    batch = collate_sequences(encoded, special_ids(torch_model.tokenizer).pad)
    with torch.inference_mode():
        difference = (onnx_model.model.predict(batch.inputs, batch.lengths)[0] - torch_model.model.predict(batch.inputs, batch.lengths)[0]).abs().max()
    assert float(difference) <= TOLERANCE


def test_regression_on_vectors_with_an_output_per_step(tmp_path):
    recipe = yaml.safe_load((ROOT / "recipes" / "seed.yaml").read_text())
    recipe["data"].update(train=str(ROOT / "data" / "seed" / "random.jsonl"), valid=str(ROOT / "data" / "seed" / "random.jsonl"))
    recipe["output_dir"] = str(tmp_path / "runs" / "seed")
    recipe["model"]["bidirectional"] = True
    checkpoint = _train(tmp_path, recipe, "train.epochs=3")
    exported = _exported(checkpoint, tmp_path / "seed-onnx")
    assert not (exported / "tokenizer.json").exists()  # vectors in: no tokenizer
    torch_model, onnx_model = seqkit.Regressor.from_pretrained(checkpoint, device="cpu"), seqkit.Regressor.from_pretrained(exported, runtime="onnx")
    inputs = [np.random.default_rng(length).standard_normal((length, 10)).astype(np.float32) for length in (5, 1, 3)]
    for mine, theirs in zip(onnx_model.predict(inputs, batch_size=2), torch_model.predict(inputs, batch_size=2)):
        assert mine.shape == theirs.shape and float(np.abs(mine - theirs).max()) <= TOLERANCE


def test_language_model_carries_its_state(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for split, count in (("train", 80), ("valid", 12), ("test", 12)):
        (data / f"{split}.txt").write_text(first_lines(MOBY / f"{split}.txt", count), encoding="utf-8")
    recipe = {**TINY_RECIPE, "output_dir": str(tmp_path / "runs" / "lm"), "data": {split: str(data / f"{split}.txt") for split in ("train", "valid", "test")},
              "train": {**TINY_RECIPE["train"], "epochs": 1}}  # fmt: skip
    checkpoint = _train(tmp_path, recipe)
    exported = _exported(checkpoint, tmp_path / "lm-onnx")
    torch_lm, onnx_lm = seqkit.LanguageModel.from_pretrained(checkpoint, device="cpu"), seqkit.LanguageModel.from_pretrained(exported, runtime="onnx")
    assert onnx_lm.generate("the whale", max_tokens=8, temperature=0) == torch_lm.generate("the whale", max_tokens=8, temperature=0)
    assert onnx_lm.generate("the sea", max_tokens=8, seed=3) == torch_lm.generate("the sea", max_tokens=8, seed=3)
    tokens = torch.randint(0, torch_lm.tokenizer.get_vocab_size(), (2, 5), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected, expected_state = torch_lm.model(tokens)
        got, state = onnx_lm.model(tokens)
        assert float((got - expected).abs().max()) <= TOLERANCE
        expected, expected_state = torch_lm.model(tokens[:, :1], state=expected_state)  # one more step from the carried state
        got, state = onnx_lm.model(tokens[:, :1], state=state)
    assert float((got - expected).abs().max()) <= TOLERANCE
    assert all(float((mine - theirs).abs().max()) <= TOLERANCE for mine, theirs in zip(state, expected_state))
    evaluated = [json.loads(CliRunner().invoke(main, ["eval", str(where), "--data", str(data / "test.txt"), "--json", *extra]).output)
                 for where, extra in ((checkpoint, []), (exported, ["--runtime", "onnx"]))]  # fmt: skip
    assert evaluated[1]["perplexity"] == pytest.approx(evaluated[0]["perplexity"], rel=1e-5) and evaluated[1]["tokens"] == evaluated[0]["tokens"]


@pytest.fixture(scope="module")
def small_tagger(tweets, tmp_path_factory):
    directory = tmp_path_factory.mktemp("small")
    data = str(tweets / "train.conll")
    recipe = {**TINY_TAGGER, "output_dir": str(directory / "runs" / "tagger"), "data": {"train": data, "valid": data},
              "model": {**TINY_TAGGER["model"], "char_features": "none"}, "train": {**TINY_TAGGER["train"], "epochs": 1}}  # fmt: skip
    return _train(directory, recipe, "train.eval_every=null")


def test_export_writes_nothing_of_the_exporters_own_to_stderr(small_tagger, tmp_path, capfd):
    capfd.readouterr()
    _exported(small_tagger, tmp_path / "quiet")
    assert "shape inference" not in capfd.readouterr().err  # PyTorch's C++ notes on the packing are not the user's


def test_cli_export_and_predict_with_onnx_runtime(small_tagger, tmp_path):
    runner = CliRunner()
    target = str(tmp_path / "ner-onnx")
    exported = runner.invoke(main, ["export", str(small_tagger), target, "--format", "onnx"])
    assert exported.exit_code == 0, exported.output
    assert "ONNX Runtime matches PyTorch within" in exported.output
    again = runner.invoke(main, ["export", str(small_tagger), target, "--format", "onnx"])
    assert again.exit_code == 2 and again.output.strip().splitlines() == [f"seqkit: error: {target}: already holds an ONNX export: pass --overwrite to replace it, or choose another name"]
    assert runner.invoke(main, ["export", str(small_tagger), target, "--format", "onnx", "--overwrite"]).exit_code == 0
    named = runner.invoke(main, ["export", str(small_tagger), str(tmp_path / "model.onnx"), "--format", "onnx"])
    assert named.exit_code == 2 and "--format onnx writes a directory" in named.output
    inputs = tmp_path / "in.txt"
    inputs.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    outputs = [runner.invoke(main, ["predict", where, str(inputs), "--format", "jsonl", *extra]) for where, extra in
               ((str(small_tagger), []), (target, ["--runtime", "onnx"]))]  # fmt: skip
    assert all(output.exit_code == 0 for output in outputs), [output.output for output in outputs]
    records = [[json.loads(line) for line in output.output.splitlines()] for output in outputs]
    assert [(r["tokens"], r["tags"], [s["text"] for s in r["spans"]]) for r in records[0]] == [(r["tokens"], r["tags"], [s["text"] for s in r["spans"]]) for r in records[1]]
    data = str(tmp_path / "dev.conll")
    (tmp_path / "dev.conll").write_text(first_sentences(WNUT / "dev.conll", 30), encoding="utf-8")
    scored = [runner.invoke(main, ["eval", where, "--data", data, "--json", *extra]) for where, extra in
              ((str(small_tagger), []), (target, ["--runtime", "onnx"]))]  # fmt: skip
    assert all(output.exit_code == 0 for output in scored), [output.output for output in scored]
    assert {key: value for key, value in json.loads(scored[1].output).items() if key != "checkpoint"} == \
        {key: value for key, value in json.loads(scored[0].output).items() if key != "checkpoint"}  # fmt: skip
    options = seqkit.Tagger.from_pretrained(target, runtime="onnx").model.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"  # idle pool threads sleep


def test_int8_export_quantizes_the_lstm_and_tags_alike(small_tagger, tmp_path):
    import onnx

    runner = CliRunner()
    target = tmp_path / "ner-int8"
    exported = runner.invoke(main, ["export", str(small_tagger), str(target), "--format", "onnx", "--quantize", "int8"])
    assert exported.exit_code == 0, exported.output
    assert "its LSTM weights in int8" in exported.output and "evaluate it on your data" in exported.output
    assert "WARNING" not in exported.output  # ONNX Runtime's advice on pre-processing is kept from the user
    graph = onnx.load(str(target / "model.onnx"))
    lstms = [node for node in graph.graph.node if node.op_type == "DynamicQuantizeLSTM"]
    assert len(lstms) == 1 and onnx.helper.get_node_attr_value(lstms[0], "direction") == b"bidirectional"  # one node, both directions
    assert lstms[0].input[4]  # it reads sequence_lens: each sentence within its own length
    metadata = {entry.key: entry.value for entry in graph.metadata_props}
    assert metadata["seqkit.quantized"] == "int8" and metadata["seqkit.task"] == "tagging" and "seqkit.crf" in metadata
    assert (target / "model.onnx").stat().st_size < (export_onnx(small_tagger, tmp_path / "float")[0] / "model.onnx").stat().st_size
    int8, reference = seqkit.Tagger.from_pretrained(target, runtime="onnx"), seqkit.Tagger.from_pretrained(small_tagger, device="cpu")
    for mine, theirs in zip(int8.tag(TEXTS), reference.tag(TEXTS)):
        assert (mine.tokens, mine.offsets) == (theirs.tokens, theirs.offsets) and len(mine.tags) == len(theirs.tags)
        assert np.allclose(mine.scores, theirs.scores, atol=0.2, rtol=0)  # int8 weights: close, not equal
    refused = runner.invoke(main, ["export", str(small_tagger), str(tmp_path / "archive.tar.gz"), "--quantize", "int8"])
    assert refused.exit_code == 2 and "--quantize int8 quantizes an ONNX graph: it goes with --format onnx" in refused.output


def test_int8_export_refuses_a_model_without_an_lstm(tweets, tmp_path):
    data = str(tweets / "train.conll")
    recipe = {**TINY_TAGGER, "output_dir": str(tmp_path / "runs" / "gru"), "data": {"train": data, "valid": data},
              "model": {**TINY_TAGGER["model"], "encoder": "gru", "char_features": "none"}, "train": {**TINY_TAGGER["train"], "epochs": 1}}  # fmt: skip
    checkpoint = _train(tmp_path, recipe, "train.eval_every=null")
    with pytest.raises(SeqkitError, match=r"--quantize int8 stores LSTM layers' weights in int8 .* this gru model has none: export it without --quantize"):
        export_onnx(checkpoint, tmp_path / "gru-int8", quantize="int8")
    assert not (tmp_path / "gru-int8").exists()


def test_bad_input_is_one_line(small_tagger, tmp_path, monkeypatch):
    runner = CliRunner()
    with pytest.raises(CheckpointError, match=r"a checkpoint, not an ONNX export: write one with seqkit export CHECKPOINT DIR --format onnx"):
        seqkit.Tagger.from_pretrained(small_tagger, runtime="onnx")
    with pytest.raises(CheckpointError, match=r"no model.onnx: write one with seqkit export CHECKPOINT DIR --format onnx"):
        seqkit.load(tmp_path, runtime="onnx")
    with pytest.raises(CheckpointError, match=r"^hf://someone/tagger: runtime='onnx' reads a local export directory"):
        seqkit.load("hf://someone/tagger", runtime="onnx")
    with pytest.raises(ValueError, match="runtime: expected 'torch' or 'onnx'"):
        seqkit.load(small_tagger, runtime="tensorrt")
    predicted = runner.invoke(main, ["predict", str(small_tagger), "--runtime", "onnx"], input="hi\n")
    assert predicted.exit_code == 2 and len(predicted.output.strip().splitlines()) == 1 and "--format onnx" in predicted.output
    (tmp_path / "keep.txt").write_text("mine")
    refused = runner.invoke(main, ["export", str(small_tagger), str(tmp_path), "--format", "onnx"])
    assert refused.exit_code == 2 and "holds other files, not an ONNX export" in refused.output and (tmp_path / "keep.txt").read_text() == "mine"
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # not installed
    with pytest.raises(SeqkitError, match=r"pip install seqkit\[onnx\]"):
        export_onnx(small_tagger, tmp_path / "new")


def test_a_generator_is_not_exportable(tmp_path):
    checkpoint = train(load_recipe(write_generator_recipe(tmp_path, NAMES), ["train.epochs=1"]), quiet=True).run_dir / "best"
    exported = CliRunner().invoke(main, ["export", str(checkpoint), str(tmp_path / "names-onnx"), "--format", "onnx"])
    assert exported.exit_code == 2 and exported.output.strip().splitlines() == [
        f"seqkit: error: {checkpoint}: a generation model cannot be exported to ONNX (its decoding loop runs step by step in Python); "
        "--format onnx exports tagging, classification, regression and language_model models"
    ]
    assert not (tmp_path / "names-onnx").exists()
