"""Mixed precision against fp32 on the shipped recipes: the same run in each precision,
measured in the same invocation.

    python benchmarks/precision.py                                  # lm, ner, spam, sotu_year; fp32 vs bf16 (+ fp16 on CUDA)
    python benchmarks/precision.py --recipes spam --set train.epochs=2

Each run is a fresh ``seqkit train RECIPE --set train.precision=P`` process in a
temporary folder, with the recipe's seed, so the precisions differ in nothing else. For
each it prints the metric ``best/`` was chosen on (validation) and, where the recipe has a
test split, the test metric, the wall time, and the difference and time ratio against
fp32. fp16 (with gradient scaling) runs only where CUDA is available.

"Close to fp32" here means within the spread that a change of seed gives (the README
lists both); the numbers go to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seqkit.errors import RecipeError  # noqa: E402
from seqkit.runtime import describe_cpu, resolve_precision  # noqa: E402
METRIC = {"language_model": "perplexity", "tagging": "f1", "classification": "accuracy", "regression": "mae",
          "generation": "perplexity", "seq2seq": "wer"}  # fmt: skip


def run(recipe: str, precision: str, folder: Path, settings: list[str], threads: int | None) -> dict:
    """Train once; the best validation record, the test record (if any) and the wall time."""
    output = folder / f"{Path(recipe).stem}-{precision}"
    command = [sys.executable, "-m", "seqkit", "train", recipe, "--output-dir", str(output),
               "--set", f"train.precision={precision}", *[part for item in settings for part in ("--set", item)]]  # fmt: skip
    environment = dict(os.environ, PYTHONPATH=str(ROOT))
    if threads:
        environment["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    finished = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if finished.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{finished.stdout[-2000:]}{finished.stderr[-2000:]}")
    records = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    valid = [record for record in records if record["split"] == "valid"]
    best = [record for record in valid if record.get("best")][-1]
    test = next((record for record in records if record["split"] == "test"), None)
    return {"valid": best, "test": test, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default="lm,ner,spam,sotu_year", help="comma-separated names under recipes/")
    parser.add_argument("--set", dest="settings", action="append", default=[], help="KEY=VALUE for every run, e.g. train.epochs=2")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the runs (default: torch's default)")
    args = parser.parse_args()

    precisions = ["fp32", "bf16"] + (["fp16"] if torch.cuda.is_available() else [])
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"{describe_cpu()}, {args.threads or torch.get_num_threads()} threads"
    print(f"precision check on {device}; extra settings: {args.settings or 'none'}")
    try:
        resolve_precision("bf16", torch.device("cuda" if torch.cuda.is_available() else "cpu"), ("rnn", "gru", "lstm"))
    except RecipeError as error:  # nothing to compare against here
        precisions.remove("bf16")
        print(f"bf16 left out: {error}")
    print(f"{'recipe':<12} {'precision':<9} {'metric':<11} {'valid':>9} {'test':>9} {'Δ valid':>9} {'Δ test':>9} {'time':>8} {'×fp32':>6}")
    with tempfile.TemporaryDirectory(prefix="seqkit-precision-") as folder:
        for name in args.recipes.split(","):
            recipe = f"recipes/{name}.yaml"
            task = next(line.split(":", 1)[1].strip() for line in (ROOT / recipe).read_text().splitlines() if line.startswith("task:"))
            metric = METRIC[task]
            reference = None
            for precision in precisions:
                result = run(recipe, precision, Path(folder), args.settings, args.threads)
                valid = result["valid"][metric]
                test = result["test"][metric] if result["test"] else None
                reference = reference or (valid, test, result["seconds"])
                delta_test = f"{test - reference[1]:+9.4f}" if test is not None and reference[1] is not None else f"{'':>9}"
                print(f"{name:<12} {precision:<9} {metric:<11} {valid:9.4f} {test if test is not None else float('nan'):9.4f} "
                      f"{valid - reference[0]:+9.4f} {delta_test} {result['seconds']:7.0f}s {result['seconds'] / reference[2]:6.2f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
