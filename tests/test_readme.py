"""The README's Python examples run as written (on tiny checkpoints instead of runs/*/best)."""

from __future__ import annotations

import re

from seqkit.config import load_recipe
from seqkit.train import train

from helpers import ROOT, SOTU, first_records, write_jsonl


def test_readme_python_blocks_run(tiny_recipe, trained_tagger, trained_classifier, trained_generator, trained_seq2seq, capsys):
    lm_run = train(load_recipe(tiny_recipe, ["train.max_steps=5"]), quiet=True).run_dir
    sotu = write_jsonl(tiny_recipe.parent / "sotu.jsonl", first_records(SOTU, 2, per="address")[:60])
    year_run = train(load_recipe(ROOT / "recipes" / "sotu_year.yaml", [f"data.train={sotu}", "train.max_steps=3", "data.holdout.test=0",
                                                                      f"output_dir={tiny_recipe.parent / 'year'}"]), quiet=True).run_dir  # fmt: skip
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) >= 2
    for block in blocks:
        code = (
            block.replace("runs/lm/best", str(lm_run / "best"))
            .replace("data/moby-dick/test.txt", "data/test.txt")
            .replace("runs/ner/best", str(trained_tagger.run_dir / "best"))
            .replace("runs/spam/best", str(trained_classifier.run_dir / "best"))
            .replace("runs/sotu_year/best", str(year_run / "best"))
            .replace("runs/names/best", str(trained_generator.run_dir / "best"))
            .replace("runs/g2p/best", str(trained_seq2seq.run_dir / "best"))
        )
        exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("the whale") and float(printed[1]) > 1
    assert (tiny_recipe.parent / "my-lm" / "model.safetensors").is_file()
    assert any(line.startswith("['Pretty', 'bad', 'storm'") for line in printed)
    assert all(line.endswith("True") for line in printed if line.split(" ")[0] in {"facility", "geo-loc", "person", "company", "other"})
    assert any(line.startswith(("spam [('WIN', ", "ham [('WIN', ")) for line in printed)
    assert "['female', 'male']" in printed
