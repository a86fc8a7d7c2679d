"""``train.select_on``: the validation metric that picks ``best/`` and drives early stopping
and the plateau schedule -- ``auto`` (each task's own), or a name the task reports, checked
when the recipe loads; higher or lower is better as the metric is; and
``macro_f1_except_o``, the plain-tag macro F1 without ``O``."""

from __future__ import annotations

import gzip
import json
from types import SimpleNamespace

import pytest
import yaml
from click.testing import CliRunner

import seqkit
from seqkit.cli import main
from seqkit.config import load_recipe
from seqkit.errors import RecipeError
from seqkit.metrics import tag_scores
from seqkit.recipe_rules import selectable_metrics, selected_metric
from seqkit.tasks import TASKS
from seqkit.train import check_selected_metric

from helpers import ROOT, TINY_TAGGER

PUNCTUATION = ROOT / "data" / "punctuation"


def test_macro_f1_except_o_averages_the_per_tag_f1_of_every_tag_but_o():
    gold = [["O", "O", "COMMA", "PERIOD"], ["O", "QUESTION"]]
    predicted = [["O", "COMMA", "COMMA", "O"], ["O", "O"]]
    scores = tag_scores(gold, predicted, [[False] * 4, [False] * 2])
    per_tag = scores["per_tag"]
    assert per_tag["COMMA"]["f1"] == pytest.approx(2 / 3) and per_tag["PERIOD"]["f1"] == 0 and per_tag["QUESTION"]["f1"] == 0
    assert scores["macro_f1_except_o"] == pytest.approx((2 / 3 + 0 + 0) / 3)
    assert scores["macro_f1"] == pytest.approx((per_tag["O"]["f1"] + 2 / 3) / 4)
    no_o = tag_scores([["DT", "NN"]], [["DT", "VB"]], [[False, False]])  # no O: the same as macro_f1
    assert no_o["macro_f1_except_o"] == no_o["macro_f1"]
    assert tag_scores([["O"]], [["O"]], [[False]])["macro_f1_except_o"] == 0.0  # no other tag at all


def _recipe(tmp_path, task: str, **sections) -> str:
    recipe = {"task": task, "data": {"train": "train.txt", "valid": "valid.txt"}, "train": {"epochs": 1}}
    for name, values in sections.items():
        recipe[name] = {**recipe.get(name, {}), **values}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    return str(path)


def test_auto_is_the_default_and_each_tasks_own_metric(tmp_path):
    recipe = load_recipe(_recipe(tmp_path, "language_model"), check_files=False)
    assert recipe.train.select_on == "auto" and selected_metric(recipe) == ("perplexity", False)
    for task in ("language_model", "classification", "regression", "generation", "seq2seq"):
        assert selectable_metrics(SimpleNamespace(task=task))[0] == TASKS[task].metric
    plain = SimpleNamespace(task="tagging", data=SimpleNamespace(scheme="none"), train=SimpleNamespace(select_on="auto"))
    entity = SimpleNamespace(task="tagging", data=SimpleNamespace(scheme="bio"), train=SimpleNamespace(select_on="auto"))
    assert selected_metric(plain) == ("accuracy", True) and selected_metric(entity) == ("f1", True)


@pytest.mark.parametrize("task, name, higher", [
    ("language_model", "loss", False), ("language_model", "perplexity", False), ("classification", "accuracy", True),
    ("classification", "loss", False), ("regression", "rmse", False), ("seq2seq", "per", False),
])  # fmt: skip
def test_higher_is_better_follows_the_metric(tmp_path, task, name, higher):
    recipe = load_recipe(_recipe(tmp_path, task, train={"select_on": name}), check_files=False)
    assert selected_metric(recipe) == (name, higher)


def test_a_name_the_task_does_not_report_is_one_line_naming_the_key_and_the_names_allowed(tmp_path):
    path = _recipe(tmp_path, "tagging", data={"scheme": "none"}, tokenizer={"kind": "word"}, train={"select_on": "f1"})
    with pytest.raises(RecipeError) as raised:
        load_recipe(path, check_files=False)
    assert len(raised.value.problems) == 1
    line = raised.value.problems[0]
    assert "train.select_on" in line and "'f1'" in line
    assert "accuracy, macro_f1, macro_f1_except_o, unseen_accuracy" in line
    entity = _recipe(tmp_path, "tagging", tokenizer={"kind": "word"}, train={"select_on": "macro_f1_except_o"})
    with pytest.raises(RecipeError, match=r"train\.select_on: 'macro_f1_except_o' .*f1, precision, recall, accuracy"):
        load_recipe(entity, check_files=False)


