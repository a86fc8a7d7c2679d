"""A G2P checkpoint's test error rates with stress digits and without, from one decode.

`seqkit eval` scores the phonemes as written (AH0 and AH1 differ); published CMUdict
results are often given with stress ignored too. This decodes every word of a pairs file
once (a word listed more than once is right when it matches any of its lines, as
`seqkit eval` scores it) and reports PER and WER both ways:

    python benchmarks/g2p_eval.py runs/g2p/best --data data/cmudict/test-all.tsv.gz --beam 5

Several checkpoints decode as one ensemble (``seqkit.Seq2Seq.ensemble``: each step's
next-phoneme distribution is the mean of theirs):

    python benchmarks/g2p_eval.py runs/g2p/best runs/g2p-s1/best --data data/cmudict/test-all.tsv.gz --beam 5
"""

from __future__ import annotations

import argparse
import re
import time

import torch

import seqkit
from seqkit.data import read_examples
from seqkit.metrics import group_references, sequence_error_rates

STRESS = re.compile(r"\d")


def without_stress(phonemes: list[str]) -> list[str]:
    """ARPAbet phonemes with their stress digits removed (AH0 -> AH)."""
    return [STRESS.sub("", phoneme) for phoneme in phonemes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoints", nargs="+", metavar="CHECKPOINT", help="one checkpoint, or several to decode as an ensemble")
    parser.add_argument("--data", required=True, help="WORD<TAB>PHONEMES lines (.tsv or .tsv.gz)")
    parser.add_argument("--beam", type=int, default=None, help="beam width (default: greedy)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started, cpu = time.perf_counter(), time.process_time()
    paths = args.checkpoints
    model = seqkit.Seq2Seq.from_pretrained(paths[0], device="cpu") if len(paths) == 1 else seqkit.Seq2Seq.ensemble(paths, device="cpu")
    examples = read_examples(args.data, targets="text")
    words, references = group_references(examples.inputs, [target.split() for target in examples.targets])
    predicted = model.predict(words, beam=args.beam, batch_size=256)
    stressed = sequence_error_rates(references, predicted)
    plain = sequence_error_rates([[without_stress(option) for option in options] for options in references], [without_stress(p) for p in predicted])
    decoding = (f"beam {args.beam}" if args.beam else "greedy") + (f", an ensemble of {len(paths)}" if len(paths) > 1 else "")
    print(f"{args.data}: {stressed['sequences']:,} words, {decoding}; with stress PER {stressed['per']:.2%} WER {stressed['wer']:.2%}; "
          f"stress ignored PER {plain['per']:.2%} WER {plain['wer']:.2%} "
          f"({time.process_time() - cpu:.0f} CPU-s, {time.perf_counter() - started:.0f} s wall, {args.threads} thread(s))")  # fmt: skip


if __name__ == "__main__":
    main()
