"""Interpolated modified Kneser-Ney n-gram language models: the count-based peer of
seqkit's language model, scored under the same tokenization and OOV rule.

    python benchmarks/kneser_ney.py                                   # Moby-Dick, orders 3 and 5
    python benchmarks/kneser_ney.py --data data/sotu/lm --orders 3 5 --run runs/lmx-awd

The model is Chen & Goodman's (1998) interpolated modified Kneser-Ney:

- three discounts per order, D1, D2 and D3+, from that order's count-of-counts n1..n4:
  ``Y = n1 / (n1 + 2 n2)``, ``D1 = 1 - 2Y n2/n1``, ``D2 = 2 - 3Y n3/n2``, ``D3+ = 3 - 4Y n4/n3``;
- the highest order counts n-grams; every lower order counts continuations (how many
  distinct words precede the n-gram), so a word seen after few contexts gets little mass;
- each order is interpolated with the one below, ``p(w | h) = max(c(h w) - D(c), 0) / c(h)
  + gamma(h) p(w | h')`` with ``gamma(h) = (D1 N1(h .) + D2 N2(h .) + D3+ N3+(h .)) / c(h)``,
  down to a uniform distribution over the vocabulary; a context never seen in training
  passes its lower order's probability through unchanged.

Tokenization and scoring follow ``shared/PEERS.md``, which is also what seqkit's
``perplexity_no_unk`` computes with ``recipes/lm.yaml``'s word tokenizer: text lowercased,
tokens the regex ``\\w+|[^\\w\\s]``, ``<eos>`` after each non-empty line; the vocabulary is
every training type (``<eos>`` included) and ``<unk>``; each split is one stream, so
contexts run across line ends (``<eos>`` is a token like any other); the first token of a
split is context only (seqkit's targets are the stream shifted by one), and targets outside
the vocabulary are left out of the perplexity (they stay in later contexts, as ``<unk>``).
Files may be gzipped (``.gz``). Pure Python: counting Moby-Dick's 235k training tokens to
order 5 takes a few seconds.

With ``--run DIR`` (a seqkit run directory or several) the table also shows each run's
``best/`` valid and test perplexity without ``<unk>``, read from its ``metrics.jsonl``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOKEN = re.compile(r"\w+|[^\w\s]")
EOS, UNK = "<eos>", "<unk>"
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)  # where a count-of-count is zero (tiny corpora): any D_r <= r keeps p normalized


def read_tokens(path: str | Path) -> list[str]:
    """A text file (gzipped if it ends in ``.gz``) as one token stream: lowercased,
    ``\\w+|[^\\w\\s]`` tokens, ``<eos>`` after each line that has any."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    tokens: list[str] = []
    with opener(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            words = TOKEN.findall(line.lower())
            if words:
                tokens.extend(words)
                tokens.append(EOS)
    return tokens


def discounts(count_of_counts: dict[int, int]) -> tuple[float, float, float]:
    """Chen & Goodman's D1, D2, D3+ from the number of n-grams seen once .. four times."""
    n1, n2, n3, n4 = (count_of_counts.get(r, 0) for r in (1, 2, 3, 4))
    if min(n1, n2, n3) == 0:
        return FALLBACK_DISCOUNTS
    y = n1 / (n1 + 2 * n2)
    found = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
    # each D_r must lie in [0, r] for the interpolated distribution to sum to 1
    return tuple(min(max(d, 0.0), float(r)) for r, d in zip((1, 2, 3), found))  # type: ignore[return-value]


class KneserNey:
    """An interpolated modified Kneser-Ney model of order ``order``, counted from one token
    stream; ``vocabulary`` is what the uniform floor spreads over (training types + ``<unk>``).

    Per order k (1..order) it holds ``counts[k]``: k-gram -> count (raw at the highest order,
    continuation counts below), ``discount[k]`` (D1, D2, D3+), and per context h (a
    (k-1)-gram) ``context_stats[k][h] = (total, N1, N2, N3+)``.
    """

    def __init__(self, tokens: Sequence[str], order: int):
        if order < 1:
            raise ValueError(f"order must be at least 1, not {order}")
        self.order = order
        self.vocabulary = set(tokens) | {UNK}
        self.counts: dict[int, Counter] = {order: Counter(zip(*(tokens[i:] for i in range(order))))}
        for k in range(order - 1, 0, -1):  # continuation counts: distinct left neighbours of each k-gram
            self.counts[k] = Counter(gram[1:] for gram in self.counts[k + 1])
        self.discount = {k: discounts(Counter(self.counts[k].values())) for k in self.counts}
        self.context_stats = {k: self._context_stats(k) for k in self.counts}

    def _context_stats(self, k: int) -> dict[tuple[str, ...], tuple[int, int, int, int]]:
        """Per context of order k: the total count after it and how many words follow it
        once, twice, three times or more (which ``gamma`` weighs by D1, D2, D3+)."""
        stats: dict[tuple[str, ...], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        for gram, count in self.counts[k].items():
            entry = stats[gram[:-1]]
            entry[0] += count
            entry[min(count, 3)] += 1
        return {context: tuple(entry) for context, entry in stats.items()}  # type: ignore[misc]

    def _known(self, token: str) -> str:
        return token if token in self.vocabulary else UNK

    def prob(self, word: str, context: Sequence[str]) -> float:
        """p(word | the last order-1 tokens of context); words outside the vocabulary are
        ``<unk>`` (in the context as well)."""
        word = self._known(word)
        history = tuple(self._known(token) for token in context[len(context) - (self.order - 1):]) if self.order > 1 else ()
        p = 1.0 / len(self.vocabulary)
        for k in range(1, self.order + 1):
            if k - 1 > len(history):
                break
            h = history[len(history) - (k - 1):] if k > 1 else ()
            stats = self.context_stats[k].get(h)
            if stats is None:  # an unseen context: so is every longer one ending in it
                break
            total, n1, n2, n3 = stats
            d1, d2, d3 = self.discount[k]
            count = self.counts[k].get(h + (word,), 0)
            d = (0.0, d1, d2, d3)[min(count, 3)]
            gamma = (d1 * n1 + d2 * n2 + d3 * n3) / total
            p = max(count - d, 0.0) / total + gamma * p
        return p

    def perplexity(self, tokens: Sequence[str]) -> tuple[float, int, int]:
        """Perplexity of a stream over its targets (every token but the first) that are in
        the vocabulary; returns (perplexity, targets scored, out-of-vocabulary targets left out)."""
        total, scored, skipped = 0.0, 0, 0
        for i in range(1, len(tokens)):
            if tokens[i] not in self.vocabulary:
                skipped += 1
                continue
            total -= math.log(self.prob(tokens[i], tokens[max(0, i - self.order + 1):i]))
            scored += 1
        return math.exp(total / scored), scored, skipped


def run_metrics(run: Path) -> tuple[float | None, float | None]:
    """``best/``'s valid and test perplexity without ``<unk>`` from a seqkit run's metrics.jsonl
    (the last valid evaluation marked ``best``, and the test line written at the end)."""
    valid = test = None
    for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record.get("split") == "valid" and record.get("best"):  # the evaluation best/ was saved at
            valid = record.get("perplexity_no_unk")
        elif record.get("split") == "test":
            test = record.get("perplexity_no_unk")
    return valid, test


def split_paths(data: Path) -> dict[str, Path]:
    """train/valid/test files in a folder, ``.txt`` or ``.txt.gz``."""
    paths = {}
    for split in ("train", "valid", "test"):
        found = [data / f"{split}{suffix}" for suffix in (".txt", ".txt.gz") if (data / f"{split}{suffix}").is_file()]
        if not found:
            sys.exit(f"{data}: no {split}.txt or {split}.txt.gz")
        paths[split] = found[0]
    return paths


def _shown(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f}"


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "moby-dick", help="folder with train/valid/test .txt or .txt.gz (default: Moby-Dick)")
    parser.add_argument("--orders", type=int, nargs="+", default=[3, 5])
    parser.add_argument("--run", type=Path, nargs="*", default=[], help="seqkit run directories to set beside the n-gram models")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from seqkit.runtime import (
        describe_cpu,  # imports torch: only the command line needs it
    )

    print(describe_cpu())
    streams = {split: read_tokens(path) for split, path in split_paths(args.data).items()}
    vocabulary = set(streams["train"]) | {UNK}
    print(f"{args.data}: train {len(streams['train']):,} tokens, valid {len(streams['valid']):,}, "
          f"test {len(streams['test']):,}; vocabulary {len(vocabulary):,} (training types + <unk>)")
    print("| model | valid perplexity | test perplexity | OOV targets left out (valid / test) | CPU time (count + score) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for order in args.orders:
        start = time.process_time()
        model = KneserNey(streams["train"], order)
        (valid, _, valid_oov), (test, _, test_oov) = model.perplexity(streams["valid"]), model.perplexity(streams["test"])
        print(f"| Kneser-Ney {order}-gram | {valid:.1f} | {test:.1f} | {valid_oov} / {test_oov} | {time.process_time() - start:.1f} s |", flush=True)
    for run in args.run:
        valid, test = run_metrics(run)
        print(f"| seqkit {run} (best/) | {_shown(valid)} | {_shown(test)} | | |")


if __name__ == "__main__":
    main()
