"""GPU check: seqkit on CUDA, end to end, in one short script (a few minutes on one GPU).

    python benchmarks/gpu_check.py [--out DIR]

1. The packed encoder on CUDA (cuDNN) against the CPU, every cell, uni- and bidirectional.
2. ``recipes/lm.yaml`` trained on CUDA (bf16; fp32 and fp16, with gradient scaling, for one
   epoch each, to compare): tokens/s, validation and test perplexity.
3. The same model trained on this machine's CPU for a few steps: tokens/s, for the ratio.
4. The checkpoint loaded in a fresh process on CUDA: the same seed generates the same
   text, and its test perplexity matches the one training reported.
5. ``recipes/ner.yaml`` (BiLSTM-CRF, char features) trained on CUDA for a few hundred steps,
   in fp32 and in fp16: loss falls, dev F1; then the checkpoint tags the dev tweets on CUDA
   and on the CPU in a fresh process, and the tags must agree.
6. ``recipes/spam.yaml`` (BiLSTM + attention pooling) trained on CUDA for a few hundred
   steps, in fp32 and in fp16; predictions on CUDA and on the CPU must agree.
7. DDP on CUDA: two processes under ``torchrun`` sharing the one GPU (gloo: nccl refuses
   two processes on one GPU) train the language model and the tagger like one process
   with the doubled batch. Then ``torchrun --nproc_per_node 2 -m seqkit train`` as a user
   would type it: nccl with two GPUs, or one line saying there are too few.

``--only lm,tagger,classifier,ddp`` runs a subset (each section takes about a minute). A
section that fails is reported and the others still run.

Prints one line per check and writes them all to ``DIR/gpu_check.json``. Record what it
printed in ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seqkit.config import load_recipe  # noqa: E402
from seqkit.encoders import RNNEncoder  # noqa: E402
from seqkit.train import train  # noqa: E402

FRESH_PROCESS = """
import json, sys, torch, seqkit
lm = seqkit.LanguageModel.from_pretrained(sys.argv[1], device="cuda")
texts = [lm.generate("the whale", max_tokens=30, temperature=0.8, top_k=40, seed=1) for _ in range(2)]
metrics = lm.evaluate("data/moby-dick/test.txt")
print(json.dumps({"device": str(lm.device), "same_text_same_seed": texts[0] == texts[1], "text": texts[0],
                  "test_perplexity": metrics["perplexity"]}))
"""


def packed_cuda_vs_cpu(tf32: bool) -> dict:
    torch.backends.cudnn.allow_tf32 = tf32
    results = {}
    for cell in ("rnn", "gru", "lstm"):
        for bidirectional in (False, True):
            torch.manual_seed(0)
            encoder = RNNEncoder(32, 64, num_layers=2, cell=cell, bidirectional=bidirectional).eval()
            inputs = torch.randn(16, 40, 32)
            lengths = torch.randint(1, 41, (16,))
            with torch.inference_mode():
                cpu_states, cpu_final = encoder(inputs, lengths)
                cuda_states, cuda_final = encoder.cuda()(inputs.cuda(), lengths)
            cpu_final = cpu_final[0] if isinstance(cpu_final, tuple) else cpu_final
            cuda_final = cuda_final[0] if isinstance(cuda_final, tuple) else cuda_final
            difference = max((cuda_states.cpu() - cpu_states).abs().max().item(), (cuda_final.cpu() - cpu_final).abs().max().item())
            results[f"{cell}{'-bi' if bidirectional else ''}"] = difference
    torch.backends.cudnn.allow_tf32 = True
    return results


TAG_ON_BOTH = """
import json, sys, seqkit
from seqkit.data import read_conll
checkpoint, first, second = sys.argv[1:4]
sentences = [list(s) for s in read_conll("data/wnut16/dev.conll")["tokens"]]
tags, f1 = {}, {}
for device in (first, second):
    tagger = seqkit.Tagger.from_pretrained(checkpoint, device=device)
    tags[device] = [doc.tags for doc in tagger.tag(sentences, batch_size=64)]
    f1[device] = tagger.evaluate("data/wnut16/dev.conll")["f1"]
