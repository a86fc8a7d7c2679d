"""The README's Python example runs as written (on a tiny checkpoint instead of runs/lm/best)."""

from __future__ import annotations

import re

from seqkit.config import load_recipe
from seqkit.train import train

from helpers import ROOT


def test_readme_python_blocks_run(tiny_recipe, capsys):
    run_dir = train(load_recipe(tiny_recipe, ["train.max_steps=5"]), quiet=True).run_dir
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), flags=re.S)
    assert blocks
    for block in blocks:
        code = block.replace("runs/lm/best", str(run_dir / "best")).replace("data/moby-dick/test.txt", "data/test.txt")
        exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("the whale") and float(printed[1]) > 1
    assert (tiny_recipe.parent / "my-lm" / "model.safetensors").is_file()
