"""Every shipped recipe trains as written, on whatever CPU runs the tests.

Each file in ``recipes/`` goes through ``seqkit train`` unchanged -- its own precision
(``auto``: bf16 on a CPU with native bf16, fp32 elsewhere), tokenizer, model and data --
with only ``train.max_steps`` small. A recipe that starts from another recipe's run
(``model.init_from: runs/lm_pretrain/best``) trains after that recipe, as a user would run
them. The working directory is a scratch folder whose ``data`` and ``recipes`` are the
project's own, so the recipes' relative paths mean what they mean in a checkout.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import seqkit
from seqkit.cli import main

from helpers import ROOT

RECIPES = sorted(path.name for path in (ROOT / "recipes").glob("*.yaml"))
STEPS = 2


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> Path:
    """A scratch working directory with the project's data/ and recipes/ in it."""
    root = tmp_path_factory.mktemp("checkout")
    (root / "data").symlink_to(ROOT / "data", target_is_directory=True)
    (root / "recipes").symlink_to(ROOT / "recipes", target_is_directory=True)
    return root


def _train(name: str, checkout: Path) -> Path:
    """``seqkit train recipes/NAME --set train.max_steps=2`` in the checkout (after the
    recipe whose run it starts from); the run directory."""
    recipe = yaml.safe_load((ROOT / "recipes" / name).read_text(encoding="utf-8"))
    run_dir = checkout / recipe["output_dir"]
    if (run_dir / "best").is_dir():
        return run_dir
    source = (recipe.get("model") or {}).get("init_from")
    if source is not None:
        writer = next(other for other in RECIPES if yaml.safe_load((ROOT / "recipes" / other).read_text())["output_dir"] == str(Path(source).parent))
        _train(writer, checkout)
    result = CliRunner().invoke(main, ["train", f"recipes/{name}", "--set", f"train.max_steps={STEPS}", "--quiet"])
    assert result.exit_code == 0, f"seqkit train recipes/{name}: exit {result.exit_code}\n{result.stderr}\n{result.output}"
    assert re.search(rf"^trained {STEPS} steps", result.output, flags=re.M), result.output
    return run_dir


@pytest.mark.parametrize("name", RECIPES)
def test_each_shipped_recipe_trains_as_written(name, checkout, monkeypatch):
    monkeypatch.chdir(checkout)
    run_dir = _train(name, checkout)
    model = seqkit.load(run_dir / "best", device="cpu")
    recipe = yaml.safe_load((ROOT / "recipes" / name).read_text(encoding="utf-8"))
    assert model.task == recipe["task"]
    assert model.info["step"] == STEPS
    requested = recipe.get("train", {}).get("precision", "auto")
    assert model.info["precision"] in (("bf16", "fp32") if requested == "auto" else (requested,))
