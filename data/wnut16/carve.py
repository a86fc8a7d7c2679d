"""Carve a held-out split from the WNUT-16 training tweets: every 8th tweet of train.conll.

    python data/wnut16/carve.py            # writes heldout.conll and train_minus_heldout.conll here
    python data/wnut16/carve.py --check    # exits 1 if the shipped files differ from a fresh carve

Why every 8th: train.conll holds the source tweets whose index i (0-based, file order) has
i % 10 in 0..7, in order, so its tweet j is source tweet 10 * (j // 8) + j % 8. Taking
j % 8 == 7 takes exactly the source tweets with i % 10 == 7: the project's own split rule
(dev is i % 10 == 8, the unshipped test split i % 10 == 9), 239 tweets like each of them,
spread evenly over the file as they are. Hashing the text would also be deterministic but
would draw a different kind of sample from the one dev and test were drawn by.

Each tweet's lines are copied byte for byte (a tweet is its lines up to and including the
blank line after it), so the two outputs together hold train.conll's tweets exactly, and a
rerun writes identical bytes. Standard library only.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
EVERY = 8  # one tweet in EVERY goes to the held-out split
OFFSET = EVERY - 1  # the last of each group of 8: source index i % 10 == 7


def split_tweets(text: str) -> list[str]:
    """The tweets of a CoNLL text, each as its lines plus the blank line that ends it."""
    tweets, current = [], []
    for line in text.splitlines(keepends=True):
        current.append(line)
        if not line.strip():
            if len(current) > 1:
                tweets.append("".join(current))
            current = []  # a stray blank line (none in the shipped file) is dropped
    if any(line.strip() for line in current):
        tweets.append("".join(current) + ("" if current[-1].endswith("\n") else "\n") + "\n")
    return tweets


def carve(tweets: list[str]) -> tuple[list[str], list[str]]:
    """``(held_out, rest)``: tweet j goes to held_out when j % EVERY == OFFSET, order kept."""
    held_out = [t for j, t in enumerate(tweets) if j % EVERY == OFFSET]
    rest = [t for j, t in enumerate(tweets) if j % EVERY != OFFSET]
    return held_out, rest


def carved_texts(train_path: Path) -> dict[str, str]:
    """The two files' contents, by file name, carved from ``train_path``."""
    held_out, rest = carve(split_tweets(train_path.read_text(encoding="utf-8")))
    return {"heldout.conll": "".join(held_out), "train_minus_heldout.conll": "".join(rest)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Carve heldout.conll (every 8th tweet) from train.conll.")
    parser.add_argument("--train", type=Path, default=HERE / "train.conll")
    parser.add_argument("--out-dir", type=Path, default=HERE)
    parser.add_argument("--check", action="store_true", help="compare with the files in --out-dir; write nothing")
    args = parser.parse_args(argv)
    if not args.train.is_file():
        print(f"carve.py: {args.train}: no such file", file=sys.stderr)
        return 2
    texts = carved_texts(args.train)
    for name, text in texts.items():
        path = args.out_dir / name
        if args.check:
            if not path.is_file() or path.read_bytes() != text.encode("utf-8"):
                print(f"carve.py: {path} differs from a fresh carve of {args.train}", file=sys.stderr)
                return 1
        else:
            path.write_bytes(text.encode("utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
