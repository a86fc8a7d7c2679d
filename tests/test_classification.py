"""Text classification (many-to-one): data, training, the Classifier API and the CLI."""

import gzip
import json

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

import seqkit
from helpers import SPAM, first_records, run_python, write_jsonl
from seqkit.cli import main
from seqkit.config import load_recipe
from seqkit.data import holdout_split, read_examples, truncate
from seqkit.errors import DataError, RecipeError
from seqkit.metrics import classification_scores
from seqkit.tasks import ClassificationTask
from seqkit.train import train

SPAMMY = "WIN a FREE cruise, click here"


def test_classifier_overfits_a_small_real_slice(trained_classifier):
    best = trained_classifier.best_metrics
    assert best["accuracy"] == 1.0 and best["macro_f1"] == 1.0 and best["examples"] == 40
    assert set(best["per_class"]) == {"ham", "spam"}
    records = [json.loads(line) for line in (trained_classifier.run_dir / "metrics.jsonl").read_text().splitlines()]
    valid = [record for record in records if record["split"] == "valid"]
    train_logs = [record for record in records if record["split"] == "train"]
    assert valid[0]["accuracy"] < 1.0 and train_logs[-1]["loss"] < train_logs[0]["loss"]
    labels = json.loads((trained_classifier.run_dir / "best" / "labels.json").read_text())
    assert labels["labels"] == ["ham", "spam"]


def test_predict_one_and_many_in_input_order(trained_classifier):
    clf = seqkit.Classifier.from_pretrained(trained_classifier.run_dir / "best", device="cpu")
    texts = [record["text"] for record in first_records(SPAM, 6, per="label")]
    one = clf.predict(texts[0])
    assert one.label in ("ham", "spam") and abs(sum(one.probabilities.values()) - 1) < 1e-5
    batched = clf.predict(texts, batch_size=4)
    for text, prediction in zip(texts, batched):
        alone = clf.predict(text)
        assert alone.label == prediction.label
        assert np.allclose(list(alone.probabilities.values()), list(prediction.probabilities.values()), atol=1e-5)
    gold = [record["label"] for record in first_records(SPAM, 6, per="label")]
    assert [p.label for p in batched] == gold  # the messages it was trained on
    assert seqkit.load(trained_classifier.run_dir / "best", device="cpu").predict([SPAMMY, ""])[1].label in ("ham", "spam")


def test_attention_weights_name_the_tokens_read(trained_classifier):
    clf = seqkit.Classifier.from_pretrained(trained_classifier.run_dir / "best", device="cpu")
    text = "Re: lunch  at noon?  " + "word " * 100  # longer than max_length (48): head and tail kept
    prediction = clf.predict(text, return_attention=True)
    tokens = [token for token, _ in prediction.attention]
    weights = np.array([weight for _, weight in prediction.attention])
    assert len(tokens) == 48 and tokens[:3] == ["Re", ":", "lunch"] and tokens[-1] == "word"
    assert abs(weights.sum() - 1) < 1e-5 and (weights > 0).all()
    assert clf.predict([text], return_attention=True)[0].attention == prediction.attention


def test_from_pretrained_in_a_fresh_process_gives_the_same_predictions(trained_classifier):
    best = trained_classifier.run_dir / "best"
    clf = seqkit.Classifier.from_pretrained(best, device="cpu")
    texts = [SPAMMY, "Meeting moved to Tuesday, see agenda attached", "über 日本 🙂"]
    here = [[p.label, p.probabilities["spam"]] for p in clf.predict(texts)]
    code = f"import json, seqkit; c = seqkit.Classifier.from_pretrained({str(best)!r}, device='cpu'); print(json.dumps([[p.label, p.probabilities['spam']] for p in c.predict({texts!r})]))"
    there = json.loads(run_python(code, best))
    assert [label for label, _ in there] == [label for label, _ in here]
    assert np.allclose([p for _, p in there], [p for _, p in here], atol=1e-6)


def test_predict_rejects_non_strings_and_attention_without_attention_pooling(trained_classifier):
    clf = seqkit.Classifier.from_pretrained(trained_classifier.run_dir / "best", device="cpu")
    with pytest.raises(TypeError, match="input 1 is NoneType"):
        clf.predict(["fine", None])
    with pytest.raises(TypeError):
        clf.predict(42)
    with pytest.raises(TypeError, match="holds a classification checkpoint"):
        seqkit.Tagger.from_pretrained(trained_classifier.run_dir / "best")


