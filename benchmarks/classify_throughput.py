"""Classifier throughput: seqkit against a plain PyTorch loop of the same model, measured in the same run.

    python benchmarks/classify_throughput.py                # 60 training steps, 2,000 texts (300 at batch 1), 3 repeats
    python benchmarks/classify_throughput.py --repeats 1 --train-steps 20 --examples 300 --examples-batch1 50

The model is recipes/spam.yaml's: embedding -> packed BiLSTM -> attention pooling
(linear-tanh-linear scorer, softmax over the real steps) -> dropout -> linear, with dropout
on the embeddings too. Training (examples/s): seqkit runs ``seqkit.train.train`` -- the real
loop with its logging, schedule and bookkeeping -- for ``--train-steps`` steps and reports
its own steady-state throughput (first log interval and evaluations left out). The plain
loop trains a hand-written module of the same shapes on the same tokenized, truncated
training split with Adam, the same learning rate, gradient clipping, cross-entropy and batch
size, timed the same way; its batches are random (a shuffled order, each padded to its
longest member). seqkit groups similar lengths into its batches in training too, so it
pads less: that is part of what is measured.

Inference (texts/s) from raw strings, the subset's texts in file order:
``Classifier.predict`` at batch 64 and 1 against the plain module in eval mode under
``inference_mode``, over batches in input order (no sorting by length), tokenizing each
batch with the checkpoint's tokenizer (``encode_batch``) and truncating as the recipe says.
The plain module holds the checkpoint's weights, so both give the same probabilities (the
largest difference is printed). Without a checkpoint at ``--checkpoint`` an untrained one
is built from the recipe in a temporary folder: speed does not depend on the weights.
Model load time is ``Classifier.from_pretrained`` after ``import seqkit``.

Each repeat runs seqkit, then the plain loop, each in a fresh process (inference first,
then training), so that background load hits both alike and the allocator setting that
``train`` applies (``seqkit.runtime.tune_allocator``) reaches neither the plain side nor
seqkit's inference. Medians of ``--repeats``; default torch threads. On a busy machine 2
threads can run 50x slower than 1 (threads waiting on each other): there, pass --threads 1.
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
from typing import Callable

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tokenizers import Tokenizer
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence, pad_sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from seqkit.api import Classifier  # noqa: E402
from seqkit.checkpoint import read_config, read_labels, save_checkpoint  # noqa: E402
from seqkit.config import ModelConfig, Recipe, load_recipe  # noqa: E402
from seqkit.data import read_examples  # noqa: E402
from seqkit.model import build_model  # noqa: E402
from seqkit.runtime import describe_cpu  # noqa: E402
from seqkit.tasks.sequence import ClassificationTask  # noqa: E402
from seqkit.tokenize import special_ids  # noqa: E402
from seqkit.train import train  # noqa: E402

SIDES = ("seqkit", "plain")
LOG_EVERY = 10
RECIPE = ROOT / "recipes" / "spam.yaml"
DATA = ROOT / "data" / "spam" / "spam-subset.jsonl.gz"
# seqkit's parameter names -> the plain module's
RENAME = {"embedding.embedding.": "embedding.", "encoder.rnn.": "lstm.", "head.pooling.scorer.": "scorer.", "head.output.": "output."}
Predict = Callable[[list[str], int], list]


class PlainClassifier(nn.Module):
    """What a user would write by hand: embedding -> packed BiLSTM -> attention pooling -> linear."""

    def __init__(self, vocab_size: int, config: ModelConfig, num_classes: int, pad_id: int):
        super().__init__()
        size = 2 * config.hidden_size
        self.embedding = nn.Embedding(vocab_size, config.embedding_dim, padding_idx=pad_id)
        self.lstm = nn.LSTM(config.embedding_dim, config.hidden_size, batch_first=True, bidirectional=True)
        self.scorer = nn.Sequential(nn.Linear(size, size), nn.Tanh(), nn.Linear(size, 1, bias=False))
        self.drop = nn.Dropout(config.dropout)
        self.output = nn.Linear(size, num_classes)

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(self.drop(self.embedding(ids)), lengths, batch_first=True, enforce_sorted=False)
        states, _ = pad_packed_sequence(self.lstm(packed)[0], batch_first=True)
        mask = torch.arange(states.shape[1]) < lengths[:, None]
        weights = self.scorer(states).squeeze(-1).masked_fill(~mask, float("-inf")).softmax(dim=1)
        return self.output(self.drop((weights.unsqueeze(-1) * states).sum(1)))


def spam_recipe(*overrides: str) -> Recipe:
    return load_recipe(RECIPE, [f"data.train={DATA}", "train.device=cpu", *overrides])


def plain_train(steps: int) -> tuple[float, int]:
    """Steady-state examples/s of the plain loop, and the number of training examples."""
    recipe = spam_recipe()
    tokenizer = ClassificationTask.make_tokenizer(recipe)
    task = ClassificationTask(recipe, tokenizer)
    inputs, targets, _ = task.encoded["train"]  # tokenized and truncated as seqkit trains
    pad, batch_size = special_ids(tokenizer).pad, recipe.train.batch_size
    torch.manual_seed(recipe.seed)
    model = PlainClassifier(tokenizer.get_vocab_size(), recipe.model, len(task.labels.labels), pad)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.train.lr)
    order: list[int] = []
    examples, in_interval, seconds, started = 0, 0, 0.0, time.perf_counter()
    for step in range(1, steps + 1):
        if not order:
            order = torch.randperm(len(inputs)).tolist()
        batch, order = order[:batch_size], order[batch_size:]
        ids = pad_sequence([torch.tensor(inputs[i]) for i in batch], batch_first=True, padding_value=pad)
        logits = model(ids, torch.tensor([len(inputs[i]) for i in batch]))
        loss = F.cross_entropy(logits, torch.tensor([targets[i] for i in batch]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), recipe.train.grad_clip)
        optimizer.step()
        in_interval += len(batch)
        if step % LOG_EVERY == 0:
            loss.item()
            now = time.perf_counter()
            if step > LOG_EVERY:  # the first interval holds warm-up costs, as in seqkit's count
                examples, seconds = examples + in_interval, seconds + now - started
            in_interval, started = 0, now
    return examples / seconds, len(inputs)


def seqkit_train(steps: int) -> float:
    with tempfile.TemporaryDirectory() as scratch:
        recipe = spam_recipe(f"output_dir={scratch}", f"train.max_steps={steps}", "train.epochs=null", "train.eval_every=1000000000",
                             f"train.log_every={LOG_EVERY}")  # fmt: skip
        return train(recipe, quiet=True).train_tokens_per_sec  # examples/s for a classifier


def plain_predictor(checkpoint: Path) -> Predict:
    """``predict(texts, batch_size)`` -> (label, probabilities) per text, with the plain module."""
    recipe, _ = read_config(checkpoint)
    tokenizer = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    pad, limit = special_ids(tokenizer).pad, recipe.data.max_length
    classes = read_labels(checkpoint, "classification").labels
    model = PlainClassifier(tokenizer.get_vocab_size(), recipe.model, len(classes), pad)
    weights = load_file(str(checkpoint / "model.safetensors"))
    renamed = {next(new + name[len(old) :] for old, new in RENAME.items() if name.startswith(old)): tensor for name, tensor in weights.items()}
    model.load_state_dict(renamed)
    model.eval()

    @torch.inference_mode()
    def predict(texts: list[str], batch_size: int) -> list[tuple[str, list[float]]]:
        results: list[tuple[str, list[float]]] = []
        for start in range(0, len(texts), batch_size):
            rows = [encoding.ids or [pad] for encoding in tokenizer.encode_batch(texts[start : start + batch_size])]
            rows = [row[: (limit + 1) // 2] + row[len(row) - limit // 2 :] if len(row) > limit else row for row in rows]  # head+tail
            ids = pad_sequence([torch.tensor(row) for row in rows], batch_first=True, padding_value=pad)
            probabilities = model(ids, torch.tensor([len(row) for row in rows])).softmax(-1)
            results += zip([classes[i] for i in probabilities.argmax(-1).tolist()], probabilities.tolist())
        return results

    return predict


def measure(side: str, checkpoint: Path, steps: int, examples: int, examples_batch1: int) -> dict:
    """One side's measurements, in this (fresh) process: inference first, then training."""
    recipe = spam_recipe()
    texts = list(read_examples(DATA, recipe.data.input_field, recipe.data.target_field).inputs)[:examples]
    result: dict = {}
    if side == "seqkit":
        started = time.perf_counter()
        classifier = Classifier.from_pretrained(checkpoint, device="cpu")
        result["load"] = time.perf_counter() - started
        predict: Predict = classifier.predict
    else:
        predict = plain_predictor(checkpoint)
    predict(texts[:64], 64)  # warm-up
    for batch_size, subset in ((64, texts), (1, texts[:examples_batch1])):
        started = time.perf_counter()
        outputs = predict(subset, batch_size)
        result[f"batch {batch_size}"] = len(subset) / (time.perf_counter() - started)
        if batch_size == 64:
            result["probabilities"] = [list(o.probabilities.values()) if side == "seqkit" else o[1] for o in outputs]
    if side == "seqkit":
        result["train"] = seqkit_train(steps)
    else:
        result["train"], result["train_examples"] = plain_train(steps)
    return result


