"""Transfer: a classifier started from a language model's embedding and encoder, frozen
at first, then unfrozen layer by layer with discriminative learning rates."""

import os
import re
import signal

import pytest
import torch
import yaml
from click.testing import CliRunner
from safetensors.torch import load_file

from helpers import SPAM, TINY_CLASSIFIER, first_records, write_jsonl
from seqkit.cli import main
from seqkit.config import TrainConfig, load_recipe
from seqkit.data import read_text
from seqkit.errors import RecipeError
from seqkit.model import build_model
from seqkit.tasks import TASKS
from seqkit.tokenize import load_tokenizer
from seqkit.train import TrainingInterrupted, train
from seqkit.transfer import layer_groups, parameter_groups, trainable_groups


@pytest.fixture
def lm_run(tiny_recipe):
    return train(load_recipe(tiny_recipe, ["train.max_steps=10"]), quiet=True).run_dir  # embedding 16, LSTM 2 x 24


def _classifier(directory, lm_dir, **train_settings):
    write_jsonl(directory / "spam.jsonl", first_records(SPAM, 8, per="label"))
    recipe = {**TINY_CLASSIFIER, "output_dir": str(directory / "runs" / "clf"),
              "data": {**TINY_CLASSIFIER["data"], "train": str(directory / "spam.jsonl"), "valid": str(directory / "spam.jsonl")},
              "model": {**TINY_CLASSIFIER["model"], "embedding_dim": 16, "hidden_size": 24, "num_layers": 2, "init_from": str(lm_dir / "best")},
              "train": {**TINY_CLASSIFIER["train"], **train_settings}}  # fmt: skip
    path = directory / "clf.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return path


def _weights(run_dir):
    return load_file(str(run_dir / "last" / "model.safetensors"))


def test_init_from_reports_loaded_new_and_skipped_and_reuses_the_tokenizer(lm_run, tmp_path, capsys):
    result = train(load_recipe(_classifier(tmp_path, lm_run, epochs=1, freeze_pretrained=1)), quiet=False)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("loaded 8 tensors, 13 new, 1 skipped (shape)")
    assert "  loaded  embedding.embedding.weight" in lines and "  loaded  encoder.rnn.weight_ih_l0" in lines
    assert "  skipped encoder.rnn.weight_ih_l1 ((96, 24) -> (96, 48))" in lines  # layer 2 reads both directions now
    assert "  new     encoder.rnn.weight_ih_l0_reverse" in lines and "  new     head.output.weight" in lines
    assert (result.run_dir / "tokenizer.json").read_text() == (lm_run / "tokenizer.json").read_text()
    lm, clf = load_file(str(lm_run / "best" / "model.safetensors")), _weights(result.run_dir)
    for name in ("embedding.embedding.weight", "encoder.rnn.weight_ih_l0", "encoder.rnn.weight_hh_l1"):
        torch.testing.assert_close(clf[name], lm[name], rtol=0, atol=0)  # frozen during the frozen epoch
    assert not torch.equal(clf["encoder.rnn.weight_ih_l0_reverse"], torch.zeros_like(clf["encoder.rnn.weight_ih_l0_reverse"]))
    info = CliRunner().invoke(main, ["info", str(result.run_dir / "best")])
    assert f"started from {lm_run / 'best'}" in info.output


def test_gradual_unfreezing_frees_one_layer_group_per_epoch(lm_run, tmp_path):
    result = train(load_recipe(_classifier(tmp_path, lm_run, epochs=2, freeze_pretrained=1, unfreeze="gradual")), quiet=True)
    lm, clf = load_file(str(lm_run / "best" / "model.safetensors")), _weights(result.run_dir)
    assert not torch.equal(clf["encoder.rnn.weight_hh_l1"], lm["encoder.rnn.weight_hh_l1"])  # the top layer: free in epoch 2
    torch.testing.assert_close(clf["encoder.rnn.weight_hh_l0"], lm["encoder.rnn.weight_hh_l0"], rtol=0, atol=0)  # not yet
    torch.testing.assert_close(clf["embedding.embedding.weight"], lm["embedding.embedding.weight"], rtol=0, atol=0)


def test_layer_groups_and_discriminative_learning_rates(tiny_recipe):
    recipe = load_recipe(tiny_recipe)
    model = build_model("language_model", recipe.model, 50, 0)
    groups = layer_groups(model)
    assert groups[1][0].startswith("encoder.rnn.") and groups[1][0].endswith("_l1")
    assert groups[-1] == ["embedding.embedding.weight"] and "head.output.bias" in groups[0]
    config = TrainConfig(lr=0.01, lr_decay_per_layer=2.0)
    assert [group["lr"] for group in parameter_groups(model, config)] == [0.01, 0.005, 0.0025, 0.00125]
    gradual = TrainConfig(freeze_pretrained=2, unfreeze="gradual")
    assert [trainable_groups(epoch, 4, gradual) for epoch in range(6)] == [1, 1, 2, 3, 4, 4]
    assert [trainable_groups(epoch, 4, TrainConfig(freeze_pretrained=1)) for epoch in range(3)] == [1, 4, 4]


