"""Pretrained word vectors in, a model's word vectors out: the two round-trip."""

import pytest
import torch
from click.testing import CliRunner

import seqkit
from seqkit.cli import main
from seqkit.config import load_recipe
from seqkit.errors import DataError, RecipeError
from seqkit.train import train
from seqkit.vectors import read_vectors


def test_export_then_import_round_trips_and_freezing_keeps_them(trained_classifier, classifier_recipe, tmp_path):
    best = trained_classifier.run_dir / "best"
    vectors = tmp_path / "vectors.txt"
    result = CliRunner().invoke(main, ["export-embeddings", str(best), str(vectors)])
    assert result.exit_code == 0, result.output
    source = seqkit.load(best, device="cpu")
    header = vectors.read_text().splitlines()[0].split()
    assert int(header[1]) == 24 and int(header[0]) == source.tokenizer.get_vocab_size() - 3  # special tokens left out

    run = train(load_recipe(classifier_recipe, [f"model.embeddings.pretrained={vectors}", "model.embeddings.freeze=true",
                                                "train.epochs=2", f"output_dir={tmp_path / 'frozen'}"]), quiet=True)  # fmt: skip
    loaded = seqkit.load(run.run_dir / "best", device="cpu")
    vocab = source.tokenizer.get_vocab()
    same = [word for word in loaded.tokenizer.get_vocab() if word in vocab and not word.startswith("<")]
    assert len(same) > 100
    for word in same:
        expected = source.model.embedding.embedding.weight[vocab[word]]
        found = loaded.model.embedding.embedding.weight[loaded.tokenizer.token_to_id(word)]
        torch.testing.assert_close(found, expected, atol=1e-5, rtol=1e-5)  # copied, then never trained


def test_coverage_uses_a_lowercase_fallback_and_is_reported(classifier_recipe, tmp_path, capsys):
    vectors = tmp_path / "glove.txt"  # no header line, as GloVe writes it
    vectors.write_text("THE " + " ".join(["0.5"] * 24) + "\nspam " + " ".join(["-1"] * 24) + "\n")
    run = train(load_recipe(classifier_recipe, [f"model.embeddings.pretrained={vectors}", "train.max_steps=1"]), quiet=False)
    out = capsys.readouterr().out
    assert "vectors for 2 of" in out and "1 by their lowercase form" in out
    model = seqkit.load(run.run_dir / "best", device="cpu")
    assert model.tokenizer.token_to_id("the") is not None


def test_bad_vector_files_name_the_line(tmp_path, classifier_recipe):
    path = tmp_path / "bad.txt"
    path.write_text("2 3\ncat 1 2 3\ndog 1 2\n")
    with pytest.raises(DataError, match=r"bad.txt:3: expected a word and 3 numbers"):
        read_vectors(path, 3)
    with pytest.raises(DataError, match=r"bad.txt:1: holds 3-dimensional vectors, but model.embedding_dim is 24"):
        read_vectors(path, 24)
    path.write_text("cat 1 two 3\n")
    with pytest.raises(DataError, match=r"bad.txt:1: the values after the word must be numbers"):
        read_vectors(path, 3)
    path.write_text("a 1 2\na 3 4\n")
    assert list(read_vectors(path, 2)["a"]) == [1.0, 2.0]  # the first occurrence of a word wins
    with pytest.raises(RecipeError, match="model.embeddings.pretrained: file not found"):
        load_recipe(classifier_recipe, ["model.embeddings.pretrained=nowhere.txt"])
    with pytest.raises(RecipeError, match="model.embeddings.freeze: freezes pretrained vectors"):
        load_recipe(classifier_recipe, ["model.embeddings.freeze=true"])
