"""Do low scores find a tagger's errors? Token accuracy by confidence on a CoNLL file.

    seqkit train recipes/pos.yaml                       # once: the tagger to measure
    python benchmarks/tag_confidence.py --checkpoint runs/pos/best --data data/brown/dev.conll.gz

Every word of the file is tagged (as the file splits it), with ``Doc.scores`` -- each
word's probability of its tag, the CRF's marginal or the softmax. Words are sorted by that
score; printed: the token accuracy of all words, of the most and the least confident tenth,
and of each tenth in between, with the mean score of each (a calibrated tagger's accuracy
is close to its mean score). For entity tags, the same for predicted entities by
``Span.score``: the share of the most and least confident tenth that match a gold entity
exactly (their precision, as ``accuracy``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="runs/pos/best")
    parser.add_argument("--data", default="data/brown/dev.conll.gz")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()

    import seqkit
    from seqkit.data import read_conll
    from seqkit.labels import spans

    tagger = seqkit.Tagger.from_pretrained(args.checkpoint, device="cpu")
    data = tagger.recipe.data
    dataset = read_conll(args.data, data.token_column, data.tag_column, data.scheme, data.encoding)
    docs = tagger.tag([list(words) for words in dataset["tokens"]], batch_size=args.batch_size)
    words = [(score, predicted == gold) for doc, gold_tags in zip(docs, dataset["tags"])
             for score, predicted, gold in zip(doc.scores, doc.tags, gold_tags)]  # fmt: skip
    words.sort(key=lambda word: word[0], reverse=True)  # most confident first
    tenth = len(words) // 10

    def summary(part: list[tuple[float, bool]]) -> dict[str, float]:
        return {"accuracy": sum(right for _, right in part) / len(part), "mean_score": sum(score for score, _ in part) / len(part), "words": len(part)}

    tenths = [summary(words[i * tenth : (i + 1) * tenth if i < 9 else len(words)]) for i in range(10)]
    report = {"checkpoint": args.checkpoint, "data": args.data, "all": summary(words), "most_confident_tenth": tenths[0],
              "least_confident_tenth": tenths[-1], "tenths": tenths}  # fmt: skip
    if data.scheme != "none":  # entities: is a predicted entity with a low score more often wrong?
        entities = []
        for doc, gold_tags in zip(docs, dataset["tags"]):
            gold = set(spans(gold_tags, data.scheme))
            for (first, end, label), span in zip(spans(doc.tags, data.scheme), doc.spans):
                entities.append((span.score, (first, end, label) in gold))
        entities.sort(key=lambda entity: entity[0], reverse=True)
        part = max(1, len(entities) // 10)
        precision = [summary(entities[:part]), summary(entities[-part:])] if entities else [None, None]
        report["entities"] = {"predicted": len(entities), "most_confident_tenth": precision[0], "least_confident_tenth": precision[1],
                              "all": summary(entities) if entities else None}  # fmt: skip
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