def test_cli_predict_and_eval(trained_classifier, tmp_path):
    best = str(trained_classifier.run_dir / "best")
    runner = CliRunner()
    result = runner.invoke(main, ["predict", best, "-"], input=f"{SPAMMY}\nhello\n")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) == 2 and lines[0].split("\t")[0] in ("ham", "spam") and lines[0].endswith(SPAMMY)
    path = write_jsonl(tmp_path / "in.jsonl", [{"text": SPAMMY}, {"text": "hello"}])
    result = runner.invoke(main, ["predict", best, str(path), "--format", "jsonl"])
    records = [json.loads(line) for line in result.output.splitlines()]
    assert [r["text"] for r in records] == [SPAMMY, "hello"] and set(records[0]["probabilities"]) == {"ham", "spam"}
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"txt": "no"}\n')
    result = runner.invoke(main, ["predict", best, str(tmp_path / "bad.jsonl")])
    assert result.exit_code == 2 and "bad.jsonl:2" in result.output and "Traceback" not in result.output
    valid = trained_classifier.run_dir.parent.parent / "data" / "valid.jsonl"
    result = runner.invoke(main, ["eval", best, "--data", str(valid)])
    assert result.exit_code == 0, result.output
    assert "accuracy 1.0000" in result.output and "spam" in result.output.splitlines()[-1]
    result = runner.invoke(main, ["eval", best, "--data", str(valid), "--json"])
    assert json.loads(result.output)["macro_f1"] == 1.0


def test_an_unknown_class_in_eval_data_names_file_and_line(trained_classifier, tmp_path):
    clf = seqkit.Classifier.from_pretrained(trained_classifier.run_dir / "best", device="cpu")
    path = write_jsonl(tmp_path / "eval.jsonl", [{"text": "a", "label": "spam"}, {"text": "b", "label": "phishing"}])
    with pytest.raises(DataError, match=r"eval.jsonl:2: class 'phishing' never occurs in the training data \(classes: ham, spam\)"):
        clf.evaluate(path)


@pytest.mark.parametrize(
    "line, message",
    [
        ('{"text": "", "label": "ham"}', "'text' is empty"),
        ('{"text": "   ", "label": "ham"}', "'text' is empty"),
        ('{"text": "hi", "label": ""}', "'label' must be a class name"),
        ('{"text": "hi", "label": null}', "'label' must be a class name"),
        ('{"text": "hi", "label": ["ham"]}', "'label' must be a class name"),
        ('{"text": "hi"}', "no 'label' field"),
        ('{"body": "hi", "label": "ham"}', "no 'text' field"),
        ('{"text": 3, "label": "ham"}', "'text' must be a string"),
        ('{"text": "hi", "label": "ham"', "not valid JSON"),
        ('["hi", "ham"]', "expected a JSON object"),
    ],
)
def test_bad_examples_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "data.jsonl"
    path.write_text('{"text": "fine", "label": "spam"}\n\n' + line + "\n", encoding="utf-8")
    with pytest.raises(DataError) as error:
        read_examples(path)
    assert str(error.value).startswith(f"{path}:3: ") and message in str(error.value)


