"""G2P training settings: label smoothing for seq2seq (``train.label_smoothing``) and the
training files with every listed pronunciation (data/cmudict/*-all.tsv.gz)."""

import gzip
import hashlib

import pytest
import torch
import torch.nn.functional as F
from helpers import CMUDICT, short_pairs, write_seq2seq_recipe

from seqkit.config import load_recipe
from seqkit.errors import RecipeError
from seqkit.model import build_model
from seqkit.tasks import Seq2SeqTask


def _task_model_batch(tmp_path, **train):
    tmp_path.mkdir()
    recipe = load_recipe(write_seq2seq_recipe(tmp_path, short_pairs(16), **train))
    task = Seq2SeqTask(recipe, Seq2SeqTask.make_tokenizer(recipe))
    torch.manual_seed(0)
    model = build_model("seq2seq", recipe.model, task.tokenizer.get_vocab_size(), task.source_pad, task.labels)
    return task, model, task._batch("train", range(16))


def test_label_smoothing_is_the_smoothed_cross_entropy_in_training_only(tmp_path):
    task, model, batch = _task_model_batch(tmp_path / "smooth", label_smoothing=0.1)
    plain_task, _, _ = _task_model_batch(tmp_path / "plain")
    loss, count, _ = task.loss(model, batch, None)
    plain, plain_count, _ = plain_task.loss(model, batch, None)
    logits = model(batch.sources, batch.lengths, batch.inputs).flatten(0, 1)
    expected = F.cross_entropy(logits, batch.targets.flatten(), ignore_index=task.target_ids.pad, label_smoothing=0.1)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(plain, F.cross_entropy(logits, batch.targets.flatten(), ignore_index=task.target_ids.pad))
    assert count == plain_count and abs(loss.item() - plain.item()) > 1e-4
    # validation reports the plain loss whatever the training loss is
    assert task.evaluate(model)["loss"] == pytest.approx(plain_task.evaluate(model)["loss"])


def test_label_smoothing_is_refused_outside_seq2seq_and_out_of_range(tmp_path):
    recipe = tmp_path / "lm.yaml"
    recipe.write_text("task: language_model\ntrain:\n  label_smoothing: 0.1\n", encoding="utf-8")
    with pytest.raises(RecipeError, match=r"train\.label_smoothing.*only seq2seq uses it"):
        load_recipe(recipe, check_files=False)
    with pytest.raises(RecipeError, match=r"train\.label_smoothing"):
        load_recipe(write_seq2seq_recipe(tmp_path, short_pairs(4), label_smoothing=1.0))


def test_train_all_adds_only_the_training_words_alternatives():
    """data/cmudict/train-all.tsv.gz: train.tsv.gz's lines in order, each followed by its
    word's alternatives; no dev or test word (md5 buckets 0 and 1) is in it."""
    train = gzip.open(CMUDICT / "train.tsv.gz", "rt", encoding="utf-8").read().splitlines()
    every = gzip.open(CMUDICT / "train-all.tsv.gz", "rt", encoding="utf-8").read().splitlines()
    assert len(train) == 112_652 and len(every) == 120_583
    firsts, seen = [], set()
    for line in every:
        word = line.split("\t")[0]
        if word not in seen:
            seen.add(word)
            firsts.append(line)
    assert firsts == train and len(set(every)) == len(every)  # the primary first, no line twice
    assert all(int(hashlib.md5(word.encode("utf-8")).hexdigest(), 16) % 20 >= 2 for word in seen)


def test_dev_all_lists_the_dev_words_with_their_alternatives():
    dev = gzip.open(CMUDICT / "dev.tsv.gz", "rt", encoding="utf-8").read().splitlines()
    every = gzip.open(CMUDICT / "dev-all.tsv.gz", "rt", encoding="utf-8").read().splitlines()
    words = [line.split("\t")[0] for line in every]
    assert len(every) == 6_574 and list(dict.fromkeys(words)) == [line.split("\t")[0] for line in dev]
    assert set(dev) <= set(every) and all(int(hashlib.md5(word.encode("utf-8")).hexdigest(), 16) % 20 == 1 for word in words)