def test_the_cli_names_a_bad_select_on_in_one_line_and_trains_nothing(tiny_recipe):
    result = CliRunner().invoke(main, ["train", str(tiny_recipe), "--set", "train.select_on=accuracy"])
    assert result.exit_code != 0
    lines = [line for line in result.output.splitlines() if "select_on" in line]
    assert len(lines) == 1 and "'accuracy'" in lines[0] and "perplexity, loss, perplexity_no_unk" in lines[0], result.output
    assert not (tiny_recipe.parent / "runs").exists() or not any((tiny_recipe.parent / "runs").rglob("metrics.jsonl"))


def test_a_metric_the_evaluation_lacks_stops_at_the_first_evaluation():
    task = SimpleNamespace(metric="macro_f1_except_o")
    check_selected_metric({"accuracy": 0.9, "macro_f1_except_o": 0.4}, task, "macro_f1_except_o")
    with pytest.raises(RecipeError, match=r"train\.select_on: 'macro_f1_except_o' is not among .*\(accuracy\)"):
        check_selected_metric({"accuracy": 0.9, "per_tag": {}}, task, "macro_f1_except_o")


def _first_windows(name: str, count: int) -> str:
    with gzip.open(PUNCTUATION / name, "rt", encoding="utf-8") as handle:
        return "\n\n".join(handle.read().split("\n\n")[:count]).strip("\n") + "\n"


def test_select_on_picks_best_by_that_metric(tmp_path):
    """A tiny punctuation tagger selected on the marks' macro F1: best/ is the evaluation
    where that number is highest (the first such), whatever token accuracy says."""
    (tmp_path / "train.conll").write_text(_first_windows("train.conll.gz", 200), encoding="utf-8")
    (tmp_path / "valid.conll").write_text(_first_windows("valid.conll.gz", 30), encoding="utf-8")
    recipe = {**TINY_TAGGER, "output_dir": str(tmp_path / "run"),
              "data": {"train": str(tmp_path / "train.conll"), "valid": str(tmp_path / "valid.conll"), "scheme": "none"},
              "tokenizer": {"kind": "word", "split": "whitespace", "min_frequency": 2}}  # fmt: skip
    recipe["model"] = {**recipe["model"], "crf": False, "char_features": "none"}
    recipe["train"] = {**recipe["train"], "epochs": 4, "batch_size": 16, "eval_every": 5, "select_on": "macro_f1_except_o",
                       "class_weights": {"COMMA": 2, "PERIOD": 2, "QUESTION": 6}}  # fmt: skip
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False), encoding="utf-8")
    result = CliRunner().invoke(main, ["train", str(path)])
    assert result.exit_code == 0, result.output
    assert "(select on macro_f1_except_o " in result.output  # the eval line says what picks best/
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evaluations = [record for record in records if record["split"] == "valid"]
    assert len(evaluations) >= 4 and all("macro_f1_except_o" in record for record in evaluations)
    best = max(evaluations, key=lambda record: record["macro_f1_except_o"])  # the first of equals, as training keeps
    tagger = seqkit.load(tmp_path / "run" / "best", device="cpu")
    by_accuracy = max(evaluations, key=lambda record: record["accuracy"])
    assert by_accuracy["step"] != best["step"]  # so the test tells the two apart (here: accuracy peaks before the marks do)
    assert tagger.info["step"] == best["step"], [(r["step"], r["accuracy"], r["macro_f1_except_o"]) for r in evaluations]
    assert [record["best"] for record in evaluations] == [
        record["macro_f1_except_o"] > max([0.0] + [r["macro_f1_except_o"] for r in evaluations[:i]]) or i == 0
        for i, record in enumerate(evaluations)
    ]


def test_a_lower_is_better_metric_keeps_the_lowest(tiny_recipe):
    from seqkit.train import train

    result = train(load_recipe(tiny_recipe, ["train.select_on=loss", "train.eval_every=7", "train.schedule=plateau"]), quiet=True)
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    evaluations = [record for record in records if record["split"] == "valid"]
    assert len(evaluations) >= 2
    best = min(evaluations, key=lambda record: record["loss"])
    assert result.best_metrics["loss"] == best["loss"]
    assert [record["step"] for record in evaluations if record["best"]][-1] == best["step"]
