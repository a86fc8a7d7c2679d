"""One-to-many generation: a conditioned character-level generator of names."""

import json

import pytest
from click.testing import CliRunner

import seqkit
from helpers import NAMES, ROOT, run_python, write_generator_recipe as _recipe
from seqkit.cli import main
from seqkit.config import load_recipe
from seqkit.errors import RecipeError
from seqkit.train import train

def test_generator_overfits_its_names_exactly(trained_generator):
    gen = seqkit.Generator.from_pretrained(trained_generator.run_dir / "best", device="cpu")
    assert gen.conditions == ["female", "male"]
    assert gen.generate("female", temperature=0) == ["Abigail"]
    assert gen.generate("male", temperature=0) == ["Zachary"]
    assert gen.generate("male", beam=3) == ["Zachary"]  # beam search agrees with greedy here
    samples = gen.generate("female", num=20, temperature=0.5, seed=1)
    assert len(samples) == 20 and samples.count("Abigail") >= 15
    assert trained_generator.best_metrics["training_copies"] > 0.9


def test_same_seed_same_names_in_a_fresh_process(trained_generator):
    best = trained_generator.run_dir / "best"
    here = seqkit.Generator.from_pretrained(best, device="cpu").generate("female", num=8, temperature=1.5, top_k=5, seed=3)
    code = f"import json, seqkit; g = seqkit.Generator.from_pretrained({str(best)!r}, device='cpu'); print(json.dumps(g.generate('female', num=8, temperature=1.5, top_k=5, seed=3)))"
    assert json.loads(run_python(code, best)) == here
    assert len(set(here)) > 1  # a high temperature does vary the names


def test_cli_generate_with_a_condition(trained_generator):
    best = str(trained_generator.run_dir / "best")
    runner = CliRunner()
    result = runner.invoke(main, ["generate", best, "--condition", "male", "--num", "3", "--temperature", "0.8", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert len(result.output.splitlines()) == 3
    again = runner.invoke(main, ["generate", best, "--condition", "male", "--num", "3", "--temperature", "0.8", "--seed", "3"])
    assert again.output == result.output
    unknown = runner.invoke(main, ["generate", best, "--condition", "robot"])
    assert unknown.exit_code == 2 and "unknown condition 'robot': this model knows female, male" in unknown.output
    info = runner.invoke(main, ["info", best])
    assert "conditions   female, male (as both)" in info.output


def test_samples_are_logged_to_tensorboard_during_training(trained_generator):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(trained_generator.run_dir / "tb"), size_guidance={"tensors": 0})
    events.Reload()
    samples = events.Tensors("sample/text_summary")
    assert len(samples) >= 3  # one per evaluation
    assert "female:" in samples[-1].tensor_proto.string_val[0].decode()


@pytest.mark.parametrize("mode", ["state", "input"])
def test_each_way_of_conditioning_learns(tmp_path, mode):
    result = train(load_recipe(_recipe(tmp_path, NAMES, condition=mode), ["train.epochs=60"]), quiet=True)
    gen = seqkit.Generator.from_pretrained(result.run_dir / "best", device="cpu")
    assert gen.generate("female", temperature=0) == ["Abigail"] and gen.generate("male", temperature=0) == ["Zachary"]
    assert (gen.model.to_state is not None) == (mode == "state")


def test_generation_recipe_rules(tmp_path):
    path = _recipe(tmp_path, NAMES)
    with pytest.raises(RecipeError, match="model.bidirectional: a generator writes left to right"):
        load_recipe(path, ["model.bidirectional=true"])
    with pytest.raises(RecipeError, match="data.condition_field: only generation uses it"):
        load_recipe(ROOT / "recipes" / "spam.yaml", ["data.condition_field=label"])
    recipe = load_recipe(ROOT / "recipes" / "names.yaml")
    assert recipe.task == "generation" and recipe.tokenizer.kind == "char" and recipe.data.holdout.by == "text"
