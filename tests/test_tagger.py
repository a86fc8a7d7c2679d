"""Tagging end to end: train, overfit, tag raw and pre-tokenized text with exact offsets,
batch in input order, reload in a fresh process, and the predict / eval commands."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import seqkit
from seqkit.cli import main
from seqkit.config import load_recipe
from seqkit.labels import tag_problem
from seqkit.train import train

from helpers import run_python

# the first training tweet, as words joined by spaces: the overfitted tagger knows it
TWEET = "@paulwalk It 's the view from where I 'm living for two weeks . Empire State Building = ESB . Pretty bad storm here last evening ."


def test_tagger_overfits_a_small_real_slice(trained_tagger):
    assert trained_tagger.best_metrics["f1"] == 1.0
    assert trained_tagger.best_metrics["entities"] > 20
    lines = (trained_tagger.run_dir / "metrics.jsonl").read_text().splitlines()
    records = [record for record in map(json.loads, lines) if record["split"] == "valid"]
    assert records[0]["f1"] < 1.0 and "per_type" in records[-1] and "precision" in records[-1]
    assert (trained_tagger.run_dir / "best" / "labels.json").is_file()


def test_tag_text_gives_tokens_tags_and_spans_with_offsets(trained_tagger):
    tagger = seqkit.Tagger.from_pretrained(trained_tagger.run_dir / "best", device="cpu")
    text = TWEET
    doc = tagger.tag(text)
    assert doc.tokens[:3] == ["@paulwalk", "It", "'s"]
    assert len(doc.tags) == len(doc.tokens)
    assert ("Empire State Building", "facility") in [(span.text, span.label) for span in doc.spans]
    for span in doc.spans:
        start, end, label, span_text = span
        assert text[start:end] == span_text


@pytest.mark.parametrize(
    "text",
    [
        "😀🐋 Empire State Building = ESB 😀 .",
        "東京 Empire State Building 大阪",
        "  Empire   State\tBuilding \r\n = ESB\r\n",
        "\u200bEmpire State Building\u200b",
        "",
        "   \t ",
    ],
)
def test_offsets_index_the_original_string(trained_tagger, text):
    doc = seqkit.load(trained_tagger.run_dir / "best", device="cpu").tag(text)
    assert doc.text == text
    for token, (start, end) in zip(doc.tokens, doc.offsets):
        assert text[start:end] == token
    for span in doc.spans:
        assert text[span.start : span.end] == span.text
    if not text.strip():
        assert doc.tokens == [] and doc.tags == [] and doc.spans == []


def test_batched_tagging_keeps_input_order_and_equals_one_by_one(trained_tagger):
    tagger = seqkit.load(trained_tagger.run_dir / "best", device="cpu")
    texts = (trained_tagger.run_dir.parent.parent / "data" / "train.conll").read_text().split("\n\n")
    texts = [" ".join(row.split("\t")[0] for row in sentence.splitlines()) for sentence in texts][:25]
    texts += ["", "Bob", "Empire State Building " * 20]
    batched = tagger.tag(texts, batch_size=4)
    assert [doc.text for doc in batched] == texts
    assert [doc.tags for doc in batched] == [tagger.tag(text).tags for text in texts]


def test_pre_tokenized_input_is_not_split_again(trained_tagger):
    tagger = seqkit.load(trained_tagger.run_dir / "best", device="cpu")
    [doc] = tagger.tag([["http://t.co/x!!", "don't", "Empire", "State", "Building"]])
    assert doc.tokens == ["http://t.co/x!!", "don't", "Empire", "State", "Building"]
    assert doc.text == "http://t.co/x!! don't Empire State Building"
    assert all(doc.text[s:e] == token for token, (s, e) in zip(doc.tokens, doc.offsets))
    with pytest.raises(TypeError, match="item 1 is int"):
        tagger.tag(["fine", 3])


def test_fresh_process_gives_the_same_tags(trained_tagger, tmp_path):
    best = trained_tagger.run_dir / "best"
    texts = ["Empire State Building = ESB .", "Pretty bad storm here last evening .", "@paulwalk It 's the view"]
    expected = [doc.tags for doc in seqkit.load(best, device="cpu").tag(texts)]
    code = f"import json, seqkit\nprint(json.dumps([d.tags for d in seqkit.Tagger.from_pretrained({str(best)!r}).tag({texts!r})]))"
    assert json.loads(run_python(code, tmp_path)) == expected


@pytest.mark.parametrize("crf, char_features", [(False, "none"), (True, "lstm"), (False, "cnn")])
def test_heads_and_character_features_train_and_obey_the_scheme(tagger_recipe, crf, char_features):
    overrides = [f"model.crf={str(crf).lower()}", f"model.char_features={char_features}", "train.epochs=3", "model.tag_scheme=bioes"]
    result = train(load_recipe(tagger_recipe, [*overrides, f"output_dir=runs/{crf}-{char_features}"]), quiet=True)
    tagger = seqkit.load(result.run_dir / "best", device="cpu")
    assert tagger.labels.scheme == "bioes" and tagger.labels.data_scheme == "bio"
    # the saved model scores exactly what training reported for it (no stale state)
    assert tagger.evaluate("data/dev.conll")["f1"] == result.best_metrics["f1"]
    assert (tagger.model.embedding.char_features is None) == (char_features == "none")
    for doc in tagger.tag(["Empire State Building = ESB . Pretty bad storm", "@bob I 'm at Madison Square Garden"]):
        # tags come back in the data's scheme, and never break it
        assert all(tag_problem(before, after, "bio") is None for before, after in zip(["O", *doc.tags], doc.tags))


def test_predict_and_eval_commands(trained_tagger, tmp_path):
    best = str(trained_tagger.run_dir / "best")
    runner = CliRunner()
    texts = f"{TWEET}\n\n😀 東京  Empire State Building\n"
    as_jsonl = runner.invoke(main, ["predict", best, "-", "--format", "jsonl", "--batch-size", "2"], input=texts)
    assert as_jsonl.exit_code == 0, as_jsonl.stderr
    docs = [json.loads(line) for line in as_jsonl.output.splitlines()]
    assert [doc["text"] for doc in docs] == texts.splitlines()
    assert any(span["text"] == "Empire State Building" for span in docs[0]["spans"])

    (tmp_path / "input.txt").write_text(texts, encoding="utf-8")
    as_text = runner.invoke(main, ["predict", best, str(tmp_path / "input.txt")])
    assert "weeks . [Empire State Building](facility) = [ESB](facility) ." in as_text.output.splitlines()[0]
    as_conll = runner.invoke(main, ["predict", best, str(tmp_path / "input.txt"), "--format", "conll"])
    assert "\nEmpire\tB-facility\nState\tI-facility\nBuilding\tI-facility\n" in as_conll.output
    assert as_conll.output.count("\n\n") == 2  # a blank line after each text (the empty one too)

    (tmp_path / "input.jsonl").write_text('{"tokens": ["Empire", "State", "Building"]}\n{"text": 3}\n', encoding="utf-8")
    bad = runner.invoke(main, ["predict", best, str(tmp_path / "input.jsonl")])
    assert bad.exit_code == 2 and "input.jsonl:2:" in bad.stderr

    dev = str(trained_tagger.run_dir.parent.parent / "data" / "dev.conll")
    evaluated = runner.invoke(main, ["eval", best, "--data", dev])
    assert evaluated.exit_code == 0, evaluated.stderr
    assert "micro" in evaluated.output and "facility" in evaluated.output and "1.0000" in evaluated.output
    as_json = json.loads(runner.invoke(main, ["eval", best, "--data", dev, "--json"]).output)
    assert as_json["f1"] == 1.0 and as_json["per_type"]["facility"]["entities"] >= 1

    info = runner.invoke(main, ["info", best])
    assert "labels" in info.output and "facility" in info.output and "CRF" in info.output

    lm_only = runner.invoke(main, ["generate", best])
    assert lm_only.exit_code == 2 and "generate needs a language model" in lm_only.output + lm_only.stderr


def test_tag_throughput_benchmark_runs_quick(trained_tagger):
    """benchmarks/tag_throughput.py --quick: seqkit on PyTorch with Numba's and with NumPy's
    CRF loops, 48 sentences, one round (the full benchmark, with ONNX and Flair beside it,
    is run by hand)."""
    import re
    import subprocess
    import sys

    from helpers import ROOT

    command = [sys.executable, str(ROOT / "benchmarks" / "tag_throughput.py"), "--checkpoint", str(trained_tagger.run_dir / "best"), "--quick",
               "--threads", "1", "--numpy-loops"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "| one sentence per call | " in done.stdout and "torch: dev entity F1" in done.stdout
    assert re.search(r"the model's own call alone .*: torch \d+\.\d\d \+ -?\d+\.\d\d; torch-numpy \d+\.\d\d \+ ", done.stdout), done.stdout
    assert re.search(r"torch-numpy gives torch's tags on (\d+) of \1 dev tweets", done.stdout), done.stdout