same = sum(a == b for a, b in zip(tags[first], tags[second]))
example = seqkit.Tagger.from_pretrained(checkpoint, device=first).tag("Pretty bad storm here last evening at the Empire State Building")
print(json.dumps({"sentences": len(sentences), f"same_tags_{first}_and_{second}": same, "dev_f1": f1, "example_spans": example.to_json()["spans"]}))
"""

CLASSIFY_ON_BOTH = """
import gzip, json, sys, seqkit
checkpoint, first, second = sys.argv[1:4]
texts = [json.loads(line)["text"] for line in gzip.open("data/spam/spam-subset.jsonl.gz", "rt")][:500]
results = {d: seqkit.Classifier.from_pretrained(checkpoint, device=d).predict(texts, batch_size=64) for d in (first, second)}
same = sum(a.label == b.label for a, b in zip(results[first], results[second]))
gap = max(abs(a.probabilities["spam"] - b.probabilities["spam"]) for a, b in zip(results[first], results[second]))
print(json.dumps({"texts": len(texts), f"same_label_{first}_and_{second}": same, "max_probability_difference": gap}))
"""


def train_on_cuda(recipe_name: str, overrides: list[str], out: Path) -> dict:
    """Train a recipe on CUDA; the run's size, speed, first and last logged loss, best metrics."""
    recipe = load_recipe(ROOT / "recipes" / recipe_name, ["train.device=cuda", *overrides, f"output_dir={out}"])
    started = time.perf_counter()
    result = train(recipe, overwrite=True, quiet=True)
    losses = [record["loss"] for record in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if record["split"] == "train"]
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "steps": result.steps,
        "train_items_per_sec": round(result.train_tokens_per_sec),
        "first_logged_loss": losses[0],
        "last_logged_loss": losses[-1],
        "best": {name: value for name, value in result.best_metrics.items() if isinstance(value, float)},
    }


# One process (WORLD_SIZE unset) or one of two under torchrun, both on the one GPU.
DDP_WORKER = """
import json, os, sys, torch
torch.backends.cudnn.allow_tf32 = False  # compare fp32 with fp32
if int(os.environ.get("WORLD_SIZE", "1")) > 1:
    import torch.distributed as dist
    os.environ["LOCAL_RANK"] = "0"  # both processes on cuda:0
    dist.init_process_group("gloo")  # seqkit joins the group it finds
from seqkit.config import load_recipe
from seqkit.train import train
for path, overrides in json.loads(sys.argv[1]):
    train(load_recipe(path, overrides), overwrite=True, quiet=True)
"""


def _largest_relative_difference(run_dir: Path, reference: Path) -> dict:
    """Every logged number of a run against a reference run's (same steps and splits)."""
    records, expected = ([json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()] for d in (run_dir, reference))
    if [(r["step"], r["split"]) for r in records] != [(r["step"], r["split"]) for r in expected]:
        return {"same_records": False}
    largest = max(
        abs(record[key] - value) / max(abs(value), 1e-12)
        for record, wanted in zip(records, expected)
        for key, value in wanted.items()
        if isinstance(value, float) and key != "tokens_per_sec"
    )
    return {"same_records": True, "records": len(records), "largest_relative_difference": largest}


def ddp_on_cuda(out: Path) -> dict:
    """Two processes with batch B on the one GPU against one process with batch 2B."""
    worker = out / "ddp_worker.py"
    worker.write_text(DDP_WORKER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    common = {
        "lm.yaml": ["model.dropout=0", "train.max_steps=60", "train.eval_every=30", "train.log_every=10", "data.test=null"],
        "ner.yaml": ["model.dropout=0", "train.max_steps=40", "train.eval_every=20", "train.log_every=10"],
    }
    batch = {"lm.yaml": 16, "ner.yaml": 8}

    def runs(processes: int) -> str:
        return json.dumps([
            [str(ROOT / "recipes" / name), ["train.device=cuda", "train.precision=fp32", f"train.batch_size={batch[name] * (3 - processes)}",
                                            *overrides, f"output_dir={out / f'{name[:-5]}-{processes}'}"]]
            for name, overrides in common.items()
        ])  # fmt: skip

    report: dict = {}
    for processes in (1, 2):
        launcher = [sys.executable] if processes == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
        started = time.perf_counter()
        completed = subprocess.run([*launcher, str(worker), runs(processes)], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
        if completed.returncode != 0:
            raise RuntimeError(f"{processes} process(es) failed: {completed.stderr[-3000:]}")
        report[f"seconds_{processes}_processes"] = round(time.perf_counter() - started, 1)
    for name in common:
        report[name[:-5]] = _largest_relative_difference(out / f"{name[:-5]}-2", out / f"{name[:-5]}-1")

    # As a user would type it: nccl, one process per GPU.
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "seqkit", "train",
               str(ROOT / "recipes" / "lm.yaml"), "--set", "train.device=cuda", "--set", "train.max_steps=40", "--set", "data.test=null",
               "--output-dir", str(out / "torchrun-nccl")]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    seqkit_lines = [line for line in completed.stderr.splitlines() + completed.stdout.splitlines() if "seqkit" in line.lower() or "process" in line]
    report["torchrun_2_processes"] = {"gpus": torch.cuda.device_count(), "exit_code": completed.returncode,
                                      "lines": seqkit_lines[-6:], "stdout_tail": completed.stdout[-600:]}  # fmt: skip
    return report


def in_fresh_process(code: str, checkpoint: Path, devices: tuple[str, str] = ("cuda", "cpu")) -> dict:
    completed = subprocess.run([sys.executable, "-c", code, str(checkpoint), *devices], capture_output=True, text=True, cwd=ROOT)
    if completed.returncode != 0:
        print(completed.stderr, file=sys.stderr)
        raise SystemExit(f"the fresh process on {checkpoint} failed")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def section(report: dict, name: str, out: Path, run) -> None:
    """Run one section; a failure is reported (and saved) and the next section still runs."""
    try:
        report[name] = run()
    except Exception as error:  # a check script: report everything, stop nothing
        report[name] = {"failed": f"{type(error).__name__}: {error}"[-3000:]}
        print(f"{name} FAILED: {report[name]['failed']}", flush=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2))