def test_reading_gzip_and_integer_labels(tmp_path):
    path = tmp_path / "data.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write('{"text": "good", "label": 1}\n{"text": "bad", "label": 0}\n')
    examples = read_examples(path)
    assert examples.inputs == ["good", "bad"] and examples.targets == ["1", "0"] and examples.lines == [1, 2]
    (tmp_path / "latin1.jsonl").write_bytes('{"text": "caf\u00e9", "label": "a"}\n'.encode("latin-1"))
    with pytest.raises(DataError, match="latin1.jsonl:1: not UTF-8"):
        read_examples(tmp_path / "latin1.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="holds no examples"):
        read_examples(tmp_path / "empty.jsonl")


def test_holdout_is_stable_keeps_groups_together_and_nests_in_subsets():
    keys = [f"address {i // 5}" for i in range(2000)]  # 400 groups of 5
    splits = holdout_split(keys, valid=0.1, test=0.1)
    assert sorted(sum(splits.values(), [])) == list(range(2000))
    for name in ("valid", "test"):
        assert 0.05 < len(splits[name]) / 2000 < 0.15
    group_of = {keys[i]: name for name, indices in splits.items() for i in indices}
    assert all(group_of[keys[i]] == name for name, indices in splits.items() for i in indices)
    assert holdout_split(keys, 0.1, 0.1) == splits
    subset = keys[::3]  # a subset of the file holds out a subset of the same examples
    sub_splits = holdout_split(subset, 0.1, 0.1)
    assert {subset[i] for i in sub_splits["test"]} <= {keys[i] for i in splits["test"]}


def test_truncation_sides():
    ids = list(range(10))
    assert truncate(ids, 4, "head") == [0, 1, 2, 3]
    assert truncate(ids, 4, "tail") == [6, 7, 8, 9]
    assert truncate(ids, 5, "head+tail") == [0, 1, 2, 8, 9]
    assert truncate(ids, None) == ids and truncate(ids, 20, "tail") == ids


def test_recipe_holdout_split_and_truncation_are_reported(classifier_recipe, tmp_path):
    records = first_records(SPAM, 30, per="label")
    write_jsonl(tmp_path / "data" / "all.jsonl", records)
    recipe = load_recipe(classifier_recipe, [f"data.train={tmp_path / 'data' / 'all.jsonl'}", "data.valid=null",
                                             "data.holdout={by: id, valid: 0.2, test: 0.2}"])  # fmt: skip
    from seqkit.tasks.sequence import read_splits

    splits = read_splits(recipe, "class")
    ids = {name: {records[line - 1]["id"] for line in examples.lines} for name, examples in splits.items()}
    assert sum(len(examples) for examples in splits.values()) == 60
    assert not (ids["train"] & ids["valid"]) and not (ids["train"] & ids["test"]) and not (ids["valid"] & ids["test"])
    task = ClassificationTask(recipe, ClassificationTask.make_tokenizer(recipe))
    summary = task.summary()
    assert "truncated to 48" in summary and "held out of" in summary and "by id" in summary


def test_class_weights(classifier_recipe):
    recipe = load_recipe(classifier_recipe, ["train.class_weights=balanced"])
    task = ClassificationTask(recipe, ClassificationTask.make_tokenizer(recipe))
    assert task.class_weights.tolist() == [1.0, 1.0]  # 20 and 20
    recipe = load_recipe(classifier_recipe, ["train.class_weights={spam: 3}"])
    assert ClassificationTask(recipe, ClassificationTask.make_tokenizer(recipe)).class_weights.tolist() == [1.0, 3.0]
    recipe = load_recipe(classifier_recipe, ["train.class_weights={spma: 3}"])
    with pytest.raises(RecipeError, match="unknown class 'spma'"):
        ClassificationTask(recipe, ClassificationTask.make_tokenizer(recipe))


def test_classification_scores_match_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    generator = np.random.default_rng(0)
    gold, predicted = generator.integers(0, 3, 200).tolist(), generator.integers(0, 3, 200).tolist()
    predicted = [0 if p == 2 else p for p in predicted]  # class 2 never predicted
    scores = classification_scores(gold, predicted, ["a", "b", "c"])
    assert scores["accuracy"] == pytest.approx(metrics.accuracy_score(gold, predicted))
    assert scores["macro_f1"] == pytest.approx(metrics.f1_score(gold, predicted, average="macro", labels=[0, 1, 2], zero_division=0))
    precision = metrics.precision_score(gold, predicted, average=None, labels=[0, 1, 2], zero_division=0)
    assert [scores["per_class"][name]["precision"] for name in "abc"] == pytest.approx(precision.tolist())


def test_spam_recipe_is_valid_and_holds_out_by_id():
    recipe = load_recipe("recipes/spam.yaml")
    assert recipe.task == "classification" and recipe.data.holdout.by == "id" and recipe.model.pooling == "attention"
    assert yaml.safe_load(open("recipes/spam.yaml"))["data"]["train"] == "data/spam/spam-subset.jsonl.gz"


def test_train_and_resume_on_held_out_data(classifier_recipe, tmp_path):
    records = first_records(SPAM, 15, per="label")
    write_jsonl(tmp_path / "data" / "all.jsonl", records)
    overrides = [f"data.train={tmp_path / 'data' / 'all.jsonl'}", "data.valid=null", "data.holdout={by: id, valid: 0.2, test: 0.2}", "train.epochs=2"]
    result = train(load_recipe(classifier_recipe, overrides), quiet=True)
    assert result.test_metrics is not None and result.test_metrics["examples"] > 0
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["split"] == "test"


def test_a_single_class_is_refused(tmp_path):
    path = write_jsonl(tmp_path / "one.jsonl", [{"text": "a", "label": "ham"}, {"text": "b", "label": "ham"}])
    recipe = tmp_path / "one.yaml"
    recipe.write_text(yaml.safe_dump({"task": "classification", "output_dir": str(tmp_path / "run"),
                                      "data": {"train": str(path), "valid": str(path)}}))  # fmt: skip
    with pytest.raises(DataError, match="one.jsonl: every training example has the class 'ham'"):
        train(load_recipe(recipe), quiet=True)