def untrained_checkpoint(directory: Path) -> Path:
    """A checkpoint of the recipe's model with its initial weights (no training)."""
    recipe = spam_recipe()
    tokenizer = ClassificationTask.make_tokenizer(recipe)
    labels = ClassificationTask(recipe, tokenizer).labels
    model = build_model("classification", recipe.model, tokenizer.get_vocab_size(), special_ids(tokenizer).pad, labels)
    return save_checkpoint(directory / "untrained", model, recipe, tokenizer, labels=labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="runs/spam/best", help="a classifier trained with recipes/spam.yaml (default: %(default)s)")
    parser.add_argument("--train-steps", type=int, default=60, help="training steps per measurement; the first 10 are left out")
    parser.add_argument("--examples", type=int, default=2000, help="texts to classify at batch 64 (the subset has 2,000)")
    parser.add_argument("--examples-batch1", type=int, default=300, help="texts to classify at batch 1 (the first ones)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads per process (default: torch's, %(default)s here)")
    parser.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.train_steps < 2 * LOG_EVERY:
        parser.error(f"--train-steps: at least {2 * LOG_EVERY} (the first {LOG_EVERY} are warm-up)")
    if args.worker:
        torch.set_num_threads(args.threads)
        print(json.dumps(measure(args.worker, Path(args.checkpoint), args.train_steps, args.examples, args.examples_batch1)))
        return

    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = Path(args.checkpoint).resolve()
        note = ""
        if not (checkpoint / "config.yaml").is_file():
            checkpoint, note = untrained_checkpoint(Path(scratch)), f" ({args.checkpoint} not found: untrained weights, same shapes)"
        saved = read_config(checkpoint)[0]
        shape = (saved.task, saved.model.encoder, saved.model.num_layers, saved.model.bidirectional, saved.model.pooling)
        if shape != ("classification", "lstm", 1, True, "attention"):
            raise SystemExit(f"{checkpoint}: not a classifier of recipes/spam.yaml's shape (1-layer BiLSTM, attention pooling)")
        print(f"{describe_cpu()}; torch {torch.__version__}, {args.threads} threads; checkpoint {checkpoint}{note}")
        print(f"median of {args.repeats}, seqkit and plain alternating, each in a fresh process", flush=True)
        runs: dict[str, list[dict]] = {side: [] for side in SIDES}
        for _ in range(args.repeats):
            for side in SIDES:  # alternate, so background load hits both alike
                command = [sys.executable, __file__, "--worker", side, "--checkpoint", str(checkpoint), "--train-steps", str(args.train_steps),
                           "--examples", str(args.examples), "--examples-batch1", str(args.examples_batch1), "--threads", str(args.threads)]  # fmt: skip
                runs[side].append(json.loads(subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout.splitlines()[-1]))

    seqkit, plain = runs["seqkit"][0], runs["plain"][0]
    texts = len(seqkit["probabilities"])
    difference = max(abs(a - b) for row, other in zip(seqkit["probabilities"], plain["probabilities"]) for a, b in zip(row, other))
    print(f"model load (Classifier.from_pretrained): {statistics.median(run['load'] for run in runs['seqkit']):.3f} s")
    print(f"training: {args.train_steps} steps of batch 32 on {plain['train_examples']:,} examples; inference: {texts:,} texts at batch 64, "
          f"{min(texts, args.examples_batch1):,} at batch 1; largest probability difference seqkit vs plain: {difference:.1e}")  # fmt: skip
    print(f"\n{'':<22}{'seqkit':>10}{'plain loop':>12}{'ratio':>8}")
    for key, label in (("train", "train examples/s"), ("batch 64", "predict texts/s, b64"), ("batch 1", "predict texts/s, b1")):
        median = {side: statistics.median(run[key] for run in runs[side]) for side in SIDES}
        print(f"{label:<22}{median['seqkit']:>10,.1f}{median['plain']:>12,.1f}{median['seqkit'] / median['plain']:>8.2f}")


if __name__ == "__main__":
    main()
