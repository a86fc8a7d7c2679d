"""Tagging speed of ``Tagger.tag`` on this CPU.

    seqkit train recipes/ner.yaml                       # once: the tagger to measure
    python benchmarks/tag_throughput.py [--checkpoint runs/ner/best] [--repeats 3]

Input: the WNUT-16 dev tweets (239) repeated 21 times (5,019 sentences), as
pre-tokenized word lists (what Flair's ``SequenceTagger.predict`` was given) and as raw
strings (seqkit splits them itself, keeping character offsets). Measured: sentences/s
and tokens/s at batch size 1 and 64 (median of ``--repeats``), and the time to load the
checkpoint in this process. No peer runs here: a ratio to Flair needs Flair measured in
the same run on the same sentences (../shared/PEERS.md has such a side-by-side run); a
figure of another day or machine says nothing about this one.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

REPEAT = 21


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="runs/ner/best")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    args.checkpoint = str(Path(args.checkpoint).resolve())
    if not (Path(args.checkpoint) / "config.yaml").is_file():
        raise SystemExit(f"{args.checkpoint}: no tagger checkpoint here; train one first: seqkit train recipes/ner.yaml")

    fresh = subprocess.run(
        [sys.executable, "-c", f"import time; t = time.perf_counter(); import seqkit; seqkit.Tagger.from_pretrained({args.checkpoint!r}, device='cpu'); print(time.perf_counter() - t)"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    import seqkit

    seqkit.Tagger.from_pretrained(args.checkpoint, device="cpu")  # warm the file cache
    started = time.perf_counter()
    tagger = seqkit.Tagger.from_pretrained(args.checkpoint, device="cpu")
    load_seconds = time.perf_counter() - started

    from seqkit.data import read_conll
    from seqkit.runtime import describe_cpu

    dev = read_conll(ROOT / "data" / "wnut16" / "dev.conll")["tokens"]
    words = [list(sentence) for sentence in dev] * REPEAT
    texts = [" ".join(sentence) for sentence in words]
    tokens = sum(len(sentence) for sentence in words)
    print(f"{describe_cpu()}; torch {torch.__version__}, {torch.get_num_threads()} threads; {args.checkpoint}: {tagger!r}")
    print(f"model load (from_pretrained): {load_seconds:.3f} s; in a fresh process with `import seqkit`: {float(fresh.stdout):.2f} s")
    print(f"{len(words):,} sentences, {tokens:,} tokens; median of {args.repeats}")
    tagger.tag(texts[:64], batch_size=64)  # warm-up
    for batch_size in (64, 1):
        for name, inputs in (("pre-tokenized", words), ("raw text", texts)):
            seconds = []
            for _ in range(args.repeats):
                begin = time.perf_counter()
                tagger.tag(inputs, batch_size=batch_size)
                seconds.append(time.perf_counter() - begin)
            median = statistics.median(seconds)
            rate = len(inputs) / median
            print(f"batch {batch_size:>2}  {name:<13}  {rate:8,.0f} sentences/s  {tokens / median:9,.0f} tokens/s")


if __name__ == "__main__":
    main()
