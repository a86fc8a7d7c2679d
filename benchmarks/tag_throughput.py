"""Tagging speed of ``Tagger.tag``, against Flair's figures measured on this machine kind.

    seqkit train recipes/ner.yaml                       # once: the tagger to measure
    python benchmarks/tag_throughput.py [--checkpoint runs/ner/best] [--repeats 3]

Input: the WNUT-16 dev tweets (239) repeated 21 times (5,019 sentences), as
pre-tokenized word lists (what Flair's ``SequenceTagger.predict`` was given) and as raw
strings (seqkit splits them itself, keeping character offsets). Measured: sentences/s
and tokens/s at batch size 1 and 64 (median of ``--repeats``), and the time to load the
checkpoint in this process. Flair 0.15.1's figures come from ../shared/PEERS.md (quiet
machine, 2 threads): 316 sentences/s at batch 32 and 39 at batch 1 on the same 5,019
sentences; model load 0.06 s (``import flair`` alone 7.6 s).
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

FLAIR_SENTENCES_PER_SECOND = {64: 316.0, 1: 39.0}  # Flair's batch 32 figure stands against our 64
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
    print(f"model load (from_pretrained): {load_seconds:.3f} s; in a fresh process with `import seqkit`: {float(fresh.stdout):.2f} s "
          f"(Flair: 0.06 s; `import flair` alone 7.6 s)")  # fmt: skip
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
            flair = FLAIR_SENTENCES_PER_SECOND[batch_size]
            print(f"batch {batch_size:>2}  {name:<13}  {rate:8,.0f} sentences/s  {tokens / median:9,.0f} tokens/s  "
                  f"({rate / flair:.1f}x Flair's {flair:.0f} sentences/s)")  # fmt: skip


if __name__ == "__main__":
    main()
