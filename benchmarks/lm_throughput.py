"""Language-model throughput: seqkit against a plain PyTorch loop, measured in the same run.

    python benchmarks/lm_throughput.py                 # small and medium, 3 repeats each
    python benchmarks/lm_throughput.py --sizes small --repeats 1 --steps 40

Every side trains the same network (embedding -> nn.LSTM -> output layer, untied, dropout
0.2) on the same Moby-Dick token stream (word tokenizer, every training word), with Adam,
gradient clipping at 0.25, batch 32 and BPTT 35, in fp32 unless ``--precision bf16``:

- ``seqkit``: ``seqkit.train.train`` -- the real loop with its logging, schedule and
  bookkeeping -- with the output layer ``recipes/lm.yaml`` uses (``model.output:
  adaptive``: an exact adaptive softmax); it reports its own steady-state throughput
  (first log interval and evaluations left out);
- ``seqkit-softmax``: the same with a full softmax (``model.output: softmax``);
- ``plain``: the loop a user writes by hand (pytorch/examples' word_language_model), a
  full softmax, timed the same way;
- ``plain-tuned``: that loop with seqkit's allocator setting (``seqkit.runtime.tune_allocator``).

Inference: perplexity over 40k tokens at batch 32, seqkit's evaluation function against a
plain ``inference_mode`` loop. Evaluation: ``LanguageModel.evaluate`` (what ``seqkit eval``
runs, with its default rows) on the test chapters in three layouts of the same text -- as
shipped (a paragraph a line), 20-word lines, and all of it on one line. Runs alternate
(seqkit, seqkit-softmax, plain, plain-tuned, seqkit, ...) so that background load hits
every side alike, each in a fresh process. Medians and ratios are printed, with the CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seqkit.api import LanguageModel  # noqa: E402
from seqkit.config import Recipe  # noqa: E402
from seqkit.data import token_stream  # noqa: E402
from seqkit.model import build_model  # noqa: E402
from seqkit.runtime import describe_cpu, tune_allocator  # noqa: E402
from seqkit.tasks import evaluate_language_model  # noqa: E402
from seqkit.tokenize import special_ids, train_tokenizer  # noqa: E402
from seqkit.train import train  # noqa: E402

WORKERS = ("seqkit", "seqkit-softmax", "plain", "plain-tuned")
LAYOUTS = ("paragraphs", "20-word lines", "one line")
SIZES = {"small": (128, 256, 1), "medium": (256, 512, 2)}  # embedding_dim, hidden_size, num_layers
BATCH, BPTT, LOG_EVERY = 32, 35, 10
TRAIN = ROOT / "data" / "moby-dick" / "train.txt"
VALID = ROOT / "data" / "moby-dick" / "valid.txt"
TEST = ROOT / "data" / "moby-dick" / "test.txt"


class PlainLM(nn.Module):
    """What a user would write by hand (pytorch/examples word_language_model, batch-first)."""

    def __init__(self, vocab_size: int, embedding_dim: int, hidden_size: int, num_layers: int, dropout: float):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, hidden_size, num_layers, dropout=dropout if num_layers > 1 else 0.0, batch_first=True)
        self.decoder = nn.Linear(hidden_size, vocab_size)

    def forward(self, x, hidden=None):
        output, hidden = self.lstm(self.drop(self.embedding(x)), hidden)
        return self.decoder(self.drop(output)), hidden


def plain_train(stream: torch.Tensor, vocab_size: int, size: tuple[int, int, int], steps: int, precision: str) -> float:
    torch.manual_seed(0)
    model = PlainLM(vocab_size, *size, dropout=0.2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.003)
    rows = stream[: len(stream) // BATCH * BATCH].view(BATCH, -1)
    hidden, tokens, seconds, started = None, 0, 0.0, time.perf_counter()
    for step, start in enumerate(range(0, steps * BPTT, BPTT), start=1):
        x, y = rows[:, start : start + BPTT], rows[:, start + 1 : start + 1 + BPTT]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            logits, hidden = model(x, hidden)
            loss = F.cross_entropy(logits.reshape(-1, vocab_size), y.reshape(-1))
        hidden = tuple(h.detach() for h in hidden)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        optimizer.step()
        if step % LOG_EVERY == 0:
            loss.item()
            now = time.perf_counter()
            if step > LOG_EVERY:  # the first interval holds warm-up costs, as in seqkit's count
                tokens += LOG_EVERY * BATCH * BPTT
                seconds += now - started
            started = now
    return tokens / seconds


def seqkit_train(recipe: Recipe) -> float:
    return train(recipe, overwrite=True, quiet=True).train_tokens_per_sec


def write_layouts(directory: Path) -> dict[str, Path]:
    """The test chapters as shipped, in 20-word lines, and on one line."""
    words = TEST.read_text(encoding="utf-8").split()
    texts = {
        "paragraphs": TEST.read_text(encoding="utf-8"),
        "20-word lines": "".join(" ".join(words[start : start + 20]) + "\n" for start in range(0, len(words), 20)),
        "one line": " ".join(words) + "\n",
    }
    paths = {}
    for layout, text in texts.items():
        paths[layout] = directory / f"{layout.replace(' ', '-')}.txt"
        paths[layout].write_text(text, encoding="utf-8")
    return paths


def seqkit_evaluation(checkpoint: Path, layouts: dict[str, Path]) -> dict[str, float]:
    """Tokens/s of ``LanguageModel.evaluate`` (file to perplexity, tokenizing included) per layout."""
    lm = LanguageModel.from_pretrained(checkpoint, device="cpu")
    speeds = {}
    for layout, path in layouts.items():
        started = time.perf_counter()
        tokens = lm.evaluate(path)["tokens"]
        speeds[layout] = tokens / (time.perf_counter() - started)
    return speeds


@torch.inference_mode()
def plain_inference(model: PlainLM, stream: torch.Tensor, vocab_size: int) -> float:
    model.eval()
    rows = stream[: len(stream) // BATCH * BATCH].view(BATCH, -1)
    hidden, total = None, 0.0
    started = time.perf_counter()
    for start in range(0, rows.shape[1] - 1, BPTT):
        end = min(start + BPTT, rows.shape[1] - 1)
        x, y = rows[:, start:end], rows[:, start + 1 : end + 1]
        logits, hidden = model(x, hidden)
        total += F.cross_entropy(logits.reshape(-1, vocab_size), y.reshape(-1), reduction="sum").item()
    return rows.numel() / (time.perf_counter() - started)


def seqkit_inference(model, stream: torch.Tensor, pad_id: int, unk_id: int) -> float:
    started = time.perf_counter()
    evaluate_language_model(model, stream, BATCH, BPTT, pad_id, unk_id)
    return len(stream) / (time.perf_counter() - started)


def measure(worker: str, size_name: str, steps: int, precision: str) -> dict[str, Any]:
    """One measurement, in this (fresh) process: training and inference tokens/s (and,
    for seqkit, evaluation tokens/s per layout)."""
    tokenizer = train_tokenizer("word", TRAIN.read_text(encoding="utf-8").splitlines(), lowercase=True)
    ids = special_ids(tokenizer)
    stream = token_stream(TRAIN, tokenizer)
    vocab_size = tokenizer.get_vocab_size()
    size = SIZES[size_name]
    if worker == "plain-tuned":
        tune_allocator()
    if not worker.startswith("seqkit"):
        train_speed = plain_train(stream, vocab_size, size, steps, precision)
        inference_speed = plain_inference(PlainLM(vocab_size, *size, dropout=0.2), stream[:40_000], vocab_size)
        return {"train": train_speed, "inference": inference_speed, "vocab_size": vocab_size}
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer_path = Path(scratch) / "tokenizer.json"
        tokenizer.save(str(tokenizer_path))
        recipe = Recipe.model_validate({
            "task": "language_model", "output_dir": str(Path(scratch) / "run"),
            "data": {"train": str(TRAIN), "valid": str(VALID)},
            "tokenizer": {"path": str(tokenizer_path)},
            "model": {"embedding_dim": size[0], "hidden_size": size[1], "num_layers": size[2], "encoder": "lstm",
                      "dropout": 0.2, "tie_weights": False, "output": "softmax" if worker == "seqkit-softmax" else "adaptive"},
            "train": {"max_steps": steps, "batch_size": BATCH, "bptt": BPTT, "lr": 0.003, "optimizer": "adam",
                      "grad_clip": 0.25, "schedule": "none", "eval_every": 10**9, "log_every": LOG_EVERY,
                      "device": "cpu", "precision": precision},
            "generate": {"max_tokens": 1},
        })  # fmt: skip
        train_speed = seqkit_train(recipe)
        evaluation = seqkit_evaluation(Path(scratch) / "run" / "best", write_layouts(Path(scratch))) if worker == "seqkit" else {}
    model = build_model("language_model", recipe.model, vocab_size, ids.pad)
    inference_speed = seqkit_inference(model, stream[:40_000], ids.pad, ids.unk)
    return {"train": train_speed, "inference": inference_speed, "evaluation": evaluation, "vocab_size": vocab_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--steps", type=int, default=60, help="training steps per measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--worker", choices=WORKERS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(measure(args.worker, args.sizes[0], args.steps, args.precision)))
        return

    print(f"{describe_cpu()}; torch {torch.__version__}, {torch.get_num_threads()} threads, batch {BATCH}, bptt {BPTT}, "
          f"{args.steps} steps per measurement, {args.precision}, median of {args.repeats}, each in a fresh process", flush=True)  # fmt: skip
    for name in args.sizes:
        speeds: dict[str, list[dict[str, Any]]] = {worker: [] for worker in WORKERS}
        for _ in range(args.repeats):
            for worker in WORKERS:  # alternate, so background load hits every side alike
                command = [sys.executable, __file__, "--worker", worker, "--sizes", name, "--steps", str(args.steps), "--precision", args.precision]
                speeds[worker].append(json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout))
        embedding_dim, hidden_size, num_layers = SIZES[name]
        print(f"\n{name} (emb {embedding_dim}, hidden {hidden_size}, {num_layers} layer{'s' if num_layers > 1 else ''}, "
              f"vocabulary {speeds['seqkit'][0]['vocab_size']:,})")  # fmt: skip
        for kind in ("train", "inference"):
            median = {worker: statistics.median(run[kind] for run in speeds[worker]) for worker in WORKERS}
            print(f"  {kind:<9} seqkit (adaptive) {median['seqkit']:7,.0f} tok/s | seqkit (softmax) {median['seqkit-softmax']:7,.0f} "
                  f"| plain loop {median['plain']:7,.0f} | plain loop + allocator setting {median['plain-tuned']:7,.0f} "
                  f"| ratios to the plain loop: adaptive {median['seqkit'] / median['plain']:.2f}, softmax "
                  f"{median['seqkit-softmax'] / median['plain']:.2f}; adaptive to the tuned loop "
                  f"{median['seqkit'] / median['plain-tuned']:.2f}", flush=True)  # fmt: skip
        evaluation = {layout: statistics.median(run["evaluation"][layout] for run in speeds["seqkit"]) for layout in LAYOUTS}
        print("  evaluation (LanguageModel.evaluate, the test chapters, adaptive): "
              + ", ".join(f"{layout} {speed:,.0f} tok/s" for layout, speed in evaluation.items()), flush=True)


if __name__ == "__main__":
    main()
