"""Build data/sotu/lm/{train,valid,test}.txt.gz: a language-model split of the State of the
Union paragraphs, held out by time, the size of Moby-Dick's.

Input: ``data/sotu/paragraphs.jsonl.gz`` (``prepare.py``; at most 16 paragraphs per address,
in address order). Output: one paragraph per line, in address order, gzip written with
``mtime=0`` and no file name, so reruns give identical bytes.

The split is by whole address, walking back from the latest one:

- test: the latest addresses, until the split holds at least ``TEST_TOKENS`` tokens;
- valid: the addresses before those, until at least ``VALID_TOKENS``;
- train: the addresses before those, until at least ``TRAIN_TOKENS``;
- the oldest addresses, before train, are not used.

Tokens are counted as ``shared/PEERS.md`` and seqkit's word tokenizer count them (lowercase,
``\\w+|[^\\w\\s]``, ``<eos>`` after each paragraph). The sizes are Moby-Dick's (train 235,529
tokens, valid 10,130, test 20,546): the language-model recipes were tuned there, and some
of their settings are counted in optimizer steps (``recipes/lm_awd.yaml`` averages from step
1,000 of about 1,780; warmup 50 steps), so a training text of the same size keeps those
settings meaning what they meant when only the data paths change, and keeps an 8-epoch
``lm_awd.yaml`` run near its 6 CPU-minutes. Holding out the latest years tests on text
written after all of the training text (new names, topics and style), with no address in
two splits.

Run from the repository root (standard library only)::

    python data/sotu/lm_split.py
"""

import argparse
import gzip
import io
import json
import os
import re

DEFAULT_INPUT = os.path.join("data", "sotu", "paragraphs.jsonl.gz")
DEFAULT_OUTPUT = os.path.join("data", "sotu", "lm")
TEST_TOKENS = 20_000
VALID_TOKENS = 10_000
TRAIN_TOKENS = 235_000
TOKEN = re.compile(r"\w+|[^\w\s]")


def read_addresses(path):
    """[(address, [paragraph text, ...]), ...] in file (address) order."""
    addresses = {}
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            record = json.loads(line)
            text = record["text"]
            if len(text.splitlines()) != 1:
                raise SystemExit(f"{path}:{number}: a paragraph must be one line of text")
            addresses.setdefault(record["address"], []).append(text)
    return list(addresses.items())


def count_tokens(paragraphs):
    """Tokens of paragraphs, ``<eos>`` included, as the language model reads them."""
    return sum(len(TOKEN.findall(text.lower())) + 1 for text in paragraphs)


def split_by_time(addresses):
    """{split: [(address, paragraphs), ...]} in address order, test the latest (see above)."""
    splits, remaining = {}, list(addresses)
    for name, target in (("test", TEST_TOKENS), ("valid", VALID_TOKENS), ("train", TRAIN_TOKENS)):
        taken, tokens = [], 0
        while remaining and tokens < target:
            address = remaining.pop()
            taken.append(address)
            tokens += count_tokens(address[1])
        if tokens < target:
            raise SystemExit(f"not enough text for {name}: {tokens:,} tokens, {target:,} wanted")
        splits[name] = taken[::-1]
    splits["unused"] = remaining
    return splits


def write_lines_gz(path, lines):
    """Lines into a gzip file with a fixed header (mtime=0, no name)."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as gz:
        for line in lines:
            gz.write((line + "\n").encode("utf-8"))
    with open(path, "wb") as handle:
        handle.write(buffer.getvalue())


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("input", nargs="?", default=DEFAULT_INPUT, help="paragraphs.jsonl.gz (default: %(default)s)")
    parser.add_argument("-o", "--output", default=DEFAULT_OUTPUT, help="output folder (default: %(default)s)")
    args = parser.parse_args()

    splits = split_by_time(read_addresses(args.input))
    os.makedirs(args.output, exist_ok=True)
    for name in ("train", "valid", "test", "unused"):
        addresses = splits[name]
        paragraphs = [text for _, texts in addresses for text in texts]
        where = "not written"
        if name != "unused":
            path = os.path.join(args.output, f"{name}.txt.gz")
            write_lines_gz(path, paragraphs)
            where = f"{path} ({os.path.getsize(path):,} bytes)"
        print(f"{name}: {len(addresses)} addresses, {addresses[0][0]} .. {addresses[-1][0]}, "
              f"{len(paragraphs):,} paragraphs, {count_tokens(paragraphs):,} tokens: {where}")


if __name__ == "__main__":
    main()
