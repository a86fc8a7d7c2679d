"""The shipped tagger and classifier against their ONNX exports, loaded in this fresh process.

    seqkit train recipes/ner.yaml && seqkit export runs/ner/best ner-onnx --format onnx
    seqkit train recipes/spam.yaml && seqkit export runs/spam/best spam-onnx --format onnx
    python benchmarks/onnx_parity.py --tagger runs/ner/best ner-onnx --classifier runs/spam/best spam-onnx

The tagger tags the 239 WNUT-16 dev tweets and the classifier the first 400 shipped
emails, once with PyTorch and once with ONNX Runtime (``runtime="onnx"``): printed are how
many answers are identical (tags and spans; labels) and the largest difference of a
probability.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def tagger(checkpoint: str, exported: str) -> None:
    import seqkit
    from seqkit.data import read_conll

    texts = [" ".join(words) for words in read_conll(ROOT / "data" / "wnut16" / "dev.conll")["tokens"]]
    torch_docs = seqkit.Tagger.from_pretrained(checkpoint).tag(texts)
    onnx_docs = seqkit.Tagger.from_pretrained(exported, runtime="onnx").tag(texts)
    same = sum(a.tags == b.tags and a.spans == b.spans for a, b in zip(torch_docs, onnx_docs))
    difference = max(abs(p - q) for a, b in zip(torch_docs, onnx_docs) for p, q in zip(a.scores, b.scores))
    print(f"tagger: {len(texts)} dev tweets, identical tags and spans {same}/{len(texts)}, largest token-probability difference {difference:.1e}")


def classifier(checkpoint: str, exported: str) -> None:
    import seqkit

    with gzip.open(ROOT / "data" / "spam" / "spam-subset.jsonl.gz", "rt", encoding="utf-8") as handle:
        texts = [json.loads(line)["text"] for _, line in zip(range(400), handle)]
    torch_out = seqkit.Classifier.from_pretrained(checkpoint).predict(texts)
    onnx_out = seqkit.Classifier.from_pretrained(exported, runtime="onnx").predict(texts)
    same = sum(a.label == b.label for a, b in zip(torch_out, onnx_out))
    difference = max(abs(a.probabilities[name] - b.probabilities[name]) for a, b in zip(torch_out, onnx_out) for name in a.probabilities)
    print(f"classifier: {len(texts)} emails, identical labels {same}/{len(texts)}, largest probability difference {difference:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tagger", nargs=2, metavar=("CHECKPOINT", "EXPORT"))
    parser.add_argument("--classifier", nargs=2, metavar=("CHECKPOINT", "EXPORT"))
    args = parser.parse_args()
    if not args.tagger and not args.classifier:
        parser.error("give --tagger CHECKPOINT EXPORT, --classifier CHECKPOINT EXPORT, or both")
    if args.tagger:
        tagger(*args.tagger)
    if args.classifier:
        classifier(*args.classifier)


if __name__ == "__main__":
    main()
