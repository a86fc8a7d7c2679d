"""Recipe loading: defaults, overrides, and one clear line per problem."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from seqkit.cli import main
from seqkit.config import load_recipe, recipe_from_dict
from seqkit.errors import RecipeError

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("recipe", sorted((ROOT / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_validates(recipe, monkeypatch):
    monkeypatch.chdir(ROOT)  # recipes name data paths relative to the project root
    source = (yaml.safe_load(recipe.read_text(encoding="utf-8")).get("model") or {}).get("init_from")
    if source is not None and not Path(source).exists():  # starts from another recipe's run (lm_spam: lm_pretrain's)
        with pytest.raises(RecipeError) as raised:
            load_recipe(recipe)
        assert [problem.split(": ", 1)[1] for problem in raised.value.problems] == [
            f"model.init_from: not found: {source}; train {ROOT / 'recipes' / 'lm_pretrain.yaml'} first: it writes that run"
        ]
        without = ["model.init_from=null", "model.init_vocabulary=source", "train.freeze_pretrained=0", "train.unfreeze=all"]
        loaded = load_recipe(recipe, without)  # everything else is valid
    else:
        loaded = load_recipe(recipe)
    assert loaded.task


def test_a_missing_init_from_names_the_recipe_that_writes_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "recipes").mkdir()
    (tmp_path / "corpus.txt").write_text("a few words\n", encoding="utf-8")
    base = {"task": "language_model", "data": {"train": "corpus.txt", "valid": "corpus.txt"}}
    (tmp_path / "recipes" / "broken.yaml").write_text("output_dir: [runs/pretrain\n", encoding="utf-8")  # skipped, unreadable
    (tmp_path / "recipes" / "pretrain.yaml").write_text(yaml.safe_dump({**base, "output_dir": "runs/pretrain"}), encoding="utf-8")
    (tmp_path / "recipes" / "finetune.yaml").write_text(yaml.safe_dump({**base, "model": {"init_from": "runs/pretrain/best"}}), encoding="utf-8")
    (tmp_path / "recipes" / "elsewhere.yaml").write_text(yaml.safe_dump({**base, "model": {"init_from": "runs/other/best"}}), encoding="utf-8")
    with pytest.raises(RecipeError, match=r"model\.init_from: not found: runs/pretrain/best; train recipes/pretrain\.yaml first: it writes that run$"):
        load_recipe("recipes/finetune.yaml")
    with pytest.raises(RecipeError, match=r"model\.init_from: not found: runs/other/best \(a checkpoint directory, archive or URL\)$"):
        load_recipe("recipes/elsewhere.yaml")


def test_print_config_shows_every_default(tiny_recipe):
    result = CliRunner().invoke(main, ["train", str(tiny_recipe), "--print-config", "--set", "train.epochs=7"])
    assert result.exit_code == 0, result.output
    printed = yaml.safe_load(result.output)
    assert printed["train"]["epochs"] == 7
    assert printed["train"]["optimizer"] == "adam"  # a default the recipe never wrote
    assert printed["model"]["nonlinearity"] == "tanh"
    assert set(printed) == {"task", "seed", "output_dir", "data", "tokenizer", "target_tokenizer", "model", "train", "generate"}


def test_overrides_are_parsed_as_yaml_scalars(tiny_recipe):
    recipe = load_recipe(tiny_recipe, ["model.encoder=gru", "train.lr=1e-3", "model.bidirectional=false", "train.max_steps=null"])
    assert recipe.model.encoder == "gru"
    assert recipe.train.lr == pytest.approx(0.001)
    assert recipe.train.max_steps is None


def _problems(path: Path, overrides=()) -> list[str]:
    with pytest.raises(RecipeError) as error:
        load_recipe(path, overrides)
    return error.value.problems


def _write(directory: Path, text: str) -> Path:
    path = directory / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_unknown_key_names_line_and_suggests(moby_slice):
    path = _write(moby_slice, "task: language_model\ndata: {train: data/train.txt, valid: data/valid.txt}\nmodel:\n  hiden_size: 12\n")
    assert _problems(path) == [f"{path}:4: model.hiden_size: unknown key (did you mean model.hidden_size?)"]


def test_key_in_the_wrong_section_is_pointed_to_its_home(moby_slice):
    path = _write(moby_slice, "task: language_model\ndata: {train: data/train.txt, valid: data/valid.txt}\ntrain:\n  hidden_size: 12\n")
    assert _problems(path) == [f"{path}:4: train.hidden_size: unknown key (did you mean model.hidden_size?)"]


def test_all_problems_are_reported_at_once(moby_slice):
    path = _write(
        moby_slice,
        "task: language_model\n"
        "data:\n  train: data/missing.txt\n  valid: data/valid.txt\n"
        "model:\n  encoder: lstn\n  hidden_size: -3\n"
        "train:\n  epochs: three\n  batchsize: 4\n",
    )
    problems = _problems(path)
    assert len(problems) == 5, problems
    text = "\n".join(problems)
    assert f"{path}:6: model.encoder: Input should be 'rnn', 'gru' or 'lstm' (did you mean 'lstm'?)" in text
    assert f"{path}:7: model.hidden_size:" in text and "greater than or equal to 1" in text
    assert f"{path}:9: train.epochs:" in text and "'three'" in text
    assert f"{path}:10: train.batchsize: unknown key (did you mean train.batch_size?)" in text
    assert f"{path}:3: data.train: file not found: data/missing.txt" in text


def test_choice_in_the_wrong_case_gets_a_suggestion(tiny_recipe):
    [problem] = _problems(tiny_recipe, ["model.encoder=LSTM"])
    assert problem.endswith("Input should be 'rnn', 'gru' or 'lstm' (did you mean 'lstm'?), got 'LSTM'")


def test_yaml_syntax_error_names_line_and_column(moby_slice):
    path = _write(moby_slice, "task: language_model\nmodel:\n  hidden_size: 12\n   encoder: gru\n")
    [problem] = _problems(path)
    assert problem == f"{path}:4:11: YAML syntax error: mapping values are not allowed here"


def test_yaml_syntax_error_names_where_an_unclosed_construct_opened(moby_slice):
    """The parser trips over an unclosed ``[`` (``{``, quote) lines after it: the message
    starts where it opened, and says where the parser gave up."""
    lines = (ROOT / "recipes" / "lm.yaml").read_text(encoding="utf-8").splitlines()
    at = lines.index("data:                       # paths relative to the working directory") + 2  # the line of data.train
    lines[at - 1] = "  train: [data/train.txt, data/valid.txt"
    path = _write(moby_slice, "\n".join(lines) + "\n")
    assert _problems(path) == [
        f"{path}:{at}:10: YAML syntax error: the flow sequence ('[') opened here is not closed, or lacks a ',' "
        f"(the parser gave up at line {at + 1}, column 8: expected ',' or ']', but got ':')"
    ]
    lines[at - 1] = "  train: {path: data/train.txt"
    assert _problems(_write(moby_slice, "\n".join(lines) + "\n"))[0].startswith(f"{path}:{at}:10: YAML syntax error: the flow mapping ('{{') opened here")
    lines[at - 1] = "  train: 'data/train.txt"
    assert _problems(_write(moby_slice, "\n".join(lines) + "\n")) == [
        f"{path}:{at}:10: YAML syntax error: the quoted string (\"'\") opened here is not closed "
        f"(the parser gave up at line {len(lines) + 1}, column 1: found unexpected end of stream)"
    ]


def test_missing_task_and_data_are_named(moby_slice):
    path = _write(moby_slice, "model:\n  hidden_size: 12\n")
    assert _problems(path) == [
        f"{path}: task: missing (one of language_model, tagging, classification, regression, generation, seq2seq)",
        f"{path}: data.train: missing: the path of the training file",
        f"{path}: data.valid: missing: the path of the validation file",
    ]


def test_problems_from_overrides_name_the_override(tiny_recipe):
    problems = _problems(tiny_recipe, ["model.hiden_size=3", "train.epochs=0", "model.hidden_size.x=1", "nonsense"])
    assert problems == [
        "--set model.hidden_size.x=1: model.hidden_size is not a section",
        "--set nonsense: expected SECTION.KEY=VALUE",
        "--set model.hiden_size=3: model.hiden_size: unknown key (did you mean model.hidden_size?)",
        "--set train.epochs=0: train.epochs: Input should be greater than or equal to 1, got 0",
    ]


def test_rules_across_keys(tiny_recipe):
    problems = _problems(tiny_recipe, ["model.bidirectional=true", "train.epochs=null", "train.device=gpu"])
    assert any("model.bidirectional: a language model predicts the next token" in p for p in problems)
    assert any("train.epochs: set train.epochs or train.max_steps" in p for p in problems)
    assert any("train.device: unknown device 'gpu'" in p for p in problems)


def test_task_specific_keys_are_checked_against_the_task(tiny_recipe):
    problems = _problems(tiny_recipe, ["model.crf=true", "model.char_features=cnn"])
    assert [p.split(": ", 2)[1] for p in problems] == ["model.crf", "model.char_features"]
    problems = _problems(tiny_recipe, ["task=tagging", "tokenizer.kind=bpe", "model.tie_weights=true"])
    assert any("tokenizer.kind: tagging gives one tag per word" in p for p in problems)
    assert any("model.tie_weights: only a language model" in p for p in problems)


def test_duplicate_keys_are_reported(moby_slice):
    path = _write(moby_slice, "task: language_model\ndata: {train: data/train.txt, valid: data/valid.txt}\nseed: 1\nseed: 2\n")
    assert _problems(path) == [f"{path}:4: seed: duplicate key (the later value would win silently)"]


def test_recipe_that_is_not_a_mapping(moby_slice):
    path = _write(moby_slice, "- just\n- a list\n")
    assert _problems(path) == [f"{path}:1: a recipe is a mapping of sections (task, data, model, train, ...)"]


def test_checkpoint_config_is_validated_without_data_files():
    recipe = recipe_from_dict({"task": "language_model", "data": {"train": "gone.txt"}}, "ckpt/config.yaml")
    assert recipe.data.train == "gone.txt"


@pytest.mark.parametrize(
    "recipe_text, expected",
    [
        ("task: language_model\nmodel:\n  hiden_size: 3\n", "model.hiden_size: unknown key"),
        ("task: language_model\n  model: [\n", "YAML syntax error"),
        ("task: language_model\ndata: {train: data/nope.txt, valid: data/valid.txt}\n", "data.train: file not found: data/nope.txt"),
        ("task: language_model\ndata: {train: data/train.txt, valid: data/valid.txt}\ntrain: {lr: fast}\n", "train.lr: Input should be a valid number"),
    ],
)
def test_cli_reports_bad_recipes_in_one_line_each_with_exit_code_2(moby_slice, recipe_text, expected):
    path = _write(moby_slice, recipe_text)
    result = CliRunner().invoke(main, ["train", str(path)])
    assert result.exit_code == 2
    assert expected in result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert all(line.startswith("seqkit: error: ") for line in result.stderr.splitlines())


def test_cli_missing_recipe_file(moby_slice):
    result = CliRunner().invoke(main, ["train", "nope.yaml"])
    assert result.exit_code == 2 and "nope.yaml: recipe not found" in result.stderr