def check_task(name: str, recipe: str, steps: list[str], fresh_process_code: str, out: Path) -> dict:
    """Train a recipe on CUDA in fp32 and in fp16 (with gradient scaling), then use the fp32
    checkpoint on CUDA and on the CPU in a fresh process."""
    run = recipe.removesuffix(".yaml")
    result = train_on_cuda(recipe, [*steps, "train.precision=fp32"], out / run)
    print(f"{name} trained on CUDA, fp32: {result}", flush=True)
    result["fp16"] = train_on_cuda(recipe, [*steps, "train.precision=fp16"], out / f"{run}-fp16")
    print(f"{name} trained on CUDA, fp16 with gradient scaling: {result['fp16']}", flush=True)
    result["fresh_process"] = in_fresh_process(fresh_process_code, out / run / "best")
    print(f"{name}, fresh process, CUDA vs CPU: {result['fresh_process']}", flush=True)
    return result


def check_language_model(out: Path) -> dict:
    report: dict = {}
    for tf32 in (True, False):
        report[f"packed_max_abs_difference_tf32_{tf32}"] = packed = packed_cuda_vs_cpu(tf32)
        print(f"packed encoder, CUDA (cuDNN TF32 {'on' if tf32 else 'off'}) vs CPU, max |difference|: {packed}", flush=True)

    runs = {}
    for name, overrides in {
        "cuda-bf16": ["train.device=cuda", "train.precision=bf16"],
        "cuda-fp32": ["train.device=cuda", "train.precision=fp32", "train.epochs=1", "data.test=null"],
        "cuda-fp16": ["train.device=cuda", "train.precision=fp16", "train.epochs=1", "data.test=null"],  # with gradient scaling
        "cpu-bf16": ["train.device=cpu", "train.precision=bf16", "train.max_steps=60", "train.log_every=10", "data.test=null"],
    }.items():
        recipe = load_recipe(ROOT / "recipes" / "lm.yaml", [*overrides, f"output_dir={out / name}"])
        started = time.perf_counter()
        result = train(recipe, overwrite=True, quiet=True)
        runs[name] = {
            "seconds": round(time.perf_counter() - started, 1),
            "steps": result.steps,
            "train_tokens_per_sec": round(result.train_tokens_per_sec),
            "valid_perplexity": result.best_metrics.get("perplexity"),
            "test_perplexity": (result.test_metrics or {}).get("perplexity"),
        }
        print(f"{name}: {runs[name]}", flush=True)
    report["training"] = runs
    report["gpu_over_cpu_tokens_per_sec"] = round(runs["cuda-bf16"]["train_tokens_per_sec"] / runs["cpu-bf16"]["train_tokens_per_sec"], 1)

    fresh = subprocess.run([sys.executable, "-c", FRESH_PROCESS, str(out / "cuda-bf16" / "best")], capture_output=True, text=True, cwd=ROOT)
    if fresh.returncode != 0:
        raise RuntimeError(f"loading the checkpoint in a fresh process failed: {fresh.stderr[-3000:]}")
    report["fresh_process"] = loaded = json.loads(fresh.stdout.strip().splitlines()[-1])
    loaded["test_perplexity_matches_training"] = abs(loaded["test_perplexity"] - runs["cuda-bf16"]["test_perplexity"]) < 0.05 * loaded["test_perplexity"]
    print(f"fresh process: {loaded}", flush=True)
    print(f"GPU/CPU training tokens/s: {report['gpu_over_cpu_tokens_per_sec']}x", flush=True)
    return report


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default="runs/gpu_check")
    parser.add_argument("--only", default="lm,tagger,classifier,ddp", help="comma-separated sections: lm, tagger, classifier, ddp")
    args = parser.parse_args()
    sections = set(args.only.split(","))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0), "cuda": torch.version.cuda, "gpus": torch.cuda.device_count()}
    print(json.dumps(report), flush=True)
    checks = {
        "tagger": lambda out: check_task("tagger", "ner.yaml", ["train.max_steps=480", "train.log_every=40"], TAG_ON_BOTH, out),
        "classifier": lambda out: check_task("classifier", "spam.yaml", ["train.max_steps=300", "train.log_every=25"], CLASSIFY_ON_BOTH, out),
        "lm": check_language_model,
        "ddp": ddp_on_cuda,
    }
    for name, check in checks.items():
        if name in sections:
            started = time.perf_counter()
            section(report, name, out, lambda: check(out))
            print(f"[{name}: {time.perf_counter() - started:.0f} s]", flush=True)
    if "ddp" in report:
        print(f"ddp: {report['ddp']}", flush=True)


if __name__ == "__main__":
    main()