def test_transfer_settings_need_init_from(tiny_recipe):
    with pytest.raises(RecipeError, match="train.freeze_pretrained: freezing applies to tensors loaded by model.init_from"):
        load_recipe(tiny_recipe, ["train.freeze_pretrained=1"])
    with pytest.raises(RecipeError, match="model.init_from: not found: nowhere"):
        load_recipe(tiny_recipe, ["model.init_from=nowhere"])


def test_a_vocabulary_of_its_own_takes_the_rows_of_the_words_the_source_knows(lm_run, tmp_path, capsys):
    recipe = load_recipe(_classifier(tmp_path, lm_run, epochs=1, freeze_pretrained=1), ["model.init_vocabulary=task"])
    result = train(recipe, quiet=False)
    rows_line = capsys.readouterr().out.splitlines()[1]
    assert re.fullmatch(r"  embedding\.embedding\.weight: [\d,]+ of [\d,]+ words from the source \(.*\), the rest start at the mean of its rows", rows_line)
    own, source = load_tokenizer(result.run_dir / "tokenizer.json"), load_tokenizer(lm_run / "tokenizer.json")
    scratch = TASKS["classification"].make_tokenizer(recipe)
    assert own.get_vocab() == scratch.get_vocab() != source.get_vocab()  # the task's own words, as from scratch
    lm, clf = load_file(str(lm_run / "best" / "model.safetensors")), _weights(result.run_dir)
    lm_rows, clf_rows = lm["embedding.embedding.weight"], clf["embedding.embedding.weight"]
    known, shared, unseen = source.get_vocab(), 0, 0
    for word, index in own.get_vocab().items():  # frozen during the first epoch: still as loaded
        if word in known:
            torch.testing.assert_close(clf_rows[index], lm_rows[known[word]], rtol=0, atol=0)
            shared += 1
        elif word.lower() not in {key.lower() for key in known}:
            torch.testing.assert_close(clf_rows[index], lm_rows.mean(0), rtol=1e-6, atol=1e-6)
            unseen += 1
    assert shared > 3 and unseen > 3
    with pytest.raises(RecipeError, match="model.init_vocabulary: matches this task's words to the rows of model.init_from: set it"):
        load_recipe(_classifier(tmp_path, lm_run), ["model.init_from=null", "model.init_vocabulary=task"])


def test_a_language_model_reads_the_words_of_a_conll_file(tmp_path):
    path = tmp_path / "tweets.conll"
    path.write_text("Hello\tO\nNew\tB-loc\nYork\tI-loc\n\n:)\tO\n", encoding="utf-8")
    assert read_text(path)["text"] == ["Hello New York", ":)"]


def test_discriminative_rates_slow_down_only_what_was_loaded(lm_run, tmp_path, monkeypatch):
    """With ``train.lr_decay_per_layer``, loaded tensors below the top learn at lr / decay**k;
    new ones (here the encoder's reverse direction) learn at the full rate wherever they sit.
    A resumed run rebuilds the same groups and ends where an uninterrupted one does."""
    settings = {"epochs": 2, "lr_decay_per_layer": 2.0, "schedule": "none"}  # 2 steps an epoch
    straight = train(load_recipe(_classifier(tmp_path, lm_run, max_steps=4, **settings), ["output_dir=" + str(tmp_path / "straight")]), quiet=True)
    assert straight.steps == 4
    groups = torch.load(straight.run_dir / "last" / "trainer_state.pt", weights_only=True)["optimizer"]["param_groups"]
    lr = TINY_CLASSIFIER["train"]["lr"]
    assert [group["lr"] for group in groups] == [lr, lr / 2, lr / 4, lr / 8]
    assert "encoder.rnn.weight_ih_l0_reverse" in groups[0]["names"] and "head.output.weight" in groups[0]["names"]
    assert groups[2]["names"] == ["encoder.rnn.weight_ih_l0", "encoder.rnn.weight_hh_l0", "encoder.rnn.bias_ih_l0", "encoder.rnn.bias_hh_l0"]
    assert groups[3]["names"] == ["embedding.embedding.weight"]

    recipe = load_recipe(_classifier(tmp_path, lm_run, max_steps=4, **settings))
    task, calls = TASKS["classification"], [0]

    def loss(self, model, batch, carry):  # a real SIGINT while step 3 runs
        calls[0] += 1
        if calls[0] == 3:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, model, batch, carry)

    original = task.loss
    with monkeypatch.context() as patch:
        patch.setattr(task, "loss", loss)
        with pytest.raises(TrainingInterrupted):
            train(recipe, quiet=True)
    resumed = train(recipe, resume=True, quiet=True)
    assert resumed.steps == 4
    torch.testing.assert_close(_weights(resumed.run_dir), _weights(straight.run_dir), rtol=0, atol=0)
