"""Decoding speed of a G2P model: words/s for greedy and beam-5 decoding at batch 1 and 64.

    seqkit train recipes/g2p.yaml                       # once: the model to measure
    python benchmarks/decode_throughput.py [--checkpoint runs/g2p/best] [--words 2000] [--repeats 3]

Input: the first ``--words`` words of the CMUdict test split (``--words-batch1`` of them at
batch 1), decoded with ``Seq2Seq.predict`` -- letters tokenized, batched by length, the
encoder run once per batch, then the attention decoder a step at a time (beam search:
all beams of all words of a batch in one decoder batch). Median of ``--repeats``; each
figure also gives phonemes/s. The checkpoint is loaded once; the first batch is a warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="runs/g2p/best")
    parser.add_argument("--words", type=int, default=2000, help="words decoded at batch 64")
    parser.add_argument("--words-batch1", type=int, default=300, help="words decoded one at a time")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not (Path(args.checkpoint) / "target_tokenizer.json").is_file():
        raise SystemExit(f"{args.checkpoint}: no seq2seq checkpoint here; train one first: seqkit train recipes/g2p.yaml")

    import seqkit
    from seqkit.data import read_examples
    from seqkit.runtime import describe_cpu

    started = time.perf_counter()
    g2p = seqkit.Seq2Seq.from_pretrained(args.checkpoint, device="cpu")
    load_seconds = time.perf_counter() - started
    words = read_examples(ROOT / "data" / "cmudict" / "test.tsv.gz", targets="text").inputs
    print(f"{describe_cpu()}; torch {torch.__version__}, {torch.get_num_threads()} threads; {args.checkpoint}: {g2p!r}; load {load_seconds:.3f} s")
    print(f"CMUdict test words; median of {args.repeats}")
    g2p.predict(words[:64], beam=5)  # warm-up
    for beam in (None, 5):
        for batch_size, count in ((64, args.words), (1, args.words_batch1)):
            chosen = words[:count]
            timings, phonemes = [], 0
            for _ in range(args.repeats):
                started = time.perf_counter()
                if batch_size == 1:
                    outputs = [g2p.predict(word, beam=beam) for word in chosen]
                else:
                    outputs = g2p.predict(chosen, beam=beam, batch_size=batch_size)
                timings.append(time.perf_counter() - started)
                phonemes = sum(len(output) for output in outputs)
            seconds = statistics.median(timings)
            name = "greedy" if beam is None else f"beam {beam}"
            print(f"{name:<7} batch {batch_size:>2}: {count / seconds:8,.0f} words/s  {phonemes / seconds:9,.0f} phonemes/s  ({count:,} words)")


if __name__ == "__main__":
    main()
